//! The MLP's layers as plain code: candle-nn `Linear` layers, ReLU or tanh between
//! them, one output (as `mlp::MlpModel` without an HL-Gauss head) or `bins` logits
//! under an HL-Gauss head ([`HlNet`], as `mlp::MlpModel::with_head`).

use super::{sized, Bufs, Net, Var};
use crate::model::kernels::{dot_rows, gemv_acc, tanh, Real};
use crate::model::loss::Loss;
use crate::model::mlp::{Activation, HlGauss};

/// Layer l's place in θ: Wₗᵀ at `w` (`fan_in` rows of `fan_out`), its bias at `b`;
/// its pre-activations at `z` in a row's buffers.
#[derive(Debug, Clone, Copy)]
struct Layer {
    fan_in: usize,
    fan_out: usize,
    w: usize,
    b: usize,
    z: usize,
}

pub struct MlpNet {
    layers: Vec<Layer>,
    act: Activation,
    /// Σ fan_out: one row's pre-activations (and activations) of every layer.
    width: usize,
    /// The widest layer: the back-propagated vectors' size.
    widest: usize,
    len: usize,
}

impl MlpNet {
    pub fn new(n_features: usize, hidden: &[usize], act: Activation) -> Self {
        Self::with_outputs(n_features, hidden, act, 1)
    }

    /// With `outputs` units in the last layer.
    pub fn with_outputs(n_features: usize, hidden: &[usize], act: Activation, outputs: usize) -> Self {
        let mut dims = vec![n_features];
        dims.extend_from_slice(hidden);
        dims.push(outputs);
        let (mut at, mut z) = (0, 0);
        let layers = dims
            .windows(2)
            .map(|w| {
                let l = Layer { fan_in: w[0], fan_out: w[1], w: at, b: at + w[0] * w[1], z };
                at += w[0] * w[1] + w[1];
                z += w[1];
                l
            })
            .collect();
        MlpNet { layers, act, width: z, widest: dims.iter().copied().max().unwrap_or(1), len: at }
    }

    /// Per layer: the weight [out, in] (element [o, i] is row i, column o of Wᵀ), then
    /// the bias [out], each with the layer's fan-in.
    fn layer_vars(&self) -> Vec<Var> {
        let mut v: Vec<Var> = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let l = *l;
            v.push(Var { name: format!("l{i}.weight"), shape: [l.fan_out, l.fan_in], fan_in: l.fan_in, at: Box::new(move |o, i| l.w + i * l.fan_out + o) });
            v.push(Var { name: format!("l{i}.bias"), shape: [l.fan_out, 1], fan_in: l.fan_in, at: Box::new(move |r, _| l.b + r) });
        }
        v
    }
}

impl Net for MlpNet {
    const MEAN_BATCH: bool = true;

    fn inputs(&self) -> usize {
        self.layers[0].fan_in
    }

    fn params(&self) -> usize {
        self.len
    }

    fn vars(&self) -> Vec<Var> {
        let mut v = self.layer_vars();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// As `mlp::MlpModel::with_head`: layer by layer, the weight, then the bias.
    fn draw_order(&self) -> Vec<Var> {
        self.layer_vars()
    }

    #[inline(always)]
    fn forward<F: Real>(&self, th: &[F], x: &[F], s: &mut Bufs<F>) -> F {
        let (z, a) = (sized(&mut s.z, self.width), sized(&mut s.a, self.width));
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            let input = if i == 0 { x } else { &a[self.layers[i - 1].z..l.z] };
            let zl = &mut z[l.z..l.z + l.fan_out];
            // x·Wᵀ + b, as candle's Linear: the bias added to the finished products.
            zl.fill(F::ZERO);
            gemv_acc(zl, input, &th[l.w..l.b]);
            for (zo, bo) in zl.iter_mut().zip(&th[l.b..l.b + l.fan_out]) {
                *zo += *bo;
            }
            if i < last {
                let (zl, al) = (&z[l.z..l.z + l.fan_out], &mut a[l.z..l.z + l.fan_out]);
                match self.act {
                    Activation::Relu => al.iter_mut().zip(zl).for_each(|(a, z)| *a = if *z > F::ZERO { *z } else { F::ZERO }),
                    Activation::Tanh => al.iter_mut().zip(zl).for_each(|(a, z)| *a = tanh(*z)),
                }
            }
        }
        z[self.layers[last].z]
    }

    #[inline(always)]
    fn backward<F: Real>(&self, th: &[F], x: &[F], dpred: F, s: &mut Bufs<F>, grad: &mut [F]) {
        sized(&mut s.dz, self.widest)[0] = dpred;
        self.back(th, x, s, grad);
    }
}

impl MlpNet {
    /// The last layer's outputs of the forward pass in `s`.
    fn outputs<'s, F: Real>(&self, s: &'s Bufs<F>) -> &'s [F] {
        let l = self.layers[self.layers.len() - 1];
        &s.z[l.z..l.z + l.fan_out]
    }

    /// Back-propagates the output gradient in `s.dz[..outputs]` through the forward
    /// pass in `s`, adding ∂/∂θ to `grad`.
    #[inline(always)]
    fn back<F: Real>(&self, th: &[F], x: &[F], s: &mut Bufs<F>, grad: &mut [F]) {
        let Bufs { z, a, dz, dh, .. } = s;
        let (dz, dh) = (sized(dz, self.widest), sized(dh, self.widest));
        for (i, l) in self.layers.iter().enumerate().rev() {
            let input = if i == 0 { x } else { &a[self.layers[i - 1].z..l.z] };
            let d = &dz[..l.fan_out];
            for (g, dv) in grad[l.b..l.b + l.fan_out].iter_mut().zip(d) {
                *g += *dv;
            }
            for (j, &h) in input.iter().enumerate() {
                let row = &mut grad[l.w + j * l.fan_out..l.w + (j + 1) * l.fan_out];
                for (g, dv) in row.iter_mut().zip(d) {
                    *g += h * *dv;
                }
            }
            if i > 0 {
                let below = self.layers[i - 1];
                let dhl = &mut dh[..l.fan_in];
                dot_rows(dhl, &th[l.w..l.b], d);
                let zb = &z[below.z..below.z + below.fan_out];
                let ab = &a[below.z..below.z + below.fan_out];
                let dzb = &mut dz[..below.fan_out];
                match self.act {
                    // candle's ReLU gradient: 1 where the pre-activation is ≥ 0.
                    Activation::Relu => dzb.iter_mut().zip(dhl.iter()).zip(zb).for_each(|((d, h), z)| *d = if *z >= F::ZERO { *h } else { F::ZERO }),
                    Activation::Tanh => dzb.iter_mut().zip(dhl.iter()).zip(ab).for_each(|((d, h), t)| *d = *h * (F::ONE - *t * *t)),
                }
            }
        }
    }
}

/// The MLP under an HL-Gauss head (Farebrother et al. 2024, as `mlp::Mlp`): `bins`
/// logits, the prediction their softmax's expected bin centre, the loss the
/// cross-entropy with the target's Gaussian-smoothed histogram.
pub struct HlNet {
    mlp: MlpNet,
    hl: HlGauss,
    centers: Vec<f64>,
}

impl HlNet {
    pub fn new(n_features: usize, hidden: &[usize], act: Activation, hl: HlGauss) -> Self {
        HlNet { mlp: MlpNet::with_outputs(n_features, hidden, act, hl.bins), centers: hl.centers(), hl }
    }

    /// The softmax of the logits in `s` into `s.aux[..bins]` (as candle's
    /// `softmax_last_dim`: shifted by the largest logit); returns Σ exp of the
    /// shifted logits and the shift.
    fn softmax<F: Real>(&self, s: &mut Bufs<F>) -> (f64, f64) {
        let bins = self.hl.bins;
        let max = self.mlp.outputs(s).iter().fold(f64::NEG_INFINITY, |m, v| m.max(v.f64()));
        let mut p = std::mem::take(&mut s.aux);
        let p2 = sized(&mut p, 2 * bins);
        let mut sum = 0.0;
        for (q, v) in p2[..bins].iter_mut().zip(self.mlp.outputs(s)) {
            *q = (v.f64() - max).exp();
            sum += *q;
        }
        p2[..bins].iter_mut().for_each(|q| *q /= sum);
        s.aux = p;
        (sum, max)
    }
}

impl Net for HlNet {
    const MEAN_BATCH: bool = true;

    fn inputs(&self) -> usize {
        self.mlp.inputs()
    }

    fn params(&self) -> usize {
        self.mlp.params()
    }

    fn vars(&self) -> Vec<Var> {
        self.mlp.vars()
    }

    fn draw_order(&self) -> Vec<Var> {
        self.mlp.draw_order()
    }

    #[inline(always)]
    fn forward<F: Real>(&self, th: &[F], x: &[F], s: &mut Bufs<F>) -> F {
        self.mlp.forward(th, x, s);
        self.softmax(s);
        F::of(s.aux[..self.hl.bins].iter().zip(&self.centers).map(|(q, c)| q * c).sum())
    }

    /// dpred · ∂(Σ softmaxₖ·cₖ)/∂θ: the logits' gradient is softmaxₖ·(cₖ − prediction).
    #[inline(always)]
    fn backward<F: Real>(&self, th: &[F], x: &[F], dpred: F, s: &mut Bufs<F>, grad: &mut [F]) {
        let bins = self.hl.bins;
        let pred: f64 = s.aux[..bins].iter().zip(&self.centers).map(|(q, c)| q * c).sum();
        let dz = sized(&mut s.dz, self.mlp.widest);
        for ((d, q), c) in dz[..bins].iter_mut().zip(&s.aux[..bins]).zip(&self.centers) {
            *d = dpred * F::of(q * (c - pred));
        }
        self.mlp.back(th, x, s, grad);
    }

    /// −Σ pₖ·log softmaxₖ for the target histogram p of `y`; the logits' gradient
    /// (softmaxₖ − pₖ) / rows.
    #[inline(always)]
    fn learn_row<F: Real>(&self, th: &[F], x: &[F], y: f64, _loss: &Loss, rows: f64, s: &mut Bufs<F>, grad: &mut [F]) -> f64 {
        let bins = self.hl.bins;
        self.mlp.forward(th, x, s);
        let (sum, max) = self.softmax(s);
        let log_sum = sum.ln();
        let mut aux = std::mem::take(&mut s.aux);
        let (q, p) = aux[..2 * bins].split_at_mut(bins);
        self.hl.fill_target(y, p);
        let mut loss = 0.0;
        for (pk, z) in p.iter().zip(self.mlp.outputs(s)) {
            loss -= pk * (z.f64() - max - log_sum);
        }
        let dz = sized(&mut s.dz, self.mlp.widest);
        for ((d, qk), pk) in dz[..bins].iter_mut().zip(q.iter()).zip(p.iter()) {
            *d = F::of((qk - pk) / rows);
        }
        s.aux = aux;
        self.mlp.back(th, x, s, grad);
        loss
    }
}

//! The MLP's layers as plain code: candle-nn `Linear` layers, ReLU or tanh between
//! them, one output (as `mlp::MlpModel` without an HL-Gauss head).

use super::{sized, Bufs, Net, Var};
use crate::model::kernels::{dot_rows, gemv_acc, tanh, Real};
use crate::model::mlp::Activation;

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
        let mut dims = vec![n_features];
        dims.extend_from_slice(hidden);
        dims.push(1);
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
        let Bufs { z, a, dz, dh } = s;
        let (dz, dh) = (sized(dz, self.widest), sized(dh, self.widest));
        dz[0] = dpred;
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

//! The MLP regressor on the CPU as plain code: the forward pass, backpropagation
//! written out and AdamW/SGD in place over one flat θ — no tensors, no per-row
//! allocation. The same model as `mlp::MlpModel` (candle-nn `Linear` layers, ReLU or
//! tanh between them, the same seeded initial weights drawn in the same order, the
//! same loss and optimizer; `update_batch` one step on the mean loss of its rows),
//! whose autograd is the tests' independent reference. candle's version stays for
//! CUDA and for the HL-Gauss head.
//!
//! A step of a 7 → 32 → 1 net is ~300 multiply-adds each way; candle spent it on
//! ~30 tensor ops with an allocation each (~8.7k rows/s at 1,000 keys).
//!
//! Layer l keeps Wₗᵀ (`fan_in` rows of `fan_out`: one contiguous row per input, as
//! the plain LSTM does) and its bias in θ, the AdamW moments beside it in the same
//! layout. Checkpoints hold candle's names and layouts (`var.l0.weight` [out, in], …,
//! `adam_m.…`, `adam_v.…`), so a checkpoint of either implementation loads into the
//! other.

use std::cell::RefCell;

use super::kernels::{adamw_step, dot_rows, gemv_acc, sgd_step, tanh};
use super::linear::Optim;
use super::loss::Loss;
use super::mlp::Activation;
use super::net::Training;
use super::rand::Draws;
use super::{OnlineModel, Snapshot};
use crate::error::{Error, Result};

/// Layer l's place in θ: Wₗᵀ at `w` (`fan_in` rows of `fan_out`), its bias at `b`;
/// its pre-activations at `z` in a row's scratch.
#[derive(Debug, Clone, Copy)]
struct Layer {
    fan_in: usize,
    fan_out: usize,
    w: usize,
    b: usize,
    z: usize,
}

pub struct PlainMlp {
    layers: Vec<Layer>,
    act: Activation,
    theta: Vec<f64>,
    /// AdamW moments (empty for SGD).
    m: Vec<f64>,
    v: Vec<f64>,
    step_t: u64,
    optim: Optim,
    loss: Loss,
    lr: f64,
    base_lr: f64,
    updates: u64,
    /// Σ fan_out: one row's pre-activations (and activations) of every layer.
    width: usize,
    /// The widest layer: the back-propagated vectors' size.
    widest: usize,
}

/// Per-thread buffers of one row's passes (sized on first use, then reused).
#[derive(Default)]
struct Scratch {
    z: Vec<f64>,
    a: Vec<f64>,
    grad: Vec<f64>,
    dz: Vec<f64>,
    dh: Vec<f64>,
    /// One prediction's output (for `predict`, which has no caller's buffer).
    out: Vec<f64>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn sized(v: &mut Vec<f64>, n: usize) -> &mut [f64] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

impl PlainMlp {
    /// An MLP over `n_features` inputs with the `hidden` layer sizes and one output.
    pub fn new(n_features: usize, hidden: &[usize], act: Activation, t: &Training) -> Result<Self> {
        let Training { loss, optim, learning_rate: lr, seed } = *t;
        if n_features == 0 || hidden.contains(&0) {
            return Err(Error::Config("mlp needs ≥ 1 feature and hidden layer sizes ≥ 1".into()));
        }
        if optim == Optim::Nlms {
            return Err(Error::Config("model.optimizer \"nlms\" is for linear models; use adamw or sgd".into()));
        }
        let mut dims = vec![n_features];
        dims.extend_from_slice(hidden);
        dims.push(1);
        let (mut at, mut z) = (0, 0);
        let layers: Vec<Layer> = dims
            .windows(2)
            .map(|w| {
                let l = Layer { fan_in: w[0], fan_out: w[1], w: at, b: at + w[0] * w[1], z };
                at += w[0] * w[1] + w[1];
                z += w[1];
                l
            })
            .collect();
        let mut theta = vec![0.0; at];
        // As mlp::MlpModel::with_head: per layer, the weight [out, in] row by row, then
        // the bias, uniform ±1/√fan_in.
        let mut draws = Draws(seed);
        for l in &layers {
            let bound = 1.0 / (l.fan_in as f64).sqrt();
            for o in 0..l.fan_out {
                for i in 0..l.fan_in {
                    theta[l.w + i * l.fan_out + o] = draws.symmetric(bound);
                }
            }
            for o in 0..l.fan_out {
                theta[l.b + o] = draws.symmetric(bound);
            }
        }
        let moments = if optim == Optim::AdamW { vec![0.0; at] } else { Vec::new() };
        let widest = dims.iter().copied().max().unwrap_or(1);
        Ok(PlainMlp { layers, act, theta, v: moments.clone(), m: moments, step_t: 0, optim, loss, lr, base_lr: lr, updates: 0, width: z, widest })
    }

    fn n_features(&self) -> usize {
        self.layers[0].fan_in
    }

    fn check(&self, xs: &[f64], rows: usize) -> Result<()> {
        if xs.len() != rows * self.n_features() {
            return Err(Error::Internal(format!("expected {rows} rows of {} features, got {} values", self.n_features(), xs.len())));
        }
        Ok(())
    }

    /// The row `x` through the net, every layer's pre-activations into `z` and
    /// activations into `a`; returns the output.
    #[inline(always)]
    fn forward(&self, x: &[f64], z: &mut [f64], a: &mut [f64]) -> f64 {
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            let input = if i == 0 { x } else { &a[self.layers[i - 1].z..l.z] };
            let zl = &mut z[l.z..l.z + l.fan_out];
            // x·Wᵀ + b, as candle's Linear: the bias added to the finished products.
            zl.fill(0.0);
            gemv_acc(zl, input, &self.theta[l.w..l.b]);
            for (zo, bo) in zl.iter_mut().zip(&self.theta[l.b..l.b + l.fan_out]) {
                *zo += *bo;
            }
            if i < last {
                let (zl, al) = (&z[l.z..l.z + l.fan_out], &mut a[l.z..l.z + l.fan_out]);
                match self.act {
                    Activation::Relu => al.iter_mut().zip(zl).for_each(|(a, z)| *a = z.max(0.0)),
                    Activation::Tanh => al.iter_mut().zip(zl).for_each(|(a, z)| *a = tanh(*z)),
                }
            }
        }
        z[self.layers[last].z]
    }

    /// Adds ∂(dpred·output)/∂θ for the row `x`, whose forward pass is in `s`, to `s.grad`.
    #[inline(always)]
    fn backward(&self, x: &[f64], dpred: f64, s: &mut Scratch) {
        let Scratch { z, a, grad, dz, dh, .. } = s;
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
                dot_rows(dhl, &self.theta[l.w..l.b], d);
                let zb = &z[below.z..below.z + below.fan_out];
                let ab = &a[below.z..below.z + below.fan_out];
                let dzb = &mut dz[..below.fan_out];
                match self.act {
                    // candle's ReLU gradient: 1 where the pre-activation is ≥ 0.
                    Activation::Relu => dzb.iter_mut().zip(dhl.iter()).zip(zb).for_each(|((d, h), z)| *d = if *z >= 0.0 { *h } else { 0.0 }),
                    Activation::Tanh => dzb.iter_mut().zip(dhl.iter()).zip(ab).for_each(|((d, h), t)| *d = *h * (1.0 - t * t)),
                }
            }
        }
    }

    /// One optimizer step on the mean loss of the `ys.len()` rows of `xs`; returns it.
    #[inline(always)]
    fn learn(&mut self, xs: &[f64], ys: &[f64], s: &mut Scratch) -> f64 {
        let n = self.n_features();
        sized(&mut s.grad, self.theta.len()).fill(0.0);
        let rows = ys.len() as f64;
        let mut total = 0.0;
        for (x, &y) in xs.chunks_exact(n).zip(ys) {
            let pred = self.forward(x, sized(&mut s.z, self.width), sized(&mut s.a, self.width));
            let (loss, slope) = self.loss.value_slope(pred, y);
            total += loss;
            self.backward(x, slope / rows, s);
        }
        let grad = &s.grad[..self.theta.len()];
        match self.optim {
            Optim::AdamW => {
                self.step_t += 1;
                adamw_step(&mut self.theta, &mut self.m, &mut self.v, grad, self.step_t, self.lr);
            }
            _ => sgd_step(&mut self.theta, grad, self.lr),
        }
        self.updates += 1;
        total / rows
    }

    #[inline(always)]
    fn predict_rows(&self, xs: &[f64], out: &mut Vec<f64>, s: &mut Scratch) {
        out.clear();
        for x in xs.chunks_exact(self.n_features()) {
            out.push(self.forward(x, sized(&mut s.z, self.width), sized(&mut s.a, self.width)));
        }
    }

    // The same code compiled for AVX2's and AVX-512's lanes. No FMA: every product
    // and sum is rounded as in the baseline build, so the bits are the same (tested).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn predict_avx2(&self, xs: &[f64], out: &mut Vec<f64>, s: &mut Scratch) {
        self.predict_rows(xs, out, s)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn learn_avx2(&mut self, xs: &[f64], ys: &[f64], s: &mut Scratch) -> f64 {
        self.learn(xs, ys, s)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn predict_avx512(&self, xs: &[f64], out: &mut Vec<f64>, s: &mut Scratch) {
        self.predict_rows(xs, out, s)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn learn_avx512(&mut self, xs: &[f64], ys: &[f64], s: &mut Scratch) -> f64 {
        self.learn(xs, ys, s)
    }

    /// The widest instruction set this CPU runs the passes in.
    fn simd() -> Simd {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Simd::Avx512;
            } else if std::arch::is_x86_feature_detected!("avx2") {
                return Simd::Avx2;
            }
        }
        Simd::Base
    }

    fn predict_into(&self, xs: &[f64], out: &mut Vec<f64>, simd: Simd) {
        SCRATCH.with(|s| {
            let s = &mut s.borrow_mut();
            match simd {
                // SAFETY: `simd` is what this CPU supports (`PlainMlp::simd`).
                #[cfg(target_arch = "x86_64")]
                Simd::Avx512 => unsafe { self.predict_avx512(xs, out, s) },
                #[cfg(target_arch = "x86_64")]
                Simd::Avx2 => unsafe { self.predict_avx2(xs, out, s) },
                _ => self.predict_rows(xs, out, s),
            }
        })
    }

    fn learn_rows(&mut self, xs: &[f64], ys: &[f64], simd: Simd) -> f64 {
        SCRATCH.with(|s| {
            let s = &mut s.borrow_mut();
            match simd {
                // SAFETY: `simd` is what this CPU supports (`PlainMlp::simd`).
                #[cfg(target_arch = "x86_64")]
                Simd::Avx512 => unsafe { self.learn_avx512(xs, ys, s) },
                #[cfg(target_arch = "x86_64")]
                Simd::Avx2 => unsafe { self.learn_avx2(xs, ys, s) },
                _ => self.learn(xs, ys, s),
            }
        })
    }

    /// candle's variables in name order (`l0.bias`, `l0.weight`, `l1.bias`, … sorted
    /// as strings, as `NetModel::named` sorts them): name, shape, θ index of [r, c].
    fn vars(&self) -> Vec<(String, [usize; 2], Box<dyn Fn(usize, usize) -> usize + '_>)> {
        let mut v: Vec<(String, [usize; 2], Box<dyn Fn(usize, usize) -> usize + '_>)> = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let l = *l;
            v.push((format!("l{i}.bias"), [l.fan_out, 1], Box::new(move |r, _| l.b + r)));
            // The weight is [out, in]: element [o, i] is row i, column o of Wᵀ.
            v.push((format!("l{i}.weight"), [l.fan_out, l.fan_in], Box::new(move |o, i| l.w + i * l.fan_out + o)));
        }
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn values(&self, of: &[f64]) -> Vec<(String, Vec<f64>)> {
        self.vars()
            .into_iter()
            .map(|(name, [rows, cols], at)| (name, (0..rows).flat_map(|r| (0..cols).map(move |c| (r, c))).map(|(r, c)| of[at(r, c)]).collect()))
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Simd {
    Base,
    #[allow(dead_code)]
    Avx2,
    #[allow(dead_code)]
    Avx512,
}

impl OnlineModel for PlainMlp {
    fn predict(&self, x: &[f64]) -> Result<f64> {
        self.check(x, 1)?;
        let mut out = SCRATCH.with(|s| std::mem::take(&mut s.borrow_mut().out));
        self.predict_into(x, &mut out, Self::simd());
        let p = out[0];
        SCRATCH.with(|s| s.borrow_mut().out = out);
        Ok(p)
    }

    fn update(&mut self, x: &[f64], y: f64) -> Result<f64> {
        self.check(x, 1)?;
        Ok(self.learn_rows(x, &[y], Self::simd()))
    }

    fn updates(&self) -> u64 {
        self.updates
    }

    fn parameters(&self) -> Result<Vec<f64>> {
        Ok(self.values(&self.theta).into_iter().flat_map(|(_, v)| v).collect())
    }

    /// Every row through the net (as candle's batched forward, row by row).
    fn predict_batch(&self, xs: &[f64], n: usize, out: &mut Vec<f64>) -> Result<()> {
        if n != self.n_features() {
            return Err(Error::Internal(format!("expected rows of {} features, got {n}", self.n_features())));
        }
        if xs.len() % n != 0 {
            return Err(Error::Internal(format!("{} values are not whole rows of {n} features", xs.len())));
        }
        self.predict_into(xs, out, Self::simd());
        Ok(())
    }

    /// One step on the mean loss of the rows (as `MlpModel`).
    fn update_batch(&mut self, xs: &[f64], n: usize, ys: &[f64]) -> Result<()> {
        if n != self.n_features() {
            return Err(Error::Internal(format!("expected rows of {} features, got {n}", self.n_features())));
        }
        self.check(xs, ys.len())?;
        if !ys.is_empty() {
            self.learn_rows(xs, ys, Self::simd());
        }
        Ok(())
    }

    fn reset_optimizer(&mut self) -> Result<()> {
        self.step_t = 0;
        self.m.fill(0.0);
        self.v.fill(0.0);
        self.lr = self.base_lr;
        Ok(())
    }

    fn set_lr_scale(&mut self, scale: f64) -> Result<()> {
        self.lr = self.base_lr * scale;
        Ok(())
    }

    /// The names and layouts `MlpModel` writes (its `NetOptimizer`'s).
    fn save(&self, s: &mut Snapshot) -> Result<()> {
        s.put_int("updates", self.updates);
        s.put_int("step_t", self.step_t);
        s.put_f64("lr", self.lr);
        let mut put = |prefix: &str, of: &[f64]| {
            for (name, v) in self.values(of) {
                s.put(&format!("{prefix}.{name}"), v);
            }
        };
        put("var", &self.theta);
        if self.optim == Optim::AdamW {
            put("adam_m", &self.m);
            put("adam_v", &self.v);
        }
        Ok(())
    }

    fn load(&mut self, s: &mut Snapshot) -> Result<()> {
        let (updates, step_t, lr) = (s.int("updates")?, s.int("step_t")?, s.f64("lr")?);
        // Into copies, so a checkpoint that fails half-way leaves the model as it was.
        let read = |prefix: &str, into: &mut Vec<f64>| -> Result<()> {
            for (name, [rows, cols], at) in self.vars() {
                let v = s.array_shaped(&format!("{prefix}.{name}"), &[rows, cols])?;
                for r in 0..rows {
                    for c in 0..cols {
                        into[at(r, c)] = v[r * cols + c];
                    }
                }
            }
            Ok(())
        };
        let (mut theta, mut m, mut v) = (self.theta.clone(), self.m.clone(), self.v.clone());
        read("var", &mut theta)?;
        if self.optim == Optim::AdamW {
            read("adam_m", &mut m)?;
            read("adam_v", &mut v)?;
        }
        (self.theta, self.m, self.v) = (theta, m, v);
        (self.updates, self.step_t, self.lr) = (updates, step_t, lr);
        Ok(())
    }
}

#[cfg(test)]
#[path = "mlp_plain_tests.rs"]
mod tests;

//! Small networks on the CPU as plain code — the MLP ([`mlp`], also under an HL-Gauss
//! head) and the 1-D CNN ([`cnn`]): the forward pass, backpropagation written out and
//! AdamW/SGD in place over one flat θ, no tensors, no per-row allocation, in f64 or
//! f32. Each is the same model as its candle version (`mlp::MlpModel`,
//! `seq::SeqModel`'s CNN): the same seeded initial weights drawn in the same order,
//! the same loss, optimizer and batch semantics — candle's autograd is the tests'
//! independent reference. candle's versions stay for CUDA. The plain LSTM (`lstm`)
//! predates this module and keeps its own pass cache.
//!
//! A step of a 7 → 32 → 1 MLP is ~300 multiply-adds each way; candle spent it on ~30
//! tensor ops with an allocation each.
//!
//! Checkpoints hold candle's names and layouts (`params::Params`), so a checkpoint of
//! either implementation loads into the other.

pub mod cnn;
pub mod mlp;

use std::cell::RefCell;

use super::kernels::{Real, Simd};
pub use super::kernels::sized;
use super::loss::Loss;
use super::net::Training;
pub use super::params::Var;
use super::params::Params;
use super::{OnlineModel, Snapshot};
use crate::error::{Error, Result};

/// One row's working buffers (the net decides what each holds).
#[derive(Default)]
pub struct Bufs<F> {
    pub z: Vec<F>,
    pub a: Vec<F>,
    pub dz: Vec<F>,
    pub dh: Vec<F>,
    /// f64 values of a head (the HL-Gauss softmax and target histogram).
    pub aux: Vec<f64>,
}

/// A network's layers over a flat θ.
pub trait Net: Send + Sync {
    /// `update_batch` is one step on the mean loss of its rows (candle's batched MLP),
    /// else one step per row (candle's sequence nets).
    const MEAN_BATCH: bool;
    /// Input values per row.
    fn inputs(&self) -> usize;
    /// θ's length.
    fn params(&self) -> usize;
    /// candle's variables sorted by name (`NetModel::named`'s order).
    fn vars(&self) -> Vec<Var>;
    /// The order the candle version draws its initial values in.
    fn draw_order(&self) -> Vec<Var>;
    /// The row `x` through the net, keeping in `s` what `backward` needs; the output.
    fn forward<F: Real>(&self, th: &[F], x: &[F], s: &mut Bufs<F>) -> F;
    /// Adds dpred · ∂output/∂θ for the row `x`, whose forward pass is in `s`, to `grad`.
    fn backward<F: Real>(&self, th: &[F], x: &[F], dpred: F, s: &mut Bufs<F>, grad: &mut [F]);
    /// The row's loss against `y` (its forward pass included), adding
    /// ∂(loss / rows)/∂θ to `grad`: the regression loss of the output, unless the net
    /// brings its own (the HL-Gauss head).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn learn_row<F: Real>(&self, th: &[F], x: &[F], y: f64, loss: &Loss, rows: f64, s: &mut Bufs<F>, grad: &mut [F]) -> f64 {
        let pred = self.forward(th, x, s);
        let (value, slope) = loss.value_slope(pred.f64(), y);
        self.backward(th, x, F::of(slope / rows), s, grad);
        value
    }
}

/// A network with its parameters, optimizer state and loss, computed in F: f64, or
/// f32 for `model.precision = "f32"` (inputs and outputs stay f64).
pub struct Plain<N, F = f64> {
    net: N,
    p: Params<F>,
    loss: Loss,
}

/// The MLP regressor in plain code.
pub type PlainMlp = Plain<mlp::MlpNet, f64>;
/// The 1-D CNN regressor in plain code.
pub type PlainCnn = Plain<cnn::CnnNet, f64>;
/// The MLP (or, with no hidden layers, a linear trunk) under an HL-Gauss head.
pub type PlainHl = Plain<mlp::HlNet, f64>;

impl PlainHl {
    /// As `mlp::MlpModel::with_head(…, Some(hl), …)`.
    pub fn new(n_features: usize, hidden: &[usize], act: crate::model::mlp::Activation, hl: crate::model::mlp::HlGauss, t: &Training) -> Result<Self> {
        if n_features == 0 || hidden.contains(&0) || hl.bins < 2 {
            return Err(Error::Config("hl_gauss needs ≥ 1 feature, hidden layer sizes ≥ 1 and ≥ 2 bins".into()));
        }
        Plain::with(mlp::HlNet::new(n_features, hidden, act, hl), t)
    }
}

impl<F: Real + WithScratch> Plain<mlp::MlpNet, F> {
    /// An MLP over `n_features` inputs with the `hidden` layer sizes and one output.
    pub fn mlp(n_features: usize, hidden: &[usize], act: crate::model::mlp::Activation, t: &Training) -> Result<Self> {
        if n_features == 0 || hidden.contains(&0) {
            return Err(Error::Config("mlp needs ≥ 1 feature and hidden layer sizes ≥ 1".into()));
        }
        Plain::with(mlp::MlpNet::new(n_features, hidden, act), t)
    }
}

impl<F: Real + WithScratch> Plain<cnn::CnnNet, F> {
    /// A CNN over windows of `window` rows of `d` features: `hidden` filters of
    /// `kernel` steps.
    pub fn cnn(window: usize, d: usize, hidden: usize, kernel: usize, t: &Training) -> Result<Self> {
        if window == 0 || hidden == 0 || d == 0 {
            return Err(Error::Config("sequence models need model.window ≥ 1, a hidden size ≥ 1 and ≥ 1 feature".into()));
        }
        if kernel == 0 || kernel > window {
            return Err(Error::Config(format!("model.kernel {kernel} must be in 1..=window ({window})")));
        }
        Plain::with(cnn::CnnNet::new(window, d, hidden, kernel), t)
    }
}

/// Per-thread buffers (sized on first use, then reused).
#[derive(Default)]
pub struct Scratch<F> {
    bufs: Bufs<F>,
    /// The row's inputs in F.
    xs: Vec<F>,
    grad: Vec<F>,
    /// One prediction's output (for `predict`, which has no caller's buffer).
    out: Vec<f64>,
}

thread_local! {
    static SCRATCH64: RefCell<Scratch<f64>> = RefCell::new(Scratch::default());
    static SCRATCH32: RefCell<Scratch<f32>> = RefCell::new(Scratch::default());
}

/// The thread's scratch for the precision `Self`.
pub trait WithScratch: Real {
    fn with_scratch<R>(f: impl FnOnce(&mut Scratch<Self>) -> R) -> R;
}

impl WithScratch for f64 {
    fn with_scratch<R>(f: impl FnOnce(&mut Scratch<f64>) -> R) -> R {
        SCRATCH64.with(|s| f(&mut s.borrow_mut()))
    }
}

impl WithScratch for f32 {
    fn with_scratch<R>(f: impl FnOnce(&mut Scratch<f32>) -> R) -> R {
        SCRATCH32.with(|s| f(&mut s.borrow_mut()))
    }
}

/// `x` in F, into `xs`.
#[inline(always)]
fn take_row<F: Real>(xs: &mut Vec<F>, x: &[f64]) {
    xs.clear();
    xs.extend(x.iter().map(|&v| F::of(v)));
}

impl<N: Net, F: Real + WithScratch> Plain<N, F> {
    fn with(net: N, t: &Training) -> Result<Self> {
        let p = Params::drawn(net.params(), &net.draw_order(), t.seed, t.optim, t.learning_rate)?;
        Ok(Plain { net, p, loss: t.loss })
    }

    fn check(&self, xs: &[f64], rows: usize) -> Result<()> {
        if xs.len() != rows * self.net.inputs() {
            return Err(Error::Internal(format!("expected {rows} rows of {} values, got {} values", self.net.inputs(), xs.len())));
        }
        Ok(())
    }

    /// One optimizer step on the mean loss of the `ys.len()` rows of `xs`; returns it.
    #[inline(always)]
    fn learn(&mut self, xs: &[f64], ys: &[f64], s: &mut Scratch<F>) -> f64 {
        let Scratch { bufs, grad, xs: row, .. } = s;
        let grad = sized(grad, self.p.theta.len());
        grad.fill(F::ZERO);
        let rows = ys.len() as f64;
        let mut total = 0.0;
        for (x, &y) in xs.chunks_exact(self.net.inputs()).zip(ys) {
            take_row(row, x);
            total += self.net.learn_row(&self.p.theta, row, y, &self.loss, rows, bufs, grad);
        }
        self.p.step(grad);
        total / rows
    }

    #[inline(always)]
    fn predict_rows(&self, xs: &[f64], out: &mut Vec<f64>, s: &mut Scratch<F>) {
        out.clear();
        for x in xs.chunks_exact(self.net.inputs()) {
            take_row(&mut s.xs, x);
            out.push(self.net.forward(&self.p.theta, &s.xs, &mut s.bufs).f64());
        }
    }

    // The same code compiled for AVX2's and AVX-512's lanes. No FMA: every product
    // and sum is rounded as in the baseline build, so the bits are the same (tested).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn predict_avx2(&self, xs: &[f64], out: &mut Vec<f64>, s: &mut Scratch<F>) {
        self.predict_rows(xs, out, s)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn learn_avx2(&mut self, xs: &[f64], ys: &[f64], s: &mut Scratch<F>) -> f64 {
        self.learn(xs, ys, s)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn predict_avx512(&self, xs: &[f64], out: &mut Vec<f64>, s: &mut Scratch<F>) {
        self.predict_rows(xs, out, s)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn learn_avx512(&mut self, xs: &[f64], ys: &[f64], s: &mut Scratch<F>) -> f64 {
        self.learn(xs, ys, s)
    }

    fn predict_into(&self, xs: &[f64], out: &mut Vec<f64>, simd: Simd) {
        F::with_scratch(|s| {
            match simd {
                // SAFETY: `simd` is what this CPU runs (`Simd::detect`).
                #[cfg(target_arch = "x86_64")]
                Simd::Avx512 => unsafe { self.predict_avx512(xs, out, s) },
                #[cfg(target_arch = "x86_64")]
                Simd::Avx2 => unsafe { self.predict_avx2(xs, out, s) },
                _ => self.predict_rows(xs, out, s),
            }
        })
    }

    fn learn_rows(&mut self, xs: &[f64], ys: &[f64], simd: Simd) -> f64 {
        F::with_scratch(|s| {
            match simd {
                // SAFETY: `simd` is what this CPU runs (`Simd::detect`).
                #[cfg(target_arch = "x86_64")]
                Simd::Avx512 => unsafe { self.learn_avx512(xs, ys, s) },
                #[cfg(target_arch = "x86_64")]
                Simd::Avx2 => unsafe { self.learn_avx2(xs, ys, s) },
                _ => self.learn(xs, ys, s),
            }
        })
    }

    fn check_rows(&self, xs: &[f64], n: usize) -> Result<()> {
        if n != self.net.inputs() || !xs.len().is_multiple_of(n) {
            return Err(Error::Internal(format!("expected whole rows of {} values, got {} values in rows of {n}", self.net.inputs(), xs.len())));
        }
        Ok(())
    }
}

impl<N: Net, F: Real + WithScratch> OnlineModel for Plain<N, F> {
    fn predict(&self, x: &[f64]) -> Result<f64> {
        self.check(x, 1)?;
        let mut out = F::with_scratch(|s| std::mem::take(&mut s.out));
        self.predict_into(x, &mut out, Simd::detect());
        let p = out[0];
        F::with_scratch(|s| s.out = out);
        Ok(p)
    }

    fn update(&mut self, x: &[f64], y: f64) -> Result<f64> {
        self.check(x, 1)?;
        Ok(self.learn_rows(x, &[y], Simd::detect()))
    }

    fn updates(&self) -> u64 {
        self.p.updates
    }

    fn parameters(&self) -> Result<Vec<f64>> {
        Ok(self.p.flat(&self.net.vars()))
    }

    fn predict_batch(&self, xs: &[f64], n: usize, out: &mut Vec<f64>) -> Result<()> {
        self.check_rows(xs, n)?;
        self.predict_into(xs, out, Simd::detect());
        Ok(())
    }

    /// One step on the mean loss of the rows, or one step per row (`Net::MEAN_BATCH`).
    fn update_batch(&mut self, xs: &[f64], n: usize, ys: &[f64]) -> Result<()> {
        self.check_rows(xs, n)?;
        self.check(xs, ys.len())?;
        let simd = Simd::detect();
        if N::MEAN_BATCH {
            if !ys.is_empty() {
                self.learn_rows(xs, ys, simd);
            }
        } else {
            for (x, y) in xs.chunks_exact(n).zip(ys) {
                self.learn_rows(x, std::slice::from_ref(y), simd);
            }
        }
        Ok(())
    }

    fn reset_optimizer(&mut self) -> Result<()> {
        self.p.reset_optimizer();
        Ok(())
    }

    fn set_lr_scale(&mut self, scale: f64) -> Result<()> {
        self.p.set_lr_scale(scale);
        Ok(())
    }

    /// The names and layouts the candle version writes (its `NetOptimizer`'s).
    fn save(&self, s: &mut Snapshot) -> Result<()> {
        self.p.save(s, &self.net.vars());
        Ok(())
    }

    fn load(&mut self, s: &mut Snapshot) -> Result<()> {
        self.p.load(s, &self.net.vars())
    }
}

#[cfg(test)]
mod mlp_tests;
#[cfg(test)]
mod cnn_tests;

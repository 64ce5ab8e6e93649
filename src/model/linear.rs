//! Online linear regression: `y = x·w + b`, MSE or Huber loss, SGD, AdamW or NLMS.
//!
//! The parameters are one vector θ = (w, b) over inputs z = (x, 1). The gradient of
//! a linear model is closed-form, so it is computed directly — for MSE
//! ∂L/∂θ = zᵀ·2(ŷ − y)/B, for Huber zᵀ·clamp(ŷ − y, ±δ)/B — on plain f64 slices with
//! buffers kept between steps: a predict or an update allocates nothing (a one-row
//! candle matmul allocated ~5 tensors per predict and ~12–25 per step). The optimizers
//! are written out here (AdamW as candle-nn's, see `optim.rs` there; tested against
//! it) so their state (moments, step count) is ours to checkpoint. Sums run left to
//! right over z, so results are a plain-f64 function of the inputs (tested bit for
//! bit). Weights start at zero (deterministic). One `update` is one optimizer step.

use candle_core::Device;

use crate::error::{Error, Result};

use super::loss::Loss;
use super::{OnlineModel, Snapshot};

/// Which optimizer steps the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Optim {
    Sgd,
    AdamW,
    /// Normalised LMS (linear models): θ ← θ − lr·Σ rᵢzᵢ / Σ‖zᵢ‖², r the residual
    /// (clamped to ±δ for Huber). Invariant to the scale of the target, nearly so
    /// to the features' (the bias input stays 1), stable for 0 < lr < 2.
    Nlms,
}

/// AdamW's hyper-parameters (candle-nn's defaults, weight decay off).
pub(crate) const BETA1: f64 = 0.9;
pub(crate) const BETA2: f64 = 0.999;
pub(crate) const EPS: f64 = 1e-8;

/// β raised to 1, 2, 4, …, 2³⁰ by repeated squaring (`a ← a·a`), at compile time.
const fn squarings(beta: f64) -> [f64; 31] {
    let mut out = [0.0; 31];
    let (mut a, mut i) = (beta, 0);
    while i < 31 {
        out[i] = a;
        a *= a;
        i += 1;
    }
    out
}

const BETA1_SQUARINGS: [f64; 31] = squarings(BETA1);
const BETA2_SQUARINGS: [f64; 31] = squarings(BETA2);

/// βᵗ as `f64::powi` computes it (the runtime's exponentiation by squaring: the
/// product, in ascending bit order of t, of β^(2ᵏ) for the bits k set in t, each
/// squaring rounded) with the squarings read from a table instead of recomputed
/// each call. The same operations on the same values: the same bits (tested
/// against `powi` over t = 0…2²⁰).
#[inline(always)]
fn powi_squarings(squarings: &[f64; 31], t: u32) -> f64 {
    let (mut r, mut bits) = (1.0, t);
    while bits != 0 {
        r *= squarings[bits.trailing_zeros() as usize];
        bits &= bits - 1;
    }
    r
}

/// AdamW's bias corrections at step `t` ≥ 1: (1/(1 − β₁ᵗ), 1/(1 − β₂ᵗ)), bit for bit
/// what candle-nn computes with `powi` (a table replaces `powi`'s squarings, which
/// cost a linear model's step as much as its arithmetic).
#[inline]
pub(crate) fn adam_scales(t: u64) -> (f64, f64) {
    let t = t.min(i32::MAX as u64) as u32;
    (1.0 / (1.0 - powi_squarings(&BETA1_SQUARINGS, t)), 1.0 / (1.0 - powi_squarings(&BETA2_SQUARINGS, t)))
}

/// AdamW state: first and second moments and the step count.
struct Moments {
    m: Vec<f64>,
    v: Vec<f64>,
    t: u64,
}

/// A linear model with its optimizer state.
pub struct LinearModel {
    /// (w, b): n weights, then the bias.
    theta: Vec<f64>,
    optim: Optim,
    moments: Option<Moments>,
    lr: f64,
    lr_scale: f64,
    loss: Loss,
    n: usize,
    updates: u64,
    /// The step's gradient (reused).
    grad: Vec<f64>,
}

impl LinearModel {
    pub fn new(n_features: usize, optim: Optim, lr: f64, device: &Device) -> Result<Self> {
        Self::with_loss(n_features, optim, lr, Loss::Mse, device)
    }

    /// `device` is accepted for symmetry with the networks; a linear model's
    /// one-row steps are cheapest on the CPU.
    pub fn with_loss(n_features: usize, optim: Optim, lr: f64, loss: Loss, _device: &Device) -> Result<Self> {
        let mut m = LinearModel {
            theta: vec![0.0; n_features + 1],
            optim,
            moments: None,
            lr,
            lr_scale: 1.0,
            loss,
            n: n_features,
            updates: 0,
            grad: vec![0.0; n_features + 1],
        };
        m.reset_optimizer()?;
        Ok(m)
    }

    fn check(&self, xs: &[f64]) -> Result<usize> {
        if xs.is_empty() || !xs.len().is_multiple_of(self.n) {
            return Err(Error::Internal(format!("expected rows of {} features, got {} values", self.n, xs.len())));
        }
        Ok(xs.len() / self.n)
    }

    /// z·θ for one row x (z = (x, 1)), summed left to right.
    fn dot(&self, x: &[f64]) -> f64 {
        let mut terms = x.iter().zip(&self.theta).map(|(xi, wi)| xi * wi);
        let first = terms.next().unwrap_or(0.0);
        terms.fold(first, |s, t| s + t) + self.theta[self.n]
    }

    /// One optimizer step on rows `xs` with targets `ys`; returns the mean loss.
    fn step(&mut self, xs: &[f64], ys: &[f64]) -> Result<f64> {
        let rows = self.check(xs)?;
        if rows != ys.len() {
            return Err(Error::Internal(format!("{rows} rows but {} targets", ys.len())));
        }
        let nlms = self.optim == Optim::Nlms;
        self.grad.iter_mut().for_each(|g| *g = 0.0);
        let (mut loss, mut zz) = (0.0, 0.0);
        for (x, y) in xs.chunks(self.n).zip(ys) {
            let r = self.dot(x) - y;
            // ∂L/∂ŷ for this row, already divided by the batch size (NLMS: the
            // residual itself, normalised below by Σ‖z‖²).
            let g = match self.loss {
                Loss::Mse => {
                    loss += r * r;
                    if nlms {
                        r
                    } else {
                        r * (2.0 / rows as f64)
                    }
                }
                Loss::Huber { delta } => {
                    let (a, q) = (r.abs(), r.abs().min(delta));
                    loss += 0.5 * q * q + delta * (a - q);
                    let c = r.clamp(-delta, delta);
                    if nlms {
                        c
                    } else {
                        c / rows as f64
                    }
                }
            };
            for (gi, xi) in self.grad.iter_mut().zip(x) {
                *gi += xi * g;
            }
            self.grad[self.n] += g;
            if nlms {
                zz += x.iter().map(|v| v * v).sum::<f64>() + 1.0;
            }
        }
        let lr = self.lr * self.lr_scale;
        match (&mut self.moments, self.optim) {
            (_, Optim::Nlms) => {
                let k = lr / zz;
                for (t, g) in self.theta.iter_mut().zip(&self.grad) {
                    *t -= g * k;
                }
            }
            (Some(s), _) => {
                s.t += 1;
                let (c1, c2) = adam_scales(s.t);
                for (((t, g), m), v) in self.theta.iter_mut().zip(&self.grad).zip(s.m.iter_mut()).zip(s.v.iter_mut()) {
                    *m = *m * BETA1 + g * (1.0 - BETA1);
                    *v = *v * BETA2 + g * g * (1.0 - BETA2);
                    let (m_hat, v_hat) = (*m * c1, *v * c2);
                    *t -= m_hat / (v_hat.sqrt() + EPS) * lr;
                }
            }
            (None, _) => {
                for (t, g) in self.theta.iter_mut().zip(&self.grad) {
                    *t -= g * lr;
                }
            }
        }
        self.updates += 1;
        Ok(loss / rows as f64)
    }
}

impl OnlineModel for LinearModel {
    fn predict(&self, x: &[f64]) -> Result<f64> {
        if x.len() != self.n {
            return Err(Error::Internal(format!("expected {} features, got {}", self.n, x.len())));
        }
        Ok(self.dot(x))
    }

    fn update(&mut self, x: &[f64], y: f64) -> Result<f64> {
        if x.len() != self.n {
            return Err(Error::Internal(format!("expected {} features, got {}", self.n, x.len())));
        }
        self.step(x, &[y])
    }

    fn updates(&self) -> u64 {
        self.updates
    }

    fn predict_batch(&self, xs: &[f64], _n: usize, out: &mut Vec<f64>) -> Result<()> {
        self.check(xs)?;
        out.clear();
        out.extend(xs.chunks(self.n).map(|x| self.dot(x)));
        Ok(())
    }

    fn update_batch(&mut self, xs: &[f64], _n: usize, ys: &[f64]) -> Result<()> {
        self.step(xs, ys).map(|_| ())
    }

    fn reset_optimizer(&mut self) -> Result<()> {
        self.moments = match self.optim {
            Optim::Sgd | Optim::Nlms => None,
            Optim::AdamW => Some(Moments { m: vec![0.0; self.n + 1], v: vec![0.0; self.n + 1], t: 0 }),
        };
        Ok(())
    }

    fn set_lr_scale(&mut self, scale: f64) -> Result<()> {
        self.lr_scale = scale;
        Ok(())
    }

    fn parameters(&self) -> Result<Vec<f64>> {
        Ok(self.theta.clone())
    }

    fn save(&self, s: &mut Snapshot) -> Result<()> {
        s.put("theta", self.theta.clone());
        s.put_f64("lr_scale", self.lr_scale);
        s.put_int("updates", self.updates);
        if let Some(m) = &self.moments {
            s.put("adam_m", m.m.clone());
            s.put("adam_v", m.v.clone());
            s.put_int("adam_t", m.t);
        }
        Ok(())
    }

    fn load(&mut self, s: &mut Snapshot) -> Result<()> {
        let d = [self.n + 1];
        self.theta = s.array_shaped("theta", &d)?.to_vec();
        self.lr_scale = s.f64("lr_scale")?;
        self.updates = s.int("updates")?;
        if self.moments.is_some() {
            let (m, v) = (s.array_shaped("adam_m", &d)?.to_vec(), s.array_shaped("adam_v", &d)?.to_vec());
            let t = s.int("adam_t")?;
            self.moments = Some(Moments { m, v, t });
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "linear_tests.rs"]
mod tests;

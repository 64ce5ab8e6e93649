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

impl Optim {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "sgd" => Ok(Optim::Sgd),
            "adamw" => Ok(Optim::AdamW),
            "nlms" => Ok(Optim::Nlms),
            other => Err(Error::Config(format!("model.optimizer {other:?} is not one of auto, sgd, adamw, nlms"))),
        }
    }
}

/// AdamW's hyper-parameters (candle-nn's defaults, weight decay off).
pub(crate) const BETA1: f64 = 0.9;
pub(crate) const BETA2: f64 = 0.999;
pub(crate) const EPS: f64 = 1e-8;

/// AdamW state: first and second moments and the step count.
struct Moments {
    m: Vec<f64>,
    v: Vec<f64>,
    t: i32,
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
                let (c1, c2) = (1.0 / (1.0 - BETA1.powi(s.t)), 1.0 / (1.0 - BETA2.powi(s.t)));
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
            s.put_int("adam_t", m.t as u64);
        }
        Ok(())
    }

    fn load(&mut self, s: &mut Snapshot) -> Result<()> {
        let same = |name: &str, v: &[f64]| -> Result<Vec<f64>> {
            if v.len() != self.n + 1 {
                return Err(Error::Checkpoint(format!("linear model {name}: {} values stored, {} expected", v.len(), self.n + 1)));
            }
            Ok(v.to_vec())
        };
        self.theta = same("theta", s.array("theta")?)?;
        self.lr_scale = s.f64("lr_scale")?;
        self.updates = s.int("updates")?;
        if self.moments.is_some() {
            let (m, v) = (same("adam_m", s.array("adam_m")?)?, same("adam_v", s.array("adam_v")?)?);
            let t = s.int("adam_t")? as i32;
            self.moments = Some(Moments { m, v, t });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Tensor};

    /// A plain-f64 reference written out here: z·θ summed left to right, then the
    /// optimizer's formula per coordinate. The model must match it bit for bit over
    /// a stream of rows, for each optimizer and loss.
    #[test]
    fn bit_equal_to_a_plain_f64_reference() {
        for (optim, loss) in [
            (Optim::Sgd, Loss::Mse),
            (Optim::Nlms, Loss::Huber { delta: 0.3 }),
            (Optim::AdamW, Loss::Mse),
            (Optim::Sgd, Loss::Huber { delta: 0.5 }),
        ] {
            let lr = 0.05;
            let mut m = LinearModel::with_loss(3, optim, lr, loss, &Device::Cpu).unwrap();
            let (mut th, mut am, mut av) = ([0.0f64; 4], [0.0f64; 4], [0.0f64; 4]);
            for i in 0..300 {
                let t = i as f64;
                let x = [(t * 0.37).sin(), (t * 0.11).cos() * 2.0, ((i * 7) % 5) as f64 - 2.0];
                let y = 0.8 * x[0] - 1.3 * x[1] + 0.4 * x[2] + 0.1 + 0.3 * (t * 1.7).sin();
                let pred = x[0] * th[0] + x[1] * th[1] + x[2] * th[2] + th[3];
                assert_eq!(m.predict(&x).unwrap().to_bits(), pred.to_bits(), "{optim:?} row {i}");
                let r = pred - y;
                let g = match (loss, optim) {
                    (Loss::Mse, Optim::Nlms) => r,
                    (Loss::Mse, _) => r * 2.0,
                    (Loss::Huber { delta }, _) => r.clamp(-delta, delta),
                };
                let z = [x[0], x[1], x[2], 1.0];
                match optim {
                    Optim::Sgd => (0..4).for_each(|j| th[j] -= z[j] * g * lr),
                    Optim::Nlms => {
                        let zz = x[0] * x[0] + x[1] * x[1] + x[2] * x[2] + 1.0;
                        (0..4).for_each(|j| th[j] -= z[j] * g * (lr / zz))
                    }
                    Optim::AdamW => {
                        let k = i + 1;
                        for j in 0..4 {
                            let gj = z[j] * g;
                            am[j] = am[j] * BETA1 + gj * (1.0 - BETA1);
                            av[j] = av[j] * BETA2 + gj * gj * (1.0 - BETA2);
                            let mh = am[j] * (1.0 / (1.0 - BETA1.powi(k)));
                            let vh = av[j] * (1.0 / (1.0 - BETA2.powi(k)));
                            th[j] -= mh / (vh.sqrt() + EPS) * lr;
                        }
                    }
                }
                m.update(&x, y).unwrap();
            }
            let p = m.parameters().unwrap();
            assert_eq!(p.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), th.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "{optim:?}");
        }
    }

    /// Normalised LMS by hand (lr = 0.5, θ = 0): x = (1, 2), y = 3 → z = (1, 2, 1),
    /// ‖z‖² = 6, r = −3, θ = 0.5·3·z/6 = (0.25, 0.5, 0.25) (half the residual closed:
    /// ŷ = 1.5). Then x = (0, 1), y = 1: z = (0, 1, 1), ŷ = 0.75, r = −0.25, ‖z‖² = 2,
    /// θ += 0.5·0.25·z/2 → (0.25, 0.5625, 0.3125). The same targets ×1000 give θ ×1000
    /// (scale-free in the target).
    #[test]
    fn nlms_by_hand() {
        for scale in [1.0, 1000.0] {
            let mut m = LinearModel::new(2, Optim::Nlms, 0.5, &Device::Cpu).unwrap();
            m.update(&[1.0, 2.0], 3.0 * scale).unwrap();
            assert!((m.predict(&[1.0, 2.0]).unwrap() - 1.5 * scale).abs() < 1e-9 * scale);
            m.update(&[0.0, 1.0], 1.0 * scale).unwrap();
            let p = m.parameters().unwrap();
            for (got, want) in p.iter().zip([0.25, 0.5625, 0.3125]) {
                assert!((got - want * scale).abs() < 1e-12 * scale, "{p:?}");
            }
        }
    }

    /// Two SGD steps worked out by hand (lr = 0.1, w = b = 0 at start).
    /// Step 1: x = (1, 2), y = 3: ŷ = 0, g = 2(0 − 3) = −6,
    ///   w = (0.6, 1.2), b = 0.6.
    /// Step 2: x = (2, −1), y = 1: ŷ = 1.2 − 1.2 + 0.6 = 0.6, g = 2(0.6 − 1) = −0.8,
    ///   w = (0.6 + 0.16, 1.2 − 0.08) = (0.76, 1.12), b = 0.6 + 0.08 = 0.68.
    #[test]
    fn sgd_matches_hand_computation() {
        let mut m = LinearModel::new(2, Optim::Sgd, 0.1, &Device::Cpu).unwrap();
        assert_eq!(m.update(&[1.0, 2.0], 3.0).unwrap(), 9.0);
        assert!((m.predict(&[2.0, -1.0]).unwrap() - 0.6).abs() < 1e-12);
        m.update(&[2.0, -1.0], 1.0).unwrap();
        let p = m.parameters().unwrap();
        for (a, b) in p.iter().zip([0.76, 1.12, 0.68]) {
            assert!((a - b).abs() < 1e-12, "{p:?}");
        }
        assert_eq!(m.updates(), 2);
    }

    /// Huber (δ = 1), lr = 0.1, x = (1, 2), y = 3 from w = b = 0: e = −3 is outside
    /// ±δ, so the gradient is δ·sign(e) = −1 per unit input: w = (0.1, 0.2), b = 0.1.
    /// Then x = (1, 0), y = 0.5: ŷ = 0.2, e = −0.3 inside ±δ → gradient e:
    /// w₁ = 0.1 + 0.03 = 0.13, b = 0.1 + 0.03 = 0.13.
    #[test]
    fn huber_sgd_matches_hand_computation() {
        let mut m = LinearModel::with_loss(2, Optim::Sgd, 0.1, Loss::Huber { delta: 1.0 }, &Device::Cpu).unwrap();
        m.update(&[1.0, 2.0], 3.0).unwrap();
        m.update(&[1.0, 0.0], 0.5).unwrap();
        let p = m.parameters().unwrap();
        for (a, b) in p.iter().zip([0.13, 0.2, 0.13]) {
            assert!((a - b).abs() < 1e-12, "{p:?}");
        }
    }

    /// A mini-batch step uses the mean gradient: by hand (lr 0.1, from zero) rows
    /// x = (1, 0), y = 2 and x = (0, 1), y = 4: ŷ = 0, g = 2(ŷ − y) = (−4, −8), mean
    /// over rows → w = (0.1·4/2, 0.1·8/2) = (0.2, 0.4), b = 0.1·12/2 = 0.6.
    #[test]
    fn batch_step_uses_the_mean_gradient() {
        let mut m = LinearModel::new(2, Optim::Sgd, 0.1, &Device::Cpu).unwrap();
        m.update_batch(&[1.0, 0.0, 0.0, 1.0], 2, &[2.0, 4.0]).unwrap();
        let p = m.parameters().unwrap();
        for (a, b) in p.iter().zip([0.2, 0.4, 0.6]) {
            assert!((a - b).abs() < 1e-12, "{p:?}");
        }
    }

    /// The hand-written AdamW equals candle-nn's `AdamW` driven by autograd on the
    /// same stream (an independent implementation of the same update).
    #[test]
    fn adamw_matches_candle_nn() {
        use candle_core::Var;
        use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
        let dev = Device::Cpu;
        let mut ours = LinearModel::new(2, Optim::AdamW, 0.05, &dev).unwrap();
        let w = Var::zeros((2, 1), DType::F64, &dev).unwrap();
        let b = Var::zeros((1, 1), DType::F64, &dev).unwrap();
        let mut theirs =
            AdamW::new(vec![w.clone(), b.clone()], ParamsAdamW { lr: 0.05, weight_decay: 0.0, ..Default::default() }).unwrap();
        for i in 0..50 {
            let x = [(i as f64 * 0.3).sin(), (i as f64 * 0.7).cos()];
            let y = 1.5 * x[0] - 0.5 * x[1] + 0.2;
            ours.update(&x, y).unwrap();
            let xt = Tensor::new(&[x], &dev).unwrap();
            let pred = xt.matmul(w.as_tensor()).unwrap().broadcast_add(b.as_tensor()).unwrap();
            let loss = pred.sub(&Tensor::new(&[[y]], &dev).unwrap()).unwrap().sqr().unwrap().mean_all().unwrap();
            theirs.backward_step(&loss).unwrap();
        }
        let mut want = w.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        want.extend(b.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap());
        let got = ours.parameters().unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
        }
    }

    /// AdamW's first step moves every parameter with a non-zero gradient by
    /// lr·m̂/(√v̂+ε) = lr·g/(|g|+ε) ≈ lr·sign(g) (Kingma & Ba 2015, bias-corrected).
    #[test]
    fn adamw_first_step_is_lr_times_sign() {
        let mut m = LinearModel::new(2, Optim::AdamW, 0.01, &Device::Cpu).unwrap();
        m.update(&[1.0, -2.0], 3.0).unwrap();
        let p = m.parameters().unwrap();
        for (a, b) in p.iter().zip([0.01, -0.01, 0.01]) {
            assert!((a - b).abs() < 1e-9, "{p:?}");
        }
    }
}

//! Online linear regression in candle: `y = x·w + b`, MSE or Huber loss, SGD or AdamW.
//!
//! The parameters are one tensor θ = (w, b) over inputs z = (x, 1). The gradient of
//! a linear model is closed-form, so it is computed directly — for MSE
//! ∂L/∂θ = zᵀ·2(ŷ − y)/B, for Huber zᵀ·clamp(ŷ − y, ±δ)/B — instead of through
//! autograd; and the optimizers are written out here (AdamW exactly as candle-nn's,
//! see `optim.rs` there) so their state (moments, step count) is ours to checkpoint.
//! Weights start at zero (deterministic). One `update` is one optimizer step.

use candle_core::{DType, Device, Tensor};

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
    m: Tensor,
    v: Tensor,
    t: i32,
}

/// A linear model with its optimizer state.
pub struct LinearModel {
    theta: Tensor,
    optim: Optim,
    moments: Option<Moments>,
    lr: f64,
    lr_scale: f64,
    loss: Loss,
    device: Device,
    n: usize,
    updates: u64,
}

impl LinearModel {
    pub fn new(n_features: usize, optim: Optim, lr: f64, device: &Device) -> Result<Self> {
        Self::with_loss(n_features, optim, lr, Loss::Mse, device)
    }

    pub fn with_loss(n_features: usize, optim: Optim, lr: f64, loss: Loss, device: &Device) -> Result<Self> {
        let mut m = LinearModel {
            theta: Tensor::zeros((n_features + 1, 1), DType::F64, device)?,
            optim,
            moments: None,
            lr,
            lr_scale: 1.0,
            loss,
            device: device.clone(),
            n: n_features,
            updates: 0,
        };
        m.reset_optimizer()?;
        Ok(m)
    }

    /// The rows of `xs` (row-major, n features each) with a 1 appended: (B, n + 1).
    fn z(&self, xs: &[f64]) -> Result<Tensor> {
        if xs.is_empty() || xs.len() % self.n != 0 {
            return Err(Error::Internal(format!("expected rows of {} features, got {} values", self.n, xs.len())));
        }
        let rows = xs.len() / self.n;
        let mut z = Vec::with_capacity(rows * (self.n + 1));
        for x in xs.chunks(self.n) {
            z.extend_from_slice(x);
            z.push(1.0);
        }
        Ok(Tensor::from_vec(z, (rows, self.n + 1), &self.device)?)
    }

    /// One optimizer step on rows `xs` with targets `ys`; returns the mean loss.
    fn step(&mut self, xs: &[f64], ys: &[f64]) -> Result<f64> {
        let z = self.z(xs)?;
        let rows = ys.len();
        let y = Tensor::from_slice(ys, (rows, 1), &self.device)?;
        let r = z.matmul(&self.theta)?.sub(&y)?;
        let loss = self.loss.apply(&r, &Tensor::zeros((rows, 1), DType::F64, &self.device)?)?.to_scalar::<f64>()?;
        // ∂L/∂ŷ per row, already divided by the batch size.
        let g = match self.loss {
            Loss::Mse => (&r * (2.0 / rows as f64))?,
            Loss::Huber { delta } => (r.clamp(-delta, delta)? / rows as f64)?,
        };
        let lr = self.lr * self.lr_scale;
        if self.optim == Optim::Nlms {
            let zz = z.sqr()?.sum_all()?.to_scalar::<f64>()?;
            let rc = match self.loss {
                Loss::Mse => r,
                Loss::Huber { delta } => r.clamp(-delta, delta)?,
            };
            self.theta = (&self.theta - (z.t()?.matmul(&rc)? * (lr / zz))?)?;
            self.updates += 1;
            return Ok(loss);
        }
        let grad = z.t()?.matmul(&g)?;
        self.theta = match &mut self.moments {
            None => (&self.theta - (grad * lr)?)?,
            Some(s) => {
                s.t += 1;
                s.m = ((&s.m * BETA1)? + (&grad * (1.0 - BETA1))?)?;
                s.v = ((&s.v * BETA2)? + (grad.sqr()? * (1.0 - BETA2))?)?;
                let m_hat = (&s.m * (1.0 / (1.0 - BETA1.powi(s.t))))?;
                let v_hat = (&s.v * (1.0 / (1.0 - BETA2.powi(s.t))))?;
                (&self.theta - ((m_hat / (v_hat.sqrt()? + EPS)?)? * lr)?)?
            }
        };
        self.updates += 1;
        Ok(loss)
    }
}

impl OnlineModel for LinearModel {
    fn predict(&self, x: &[f64]) -> Result<f64> {
        Ok(self.z(x)?.matmul(&self.theta)?.flatten_all()?.to_vec1::<f64>()?[0])
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
        *out = self.z(xs)?.matmul(&self.theta)?.flatten_all()?.to_vec1::<f64>()?;
        Ok(())
    }

    fn update_batch(&mut self, xs: &[f64], _n: usize, ys: &[f64]) -> Result<()> {
        self.step(xs, ys).map(|_| ())
    }

    fn reset_optimizer(&mut self) -> Result<()> {
        self.moments = match self.optim {
            Optim::Sgd | Optim::Nlms => None,
            Optim::AdamW => {
                let zeros = Tensor::zeros((self.n + 1, 1), DType::F64, &self.device)?;
                Some(Moments { m: zeros.clone(), v: zeros, t: 0 })
            }
        };
        Ok(())
    }

    fn set_lr_scale(&mut self, scale: f64) -> Result<()> {
        self.lr_scale = scale;
        Ok(())
    }

    fn parameters(&self) -> Result<Vec<f64>> {
        Ok(self.theta.flatten_all()?.to_vec1::<f64>()?)
    }

    fn save(&self, s: &mut Snapshot) -> Result<()> {
        s.put_tensor("theta", &self.theta)?;
        s.put_f64("lr_scale", self.lr_scale);
        s.put_int("updates", self.updates);
        if let Some(m) = &self.moments {
            s.put_tensor("adam_m", &m.m)?;
            s.put_tensor("adam_v", &m.v)?;
            s.put_int("adam_t", m.t as u64);
        }
        Ok(())
    }

    fn load(&mut self, s: &mut Snapshot) -> Result<()> {
        self.theta = s.tensor_like("theta", &self.theta)?;
        self.lr_scale = s.f64("lr_scale")?;
        self.updates = s.int("updates")?;
        if let Some(m) = &mut self.moments {
            m.m = s.tensor_like("adam_m", &m.m)?;
            m.v = s.tensor_like("adam_v", &m.v)?;
            m.t = s.int("adam_t")? as i32;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

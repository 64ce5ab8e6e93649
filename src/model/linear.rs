//! Online linear regression in candle: `y = x·w + b`, MSE loss, SGD or AdamW steps.
//!
//! Weights start at zero (deterministic). One `update` is one optimizer step on one
//! example: with SGD, `w ← w − lr · 2(ŷ − y)·x` and `b ← b − lr · 2(ŷ − y)`.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW, SGD};

use crate::error::{Error, Result};

use super::loss::Loss;
use super::OnlineModel;

/// Which optimizer steps the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Optim {
    Sgd,
    AdamW,
}

impl Optim {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "sgd" => Ok(Optim::Sgd),
            "adamw" => Ok(Optim::AdamW),
            other => Err(Error::Config(format!("model.optimizer {other:?} is not one of sgd, adamw"))),
        }
    }
}

enum Opt {
    Sgd(SGD),
    AdamW(AdamW),
}

fn make_opt(optim: Optim, vars: Vec<Var>, lr: f64) -> Result<Opt> {
    Ok(match optim {
        Optim::Sgd => Opt::Sgd(SGD::new(vars, lr)?),
        Optim::AdamW => Opt::AdamW(AdamW::new(vars, ParamsAdamW { lr, weight_decay: 0.0, ..Default::default() })?),
    })
}

/// A linear model with its optimizer state.
pub struct LinearModel {
    w: Var,
    b: Var,
    opt: Opt,
    optim: Optim,
    lr: f64,
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
        let w = Var::zeros((n_features, 1), DType::F64, device)?;
        let b = Var::zeros((1, 1), DType::F64, device)?;
        let opt = make_opt(optim, vec![w.clone(), b.clone()], lr)?;
        Ok(LinearModel { w, b, opt, optim, lr, loss, device: device.clone(), n: n_features, updates: 0 })
    }

    fn forward(&self, x: &[f64]) -> Result<Tensor> {
        if x.len() != self.n {
            return Err(Error::Internal(format!("expected {} features, got {}", self.n, x.len())));
        }
        let x = Tensor::from_slice(x, (1, self.n), &self.device)?;
        Ok(x.matmul(self.w.as_tensor())?.broadcast_add(self.b.as_tensor())?)
    }
}

impl OnlineModel for LinearModel {
    fn predict(&self, x: &[f64]) -> Result<f64> {
        Ok(self.forward(x)?.flatten_all()?.to_vec1::<f64>()?[0])
    }

    fn update(&mut self, x: &[f64], y: f64) -> Result<f64> {
        let pred = self.forward(x)?;
        let target = Tensor::new(&[[y]], &self.device)?;
        let loss = self.loss.apply(&pred, &target)?;
        let value = loss.to_scalar::<f64>()?;
        match &mut self.opt {
            Opt::Sgd(o) => o.backward_step(&loss)?,
            Opt::AdamW(o) => o.backward_step(&loss)?,
        }
        self.updates += 1;
        Ok(value)
    }

    fn updates(&self) -> u64 {
        self.updates
    }

    fn predict_batch(&self, xs: &[f64], n: usize, out: &mut Vec<f64>) -> Result<()> {
        let rows = xs.len() / n;
        let x = Tensor::from_slice(xs, (rows, n), &self.device)?;
        let p = x.matmul(self.w.as_tensor())?.broadcast_add(self.b.as_tensor())?;
        *out = p.flatten_all()?.to_vec1::<f64>()?;
        Ok(())
    }

    fn update_batch(&mut self, xs: &[f64], n: usize, ys: &[f64]) -> Result<()> {
        let rows = ys.len();
        let x = Tensor::from_slice(xs, (rows, n), &self.device)?;
        let pred = x.matmul(self.w.as_tensor())?.broadcast_add(self.b.as_tensor())?;
        let target = Tensor::from_slice(ys, (rows, 1), &self.device)?;
        let loss = self.loss.apply(&pred, &target)?;
        match &mut self.opt {
            Opt::Sgd(o) => o.backward_step(&loss)?,
            Opt::AdamW(o) => o.backward_step(&loss)?,
        }
        self.updates += 1;
        Ok(())
    }

    fn reset_optimizer(&mut self) -> Result<()> {
        self.opt = make_opt(self.optim, vec![self.w.clone(), self.b.clone()], self.lr)?;
        Ok(())
    }

    fn set_lr_scale(&mut self, scale: f64) -> Result<()> {
        let lr = self.lr * scale;
        match &mut self.opt {
            Opt::Sgd(o) => o.set_learning_rate(lr),
            Opt::AdamW(o) => o.set_learning_rate(lr),
        }
        Ok(())
    }

    fn parameters(&self) -> Result<Vec<f64>> {
        let mut p = self.w.as_tensor().flatten_all()?.to_vec1::<f64>()?;
        p.extend(self.b.as_tensor().flatten_all()?.to_vec1::<f64>()?);
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

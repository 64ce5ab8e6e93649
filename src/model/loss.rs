//! Regression losses on candle tensors: `mse` and `huber`.

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::pipeline::config::choice::LossKind;

/// A pointwise regression loss, averaged over the batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Loss {
    Mse,
    /// Quadratic within ±delta, linear outside: robust to outliers.
    Huber { delta: f64 },
}

impl Loss {
    /// The loss `kind` names (`huber` with its `delta`). For `hl_gauss` the
    /// classification head brings its own loss (see `mlp::HlGauss`); this is `Mse`.
    pub fn new(kind: LossKind, delta: f64) -> Result<Self> {
        match kind {
            LossKind::Mse | LossKind::HlGauss => Ok(Loss::Mse),
            LossKind::Huber if delta > 0.0 && delta.is_finite() => Ok(Loss::Huber { delta }),
            LossKind::Huber => Err(Error::Config(format!("model.huber_delta {delta} must be positive"))),
        }
    }

    /// The loss of one prediction against `y` and its derivative in `pred` (the
    /// plain-code networks' form of [`Loss::per_row`]).
    pub fn value_slope(&self, pred: f64, y: f64) -> (f64, f64) {
        let e = pred - y;
        match *self {
            Loss::Mse => (e * e, 2.0 * e),
            Loss::Huber { delta } => {
                let a = e.abs();
                let q = a.min(delta);
                (0.5 * q * q + delta * (a - q), e.clamp(-delta, delta))
            }
        }
    }

    /// The mean loss of `pred` against `target` (same shape).
    pub fn apply(&self, pred: &Tensor, target: &Tensor) -> Result<Tensor> {
        Ok(self.per_row(pred, target)?.mean_all()?)
    }

    /// The loss of each element of `pred` against `target` (same shape).
    pub fn per_row(&self, pred: &Tensor, target: &Tensor) -> Result<Tensor> {
        let e = pred.sub(target)?;
        Ok(match *self {
            Loss::Mse => e.sqr()?,
            Loss::Huber { delta } => {
                // With a = |e|, q = min(a, δ): huber = ½q² + δ(a − q).
                let a = e.abs()?;
                let q = a.clamp(0.0, delta)?;
                let lin = (a - &q)?;
                ((q.sqr()? * 0.5)? + (lin * delta)?)?
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// By hand, δ = 1: errors 0.5, −3 → ½·0.25 = 0.125 and 1·(3 − 0.5) = 2.5,
    /// mean 1.3125; MSE of the same errors = (0.25 + 9)/2 = 4.625.
    #[test]
    fn hand_computed() {
        let p = Tensor::new(&[1.5f64, -1.0], &Device::Cpu).unwrap();
        let y = Tensor::new(&[1.0f64, 2.0], &Device::Cpu).unwrap();
        let h = Loss::Huber { delta: 1.0 }.apply(&p, &y).unwrap().to_scalar::<f64>().unwrap();
        assert!((h - 1.3125).abs() < 1e-12);
        let m = Loss::Mse.apply(&p, &y).unwrap().to_scalar::<f64>().unwrap();
        assert!((m - 4.625).abs() < 1e-12);
    }
}

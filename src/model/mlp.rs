//! A multilayer perceptron regressor in candle: layers named `l0`, `l1`, … through a
//! `VarBuilder` (the names are the safetensors keys), ReLU or tanh between them, one
//! optimizer step per labelled row.
//!
//! Weights are initialised from a seeded generator (uniform ±1/√fan_in, like
//! PyTorch's default), so two runs — and a restarted run — start identically.

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{Linear, VarBuilder, VarMap};

use super::loss::Loss;
use super::net::{Arch, NetModel, Training};
use super::rand::Draws;
use crate::error::{Error, Result};

pub use crate::pipeline::config::choice::Activation;


/// Regression as classification (HL-Gauss, Farebrother et al. 2024, "Stop
/// Regressing"): the net outputs one logit per bin; the target is the Gaussian
/// (σ = 0.75 bin widths) histogram of y over the bins, the loss cross-entropy, and the
/// prediction the expected bin centre.
#[derive(Debug, Clone, PartialEq)]
pub struct HlGauss {
    pub lo: f64,
    pub hi: f64,
    pub bins: usize,
}

impl HlGauss {
    pub fn width(&self) -> f64 {
        (self.hi - self.lo) / self.bins as f64
    }

    pub fn centers(&self) -> Vec<f64> {
        let w = self.width();
        (0..self.bins).map(|k| self.lo + (k as f64 + 0.5) * w).collect()
    }

    /// The target histogram of `y`: Φ differences at the bin edges, renormalised
    /// over the range.
    pub fn target(&self, y: f64) -> Vec<f64> {
        let mut p = vec![0.0; self.bins];
        self.fill_target(y, &mut p);
        p
    }

    /// [`HlGauss::target`] into `p` (`bins` values), without allocating.
    pub fn fill_target(&self, y: f64, p: &mut [f64]) {
        let (w, sigma) = (self.width(), 0.75 * self.width());
        let cdf = |e: f64| 0.5 * (1.0 + erf((e - y) / (sigma * std::f64::consts::SQRT_2)));
        for (k, v) in p.iter_mut().enumerate() {
            *v = cdf(self.lo + (k + 1) as f64 * w) - cdf(self.lo + k as f64 * w);
        }
        let total: f64 = p.iter().sum();
        if total > 1e-12 {
            p.iter_mut().for_each(|v| *v /= total);
        } else {
            // y far outside the range: all mass on the nearest end bin.
            let k = if y < self.lo { 0 } else { self.bins - 1 };
            p.iter_mut().enumerate().for_each(|(i, v)| *v = (i == k) as u8 as f64);
        }
    }
}

/// erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5·10⁻⁷).
pub fn erf(x: f64) -> f64 {
    let s = x.signum();
    let x = x.abs();
    let t = 1.0 / (1.0 + 0.3275911 * x);
    let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * (-x * x).exp();
    s * y
}

/// A multilayer perceptron (fully connected layers, ReLU or tanh between them),
/// with a scalar output or an HL-Gauss classification head.
pub struct Mlp {
    layers: Vec<Linear>,
    hl: Option<(HlGauss, Tensor)>,
    act: Activation,
    n: usize,
    /// The variables' float type (F64, or F32 for `model.precision = "f32"`).
    dtype: DType,
}

/// The MLP as an online model.
pub type MlpModel = NetModel<Mlp>;

impl NetModel<Mlp> {
    pub fn new(n_features: usize, hidden: &[usize], act: Activation, t: &Training, device: &Device) -> Result<Self> {
        Self::with_head(n_features, hidden, act, None, t, DType::F64, device)
    }

    /// As [`MlpModel::new`], with an HL-Gauss classification head when `hl` is set,
    /// its variables in `dtype` (F64, or F32: the seeded values rounded).
    pub fn with_head(n_features: usize, hidden: &[usize], act: Activation, hl: Option<HlGauss>, t: &Training, dtype: DType, device: &Device) -> Result<Self> {
        let varmap = VarMap::new();
        let mut rng = Draws(t.seed);
        let mut dims = vec![n_features];
        dims.extend_from_slice(hidden);
        dims.push(hl.as_ref().map_or(1, |h| h.bins));
        {
            let mut data = varmap.data().lock().map_err(|_| Error::Internal("varmap lock".into()))?;
            for (i, w) in dims.windows(2).enumerate() {
                let (fan_in, fan_out) = (w[0], w[1]);
                let bound = 1.0 / (fan_in as f64).sqrt();
                let mut draw = |n: usize| -> Vec<f64> { (0..n).map(|_| rng.symmetric(bound)).collect() };
                let weight = Tensor::from_vec(draw(fan_in * fan_out), (fan_out, fan_in), device)?.to_dtype(dtype)?;
                let bias = Tensor::from_vec(draw(fan_out), fan_out, device)?.to_dtype(dtype)?;
                data.insert(format!("l{i}.weight"), Var::from_tensor(&weight)?);
                data.insert(format!("l{i}.bias"), Var::from_tensor(&bias)?);
            }
        }
        let vb = VarBuilder::from_varmap(&varmap, dtype, device);
        let layers = dims
            .windows(2)
            .enumerate()
            .map(|(i, w)| candle_nn::linear(w[0], w[1], vb.pp(format!("l{i}"))))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let hl = match hl {
            Some(h) => {
                let c = Tensor::from_vec(h.centers(), (h.bins, 1), device)?.to_dtype(dtype)?;
                Some((h, c))
            }
            None => None,
        };
        NetModel::from_parts(Mlp { layers, hl, act, n: n_features, dtype }, varmap, t, device)
    }
}

impl Mlp {
    fn forward(&self, x: &[f64], device: &Device) -> Result<Tensor> {
        if !x.len().is_multiple_of(self.n) || x.is_empty() {
            return Err(Error::Internal(format!("expected rows of {} features, got {} values", self.n, x.len())));
        }
        let mut h = Tensor::from_slice(x, (x.len() / self.n, self.n), device)?.to_dtype(self.dtype)?;
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward(&h)?;
            if i < last {
                h = match self.act {
                    Activation::Relu => h.relu()?,
                    Activation::Tanh => h.tanh()?,
                };
            }
        }
        Ok(h)
    }
}

impl Arch for Mlp {
    /// The output itself, or with an HL-Gauss head the expected bin centre.
    fn estimate(&self, xs: &[f64], device: &Device) -> Result<Tensor> {
        let out = self.forward(xs, device)?;
        Ok(match &self.hl {
            None => out,
            Some((_, centers)) => candle_nn::ops::softmax_last_dim(&out)?.matmul(centers)?,
        })
    }

    /// The configured loss, or with an HL-Gauss head the cross-entropy with each
    /// target's Gaussian-smoothed histogram.
    fn loss(&self, xs: &[f64], ys: &[f64], loss: &Loss, device: &Device) -> Result<Tensor> {
        let out = self.forward(xs, device)?;
        let rows = ys.len();
        Ok(match &self.hl {
            None => loss.apply(&out, &Tensor::from_slice(ys, (rows, 1), device)?.to_dtype(self.dtype)?)?,
            Some((h, _)) => {
                let p: Vec<f64> = ys.iter().flat_map(|y| h.target(*y)).collect();
                let p = Tensor::from_vec(p, (rows, h.bins), device)?.to_dtype(self.dtype)?;
                ((p * candle_nn::ops::log_softmax(&out, 1)?)?.sum_all()? / rows as f64)?.neg()?
            }
        })
    }

    fn batches(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf(0.5) = 0.5204998778, erf(1) = 0.8427007929 (Abramowitz & Stegun, Table 7.1).
    #[test]
    fn erf_table_values() {
        assert!((erf(0.5) - 0.5204998778).abs() < 2e-7);
        assert!((erf(1.0) - 0.8427007929).abs() < 2e-7);
        assert!((erf(-1.0) + 0.8427007929).abs() < 2e-7);
    }

    /// Bins of width 1 on [0, 4), y = 2 (an edge): σ = 0.75, so bins 1 and 2 each get
    /// Φ(1/0.75) − Φ(0) = 0.40878 and bins 0 and 3 Φ(2/0.75) − Φ(1/0.75) = 0.08740,
    /// renormalised by their sum 0.99236 → 0.41193 and 0.08807. The expected centre is
    /// exactly 2 by symmetry.
    #[test]
    fn hl_gauss_target_by_hand() {
        let h = HlGauss { lo: 0.0, hi: 4.0, bins: 4 };
        let p = h.target(2.0);
        for (a, b) in p.iter().zip([0.08807, 0.41193, 0.41193, 0.08807]) {
            assert!((a - b).abs() < 5e-5, "{p:?}");
        }
        let mean: f64 = p.iter().zip(h.centers()).map(|(p, c)| p * c).sum();
        assert!((mean - 2.0).abs() < 1e-9);
    }
}

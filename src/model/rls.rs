//! Recursive least squares with a forgetting factor — the classical online
//! regression baseline — on candle tensors.
//!
//! With inputs z = (x, 1), weights w and inverse-covariance estimate P:
//!   k = P z / (λ + zᵀ P z),   e = y − wᵀ z,   w ← w + k e,   P ← (P − k zᵀ P) / λ.
//! Starting from w = 0 and P = I/δ, with λ = 1 the weights after n updates equal the
//! ridge solution (δI + ZᵀZ)⁻¹ Zᵀy exactly (the test checks this); λ < 1 weighs the
//! past down by λ per step so the model tracks drifting relations.

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

use super::{OnlineModel, Snapshot};

pub struct RlsModel {
    w: Tensor,
    p: Tensor,
    lambda: f64,
    delta: f64,
    device: Device,
    n: usize,
    updates: u64,
}

impl RlsModel {
    pub fn new(n_features: usize, lambda: f64, delta: f64, device: &Device) -> Result<Self> {
        if !(lambda > 0.0 && lambda <= 1.0) {
            return Err(Error::Config(format!("model.forgetting_factor {lambda} must be in (0, 1]")));
        }
        if !(delta > 0.0 && delta.is_finite()) {
            return Err(Error::Config(format!("model.regularization {delta} must be positive")));
        }
        let d = n_features + 1;
        Ok(RlsModel {
            w: Tensor::zeros((d, 1), DType::F64, device)?,
            p: (Tensor::eye(d, DType::F64, device)? / delta)?,
            lambda,
            delta,
            device: device.clone(),
            n: n_features,
            updates: 0,
        })
    }

    fn z(&self, x: &[f64]) -> Result<Tensor> {
        if x.len() != self.n {
            return Err(Error::Internal(format!("expected {} features, got {}", self.n, x.len())));
        }
        let mut v = Vec::with_capacity(self.n + 1);
        v.extend_from_slice(x);
        v.push(1.0);
        Ok(Tensor::from_vec(v, (self.n + 1, 1), &self.device)?)
    }
}

impl OnlineModel for RlsModel {
    fn predict(&self, x: &[f64]) -> Result<f64> {
        let z = self.z(x)?;
        Ok(z.t()?.matmul(&self.w)?.flatten_all()?.to_vec1::<f64>()?[0])
    }

    fn update(&mut self, x: &[f64], y: f64) -> Result<f64> {
        let z = self.z(x)?;
        let zt = z.t()?;
        let pz = self.p.matmul(&z)?; // (d, 1)
        let denom = zt.matmul(&pz)?.flatten_all()?.to_vec1::<f64>()?[0] + self.lambda;
        let k = (pz / denom)?;
        let e = y - zt.matmul(&self.w)?.flatten_all()?.to_vec1::<f64>()?[0];
        self.w = (&self.w + (&k * e)?)?;
        let kzp = k.matmul(&zt.matmul(&self.p)?)?;
        self.p = ((&self.p - kzp)? / self.lambda)?;
        self.updates += 1;
        Ok(e * e)
    }

    fn updates(&self) -> u64 {
        self.updates
    }

    /// Restarts the covariance at I/δ: the weights stay, but new data is again
    /// trusted as much as at the start — the classical response to drift.
    fn reset_optimizer(&mut self) -> Result<()> {
        self.p = (Tensor::eye(self.n + 1, DType::F64, &self.device)? / self.delta)?;
        Ok(())
    }

    fn parameters(&self) -> Result<Vec<f64>> {
        Ok(self.w.flatten_all()?.to_vec1::<f64>()?)
    }

    fn save(&self, s: &mut Snapshot) -> Result<()> {
        s.put_tensor("w", &self.w)?;
        s.put_tensor("p", &self.p)?;
        s.put_int("updates", self.updates);
        Ok(())
    }

    fn load(&mut self, s: &mut Snapshot) -> Result<()> {
        self.w = s.tensor_like("w", &self.w)?;
        self.p = s.tensor_like("p", &self.p)?;
        self.updates = s.int("updates")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Solves A v = b by Gaussian elimination with partial pivoting (reference).
    fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
        let n = b.len();
        for c in 0..n {
            let piv = (c..n).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs())).unwrap();
            a.swap(c, piv);
            b.swap(c, piv);
            for r in c + 1..n {
                let f = a[r][c] / a[c][c];
                for k in c..n {
                    a[r][k] -= f * a[c][k];
                }
                b[r] -= f * b[c];
            }
        }
        let mut v = vec![0.0; n];
        for r in (0..n).rev() {
            v[r] = (b[r] - (r + 1..n).map(|k| a[r][k] * v[k]).sum::<f64>()) / a[r][r];
        }
        v
    }

    #[test]
    fn equals_ridge_closed_form_with_lambda_one() {
        let delta = 0.5;
        let mut m = RlsModel::new(2, 1.0, delta, &Device::Cpu).unwrap();
        let rows: Vec<([f64; 2], f64)> = (0..25)
            .map(|i| {
                let (a, b) = ((i as f64 * 0.37).sin() * 3.0, (i as f64 * 0.11).cos() * 2.0);
                ([a, b], 2.0 * a - 3.0 * b + 0.5 + ((i * 7) % 5) as f64 * 0.1)
            })
            .collect();
        for (x, y) in &rows {
            m.update(x, *y).unwrap();
        }
        // Normal equations (δI + ZᵀZ) w = Zᵀy with z = (x1, x2, 1).
        let mut a = vec![vec![0.0; 3]; 3];
        let mut b = vec![0.0; 3];
        for (x, y) in &rows {
            let z = [x[0], x[1], 1.0];
            for i in 0..3 {
                for j in 0..3 {
                    a[i][j] += z[i] * z[j];
                }
                b[i] += z[i] * y;
            }
        }
        for (i, row) in a.iter_mut().enumerate() {
            row[i] += delta;
        }
        let want = solve(a, b);
        let got = m.parameters().unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-9, "{got:?} vs {want:?}");
        }
    }
}

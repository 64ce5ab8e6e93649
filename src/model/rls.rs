//! Recursive least squares with a forgetting factor — the classical online
//! regression baseline — on plain f64 buffers (no allocation per row).
//!
//! With inputs z = (x, 1), weights w and inverse-covariance estimate P:
//!   k = P z / (λ + zᵀ P z),   e = y − wᵀ z,   w ← w + k e,   P ← (P − k zᵀ P) / λ.
//! Starting from w = 0 and P = I/δ, with λ = 1 the weights after n updates equal the
//! ridge solution (δI + ZᵀZ)⁻¹ Zᵀy exactly (the test checks this); λ < 1 weighs the
//! past down by λ per step so the model tracks drifting relations. P is kept
//! symmetric: zᵀP is (Pz)ᵀ, so the update is P ← (P − k (Pz)ᵀ)/λ, O(d²) per row.

use candle_core::Device;

use crate::error::{Error, Result};

use super::{OnlineModel, Snapshot};

pub struct RlsModel {
    w: Vec<f64>,
    /// d × d, row-major.
    p: Vec<f64>,
    lambda: f64,
    delta: f64,
    n: usize,
    updates: u64,
    /// Scratch: z, P z.
    z: Vec<f64>,
    pz: Vec<f64>,
}

impl RlsModel {
    /// `device` is accepted for symmetry with the networks; RLS's one-row updates
    /// are O(d²) and cheapest on the CPU.
    pub fn new(n_features: usize, lambda: f64, delta: f64, _device: &Device) -> Result<Self> {
        if !(lambda > 0.0 && lambda <= 1.0) {
            return Err(Error::Config(format!("model.forgetting_factor {lambda} must be in (0, 1]")));
        }
        if !(delta > 0.0 && delta.is_finite()) {
            return Err(Error::Config(format!("model.regularization {delta} must be positive")));
        }
        let d = n_features + 1;
        let mut m = RlsModel { w: vec![0.0; d], p: vec![0.0; d * d], lambda, delta, n: n_features, updates: 0, z: vec![0.0; d], pz: vec![0.0; d] };
        m.reset_optimizer()?;
        Ok(m)
    }

    fn check(&self, x: &[f64]) -> Result<()> {
        if x.len() != self.n {
            return Err(Error::Internal(format!("expected {} features, got {}", self.n, x.len())));
        }
        Ok(())
    }

    fn dot(&self, x: &[f64]) -> f64 {
        let mut terms = x.iter().zip(&self.w).map(|(a, b)| a * b);
        let first = terms.next().unwrap_or(0.0);
        terms.fold(first, |s, t| s + t) + self.w[self.n]
    }
}

impl OnlineModel for RlsModel {
    fn predict(&self, x: &[f64]) -> Result<f64> {
        self.check(x)?;
        Ok(self.dot(x))
    }

    fn update(&mut self, x: &[f64], y: f64) -> Result<f64> {
        self.check(x)?;
        let d = self.n + 1;
        self.z[..self.n].copy_from_slice(x);
        self.z[self.n] = 1.0;
        // Pz and zᵀPz.
        let mut zpz = 0.0;
        for i in 0..d {
            let row = &self.p[i * d..(i + 1) * d];
            let v: f64 = row.iter().zip(&self.z).map(|(a, b)| a * b).sum();
            self.pz[i] = v;
            zpz += self.z[i] * v;
        }
        let denom = zpz + self.lambda;
        let e = y - self.dot(x);
        // w += k e with k = Pz / denom.
        for (wi, pzi) in self.w.iter_mut().zip(&self.pz) {
            *wi += pzi / denom * e;
        }
        // P ← (P − k (Pz)ᵀ) / λ, the upper triangle computed and mirrored so P stays
        // exactly symmetric (rounding would otherwise make it drift apart).
        for i in 0..d {
            let ki = self.pz[i] / denom;
            for j in i..d {
                let v = (self.p[i * d + j] - ki * self.pz[j]) / self.lambda;
                self.p[i * d + j] = v;
                self.p[j * d + i] = v;
            }
        }
        self.updates += 1;
        Ok(e * e)
    }

    fn updates(&self) -> u64 {
        self.updates
    }

    /// Restarts the covariance at I/δ: the weights stay, but new data is again
    /// trusted as much as at the start — the classical response to drift.
    fn reset_optimizer(&mut self) -> Result<()> {
        let d = self.n + 1;
        self.p.iter_mut().for_each(|v| *v = 0.0);
        for i in 0..d {
            self.p[i * d + i] = 1.0 / self.delta;
        }
        Ok(())
    }

    fn parameters(&self) -> Result<Vec<f64>> {
        Ok(self.w.clone())
    }

    fn save(&self, s: &mut Snapshot) -> Result<()> {
        s.put("w", self.w.clone());
        s.put("p", self.p.clone());
        s.put_int("updates", self.updates);
        Ok(())
    }

    fn load(&mut self, s: &mut Snapshot) -> Result<()> {
        let d = self.n + 1;
        self.w = s.array_shaped("w", &[d])?.to_vec();
        self.p = s.array_shaped("p", &[d, d])?.to_vec();
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
                // Rows r and c both indexed: no single iterator serves.
                #[allow(clippy::needless_range_loop)]
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

    /// P stays exactly symmetric over many forgetting updates (the update relies on
    /// zᵀP = (Pz)ᵀ).
    #[test]
    fn covariance_stays_symmetric() {
        let mut m = RlsModel::new(3, 0.99, 0.1, &Device::Cpu).unwrap();
        for i in 0..5000 {
            let t = i as f64;
            let x = [(t * 0.3).sin(), (t * 0.7).cos() * 5.0, ((i * 13) % 7) as f64];
            m.update(&x, x[0] - x[1] + 0.1 * (t * 2.1).sin()).unwrap();
        }
        for i in 0..4 {
            for j in 0..4 {
                assert_eq!(m.p[i * 4 + j].to_bits(), m.p[j * 4 + i].to_bits());
            }
        }
        assert!(m.p.iter().all(|v| v.is_finite()));
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

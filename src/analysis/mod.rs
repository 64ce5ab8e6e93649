//! Time-series analysis for choosing features: the autocorrelation function, the
//! delay τ of a delay (Takens) embedding, and its dimension by Cao's method.

pub mod cao;

/// Sample autocorrelation r_k = Σ(xₜ − x̄)(xₜ₊ₖ − x̄) / Σ(xₜ − x̄)² for k = 0..=max_lag.
pub fn acf(x: &[f64], max_lag: usize) -> Vec<f64> {
    let n = x.len();
    if n == 0 {
        return vec![];
    }
    let mean = x.iter().sum::<f64>() / n as f64;
    let denom: f64 = x.iter().map(|v| (v - mean) * (v - mean)).sum();
    (0..=max_lag.min(n - 1))
        .map(|k| {
            if denom == 0.0 {
                return if k == 0 { 1.0 } else { 0.0 };
            }
            (0..n - k).map(|t| (x[t] - mean) * (x[t + k] - mean)).sum::<f64>() / denom
        })
        .collect()
}

/// How τ was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum DelayRule {
    FirstZeroCrossing,
    FirstMinimum,
    Default,
}

/// The embedding delay: the first lag where the ACF reaches zero, else its first
/// local minimum, else 1.
pub fn delay(acf: &[f64]) -> (usize, DelayRule) {
    if let Some(k) = (1..acf.len()).find(|&k| acf[k] <= 0.0) {
        return (k, DelayRule::FirstZeroCrossing);
    }
    if let Some(k) = (1..acf.len().saturating_sub(1)).find(|&k| acf[k] < acf[k - 1] && acf[k] <= acf[k + 1]) {
        return (k, DelayRule::FirstMinimum);
    }
    (1, DelayRule::Default)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// By hand: x = 1..5, x̄ = 3, deviations −2 −1 0 1 2, Σd² = 10;
    /// r₁ = (2 + 0 + 0 + 2)/10 = 0.4, r₂ = (0 − 1 + 0)/10 = −0.1, r₃ = (−2 − 2)/10 = −0.4.
    #[test]
    fn acf_hand_computed() {
        let r = acf(&[1.0, 2.0, 3.0, 4.0, 5.0], 3);
        for (a, b) in r.iter().zip([1.0, 0.4, -0.1, -0.4]) {
            assert!((a - b).abs() < 1e-12, "{r:?}");
        }
        assert_eq!(delay(&r), (2, DelayRule::FirstZeroCrossing));
    }

    #[test]
    fn delay_falls_back_to_first_minimum() {
        assert_eq!(delay(&[1.0, 0.8, 0.5, 0.6, 0.4]), (2, DelayRule::FirstMinimum));
    }
}

//! Prequential error accumulators: MAE, RMSE and SMAPE over labelled predictions.

use serde::{Deserialize, Serialize};

/// Running sums for one forecaster's errors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorStats {
    pub n: u64,
    pub sum_abs: f64,
    pub sum_sq: f64,
    /// Sum of 2|y − ŷ| / (|y| + |ŷ|); a term where both are 0 counts as 0.
    pub sum_smape: f64,
}

/// The reported form.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ErrorSummary {
    pub mae: Option<f64>,
    pub rmse: Option<f64>,
    /// Symmetric MAPE in percent (0–200).
    pub smape: Option<f64>,
    pub n: u64,
}

impl ErrorStats {
    pub fn add(&mut self, predicted: f64, actual: f64) {
        let e = predicted - actual;
        self.n += 1;
        self.sum_abs += e.abs();
        self.sum_sq += e * e;
        let denom = predicted.abs() + actual.abs();
        if denom > 0.0 {
            self.sum_smape += 2.0 * e.abs() / denom;
        }
    }

    pub fn merge(&mut self, o: &ErrorStats) {
        self.n += o.n;
        self.sum_abs += o.sum_abs;
        self.sum_sq += o.sum_sq;
        self.sum_smape += o.sum_smape;
    }

    pub fn summary(&self) -> ErrorSummary {
        let n = self.n as f64;
        let f = |v: f64| (self.n > 0).then_some(v);
        ErrorSummary {
            mae: f(self.sum_abs / n),
            rmse: f((self.sum_sq / n).sqrt()),
            smape: f(100.0 * self.sum_smape / n),
            n: self.n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// By hand: pairs (ŷ, y) = (2, 1), (0, 0), (3, 5).
    /// errors 1, 0, −2 → MAE = 1, RMSE = √(5/3) = 1.2909944487,
    /// SMAPE = 100/3 · (2/3 + 0 + 4/8) = 38.8888….
    #[test]
    fn hand_computed() {
        let mut s = ErrorStats::default();
        s.add(2.0, 1.0);
        s.add(0.0, 0.0);
        s.add(3.0, 5.0);
        let r = s.summary();
        assert_eq!(r.n, 3);
        assert!((r.mae.unwrap() - 1.0).abs() < 1e-12);
        assert!((r.rmse.unwrap() - 1.2909944487358056).abs() < 1e-12);
        assert!((r.smape.unwrap() - 38.888888888888886).abs() < 1e-9);
        assert_eq!(ErrorStats::default().summary().mae, None);
    }
}

/// Mean absolute error over the last `cap` labelled predictions.
#[derive(Debug, Clone, Default)]
pub struct RollingMae {
    errors: std::collections::VecDeque<f64>,
}

impl RollingMae {
    pub const WINDOW: usize = 1000;

    pub fn add(&mut self, predicted: f64, actual: f64) {
        if self.errors.len() == Self::WINDOW {
            self.errors.pop_front();
        }
        self.errors.push_back((predicted - actual).abs());
    }

    /// Summed afresh each time, so no floating-point drift accumulates.
    pub fn value(&self) -> Option<f64> {
        (!self.errors.is_empty()).then(|| self.errors.iter().sum::<f64>() / self.errors.len() as f64)
    }
}

#[cfg(test)]
mod rolling_tests {
    use super::RollingMae;

    #[test]
    fn keeps_the_last_window() {
        let mut r = RollingMae::default();
        assert_eq!(r.value(), None);
        for i in 0..RollingMae::WINDOW + 10 {
            // errors 0, 1, 2, …: the window holds 10 ..= 1009, mean 509.5
            r.add(i as f64, 0.0);
        }
        assert_eq!(r.value(), Some(509.5));
    }
}

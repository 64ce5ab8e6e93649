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
    /// Sum of |y − ŷ| / |y| over the `n_ape` labels with y ≠ 0.
    pub sum_ape: f64,
    pub n_ape: u64,
    /// Welford mean and M2 of the actual values (for R²).
    pub mean_y: f64,
    pub m2_y: f64,
    /// Labels whose realised change from the last observed value is non-zero, and
    /// how many of them the forecast got the direction of.
    pub n_dir: u64,
    pub dir_hits: u64,
}

/// The reported form.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ErrorSummary {
    pub mae: Option<f64>,
    pub rmse: Option<f64>,
    /// Mean absolute percentage error in percent, over labels with y ≠ 0.
    pub mape: Option<f64>,
    /// Symmetric MAPE in percent (0–200).
    pub smape: Option<f64>,
    /// 1 − SS_res / SS_tot.
    pub r2: Option<f64>,
    /// Share (0–1) of non-zero realised changes whose sign the forecast matched.
    pub directional_accuracy: Option<f64>,
    /// Theil's U2: RMSE of this forecaster / RMSE of persistence.
    pub theil_u: Option<f64>,
    pub n: u64,
}

impl ErrorStats {
    /// Scores one forecast: `predicted` for the label `actual`, made when the last
    /// observed value was `last`.
    pub fn add(&mut self, predicted: f64, actual: f64, last: f64) {
        let e = predicted - actual;
        self.n += 1;
        self.sum_abs += e.abs();
        self.sum_sq += e * e;
        let denom = predicted.abs() + actual.abs();
        if denom > 0.0 {
            self.sum_smape += 2.0 * e.abs() / denom;
        }
        if actual != 0.0 {
            self.sum_ape += e.abs() / actual.abs();
            self.n_ape += 1;
        }
        let d = actual - self.mean_y;
        self.mean_y += d / self.n as f64;
        self.m2_y += d * (actual - self.mean_y);
        let realised = (actual - last).signum();
        if actual != last {
            self.n_dir += 1;
            if (predicted - last).signum() == realised && predicted != last {
                self.dir_hits += 1;
            }
        }
    }

    pub fn merge(&mut self, o: &ErrorStats) {
        let n = self.n + o.n;
        if n > 0 {
            let delta = o.mean_y - self.mean_y;
            self.m2_y += o.m2_y + delta * delta * (self.n as f64) * (o.n as f64) / n as f64;
            self.mean_y += delta * o.n as f64 / n as f64;
        }
        self.n = n;
        self.sum_abs += o.sum_abs;
        self.sum_sq += o.sum_sq;
        self.sum_smape += o.sum_smape;
        self.sum_ape += o.sum_ape;
        self.n_ape += o.n_ape;
        self.n_dir += o.n_dir;
        self.dir_hits += o.dir_hits;
    }

    /// The summary; `persistence` (when given) yields Theil's U.
    pub fn summary_against(&self, persistence: Option<&ErrorStats>) -> ErrorSummary {
        let n = self.n as f64;
        let f = |v: f64| (self.n > 0).then_some(v);
        let rmse = f((self.sum_sq / n).sqrt());
        let theil_u = match persistence {
            Some(p) if p.n > 0 && p.sum_sq > 0.0 && self.n > 0 => Some((self.sum_sq / n).sqrt() / (p.sum_sq / p.n as f64).sqrt()),
            _ => None,
        };
        ErrorSummary {
            mae: f(self.sum_abs / n),
            rmse,
            mape: (self.n_ape > 0).then(|| 100.0 * self.sum_ape / self.n_ape as f64),
            smape: f(100.0 * self.sum_smape / n),
            r2: (self.n > 1 && self.m2_y > 0.0).then(|| 1.0 - self.sum_sq / self.m2_y),
            directional_accuracy: (self.n_dir > 0).then(|| self.dir_hits as f64 / self.n_dir as f64),
            theil_u,
            n: self.n,
        }
    }

    pub fn summary(&self) -> ErrorSummary {
        self.summary_against(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// By hand: (ŷ, y, last) = (2, 1, 0), (0, 0, 1), (3, 5, 4).
    /// errors 1, 0, −2 → MAE = 1, RMSE = √(5/3) = 1.2909944487358056,
    /// SMAPE = 100/3 · (2/3 + 0 + 4/8) = 38.888…,
    /// MAPE over y ≠ 0 = 100/2 · (1/1 + 2/5) = 70,
    /// ȳ = 2, SS_tot = 1 + 4 + 9 = 14, SS_res = 5 → R² = 1 − 5/14 = 0.642857…,
    /// directions: (+1 vs +1) hit, (−1 vs −1: ŷ−last = −1, y−last = −1) hit,
    /// (−1 vs +1) miss → 2/3.
    #[test]
    fn hand_computed() {
        let mut s = ErrorStats::default();
        s.add(2.0, 1.0, 0.0);
        s.add(0.0, 0.0, 1.0);
        s.add(3.0, 5.0, 4.0);
        let r = s.summary();
        assert_eq!(r.n, 3);
        assert!((r.mae.unwrap() - 1.0).abs() < 1e-12);
        assert!((r.rmse.unwrap() - 1.2909944487358056).abs() < 1e-12);
        assert!((r.smape.unwrap() - 38.888888888888886).abs() < 1e-9);
        assert!((r.mape.unwrap() - 70.0).abs() < 1e-12);
        assert!((r.r2.unwrap() - (1.0 - 5.0 / 14.0)).abs() < 1e-12);
        assert!((r.directional_accuracy.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(ErrorStats::default().summary().mae, None);
    }

    /// Merging two halves gives the statistics of the whole; Theil's U is the RMSE
    /// ratio (here the persistence errors are twice the model's → U = 0.5).
    #[test]
    fn merge_and_theil_u() {
        let pairs = [(2.0, 1.0), (0.5, 0.0), (3.0, 5.0), (7.0, 6.5)];
        let (mut whole, mut a, mut b, mut pers) = Default::default();
        for (i, (p, y)) in pairs.iter().enumerate() {
            ErrorStats::add(&mut whole, *p, *y, 0.0);
            ErrorStats::add(if i < 2 { &mut a } else { &mut b }, *p, *y, 0.0);
            ErrorStats::add(&mut pers, y + 2.0 * (p - y), *y, 0.0);
        }
        let a: &mut ErrorStats = &mut a;
        a.merge(&b);
        let (w, m): (ErrorSummary, ErrorSummary) = (whole.summary(), a.summary());
        assert_eq!(w.n, m.n);
        assert!((w.r2.unwrap() - m.r2.unwrap()).abs() < 1e-12);
        assert!((w.mae.unwrap() - m.mae.unwrap()).abs() < 1e-12);
        let u = whole.summary_against(Some(&pers)).theil_u.unwrap();
        assert!((u - 0.5).abs() < 1e-12);
    }
}

/// One scored label: the three forecasts, the actual and the last observed value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub model: f64,
    pub persistence: f64,
    pub seasonal: Option<f64>,
    pub actual: f64,
}

/// The last `cap` scored labels, from which every metric can be recomputed over the
/// rolling window (summed afresh each time: no floating-point drift).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rolling {
    cap: usize,
    items: std::collections::VecDeque<Scored>,
}

impl Default for Rolling {
    fn default() -> Self {
        Rolling::new(Rolling::WINDOW)
    }
}

impl Rolling {
    pub const WINDOW: usize = 1000;

    pub fn new(cap: usize) -> Self {
        Rolling { cap: cap.max(1), items: Default::default() }
    }

    pub fn add(&mut self, s: Scored) {
        if self.items.len() == self.cap {
            self.items.pop_front();
        }
        self.items.push_back(s);
    }

    /// Error sums over the window: model, persistence, seasonal naive.
    pub fn stats(&self) -> [ErrorStats; 3] {
        let mut out = [ErrorStats::default(); 3];
        for s in &self.items {
            out[0].add(s.model, s.actual, s.persistence);
            out[1].add(s.persistence, s.actual, s.persistence);
            if let Some(v) = s.seasonal {
                out[2].add(v, s.actual, s.persistence);
            }
        }
        out
    }

    /// MAE of the model and of persistence over the window.
    pub fn mae(&self) -> (Option<f64>, Option<f64>) {
        let n = self.items.len() as f64;
        if self.items.is_empty() {
            return (None, None);
        }
        let m = self.items.iter().map(|s| (s.model - s.actual).abs()).sum::<f64>() / n;
        let p = self.items.iter().map(|s| (s.persistence - s.actual).abs()).sum::<f64>() / n;
        (Some(m), Some(p))
    }
}

#[cfg(test)]
mod rolling_tests {
    use super::{Rolling, Scored};

    #[test]
    fn keeps_the_last_window() {
        let mut r = Rolling::new(1000);
        assert_eq!(r.mae(), (None, None));
        for i in 0..1010 {
            // model errors 0, 1, 2, …: the window holds 10 ..= 1009, mean 509.5;
            // persistence is always off by 2.
            r.add(Scored { model: i as f64, persistence: 2.0, seasonal: None, actual: 0.0 });
        }
        assert_eq!(r.mae(), (Some(509.5), Some(2.0)));
        let [m, p, s] = r.stats();
        assert_eq!((m.n, p.n, s.n), (1000, 1000, 0));
        assert_eq!(m.summary().mae, Some(509.5));
    }
}

/// One labelled prediction as a report sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelRow {
    /// Index into [`LabelLog::keys`].
    pub key: u32,
    /// Event time (ns) of the row whose value labelled the prediction.
    pub time_ns: i64,
    /// Input offset of the record the prediction was made for.
    pub predicted_at: i64,
    pub scored: Scored,
}

/// Every labelled prediction of a partition, in order. Only backtests keep one (it
/// grows with the input); it is not part of checkpoints.
#[derive(Debug, Clone, Default)]
pub struct LabelLog {
    pub keys: Vec<String>,
    index: std::collections::HashMap<String, u32, foldhash::fast::RandomState>,
    pub rows: Vec<LabelRow>,
    /// With aggregation: the experts' names and, per row, their weights when the
    /// label arrived (flattened, stride = `expert_names.len()`).
    pub expert_names: Vec<String>,
    pub weights: Vec<f64>,
}

impl LabelLog {
    /// Appends one label; allocates only for a key's first label.
    pub fn push(&mut self, key: &str, time_ns: i64, predicted_at: i64, scored: Scored) {
        let k = match self.index.get(key) {
            Some(&k) => k,
            None => {
                let k = self.keys.len() as u32;
                self.keys.push(key.to_string());
                self.index.insert(key.to_string(), k);
                k
            }
        };
        self.rows.push(LabelRow { key: k, time_ns, predicted_at, scored });
    }
}

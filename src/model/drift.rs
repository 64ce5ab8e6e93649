//! Concept-drift detectors on the stream of absolute residuals.
//!
//! - Page-Hinkley (Page 1954; as in Gama et al. 2013): with running mean x̄ₜ,
//!   mₜ = Σ (xᵢ − x̄ᵢ − δ), Mₜ = min mᵢ; drift when mₜ − Mₜ > λ.
//! - ADWIN (Bifet & Gavaldà 2007): keeps a window of recent values and drops its
//!   older part whenever two sub-windows W₀, W₁ have means differing by more than
//!   ε_cut = √(2/m · σ²_W · ln(2/δ')) + 2/(3m) · ln(2/δ'), with m the harmonic mean
//!   of |W₀| and |W₁| and δ' = δ/n; a drop is a detection. This implementation keeps
//!   the window exactly (capped at `max_window` values), checking every split —
//!   O(window) per value, simple and exact rather than the bucketed approximation.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Page-Hinkley test for an increase in the mean.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PageHinkley {
    pub delta: f64,
    pub lambda: f64,
    pub min_samples: u64,
    n: u64,
    mean: f64,
    cum: f64,
    min_cum: f64,
}

impl PageHinkley {
    pub fn save(&self, s: &mut super::Snapshot) {
        s.put_int("ph_n", self.n);
        s.put("ph", vec![self.mean, self.cum, self.min_cum]);
    }

    pub fn load(&mut self, s: &super::Snapshot) -> crate::error::Result<()> {
        self.n = s.int("ph_n")?;
        let [mean, cum, min_cum] = s.array("ph")? else {
            return Err(crate::error::Error::Checkpoint("Page-Hinkley state needs 3 values".into()));
        };
        (self.mean, self.cum, self.min_cum) = (*mean, *cum, *min_cum);
        Ok(())
    }

    pub fn new(delta: f64, lambda: f64, min_samples: u64) -> Self {
        PageHinkley { delta, lambda, min_samples, n: 0, mean: 0.0, cum: 0.0, min_cum: 0.0 }
    }

    /// Adds a value; true when drift is detected (the test then restarts).
    pub fn add(&mut self, x: f64) -> bool {
        self.n += 1;
        self.mean += (x - self.mean) / self.n as f64;
        self.cum += x - self.mean - self.delta;
        self.min_cum = self.min_cum.min(self.cum);
        if self.n >= self.min_samples && self.cum - self.min_cum > self.lambda {
            *self = PageHinkley::new(self.delta, self.lambda, self.min_samples);
            return true;
        }
        false
    }
}

/// ADWIN with an exact window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Adwin {
    pub delta: f64,
    pub max_window: usize,
    window: VecDeque<f64>,
}

impl Adwin {
    pub fn save(&self, s: &mut super::Snapshot) {
        s.put("adwin_window", self.window.iter().copied().collect());
    }

    pub fn load(&mut self, s: &super::Snapshot) -> crate::error::Result<()> {
        self.window = s.array("adwin_window")?.iter().copied().collect();
        Ok(())
    }

    pub fn new(delta: f64, max_window: usize) -> Self {
        Adwin { delta, max_window, window: VecDeque::new() }
    }

    pub fn len(&self) -> usize {
        self.window.len()
    }

    pub fn is_empty(&self) -> bool {
        self.window.is_empty()
    }

    /// Adds a value; true when the window was cut (drift).
    pub fn add(&mut self, x: f64) -> bool {
        if self.window.len() == self.max_window {
            self.window.pop_front();
        }
        self.window.push_back(x);
        let mut drift = false;
        while let Some(cut) = self.find_cut() {
            self.window.drain(..cut);
            drift = true;
        }
        drift
    }

    /// The first split index (size of W₀) whose sub-window means differ by more
    /// than ε_cut, if any.
    fn find_cut(&self) -> Option<usize> {
        let n = self.window.len();
        if n < 10 {
            return None;
        }
        let total: f64 = self.window.iter().sum();
        let mean = total / n as f64;
        let var = self.window.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
        let dd = (2.0 * n as f64 / self.delta).ln();
        let mut s0 = 0.0;
        for (i, v) in self.window.iter().enumerate().take(n - 5) {
            s0 += v;
            let n0 = i + 1;
            if n0 < 5 {
                continue;
            }
            let n1 = n - n0;
            let (m0, m1) = (s0 / n0 as f64, (total - s0) / n1 as f64);
            let m = 1.0 / (1.0 / n0 as f64 + 1.0 / n1 as f64);
            let eps = (2.0 / m * var * dd).sqrt() + 2.0 / (3.0 * m) * dd;
            if (m0 - m1).abs() > eps {
                return Some(n0);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// By hand, δ = 0, λ = 5, values 1, 1, 1, 1, 9: the running means are 1, 1, 1, 1,
    /// 2.6 and the cumulative sums 0, 0, 0, 0, 6.4 → 6.4 − 0 > 5 at the fifth value.
    #[test]
    fn page_hinkley_hand_computed() {
        let mut ph = PageHinkley::new(0.0, 5.0, 1);
        for _ in 0..4 {
            assert!(!ph.add(1.0));
        }
        assert!(ph.add(9.0));
    }

    fn noise(i: usize) -> f64 {
        ((i * 2654435761) % 1000) as f64 / 1000.0 - 0.5
    }

    #[test]
    fn detectors_fire_on_a_mean_shift_and_not_before() {
        let mut ph = PageHinkley::new(0.05, 20.0, 30);
        let mut ad = Adwin::new(0.002, 2000);
        for i in 0..1000 {
            assert!(!ph.add(1.0 + 0.2 * noise(i)), "PH false alarm at {i}");
            assert!(!ad.add(1.0 + 0.2 * noise(i)), "ADWIN false alarm at {i}");
        }
        let (mut ph_at, mut ad_at) = (None, None);
        for i in 1000..1200 {
            let x = 2.0 + 0.2 * noise(i);
            if ph.add(x) && ph_at.is_none() {
                ph_at = Some(i);
            }
            if ad.add(x) && ad_at.is_none() {
                ad_at = Some(i);
            }
        }
        assert!(ph_at.is_some_and(|i| i < 1060), "{ph_at:?}");
        assert!(ad_at.is_some_and(|i| i < 1060), "{ad_at:?}");
        assert!(ad.len() < 300, "ADWIN dropped the old regime: {}", ad.len());
    }
}

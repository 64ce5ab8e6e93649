//! Online aggregation of forecasters: the published forecast is a convex combination
//! of experts (the learned model and reference forecasts such as persistence, seasonal
//! naive, zero or a microprice column) whose weights follow their realised losses.
//!
//! Two rules, both free of tuning parameters:
//! - **ML-Poly** (Gaillard, Stoltz & van Erven 2014, "A second-order bound with excess
//!   losses"; the `MLpol` rule of the R package *opera*): polynomially weighted
//!   averages with one adaptive learning rate per expert, weights ∝ ηᵢ·(Rᵢ)₊ where Rᵢ
//!   is expert i's cumulative regret and 1/ηᵢ grows by rᵢ² plus any growth of the
//!   largest squared regret seen (opera's `B` term).
//! - **AdaHedge** (de Rooij, van Erven, Grünwald & Koolen 2014, "Follow the leader if
//!   you can, hedge if you must", Algorithm 1): exponential weights exp(−η·Lᵢ) with
//!   η = ln N / Δ, Δ the cumulative mixability gap.
//!
//! Losses are linearised at the mixture ("gradient trick", opera's
//! `loss.gradient = TRUE`): with g = ℓ'(ŷ, y) the loss of expert i is g·xᵢ, so the
//! aggregate competes with the best convex combination, not only the best expert, and
//! its cumulative loss exceeds the best expert's by O(√(T log N)) (AdaHedge) /
//! O(√(N T)) (ML-Poly) for convex losses. An expert without a forecast for a row
//! (NaN: seasonal naive before a season of history, a NULL column) sleeps: it gets no
//! weight and no regret for that row (opera's `awake`).
//!
//! The state is a handful of f64 vectors, checkpointed with the key's other state.

use serde::{Deserialize, Serialize};

use crate::pipeline::config::choice::Aggregate;

/// Which weighting rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    MlPoly,
    AdaHedge,
}

/// The loss the weights follow (linearised at the mixture): `absolute` (|ŷ − y|,
/// gradient sign(ŷ − y); tracks MAE, the metric of record) or `square`.
pub use crate::pipeline::config::choice::AggLoss;

impl Method {
    /// The rule `model.aggregate` names; `none` is no aggregation.
    pub fn of(a: Aggregate) -> Option<Self> {
        match a {
            Aggregate::MlPoly => Some(Method::MlPoly),
            Aggregate::AdaHedge => Some(Method::AdaHedge),
            Aggregate::None => None,
        }
    }
}

impl AggLoss {
    fn gradient(self, pred: f64, y: f64) -> f64 {
        match self {
            AggLoss::Absolute => {
                if pred > y {
                    1.0
                } else if pred < y {
                    -1.0
                } else {
                    0.0
                }
            }
            AggLoss::Square => 2.0 * (pred - y),
        }
    }
}

/// The weights of one key's experts and what they are computed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aggregator {
    /// ML-Poly: cumulative regrets Rᵢ. AdaHedge: cumulative (linearised) losses Lᵢ,
    /// measured relative to the mixture (only differences matter).
    pub cum: Vec<f64>,
    /// ML-Poly: 1/ηᵢ (0 = η infinite, nothing observed yet).
    pub inv_eta: Vec<f64>,
    /// ML-Poly: the largest squared instantaneous regret so far (opera's `B`).
    /// AdaHedge: the cumulative mixability gap Δ.
    pub scale: f64,
    /// Labels the weights have learned from.
    pub updates: u64,
}

impl Aggregator {
    pub fn new(n: usize) -> Self {
        Aggregator { cum: vec![0.0; n], inv_eta: vec![0.0; n], scale: 0.0, updates: 0 }
    }

    pub fn len(&self) -> usize {
        self.cum.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cum.is_empty()
    }

    /// The weights for experts whose forecasts are `preds` (NaN = asleep), written into
    /// `w` (sums to 1 over the awake experts; all 0 when none is awake).
    pub fn weights(&self, method: Method, preds: &[f64], w: &mut [f64]) {
        let awake = |i: usize| preds[i].is_finite();
        match method {
            Method::MlPoly => {
                // opera: w ∝ η·(R)₊ when some awake expert has positive regret, else uniform.
                // η = ∞ (1/η = 0) for an expert with positive regret dominates every finite one.
                let any_pos = (0..w.len()).any(|i| awake(i) && self.cum[i] > 0.0);
                let inf = (0..w.len()).any(|i| awake(i) && self.cum[i] > 0.0 && self.inv_eta[i] == 0.0);
                for (i, wi) in w.iter_mut().enumerate() {
                    *wi = if !awake(i) {
                        0.0
                    } else if !any_pos {
                        1.0
                    } else if self.cum[i] <= 0.0 {
                        0.0
                    } else if inf {
                        if self.inv_eta[i] == 0.0 {
                            self.cum[i]
                        } else {
                            0.0
                        }
                    } else {
                        self.cum[i] / self.inv_eta[i]
                    };
                }
            }
            Method::AdaHedge => {
                // η = ln N / Δ; Δ = 0 means η = ∞: uniform over the leaders.
                let n_awake = (0..w.len()).filter(|&i| awake(i)).count();
                let min = (0..w.len()).filter(|&i| awake(i)).map(|i| self.cum[i]).fold(f64::INFINITY, f64::min);
                let eta = if self.scale > 0.0 { (n_awake.max(2) as f64).ln() / self.scale } else { f64::INFINITY };
                for (i, wi) in w.iter_mut().enumerate() {
                    *wi = if !awake(i) {
                        0.0
                    } else if eta.is_infinite() {
                        if self.cum[i] == min {
                            1.0
                        } else {
                            0.0
                        }
                    } else {
                        (-eta * (self.cum[i] - min)).exp()
                    };
                }
            }
        }
        let s: f64 = w.iter().sum();
        if s > 0.0 && s.is_finite() {
            w.iter_mut().for_each(|v| *v /= s);
        }
    }

    /// The mixture of `preds` under the current weights (`w` is scratch space of the
    /// same length). NaN when no expert is awake.
    pub fn combine(&self, method: Method, preds: &[f64], w: &mut [f64]) -> f64 {
        self.weights(method, preds, w);
        let mut p = 0.0;
        let mut any = false;
        for (x, wi) in preds.iter().zip(w.iter()) {
            if x.is_finite() {
                p += wi * x;
                any = true;
            }
        }
        if any {
            p
        } else {
            f64::NAN
        }
    }

    /// Learns from the label `y` of a row whose experts forecast `preds` (the same
    /// values `combine` saw when the forecast was published). Leaves in `w` the
    /// weights the mixture had before this update (what a report plots).
    pub fn update(&mut self, method: Method, loss: AggLoss, preds: &[f64], y: f64, w: &mut [f64]) {
        let pred = self.combine(method, preds, w);
        if !pred.is_finite() || !y.is_finite() {
            return;
        }
        let g = loss.gradient(pred, y);
        self.updates += 1;
        match method {
            Method::MlPoly => {
                // r = ℓ(ŷ) − ℓᵢ with ℓᵢ = g·xᵢ: r = g·(ŷ − xᵢ); asleep experts get 0.
                let mut max_r2: f64 = 0.0;
                for (i, x) in preds.iter().enumerate() {
                    let r = if x.is_finite() { g * (pred - x) } else { 0.0 };
                    self.cum[i] += r;
                    self.inv_eta[i] += r * r;
                    max_r2 = max_r2.max(r * r);
                }
                // opera: 1/η ← 1/η + r² + (B_new − B).
                let new_b = self.scale.max(max_r2);
                let grow = new_b - self.scale;
                if grow > 0.0 {
                    self.inv_eta.iter_mut().for_each(|v| *v += grow);
                }
                self.scale = new_b;
            }
            Method::AdaHedge => {
                // Losses relative to the mixture: ℓᵢ = g·(xᵢ − ŷ) (asleep: 0, the
                // mixture's own loss, so sleeping costs no regret).
                let n_awake = preds.iter().filter(|x| x.is_finite()).count();
                let eta = if self.scale > 0.0 { (n_awake.max(2) as f64).ln() / self.scale } else { f64::INFINITY };
                let loss_of = |x: f64| if x.is_finite() { g * (x - pred) } else { 0.0 };
                // The mixture's loss h = Σ wᵢℓᵢ is 0 by construction (ŷ = Σ wᵢxᵢ).
                let h: f64 = preds.iter().zip(w.iter()).map(|(x, wi)| wi * loss_of(*x)).sum();
                let lmin = preds.iter().filter(|x| x.is_finite()).map(|x| loss_of(*x)).fold(f64::INFINITY, f64::min);
                // Mix loss m = −(1/η) ln Σ wᵢ e^{−ηℓᵢ}; with η = ∞ the leaders' minimum.
                let m = if eta.is_infinite() {
                    preds.iter().zip(w.iter()).filter(|(x, wi)| x.is_finite() && **wi > 0.0).map(|(x, _)| loss_of(*x)).fold(f64::INFINITY, f64::min)
                } else {
                    let s: f64 = preds
                        .iter()
                        .zip(w.iter())
                        .filter(|(x, _)| x.is_finite())
                        .map(|(x, wi)| wi * (-eta * (loss_of(*x) - lmin)).exp())
                        .sum();
                    lmin - s.ln() / eta
                };
                let delta = (h - m).max(0.0);
                self.scale += delta;
                for (i, x) in preds.iter().enumerate() {
                    self.cum[i] += loss_of(*x);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(method: Method, loss: AggLoss, experts: &[[f64; 3]], ys: &[f64]) -> (Aggregator, Vec<[f64; 3]>, Vec<f64>) {
        let mut a = Aggregator::new(3);
        let mut w = [0.0; 3];
        let (mut ws, mut preds) = (vec![], vec![]);
        for (e, y) in experts.iter().zip(ys) {
            preds.push(a.combine(method, e, &mut w));
            ws.push(w);
            a.update(method, loss, e, *y, &mut w);
        }
        (a, ws, preds)
    }

    /// ML-Poly, absolute loss, by hand. Experts (1, 2, 4), labels 3, 3, 1.
    /// t=1: R = 0 → uniform, ŷ = 7/3 < 3 → g = −1, r = g(ŷ − x) = x − 7/3 = (−4/3, −1/3, 5/3);
    ///      R = r; B: 0 → 25/9; 1/η = r² + 25/9 = (41/9, 26/9, 50/9).
    /// t=2: only expert 3 has positive regret → w = (0, 0, 1), ŷ = 4 > 3 → g = 1,
    ///      r = 4 − x = (3, 2, 0); B: 25/9 → 9 (growth 56/9), so
    ///      1/η = (41/9 + 9 + 56/9, 26/9 + 4 + 56/9, 50/9 + 0 + 56/9) = (178/9, 118/9, 106/9);
    ///      R = (5/3, 5/3, 5/3).
    /// t=3: w ∝ R·η ∝ (1/178, 1/118, 1/106); ŷ = Σwx ≈ 2.44 > 1 → g = 1, R += ŷ − x.
    #[test]
    fn mlpoly_by_hand() {
        let (a, ws, preds) = run(Method::MlPoly, AggLoss::Absolute, &[[1.0, 2.0, 4.0]; 3], &[3.0, 3.0, 1.0]);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(ws[0].iter().all(|v| close(*v, 1.0 / 3.0)));
        assert!(close(preds[0], 7.0 / 3.0));
        assert_eq!(ws[1], [0.0, 0.0, 1.0]);
        assert!(close(preds[1], 4.0));
        let raw = [1.0 / 178.0, 1.0 / 118.0, 1.0 / 106.0];
        let s: f64 = raw.iter().sum();
        for i in 0..3 {
            assert!(close(ws[2][i], raw[i] / s), "{:?}", ws[2]);
        }
        let p3 = (raw[0] + 2.0 * raw[1] + 4.0 * raw[2]) / s;
        assert!(close(preds[2], p3));
        for (i, x) in [1.0, 2.0, 4.0].iter().enumerate() {
            assert!(close(a.cum[i], 5.0 / 3.0 + p3 - x), "{:?}", a.cum);
        }
        assert!(close(a.scale, 9.0_f64.max((p3 - 4.0) * (p3 - 4.0))));
        assert_eq!(a.updates, 3);
    }

    /// AdaHedge, square loss (linearised), by hand. Experts (0, 1, 3), labels 1, 1.
    /// t=1: Δ = 0 → η = ∞, uniform (all L = 0 are leaders): ŷ = 4/3, g = 2(4/3 − 1) = 2/3,
    ///      ℓ = g(x − ŷ) = (−8/9, −2/9, 10/9); h = 0; m = min over leaders = −8/9;
    ///      δ = 8/9 → Δ = 8/9; L = (−8/9, −2/9, 10/9).
    /// t=2: η = ln 3 / (8/9); w ∝ exp(−η(L − min L)) = (1, 3^(−3/4), 3^(−9/4)).
    #[test]
    fn adahedge_by_hand() {
        let (a, ws, _) = run(Method::AdaHedge, AggLoss::Square, &[[0.0, 1.0, 3.0]; 2], &[1.0, 1.0]);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(ws[0].iter().all(|v| close(*v, 1.0 / 3.0)));
        let raw = [1.0, 3f64.powf(-0.75), 3f64.powf(-2.25)];
        let s: f64 = raw.iter().sum();
        for i in 0..3 {
            assert!(close(ws[1][i], raw[i] / s), "{:?}", ws[1]);
        }
        assert!(a.scale > 8.0 / 9.0, "the second round adds a positive mixability gap");
    }

    /// An asleep expert (NaN) gets no weight and keeps its regret.
    #[test]
    fn sleeping_expert() {
        let mut a = Aggregator::new(3);
        let mut w = [0.0; 3];
        let p = a.combine(Method::MlPoly, &[1.0, f64::NAN, 3.0], &mut w);
        assert_eq!(w, [0.5, 0.0, 0.5]);
        assert_eq!(p, 2.0);
        a.update(Method::MlPoly, AggLoss::Absolute, &[1.0, f64::NAN, 3.0], 0.0, &mut w);
        assert_eq!(a.cum[1], 0.0);
        assert!(a.cum[0] > 0.0 && a.cum[2] < 0.0);
    }

    /// A sequence whose best expert switches halfway: for t < T/2 the label is near
    /// expert 0's forecast, after it near expert 1's; expert 2 is always poor. The
    /// aggregate's cumulative absolute loss must stay within the regret bound of the
    /// best single expert in hindsight: AdaHedge's (de Rooij et al. 2014, Thm 8 with
    /// L*(T−L*)/T ≤ T·S/4·…) R ≤ 2S√(T ln N) + S(16/3·ln N + 2), S the loss range —
    /// and a mixture stuck on uniform weights would exceed it (checked too).
    #[test]
    fn regret_bound_with_switching_best_expert() {
        let t_len = 4000;
        let mut rng = 1u64;
        let mut u = || {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((rng >> 11) as f64) / (1u64 << 53) as f64
        };
        let mut rows = vec![];
        for t in 0..t_len {
            let e = [0.0, 1.0, 3.0];
            let y = if t < t_len / 2 { 0.2 * u() } else { 0.9 + 0.2 * u() };
            rows.push((e, y));
        }
        let s = 3.0; // |x − y| ≤ 3 for every expert and label
        let n = 3.0f64;
        let bound = 2.0 * s * (t_len as f64 * n.ln()).sqrt() + s * (16.0 / 3.0 * n.ln() + 2.0);
        let best = (0..3).map(|i| rows.iter().map(|(e, y)| (e[i] - y).abs()).sum::<f64>()).fold(f64::INFINITY, f64::min);
        let uniform: f64 = rows.iter().map(|(e, y)| (e.iter().sum::<f64>() / 3.0 - y).abs()).sum();
        assert!(uniform - best > bound, "the test must be able to fail: uniform regret {} vs bound {bound}", uniform - best);
        for method in [Method::MlPoly, Method::AdaHedge] {
            let mut a = Aggregator::new(3);
            let mut w = [0.0; 3];
            let mut total = 0.0;
            for (e, y) in &rows {
                total += (a.combine(method, e, &mut w) - y).abs();
                a.update(method, AggLoss::Absolute, e, *y, &mut w);
            }
            assert!(total - best <= bound, "{method:?}: regret {} > bound {bound}", total - best);
        }
    }

    /// The state round-trips through JSON (the checkpoint's format) bit for bit.
    #[test]
    fn state_round_trips() {
        let (a, _, _) = run(Method::MlPoly, AggLoss::Absolute, &[[1.0, 2.0, 4.0]; 3], &[3.0, 3.0, 1.0]);
        let back: Aggregator = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(a, back);
        let mut w1 = [0.0; 3];
        let mut w2 = [0.0; 3];
        assert_eq!(a.combine(Method::MlPoly, &[0.5, 1.5, 2.5], &mut w1).to_bits(), back.combine(Method::MlPoly, &[0.5, 1.5, 2.5], &mut w2).to_bits());
    }
}

//! Model wrappers that add continual-learning behaviour to any [`OnlineModel`]:
//! online normalisation of features and target, and a replay buffer.

use super::rand::Draws;
use super::{OnlineModel, Snapshot};
use crate::error::{Error, Result};

/// The `OnlineModel` methods a wrapper passes straight to its `inner` model.
macro_rules! delegate_to_inner {
    () => {
        fn updates(&self) -> u64 {
            self.inner.updates()
        }
        fn parameters(&self) -> Result<Vec<f64>> {
            self.inner.parameters()
        }
        fn reset_optimizer(&mut self) -> Result<()> {
            self.inner.reset_optimizer()
        }
        fn set_lr_scale(&mut self, s: f64) -> Result<()> {
            self.inner.set_lr_scale(s)
        }
    };
}

/// Welford's running mean and variance.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Running {
    pub n: u64,
    pub mean: f64,
    pub m2: f64,
}

impl Running {
    pub fn add(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    /// Standard deviation, or 1 until there is spread to measure.
    pub fn scale(&self) -> f64 {
        let sd = if self.n > 1 { (self.m2 / (self.n - 1) as f64).sqrt() } else { 0.0 };
        if sd > 1e-12 {
            sd
        } else {
            1.0
        }
    }
}

/// Standardises features and target with running statistics: the inner model sees
/// z = (x − μₓ)/σₓ and learns (y − μ_y)/σ_y; predictions are mapped back. Each
/// label first updates the statistics, then the model.
pub struct Normalized {
    inner: Box<dyn OnlineModel>,
    fx: Vec<Running>,
    fy: Running,
    /// `fx[i].scale()` and `fy.scale()`, as of the statistics' last change (computed
    /// once per label, not again for every forecast).
    sx: Vec<f64>,
    sy: f64,
    z: std::cell::RefCell<Vec<f64>>,
}


impl Normalized {
    pub fn new(inner: Box<dyn OnlineModel>, n_features: usize) -> Self {
        let mut m = Normalized {
            inner,
            fx: vec![Running::default(); n_features],
            fy: Running::default(),
            sx: vec![1.0; n_features],
            sy: 1.0,
            z: Default::default(),
        };
        m.rescale();
        m
    }

    fn rescale(&mut self) {
        for (c, r) in self.sx.iter_mut().zip(&self.fx) {
            *c = r.scale();
        }
        self.sy = self.fy.scale();
    }

    fn standardise(&self, x: &[f64]) -> Vec<f64> {
        let mut z = self.z.take();
        z.clear();
        z.extend(x.iter().zip(&self.fx).zip(&self.sx).map(|((v, s), c)| (v - s.mean) / c));
        z
    }
}

impl OnlineModel for Normalized {
    fn predict(&self, x: &[f64]) -> Result<f64> {
        let z = self.standardise(x);
        let p = self.inner.predict(&z);
        self.z.replace(z);
        Ok(p? * self.sy + self.fy.mean)
    }

    fn update(&mut self, x: &[f64], y: f64) -> Result<f64> {
        for (s, v) in self.fx.iter_mut().zip(x) {
            s.add(*v);
        }
        self.fy.add(y);
        self.rescale();
        let z = self.standardise(x);
        let r = self.inner.update(&z, (y - self.fy.mean) / self.sy);
        self.z.replace(z);
        r
    }

    fn save(&self, s: &mut Snapshot) -> Result<()> {
        s.put_int("n", self.fy.n);
        s.put("x_mean", self.fx.iter().map(|r| r.mean).collect());
        s.put("x_m2", self.fx.iter().map(|r| r.m2).collect());
        s.put_f64("y_mean", self.fy.mean);
        s.put_f64("y_m2", self.fy.m2);
        s.nested("inner", |s| self.inner.save(s))
    }

    fn load(&mut self, s: &mut Snapshot) -> Result<()> {
        let n = s.int("n")?;
        let (mean, m2) = (s.array("x_mean")?, s.array("x_m2")?);
        if mean.len() != self.fx.len() || m2.len() != self.fx.len() {
            return Err(Error::Checkpoint(format!("normalisation has {} features stored, {} configured", mean.len(), self.fx.len())));
        }
        for (r, (m, q)) in self.fx.iter_mut().zip(mean.iter().zip(m2)) {
            *r = Running { n, mean: *m, m2: *q };
        }
        self.fy = Running { n, mean: s.f64("y_mean")?, m2: s.f64("y_m2")? };
        self.rescale();
        s.nested("inner", |s| self.inner.load(s))
    }

    delegate_to_inner!();
}

/// Which labelled examples the replay buffer keeps: the last K, or a uniform sample of
/// everything seen (reservoir sampling, Vitter's R).
pub use crate::pipeline::config::choice::ReplayPolicy;

/// After each update on a new label, also updates on `k` examples drawn (seeded,
/// deterministic) from a buffer of past labelled examples.
pub struct Replay {
    inner: Box<dyn OnlineModel>,
    policy: ReplayPolicy,
    cap: usize,
    k: usize,
    d: usize,
    xs: Vec<f64>,
    ys: Vec<f64>,
    seen: u64,
    draws: Draws,
}

impl Replay {
    pub fn new(inner: Box<dyn OnlineModel>, n_features: usize, cap: usize, k: usize, policy: ReplayPolicy, seed: u64) -> Self {
        Replay { inner, policy, cap: cap.max(1), k, d: n_features, xs: Vec::new(), ys: Vec::new(), seen: 0, draws: Draws(seed ^ 0x5DEECE66D) }
    }

    fn store(&mut self, x: &[f64], y: f64) {
        self.seen += 1;
        let len = self.ys.len();
        let slot = if len < self.cap {
            self.xs.extend_from_slice(x);
            self.ys.push(y);
            return;
        } else {
            match self.policy {
                ReplayPolicy::Recent => ((self.seen - 1) % self.cap as u64) as usize,
                ReplayPolicy::Reservoir => {
                    let j = self.draws.below(self.seen) as usize;
                    if j >= self.cap {
                        return;
                    }
                    j
                }
            }
        };
        self.xs[slot * self.d..(slot + 1) * self.d].copy_from_slice(x);
        self.ys[slot] = y;
    }
}

impl OnlineModel for Replay {
    fn predict(&self, x: &[f64]) -> Result<f64> {
        self.inner.predict(x)
    }

    fn update(&mut self, x: &[f64], y: f64) -> Result<f64> {
        let loss = self.inner.update(x, y)?;
        let n = self.ys.len() as u64;
        let mut bx = vec![0.0; self.d];
        for _ in 0..if n > 0 { self.k } else { 0 } {
            let i = self.draws.below(n) as usize;
            bx.copy_from_slice(&self.xs[i * self.d..(i + 1) * self.d]);
            let by = self.ys[i];
            self.inner.update(&bx, by)?;
        }
        self.store(x, y);
        Ok(loss)
    }

    fn save(&self, s: &mut Snapshot) -> Result<()> {
        s.put("xs", self.xs.clone());
        s.put("ys", self.ys.clone());
        s.put_int("seen", self.seen);
        s.put_int("draws", self.draws.0);
        s.nested("inner", |s| self.inner.save(s))
    }

    fn load(&mut self, s: &mut Snapshot) -> Result<()> {
        self.xs = s.array("xs")?.to_vec();
        self.ys = s.array("ys")?.to_vec();
        if self.xs.len() != self.ys.len() * self.d || self.ys.len() > self.cap {
            return Err(Error::Checkpoint("replay buffer does not fit the configured features/capacity".into()));
        }
        self.seen = s.int("seen")?;
        self.draws = Draws(s.int("draws")?);
        s.nested("inner", |s| self.inner.load(s))
    }

    delegate_to_inner!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::linear::{LinearModel, Optim};
    use candle_core::Device;

    /// Welford by hand: 2, 4, 4, 4, 5, 5, 7, 9 → mean 5, sample variance 32/7.
    #[test]
    fn running_stats() {
        let mut r = Running::default();
        for v in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0] {
            r.add(v);
        }
        assert!((r.mean - 5.0).abs() < 1e-12);
        assert!((r.scale() - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
    }

    /// Features in the thousands make plain SGD diverge at lr 0.01; standardised,
    /// the same model and rate learn y = 0.002·x₁ − 0.5·x₂ (x₁ ~ 5000 ± 1000).
    #[test]
    fn normalisation_makes_badly_scaled_features_learnable() {
        let run = |norm: bool| {
            let lin: Box<dyn OnlineModel> = Box::new(LinearModel::new(2, Optim::Sgd, 0.01, &Device::Cpu).unwrap());
            let mut m: Box<dyn OnlineModel> = if norm { Box::new(Normalized::new(lin, 2)) } else { lin };
            let mut late = 0.0;
            for i in 0..2000 {
                let x = [5000.0 + 1000.0 * ((i * 37 % 101) as f64 / 50.0 - 1.0), ((i * 13 % 7) as f64) - 3.0];
                let y = 0.002 * x[0] - 0.5 * x[1];
                let p = m.predict(&x).unwrap();
                if i >= 1500 {
                    late += (p - y).abs();
                }
                m.update(&x, y).unwrap();
            }
            late / 500.0
        };
        let plain = run(false);
        // Not `plain >= 1.0`: a NaN (the usual way SGD blows up) must pass too.
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        let blew_up = !(plain < 1.0);
        assert!(blew_up, "plain SGD should blow up here, got {plain}");
        assert!(run(true) < 0.05);
    }

    /// Reservoir sampling keeps a uniform sample: over values 0..10 000 with a
    /// 1000-slot buffer, the kept values' mean is near 5000 (σ of the mean ≈ 91),
    /// while "recent" keeps exactly the last 1000.
    #[test]
    fn replay_buffers_keep_what_they_promise() {
        let mk = |p| Replay::new(Box::new(LinearModel::new(1, Optim::Sgd, 0.0, &Device::Cpu).unwrap()), 1, 1000, 0, p, 9);
        let (mut res, mut rec) = (mk(ReplayPolicy::Reservoir), mk(ReplayPolicy::Recent));
        for i in 0..10_000 {
            res.store(&[i as f64], i as f64);
            rec.store(&[i as f64], i as f64);
        }
        let mean = res.ys.iter().sum::<f64>() / 1000.0;
        assert!((mean - 4999.5).abs() < 400.0, "{mean}");
        let mut r = rec.ys.clone();
        r.sort_by(f64::total_cmp);
        assert_eq!(r, (9000..10_000).map(|v| v as f64).collect::<Vec<_>>());
    }
}

/// C-Mixup for regression (Yao et al., NeurIPS 2022): after each update on a new label
/// (x, y), picks a partner from the last `cap` labelled examples with probability
/// ∝ exp(−(y − yⱼ)² / 2h²) — pairs with close targets — draws λ ~ Beta(α, α) and
/// also updates on (λx + (1−λ)xⱼ, λy + (1−λ)yⱼ).
pub struct CMixup {
    inner: Box<dyn OnlineModel>,
    alpha: f64,
    bandwidth: f64,
    cap: usize,
    d: usize,
    xs: VecDeque<f64>,
    ys: VecDeque<f64>,
    draws: Draws,
}

use std::collections::VecDeque;

impl CMixup {
    pub fn new(inner: Box<dyn OnlineModel>, n_features: usize, cap: usize, alpha: f64, bandwidth: f64, seed: u64) -> Self {
        CMixup {
            inner,
            alpha,
            bandwidth,
            cap: cap.max(1),
            d: n_features,
            xs: VecDeque::new(),
            ys: VecDeque::new(),
            draws: Draws(seed ^ 0xC0FFEE),
        }
    }
}

impl OnlineModel for CMixup {
    fn predict(&self, x: &[f64]) -> Result<f64> {
        self.inner.predict(x)
    }

    fn update(&mut self, x: &[f64], y: f64) -> Result<f64> {
        let loss = self.inner.update(x, y)?;
        if !self.ys.is_empty() {
            let w: Vec<f64> = self.ys.iter().map(|yj| (-(y - yj).powi(2) / (2.0 * self.bandwidth.powi(2))).exp()).collect();
            let total: f64 = w.iter().sum();
            if total > 0.0 {
                let mut u = self.draws.uniform() * total;
                let j = w.iter().position(|wi| {
                    u -= wi;
                    u <= 0.0
                });
                let j = j.unwrap_or(w.len() - 1);
                let lam = self.draws.beta_sym(self.alpha);
                let xm: Vec<f64> = (0..self.d).map(|k| lam * x[k] + (1.0 - lam) * self.xs[j * self.d + k]).collect();
                self.inner.update(&xm, lam * y + (1.0 - lam) * self.ys[j])?;
            }
        }
        if self.ys.len() == self.cap {
            self.ys.pop_front();
            self.xs.drain(..self.d);
        }
        self.ys.push_back(y);
        self.xs.extend(x.iter().copied());
        Ok(loss)
    }

    fn save(&self, s: &mut Snapshot) -> Result<()> {
        s.put("xs", self.xs.iter().copied().collect());
        s.put("ys", self.ys.iter().copied().collect());
        s.put_int("draws", self.draws.0);
        s.nested("inner", |s| self.inner.save(s))
    }

    fn load(&mut self, s: &mut Snapshot) -> Result<()> {
        self.xs = s.array("xs")?.iter().copied().collect();
        self.ys = s.array("ys")?.iter().copied().collect();
        if self.xs.len() != self.ys.len() * self.d || self.ys.len() > self.cap {
            return Err(Error::Checkpoint("mixup buffer does not fit the configured features/capacity".into()));
        }
        self.draws = Draws(s.int("draws")?);
        s.nested("inner", |s| self.inner.load(s))
    }

    delegate_to_inner!();
}

#[cfg(test)]
mod mixup_tests {
    use super::*;
    use crate::model::linear::{LinearModel, Optim};
    use candle_core::Device;

    /// Beta(α, α) has mean ½ and variance 1/(4(2α + 1)): for α = 2, 0.05.
    #[test]
    fn beta_draws_have_the_right_moments() {
        let mut d = Draws(1);
        let xs: Vec<f64> = (0..20_000).map(|_| d.beta_sym(2.0)).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        assert!((var - 0.05).abs() < 0.003, "{var}");
    }

    /// Mixing pairs of a linear relation stays on it, so C-Mixup must not stop a
    /// linear model from learning y = 2x₁ − 3x₂ + 0.5 (noise-free here).
    #[test]
    fn cmixup_keeps_a_linear_relation_learnable() {
        let lin = Box::new(LinearModel::new(2, Optim::Sgd, 0.02, &Device::Cpu).unwrap());
        let mut m = CMixup::new(lin, 2, 64, 2.0, 1.0, 3);
        let mut d = Draws(8);
        for _ in 0..3000 {
            let x = [d.normal(), d.normal()];
            m.update(&x, 2.0 * x[0] - 3.0 * x[1] + 0.5).unwrap();
        }
        let p = m.parameters().unwrap();
        for (g, w) in p.iter().zip([2.0, -3.0, 0.5]) {
            assert!((g - w).abs() < 0.01, "{p:?}");
        }
    }
}

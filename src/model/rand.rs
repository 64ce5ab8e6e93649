//! Seeded randomness for models: SplitMix64 and the distributions built on it
//! (uniform, normal, gamma, beta), so initial weights, replay and augmentation draws
//! are reproducible from `model.seed` and independent of any global generator.

/// A SplitMix64 stream.
#[derive(Debug, Clone)]
pub struct Draws(pub u64);

impl Draws {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Uniform integer in [0, bound).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }

    /// Uniform in (−bound, bound): PyTorch-style initial weights with bound 1/√fan_in.
    pub fn symmetric(&mut self, bound: f64) -> f64 {
        (2.0 * self.uniform() - 1.0) * bound
    }

    /// Laplace(0, b) (GOTURN's motion model for augmented boxes).
    pub fn laplace(&mut self, b: f64) -> f64 {
        let u = self.uniform() - 0.5;
        -b * u.signum() * (1.0 - 2.0 * u.abs()).max(1e-12).ln()
    }

    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// Gamma(k, 1) by Marsaglia & Tsang (2000), boosted for k < 1.
    pub fn gamma(&mut self, k: f64) -> f64 {
        if k < 1.0 {
            return self.gamma(k + 1.0) * self.uniform().powf(1.0 / k);
        }
        let d = k - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v > 0.0 && self.uniform().ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }

    /// Beta(a, a) as G₁/(G₁ + G₂).
    pub fn beta_sym(&mut self, a: f64) -> f64 {
        let (g1, g2) = (self.gamma(a), self.gamma(a));
        g1 / (g1 + g2)
    }
}

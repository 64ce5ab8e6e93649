//! Online regression models: predict one row, learn from one labelled row.
//!
//! Models are plain structs of candle variables; updates happen one labelled example
//! at a time, in record order, so results never depend on micro-batch boundaries.

pub mod linear;
pub mod loss;
pub mod mlp;
pub mod rls;

use candle_core::Device;

use crate::error::{Error, Result};
use crate::pipeline::config::ModelConfig;

/// An online regressor.
pub trait OnlineModel: Send {
    /// Predicts the target for one feature row.
    fn predict(&self, x: &[f64]) -> Result<f64>;
    /// Learns from one labelled row; returns the loss before the update.
    fn update(&mut self, x: &[f64], y: f64) -> Result<f64>;
    /// Number of updates applied so far.
    fn updates(&self) -> u64;
    /// The parameters, flattened (weights then bias for linear models).
    fn parameters(&self) -> Result<Vec<f64>>;
}

/// Pins candle's CPU thread count once. Without `RAYON_NUM_THREADS`, candle re-reads
/// `/proc/cpuinfo` on every matmul to count physical cores — for one-row online
/// updates that was most of the CPU time. Call before any other thread starts.
pub fn init_cpu_threads() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        // Safe in practice: called first thing in `main`, before any thread exists.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
}

/// Picks the candle device named by the config.
pub fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::new_cuda(0)?),
        "auto" => Ok(Device::cuda_if_available(0)?),
        other => Err(Error::Config(format!("model.device {other:?} is not one of cpu, cuda, auto"))),
    }
}

/// Builds a fresh model for `n_features` inputs.
pub fn build(cfg: &ModelConfig, n_features: usize, device: &Device) -> Result<Box<dyn OnlineModel>> {
    match cfg.kind.as_str() {
        "linear" => {
            let opt = linear::Optim::parse(&cfg.optimizer)?;
            let loss = loss::Loss::parse(&cfg.loss, cfg.huber_delta)?;
            Ok(Box::new(linear::LinearModel::with_loss(n_features, opt, cfg.learning_rate, loss, device)?))
        }
        "mlp" => Ok(Box::new(mlp::MlpModel::new(
            n_features,
            &cfg.hidden,
            mlp::Activation::parse(&cfg.activation)?,
            loss::Loss::parse(&cfg.loss, cfg.huber_delta)?,
            linear::Optim::parse(&cfg.optimizer)?,
            cfg.learning_rate,
            cfg.seed,
            device,
        )?)),
        "rls" => Ok(Box::new(rls::RlsModel::new(n_features, cfg.forgetting_factor, cfg.regularization, device)?)),
        other => Err(Error::Config(format!("model.kind {other:?} is not supported (supported: linear, mlp, rls)"))),
    }
}

#[cfg(test)]
mod learning_tests {
    //! Each model learns a known process: y = 2x₁ − 3x₂ + 0.5 + ε, ε ~ N(0, 0.1²).
    //! After warm-up the prequential MAE must approach the noise floor
    //! E|ε| = σ·√(2/π) = 0.0798; we allow 0.1. Coefficients must converge.
    use super::*;

    /// Deterministic N(0, 1) draws: a 64-bit LCG through Box–Muller.
    struct Rng(u64);
    impl Rng {
        fn uniform(&mut self) -> f64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }
        fn normal(&mut self) -> f64 {
            let (u, v) = (self.uniform(), self.uniform());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        }
    }

    fn learn(m: &mut dyn OnlineModel, n: usize) -> f64 {
        let mut rng = Rng(7);
        let mut late_abs = 0.0;
        for i in 0..n {
            let x = [rng.normal(), rng.normal()];
            let y = 2.0 * x[0] - 3.0 * x[1] + 0.5 + 0.1 * rng.normal();
            let p = m.predict(&x).unwrap();
            if i >= n - 500 {
                late_abs += (p - y).abs();
            }
            m.update(&x, y).unwrap();
        }
        late_abs / 500.0
    }

    fn check(m: &mut dyn OnlineModel, n: usize, tol: f64) {
        let mae = learn(m, n);
        assert!(mae < 0.1, "prequential MAE {mae}");
        let p = m.parameters().unwrap();
        for (got, want) in p.iter().zip([2.0, -3.0, 0.5]) {
            assert!((got - want).abs() < tol, "{p:?}");
        }
    }

    /// Constant-step SGD keeps jittering around the optimum: for LMS with step
    /// μ = 2·lr = 0.04 the stationary variance of each weight is ≈ μσ²/2 = 2·10⁻⁴
    /// (std 0.014), so the tolerance is 3.5 std ≈ 0.05.
    #[test]
    fn linear_sgd_learns() {
        let mut m = linear::LinearModel::new(2, linear::Optim::Sgd, 0.02, &Device::Cpu).unwrap();
        check(&mut m, 3000, 0.05);
    }

    #[test]
    fn linear_adamw_learns() {
        let mut m = linear::LinearModel::new(2, linear::Optim::AdamW, 0.01, &Device::Cpu).unwrap();
        check(&mut m, 4000, 0.03);
    }

    #[test]
    fn mlp_learns() {
        let mut m = mlp::MlpModel::new(2, &[16], mlp::Activation::Relu, loss::Loss::Mse, linear::Optim::AdamW, 0.003, 1, &Device::Cpu)
            .unwrap();
        // A linear target is within an MLP's reach; coefficients are not comparable,
        // so only the error is checked.
        let mae = learn(&mut m, 8000);
        assert!(mae < 0.1, "prequential MAE {mae}");
    }

    /// A nonlinear process y = sin(2x₁) + x₂² + ε that no linear model fits: after
    /// warm-up the MLP's prequential MAE must be well below the linear model's.
    #[test]
    fn mlp_fits_what_linear_cannot() {
        let run = |m: &mut dyn OnlineModel| {
            let mut rng = Rng(3);
            let mut late = 0.0;
            for i in 0..6000 {
                let x = [rng.normal(), rng.normal()];
                let y = (2.0 * x[0]).sin() + x[1] * x[1] + 0.05 * rng.normal();
                let p = m.predict(&x).unwrap();
                if i >= 5000 {
                    late += (p - y).abs();
                }
                m.update(&x, y).unwrap();
            }
            late / 1000.0
        };
        let mut mlp = mlp::MlpModel::new(2, &[32, 16], mlp::Activation::Tanh, loss::Loss::Mse, linear::Optim::AdamW, 0.005, 1, &Device::Cpu)
            .unwrap();
        let mut lin = linear::LinearModel::new(2, linear::Optim::AdamW, 0.005, &Device::Cpu).unwrap();
        let (a, b) = (run(&mut mlp), run(&mut lin));
        assert!(a < 0.6 * b, "mlp {a} vs linear {b}");
    }

    #[test]
    fn mlp_init_is_seeded() {
        let mk = |seed| {
            mlp::MlpModel::new(3, &[4], mlp::Activation::Relu, loss::Loss::Mse, linear::Optim::Sgd, 0.1, seed, &Device::Cpu)
                .unwrap()
                .parameters()
                .unwrap()
        };
        assert_eq!(mk(5), mk(5));
        assert_ne!(mk(5), mk(6));
    }

    #[test]
    fn rls_learns() {
        let mut m = rls::RlsModel::new(2, 0.999, 1e-3, &Device::Cpu).unwrap();
        check(&mut m, 2000, 0.02);
    }
}

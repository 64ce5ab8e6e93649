//! Online regression models: predict one row, learn from one labelled row.
//!
//! Models are plain structs of candle variables; updates happen one labelled example
//! at a time, in record order, so results never depend on micro-batch boundaries.

pub mod linear;

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
            Ok(Box::new(linear::LinearModel::new(n_features, opt, cfg.learning_rate, device)?))
        }
        other => Err(Error::Config(format!("model.kind {other:?} is not supported (supported: linear)"))),
    }
}

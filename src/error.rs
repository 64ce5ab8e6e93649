//! Runtime error type: says whose fault an error is and whether retrying helps.
//!
//! Setup code (CLI, config loading) uses `anyhow`; everything on the per-batch path
//! returns [`Error`] so the pipeline can decide to dead-letter, retry or stop.

use std::fmt;

/// Who caused a runtime error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Bad input data or a configuration mistake: fix the data or the config.
    User,
    /// The outside world (broker, disk) misbehaved; retrying may help.
    External,
    /// A bug in tickflare.
    Internal,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::User => "user",
            Fault::External => "external",
            Fault::Internal => "internal",
        })
    }
}

/// Errors raised while a pipeline runs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("feature SQL: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("model: {0}")]
    Model(#[from] candle_core::Error),
    #[error("config: {0}")]
    Config(String),
    /// A configuration value that is wrong, with the key it belongs to (so `validate`
    /// can report it there).
    #[error("config: {key}: {message}")]
    ConfigKey { key: &'static str, message: String },
    #[error("internal: {0}")]
    Internal(String),
    /// A checkpoint could not be written, read or applied.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
}

impl Error {
    /// Whose fault the error is.
    pub fn fault(&self) -> Fault {
        match self {
            Error::Kafka(_) | Error::Checkpoint(_) => Fault::External,
            Error::Config(_) | Error::ConfigKey { .. } => Fault::User,
            Error::DataFusion(_) | Error::Arrow(_) | Error::Model(_) | Error::Internal(_) => {
                Fault::Internal
            }
        }
    }

    /// Whether retrying the same operation may succeed.
    pub fn retryable(&self) -> bool {
        matches!(self.fault(), Fault::External)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

//! The library's one error type: says whose fault an error is and whether retrying
//! helps. Every module returns [`Error`] (with [`Context`] for what was being done);
//! `anyhow` is for the command line (`cli/`) only, which maps the fault to an exit
//! code.

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
    /// A configuration mistake (the message names the key where it can).
    #[error("{0}")]
    Config(String),
    /// A configuration value that is wrong, with the key it belongs to (so `validate`
    /// can report it there).
    #[error("{key}: {message}")]
    ConfigKey { key: &'static str, message: String },
    #[error("internal: {0}")]
    Internal(String),
    /// A checkpoint could not be written, read or applied.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A file, socket or pipe failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// An input file or record is not what it should be (the user's data).
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("{0}")]
    Csv(#[from] csv::Error),
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// A broker did not do what was asked (a topic not created, records not arriving).
    #[error("{0}")]
    Broker(String),
    /// Stopped by a signal before the work could finish.
    #[error("{0}")]
    Interrupted(String),
    /// What was being done when `inner` happened (the fault is the inner error's;
    /// one line, like `anyhow`'s `{:#}`).
    #[error("{context}: {inner}")]
    Context { context: String, inner: Box<Error> },
}

impl Error {
    /// Whose fault the error is.
    pub fn fault(&self) -> Fault {
        match self {
            // A file that is not there, not readable or not valid: the user's to fix.
            Error::Io(e) if is_users(e.kind()) => Fault::User,
            // (A signal's stop is told apart by `interrupted`; as a fault, retrying is fine.)
            Error::Kafka(_) | Error::Broker(_) | Error::Checkpoint(_) | Error::Io(_) | Error::Store(_) | Error::Interrupted(_) => Fault::External,
            Error::Config(_) | Error::ConfigKey { .. } | Error::Input(_) | Error::Json(_) | Error::Parquet(_) | Error::Csv(_) | Error::Toml(_) => {
                Fault::User
            }
            Error::DataFusion(_) | Error::Arrow(_) | Error::Model(_) | Error::Internal(_) => Fault::Internal,
            Error::Context { inner, .. } => inner.fault(),
        }
    }

    /// Whether the error is a stop asked for by a signal (not a failure).
    pub fn interrupted(&self) -> bool {
        match self {
            Error::Interrupted(_) => true,
            Error::Context { inner, .. } => inner.interrupted(),
            _ => false,
        }
    }

    /// This error with what was being done (`anyhow`'s `context`, for [`Error`]).
    pub fn context(self, context: impl fmt::Display) -> Error {
        Error::Context { context: context.to_string(), inner: Box::new(self) }
    }

    /// Whether retrying the same operation may succeed.
    pub fn retryable(&self) -> bool {
        matches!(self.fault(), Fault::External)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// I/O failures a user causes (a wrong path, a file they may not read, bad data), as
/// opposed to the disk or network failing.
fn is_users(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind as K;
    matches!(kind, K::NotFound | K::PermissionDenied | K::InvalidInput | K::InvalidData | K::IsADirectory | K::NotADirectory | K::UnexpectedEof)
}

/// A task that panicked or was cancelled: a bug (or a shutdown mid-task).
impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Internal(format!("task: {e}"))
    }
}

/// A delivery future whose producer was dropped before it answered.
impl From<futures::channel::oneshot::Canceled> for Error {
    fn from(_: futures::channel::oneshot::Canceled) -> Self {
        Error::Internal("the producer went away before the delivery report".into())
    }
}

/// A file pattern that does not parse (the user's).
impl From<glob::PatternError> for Error {
    fn from(e: glob::PatternError) -> Self {
        Error::Input(e.to_string())
    }
}

/// The metrics recorder could not be set up (a second one in the process: a bug).
impl From<metrics_exporter_prometheus::BuildError> for Error {
    fn from(e: metrics_exporter_prometheus::BuildError) -> Self {
        Error::Internal(format!("metrics: {e}"))
    }
}

/// `.context(…)` / `.with_context(|| …)` on results whose error converts into
/// [`Error`], and on options (`None` becomes an [`Error::Internal`] with the message:
/// use it where a missing value is a bug; say what the user got wrong otherwise).
pub trait Context<T> {
    fn context<C: fmt::Display>(self, context: C) -> Result<T>;
    fn with_context<C: fmt::Display, F: FnOnce() -> C>(self, f: F) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context<C: fmt::Display>(self, context: C) -> Result<T> {
        self.map_err(|e| e.into().context(context))
    }
    fn with_context<C: fmt::Display, F: FnOnce() -> C>(self, f: F) -> Result<T> {
        self.map_err(|e| e.into().context(f()))
    }
}

impl<T> Context<T> for Option<T> {
    fn context<C: fmt::Display>(self, context: C) -> Result<T> {
        self.ok_or_else(|| Error::Internal(context.to_string()))
    }
    fn with_context<C: fmt::Display, F: FnOnce() -> C>(self, f: F) -> Result<T> {
        self.ok_or_else(|| Error::Internal(f().to_string()))
    }
}

/// Returns `Err(Error::$kind(format!(…)))`: `fail!(Config, "{key} is wrong")`.
#[macro_export]
macro_rules! fail {
    ($kind:ident, $($arg:tt)*) => {
        return Err($crate::error::Error::$kind(format!($($arg)*)).into())
    };
}

/// `fail!` unless the condition holds: `ensure!(Config, n > 0, "n must be positive")`.
#[macro_export]
macro_rules! ensure {
    ($kind:ident, $cond:expr, $($arg:tt)*) => {
        if !$cond {
            $crate::fail!($kind, $($arg)*);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_the_cause_in_the_message_and_its_fault() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = Err::<(), _>(io).context("reading pipeline p.toml").unwrap_err();
        assert_eq!(e.to_string(), "reading pipeline p.toml: no such file");
        assert_eq!(e.fault(), Fault::User);
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(Error::from(reset).context("writing").fault(), Fault::External);
        let e = Err::<(), _>(Error::Config("model.kind".into())).with_context(|| "in p.toml").unwrap_err();
        assert_eq!(e.fault(), Fault::User);
        assert!(!e.retryable() && !e.interrupted());
        assert!(Error::Interrupted("seeding".into()).context("starting").interrupted());
    }
}

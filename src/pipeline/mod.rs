//! Pipeline wiring: Kafka source → per-partition [`processor`] → Kafka sink. The
//! daemon's loop is [`run()`] (in named steps), the micro-batch [`batch`], state
//! recovery [`recovery`]; the embedded broker for self-contained runs and the
//! shutdown switch are here.

mod batch;
pub mod backtest;
pub mod build;
pub mod config;
pub mod fault;
pub mod kafka_props;
pub mod processor;
mod position;
pub mod recovery;
mod run;
pub mod series;
pub mod summary;
mod workers;

use std::sync::Arc;

use tokio::sync::watch;

use crate::broker::EmbeddedBroker;
use crate::source::sample;
use build::Built;
pub use run::run;

/// How to run a built pipeline.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Bootstrap servers; `None` or `"embedded"` runs on an in-process broker.
    pub brokers: Option<String>,
    /// Stop once every partition reached the end offset it had at start.
    pub stop_at_end: bool,
    /// Read by assigning all partitions instead of joining the consumer group.
    pub assign: bool,
    /// Overrides `source.max_batch_rows`.
    pub max_batch_rows: Option<usize>,
    /// Overrides the consumer group.
    pub group: Option<String>,
    /// Serve `/metrics`, `/healthz`, `/readyz` here (`None`: no endpoint).
    pub metrics_addr: Option<String>,
    /// When the address cannot be bound: fail (`true`, an address the user gave) or
    /// log a warning and run without the endpoint (`false`, the default address).
    pub metrics_required: bool,
    /// Overrides `checkpoint.dir` (checkpointing is on when either is set).
    pub checkpoint_dir: Option<String>,
}

/// Starts the embedded broker, creates the pipeline's topics and seeds the input
/// from the sample file.
pub async fn start_embedded(built: &Built) -> crate::error::Result<EmbeddedBroker> {
    let cfg = &built.config;
    let b = EmbeddedBroker::start()?;
    let n = cfg.source.partitions;
    for t in [&cfg.source.topic, &cfg.sink.topic, &cfg.sink.dead_letter_topic] {
        b.create_topic(t, n)?;
    }
    if let Some(path) = &cfg.source.sample {
        let path = cfg.resolve(path);
        // JSON lines go in byte for byte; other files (CSV, Parquet), and any file of
        // a `[series]` pipeline, through the pipeline's `[source.file]` mapping.
        let lines = if path.extension().is_some_and(|e| e == "jsonl" || e == "json") && cfg.series.is_none() {
            sample::read_lines(&path)?
        } else {
            crate::source::mapping::file_messages(&path, &cfg.source.file, &built.schema, &cfg.source.time)?
                .into_iter()
                .map(|(line, _)| line)
                .collect()
        };
        let prod = sample::seed_producer(b.bootstrap_servers())?;
        let seeded = sample::seed_lines(&prod, &cfg.source.topic, n, &built.schema, &cfg.source.key, lines).await?;
        b.check_retained(&cfg.source.topic)?;
        tracing::info!(records = seeded, topic = %cfg.source.topic, "seeded the embedded broker");
    }
    Ok(b)
}

/// Resolves once the switch is true; never, if its sender is gone while false.
pub(crate) async fn wait_true(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A shutdown switch flipped by SIGINT or SIGTERM.
pub fn shutdown_on_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    let tx = Arc::new(tx);
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining and stopping"),
            _ = int.recv() => tracing::info!("SIGINT: draining and stopping"),
        }
        let _ = tx.send(true);
    });
    rx
}

//! Telemetry: Prometheus metrics, health and readiness over HTTP.
//!
//! Every runtime event is one type in [`events`] whose `emit()` both logs (tracing)
//! and counts (the `metrics` facade), so logs and metrics never disagree. Metric
//! names start with `tickflare_`; labels are a small fixed set (pipeline, topic,
//! partition, reason, stage, forecaster, model).

pub mod events;
pub mod http;
pub mod progress;
pub mod solar;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once) and returns its handle.
pub fn install() -> crate::error::Result<PrometheusHandle> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let buckets = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    let rows = [1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0];
    let h = PrometheusBuilder::new()
        .set_buckets_for_metric(metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()), &buckets)?
        .set_buckets_for_metric(metrics_exporter_prometheus::Matcher::Full("tickflare_batch_rows".into()), &rows)?
        .install_recorder()?;
    events::describe();
    solar::describe();
    let _ = HANDLE.set(h.clone());
    Ok(HANDLE.get().cloned().unwrap_or(h))
}

/// The HTTP endpoint's task; dropping it stops serving.
pub struct Endpoint(tokio::task::JoinHandle<()>);

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` (none: no endpoint). When
/// the address cannot be bound: an error if `required` (an address the user gave),
/// else a warning and no endpoint.
pub async fn serve(addr: Option<&str>, required: bool, health: Arc<Health>) -> crate::error::Result<Option<Endpoint>> {
    use crate::error::Context;
    let Some(addr) = addr else { return Ok(None) };
    let handle = install()?;
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => {
            tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
            Ok(Some(Endpoint(tokio::spawn(http::serve(listener, handle, health)))))
        }
        Err(e) if !required => {
            tracing::warn!(addr = %addr, error = %e, "metrics endpoint disabled: address unavailable (pass --metrics-addr to require it)");
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| format!("binding the metrics endpoint {addr}")),
    }
}

/// Liveness and readiness, shared between the pipeline, the consumer's callbacks and
/// the HTTP endpoint.
#[derive(Debug, Default)]
pub struct Health {
    /// Partitions currently assigned to this process.
    pub assigned: AtomicUsize,
    /// The consumer reported that no broker is reachable.
    pub brokers_down: AtomicBool,
    /// A partition's state is being restored (checkpoint load).
    pub restoring: AtomicBool,
    /// The run loop is consuming.
    pub consuming: AtomicBool,
}

impl Health {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Ready: partitions assigned and loaded, consuming, brokers reachable.
    pub fn ready(&self) -> Result<(), &'static str> {
        if !self.consuming.load(Ordering::Relaxed) {
            return Err("not consuming yet");
        }
        if self.assigned.load(Ordering::Relaxed) == 0 {
            return Err("no partitions assigned");
        }
        if self.restoring.load(Ordering::Relaxed) {
            return Err("restoring partition state");
        }
        if self.brokers_down.load(Ordering::Relaxed) {
            return Err("brokers unreachable");
        }
        Ok(())
    }
}

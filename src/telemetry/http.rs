//! A minimal HTTP/1.1 endpoint: `/metrics` (Prometheus text), `/healthz`, `/readyz`.
//! One request per connection; enough for Prometheus and orchestrator probes.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::Health;

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle, health: Arc<Health>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else { continue };
        let (handle, health) = (handle.clone(), health.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let n = match tokio::time::timeout(std::time::Duration::from_secs(5), conn.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("/");
            let (status, ctype, body) = match path {
                "/metrics" => ("200 OK", "text/plain; version=0.0.4", {
                    handle.run_upkeep();
                    handle.render()
                }),
                "/healthz" => ("200 OK", "text/plain", "ok\n".to_string()),
                "/readyz" => match health.ready() {
                    Ok(()) => ("200 OK", "text/plain", "ready\n".to_string()),
                    Err(why) => ("503 Service Unavailable", "text/plain", format!("not ready: {why}\n")),
                },
                _ => ("404 Not Found", "text/plain", "not found: try /metrics, /healthz, /readyz\n".to_string()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(body.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

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
            // The request line and headers may arrive in several segments: read until
            // the blank line that ends them (answering a partial request would close
            // the connection on a client still writing: it sees a reset).
            let mut buf = [0u8; 2048];
            let mut n = 0;
            let read_head = async {
                while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k,
                    }
                }
            };
            if tokio::time::timeout(std::time::Duration::from_secs(5), read_head).await.is_err() || n == 0 {
                return;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A request whose line and headers arrive in pieces is answered as a whole (it
    /// was answered at its first piece — "GET " is a 404 — and the connection closed
    /// on a client still writing).
    #[tokio::test]
    async fn a_request_arriving_in_pieces_is_answered() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder().handle();
        let server = tokio::spawn(serve(listener, handle, Health::new()));
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.set_nodelay(true).unwrap();
        for piece in ["GET ", "/healthz", " HTTP/1.1\r\n", "host: x\r\n", "\r\n"] {
            c.write_all(piece.as_bytes()).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK") && out.ends_with("\r\n\r\nok\n"), "{out}");
        server.abort();
    }
}

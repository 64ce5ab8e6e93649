//! `tickflare broker --port N`: the embedded broker as a separate process.

use std::process::ExitCode;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::broker::{forward, EmbeddedBroker};
use crate::pipeline::shutdown_on_signals;

#[derive(clap::Args, Debug)]
pub struct BrokerArgs {
    /// Port to listen on (127.0.0.1); 0 picks a free one.
    #[arg(long, default_value_t = 9092)]
    pub port: u16,
    /// Topics to create, as NAME:PARTITIONS (repeatable).
    #[arg(long = "topic")]
    pub topics: Vec<String>,
}

pub async fn broker(a: BrokerArgs) -> anyhow::Result<ExitCode> {
    let b = EmbeddedBroker::start()?;
    for t in &a.topics {
        let (name, parts) = t.rsplit_once(':').unwrap_or((t.as_str(), "1"));
        let parts: i32 = parts.parse().with_context(|| format!("--topic {t}: partitions must be a number"))?;
        b.create_topic(name, parts)?;
    }
    let listener = TcpListener::bind(("127.0.0.1", a.port)).await.with_context(|| format!("binding 127.0.0.1:{}", a.port))?;
    let addr = listener.local_addr()?;
    let fwd = tokio::spawn(forward(listener, b.bootstrap_servers().to_string()));
    // The first stdout line is for scripts and tests: where to bootstrap.
    println!("tickflare broker listening on {addr} (mock cluster at {})", b.bootstrap_servers());
    let mut stop = shutdown_on_signals();
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            break;
        }
    }
    fwd.abort();
    drop(b);
    Ok(ExitCode::SUCCESS)
}

//! `tickflare run PIPELINE`: build (reporting every problem), run, print the summary.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::{print_problems, BrokerArg};
use crate::pipeline::{self, build::build, RunOptions};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Pipeline file (TOML).
    pub pipeline: PathBuf,
    #[command(flatten)]
    pub brokers: BrokerArg,
    /// Also write the summary as JSON here.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
    /// Stop once the input's end offsets at start are reached (real brokers; the embedded broker always does).
    #[arg(long)]
    pub stop_at_end: bool,
    /// Consumer group (default: the pipeline's `source.group`).
    #[arg(long)]
    pub group: Option<String>,
    /// Serve /metrics, /healthz, /readyz on HOST:PORT (`off` to disable). Default: the
    /// pipeline's `[metrics] addr`, else 127.0.0.1:9464.
    #[arg(long)]
    pub metrics_addr: Option<String>,
    /// Override `source.max_batch_rows`.
    #[arg(long)]
    pub batch_rows: Option<usize>,
}

pub async fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    let built = match build(&a.pipeline).await {
        Ok(b) => b,
        Err(probs) => {
            print_problems(&a.pipeline, &probs);
            return Ok(ExitCode::from(2));
        }
    };
    let opts = RunOptions {
        brokers: a.brokers.brokers.clone(),
        stop_at_end: a.stop_at_end,
        assign: false,
        max_batch_rows: a.batch_rows,
        group: a.group.clone(),
        metrics_addr: None,
    };
    let explicit = a.metrics_addr.clone().or_else(|| built.config.metrics.addr.clone());
    let opts = RunOptions { metrics_addr: metrics_addr(explicit.as_deref()).await, ..opts };
    let summary = pipeline::run(&built, opts, pipeline::shutdown_on_signals()).await?;
    println!("{}", summary.human());
    if let Some(p) = &a.summary_json {
        let json = serde_json::to_string_pretty(&summary)?;
        std::fs::write(p, json).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The metrics address to serve on: an explicit one is used as given (a bind error
/// is then fatal); the default 127.0.0.1:9464 is skipped with a warning when taken.
async fn metrics_addr(explicit: Option<&str>) -> Option<String> {
    match explicit {
        Some("off") => None,
        Some(a) => Some(a.to_string()),
        None => {
            let default = "127.0.0.1:9464";
            match tokio::net::TcpListener::bind(default).await {
                Ok(l) => {
                    drop(l);
                    Some(default.to_string())
                }
                Err(e) => {
                    tracing::warn!(addr = default, error = %e, "metrics endpoint disabled: default port unavailable");
                    None
                }
            }
        }
    }
}

//! `tickflare run PIPELINE`: build (reporting every problem), run, print the summary.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::{print_problems, BrokerArg, SeriesArgs};
use crate::pipeline::build::{build_with, BuildOptions};
use crate::pipeline::{self, RunOptions};

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
    /// Checkpoint per partition here (a directory, or an object-store URL): restarts
    /// and hand-offs then give exactly the output of an uninterrupted run.
    /// Default: the pipeline's `[checkpoint] dir`; none means at-least-once.
    #[arg(long, env = "TICKFLARE_CHECKPOINT_DIR")]
    pub checkpoint_dir: Option<String>,
    /// Read every input partition by assignment instead of joining the consumer
    /// group (one process owns the whole topic).
    #[arg(long)]
    pub assign: bool,
    /// Solar tracking pipelines on a synthetic sequence: write the evaluation report
    /// (tracking.json, plots, a frame with the boxes) here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Seed the embedded broker from this file (CSV, JSON lines, Parquet; `.gz` too)
    /// instead of `source.sample`; a `[series]` pipeline also reads its series here.
    #[arg(long)]
    pub input: Option<PathBuf>,
    #[command(flatten)]
    pub series: SeriesArgs,
}

pub async fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    if crate::solar::stream::is_solar(&a.pipeline) {
        return run_solar(a).await;
    }
    anyhow::ensure!(a.report.is_none(), "--report is for solar tracking pipelines (a forecasting run's report: tickflare backtest --report)");
    let build_opts = BuildOptions { sample: a.input.clone(), series: a.series.options(None) };
    let built = match build_with(&a.pipeline, &build_opts).await {
        Ok(b) => b,
        Err(probs) => {
            print_problems(&a.pipeline, &probs);
            return Ok(ExitCode::from(2));
        }
    };
    if let Some(plan) = &built.series {
        println!("{plan}");
    }
    let opts = RunOptions {
        brokers: a.brokers.brokers.clone(),
        stop_at_end: a.stop_at_end,
        assign: a.assign,
        max_batch_rows: a.batch_rows,
        group: a.group.clone(),
        metrics_addr: None,
        metrics_required: false,
        checkpoint_dir: a.checkpoint_dir.clone(),
    };
    let (metrics_addr, metrics_required) = metrics_endpoint(a.metrics_addr.as_deref(), built.config.metrics.addr.as_deref());
    let opts = RunOptions { metrics_addr, metrics_required, ..opts };
    let summary = pipeline::run(&built, opts, pipeline::shutdown_on_signals()).await?;
    println!("{}", summary.human());
    if let Some(p) = &a.summary_json {
        let json = serde_json::to_string_pretty(&summary)?;
        std::fs::write(p, json).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Where `run` serves metrics unless told otherwise.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";

/// The metrics endpoint from `--metrics-addr` (else the pipeline's `[metrics]
/// addr`): `off` none; an address given must be bound; the default may be busy.
fn metrics_endpoint(flag: Option<&str>, config: Option<&str>) -> (Option<String>, bool) {
    match flag.or(config) {
        Some("off") => (None, false),
        Some(addr) => (Some(addr.to_string()), true),
        None => (Some(DEFAULT_METRICS_ADDR.to_string()), false),
    }
}

/// Flags that mean nothing to a solar pipeline are refused, not ignored.
fn solar_flags(a: &RunArgs) -> anyhow::Result<()> {
    let refused = [
        (a.group.is_some(), "--group: a solar pipeline reads every frames partition by assignment (one tracker sees all frames in time order)"),
        (a.batch_rows.is_some(), "--batch-rows: frames are tracked one at a time"),
        (a.input.is_some(), "--input: the embedded broker is seeded from [source.synthetic]"),
        (a.series.column.is_some() || a.series.time_column.is_some() || a.series.frequency.is_some(), "--column/--time-column/--frequency: these are for [series] pipelines"),
    ];
    let why: Vec<&str> = refused.iter().filter(|(set, _)| *set).map(|(_, w)| *w).collect();
    anyhow::ensure!(why.is_empty(), "not for a solar pipeline: {}", why.join("; "));
    Ok(())
}

async fn run_solar(a: RunArgs) -> anyhow::Result<ExitCode> {
    use crate::solar::stream::{self, SolarConfig, SolarRunOptions};
    solar_flags(&a)?;
    let cfg = SolarConfig::load(&a.pipeline)?;
    stream::check(&cfg)?;
    let (metrics_addr, metrics_required) = metrics_endpoint(a.metrics_addr.as_deref(), None);
    let opts = SolarRunOptions {
        brokers: a.brokers.brokers.clone(),
        stop_at_end: a.stop_at_end,
        report: a.report.clone(),
        checkpoint_dir: a.checkpoint_dir.clone(),
        metrics_addr,
        metrics_required,
    };
    let summary = stream::run(&cfg, opts, pipeline::shutdown_on_signals()).await?;
    println!("{}", summary.human());
    if let Some(p) = &a.summary_json {
        std::fs::write(p, serde_json::to_string_pretty(&summary)?).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

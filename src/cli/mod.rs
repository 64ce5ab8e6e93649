//! Command line: raw flags (clap) dispatched to one module per subcommand.

pub mod analyze;
pub mod backtest;
pub mod bench;
pub mod bench_live;
pub mod bench_models;
pub mod broker;
pub mod checkpoint;
pub mod replay;
pub mod run;
pub mod solar;
pub mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "tickflare", version, about = "Streaming online regression: Kafka → Arrow → DataFusion → candle → Kafka")]
pub struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a pipeline (embedded broker: over the sample, then exit; real brokers: until SIGINT/SIGTERM).
    Run(run::RunArgs),
    /// Check a pipeline file, its schema, its SQL and (for real brokers) the brokers and topics.
    Validate(validate::ValidateArgs),
    /// Run the embedded Kafka-protocol broker as its own process.
    Broker(broker::BrokerArgs),
    /// Predict+update throughput of every model kind on a device.
    BenchModels(bench_models::BenchModelsArgs),
    /// Publish a historical file (CSV, JSON lines, Parquet) into a topic with event-time timestamps.
    Replay(replay::ReplayArgs),
    /// Replay a time range (or a file) through the live code path into shadow topics and write a report.
    Backtest(backtest::BacktestArgs),
    /// ACF, embedding delay and Cao's embedding dimension of a column, with SQL.
    Analyze(analyze::AnalyzeArgs),
    /// Measure passthrough and pipeline throughput on the embedded broker.
    Bench(bench::BenchArgs),
    /// List or show stored checkpoints.
    Checkpoint(checkpoint::CheckpointArgs),
    /// Make a synthetic SDO-like frame sequence with exact ground truth from a real FITS frame.
    SynthSun(solar::SynthArgs),
    /// Pre-train the solar tracker network on synthetic sequences; writes safetensors.
    TrainTracker(solar::TrainArgs),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    crate::model::init_cpu_threads();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Run(a) => run::run(a).await,
            Command::Validate(a) => validate::validate(a).await,
            Command::Broker(a) => broker::broker(a).await,
            Command::Bench(a) => bench::bench(a).await,
            Command::Analyze(a) => analyze::analyze(a).await,
            Command::Replay(a) => replay::replay(a).await,
            Command::Backtest(a) => backtest::backtest(a).await,
            Command::BenchModels(a) => bench_models::bench_models(a).await,
            Command::Checkpoint(a) => checkpoint::checkpoint(a).await,
            Command::SynthSun(a) => solar::synth_sun(a).await,
            Command::TrainTracker(a) => solar::train_tracker(a).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            let (code, hint) = exit_for(&e);
            if let Some(h) = hint {
                eprintln!("  ({h})");
            }
            ExitCode::from(code)
        }
    }
}

/// The exit code of a failed command, by whose fault it was (the first tickflare
/// [`Error`](crate::error::Error) in the chain): 2 the input or the configuration
/// (as `validate` exits), 75 the outside world — a broker, the checkpoint storage —
/// where a restart may succeed (`EX_TEMPFAIL`, for restart policies), 70 a bug
/// (`EX_SOFTWARE`); 130 stopped by a signal before it could finish (seeding the
/// embedded broker); 1 when no tickflare error says.
pub fn exit_for(e: &anyhow::Error) -> (u8, Option<&'static str>) {
    use crate::error::{Error, Fault};
    let ours = e.chain().find_map(|c| c.downcast_ref::<Error>());
    if ours.is_some_and(Error::interrupted) {
        // As a shell reports a command a SIGINT ended (128 + 2).
        return (130, Some("stopped by a signal before the work could finish"));
    }
    match ours.map(Error::fault) {
        Some(Fault::User) => (2, Some("fix the input or the configuration")),
        Some(Fault::External) => (75, Some("a broker or the storage failed; restarting may succeed")),
        Some(Fault::Internal) => (70, Some("a bug in tickflare: please report it with the lines above")),
        None => (1, None),
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

/// Brokers from the flag or `TICKFLARE_BROKERS`.
#[derive(clap::Args, Debug, Clone)]
pub struct BrokerArg {
    /// Bootstrap servers (`host:port,...`), or `embedded`; overrides the pipeline's `source.brokers`.
    #[arg(long, env = "TICKFLARE_BROKERS")]
    pub brokers: Option<String>,
}

/// `[series]` pipelines: which column of the file to forecast, where its time is and
/// (optionally) its frequency. Overrides the pipeline's `[series]` keys.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SeriesArgs {
    /// `[series]` pipelines: the column to forecast.
    #[arg(long)]
    pub column: Option<String>,
    /// `[series]` pipelines: the time column, or a template of columns such as
    /// "{year}-{month}-{day}" (default: found among common names: time, timestamp,
    /// datetime, date, ds, ts, … in any case).
    #[arg(long)]
    pub time_column: Option<String>,
    /// `[series]` pipelines: minutely, hourly, daily, business_daily, weekly,
    /// monthly, quarterly, yearly, none, or a step such as 15m (default: detected
    /// from the timestamps).
    #[arg(long)]
    pub frequency: Option<String>,
}

impl SeriesArgs {
    /// As build options, reading the series from `input` (else the pipeline's sample).
    pub fn options(&self, input: Option<std::path::PathBuf>) -> crate::pipeline::series::SeriesOptions {
        crate::pipeline::series::SeriesOptions {
            input,
            column: self.column.clone(),
            time_column: self.time_column.clone(),
            frequency: self.frequency.clone(),
        }
    }
}

pub(crate) fn print_problems(path: &std::path::Path, probs: &[crate::pipeline::build::Problem]) {
    eprintln!("{}: {} problem(s)", path.display(), probs.len());
    for p in probs {
        eprintln!("  {p}");
    }
}

#[cfg(test)]
mod tests {
    use super::exit_for;
    use crate::error::Error;
    use anyhow::Context;

    /// The fault of the first tickflare error in the chain picks the exit code, however
    /// deep the context wraps it.
    #[test]
    fn exit_codes_follow_whose_fault_it_was() {
        let wrap = |e: Error| Err::<(), _>(e).context("writing a checkpoint").context("partition 3").unwrap_err();
        assert_eq!(exit_for(&wrap(Error::Config("bad".into()))).0, 2);
        assert_eq!(exit_for(&wrap(Error::Checkpoint("No space left on device".into()))).0, 75);
        assert_eq!(exit_for(&wrap(Error::Internal("oops".into()))).0, 70);
        assert_eq!(exit_for(&anyhow::anyhow!("no tickflare error")), (1, None));
        assert_eq!(exit_for(&wrap(Error::Interrupted("seeding".into()).context("starting"))).0, 130);
        let missing = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        assert_eq!(exit_for(&wrap(Error::from(missing).context("reading p.toml"))).0, 2);
    }
}

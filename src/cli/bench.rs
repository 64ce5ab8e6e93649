//! `tickflare bench`: on one embedded broker and one set of messages, measures
//! (a) raw consume → produce passthrough and (b) the full pipeline, in msgs/s, (c)
//! the pipeline with checkpoints and (d) compute only: the same file through decode,
//! features, model and encoding with no broker.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rdkafka::message::Message;
use serde::Serialize;

use crate::pipeline::build::build;
use crate::pipeline::{self, RunOptions};
use crate::sink::kafka::producer;
use crate::source::kafka::{assign_all, consumer, end_offsets};
use crate::source::sample;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Pipeline to measure.
    #[arg(long, default_value = "pipelines/market-ticks.toml")]
    pub pipeline: PathBuf,
    /// JSON-lines input (default: the full Binance file in ../shared/data if present, else the pipeline's sample).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Partitions of the benchmark topics (records are spread round-robin, so the
    /// embedded broker's 5 MB-per-partition retention is not reached).
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Instead: run live offering this many records/s and report the p50/p99
    /// record → prediction latency (for `--seconds`, default 20).
    #[arg(long)]
    pub latency: Option<f64>,
    /// Instead: run live for this many seconds (at `--latency` records/s, default
    /// 20000) sampling the RSS every second.
    #[arg(long)]
    pub soak: Option<f64>,
    /// Length of a `--latency` run.
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Instead: only the compute-only measurement (no broker), repeated this many
    /// times; prints each run's rows/s.
    #[arg(long)]
    pub compute_only: Option<u32>,
}

/// Benchmark results.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub messages: u64,
    pub passthrough_msgs_per_s: f64,
    pub pipeline_msgs_per_s: f64,
    pub ratio: f64,
    pub predictions: u64,
    /// The pipeline's own rate from its first record on (excludes client start-up
    /// and shutdown, which the end-to-end figure includes).
    pub pipeline_steady_msgs_per_s: f64,
    /// The pipeline again, on a fresh broker, checkpointing every partition to a
    /// local directory (`[checkpoint]` intervals of the pipeline file or defaults).
    pub checkpointed_msgs_per_s: f64,
    /// The same run's rate from its first record on (restore and tail reads excluded).
    pub checkpointed_steady_msgs_per_s: f64,
    pub checkpoints_kept: u64,
    /// Decode + features + model + encoding of the same file, no broker (outputs
    /// encoded and dropped): rows/s.
    pub compute_only_rows_per_s: f64,
    /// Worker threads (partitions processed at once).
    pub workers: usize,
}

pub async fn bench(a: BenchArgs) -> anyhow::Result<ExitCode> {
    if a.latency.is_some() || a.soak.is_some() {
        let built = built(&a.pipeline).await?;
        let input = bench_input(&built, a.input.as_deref())?;
        let rate = a.latency.unwrap_or(20_000.0);
        let seconds = a.soak.unwrap_or(a.seconds);
        let r = super::bench_live::live(built, &input, rate, seconds, a.partitions, a.soak.is_none()).await?;
        // A soak does not sample latencies (it reads no output): say so, not "NaN ms".
        let latency = if r.latency_samples == 0 {
            "latency record -> prediction: not sampled".to_string()
        } else {
            format!(
                "latency record -> prediction: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
                r.latency_p50_ms, r.latency_p99_ms, r.latency_max_ms, r.latency_samples
            )
        };
        // A latency run keeps every record's send and arrival times in this process
        // (~100 bytes a record), so its RSS grows with them; a soak samples no latency.
        let rss_note = if r.latency_samples > 0 { " — includes this bench's send and arrival times of every record (~100 B each): --soak measures the pipeline alone" } else { "" };
        println!(
            "offered {:.0} msg/s, achieved {:.0} msg/s over {:.1}s ({} records)\n{latency}\nRSS after warm-up: first {:.1} MB, last {:.1} MB, min {:.1}, max {:.1} (spread {:.1} %){rss_note}",
            r.offered_msgs_per_s, r.achieved_msgs_per_s, r.seconds, r.records, r.rss_first_mb, r.rss_last_mb, r.rss_min_mb, r.rss_max_mb, r.rss_spread_pct
        );
        if let Some(p) = a.json {
            std::fs::write(p, serde_json::to_string_pretty(&r)?)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(times) = a.compute_only {
        let mut rates = Vec::new();
        for _ in 0..times.max(1) {
            let built = built(&a.pipeline).await?;
            let input = bench_input(&built, a.input.as_deref())?;
            let (rows, rate, stages) = compute_only(built, input).await?;
            let stages: Vec<String> = stages.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
            println!(
                "compute only {rate:>10.0} rows/s  ({rows} rows; {} worker(s); stage seconds, all workers: {})",
                crate::pipeline::build::workers(),
                stages.join(", ")
            );
            rates.push(rate);
        }
        if let Some(p) = a.json {
            std::fs::write(p, serde_json::to_string_pretty(&rates)?)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let r = run_bench(&a.pipeline, a.input.as_deref(), a.partitions).await?;
    println!(
        "messages {}\npassthrough  {:>10.0} msg/s\npipeline     {:>10.0} msg/s   (steady, after start-up: {:.0} msg/s)\nratio        {:>10.3}\ncheckpointed {:>10.0} msg/s   (steady: {:.0} msg/s; {} checkpoints kept at the end)\ncompute only {:>10.0} rows/s  (decode, features, model, encoding of the same file; no broker; {} worker(s))",
        r.messages,
        r.passthrough_msgs_per_s,
        r.pipeline_msgs_per_s,
        r.pipeline_steady_msgs_per_s,
        r.ratio,
        r.checkpointed_msgs_per_s,
        r.checkpointed_steady_msgs_per_s,
        r.checkpoints_kept,
        r.compute_only_rows_per_s,
        r.workers
    );
    if let Some(p) = a.json {
        std::fs::write(p, serde_json::to_string_pretty(&r)?)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The pipeline at `path`, built, or its problems as the error.
async fn built(path: &std::path::Path) -> anyhow::Result<crate::pipeline::build::Built> {
    match build(path).await {
        Ok(b) => Ok(b),
        Err(p) => anyhow::bail!("pipeline has problems: {p:?}"),
    }
}

/// (d) compute only: the file straight through the batches, no broker. Rows, rows/s
/// and the seconds spent in each stage (summed over workers).
async fn compute_only(
    built: crate::pipeline::build::Built,
    input: PathBuf,
) -> anyhow::Result<(u64, f64, std::collections::BTreeMap<String, f64>)> {
    let variant = crate::pipeline::backtest::Variant { name: "base".into(), built };
    let bopts = crate::pipeline::backtest::BacktestOptions { input: Some(input), discard_outputs: true, ..Default::default() };
    let r = crate::pipeline::backtest::backtest(vec![variant], &bopts).await?;
    let stages = r.lanes.first().map(|l| l.summary.stage_seconds.clone()).unwrap_or_default();
    Ok((r.in_range, r.in_range as f64 / r.elapsed_s.max(1e-9), stages))
}

/// The benchmark's input: as given, else the full Binance file in ../shared/data, else
/// the pipeline's sample.
pub fn bench_input(built: &crate::pipeline::build::Built, input: Option<&std::path::Path>) -> anyhow::Result<PathBuf> {
    let cfg = &built.config;
    let shared = cfg.resolve(std::path::Path::new("../../shared/data/market/binance_spot_l1_trades_2025-03-25.jsonl"));
    Ok(match input {
        Some(p) => p.to_path_buf(),
        None if shared.is_file() => shared,
        None => cfg.resolve(cfg.source.sample.as_deref().ok_or_else(|| anyhow::anyhow!("no input"))?),
    })
}

pub async fn run_bench(pipeline_path: &std::path::Path, input: Option<&std::path::Path>, partitions: i32) -> anyhow::Result<BenchResult> {
    let built = built(pipeline_path).await?;
    let cfg = &built.config;
    let input = bench_input(&built, input)?;
    let lines = sample::read_lines(&input)?;
    let lines_again = lines.clone();
    let broker = crate::broker::EmbeddedBroker::start()?;
    let bs = broker.bootstrap_servers().to_string();
    let n = partitions.max(1);
    for t in [&cfg.source.topic, &cfg.sink.topic, &cfg.sink.dead_letter_topic, &"bench-passthrough".to_string()] {
        broker.create_topic(t, n)?;
    }
    let prod = producer(&bs)?;
    let placement = sample::Placement::RoundRobin;
    let messages =
        sample::seed_lines_placed(&prod, &cfg.source.topic, n, &built.schema, &cfg.source.key, lines, placement).await?;
    broker.check_retained(&cfg.source.topic)?;
    eprintln!("seeded {messages} messages from {}", input.display());

    // (a) passthrough: same consumer settings, same batching, same ack discipline.
    let started = Instant::now();
    let c = consumer(&bs, "bench-passthrough")?;
    let ends = end_offsets(&c, &cfg.source.topic, Duration::from_secs(10))?;
    assign_all(&c, &cfg.source.topic, ends.len() as i32)?;
    let mut seen = 0u64;
    let mut acks = Vec::new();
    while seen < messages {
        let m = c.recv().await?;
        let rec = rdkafka::producer::FutureRecord::<[u8], [u8]>::to("bench-passthrough")
            .partition(m.partition())
            .payload(m.payload().unwrap_or_default());
        let rec = match m.key() {
            Some(k) => rec.key(k),
            None => rec,
        };
        acks.push(prod.send_result(rec).map_err(|(e, _)| e)?);
        seen += 1;
        if acks.len() >= cfg.source.max_batch_rows {
            for a in acks.drain(..) {
                a.await?.map_err(|(e, _)| e)?;
            }
        }
    }
    for a in acks.drain(..) {
        a.await?.map_err(|(e, _)| e)?;
    }
    let pass = messages as f64 / started.elapsed().as_secs_f64();
    drop(c);

    // (b) the whole pipeline over the same topic.
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let opts = RunOptions { brokers: Some(bs.clone()), stop_at_end: true, assign: true, ..Default::default() };
    let started = Instant::now();
    let s = pipeline::run(&built, opts, rx).await?;
    let pipe = messages as f64 / started.elapsed().as_secs_f64();
    drop(prod);
    drop(broker);

    // (c) the whole pipeline with checkpoints, on a fresh broker (fresh outputs).
    let broker = crate::broker::EmbeddedBroker::start()?;
    let bs = broker.bootstrap_servers().to_string();
    for t in [&cfg.source.topic, &cfg.sink.topic, &cfg.sink.dead_letter_topic] {
        broker.create_topic(t, n)?;
    }
    let prod = producer(&bs)?;
    sample::seed_lines_placed(&prod, &cfg.source.topic, n, &built.schema, &cfg.source.key, lines_again, placement).await?;
    let dir = std::env::temp_dir().join(format!("tickflare-bench-checkpoints-{}", std::process::id()));
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let opts = RunOptions {
        brokers: Some(bs.clone()),
        stop_at_end: true,
        assign: true,
        checkpoint_dir: Some(dir.to_string_lossy().into_owned()),
        ..Default::default()
    };
    let started = Instant::now();
    let sc = pipeline::run(&built, opts, rx).await?;
    let ckpt = messages as f64 / started.elapsed().as_secs_f64();
    let store = crate::state::store::CheckpointStore::open(&dir.to_string_lossy(), &cfg.name, usize::MAX)?;
    let mut kept = 0;
    for p in store.partitions().await? {
        kept += store.ids(p, true).await?.len() as u64;
    }
    let _ = std::fs::remove_dir_all(&dir);
    drop(prod);
    drop(broker);
    let (_, compute, _) = compute_only(built, input).await?;
    Ok(BenchResult {
        compute_only_rows_per_s: compute,
        workers: crate::pipeline::build::workers(),
        messages,
        passthrough_msgs_per_s: pass,
        pipeline_msgs_per_s: pipe,
        ratio: pipe / pass,
        predictions: s.predictions_out,
        pipeline_steady_msgs_per_s: s.messages_per_s,
        checkpointed_msgs_per_s: ckpt,
        checkpointed_steady_msgs_per_s: sc.messages_per_s,
        checkpoints_kept: kept,
    })
}

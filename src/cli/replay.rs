//! `tickflare replay FILE`: publishes a historical file (CSV, JSON lines or Parquet,
//! optionally gzip'd) into a topic, each record's Kafka timestamp set to its event
//! time, as fast as the broker takes it or at the original spacing compressed by a
//! factor.
//!
//! With `--pipeline`, the topic, key, event-time field and the `[source.file]`
//! mapping come from the pipeline file. Without, CSV rows become flat JSON objects
//! (header names as keys, numeric cells as numbers), `--time` names the event-time
//! field and `--key` the field whose value keys (and partitions) the records.

use std::path::PathBuf;
use std::sync::Arc;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::FutureRecord;
use rdkafka::ClientConfig;
use serde_json::Value;

use crate::pipeline::config::PipelineConfig;
use crate::source::file::Row;
pub use crate::source::file::parse_time_ms;
use crate::source::mapping::FileMessages;
use crate::source::rows::RowReader;
use crate::pipeline::kafka_props::{KafkaProps, Role};
use crate::source::sample::partition_for;
use crate::source::schema::TopicSchema;
use crate::telemetry::progress::Progress;

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// CSV, JSON-lines or Parquet file (`.gz` is decompressed).
    pub file: PathBuf,
    /// Take the topic, key, event-time field and file mapping from this pipeline.
    #[arg(long)]
    pub pipeline: Option<PathBuf>,
    /// Topic to publish to (it must exist); default: the pipeline's input topic.
    #[arg(long)]
    pub topic: Option<String>,
    /// Bootstrap servers.
    #[arg(long, env = "TICKFLARE_BROKERS")]
    pub brokers: String,
    /// Field holding the event time (without --pipeline).
    #[arg(long)]
    pub time: Option<String>,
    /// Field whose value is the record key (partition: murmur2 of it, as Kafka's Java
    /// producer places keys).
    #[arg(long)]
    pub key: Option<String>,
    /// `max` (as fast as possible), `1x` (original spacing) or `Nx` (N times faster).
    #[arg(long, default_value = "max")]
    pub speed: String,
    /// Only records at or after this event time (same formats as the data).
    #[arg(long)]
    pub from: Option<String>,
    /// Only records before this event time.
    #[arg(long)]
    pub to: Option<String>,
    /// Partitions to spread keys over (default: the topic's partition count).
    #[arg(long)]
    pub partitions: Option<i32>,
    #[command(flatten)]
    pub series: super::SeriesArgs,
}

/// One record ready to publish.
struct Outgoing {
    payload: Vec<u8>,
    time_ms: Option<i64>,
    key: Option<String>,
}

fn speed_factor(s: &str) -> anyhow::Result<Option<f64>> {
    if s == "max" {
        return Ok(None);
    }
    match s.strip_suffix('x').and_then(|n| n.parse::<f64>().ok()) {
        Some(f) if f > 0.0 => Ok(Some(f)),
        _ => bail!("--speed {s:?}: use max, 1x or Nx (e.g. 60x)"),
    }
}

/// The file's records as messages, read as they are published: by the pipeline's
/// mapping, or as flat records with the flags' time and key fields.
enum Feed {
    Mapped(Box<FileMessages>),
    Plain { rows: Box<RowReader>, time: String, key: Option<String> },
}

impl Feed {
    fn next(&mut self) -> Option<anyhow::Result<Outgoing>> {
        match self {
            Feed::Mapped(r) => r.next_message().map(|m| m.map_err(anyhow::Error::from).map(|m| Outgoing { payload: m.payload.to_vec(), time_ms: m.time_ms, key: m.key.map(str::to_string) })),
            Feed::Plain { rows, time, key } => {
                let row = rows.next()?;
                let at = rows.row_number;
                Some(row.map_err(anyhow::Error::from).and_then(|row| {
                    let rec = match row {
                        Row::Record(m) | Row::Line(m, _) => m,
                        Row::Raw(_) => bail!("{}: row {at} is not a JSON object", rows.path().display()),
                    };
                    let Some(t) = rec.get(time.as_str()).and_then(parse_time_ms) else {
                        bail!("record {at}: no readable event time in field {time:?}");
                    };
                    let key = key.as_ref().and_then(|k| rec.get(k)).map(|v| match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    });
                    Ok(Outgoing { payload: serde_json::to_vec(&rec)?, time_ms: Some(t), key })
                }))
            }
        }
    }

    /// (done, total) through the file.
    fn progress(&self) -> (u64, u64) {
        match self {
            Feed::Mapped(r) => r.progress(),
            Feed::Plain { rows, .. } => rows.progress(),
        }
    }
}

/// The file's records as messages, by the pipeline's mapping or by the flags.
/// The topic, the records and — with `--pipeline` — the pipeline's `[kafka]`
/// properties (its cluster's security settings).
fn outgoing(a: &ReplayArgs) -> anyhow::Result<(String, Feed, KafkaProps)> {
    if let Some(p) = &a.pipeline {
        let mut cfg = PipelineConfig::load(p)?.value;
        // A `[series]` pipeline maps this file's time and value columns.
        match crate::pipeline::series::apply(&mut cfg, &a.series.options(Some(a.file.clone()))) {
            Ok(Some(plan)) => eprintln!("{plan}"),
            Ok(None) => {}
            Err(probs) => {
                let lines: Vec<String> = probs.iter().map(|p| format!("  {p}")).collect();
                bail!("{}: {} problem(s)\n{}", p.display(), probs.len(), lines.join("\n"));
            }
        }
        let schema = Arc::new(TopicSchema::load(&cfg.resolve(&cfg.source.schema))?);
        let time = a.time.clone().unwrap_or_else(|| cfg.source.time.clone());
        let key = a.key.clone().unwrap_or_else(|| cfg.source.key.clone());
        let reader = FileMessages::open(&a.file, &cfg.source.file, schema, &time, Some(&key))?;
        return Ok((a.topic.clone().unwrap_or(cfg.source.topic), Feed::Mapped(Box::new(reader)), cfg.kafka));
    }
    if a.series.column.is_some() || a.series.time_column.is_some() || a.series.frequency.is_some() {
        bail!("--column, --time-column and --frequency need --pipeline with a [series] table");
    }
    let topic = a.topic.clone().context("give --topic (or --pipeline)")?;
    let time = a.time.clone().context("give --time FIELD (or --pipeline)")?;
    Ok((topic, Feed::Plain { rows: Box::new(RowReader::open(&a.file)?), time, key: a.key.clone() }, KafkaProps::default()))
}

pub async fn replay(a: ReplayArgs) -> anyhow::Result<ExitCode> {
    let speed = speed_factor(&a.speed)?;
    let bound = |s: &Option<String>| -> anyhow::Result<Option<i64>> {
        s.as_ref()
            .map(|s| parse_time_ms(&Value::from(s.as_str())).with_context(|| format!("cannot read time {s:?}")))
            .transpose()
    };
    let (from, to) = (bound(&a.from)?, bound(&a.to)?);
    let (topic, mut feed, props) = outgoing(&a)?;
    let partitions = match a.partitions {
        Some(n) => n.max(1),
        None => {
            let mut cc = ClientConfig::new();
            cc.set("bootstrap.servers", &a.brokers);
            let c: BaseConsumer = props.create(&mut cc, Role::Consumer)?;
            let n = crate::source::kafka::partition_count(&c, &topic, Duration::from_secs(10))
                .with_context(|| format!("reading the partitions of {topic:?} on {}", a.brokers))?;
            if n == 0 {
                bail!("topic {topic:?} does not exist on {}", a.brokers);
            }
            n
        }
    };
    let prod = crate::sink::kafka::producer_with(&a.brokers, &props)?;
    let started = Instant::now();
    let (mut sent, mut skipped) = (0u64, 0u64);
    let mut first_event: Option<i64> = None;
    let mut acks = Vec::new();
    let mut progress = Progress::new("replaying", true);
    while let Some(rec) = feed.next() {
        let rec = rec?;
        let (done, total) = feed.progress();
        if let Some(t) = rec.time_ms {
            if from.is_some_and(|f| t < f) || to.is_some_and(|e| t >= e) {
                skipped += 1;
                progress.tick(sent + skipped, done, total);
                continue;
            }
            if let Some(f) = speed {
                let t0 = *first_event.get_or_insert(t);
                let due = Duration::from_secs_f64(((t - t0) as f64 / 1000.0 / f).max(0.0));
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        let part = rec.key.as_deref().map_or(0, |k| partition_for(k.as_bytes(), partitions));
        let mut r = FutureRecord::<[u8], [u8]>::to(&topic).partition(part).payload(&rec.payload);
        if let Some(t) = rec.time_ms {
            r = r.timestamp(t);
        }
        if let Some(k) = rec.key.as_deref() {
            r = r.key(k.as_bytes());
        }
        acks.push(crate::source::sample::send(&prod, r, &|| format!("record {} ({} bytes)", sent + skipped + 1, rec.payload.len())).await?);
        sent += 1;
        if acks.len() >= 10_000 {
            for f in acks.drain(..) {
                f.await?.map_err(|(e, _)| e)?;
            }
        }
        progress.tick(sent + skipped, done, total);
    }
    for f in acks {
        f.await?.map_err(|(e, _)| e)?;
    }
    progress.finish();
    println!(
        "replayed {sent} records to {topic} in {:.2}s ({skipped} outside --from/--to)",
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speeds() {
        assert!(speed_factor("60x").unwrap() == Some(60.0) && speed_factor("max").unwrap().is_none());
        assert!(speed_factor("fast").is_err());
    }
}

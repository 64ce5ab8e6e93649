//! The pipeline file (TOML): one section per stage. Every field is documented here;
//! the README's config reference is written from these comments.
//!
//! Loading collects *every* unknown key (not just the first) so `validate` can report
//! them all at once; semantic checks live in [`crate::pipeline::build`].

pub mod choice;
mod model;
pub mod read;

use std::path::{Path, PathBuf};

use crate::error::Context;
use serde::Deserialize;

pub use choice::Delivery;
pub use model::{Horizon, ModelConfig};

/// A whole pipeline.
#[derive(Debug, Clone, Deserialize)]
pub struct PipelineConfig {
    /// Pipeline name; used in logs, metrics labels and the default consumer group.
    pub name: String,
    pub source: SourceConfig,
    /// Optional with `[series]`, which generates the feature SQL.
    #[serde(default)]
    pub features: FeaturesConfig,
    pub model: ModelConfig,
    pub sink: SinkConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// `[[compare]]`: further model configurations a backtest runs beside `[model]`
    /// in the same pass over the data. Each table holds `name` and the `[model]` keys
    /// it changes; the rest is inherited from `[model]`.
    #[serde(default)]
    pub compare: Vec<toml::Table>,
    /// `[series]`: forecast one numeric column of any file (see [`SeriesConfig`]).
    pub series: Option<SeriesConfig>,
    /// `[kafka]`: librdkafka properties for real clusters (security, timeouts; see
    /// [`super::kafka_props`]). Not applied to the embedded broker.
    #[serde(default)]
    pub kafka: super::kafka_props::KafkaProps,
    /// Directory of the config file; relative paths in the file resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[source]`: where records come from and how they are read.
#[derive(Debug, Clone, Deserialize)]
pub struct SourceConfig {
    /// `"embedded"` (in-process broker seeded from `sample`) or a bootstrap list
    /// `host:port[,host:port]`. Overridden by `--brokers` / `TICKFLARE_BROKERS`.
    #[serde(default = "embedded")]
    pub brokers: String,
    /// Input topic.
    pub topic: String,
    /// Consumer group; default `tickflare-<name>`.
    pub group: Option<String>,
    /// Arrow schema (JSON) of the input topic, relative to this file.
    pub schema: PathBuf,
    /// Column that keys records (per-key look-back, per-key models, output key).
    pub key: String,
    /// Event-time column (a timestamp).
    pub time: String,
    /// Partitions of the topics created on the embedded broker.
    #[serde(default = "three")]
    pub partitions: i32,
    /// JSON-lines file seeded into the input topic on the embedded broker.
    pub sample: Option<PathBuf>,
    /// Largest micro-batch, in records.
    #[serde(default = "thousand")]
    pub max_batch_rows: usize,
    /// Longest wait for a micro-batch to fill, in milliseconds.
    #[serde(default = "hundred")]
    pub max_batch_wait_ms: u64,
    /// A micro-batch with records closes once no further record has arrived for this
    /// long (ms): under load batches fill to `max_batch_rows`, while a trickle is
    /// processed at once instead of waiting out `max_batch_wait_ms`. 0 (the default):
    /// it closes as soon as no further record is already waiting in the client (a
    /// batch takes what has been fetched). `"off"` (`None`): only the size and
    /// `max_batch_wait_ms` close it.
    #[serde(default = "zero_ms", deserialize_with = "idle_ms")]
    pub max_batch_idle_ms: Option<u64>,
    /// A record whose event time is more than this behind the latest event time seen
    /// for its key goes to the dead-letter topic with reason `late`.
    #[serde(default = "thousand_i64")]
    pub allowed_lateness_ms: i64,
    /// How historical files (`replay --pipeline`, `backtest --input`) map onto the
    /// topic's records.
    #[serde(default)]
    pub file: FileMapping,
}

/// `[source.file]`: from a file's columns to the topic's fields. Applied to each row
/// of a CSV, JSON-lines or Parquet file before it is published.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FileMapping {
    /// Column renames, `{ Close = "close", Date = "time" }`; a column absent from a
    /// file is ignored, so one table can serve files of several shapes.
    #[serde(default)]
    pub rename: std::collections::BTreeMap<String, String>,
    /// Fields set when a row lacks them: a template where `{column}` is that column's
    /// value and `{file_stem}` the file's name without extensions, e.g.
    /// `{ series = "{file_stem}", date = "{year}-{month}-{date_of_month}" }`.
    #[serde(default)]
    pub fill: std::collections::BTreeMap<String, String>,
}

/// `[features]`: the feature SQL.
#[derive(Debug, Clone, Deserialize)]
pub struct FeaturesConfig {
    /// A query over the table named by `table` whose output has one row per input
    /// row it keeps and carries `_offset`. Window functions should order by `_offset`.
    /// Generated from the detected frequency when empty and `[series]` is present.
    #[serde(default)]
    pub sql: String,
    /// Name of the input table in the SQL.
    #[serde(default = "ticks")]
    pub table: String,
    /// Rows of history kept per key and prepended to each batch, so windows see the
    /// same rows whatever the batch boundaries. Must cover the longest window/LAG.
    #[serde(default = "sixty_four")]
    pub lookback_rows: usize,
}

impl Default for FeaturesConfig {
    fn default() -> Self {
        FeaturesConfig { sql: String::new(), table: ticks(), lookback_rows: sixty_four() }
    }
}

/// `[series]`: one numeric column of any CSV, JSON-lines or Parquet file with a time
/// column, keyed by the file's stem. The builder reads the file (`--input`, else
/// `source.sample`), maps its time and value columns onto the input schema's `time`
/// and `value` (`[source.file]`), detects the frequency from the timestamps, and
/// fills what the pipeline leaves empty: `[features] sql` and `lookback_rows`,
/// `model.features` and `model.season` (see `src/pipeline/series/`).
#[derive(Debug, Clone, Deserialize)]
pub struct SeriesConfig {
    /// The column to forecast; `--column` overrides. Omitted: the file's only
    /// numeric column besides the time.
    pub column: Option<String>,
    /// The time column, or a template of columns such as
    /// `"{year}-{month}-{date_of_month}"`; `--time-column` overrides. Omitted: the
    /// column among the common names (time, timestamp, datetime, date, ds, ts, …;
    /// any case) whose values read as times, or year/month/day columns.
    pub time_column: Option<String>,
    /// `auto` (detected from the file's first 2000 timestamps), or `minutely`,
    /// `hourly`, `daily`, `business_daily`, `weekly`, `monthly`, `quarterly`,
    /// `yearly`, `none` (no season, no calendar features), or a step below a day
    /// such as `"15m"`; `--frequency` overrides.
    #[serde(default = "auto")]
    pub frequency: String,
}

fn auto() -> String {
    "auto".into()
}

/// `[sink]`: where predictions and dead letters go.
#[derive(Debug, Clone, Deserialize)]
pub struct SinkConfig {
    /// Output topic for predictions (same partition count as the input).
    pub topic: String,
    /// Dead-letter topic: original bytes plus `reason` and source headers.
    pub dead_letter_topic: String,
    /// `"idempotent"` (default; exactly-once through checkpoints + tail reads on any
    /// broker) or `"transactional"` (additionally Kafka transactions committed with
    /// each checkpoint; Apache Kafka; needs checkpoints).
    #[serde(default)]
    pub delivery: Delivery,
    /// `transactional.id` for `delivery = "transactional"`: stable across restarts of
    /// one daemon, distinct between daemons. Default `tickflare-<name>`.
    pub transactional_id: Option<String>,
}


/// `[checkpoint]`: per-partition state snapshots for exactly-once restarts and
/// partition hand-off. Off unless `dir` (or `--checkpoint-dir`) is given.
#[derive(Debug, Clone, Deserialize)]
pub struct CheckpointConfig {
    /// A directory, or an object-store URL (`s3://bucket/prefix`, with the `s3`
    /// build feature). Overridden by `--checkpoint-dir` / `TICKFLARE_CHECKPOINT_DIR`.
    pub dir: Option<String>,
    /// Checkpoint after this many input records per partition…
    #[serde(default = "ten_thousand")]
    pub interval_records: u64,
    /// …or after this many seconds, whichever comes first (and always on shutdown
    /// and before a revoked partition is released).
    #[serde(default = "ten_u64")]
    pub interval_seconds: u64,
    /// Checkpoints kept per partition.
    #[serde(default = "three_usize")]
    pub keep: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig { dir: None, interval_records: 10_000, interval_seconds: 10, keep: 3 }
    }
}

fn ten_thousand() -> u64 {
    10_000
}
fn ten_u64() -> u64 {
    10
}
/// `[metrics]`: the HTTP endpoint for `/metrics`, `/healthz`, `/readyz`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MetricsConfig {
    /// `HOST:PORT` to serve on, or `"off"`. Default for `tickflare run`:
    /// `127.0.0.1:9464`. Overridden by `--metrics-addr`.
    pub addr: Option<String>,
}

/// Parses `"250ms"`, `"1s"`, `"5m"`, `"1h"`, `"1d"`, `"10us"`, `"7ns"` into nanoseconds.
pub fn parse_duration_ns(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("duration {s:?}: no number"))?;
    let mult = match unit.trim() {
        "ns" => 1.0,
        "us" => 1e3,
        "ms" => 1e3 * 1e3,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        "d" => 86400e9,
        u => return Err(format!("duration {s:?}: unit {u:?} is not one of ns, us, ms, s, m, h, d")),
    };
    let ns = n * mult;
    if !(1.0..9.2e18).contains(&ns) {
        return Err(format!("duration {s:?} must be positive and below 292 years"));
    }
    Ok(ns.round() as i64)
}

fn embedded() -> String {
    "embedded".into()
}
fn three() -> i32 {
    3
}
fn thousand() -> usize {
    1000
}
fn thousand_i64() -> i64 {
    1000
}
fn zero_ms() -> Option<u64> {
    Some(0)
}

/// `max_batch_idle_ms`: milliseconds, or `"off"`.
fn idle_ms<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Ms(u64),
        Word(String),
    }
    match Raw::deserialize(d) {
        Ok(Raw::Ms(ms)) => Ok(Some(ms)),
        Ok(Raw::Word(w)) if w == "off" => Ok(None),
        Ok(Raw::Word(w)) => Err(D::Error::custom(format!("max_batch_idle_ms = {w:?}: expected milliseconds (0: close once no record is waiting) or \"off\""))),
        Err(_) => Err(D::Error::custom("max_batch_idle_ms: expected milliseconds (0: close once no record is waiting) or \"off\"")),
    }
}

fn hundred() -> u64 {
    100
}
fn ticks() -> String {
    "ticks".into()
}
fn sixty_four() -> usize {
    64
}

fn three_usize() -> usize {
    3
}

/// A pipeline file that parsed, with its unknown keys and unknown words (see
/// [`read::Read`]: such a config must not be run).
pub type Loaded = read::Read<PipelineConfig>;

impl PipelineConfig {
    /// Reads and parses a pipeline file. Unknown keys do not fail parsing; they are
    /// returned so the caller can report them together with every other problem.
    pub fn load(path: &Path) -> crate::error::Result<Loaded> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading pipeline {}", path.display()))?;
        let mut loaded = Self::parse(&text).with_context(|| format!("in {}", path.display()))?;
        loaded.value.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(loaded)
    }

    /// Parses a pipeline file (see [`read::read`]: unknown keys and unknown words of
    /// enum-valued settings are collected, not fatal).
    pub fn parse(text: &str) -> crate::error::Result<Loaded> {
        read::read(text)
    }

    /// Resolves a path from the file against the file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    pub fn group(&self) -> String {
        self.source.group.clone().unwrap_or_else(|| format!("tickflare-{}", self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unknown_word_is_reported_at_its_key_and_the_file_still_read() {
        let text = r#"name = "t"
[source]
topic = "ticks"
schema = "s.json"
key = "k"
time = "t"
[model]
kind = "svm"
features = ["x"]
target = "x"
horizon = 1
drift = "cusum"
scope = "per_key"
[sink]
topic = "o"
dead_letter_topic = "d"
delivery = "exactly"
"#;
        let l = PipelineConfig::parse(text).unwrap();
        let keys: Vec<&str> = l.unknown_words.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["model.kind", "model.drift", "sink.delivery"]);
        assert_eq!(l.unknown_words[0].1, "\"svm\" is not one of linear, mlp, rls, lstm, cnn1d");
        assert_eq!(l.value.model.scope, choice::Scope::PerKey);
        // Settings not given (or dropped as unknown words) take their documented defaults.
        let m = &PipelineConfig::parse(&text.replace("scope = \"per_key\"\n", "")).unwrap().value.model;
        assert_eq!([m.kind.as_str(), m.drift.as_str()], ["linear", "none"]);
        let words = [m.optimizer.as_str(), m.loss.as_str(), m.activation.as_str(), m.replay_policy.as_str(), m.drift_action.as_str()];
        assert_eq!(words, ["auto", "mse", "relu", "recent", "log"]);
        let words = [m.scope.as_str(), m.baseline.as_str(), m.output.as_str(), m.aggregate.as_str(), m.aggregate_loss.as_str(), m.device.as_str()];
        assert_eq!(words, ["global", "none", "level", "none", "absolute", "cpu"]);
        // A mistake that is not an unknown word still stops parsing, with its key.
        let e = PipelineConfig::parse(&text.replace("horizon = 1", "horizon = \"soon\"")).err().unwrap();
        assert!(format!("{e:#}").contains("model.horizon"), "{e:#}");
    }

    /// `max_batch_idle_ms`: milliseconds (0 by default: close once none is waiting)
    /// or "off"; any other word is refused at its key.
    #[test]
    fn batch_idle_is_milliseconds_or_off() {
        let text = "name = \"t\"\n[source]\ntopic = \"ticks\"\nschema = \"s.json\"\nkey = \"k\"\ntime = \"t\"\n\
                    IDLE[model]\nfeatures = [\"x\"]\ntarget = \"x\"\nhorizon = 1\n[sink]\ntopic = \"o\"\ndead_letter_topic = \"d\"\n";
        let idle = |line: &str| PipelineConfig::parse(&text.replace("IDLE", line)).map(|l| l.value.source.max_batch_idle_ms);
        assert_eq!(idle("").unwrap(), Some(0));
        assert_eq!(idle("max_batch_idle_ms = 3\n").unwrap(), Some(3));
        assert_eq!(idle("max_batch_idle_ms = \"off\"\n").unwrap(), None);
        let e = format!("{:#}", idle("max_batch_idle_ms = \"soon\"\n").err().unwrap());
        assert!(e.contains("max_batch_idle_ms") && e.contains("\"off\""), "{e}");
        assert!(idle("max_batch_idle_ms = -1\n").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ns("1s"), Ok(1_000_000_000));
        assert_eq!(parse_duration_ns("250ms"), Ok(250_000_000));
        assert_eq!(parse_duration_ns("1d"), Ok(86_400_000_000_000));
        assert!(parse_duration_ns("3 weeks").is_err());
        assert!(parse_duration_ns("0s").is_err());
    }
}

//! The pipeline file (TOML): one section per stage. Every field is documented here;
//! the README's config reference is written from these comments.
//!
//! Loading collects *every* unknown key (not just the first) so `validate` can report
//! them all at once; semantic checks live in [`crate::pipeline::build`].

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

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
    /// processed at once instead of waiting out `max_batch_wait_ms`. 0 turns it off.
    #[serde(default = "two_ms")]
    pub max_batch_idle_ms: u64,
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
/// `model.features` and `model.season` (see `src/pipeline/series.rs`).
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

/// `[model]`: the online regression model.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelConfig {
    /// Model kind: `linear` (SGD/AdamW) or `rls` (recursive least squares).
    #[serde(default = "linear")]
    pub kind: String,
    /// `auto` (normalised LMS for `linear`, AdamW for the networks), `sgd`, `adamw`
    /// or `nlms` (normalised LMS, linear only: scale-free steps).
    #[serde(default = "auto")]
    pub optimizer: String,
    /// Learning rate.
    #[serde(default = "lr")]
    pub learning_rate: f64,
    /// `linear`, `mlp`: `mse`, `huber` or `hl_gauss` (classification over bins);
    /// sequence models: `mse` or `huber`.
    #[serde(default = "mse")]
    pub loss: String,
    /// `hl_gauss`: number of bins.
    #[serde(default = "fifty_one")]
    pub hl_bins: usize,
    /// `hl_gauss`: the bins' range `[low, high]`; omitted: from the first
    /// `hl_auto_n` labels (±10 % of their span).
    pub hl_range: Option<[f64; 2]>,
    /// `hl_gauss`: labels used to find the range automatically.
    #[serde(default = "hundred_usize")]
    pub hl_auto_n: usize,
    /// `huber`: the error beyond which the loss grows linearly.
    #[serde(default = "one")]
    pub huber_delta: f64,
    /// `mlp`: hidden layer sizes.
    #[serde(default = "hidden")]
    pub hidden: Vec<usize>,
    /// `lstm`, `cnn1d`: rows of the key's history fed as one sequence (the model
    /// sees the last `window` feature rows, oldest first); other models ignore it.
    #[serde(default = "one_usize")]
    pub window: usize,
    /// `cnn1d`: kernel width in rows.
    #[serde(default = "three_usize")]
    pub kernel: usize,
    /// `mlp`: `relu` or `tanh`.
    #[serde(default = "relu")]
    pub activation: String,
    /// Seed of the initial weights (models with random initialisation).
    #[serde(default)]
    pub seed: u64,
    /// Standardise features and target with running mean/variance.
    #[serde(default)]
    pub normalize: bool,
    /// Past labelled examples replayed after each new label (0 = off).
    #[serde(default)]
    pub replay: usize,
    /// Replay buffer size.
    #[serde(default = "thousand")]
    pub replay_capacity: usize,
    /// `recent` (last K) or `reservoir` (uniform over all seen).
    #[serde(default = "recent")]
    pub replay_policy: String,
    /// C-Mixup augmentation: one extra update per label on a mix with a past example
    /// whose target is close (partners from the last `replay_capacity` labels).
    #[serde(default)]
    pub mixup: bool,
    /// C-Mixup: λ ~ Beta(α, α).
    #[serde(default = "two")]
    pub mixup_alpha: f64,
    /// C-Mixup: Gaussian kernel bandwidth on target distance, in target units.
    #[serde(default = "one")]
    pub mixup_bandwidth: f64,
    /// Cap on live per-key models (`scope = "per_key"`); the least recently used is
    /// evicted (and counted) when a new key needs one. 0 = no cap.
    #[serde(default)]
    pub max_live_models: usize,
    /// `scope = "global"`: rows whose offsets fall in one block of N (offset / N)
    /// are predicted with the model as of the block's start, and the labels they bring
    /// are learned together (one `update_batch`) when the block ends — so a device gets
    /// batches, and the output still does not depend on fetch boundaries. 0 = off
    /// (every label learned at once, row by row).
    #[serde(default)]
    pub update_block: u64,
    /// Drift detector on the absolute residuals: `none`, `page_hinkley`, `adwin`.
    #[serde(default = "none")]
    pub drift: String,
    /// On drift: `log`, `reset_optimizer` or `raise_lr`.
    #[serde(default = "log")]
    pub drift_action: String,
    /// Page-Hinkley δ (tolerated mean increase) / ADWIN confidence δ.
    #[serde(default = "drift_delta")]
    pub drift_delta: f64,
    /// Page-Hinkley threshold λ, in units of the residual.
    #[serde(default = "drift_threshold")]
    pub drift_threshold: f64,
    /// `raise_lr`: learning-rate multiplier…
    #[serde(default = "ten")]
    pub drift_lr_factor: f64,
    /// …for this many updates.
    #[serde(default = "hundred")]
    pub drift_lr_updates: u64,
    /// `rls`: forgetting factor λ in (0, 1]; 1 weighs all history equally.
    #[serde(default = "one")]
    pub forgetting_factor: f64,
    /// `rls`: ridge regularization δ (the initial P is I/δ).
    #[serde(default = "milli")]
    pub regularization: f64,
    /// Season length in rows of a key for the seasonal-naive baseline (e.g. 7 for
    /// daily data); needs a row horizon no longer than the season.
    pub season: Option<u32>,
    /// Feature columns (of the SQL output) fed to the model, in order.
    pub features: Vec<String>,
    /// Column (of the SQL output) to predict.
    pub target: String,
    /// How far ahead: an integer number of rows of the same key, or a duration
    /// string such as `"500ms"`, `"1s"`, `"5m"`, `"1h"`, `"1d"`.
    pub horizon: Horizon,
    /// `global` (one model per input partition) or `per_key`.
    #[serde(default = "global")]
    pub scope: String,
    /// What the model learns relative to: `none` (the target itself), `persistence`
    /// (y[t+h] − y[t]) or `seasonal` (y[t+h] − the seasonal-naive forecast; persistence
    /// until a season of history exists). The forecast adds the baseline back, so a
    /// model that has learned nothing forecasts the baseline.
    #[serde(default = "none")]
    pub baseline: String,
    /// What is published and scored: `level` (the target's value at t+h) or `change`
    /// (its change from the value at t: y[t+h] − y[t]; persistence then forecasts 0).
    #[serde(default = "level")]
    pub output: String,
    /// Online aggregation of the model with reference forecasters: `none`, `mlpoly`
    /// (polynomially weighted, opera's MLpol) or `adahedge` (exponentially weighted
    /// with a self-tuned rate). The published forecast is the weighted mixture.
    #[serde(default = "none")]
    pub aggregate: String,
    /// The loss the aggregation weights follow (linearised): `absolute` or `square`.
    #[serde(default = "absolute")]
    pub aggregate_loss: String,
    /// The aggregated experts: `model` (the learned model), `persistence`,
    /// `seasonal` (needs `season`), `zero` (forecasts no change in the published
    /// units) and any numeric column of the feature SQL output, read as a forecast in
    /// the published units (e.g. a microprice column with `output = "change"`).
    #[serde(default = "default_experts")]
    pub experts: Vec<String>,
    /// Divergence guard: a model forecast further than `guard` × the key's mean
    /// absolute baseline error from the baseline (or not finite) is replaced by the
    /// baseline and counted (`model_fallbacks`); a non-finite one also rebuilds the
    /// model. 0 turns the guard off.
    #[serde(default = "twenty")]
    pub guard: f64,

    /// `cpu`, `cuda` or `auto`.
    #[serde(default = "cpu")]
    pub device: String,
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
    #[serde(default = "idempotent")]
    pub delivery: String,
    /// `transactional.id` for `delivery = "transactional"`: stable across restarts of
    /// one daemon, distinct between daemons. Default `tickflare-<name>`.
    pub transactional_id: Option<String>,
}

fn idempotent() -> String {
    "idempotent".into()
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

/// Prediction horizon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Horizon {
    Rows(u32),
    Nanos(i64),
}

impl<'de> Deserialize<'de> for Horizon {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Rows(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Rows(n) if n >= 1 && n <= u32::MAX as i64 => Ok(Horizon::Rows(n as u32)),
            Raw::Rows(n) => Err(serde::de::Error::custom(format!("horizon {n} rows must be >= 1"))),
            Raw::Text(s) => parse_duration_ns(&s).map(Horizon::Nanos).map_err(serde::de::Error::custom),
        }
    }
}

impl std::fmt::Display for Horizon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Horizon::Rows(n) => write!(f, "{n} rows"),
            Horizon::Nanos(ns) => write!(f, "{}ms", *ns as f64 / 1e6),
        }
    }
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
    if !(ns >= 1.0 && ns < 9.2e18) {
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
fn two_ms() -> u64 {
    2
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
fn linear() -> String {
    "linear".into()
}
impl ModelConfig {
    /// Feature rows one model input spans: `window` for the sequence models (LSTM,
    /// CNN), 1 for the rest.
    pub fn input_rows(&self) -> usize {
        if matches!(self.kind.as_str(), "lstm" | "cnn1d") {
            self.window.max(1)
        } else {
            1
        }
    }
}

fn lr() -> f64 {
    0.01
}
fn two() -> f64 {
    2.0
}
fn fifty_one() -> usize {
    51
}
fn hundred_usize() -> usize {
    100
}
fn one_usize() -> usize {
    1
}
fn three_usize() -> usize {
    3
}
fn recent() -> String {
    "recent".into()
}
fn none() -> String {
    "none".into()
}
fn log() -> String {
    "log".into()
}
fn drift_delta() -> f64 {
    0.005
}
fn drift_threshold() -> f64 {
    50.0
}
fn ten() -> f64 {
    10.0
}
fn mse() -> String {
    "mse".into()
}
fn relu() -> String {
    "relu".into()
}
fn hidden() -> Vec<usize> {
    vec![32]
}
fn one() -> f64 {
    1.0
}
fn milli() -> f64 {
    1e-3
}
fn level() -> String {
    "level".into()
}
fn absolute() -> String {
    "absolute".into()
}
fn twenty() -> f64 {
    20.0
}
fn default_experts() -> Vec<String> {
    vec!["model".into(), "persistence".into(), "seasonal".into()]
}
fn global() -> String {
    "global".into()
}
fn cpu() -> String {
    "cpu".into()
}

/// A config that parsed, plus every key in it that tickflare does not know.
pub struct Loaded {
    pub config: PipelineConfig,
    pub unknown_keys: Vec<String>,
}

impl PipelineConfig {
    /// Reads and parses a pipeline file. Unknown keys do not fail parsing; they are
    /// returned so the caller can report them together with every other problem.
    pub fn load(path: &Path) -> anyhow::Result<Loaded> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading pipeline {}", path.display()))?;
        let mut loaded = Self::parse(&text).with_context(|| format!("in {}", path.display()))?;
        loaded.config.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(loaded)
    }

    pub fn parse(text: &str) -> anyhow::Result<Loaded> {
        let de = toml::Deserializer::new(text);
        let mut unknown_keys = Vec::new();
        let config: PipelineConfig = serde_ignored::deserialize(de, |path| {
            unknown_keys.push(path.to_string());
        })?;
        Ok(Loaded { config, unknown_keys })
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
    fn durations() {
        assert_eq!(parse_duration_ns("1s"), Ok(1_000_000_000));
        assert_eq!(parse_duration_ns("250ms"), Ok(250_000_000));
        assert_eq!(parse_duration_ns("1d"), Ok(86_400_000_000_000));
        assert!(parse_duration_ns("3 weeks").is_err());
        assert!(parse_duration_ns("0s").is_err());
    }
}

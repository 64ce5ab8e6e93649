//! Backtests: one pass over a time range of input records through the live decode →
//! features → model → scoring → encoding code, once per model configuration
//! ("lane"). Records come from a topic ([`topic`]: outputs to shadow topics) or
//! straight from files ([`file`]: no broker, outputs to Parquet files beside the
//! report, memory bounded whatever the file's size).
//!
//! The range is by record timestamp: `[from, to)`. With a warm-up (`warmup_from`),
//! records in `[warmup_from, from)` teach the models — like a model that was already
//! live — but are neither scored nor published.

mod file;
mod topic;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use crate::error::Context;

use super::build::Built;
use super::summary::Summary;
use super::batch::Batch;
use crate::sink::file::FileSink;
use crate::sink::kafka::KafkaSink;
use crate::state::score::LabelLog;
use crate::state::PartitionState;
use crate::telemetry::events::PipelineMetrics;

/// What to replay and where.
#[derive(Debug, Clone, Default)]
pub struct BacktestOptions {
    /// Read this file, directory or glob (in time order) instead of a topic; without
    /// it and without real brokers, the pipeline's sample.
    pub input: Option<PathBuf>,
    /// Real brokers holding the input topic (ignored with `input`).
    pub brokers: Option<String>,
    /// Range of record timestamps (ms): `from` inclusive, `to` exclusive.
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// Warm-up start (ms, before `from`): records from here to `from` are learned
    /// from, not scored.
    pub warmup_from_ms: Option<i64>,
    pub max_batch_rows: Option<usize>,
    /// Shadow topics are `<sink.topic>.<suffix>[.<lane>]` (and the same for the DLQ).
    pub shadow_suffix: String,
    /// File backtests write `predictions[.<lane>].parquet` and
    /// `dead_letters[.<lane>].parquet` here (required for files).
    pub output_dir: Option<PathBuf>,
    /// A progress bar on stderr.
    pub progress: bool,
    /// Compute only (benchmarks): outputs are encoded and dropped, no labels kept,
    /// no files written.
    pub discard_outputs: bool,
}

/// One model configuration of a backtest.
pub struct Variant {
    pub name: String,
    pub built: Built,
}

/// What one lane produced.
pub struct LaneResult {
    pub name: String,
    pub model_kind: String,
    /// Where its predictions went: a shadow topic, or a Parquet file's name.
    pub shadow_topic: String,
    pub shadow_dead_letter_topic: String,
    pub summary: Summary,
    /// Every labelled prediction, per input partition.
    pub labels: BTreeMap<i32, LabelLog>,
}

/// The whole backtest.
pub struct BacktestResult {
    pub lanes: Vec<LaneResult>,
    /// The brokers read, or `"file"`.
    pub brokers: String,
    pub input_topic: String,
    /// Per partition, the offsets read: `[first, end)`.
    pub offsets: BTreeMap<i32, (i64, i64)>,
    /// Records in the range (fed to every lane), before it and after it; of those
    /// before, the ones fed as warm-up.
    pub in_range: u64,
    pub before_range: u64,
    pub after_range: u64,
    pub warmup: u64,
    pub warmup_from_ms: Option<i64>,
    pub elapsed_s: f64,
}

/// Where a lane's outputs go.
enum LaneSink {
    Kafka(KafkaSink),
    File(Box<FileSink>),
    Discard(crate::sink::Discard),
}

struct Lane {
    name: String,
    built: Built,
    sink: LaneSink,
    batch: Batch,
    /// Records fed since the last [`Lane::process`] (by [`feed`], or a whole batch
    /// from the file reader's thread): the batch after `batch`'s.
    fed: BTreeMap<i32, crate::source::batch::PartitionInput>,
    metrics: PipelineMetrics,
    /// (predictions, dead letters) as named in the report.
    outputs: (String, String),
}

impl Lane {
    fn new(v: Variant, sink: LaneSink, outputs: (String, String), partitions: impl Iterator<Item = i32>, warmup: bool) -> Self {
        let mut batch = Batch::default();
        let keep_labels = !matches!(sink, LaneSink::Discard(_));
        for p in partitions {
            let score_from = warmup.then_some(i64::MAX);
            let labels = keep_labels.then(LabelLog::default);
            batch.states.insert(p, PartitionState { labels, score_from, ..PartitionState::new(p) });
        }
        let c = &v.built.config;
        let metrics = PipelineMetrics::new(&c.name, &c.source.topic, c.model.kind.as_str());
        Lane { name: v.name, built: v.built, sink, batch, fed: BTreeMap::new(), metrics, outputs }
    }

    /// Scoring starts at `offset` of partition `p` (the first record in range).
    fn start_scoring(&mut self, p: i32, offset: i64) {
        if let Some(s) = self.batch.states.get_mut(&p) {
            if s.score_from == Some(i64::MAX) {
                s.score_from = Some(offset);
            }
        }
    }

    /// Processes the batch fed before the last call, while workers it leaves idle
    /// decode the records fed since; those become the batch of the next call. (One
    /// batch behind what was fed: outputs do not depend on where batches end.)
    async fn process(&mut self) -> crate::error::Result<()> {
        if self.batch.inputs.values().any(|i| !i.is_empty()) {
            let (b, fed, m) = (&mut self.batch, &mut self.fed, &mut self.metrics);
            let r = match &self.sink {
                LaneSink::Kafka(s) => b.process_ahead(&self.built, s, m, None, fed).await,
                LaneSink::File(s) => b.process_ahead(&self.built, &**s, m, None, fed).await,
                LaneSink::Discard(s) => b.process_ahead(&self.built, s, m, None, fed).await,
            };
            r.with_context(|| format!("lane {:?}", self.name))?;
        }
        std::mem::swap(&mut self.batch.inputs, &mut self.fed);
        Ok(())
    }

    /// The last two batches, their acknowledgements, and the lane's result.
    async fn finish(mut self, started: Instant) -> crate::error::Result<LaneResult> {
        self.process().await?;
        self.process().await?;
        self.batch.drain().await?;
        if let LaneSink::File(s) = &self.sink {
            s.finish().with_context(|| format!("lane {:?}", self.name))?;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let mut summary = Summary::from_states(&self.built.config.name, self.batch.states.values(), elapsed, Some(self.built.processor.experts()));
        summary.stage_seconds = self.batch.totals.seconds();
        let labels = self.batch.states.iter_mut().map(|(p, s)| (*p, s.labels.take().unwrap_or_default())).collect();
        Ok(LaneResult {
            name: self.name,
            model_kind: self.built.config.model.kind.as_str().to_string(),
            shadow_topic: self.outputs.0,
            shadow_dead_letter_topic: self.outputs.1,
            summary,
            labels,
        })
    }
}

/// Where a record falls against the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Before,
    Warmup,
    In,
    After,
}

/// Records read, by where they fell against the range.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    in_range: u64,
    before: u64,
    after: u64,
    warmup: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.in_range += o.in_range;
        self.before += o.before;
        self.after += o.after;
        self.warmup += o.warmup;
    }
}

/// One input record of a topic backtest (file backtests feed on their reader thread).
struct Input<'a> {
    partition: i32,
    offset: i64,
    time_ms: Option<i64>,
    key: Option<&'a [u8]>,
    payload: Option<&'a [u8]>,
}

/// Counts a record with event time `ts` by where it falls against the range: `None`
/// outside the range and its warm-up (not fed), else whether it is in the range.
fn count(counts: &mut Counts, ts: Option<i64>, opts: &BacktestOptions) -> Option<bool> {
    match place(ts, opts) {
        Place::Before => {
            counts.before += 1;
            None
        }
        Place::After => {
            counts.after += 1;
            None
        }
        Place::Warmup => {
            counts.warmup += 1;
            Some(false)
        }
        Place::In => {
            counts.in_range += 1;
            Some(true)
        }
    }
}

/// Counts `r` ([`count`]) and, unless it is outside the range (and its warm-up), adds
/// it to every lane's batch (starting the scoring of its partition at the range's
/// first record when there is a warm-up); true when added.
fn feed(lanes: &mut [Lane], counts: &mut Counts, opts: &BacktestOptions, r: Input<'_>) -> bool {
    let Input { partition: p, offset: o, time_ms: ts, key, payload } = r;
    let Some(in_range) = count(counts, ts, opts) else { return false };
    if in_range && opts.warmup_from_ms.is_some() {
        lanes.iter_mut().for_each(|l| l.start_scoring(p, o));
    }
    for lane in lanes.iter_mut() {
        lane.fed
            .entry(p)
            .or_insert_with(|| crate::source::batch::PartitionInput::new(p, lane.built.schema.clone()))
            .push(key, payload, o, ts);
    }
    true
}

fn place(ts: Option<i64>, opts: &BacktestOptions) -> Place {
    let Some(t) = ts else { return Place::In };
    match (opts.from_ms, opts.to_ms) {
        (Some(from), _) if t < from => {
            if opts.warmup_from_ms.is_some_and(|w| t >= w) {
                Place::Warmup
            } else {
                Place::Before
            }
        }
        (_, Some(to)) if t >= to => Place::After,
        _ => Place::In,
    }
}

/// Runs the backtest. `variants[0]` is the pipeline's own `[model]`.
pub async fn backtest(variants: Vec<Variant>, opts: &BacktestOptions) -> crate::error::Result<BacktestResult> {
    let first = variants.first().context("no model configuration to backtest")?;
    let cfg = &first.built.config;
    let brokers = opts.brokers.clone().unwrap_or_else(|| cfg.source.brokers.clone());
    let input = match (&opts.input, brokers.as_str()) {
        (Some(f), _) => Some(f.clone()),
        (None, "embedded") => Some(cfg.resolve(cfg.source.sample.as_ref().context("the embedded broker needs --input or source.sample")?)),
        (None, _) => None,
    };
    match input {
        Some(path) => file::backtest(variants, &path, opts).await,
        None => topic::backtest(variants, &brokers, opts).await,
    }
}

/// The shadow topics of a lane: predictions and dead letters.
pub fn shadow_topics(built: &Built, suffix: &str, lane: Option<&str>) -> (String, String) {
    let tail = match lane {
        Some(l) => format!("{suffix}.{l}"),
        None => suffix.to_string(),
    };
    let s = &built.config.sink;
    (format!("{}.{tail}", s.topic), format!("{}.{tail}", s.dead_letter_topic))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_places() {
        let o = BacktestOptions { from_ms: Some(100), to_ms: Some(200), warmup_from_ms: Some(50), ..Default::default() };
        let got: Vec<Place> = [None, Some(49), Some(50), Some(99), Some(100), Some(199), Some(200)].into_iter().map(|t| place(t, &o)).collect();
        use Place::*;
        assert_eq!(got, [In, Before, Warmup, Warmup, In, In, After]);
        let o = BacktestOptions { from_ms: Some(100), ..Default::default() };
        assert_eq!(place(Some(99), &o), Before);
    }
}

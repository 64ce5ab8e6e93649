//! Per-partition pipeline state: the one unit that a checkpoint will capture.
//!
//! Everything that makes output depend on history lives here — feature look-back,
//! per-key watermarks, pending (not yet labelled) predictions, models, error
//! accumulators and the next input offset — so a partition can move between
//! processes (scale-out) or be restored after a crash as one piece.

pub mod checkpoint;
pub mod score;
pub mod store;

use std::collections::{BTreeMap, HashMap, VecDeque};

use arrow::record_batch::RecordBatch;

use crate::model::aggregate::Aggregator;
use crate::model::keyed::KeyOps;
use crate::model::OnlineModel;
use score::{ErrorStats, LabelLog, Rolling};

/// A prediction waiting for its label.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Pending {
    /// Input offset of the record the prediction was made for.
    pub offset: i64,
    /// Labelled by the first later row of the key at or after this row count…
    pub due_row: u64,
    /// …or at or after this event time (ns), depending on the horizon kind.
    pub due_time: i64,
    pub predicted: f64,
    /// The persistence baseline's forecast: the target's value at prediction time.
    pub persistence: f64,
    /// The seasonal-naive baseline's forecast: the target one season before the
    /// labelled row (when `model.season` is set and enough history exists).
    pub seasonal: Option<f64>,
    /// The baseline the model's output was added to (what it learns relative to).
    #[serde(default)]
    pub base: f64,
}

/// State of one key within a partition.
#[derive(Default)]
pub struct KeyState {
    /// Rows of this key that reached the model stage.
    pub rows: u64,
    /// The partition's row counter when this key was last seen (LRU eviction).
    pub last_used: u64,
    /// Latest event time seen (ns), for lateness.
    pub max_time: Option<i64>,
    pub pending: VecDeque<Pending>,
    /// Feature rows of `pending`, flattened (stride = features × window).
    pub pending_x: VecDeque<f64>,
    /// The key's last `window` feature rows (sequence models), oldest first.
    pub window: VecDeque<f64>,
    /// The key's own model when `scope = "per_key"`.
    pub model: Option<Box<dyn OnlineModel>>,
    /// The last `season` target values (oldest first), for seasonal naive.
    pub history: VecDeque<f64>,
    /// This key's errors: model, persistence, seasonal naive.
    pub errors: [ErrorStats; 3],
    /// This key's last `Rolling::WINDOW` labels.
    pub rolling: Rolling,
    /// The experts' forecasts (levels) of `pending`, flattened (stride = experts).
    pub pending_e: VecDeque<f64>,
    /// The aggregation weights' state (`model.aggregate`).
    pub agg: Option<Aggregator>,
    /// Each expert's errors, by expert name.
    pub expert_errors: BTreeMap<String, ErrorStats>,
    /// Sum and count of |y − baseline| over the key's labels (the divergence guard's scale).
    pub base_abs: f64,
    pub base_n: u64,
    /// The batch in flight's work for this key (empty between batches; not
    /// checkpointed).
    pub ops: KeyBatch,
}

/// A key's share of the batch being processed (see `pipeline::processor::stage`).
#[derive(Default)]
pub struct KeyBatch {
    /// The key has rows in this batch.
    pub active: bool,
    /// Pending predictions the batch's rows have labelled so far (from the front).
    pub labelled: usize,
    /// Index in `pending` of the first prediction whose forecast is not filled in yet.
    pub fill: usize,
    /// The model work queued for the key.
    pub queue: KeyOps,
}

impl KeyBatch {
    pub fn clear(&mut self) {
        self.active = false;
        self.queue.clear();
    }
}

/// Counts of what happened to the partition's records.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    pub messages_in: u64,
    pub predictions_out: u64,
    pub dead_letters: u64,
    pub dead_letters_by_reason: BTreeMap<String, u64>,
    /// The first dead letter of each reason: "partition/offset: detail".
    pub dead_letter_examples: BTreeMap<String, String>,
    pub labelled: u64,
    /// Rows with a NULL feature or target (window warm-up): no prediction made.
    pub warmup: u64,
    /// Rows the feature SQL did not return (a WHERE clause).
    pub filtered: u64,
    /// Per-key models evicted by `model.max_live_models`.
    pub evictions: u64,
    /// Model forecasts replaced by the baseline by the divergence guard.
    #[serde(default)]
    pub model_fallbacks: u64,
}

impl Counters {
    pub fn merge(&mut self, o: &Counters) {
        self.messages_in += o.messages_in;
        self.predictions_out += o.predictions_out;
        self.dead_letters += o.dead_letters;
        for (k, v) in &o.dead_letters_by_reason {
            *self.dead_letters_by_reason.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.dead_letter_examples {
            self.dead_letter_examples.entry(k.clone()).or_insert_with(|| v.clone());
        }
        self.labelled += o.labelled;
        self.warmup += o.warmup;
        self.filtered += o.filtered;
        self.evictions += o.evictions;
        self.model_fallbacks += o.model_fallbacks;
    }

    pub fn dead_letter(&mut self, d: &crate::sink::DeadLetter) {
        self.dead_letters += 1;
        *self.dead_letters_by_reason.entry(d.reason.to_string()).or_default() += 1;
        if !self.dead_letter_examples.contains_key(d.reason) {
            let ex = format!("{}/{}: {}", d.partition, d.offset, d.detail);
            self.dead_letter_examples.insert(d.reason.to_string(), ex);
        }
    }
}

/// A partition's per-key states, by key (a seeded fast hash: keys are looked up
/// several times per record).
pub type KeyMap = HashMap<String, KeyState, foldhash::fast::RandomState>;

/// Everything one input partition carries between batches.
#[derive(Default)]
pub struct PartitionState {
    pub partition: i32,
    /// Next input offset to process.
    pub next_offset: i64,
    /// Last rows per key, prepended to the next batch for the feature SQL.
    pub lookback: Option<RecordBatch>,
    pub keys: KeyMap,
    /// The partition's model when `scope = "global"`.
    pub model: Option<Box<dyn OnlineModel>>,
    pub counters: Counters,
    pub model_error: ErrorStats,
    pub persistence_error: ErrorStats,
    pub seasonal_error: ErrorStats,
    /// Each expert's errors over the partition, by expert name.
    pub expert_error: BTreeMap<String, ErrorStats>,
    /// The partition's last `Rolling::WINDOW` labels.
    pub rolling: Rolling,
    /// Rows that reached the model stage (the LRU clock).
    pub tick: u64,
    /// Models currently held (global or per key).
    pub live_models: usize,
    /// Every labelled prediction, when a backtest asked for them (never checkpointed).
    pub labels: Option<LabelLog>,
    /// Backtest warm-up (never checkpointed): records at offsets below this teach the
    /// models but are neither published nor scored, nor are predictions made at them.
    pub score_from: Option<i64>,
    /// `update_block`: the labelled rows of the current block, learned when it ends.
    pub block: UpdateBlock,
}

/// The labels brought by the rows of one offset block (`model.update_block`), kept
/// until the block ends — across batches, and in checkpoints.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UpdateBlock {
    /// offset / update_block of the block's rows.
    pub block: i64,
    /// The labelled rows' inputs (flattened) and targets.
    pub xs: Vec<f64>,
    pub ys: Vec<f64>,
}

impl PartitionState {
    pub fn new(partition: i32) -> Self {
        PartitionState { partition, ..Default::default() }
    }

    /// Models held in memory for this partition.
    pub fn live_models(&self) -> usize {
        self.live_models
    }

    /// Drift detections of this partition's models.
    pub fn drift_events(&self) -> u64 {
        self.model.as_ref().map_or(0, |m| m.drift_events())
            + self.keys.values().filter_map(|k| k.model.as_ref()).map(|m| m.drift_events()).sum::<u64>()
    }

    /// Predictions still waiting for a label.
    /// The first offset whose outputs count ([`PartitionState::score_from`]; every
    /// offset outside a backtest's warm-up).
    pub fn scores_from(&self) -> i64 {
        self.score_from.unwrap_or(i64::MIN)
    }

    /// Predictions awaiting their label (a backtest's warm-up's not counted: none of
    /// them is published).
    pub fn pending(&self) -> u64 {
        let from = self.scores_from();
        self.keys.values().map(|k| k.pending.iter().filter(|p| p.offset >= from).count() as u64).sum()
    }
}

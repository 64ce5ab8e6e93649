//! The per-partition processing step, free of Kafka: a decoded micro-batch in,
//! predictions and dead letters out, partition state advanced.
//!
//! Order of work for each batch: lateness check (per-key watermark) → feature SQL over
//! look-back + batch → the model stage (`stage`): for each row in offset order, label
//! the key's due pending predictions and update the model on each, then predict for
//! the row. Every step is a function of the rows in offset order, so output does not
//! depend on batch sizes.

mod settle;
mod stage;

use std::time::Instant;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, Int64Type};
use candle_core::Device;

use crate::error::{Error, Result};
use crate::features::{lookback, FeatureEngine};
use crate::model;
use crate::model::experts::Experts;
use crate::pipeline::config::choice::{DeviceChoice, Scope};
use crate::pipeline::config::{Horizon, ModelConfig};
use crate::sink::Outputs;
use crate::source::batch::PartitionInput;
use crate::source::schema::OFFSET_COLUMN;
use crate::state::{KeyState, PartitionState};
use crate::telemetry::events::StageTimings;

/// Columns the processor needs, resolved once.
pub struct Processor {
    /// One feature plan per worker (a plan runs one batch at a time); `engines[0]`
    /// always exists.
    engines: Vec<FeatureEngine>,
    model_cfg: ModelConfig,
    device: Device,
    per_key: bool,
    horizon: Horizon,
    horizon_label: String,
    lateness_ns: i64,
    lookback_rows: usize,
    season: Option<usize>,
    max_live: usize,
    /// `model.update_block` (0 = off).
    update_block: i64,
    window: usize,
    /// In the input (decoded) batch.
    in_key: usize,
    in_time: usize,
    /// In the feature output.
    out_key: usize,
    out_time: usize,
    out_offset: usize,
    out_target: usize,
    out_features: Vec<usize>,
    /// Baseline, published units, aggregated and scored forecasters.
    experts: Experts,
    /// Output columns read as expert forecasts.
    out_expert_cols: Vec<usize>,
    /// The published `target`: the column, or `<column>.change` for changes.
    target_label: String,
    /// `model.bank`: the stacked bank every key's model is a row of.
    bank: Option<model::bank::SharedBank>,
}

impl Processor {
    pub fn new(
        engine: FeatureEngine,
        key: &str,
        time: &str,
        lateness_ms: i64,
        lookback_rows: usize,
        model_cfg: &ModelConfig,
    ) -> Result<Self> {
        let ins = engine.input_schema().clone();
        let outs = engine.output_schema().clone();
        let find = |s: &arrow::datatypes::Schema, name: &str, what: &str, place: &str| {
            s.index_of(name).map_err(|_| Error::Config(format!("{what} column {name:?} is not in the {place}")))
        };
        let (inp, out) = ("input schema", "feature SQL output");
        let out_features = model_cfg
            .features
            .iter()
            .map(|f| find(&outs, f, "model.features", out))
            .collect::<Result<Vec<_>>>()?;
        if out_features.is_empty() {
            return Err(Error::Config("model.features is empty".into()));
        }
        let per_key = model_cfg.scope == Scope::PerKey;
        let device = model::model_device(model_cfg)?;
        let experts = Experts::new(model_cfg, &outs)?;
        let out_expert_cols = experts.columns();
        // A bank's settings are checked wherever it runs; with `device = "auto"` on a
        // machine without a GPU its keys run as the plain per-key LSTMs they are rows
        // of (the same models and checkpoints; the bank's stacked form is ~75× slower
        // on the CPU).
        let mut model_cfg = model_cfg.clone();
        if model_cfg.bank {
            model::check_bank(&model_cfg)?;
            model_cfg.bank = !(model_cfg.device == DeviceChoice::Auto && device.is_cpu());
            if model_cfg.bank && device.is_cpu() {
                tracing::warn!(
                    "model.bank with device = \"cpu\": the stacked bank runs as tensor ops on the CPU, ~75× slower than the \
                     plain per-key LSTMs it holds (device = \"auto\" runs those where no GPU is present)"
                );
            }
        }
        let model_cfg = &model_cfg;
        let bank = match model_cfg.bank {
            true => Some(model::new_bank(model_cfg, out_features.len() * model_cfg.input_rows(), &device)?),
            false => None,
        };
        Ok(Processor {
            target_label: if experts.change { format!("{}.change", model_cfg.target) } else { model_cfg.target.clone() },
            experts,
            out_expert_cols,
            in_key: find(&ins, key, "source.key", inp)?,
            in_time: find(&ins, time, "source.time", inp)?,
            out_key: find(&outs, key, "source.key", out)?,
            out_time: find(&outs, time, "source.time", out)?,
            out_offset: find(&outs, OFFSET_COLUMN, "offset", out)?,
            out_target: find(&outs, &model_cfg.target, "model.target", out)?,
            out_features,
            horizon: model_cfg.horizon,
            horizon_label: model_cfg.horizon.to_string(),
            model_cfg: model_cfg.clone(),
            device,
            per_key,
            lateness_ns: lateness_ms.saturating_mul(1_000_000),
            lookback_rows,
            season: model_cfg.season.map(|m| m as usize),
            max_live: model_cfg.max_live_models,
            update_block: model_cfg.update_block.min(i64::MAX as u64) as i64,
            window: model_cfg.input_rows(),
            bank,
            engines: vec![engine],
        })
    }

    /// Adds feature plans until `workers` partitions can be processed at once.
    pub fn add_workers(&mut self, more: Vec<FeatureEngine>) {
        self.engines.extend(more);
    }

    /// The device models run on, as resolved (`auto` became `cpu` or `cuda`).
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Whether keys are rows of a stacked bank (`model.bank`, unless `auto` found no GPU).
    pub fn banked(&self) -> bool {
        self.bank.is_some()
    }

    /// Partitions this processor can work on at once.
    pub fn workers(&self) -> usize {
        self.engines.len()
    }

    /// A fresh model as the model stage builds one (a checkpoint loads into it).
    pub fn fresh_model(&self) -> Result<Box<dyn model::OnlineModel>> {
        match &self.bank {
            Some(b) => Ok(Box::new(model::bank::BankKey::new(b)?)),
            None => model::build(&self.model_cfg, self.out_features.len() * self.window, &self.device),
        }
    }

    /// The `horizon` and `target` fields of every prediction this processor makes.
    pub fn output_labels(&self) -> (&str, &str) {
        (&self.horizon_label, &self.target_label)
    }

    /// The forecasters behind the published forecast.
    pub fn experts(&self) -> &Experts {
        &self.experts
    }

    pub fn engine(&self) -> &FeatureEngine {
        &self.engines[0]
    }

    /// Processes the batch collected in `input` and clears it.
    pub async fn process(
        &self,
        state: &mut PartitionState,
        input: &mut PartitionInput,
        out: &mut Outputs,
        timings: &mut StageTimings,
    ) -> Result<()> {
        // In place: the model stage may use every worker's core.
        self.process_on(0, self.workers(), state, input, out, timings).await
    }

    /// [`Processor::process`] with worker `worker`'s feature plan (different workers
    /// may process different partitions at the same time) and up to `threads` threads
    /// for the model stage's per-key work (1 when the other workers are busy too).
    pub async fn process_on(
        &self,
        worker: usize,
        threads: usize,
        state: &mut PartitionState,
        input: &mut PartitionInput,
        out: &mut Outputs,
        timings: &mut StageTimings,
    ) -> Result<()> {
        let engine = &self.engines[worker % self.engines.len()];
        let r = self.process_inner(engine, threads, state, input, out, timings).await;
        if let Some(o) = input.last_offset {
            state.next_offset = o + 1;
        }
        input.clear();
        r
    }

    async fn process_inner(
        &self,
        engine: &FeatureEngine,
        threads: usize,
        state: &mut PartitionState,
        input: &mut PartitionInput,
        out: &mut Outputs,
        timings: &mut StageTimings,
    ) -> Result<()> {
        let t0 = Instant::now();
        input.decode();
        timings.decode += t0.elapsed();
        // A backtest's warm-up records (before `score_from`) are fed — models,
        // look-back, watermarks — but neither counted nor published: the counts and
        // the outputs are the range's (the report counts the warm-up apart).
        let from = state.scores_from();
        let mut warm = 0;
        for d in input.dead.drain(..) {
            warm += usize::from(d.offset < from);
            dead_letter(&mut state.counters, out, d, from);
        }
        let batch = input.take_batch();
        let in_scope = |b: &RecordBatch| in_scope(b, from);
        warm += batch.num_rows() - in_scope(&batch);
        state.counters.messages_in += input.messages - warm as u64;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = self.drop_late(state, input, out, batch)?;
        let t0 = Instant::now();
        let (feats, kept) = match engine.compute(state.lookback.as_ref(), &batch).await {
            Ok(f) => {
                self.remember(state, &batch)?;
                (f, in_scope(&batch))
            }
            // A runtime SQL error (a cast overflow, say) is caused by some record's
            // values: find which by running the rows one at a time.
            Err(e) => {
                tracing::debug!(error = %e, "feature SQL failed on the batch; isolating the records");
                self.features_row_by_row(engine, state, input, out, &batch).await?
            }
        };
        timings.features += t0.elapsed();
        state.counters.filtered += (kept - in_scope(&feats)) as u64;
        self.model_stage(state, input, out, &feats, timings, threads)
    }

    /// Adds rows that went through the feature SQL to the partition's look-back.
    fn remember(&self, state: &mut PartitionState, rows: &RecordBatch) -> Result<()> {
        state.lookback =
            Some(lookback::retain_last_per_key(state.lookback.as_ref(), rows, self.in_key, self.lookback_rows)?);
        Ok(())
    }

    /// Runs the feature SQL one record at a time (each with the look-back so far),
    /// dead-lettering records it fails on as `feature_error`; those records do not
    /// enter the look-back. Returns the feature rows and how many records went in
    /// (of those at or after `score_from`: a backtest's warm-up is not counted).
    async fn features_row_by_row(
        &self,
        engine: &FeatureEngine,
        state: &mut PartitionState,
        input: &PartitionInput,
        out: &mut Outputs,
        batch: &RecordBatch,
    ) -> Result<(RecordBatch, usize)> {
        let offsets = batch.column_by_name(OFFSET_COLUMN).expect("decoded batch has _offset").as_primitive::<Int64Type>().clone();
        let from = state.scores_from();
        let mut parts = Vec::new();
        let mut kept = 0;
        for i in 0..batch.num_rows() {
            let row = batch.slice(i, 1);
            match engine.compute(state.lookback.as_ref(), &row).await {
                Ok(f) => {
                    parts.push(f);
                    kept += usize::from(offsets.value(i) >= from);
                    self.remember(state, &row)?;
                }
                Err(e) => {
                    let d = input.dead_letter(offsets.value(i), "feature_error", format!("feature SQL failed on this record: {e}"));
                    dead_letter(&mut state.counters, out, d, from);
                }
            }
        }
        Ok((arrow::compute::concat_batches(engine.output_schema(), &parts)?, kept))
    }

    /// Dead-letters records more than the allowed lateness behind their key's latest
    /// event time; advances the per-key watermarks.
    fn drop_late(
        &self,
        state: &mut PartitionState,
        input: &PartitionInput,
        out: &mut Outputs,
        batch: RecordBatch,
    ) -> Result<RecordBatch> {
        let keys = cast(batch.column(self.in_key), &DataType::Utf8)?;
        let keys = keys.as_string::<i32>();
        let times = cast(batch.column(self.in_time), &DataType::Int64)?;
        let times = times.as_primitive::<Int64Type>();
        let offsets = batch.column_by_name(OFFSET_COLUMN).expect("decoded batch has _offset");
        let offsets = offsets.as_primitive::<Int64Type>();
        let mut keep = Vec::with_capacity(batch.num_rows());
        let mut any_late = false;
        for i in 0..batch.num_rows() {
            let ks = key_state(&mut state.keys, str_or_empty(keys, i));
            let late = match (times.is_valid(i), ks.max_time) {
                (true, Some(m)) => times.value(i) < m.saturating_sub(self.lateness_ns),
                _ => false,
            };
            if late {
                any_late = true;
                let m = ks.max_time.unwrap_or_default();
                let d = input.dead_letter(
                    offsets.value(i),
                    "late",
                    format!(
                        "event time is {} ms behind the key's latest ({} ms allowed)",
                        (m - times.value(i)) / 1_000_000,
                        self.lateness_ns / 1_000_000
                    ),
                );
                let from = state.scores_from();
                dead_letter(&mut state.counters, out, d, from);
            } else if times.is_valid(i) {
                ks.max_time = Some(ks.max_time.map_or(times.value(i), |m| m.max(times.value(i))));
            }
            keep.push(!late);
        }
        if !any_late {
            return Ok(batch);
        }
        Ok(filter_record_batch(&batch, &BooleanArray::from(keep))?)
    }
}

fn str_or_empty(a: &arrow::array::StringArray, i: usize) -> &str {
    if a.is_valid(i) {
        a.value(i)
    } else {
        ""
    }
}

fn key_state<'a>(map: &'a mut crate::state::KeyMap, key: &str) -> &'a mut KeyState {
    if !map.contains_key(key) {
        map.insert(key.to_string(), KeyState::default());
    }
    map.get_mut(key).expect("inserted")
}

/// Counts and publishes the dead letter `d` — unless its record is in a backtest's
/// warm-up (before `from`), which is fed but neither counted nor published.
pub(super) fn dead_letter(counters: &mut crate::state::Counters, out: &mut Outputs, d: crate::sink::DeadLetter, from: i64) {
    if d.offset >= from {
        counters.dead_letter(&d);
        out.dead_letters.push(d);
    }
}

/// Rows of `b` at or after offset `from` (all of them when `from` is `i64::MIN`).
fn in_scope(b: &RecordBatch, from: i64) -> usize {
    if from == i64::MIN {
        return b.num_rows();
    }
    let offsets = b.column_by_name(OFFSET_COLUMN).expect("batches carry _offset").as_primitive::<Int64Type>();
    offsets.values().iter().filter(|&&o| o >= from).count()
}

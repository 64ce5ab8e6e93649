//! The per-partition processing step, free of Kafka: a decoded micro-batch in,
//! predictions and dead letters out, partition state advanced.
//!
//! Order of work for each batch: lateness check (per-key watermark) → feature SQL over
//! look-back + batch → for each row in offset order: label the key's due pending
//! predictions and update the model on each, then predict for the row. Every step is a
//! function of the rows in offset order, so output does not depend on batch sizes.

use std::time::Instant;

use arrow::array::{Array, AsArray, BooleanArray, Float64Array, RecordBatch};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use candle_core::Device;

use crate::error::{Error, Result};
use crate::features::{lookback, FeatureEngine};
use crate::model;
use crate::model::aggregate::Aggregator;
use crate::model::experts::Experts;
use crate::pipeline::config::{Horizon, ModelConfig};
use crate::sink::{Outputs, PredictionRef};
use crate::source::batch::PartitionInput;
use crate::source::schema::OFFSET_COLUMN;
use crate::state::score::{ErrorStats, Scored};
use crate::state::{KeyState, Pending, PartitionState};
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
        let per_key = match model_cfg.scope.as_str() {
            "global" => false,
            "per_key" => true,
            s => return Err(Error::Config(format!("model.scope {s:?} is not one of global, per_key"))),
        };
        let device = model::device(&model_cfg.device)?;
        let experts = Experts::new(model_cfg, &outs)?;
        let out_expert_cols = experts.columns();
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
            window: if matches!(model_cfg.kind.as_str(), "lstm" | "cnn1d") { model_cfg.window.max(1) } else { 1 },
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

    /// Partitions this processor can work on at once.
    pub fn workers(&self) -> usize {
        self.engines.len()
    }

    /// A fresh model as the model stage builds one (a checkpoint loads into it).
    pub fn fresh_model(&self) -> Result<Box<dyn model::OnlineModel>> {
        model::build(&self.model_cfg, self.out_features.len() * self.window, &self.device)
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
        self.process_on(0, state, input, out, timings).await
    }

    /// [`Processor::process`] with worker `worker`'s feature plan: different workers
    /// may process different partitions at the same time.
    pub async fn process_on(
        &self,
        worker: usize,
        state: &mut PartitionState,
        input: &mut PartitionInput,
        out: &mut Outputs,
        timings: &mut StageTimings,
    ) -> Result<()> {
        let engine = &self.engines[worker % self.engines.len()];
        let r = self.process_inner(engine, state, input, out, timings).await;
        if let Some(o) = input.last_offset {
            state.next_offset = o + 1;
        }
        input.clear();
        r
    }

    async fn process_inner(
        &self,
        engine: &FeatureEngine,
        state: &mut PartitionState,
        input: &mut PartitionInput,
        out: &mut Outputs,
        timings: &mut StageTimings,
    ) -> Result<()> {
        state.counters.messages_in += input.messages;
        let t0 = Instant::now();
        input.decode();
        timings.decode += t0.elapsed();
        for d in input.dead.drain(..) {
            state.counters.dead_letter(&d);
            out.dead_letters.push(d);
        }
        let batch = input.decoder.finish();
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = self.drop_late(state, input, out, batch)?;
        let t0 = Instant::now();
        let (feats, kept) = match engine.compute(state.lookback.as_ref(), &batch).await {
            Ok(f) => {
                self.remember(state, &batch)?;
                (f, batch.num_rows())
            }
            // A runtime SQL error (a cast overflow, say) is caused by some record's
            // values: find which by running the rows one at a time.
            Err(e) => {
                tracing::debug!(error = %e, "feature SQL failed on the batch; isolating the records");
                self.features_row_by_row(engine, state, input, out, &batch).await?
            }
        };
        timings.features += t0.elapsed();
        state.counters.filtered += (kept - feats.num_rows()) as u64;
        self.model_stage(state, input, out, &feats, timings)
    }

    /// Adds rows that went through the feature SQL to the partition's look-back.
    fn remember(&self, state: &mut PartitionState, rows: &RecordBatch) -> Result<()> {
        state.lookback =
            Some(lookback::retain_last_per_key(state.lookback.as_ref(), rows, self.in_key, self.lookback_rows)?);
        Ok(())
    }

    /// Runs the feature SQL one record at a time (each with the look-back so far),
    /// dead-lettering records it fails on as `feature_error`; those records do not
    /// enter the look-back. Returns the feature rows and how many records went in.
    async fn features_row_by_row(
        &self,
        engine: &FeatureEngine,
        state: &mut PartitionState,
        input: &PartitionInput,
        out: &mut Outputs,
        batch: &RecordBatch,
    ) -> Result<(RecordBatch, usize)> {
        let offsets = batch.column_by_name(OFFSET_COLUMN).expect("decoded batch has _offset").as_primitive::<Int64Type>().clone();
        let mut parts = Vec::new();
        let mut kept = 0;
        for i in 0..batch.num_rows() {
            let row = batch.slice(i, 1);
            match engine.compute(state.lookback.as_ref(), &row).await {
                Ok(f) => {
                    parts.push(f);
                    kept += 1;
                    self.remember(state, &row)?;
                }
                Err(e) => {
                    let d = input.dead_letter(offsets.value(i), "feature_error", format!("feature SQL failed on this record: {e}"));
                    state.counters.dead_letter(&d);
                    out.dead_letters.push(d);
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
                state.counters.dead_letter(&d);
                out.dead_letters.push(d);
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

    fn model_stage(
        &self,
        state: &mut PartitionState,
        input: &PartitionInput,
        out: &mut Outputs,
        feats: &RecordBatch,
        timings: &mut StageTimings,
    ) -> Result<()> {
        let n = feats.num_rows();
        let keys = cast(feats.column(self.out_key), &DataType::Utf8)?;
        let keys = keys.as_string::<i32>();
        let times = cast(feats.column(self.out_time), &DataType::Int64)?;
        let times = times.as_primitive::<Int64Type>();
        let offsets = feats.column(self.out_offset).as_primitive::<Int64Type>();
        let f64col = |i: usize| -> Result<Float64Array> {
            Ok(cast(feats.column(i), &DataType::Float64)?.as_primitive::<Float64Type>().clone())
        };
        let target = f64col(self.out_target)?;
        let xs = self.out_features.iter().map(|&i| f64col(i)).collect::<Result<Vec<_>>>()?;
        let ecols = self.out_expert_cols.iter().map(|&i| Ok((i, f64col(i)?))).collect::<Result<Vec<_>>>()?;
        let d = xs.len();
        let schema = feats.schema();
        let mut x = vec![0.0; d];
        // Sequence models see the key's last `window` feature rows, flattened.
        let stride = d * self.window;
        let mut xw = vec![0.0; stride];
        let mut lx = vec![0.0; stride];
        let ex = &self.experts;
        let ne = ex.list.len();
        let (mut e, mut le, mut w) = (vec![0.0; ne], vec![0.0; ne], vec![0.0; ne]);
        let PartitionState {
            keys: key_states,
            model: global,
            counters,
            model_error,
            persistence_error,
            seasonal_error,
            expert_error,
            rolling,
            partition,
            tick,
            live_models: live,
            labels,
            score_from,
            ..
        } = state;
        let score_from = score_from.unwrap_or(i64::MIN);
        if let Some(log) = labels.as_mut() {
            if ex.method.is_some() && log.expert_names.is_empty() {
                log.expert_names = ex.names.clone();
            }
        }
        for i in 0..n {
            let offset = offsets.value(i);
            // Non-finite values from the SQL (ln(0), x/0) are bad input, not warm-up.
            let bad = std::iter::once((self.out_target, &target))
                .chain(self.out_features.iter().copied().zip(xs.iter()))
                .find(|(_, c)| c.is_valid(i) && !c.value(i).is_finite());
            if let Some((col, _)) = bad {
                let d = input.dead_letter(
                    offset,
                    "non_finite_feature",
                    format!("feature SQL gave a NaN or infinite {:?}", schema.field(col).name()),
                );
                counters.dead_letter(&d);
                out.dead_letters.push(d);
                continue;
            }
            let key = str_or_empty(keys, i);
            *tick += 1;
            if self.per_key && self.max_live > 0 && *live >= self.max_live && key_states.get(key).is_none_or(|k| k.model.is_none()) {
                // This key will need a model: make room by evicting the least recently
                // used one. Its pending predictions stay; if labelled, a fresh model
                // learns from them.
                if let Some(lru) = key_states.values_mut().filter(|k| k.model.is_some()).min_by_key(|k| k.last_used) {
                    lru.model = None;
                    *live -= 1;
                    counters.evictions += 1;
                }
            }
            let ks = key_state(key_states, key);
            ks.rows += 1;
            ks.last_used = *tick;
            let t = if times.is_valid(i) { times.value(i) } else { i64::MIN };
            let y = target.is_valid(i).then(|| target.value(i));
            if let Some(y) = y {
                // Label every pending prediction of this key that is due.
                while let Some(p) = ks.pending.front().copied() {
                    let due = match self.horizon {
                        Horizon::Rows(_) => ks.rows >= p.due_row,
                        Horizon::Nanos(_) => t != i64::MIN && t >= p.due_time,
                    };
                    if !due {
                        break;
                    }
                    ks.pending.pop_front();
                    for v in lx.iter_mut() {
                        *v = ks.pending_x.pop_front().expect("pending_x holds d values per pending");
                    }
                    for v in le.iter_mut() {
                        *v = ks.pending_e.pop_front().expect("pending_e holds one value per expert");
                    }
                    let slot = if self.per_key { &mut ks.model } else { &mut *global };
                    let m = self.ensure_model(slot, live, stride)?;
                    let t0 = Instant::now();
                    m.update(&lx, y - p.base)?;
                    timings.update += t0.elapsed();
                    ks.base_abs += (y - ex.fallback(p.base, p.persistence)).abs();
                    ks.base_n += 1;
                    if let (Some(method), Some(agg)) = (ex.method, ks.agg.as_mut()) {
                        agg.update(method, ex.loss, &le, y, &mut w);
                        if let Some(log) = labels.as_mut().filter(|_| p.offset >= score_from) {
                            log.weights.extend_from_slice(&w);
                        }
                    }
                    if p.offset < score_from {
                        // Made during a backtest's warm-up: taught the model, not scored.
                        continue;
                    }
                    // Scored in the published units: changes subtract the value at
                    // prediction time from forecasts and label alike.
                    let o = ex.offset(p.persistence);
                    let (yo, last) = (y - o, p.persistence - o);
                    let scored = Scored { model: p.predicted - o, persistence: last, seasonal: p.seasonal.map(|v| v - o), actual: yo };
                    model_error.add(scored.model, yo, last);
                    persistence_error.add(last, yo, last);
                    ks.errors[0].add(scored.model, yo, last);
                    ks.errors[1].add(last, yo, last);
                    if let Some(sn) = scored.seasonal {
                        seasonal_error.add(sn, yo, last);
                        ks.errors[2].add(sn, yo, last);
                    }
                    for (name, idx) in &ex.scored {
                        let v = idx.map_or(p.persistence, |j| le[j]);
                        if v.is_finite() {
                            stats_for(expert_error, name).add(v - o, yo, last);
                            stats_for(&mut ks.expert_errors, name).add(v - o, yo, last);
                        }
                    }
                    rolling.add(scored);
                    ks.rolling.add(scored);
                    if let Some(log) = labels.as_mut() {
                        log.push(key, t, p.offset, scored);
                    }
                    counters.labelled += 1;
                }
            }
            if let (Some(y), Some(m)) = (y, self.season) {
                if ks.history.len() == m {
                    ks.history.pop_front();
                }
                ks.history.push_back(y);
            }
            let all_x = xs.iter().zip(x.iter_mut()).all(|(c, v)| {
                *v = if c.is_valid(i) { c.value(i) } else { f64::NAN };
                c.is_valid(i)
            });
            let (Some(y), true, true) = (y, all_x, t != i64::MIN) else {
                counters.warmup += 1;
                continue;
            };
            if ks.window.len() == stride {
                ks.window.drain(..d);
            }
            ks.window.extend(x.iter().copied());
            if ks.window.len() < stride {
                counters.warmup += 1;
                continue;
            }
            for (dst, src) in xw.iter_mut().zip(ks.window.iter()) {
                *dst = *src;
            }
            // Forecast of y[i + h] one season back: y[i + h − m], i.e. the h-th oldest
            // of the last m values.
            let seasonal = match (self.season, self.horizon) {
                (Some(m), Horizon::Rows(h)) if ks.history.len() == m => ks.history.get(h as usize - 1).copied(),
                _ => None,
            };
            let col = |c: usize| ecols.iter().find(|(j, _)| *j == c).and_then(|(_, a)| a.is_valid(i).then(|| a.value(i)));
            let base = ex.base(y, seasonal, col);
            let fallback = ex.fallback(base, y);
            let slot = if self.per_key { &mut ks.model } else { &mut *global };
            let m = self.ensure_model(slot, live, stride)?;
            let t0 = Instant::now();
            let raw = m.predict(&xw)?;
            timings.predict += t0.elapsed();
            let model_updates = m.updates();
            // The divergence guard: a forecast that is not finite, or absurdly far from
            // the baseline for this key, is replaced by the baseline and counted; a
            // non-finite one means the weights blew up, so the model starts afresh.
            let scale = if ks.base_n > 0 { ks.base_abs / ks.base_n as f64 } else { f64::INFINITY };
            let model_level = if !raw.is_finite() {
                *slot = None;
                *live -= 1;
                counters.model_fallbacks += 1;
                fallback
            } else if ex.guard > 0.0 && (base + raw - fallback).abs() > ex.guard * scale.max(1e-300) {
                counters.model_fallbacks += 1;
                fallback
            } else {
                base + raw
            };
            for (v, kind) in e.iter_mut().zip(&ex.list) {
                *v = ex.level(*kind, model_level, y, seasonal, col);
            }
            let predicted = match ex.method {
                Some(method) => {
                    let agg = ks.agg.get_or_insert_with(|| Aggregator::new(ne));
                    let p = agg.combine(method, &e, &mut w);
                    if p.is_finite() {
                        p
                    } else {
                        model_level
                    }
                }
                None => model_level,
            };
            if offset >= score_from {
                out.push_prediction(&PredictionRef {
                    key,
                    event_time_ns: t,
                    horizon: &self.horizon_label,
                    target: &self.target_label,
                    predicted: predicted - ex.offset(y),
                    model_updates,
                    partition: *partition,
                    offset,
                });
                counters.predictions_out += 1;
            }
            let (due_row, due_time) = match self.horizon {
                Horizon::Rows(h) => (ks.rows + h as u64, i64::MAX),
                Horizon::Nanos(h) => (u64::MAX, t.saturating_add(h)),
            };
            ks.pending.push_back(Pending { offset, due_row, due_time, predicted, persistence: y, seasonal, base });
            ks.pending_x.extend(xw.iter().copied());
            ks.pending_e.extend(e.iter().copied());
        }
        Ok(())
    }
}

/// The named accumulator in `map`, created at its first use (allocates only then).
fn stats_for<'a>(map: &'a mut std::collections::BTreeMap<String, ErrorStats>, name: &str) -> &'a mut ErrorStats {
    if !map.contains_key(name) {
        map.insert(name.to_string(), ErrorStats::default());
    }
    map.get_mut(name).expect("inserted")
}

impl Processor {
    /// The model in `slot`, built first if there is none (counted in `live`).
    fn ensure_model<'a>(
        &self,
        slot: &'a mut Option<Box<dyn model::OnlineModel>>,
        live: &mut usize,
        d: usize,
    ) -> Result<&'a mut Box<dyn model::OnlineModel>> {
        if slot.is_none() {
            *slot = Some(model::build(&self.model_cfg, d, &self.device)?);
            *live += 1;
        }
        Ok(slot.as_mut().expect("just built"))
    }
}

fn str_or_empty(a: &arrow::array::StringArray, i: usize) -> &str {
    if a.is_valid(i) {
        a.value(i)
    } else {
        ""
    }
}

fn key_state<'a>(map: &'a mut std::collections::HashMap<String, KeyState>, key: &str) -> &'a mut KeyState {
    if !map.contains_key(key) {
        map.insert(key.to_string(), KeyState::default());
    }
    map.get_mut(key).expect("inserted")
}

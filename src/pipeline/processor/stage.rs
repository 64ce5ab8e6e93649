//! The model stage of a batch, in three steps over the feature rows:
//!
//! 1. **plan** (rows in offset order): dead-letter non-finite features, label each
//!    key's due pending predictions, keep the key's window, history and warm-up, and
//!    queue the model work — "learn from this row", "predict for this row" — on the
//!    key (`model::keyed`);
//! 2. **run** the queued work key by key, keys on several threads (per-key models with
//!    no LRU limit; otherwise each row's work ran as it was planned);
//! 3. **settle** (`settle.rs`; rows in offset order again): the forecasts through the divergence
//!    guard and the experts, scoring, publishing, pending predictions.
//!
//! A key's model sees the same updates and predictions in the same order as row by
//! row, and every partition-wide sum accumulates in offset order, so the output is
//! bit for bit that of processing one row at a time. With `update_block = N` (global
//! models) the labels of each offset block of N are learned together when the block
//! ends (`end_block`), which depends on offsets only, not on batch boundaries.

use arrow::array::{Array, AsArray, Float64Array, PrimitiveArray, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type};

use super::{dead_letter, key_state, str_or_empty, Processor};
use crate::error::Result;
use crate::model::keyed::{self, Outcome};
use crate::pipeline::config::Horizon;
use crate::sink::Outputs;
use crate::source::batch::PartitionInput;
use crate::model::OnlineModel;
use crate::state::{KeyState, Pending, PartitionState, UpdateBlock};
use crate::telemetry::events::StageTimings;

/// The feature batch's columns the model stage reads.
pub(super) struct Columns {
    pub(super) keys: StringArray,
    pub(super) times: PrimitiveArray<Int64Type>,
    pub(super) offsets: PrimitiveArray<Int64Type>,
    pub(super) target: Float64Array,
    pub(super) xs: Vec<Float64Array>,
    /// Expert forecast columns: (output column, values).
    pub(super) experts: Vec<(usize, Float64Array)>,
}

impl Columns {
    pub(super) fn y(&self, i: usize) -> Option<f64> {
        self.target.is_valid(i).then(|| self.target.value(i))
    }

    pub(super) fn t(&self, i: usize) -> i64 {
        if self.times.is_valid(i) {
            self.times.value(i)
        } else {
            i64::MIN
        }
    }

    pub(super) fn expert(&self, i: usize, c: usize) -> Option<f64> {
        self.experts.iter().find(|(j, _)| *j == c).and_then(|(_, a)| a.is_valid(i).then(|| a.value(i)))
    }
}

/// What the plan decided for one feature row.
#[derive(Clone, Copy)]
pub(super) enum Row {
    /// Dead-lettered (non-finite feature).
    Dead,
    /// `labelled` pending predictions of the key were labelled by this row; then it
    /// was warm-up (no forecast) or was forecast with these baselines.
    Live { labelled: u32, forecast: Option<Baselines> },
}

#[derive(Clone, Copy)]
pub(super) struct Baselines {
    pub(super) seasonal: Option<f64>,
    pub(super) base: f64,
}

impl Processor {
    /// Runs the model stage on the feature rows; `threads` bounds the threads the
    /// queued per-key work may use.
    pub(super) fn model_stage(
        &self,
        state: &mut PartitionState,
        input: &PartitionInput,
        out: &mut Outputs,
        feats: &RecordBatch,
        timings: &mut StageTimings,
        threads: usize,
    ) -> Result<()> {
        let cols = self.columns(feats)?;
        // Per-key models without an LRU limit run after planning, key by key;
        // otherwise (one global model, or evictions that depend on which models
        // exist) each row's work runs as it is planned.
        let queued = self.per_key && self.max_live == 0;
        let mut spent = Outcome::default();
        let r = self.plan(state, input, out, &cols, queued, &mut spent).and_then(|rows| {
            if queued {
                let build = || self.fresh_model();
                let work = state.keys.values_mut().filter(|k| k.ops.queue.queued()).map(|k| (&mut k.ops.queue, &mut k.model)).collect();
                let o = keyed::run_keys(work, threads, &build)?;
                state.live_models = state.live_models + o.built - o.diverged;
                spent.add(o);
            }
            self.settle(state, out, &cols, &rows)
        });
        timings.update += spent.update;
        timings.predict += spent.predict;
        // The batch's work is forgotten whatever happened: none of it outlives the batch.
        for k in state.keys.values_mut() {
            k.ops.clear();
        }
        r
    }

    fn columns(&self, feats: &RecordBatch) -> Result<Columns> {
        let f64col = |i: usize| -> Result<Float64Array> {
            Ok(cast(feats.column(i), &DataType::Float64)?.as_primitive::<Float64Type>().clone())
        };
        Ok(Columns {
            keys: cast(feats.column(self.out_key), &DataType::Utf8)?.as_string::<i32>().clone(),
            times: cast(feats.column(self.out_time), &DataType::Int64)?.as_primitive::<Int64Type>().clone(),
            offsets: feats.column(self.out_offset).as_primitive::<Int64Type>().clone(),
            target: f64col(self.out_target)?,
            xs: self.out_features.iter().map(|&i| f64col(i)).collect::<Result<Vec<_>>>()?,
            experts: self.out_expert_cols.iter().map(|&i| Ok((i, f64col(i)?))).collect::<Result<Vec<_>>>()?,
        })
    }

    /// Step 1: everything that does not need a forecast, rows in offset order; the
    /// model work queued on the keys (and run at once unless `queued`).
    fn plan(
        &self,
        state: &mut PartitionState,
        input: &PartitionInput,
        out: &mut Outputs,
        cols: &Columns,
        queued: bool,
        spent: &mut Outcome,
    ) -> Result<Vec<Row>> {
        let d = cols.xs.len();
        let stride = d * self.window;
        let mut x = vec![0.0; d];
        let mut lx = vec![0.0; stride];
        let mut plan = Vec::with_capacity(cols.target.len());
        let build = || self.fresh_model();
        // A backtest's warm-up rows (before `score_from`) are fed, not counted.
        let from = state.scores_from();
        let PartitionState { keys: key_states, model: global, counters, tick, live_models: live, block, .. } = state;
        for i in 0..cols.target.len() {
            if self.update_block > 0 {
                let o = self.end_block(block, global, cols.offsets.value(i), stride)?;
                *live += o.built;
                spent.add(o);
            }
            // Non-finite values from the SQL (ln(0), x/0) are bad input, not warm-up.
            let bad = std::iter::once((self.out_target, &cols.target))
                .chain(self.out_features.iter().copied().zip(cols.xs.iter()))
                .find(|(_, c)| c.is_valid(i) && !c.value(i).is_finite());
            if let Some((col, _)) = bad {
                let dl = input.dead_letter(
                    cols.offsets.value(i),
                    "non_finite_feature",
                    format!("feature SQL gave a NaN or infinite {:?}", self.engine().output_schema().field(col).name()),
                );
                dead_letter(counters, out, dl, from);
                plan.push(Row::Dead);
                continue;
            }
            let key = str_or_empty(&cols.keys, i);
            *tick += 1;
            if self.per_key && self.max_live > 0 && *live >= self.max_live && key_states.get(key).is_none_or(|k| k.model.is_none()) {
                // This key will need a model: make room by evicting the least recently
                // used one. Its pending predictions stay; if labelled, a fresh model
                // learns from them. (With an LRU limit every row's work has run.)
                if let Some(lru) = key_states.values_mut().filter(|k| k.model.is_some()).min_by_key(|k| k.last_used) {
                    lru.model = None;
                    *live -= 1;
                    counters.evictions += 1;
                }
            }
            let ks = key_state(key_states, key);
            if !ks.ops.active {
                ks.ops.active = true;
                ks.ops.fill = ks.pending.len();
                ks.ops.labelled = 0;
            }
            ks.rows += 1;
            ks.last_used = *tick;
            let t = cols.t(i);
            let y = cols.y(i);
            let mut labelled = 0u32;
            if let Some(y) = y {
                // Every pending prediction of this key that is due is labelled: the
                // model learns from its row.
                while let Some(p) = ks.pending.get(ks.ops.labelled).copied() {
                    let due = match self.horizon {
                        Horizon::Rows(_) => ks.rows >= p.due_row,
                        Horizon::Nanos(_) => t != i64::MIN && t >= p.due_time,
                    };
                    if !due {
                        break;
                    }
                    ks.ops.labelled += 1;
                    labelled += 1;
                    for v in lx.iter_mut() {
                        *v = ks.pending_x.pop_front().expect("pending_x holds d values per pending");
                    }
                    if self.update_block > 0 {
                        // Learned with the rest of the block's labels when it ends.
                        block.xs.extend_from_slice(&lx);
                        block.ys.push(y - p.base);
                    } else {
                        ks.ops.queue.learn(&lx, y - p.base);
                    }
                }
            }
            if let (Some(y), Some(m)) = (y, self.season) {
                if ks.history.len() == m {
                    ks.history.pop_front();
                }
                ks.history.push_back(y);
            }
            let all_x = cols.xs.iter().zip(x.iter_mut()).all(|(c, v)| {
                *v = if c.is_valid(i) { c.value(i) } else { f64::NAN };
                c.is_valid(i)
            });
            let forecast = match (y, all_x, t != i64::MIN) {
                (Some(y), true, true) => self.window_ready(ks, &x, stride).then(|| {
                    // Forecast of y[i + h] one season back: y[i + h − m], i.e. the h-th
                    // oldest of the last m values.
                    let seasonal = match (self.season, self.horizon) {
                        (Some(m), Horizon::Rows(h)) if ks.history.len() == m => ks.history.get(h as usize - 1).copied(),
                        _ => None,
                    };
                    let base = self.experts.base(y, seasonal, |c| cols.expert(i, c));
                    Baselines { seasonal, base }
                }),
                _ => None,
            };
            match forecast {
                None => counters.warmup += u64::from(cols.offsets.value(i) >= from),
                Some(b) => {
                    let (due_row, due_time) = match self.horizon {
                        Horizon::Rows(h) => (ks.rows + h as u64, i64::MAX),
                        Horizon::Nanos(h) => (u64::MAX, t.saturating_add(h)),
                    };
                    let y = y.expect("forecast rows have a target");
                    // The forecast itself is filled in when the row is settled.
                    let offset = cols.offsets.value(i);
                    ks.pending.push_back(Pending { offset, due_row, due_time, predicted: f64::NAN, persistence: y, seasonal: b.seasonal, base: b.base });
                    let w = ks.window.make_contiguous();
                    ks.pending_x.extend(w.iter().copied());
                    ks.ops.queue.predict(w);
                }
            }
            if !queued && ks.ops.queue.queued() {
                let slot = if self.per_key { &mut ks.model } else { &mut *global };
                let o = ks.ops.queue.run(slot, &build)?;
                *live = *live + o.built - o.diverged;
                spent.add(o);
            }
            plan.push(Row::Live { labelled, forecast });
        }
        Ok(plan)
    }

    /// `update_block`: before the first row of a later block, the finished block's
    /// labels are learned together (one `update_batch` of the global model).
    fn end_block(&self, block: &mut UpdateBlock, global: &mut Option<Box<dyn OnlineModel>>, offset: i64, stride: usize) -> Result<Outcome> {
        let b = offset.div_euclid(self.update_block);
        let mut o = Outcome::default();
        if b == block.block {
            return Ok(o);
        }
        if !block.ys.is_empty() {
            if global.is_none() {
                *global = Some(self.fresh_model()?);
                o.built += 1;
            }
            let t0 = std::time::Instant::now();
            global.as_mut().expect("just built").update_batch(&block.xs, stride, &block.ys)?;
            o.update += t0.elapsed();
            block.xs.clear();
            block.ys.clear();
        }
        block.block = b;
        Ok(o)
    }

    /// Appends a complete feature row to the key's window; true once the window
    /// holds `window` rows.
    fn window_ready(&self, ks: &mut KeyState, x: &[f64], stride: usize) -> bool {
        if ks.window.len() == stride {
            ks.window.drain(..x.len());
        }
        ks.window.extend(x.iter().copied());
        ks.window.len() == stride
    }
}

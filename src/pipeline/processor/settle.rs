//! Step 3 of the model stage: the forecasts through the divergence guard and the
//! experts, scoring against the baselines, publishing, pending predictions — rows
//! in offset order again.

use super::stage::{Baselines, Columns, Row};
use super::{str_or_empty, Processor};
use crate::error::Result;
use crate::model::aggregate::Aggregator;
use crate::sink::{Outputs, PredictionRef};
use crate::state::score::{ErrorStats, Scored};
use crate::state::PartitionState;

impl Processor {
    /// Step 3: scoring and publishing with the forecasts, rows in offset order.
    pub(super) fn settle(&self, state: &mut PartitionState, out: &mut Outputs, cols: &Columns, plan: &[Row]) -> Result<()> {
        let ex = &self.experts;
        let ne = ex.list.len();
        let (mut e, mut le, mut w) = (vec![0.0; ne], vec![0.0; ne], vec![0.0; ne]);
        let score_from = state.scores_from();
        let PartitionState {
            keys: key_states,
            counters,
            model_error,
            persistence_error,
            seasonal_error,
            expert_error,
            rolling,
            partition,
            labels,
            ..
        } = state;
        if let Some(log) = labels.as_mut() {
            if ex.method.is_some() && log.expert_names.is_empty() {
                log.expert_names = ex.names.clone();
            }
        }
        for (i, row) in plan.iter().enumerate() {
            let Row::Live { labelled, forecast } = *row else { continue };
            let key = str_or_empty(&cols.keys, i);
            let ks = key_states.get_mut(key).expect("planned keys exist");
            let t = cols.t(i);
            for _ in 0..labelled {
                let y = cols.y(i).expect("only rows with a target label");
                let p = ks.pending.pop_front().expect("planned labels are pending");
                ks.ops.fill -= 1;
                for v in le.iter_mut() {
                    *v = ks.pending_e.pop_front().expect("pending_e holds one value per expert");
                }
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
                        add_to(expert_error, name, v - o, yo, last);
                        add_to(&mut ks.expert_errors, name, v - o, yo, last);
                    }
                }
                rolling.add(scored);
                ks.rolling.add(scored);
                if let Some(log) = labels.as_mut() {
                    log.push(key, t, p.offset, scored);
                }
                counters.labelled += 1;
            }
            let Some(Baselines { seasonal, base }) = forecast else { continue };
            let y = cols.y(i).expect("forecast rows have a target");
            let offset = cols.offsets.value(i);
            let col = |c: usize| cols.expert(i, c);
            let fallback = ex.fallback(base, y);
            let (raw, model_updates) = ks.ops.queue.next_forecast();
            // The divergence guard: a forecast that is not finite (the model was
            // dropped when it was made), or absurdly far from the baseline for this
            // key, is replaced by the baseline and counted.
            let scale = if ks.base_n > 0 { ks.base_abs / ks.base_n as f64 } else { f64::INFINITY };
            let model_level = if !raw.is_finite() || (ex.guard > 0.0 && (base + raw - fallback).abs() > ex.guard * scale.max(1e-300)) {
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
            ks.pending[ks.ops.fill].predicted = predicted;
            ks.ops.fill += 1;
            ks.pending_e.extend(e.iter().copied());
        }
        Ok(())
    }
}

/// Adds a forecast `v` of label `y` (last value `last`) to the named accumulator in
/// `map`, created at its first use: one lookup, an allocation only then.
fn add_to(map: &mut std::collections::BTreeMap<String, ErrorStats>, name: &str, v: f64, y: f64, last: f64) {
    match map.get_mut(name) {
        Some(s) => s.add(v, y, last),
        None => map.entry(name.to_string()).or_default().add(v, y, last),
    }
}

//! The run summary: printed for people, written as JSON for tools (`--summary-json`).
//! Field names are an interface; add fields, do not rename them.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::state::score::{ErrorStats, ErrorSummary};
use crate::state::{Counters, PartitionState};

#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    pub model: ErrorSummary,
    pub persistence: ErrorSummary,
    /// Present when `model.season` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seasonal_naive: Option<ErrorSummary>,
}

impl Metrics {
    /// Model, persistence and seasonal naive, Theil's U against persistence.
    pub(crate) fn new(m: &ErrorStats, p: &ErrorStats, s: Option<&ErrorStats>) -> Self {
        Metrics {
            model: m.summary_against(Some(p)),
            persistence: p.summary_against(Some(p)),
            seasonal_naive: s.map(|s| s.summary_against(Some(p))),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub pipeline: String,
    pub messages_in: u64,
    pub predictions_out: u64,
    pub dead_letters: u64,
    pub dead_letters_by_reason: BTreeMap<String, u64>,
    pub dead_letter_examples: BTreeMap<String, String>,
    pub labelled: u64,
    pub pending: u64,
    pub warmup: u64,
    pub filtered: u64,
    pub partitions: usize,
    pub model_updates: u64,
    pub drift_events: u64,
    pub evictions: u64,
    pub live_models: usize,
    pub elapsed_s: f64,
    pub messages_per_s: f64,
    /// Time spent in each stage over the run (decode, features, predict, update,
    /// produce — produce includes waiting for the broker's acknowledgements).
    pub stage_seconds: BTreeMap<String, f64>,
    pub metrics: Metrics,
    /// The metrics over each partition's last 1000 labels (merged).
    pub rolling: Metrics,
    /// The same metrics for each key (keys of all partitions; a key seen in several
    /// partitions is merged).
    pub per_key: BTreeMap<String, Metrics>,
    /// Per key, over its last 1000 labels.
    pub per_key_rolling: BTreeMap<String, Metrics>,
}

impl Summary {
    pub fn from_states<'a>(pipeline: &str, states: impl IntoIterator<Item = &'a PartitionState>, elapsed_s: f64) -> Self {
        let mut c = Counters::default();
        let (mut m, mut p, mut sn) = (ErrorStats::default(), ErrorStats::default(), ErrorStats::default());
        let mut keys: BTreeMap<String, [ErrorStats; 3]> = BTreeMap::new();
        let mut keys_rolling: BTreeMap<String, [ErrorStats; 3]> = BTreeMap::new();
        let mut rolling = [ErrorStats::default(); 3];
        let mut seasonal = false;
        let (mut pending, mut parts, mut updates, mut drift, mut live) = (0, 0, 0, 0, 0);
        for s in states {
            c.merge(&s.counters);
            m.merge(&s.model_error);
            p.merge(&s.persistence_error);
            sn.merge(&s.seasonal_error);
            for (a, b) in rolling.iter_mut().zip(&s.rolling.stats()) {
                a.merge(b);
            }
            for (k, ks) in &s.keys {
                let e = keys.entry(k.clone()).or_default();
                for (a, b) in e.iter_mut().zip(&ks.errors) {
                    a.merge(b);
                }
                let e = keys_rolling.entry(k.clone()).or_default();
                for (a, b) in e.iter_mut().zip(&ks.rolling.stats()) {
                    a.merge(b);
                }
                seasonal |= ks.errors[2].n > 0;
            }
            pending += s.pending();
            drift += s.drift_events();
            live += s.live_models();
            parts += 1;
            updates += s.model.as_ref().map_or(0, |m| m.updates());
            updates += s.keys.values().filter_map(|k| k.model.as_ref()).map(|m| m.updates()).sum::<u64>();
        }
        Summary {
            pipeline: pipeline.to_string(),
            messages_in: c.messages_in,
            predictions_out: c.predictions_out,
            dead_letters: c.dead_letters,
            dead_letters_by_reason: c.dead_letters_by_reason,
            dead_letter_examples: c.dead_letter_examples,
            labelled: c.labelled,
            pending,
            warmup: c.warmup,
            filtered: c.filtered,
            partitions: parts,
            model_updates: updates,
            drift_events: drift,
            evictions: c.evictions,
            live_models: live,
            elapsed_s,
            stage_seconds: BTreeMap::new(),
            messages_per_s: if elapsed_s > 0.0 { c.messages_in as f64 / elapsed_s } else { 0.0 },
            metrics: Metrics::new(&m, &p, seasonal.then_some(&sn)),
            rolling: Metrics::new(&rolling[0], &rolling[1], seasonal.then_some(&rolling[2])),
            per_key: keys
                .iter()
                .map(|(k, e)| (k.clone(), Metrics::new(&e[0], &e[1], seasonal.then_some(&e[2]))))
                .collect(),
            per_key_rolling: keys_rolling
                .iter()
                .map(|(k, e)| (k.clone(), Metrics::new(&e[0], &e[1], seasonal.then_some(&e[2]))))
                .collect(),
        }
    }

    /// A few lines for a terminal.
    pub fn human(&self) -> String {
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.6}"));
        let mut s = format!(
            "pipeline {}: {} messages in {:.2}s ({:.0} msg/s) over {} partitions\n  predictions {}  labelled {}  pending {}  warm-up {}  filtered {}  dead letters {}",
            self.pipeline, self.messages_in, self.elapsed_s, self.messages_per_s, self.partitions,
            self.predictions_out, self.labelled, self.pending, self.warmup, self.filtered, self.dead_letters
        );
        for (r, n) in &self.dead_letters_by_reason {
            s.push_str(&format!("\n    dead letters [{r}]: {n}"));
            if let Some(ex) = self.dead_letter_examples.get(r) {
                s.push_str(&format!("  (first: {ex})"));
            }
        }
        s.push_str(&format!("\n  model updates {}  drift events {}", self.model_updates, self.drift_events));
        if !self.stage_seconds.is_empty() {
            let parts: Vec<String> = self.stage_seconds.iter().map(|(k, v)| format!("{k} {v:.3}s")).collect();
            s.push_str(&format!("\n  stage time: {}", parts.join(", ")));
        }
        s.push_str("\n                 MAE          RMSE         SMAPE%       R²           dir.acc      Theil U      n");
        let mut rows = vec![("model", &self.metrics.model), ("persistence", &self.metrics.persistence)];
        if let Some(sn) = &self.metrics.seasonal_naive {
            rows.push(("seasonal naive", sn));
        }
        for (name, e) in rows {
            s.push_str(&format!(
                "\n  {name:<14} {:<12} {:<12} {:<12} {:<12} {:<12} {:<12} {}",
                f(e.mae), f(e.rmse), f(e.smape), f(e.r2), f(e.directional_accuracy), f(e.theil_u), e.n
            ));
        }
        s
    }
}

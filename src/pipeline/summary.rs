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
    /// The other forecasters on the same labels, by name: `learner` (the learned
    /// model alone, when `model` is an aggregation), `zero` (no change), and forecast
    /// columns such as `microprice`.
    #[serde(flatten)]
    pub experts: BTreeMap<String, ErrorSummary>,
}

impl Metrics {
    /// Model, persistence and seasonal naive, Theil's U against persistence.
    pub(crate) fn new(m: &ErrorStats, p: &ErrorStats, s: Option<&ErrorStats>) -> Self {
        Metrics {
            model: m.summary_against(Some(p)),
            persistence: p.summary_against(Some(p)),
            seasonal_naive: s.map(|s| s.summary_against(Some(p))),
            experts: BTreeMap::new(),
        }
    }

    /// The same with the named experts' errors.
    pub(crate) fn with_experts(mut self, e: &BTreeMap<String, ErrorStats>, p: &ErrorStats) -> Self {
        self.experts = e.iter().map(|(k, v)| (k.clone(), v.summary_against(Some(p)))).collect();
        self
    }
}

/// Mean aggregation weights over keys, by expert name (empty without aggregation).
pub fn mean_weights<'a>(names: &[String], aggs: impl IntoIterator<Item = &'a crate::model::aggregate::Aggregator>, method: Option<crate::model::aggregate::Method>) -> BTreeMap<String, f64> {
    let Some(method) = method else { return BTreeMap::new() };
    let mut sum = vec![0.0; names.len()];
    let mut w = vec![0.0; names.len()];
    let ones = vec![1.0; names.len()];
    let mut n = 0;
    for a in aggs {
        if a.len() != names.len() {
            continue;
        }
        a.weights(method, &ones, &mut w);
        sum.iter_mut().zip(&w).for_each(|(s, v)| *s += v);
        n += 1;
    }
    if n == 0 {
        return BTreeMap::new();
    }
    names.iter().zip(sum).map(|(k, s)| (k.clone(), s / n as f64)).collect()
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
    /// Model forecasts replaced by the baseline by the divergence guard.
    pub model_fallbacks: u64,
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
    /// With `model.aggregate`: each expert's current weight, averaged over keys.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub weights: BTreeMap<String, f64>,
    /// The same per key.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub per_key_weights: BTreeMap<String, BTreeMap<String, f64>>,
}

impl Summary {
    /// The summary of `states`; with the experts' names and weighting rule the
    /// aggregation weights are reported too.
    pub fn from_states<'a>(
        pipeline: &str,
        states: impl IntoIterator<Item = &'a PartitionState>,
        elapsed_s: f64,
        experts: Option<&crate::model::experts::Experts>,
    ) -> Self {
        let mut c = Counters::default();
        let mut ex_all: BTreeMap<String, ErrorStats> = BTreeMap::new();
        let mut ex_keys: BTreeMap<String, BTreeMap<String, ErrorStats>> = BTreeMap::new();
        let mut aggs: BTreeMap<String, Vec<&crate::model::aggregate::Aggregator>> = BTreeMap::new();
        let (mut m, mut p, mut sn) = (ErrorStats::default(), ErrorStats::default(), ErrorStats::default());
        let mut keys: BTreeMap<String, [ErrorStats; 3]> = BTreeMap::new();
        let mut keys_rolling: BTreeMap<String, [ErrorStats; 3]> = BTreeMap::new();
        let mut rolling = [ErrorStats::default(); 3];
        let mut seasonal = false;
        let (mut pending, mut parts, mut updates, mut drift, mut live) = (0, 0, 0, 0, 0);
        for s in states {
            c.merge(&s.counters);
            m.merge(&s.model_error);
            for (k, v) in &s.expert_error {
                ex_all.entry(k.clone()).or_default().merge(v);
            }
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
                let e = ex_keys.entry(k.clone()).or_default();
                for (n, v) in &ks.expert_errors {
                    e.entry(n.clone()).or_default().merge(v);
                }
                if let Some(a) = &ks.agg {
                    aggs.entry(k.clone()).or_default().push(a);
                }
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
            model_fallbacks: c.model_fallbacks,
            live_models: live,
            elapsed_s,
            stage_seconds: BTreeMap::new(),
            messages_per_s: if elapsed_s > 0.0 { c.messages_in as f64 / elapsed_s } else { 0.0 },
            metrics: Metrics::new(&m, &p, seasonal.then_some(&sn)).with_experts(&ex_all, &p),
            rolling: Metrics::new(&rolling[0], &rolling[1], seasonal.then_some(&rolling[2])),
            per_key: keys
                .iter()
                .map(|(k, e)| {
                    let m = Metrics::new(&e[0], &e[1], seasonal.then_some(&e[2]));
                    (k.clone(), match ex_keys.get(k) {
                        Some(x) => m.with_experts(x, &e[1]),
                        None => m,
                    })
                })
                .collect(),
            per_key_rolling: keys_rolling
                .iter()
                .map(|(k, e)| (k.clone(), Metrics::new(&e[0], &e[1], seasonal.then_some(&e[2]))))
                .collect(),
            weights: experts
                .map(|x| mean_weights(&x.names, aggs.values().flatten().copied(), x.method))
                .unwrap_or_default(),
            per_key_weights: experts
                .map(|x| {
                    aggs.iter()
                        .map(|(k, a)| (k.clone(), mean_weights(&x.names, a.iter().copied(), x.method)))
                        .filter(|(_, w)| !w.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
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
        s.push_str(&format!(
            "\n  model updates {}  drift events {}  guard fallbacks {}",
            self.model_updates, self.drift_events, self.model_fallbacks
        ));
        if !self.weights.is_empty() {
            let w: Vec<String> = self.weights.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
            s.push_str(&format!("\n  aggregation weights (mean over keys): {}", w.join(", ")));
        }
        if !self.stage_seconds.is_empty() {
            let parts: Vec<String> = self.stage_seconds.iter().map(|(k, v)| format!("{k} {v:.3}s")).collect();
            s.push_str(&format!("\n  stage time: {}", parts.join(", ")));
        }
        s.push_str("\n                 MAE          RMSE         SMAPE%       R²           dir.acc      Theil U      n");
        let mut rows = vec![("model", &self.metrics.model), ("persistence", &self.metrics.persistence)];
        if let Some(sn) = &self.metrics.seasonal_naive {
            rows.push(("seasonal naive", sn));
        }
        for (name, e) in &self.metrics.experts {
            rows.push((name.as_str(), e));
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

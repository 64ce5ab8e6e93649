//! `[model]`: the online regression model's keys, their defaults, and the
//! prediction horizon.

use serde::Deserialize;

use super::choice::{
    Activation, AggLoss, Aggregate, BaselineChoice, DeviceChoice, DriftDetector, DriftResponse, LossKind, ModelKind,
    OptimizerChoice, Output, Precision, ReplayPolicy, Scope,
};
use super::{hundred, parse_duration_ns, thousand, three_usize};

/// `[model]`: the online regression model.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelConfig {
    /// Model kind: `linear` (SGD, AdamW or NLMS), `rls` (recursive least squares),
    /// `mlp`, `lstm` or `cnn1d`.
    #[serde(default)]
    pub kind: ModelKind,
    /// `auto` (normalised LMS for `linear`, AdamW for the networks), `sgd`, `adamw`
    /// or `nlms` (normalised LMS, linear only: scale-free steps).
    #[serde(default)]
    pub optimizer: OptimizerChoice,
    /// Learning rate.
    #[serde(default = "lr")]
    pub learning_rate: f64,
    /// `linear`, `mlp`: `mse`, `huber` or `hl_gauss` (classification over bins);
    /// sequence models: `mse` or `huber`.
    #[serde(default)]
    pub loss: LossKind,
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
    #[serde(default)]
    pub activation: Activation,
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
    #[serde(default)]
    pub replay_policy: ReplayPolicy,
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
    #[serde(default)]
    pub drift: DriftDetector,
    /// On drift: `log`, `reset_optimizer` or `raise_lr`.
    #[serde(default)]
    pub drift_action: DriftResponse,
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
    #[serde(default)]
    pub scope: Scope,
    /// What the model learns relative to: `none` (the target itself), `persistence`
    /// (y[t+h] − y[t]) or `seasonal` (y[t+h] − the seasonal-naive forecast; persistence
    /// until a season of history exists). The forecast adds the baseline back, so a
    /// model that has learned nothing forecasts the baseline.
    #[serde(default)]
    pub baseline: BaselineChoice,
    /// What is published and scored: `level` (the target's value at t+h) or `change`
    /// (its change from the value at t: y[t+h] − y[t]; persistence then forecasts 0).
    #[serde(default)]
    pub output: Output,
    /// Online aggregation of the model with reference forecasters: `none`, `mlpoly`
    /// (polynomially weighted, opera's MLpol) or `adahedge` (exponentially weighted
    /// with a self-tuned rate). The published forecast is the weighted mixture.
    #[serde(default)]
    pub aggregate: Aggregate,
    /// The loss the aggregation weights follow (linearised): `absolute` or `square`.
    #[serde(default)]
    pub aggregate_loss: AggLoss,
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

    /// `cpu`, `cuda` or `auto` (a GPU where present for a bank, else the CPU:
    /// `model::model_device`).
    #[serde(default)]
    pub device: DeviceChoice,
    /// `f64` (default) or `f32` (the networks: `mlp`, `lstm`, `cnn1d`): the float type
    /// the model computes in.
    #[serde(default)]
    pub precision: Precision,
    /// `scope = "per_key"` LSTMs held as one stacked bank per pipeline: a batch's
    /// keys learn and predict in waves, one batched step each — the form for a GPU
    /// (on the CPU the default key-by-key code is far faster). Not with `normalize`,
    /// `replay`, `mixup` or `drift`.
    #[serde(default)]
    pub bank: bool,
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

fn default_experts() -> Vec<String> {
    vec!["model".into(), "persistence".into(), "seasonal".into()]
}

fn drift_delta() -> f64 {
    0.005
}

fn drift_threshold() -> f64 {
    50.0
}

fn fifty_one() -> usize {
    51
}

fn hidden() -> Vec<usize> {
    vec![32]
}

fn hundred_usize() -> usize {
    100
}

fn lr() -> f64 {
    0.01
}

fn milli() -> f64 {
    1e-3
}

fn one() -> f64 {
    1.0
}

fn one_usize() -> usize {
    1
}

fn ten() -> f64 {
    10.0
}

fn twenty() -> f64 {
    20.0
}

fn two() -> f64 {
    2.0
}

impl ModelConfig {
    /// Feature rows one model input spans: `window` for the sequence models (LSTM,
    /// CNN), 1 for the rest.
    pub fn input_rows(&self) -> usize {
        if self.kind.is_sequence() {
            self.window.max(1)
        } else {
            1
        }
    }
}

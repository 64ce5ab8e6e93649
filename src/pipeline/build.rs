//! Builds a pipeline from its file, collecting *every* problem — unknown keys, bad
//! values, schema errors, SQL that does not plan, columns that do not exist, broker
//! and topic problems — each tagged with the config key it concerns.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::DataType;

use super::config::choice::{BaselineChoice, DeviceChoice, DriftDetector, LossKind, ModelKind, OptimizerChoice, Scope};
use super::config::{Delivery, PipelineConfig};
use super::processor::Processor;
use super::series::{self, SeriesOptions, SeriesPlan};
use crate::features::FeatureEngine;
use crate::source::kafka::partition_count;
use crate::source::schema::{TopicSchema, OFFSET_COLUMN};

/// One thing wrong with a pipeline, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Config key (`model.features[1]`), file, or `brokers`.
    pub at: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// A pipeline ready to run.
pub struct Built {
    pub config: PipelineConfig,
    pub schema: Arc<TopicSchema>,
    pub processor: Processor,
    /// Hash of what gives state its meaning (model, features, input schema, key and
    /// time columns): checkpoints from another configuration are refused.
    pub fingerprint: String,
    /// What `[series]` resolved to (frequency, season, features), when present.
    pub series: Option<SeriesPlan>,
}

/// Partitions processed at once: `TICKFLARE_WORKERS`, else the machine's cores (at
/// most 8). Outputs do not depend on it: each partition's output is a function of its
/// records alone.
pub fn workers() -> usize {
    std::env::var("TICKFLARE_WORKERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()).min(8))
        .max(1)
}

/// What the command line adds to a pipeline file.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Replaces `source.sample` (`run --input`); relative to the working directory.
    pub sample: Option<PathBuf>,
    /// `[series]`: the file to read it from and overrides of its keys.
    pub series: SeriesOptions,
}

fn problem(at: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem { at: at.into(), message: message.into() }
}

/// Loads, checks and plans the pipeline at `path`.
pub async fn build(path: &Path) -> Result<Built, Vec<Problem>> {
    build_with(path, &BuildOptions::default()).await
}

/// [`build`] with command-line additions.
pub async fn build_with(path: &Path, opts: &BuildOptions) -> Result<Built, Vec<Problem>> {
    let loaded = PipelineConfig::load(path)
        .map_err(|e| vec![problem(path.display().to_string(), format!("{e:#}"))])?;
    build_loaded(loaded, opts).await
}

/// The pipeline at `path` with `[model]` keys replaced by those of `overrides` (a
/// `[[compare]]` entry or a `--model` file; its `name` key is not a model key).
pub async fn build_variant(path: &Path, overrides: &toml::Table) -> Result<Built, Vec<Problem>> {
    build_variant_with(path, overrides, &BuildOptions::default()).await
}

/// [`build_variant`] with command-line additions.
pub async fn build_variant_with(path: &Path, overrides: &toml::Table, opts: &BuildOptions) -> Result<Built, Vec<Problem>> {
    let at = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| vec![problem(&at, format!("reading: {e}"))])?;
    let mut doc: toml::Table = text.parse().map_err(|e| vec![problem(&at, format!("{e}"))])?;
    doc.remove("compare");
    let model = doc
        .entry("model")
        .or_insert_with(|| toml::Value::Table(Default::default()))
        .as_table_mut()
        .ok_or_else(|| vec![problem("model", "is not a table")])?;
    for (k, v) in overrides.iter().filter(|(k, _)| k.as_str() != "name") {
        model.insert(k.clone(), v.clone());
    }
    let text = toml::to_string(&doc).map_err(|e| vec![problem(&at, e.to_string())])?;
    let mut loaded = PipelineConfig::parse(&text).map_err(|e| vec![problem(&at, format!("{e:#}"))])?;
    loaded.value.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    build_loaded(loaded, opts).await
}

async fn build_loaded(loaded: super::config::Loaded, opts: &BuildOptions) -> Result<Built, Vec<Problem>> {
    let mut probs: Vec<Problem> = loaded.problems().map(|(at, message)| problem(at, message)).collect();
    let mut cfg = loaded.value;
    if let Some(s) = &opts.sample {
        cfg.source.sample = Some(std::path::absolute(s).unwrap_or_else(|_| s.clone()));
    }
    let series = series::apply(&mut cfg, &opts.series).unwrap_or_else(|p| {
        probs.extend(p);
        None
    });
    check_values(&cfg, &mut probs);

    let schema = match TopicSchema::load(&cfg.resolve(&cfg.source.schema)) {
        Ok(s) => Some(Arc::new(s)),
        Err(e) => {
            probs.push(problem("source.schema", format!("{e:#}")));
            None
        }
    };
    let mut engine = None;
    if let Some(s) = &schema {
        for (k, col) in [("source.key", &cfg.source.key), ("source.time", &cfg.source.time)] {
            match s.arrow.field_with_name(col) {
                Err(_) => probs.push(problem(k, format!("column {col:?} is not in schema {:?}", s.name))),
                Ok(f) if k == "source.time" && !matches!(f.data_type(), DataType::Timestamp(..)) => {
                    probs.push(problem(k, format!("column {col:?} must be a timestamp, is {}", f.data_type())))
                }
                Ok(_) => {}
            }
        }
        if !cfg.features.sql.trim().is_empty() {
            match FeatureEngine::plan_keyed(&cfg.features.sql, &cfg.features.table, s.arrow.clone(), Some(&cfg.source.key)).await {
                Ok(e) => engine = Some(e),
                Err(e) => probs.push(problem("features.sql", e.to_string())),
            }
        }
    }
    if let Some(e) = &engine {
        let out = e.output_schema();
        let mut need = |at: String, col: &str| {
            match out.field_with_name(col) {
                Err(_) => probs.push(problem(at, format!("column {col:?} is not in the feature SQL output ({})", names(out)))),
                Ok(f) if at.starts_with("model.") && !f.data_type().is_numeric() => {
                    probs.push(problem(at, format!("column {col:?} is {}, not numeric", f.data_type())))
                }
                Ok(_) => {}
            }
        };
        for (i, f) in cfg.model.features.iter().enumerate() {
            need(format!("model.features[{i}]"), f);
        }
        need("model.target".into(), &cfg.model.target);
        need("source.key".into(), &cfg.source.key);
        need("source.time".into(), &cfg.source.time);
        need("features.sql".into(), OFFSET_COLUMN);
    }
    // Models are built at a key's first complete row: build one now, so a bad model
    // setting is reported here (and by `validate`) with the rest, not a stop mid-run.
    let m = &cfg.model;
    if !m.features.is_empty() {
        if let Ok(device) = crate::model::model_device(m) {
            if let Err(e) = crate::model::build(m, m.features.len() * m.input_rows(), &device) {
                // The build stops at its first error; one already reported at that
                // key by the checks above is not repeated.
                let p = processor_problem(e);
                if !probs.iter().any(|q| q.at == p.at) {
                    probs.push(p);
                }
            }
        }
    }
    if !probs.is_empty() {
        return Err(probs);
    }
    let (schema, engine) = (schema.expect("no problems"), engine.expect("no problems"));
    let mut replicas = Vec::new();
    for _ in 1..workers() {
        replicas.push(engine.replica().await.map_err(|e| vec![problem("features.sql", e.to_string())])?);
    }
    let mut processor = Processor::new(
        engine,
        &cfg.source.key,
        &cfg.source.time,
        cfg.source.allowed_lateness_ms,
        cfg.features.lookback_rows,
        &cfg.model,
    )
    .map_err(|e| vec![processor_problem(e)])?;
    processor.add_workers(replicas);
    // The resolved device, not the configured string: state saved on a GPU by
    // `device = "auto"` is not the state a CPU-only machine's `auto` would make.
    let mut model_cfg = cfg.model.clone();
    model_cfg.device = crate::model::resolved(processor.device());
    // And a bank only where one runs (`auto` without a GPU runs plain LSTMs).
    model_cfg.bank = processor.banked();
    let fingerprint = crate::state::store::sha256(
        format!("{}|{:?}|{:?}|{}|{}", model_text(&model_cfg), cfg.features, schema.arrow, cfg.source.key, cfg.source.time).as_bytes(),
    );
    Ok(Built { config: cfg, schema, processor, fingerprint, series })
}

/// The `[model]` settings as the fingerprint hashes them: their `Debug` form, less
/// `precision` and `bank` at their defaults — the settings came after checkpoints
/// existed, and those still restore (their fingerprints do not move); set, they
/// change it.
fn model_text(m: &crate::pipeline::config::ModelConfig) -> String {
    let mut text = format!("{m:?}");
    if m.precision == crate::pipeline::config::choice::Precision::F64 {
        text = text.replace(", precision: \"f64\"", "");
    }
    if !m.bank {
        text = text.replace(", bank: false", "");
    }
    text
}

/// A processor or model error as a problem: at its config key when it names one
/// (as a `ConfigKey`, or as the first word of a configuration error: "model.x …").
fn processor_problem(e: crate::error::Error) -> Problem {
    match e {
        crate::error::Error::ConfigKey { key, message } => problem(key, message),
        crate::error::Error::Config(m) => match m.split_once(' ') {
            Some((key, rest)) if key.starts_with("model.") && key[6..].chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                problem(key, rest)
            }
            Some((key, rest)) if (key == "kafka:" || key.starts_with("kafka.")) && key.ends_with(':') => problem(key.trim_end_matches(':'), rest),
            _ => problem("model", m),
        },
        e => problem("pipeline", e.to_string()),
    }
}

fn names(s: &arrow::datatypes::Schema) -> String {
    s.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
}

fn check_values(cfg: &PipelineConfig, probs: &mut Vec<Problem>) {
    if cfg.features.sql.trim().is_empty() && cfg.series.is_none() {
        probs.push(problem("features.sql", "missing: give [features] sql, or a [series] table to generate it"));
    }
    if cfg.sink.delivery == Delivery::Transactional && cfg.checkpoint.keep < 2 {
        probs.push(problem("checkpoint.keep", "must be at least 2 with delivery = \"transactional\" (a prepared checkpoint may be discarded)"));
    }
    if cfg.checkpoint.interval_records == 0 {
        probs.push(problem("checkpoint.interval_records", "must be at least 1"));
    }
    let m = &cfg.model;
    if m.window == 0 {
        probs.push(problem("model.window", "must be at least 1"));
    }
    if m.mixup && !(m.mixup_alpha > 0.0 && m.mixup_alpha.is_finite()) {
        probs.push(problem("model.mixup_alpha", "must be a positive number (the Beta(α, α) of the mixing weights)"));
    }
    if m.mixup && !(m.mixup_bandwidth > 0.0 && m.mixup_bandwidth.is_finite()) {
        probs.push(problem("model.mixup_bandwidth", "must be a positive number"));
    }
    match m.drift {
        DriftDetector::PageHinkley if !(m.drift_delta >= 0.0 && m.drift_delta.is_finite()) => {
            probs.push(problem("model.drift_delta", "Page-Hinkley's tolerated increase must be ≥ 0"))
        }
        DriftDetector::PageHinkley if !(m.drift_threshold > 0.0 && m.drift_threshold.is_finite()) => {
            probs.push(problem("model.drift_threshold", "must be a positive number"))
        }
        DriftDetector::Adwin if !(m.drift_delta > 0.0 && m.drift_delta < 1.0) => {
            probs.push(problem("model.drift_delta", "ADWIN's confidence δ must be in (0, 1)"))
        }
        _ => {}
    }
    if m.update_block > 0 && m.scope != Scope::Global {
        probs.push(problem("model.update_block", "applies to scope = \"global\" (per-key models already run key by key)"));
    }
    if m.kind == ModelKind::Cnn1d && (m.kernel == 0 || m.kernel > m.window) {
        probs.push(problem("model.kernel", format!("must be between 1 and model.window ({})", m.window)));
    }
    // The HL-Gauss head's settings, each at its key (the model build stops at the first).
    if m.loss == LossKind::HlGauss && m.hl_bins < 2 {
        probs.push(problem("model.hl_bins", "must be at least 2"));
    }
    if let Some([lo, hi]) = m.hl_range {
        if !(lo < hi && lo.is_finite() && hi.is_finite()) {
            probs.push(problem("model.hl_range", "must be [low, high] with low < high"));
        }
    }
    if let Err(e) = crate::model::loss::Loss::new(m.loss, m.huber_delta) {
        probs.push(problem("model.loss", e.to_string()));
    }
    if m.hidden.contains(&0) {
        probs.push(problem("model.hidden", "layer sizes must be at least 1"));
    }
    if !(m.forgetting_factor > 0.0 && m.forgetting_factor <= 1.0) {
        probs.push(problem("model.forgetting_factor", "must be in (0, 1]"));
    }
    if !(m.regularization > 0.0 && m.regularization.is_finite()) {
        probs.push(problem("model.regularization", "must be a positive number"));
    }
    match (m.season, m.horizon) {
        (Some(0), _) => probs.push(problem("model.season", "must be at least 1")),
        (Some(s), super::config::Horizon::Rows(h)) if h > s => {
            probs.push(problem("model.season", format!("the horizon ({h} rows) must not exceed the season ({s})")))
        }
        (Some(_), super::config::Horizon::Nanos(_)) => {
            probs.push(problem("model.season", "the seasonal-naive baseline needs a horizon in rows"))
        }
        _ => {}
    }
    if m.optimizer == OptimizerChoice::Nlms && m.kind != ModelKind::Linear {
        probs.push(problem("model.optimizer", "\"nlms\" is for kind = \"linear\"; use adamw or sgd"));
    }
    if m.baseline == BaselineChoice::Seasonal && m.season.is_none() {
        probs.push(problem("model.baseline", "\"seasonal\" needs model.season"));
    }
    if !(m.guard >= 0.0 && m.guard.is_finite()) {
        probs.push(problem("model.guard", "must be a non-negative number (0 = off)"));
    }
    if !(m.learning_rate.is_finite() && m.learning_rate > 0.0) {
        probs.push(problem("model.learning_rate", "must be a positive number"));
    }
    if m.device == DeviceChoice::Cuda && !cfg!(feature = "cuda") {
        probs.push(problem("model.device", "this build has no CUDA support (build with --features cuda)"));
    }
    // ([series] fills them, and says why when it cannot.)
    if m.features.is_empty() && cfg.series.is_none() {
        probs.push(problem("model.features", "list at least one feature column"));
    }
    let s = &cfg.source;
    if s.max_batch_rows == 0 {
        probs.push(problem("source.max_batch_rows", "must be at least 1"));
    }
    if s.partitions < 1 {
        probs.push(problem("source.partitions", "must be at least 1"));
    }
    if s.allowed_lateness_ms < 0 {
        probs.push(problem("source.allowed_lateness_ms", "must not be negative"));
    }
    if s.brokers == "embedded" {
        match &s.sample {
            None => probs.push(problem("source.sample", "the embedded broker needs a sample file to seed")),
            Some(p) if !cfg.resolve(p).is_file() => {
                probs.push(problem("source.sample", format!("{} does not exist", cfg.resolve(p).display())))
            }
            Some(_) => {}
        }
    }
    let topics = [("source.topic", &s.topic), ("sink.topic", &cfg.sink.topic), ("sink.dead_letter_topic", &cfg.sink.dead_letter_topic)];
    for (i, (k, t)) in topics.iter().enumerate() {
        if t.is_empty() {
            probs.push(problem(*k, "topic name is empty"));
        }
        if topics[..i].iter().any(|(_, u)| u == t) {
            probs.push(problem(*k, format!("topic {t:?} is used twice")));
        }
    }
}

/// Checks that the brokers answer and that the topics exist with enough partitions.
pub fn check_brokers(cfg: &PipelineConfig, brokers: &str) -> Vec<Problem> {
    // With the `[kafka]` properties: a wrong password or certificate shows here.
    let consumer = match crate::source::kafka::probe(brokers, &cfg.kafka) {
        Ok(c) => c,
        Err(e) => return vec![processor_problem(e)],
    };
    let t = Duration::from_secs(10);
    let mut probs = Vec::new();
    let count = |probs: &mut Vec<Problem>, key: &str, topic: &str| match partition_count(&consumer, topic, t) {
        Ok(0) => {
            probs.push(problem(key, format!("topic {topic:?} does not exist on {brokers}")));
            None
        }
        Ok(n) => Some(n),
        Err(e) => {
            // Why, in librdkafka's words (a TLS certificate or SASL login refused).
            probs.push(problem("source.brokers", crate::source::kafka::probe_failure(&consumer, brokers, e)));
            None
        }
    };
    let input = count(&mut probs, "source.topic", &cfg.source.topic);
    if probs.iter().any(|p| p.at == "source.brokers") {
        return probs;
    }
    for (key, topic) in [("sink.topic", &cfg.sink.topic), ("sink.dead_letter_topic", &cfg.sink.dead_letter_topic)] {
        if let (Some(i), Some(o)) = (input, count(&mut probs, key, topic)) {
            if o < i {
                probs.push(problem(key, format!("topic {topic:?} has {o} partitions, fewer than the input's {i}: each input partition writes to the same output partition")));
            }
        }
    }
    probs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticks() -> &'static Path {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines/market-ticks.toml"))
    }

    /// `model.precision` at its default leaves the fingerprint where it was: the
    /// shipped tick pipeline's is the one the session-13 build (c1b61db) wrote into
    /// its checkpoints' manifests (`tickflare run pipelines/market-ticks.toml
    /// --checkpoint-dir D`), so their checkpoints still restore. `f32` moves it.
    #[tokio::test]
    async fn precision_moves_the_fingerprint_only_when_set() {
        let before = "b1ce210ae766f1b145fc183314a9e3f72809309940e821e1fa118c56bd22249d";
        let built = build(ticks()).await.map_err(|p| format!("{p:?}")).unwrap();
        assert_eq!(built.fingerprint, before);
        let with = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), toml::Value::String(v.to_string()))).collect::<toml::Table>();
        let lstm = |p: &'static str| async move {
            let mut t = with(&[("kind", "lstm"), ("optimizer", "adamw"), ("precision", p)]);
            t.insert("window".into(), toml::Value::Integer(2));
            build_variant(ticks(), &t).await.map_err(|p| format!("{p:?}")).unwrap().fingerprint
        };
        let (f64_print, f32_print) = (lstm("f64").await, lstm("f32").await);
        assert_ne!(f64_print, f32_print);
        assert_ne!(f64_print, before);
        let mut t = with(&[("kind", "lstm"), ("optimizer", "adamw"), ("scope", "per_key")]);
        t.insert("window".into(), toml::Value::Integer(2));
        t.insert("normalize".into(), toml::Value::Boolean(false));
        let plain = build_variant(ticks(), &t).await.map_err(|p| format!("{p:?}")).unwrap().fingerprint;
        t.insert("bank".into(), toml::Value::Boolean(true));
        let banked = build_variant(ticks(), &t).await.map_err(|p| format!("{p:?}")).unwrap().fingerprint;
        assert_ne!(plain, banked);
        // f32 is refused, at its key, for the models that have no f32 code.
        let problems = build_variant(ticks(), &with(&[("precision", "f32")])).await.err().unwrap();
        assert!(problems.iter().any(|p| p.at == "model.precision" && p.message.contains("lstm")), "{problems:?}");
    }

    /// `bank = true` with `device = "auto"` on a machine without a GPU runs the keys as
    /// plain per-key LSTMs: no bank, and the fingerprint of the same configuration
    /// without a bank on the CPU (the same models, the same arithmetic). Settings a
    /// bank refuses are refused there too.
    #[tokio::test]
    async fn an_auto_bank_without_a_gpu_runs_plain_lstms() {
        if candle_core::utils::cuda_is_available() {
            return; // On a GPU machine `auto` takes the bank (checked by gpu-check.sh).
        }
        let lstm = |pairs: &[(&str, toml::Value)]| {
            let mut t: toml::Table = [("kind", "lstm"), ("optimizer", "adamw"), ("scope", "per_key")]
                .iter()
                .map(|(k, v)| (k.to_string(), toml::Value::String(v.to_string())))
                .collect();
            t.insert("window".into(), toml::Value::Integer(2));
            t.insert("normalize".into(), toml::Value::Boolean(false));
            for (k, v) in pairs {
                t.insert(k.to_string(), v.clone());
            }
            t
        };
        let s = |v: &str| toml::Value::String(v.into());
        let auto_bank = build_variant(ticks(), &lstm(&[("bank", toml::Value::Boolean(true)), ("device", s("auto"))])).await.map_err(|p| format!("{p:?}")).unwrap();
        assert!(!auto_bank.processor.banked());
        assert!(auto_bank.processor.device().is_cpu());
        let plain = build_variant(ticks(), &lstm(&[("device", s("cpu"))])).await.map_err(|p| format!("{p:?}")).unwrap();
        assert_eq!(auto_bank.fingerprint, plain.fingerprint);
        // Named "cpu", the bank runs (stacked, on the CPU) and the fingerprint says so.
        let cpu_bank = build_variant(ticks(), &lstm(&[("bank", toml::Value::Boolean(true)), ("device", s("cpu"))])).await.map_err(|p| format!("{p:?}")).unwrap();
        assert!(cpu_bank.processor.banked());
        assert_ne!(cpu_bank.fingerprint, plain.fingerprint);
        // A setting no bank runs is refused with `auto` too.
        let problems = build_variant(ticks(), &lstm(&[("bank", toml::Value::Boolean(true)), ("device", s("auto")), ("normalize", toml::Value::Boolean(true))])).await.err().unwrap();
        assert!(problems.iter().any(|p| p.at == "model.bank" && p.message.contains("normalize")), "{problems:?}");
    }
}

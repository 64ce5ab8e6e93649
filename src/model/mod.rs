//! Online regression models: predict one row, learn from one labelled row.
//!
//! Models are plain structs of candle variables; updates happen one labelled example
//! at a time, in record order, so results never depend on micro-batch boundaries.

pub mod aggregate;
pub mod bank;
pub mod experts;
pub mod keyed;
pub mod kernels;
pub mod linear;
pub mod lstm;
pub mod drift;
pub mod loss;
pub mod mlp;
pub mod plain;
pub mod net;
pub mod optim;
pub mod params;
pub mod rand;
pub mod rls;
pub mod seq;
pub mod snapshot;
pub mod wrappers;

use candle_core::Device;

use crate::error::{Error, Result};
use crate::pipeline::config::choice::{DeviceChoice, DriftDetector, DriftResponse, LossKind, ModelKind, OptimizerChoice, Precision, Scope};
use crate::pipeline::config::ModelConfig;
pub use snapshot::Snapshot;

/// An online regressor.
pub trait OnlineModel: Send {
    /// Predicts the target for one feature row.
    fn predict(&self, x: &[f64]) -> Result<f64>;
    /// Learns from one labelled row; returns the loss before the update.
    fn update(&mut self, x: &[f64], y: f64) -> Result<f64>;
    /// Number of updates applied so far.
    fn updates(&self) -> u64;
    /// The parameters, flattened (weights then bias for linear models).
    fn parameters(&self) -> Result<Vec<f64>>;
    /// Predicts `xs.len() / n` rows at once (row-major); default: one by one.
    fn predict_batch(&self, xs: &[f64], n: usize, out: &mut Vec<f64>) -> Result<()> {
        out.clear();
        for x in xs.chunks(n) {
            out.push(self.predict(x)?);
        }
        Ok(())
    }
    /// One optimizer step on the mean loss of several rows; default: one step per
    /// row. The pipeline updates one labelled row at a time (so results never depend
    /// on batching); this serves mini-batch use and the throughput benchmark.
    fn update_batch(&mut self, xs: &[f64], n: usize, ys: &[f64]) -> Result<()> {
        for (x, y) in xs.chunks(n).zip(ys) {
            self.update(x, *y)?;
        }
        Ok(())
    }
    /// Forgets the optimizer's adaptive state (moments; RLS: the covariance).
    fn reset_optimizer(&mut self) -> Result<()> {
        Ok(())
    }
    /// Multiplies the configured learning rate by `scale` (1 restores it).
    fn set_lr_scale(&mut self, _scale: f64) -> Result<()> {
        Ok(())
    }
    /// Drift detections so far (models wrapped in a drift guard).
    fn drift_events(&self) -> u64 {
        0
    }
    /// The bank and row holding this model when it is a key of a stacked bank
    /// (`model.bank`): such keys run a batch in waves (`keyed::run_keys`).
    fn bank_key(&self) -> Option<(&bank::SharedBank, u32)> {
        None
    }
    /// Writes everything later outputs depend on (weights, optimizer state, buffers,
    /// random-number state). No default: a model that forgot its state would break
    /// crash equivalence silently.
    fn save(&self, s: &mut Snapshot) -> Result<()>;
    /// Reads what `save` wrote into a fresh model built from the same configuration.
    fn load(&mut self, s: &mut Snapshot) -> Result<()>;
}

/// What to do when drift is detected.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DriftAction {
    Log,
    ResetOptimizer,
    /// Multiply the learning rate by `factor` for the next `updates` updates.
    RaiseLr { factor: f64, updates: u64 },
}

enum Detector {
    PageHinkley(drift::PageHinkley),
    Adwin(drift::Adwin),
}

/// Wraps a model: feeds each label's absolute residual (before the update) to a
/// drift detector and applies the configured action on detection.
pub struct DriftGuard {
    inner: Box<dyn OnlineModel>,
    detector: Detector,
    action: DriftAction,
    boost_left: u64,
    events: u64,
}

impl OnlineModel for DriftGuard {
    fn predict(&self, x: &[f64]) -> Result<f64> {
        self.inner.predict(x)
    }

    fn update(&mut self, x: &[f64], y: f64) -> Result<f64> {
        let r = (self.inner.predict(x)? - y).abs();
        let drift = match &mut self.detector {
            Detector::PageHinkley(d) => d.add(r),
            Detector::Adwin(d) => d.add(r),
        };
        if drift {
            self.events += 1;
            tracing::info!(action = ?self.action, updates = self.inner.updates(), "drift detected");
            match self.action {
                DriftAction::Log => {}
                DriftAction::ResetOptimizer => self.inner.reset_optimizer()?,
                DriftAction::RaiseLr { factor, updates } => {
                    self.inner.set_lr_scale(factor)?;
                    self.boost_left = updates;
                }
            }
        }
        let loss = self.inner.update(x, y)?;
        if self.boost_left > 0 {
            self.boost_left -= 1;
            if self.boost_left == 0 {
                self.inner.set_lr_scale(1.0)?;
            }
        }
        Ok(loss)
    }

    fn updates(&self) -> u64 {
        self.inner.updates()
    }

    fn parameters(&self) -> Result<Vec<f64>> {
        self.inner.parameters()
    }

    fn drift_events(&self) -> u64 {
        self.events
    }

    fn save(&self, s: &mut Snapshot) -> Result<()> {
        match &self.detector {
            Detector::PageHinkley(d) => d.save(s),
            Detector::Adwin(d) => d.save(s),
        }
        s.put_int("boost_left", self.boost_left);
        s.put_int("events", self.events);
        s.nested("inner", |s| self.inner.save(s))
    }

    fn load(&mut self, s: &mut Snapshot) -> Result<()> {
        match &mut self.detector {
            Detector::PageHinkley(d) => d.load(s)?,
            Detector::Adwin(d) => d.load(s)?,
        }
        self.boost_left = s.int("boost_left")?;
        self.events = s.int("events")?;
        s.nested("inner", |s| self.inner.load(s))
    }
}

/// Pins candle's CPU thread count once. Without `RAYON_NUM_THREADS`, candle re-reads
/// `/proc/cpuinfo` on every matmul to count physical cores — for one-row online
/// updates that was most of the CPU time. Call before any other thread starts.
pub fn init_cpu_threads() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        // Safe in practice: called first thing in `main`, before any thread exists.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
}

/// The optimizer a config asks for; `auto` is normalised LMS for linear models and
/// AdamW for the networks (both free of scale tuning).
pub fn optimizer(cfg: &ModelConfig) -> linear::Optim {
    match (cfg.optimizer, cfg.kind) {
        (OptimizerChoice::Auto, ModelKind::Linear) | (OptimizerChoice::Nlms, _) => linear::Optim::Nlms,
        (OptimizerChoice::Auto, _) | (OptimizerChoice::AdamW, _) => linear::Optim::AdamW,
        (OptimizerChoice::Sgd, _) => linear::Optim::Sgd,
    }
}

/// An empty stacked bank for `model.bank = true`, after checking the settings allow
/// one: per-key LSTMs without per-key wrappers (normalisation, replay, mixup, drift).
pub fn new_bank(cfg: &ModelConfig, n_features: usize, device: &Device) -> Result<bank::SharedBank> {
    check_bank(cfg)?;
    let window = cfg.window.max(1);
    let b = bank::LstmBank::new(0, window, n_features / window, cfg.hidden.first().copied().unwrap_or(32), &training(cfg)?, dtype(cfg.precision), device)?;
    Ok(std::sync::Arc::new(std::sync::Mutex::new(b)))
}

/// Refuses `model.bank` settings a bank cannot run (checked on every machine, also
/// where `auto` runs the keys as plain LSTMs).
pub fn check_bank(cfg: &ModelConfig) -> Result<()> {
    let refuse = |why: &str| Err(Error::Config(format!("model.bank {why}")));
    if cfg.kind != ModelKind::Lstm {
        return refuse(&format!("holds LSTMs; kind is \"{}\"", cfg.kind));
    }
    if cfg.scope != Scope::PerKey {
        return refuse("stacks per-key models: it needs scope = \"per_key\"");
    }
    if cfg.normalize || cfg.replay > 0 || cfg.mixup || cfg.drift != DriftDetector::None {
        return refuse("keys have no per-key wrappers yet: set normalize = false, replay = 0, mixup = false and drift = \"none\"");
    }
    Ok(())
}

/// candle's dtype for `model.precision`.
fn dtype(p: Precision) -> candle_core::DType {
    match p {
        Precision::F64 => candle_core::DType::F64,
        Precision::F32 => candle_core::DType::F32,
    }
}

/// How the model's network is trained (loss, optimizer, learning rate, seed).
fn training(cfg: &ModelConfig) -> Result<net::Training> {
    Ok(net::Training {
        loss: loss::Loss::new(cfg.loss, cfg.huber_delta)?,
        optim: optimizer(cfg),
        learning_rate: cfg.learning_rate,
        seed: cfg.seed,
    })
}

/// Picks the candle device named by the config.
pub fn device(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda => Ok(Device::new_cuda(0)?),
        DeviceChoice::Auto => Ok(Device::cuda_if_available(0)?),
    }
}

/// The device a model runs on: `cpu` and `cuda` as named; `auto` picks a GPU (where
/// one is present) only for the one model form measured faster there, a stacked LSTM
/// bank (`model.bank`: one kernel launch per wave of keys, ~3× the CPU's best on an
/// H200), and the CPU for the rest — key-by-key networks, global models and linear/RLS
/// ran 15 – 1,000× slower on the GPU than the CPU's plain code (README, GPU).
pub fn model_device(cfg: &ModelConfig) -> Result<Device> {
    match cfg.device {
        DeviceChoice::Auto if !auto_wants_gpu(cfg) => Ok(Device::Cpu),
        choice => device(choice),
    }
}

/// Whether `device = "auto"` looks for a GPU for this model.
fn auto_wants_gpu(cfg: &ModelConfig) -> bool {
    cfg.bank
}

/// The setting that names a resolved device (`auto` resolved; this crate builds no
/// Metal support, so anything not CUDA is the CPU).
pub fn resolved(d: &Device) -> DeviceChoice {
    match d {
        Device::Cuda(_) => DeviceChoice::Cuda,
        _ => DeviceChoice::Cpu,
    }
}

/// The kind of a resolved device: `cpu`, `cuda` or `metal`.
pub fn device_name(d: &Device) -> &'static str {
    match d {
        Device::Cpu => "cpu",
        Device::Cuda(_) => "cuda",
        Device::Metal(_) => "metal",
    }
}

/// Builds a fresh model for `n_features` inputs (wrapped in a drift guard when
/// `model.drift` is set).
pub fn build(cfg: &ModelConfig, n_features: usize, device: &Device) -> Result<Box<dyn OnlineModel>> {
    if cfg.bank {
        // A bank of its own (a pipeline's processor shares one among its keys).
        return Ok(Box::new(bank::BankKey::new(&new_bank(cfg, n_features, device)?)?));
    }
    let mut inner = build_kind(cfg, n_features, device)?;
    if cfg.replay > 0 {
        inner = Box::new(wrappers::Replay::new(inner, n_features, cfg.replay_capacity, cfg.replay, cfg.replay_policy, cfg.seed));
    }
    if cfg.mixup {
        inner = Box::new(wrappers::CMixup::new(inner, n_features, cfg.replay_capacity, cfg.mixup_alpha, cfg.mixup_bandwidth, cfg.seed));
    }
    if cfg.normalize {
        inner = Box::new(wrappers::Normalized::new(inner, n_features));
    }
    let detector = match cfg.drift {
        DriftDetector::None => return Ok(inner),
        DriftDetector::PageHinkley => Detector::PageHinkley(drift::PageHinkley::new(cfg.drift_delta, cfg.drift_threshold, 30)),
        DriftDetector::Adwin => Detector::Adwin(drift::Adwin::new(cfg.drift_delta, 2000)),
    };
    let action = match cfg.drift_action {
        DriftResponse::Log => DriftAction::Log,
        DriftResponse::ResetOptimizer => DriftAction::ResetOptimizer,
        DriftResponse::RaiseLr => DriftAction::RaiseLr { factor: cfg.drift_lr_factor, updates: cfg.drift_lr_updates },
    };
    Ok(Box::new(DriftGuard { inner, detector, action, boost_left: 0, events: 0 }))
}

/// HL-Gauss with its range found from the first `n` labels: until then it predicts
/// their running mean and keeps them; then it builds the net over
/// [min − 10 % span, max + 10 % span] and trains on them in order.
pub struct HlAuto {
    cfg: ModelConfig,
    n_features: usize,
    device: Device,
    n: usize,
    xs: Vec<f64>,
    ys: Vec<f64>,
    inner: Option<Box<dyn OnlineModel>>,
    /// The range the net was built over (once built).
    range: Option<mlp::HlGauss>,
}

fn hl_net(cfg: &ModelConfig, n_features: usize, h: mlp::HlGauss, device: &Device) -> Result<Box<dyn OnlineModel>> {
    let hidden: &[usize] = if cfg.kind == ModelKind::Mlp { &cfg.hidden } else { &[] };
    let t = net::Training { loss: loss::Loss::Mse, ..training(cfg)? };
    if device.is_cpu() {
        // Plain code on the CPU (the same model, see `plain`).
        return Ok(Box::new(plain::PlainHl::new(n_features, hidden, cfg.activation, h, &t)?));
    }
    Ok(Box::new(mlp::MlpModel::with_head(n_features, hidden, cfg.activation, Some(h), &t, candle_core::DType::F64, device)?))
}

impl OnlineModel for HlAuto {
    fn predict(&self, x: &[f64]) -> Result<f64> {
        match &self.inner {
            Some(m) => m.predict(x),
            None if self.ys.is_empty() => Ok(0.0),
            None => Ok(self.ys.iter().sum::<f64>() / self.ys.len() as f64),
        }
    }

    fn update(&mut self, x: &[f64], y: f64) -> Result<f64> {
        if let Some(m) = &mut self.inner {
            return m.update(x, y);
        }
        self.xs.extend_from_slice(x);
        self.ys.push(y);
        if self.ys.len() < self.n {
            return Ok(0.0);
        }
        let (lo, hi) = self.ys.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(*v), b.max(*v)));
        let pad = ((hi - lo) * 0.1).max(1e-9);
        let h = mlp::HlGauss { lo: lo - pad, hi: hi + pad, bins: self.cfg.hl_bins };
        let mut m = hl_net(&self.cfg, self.n_features, h.clone(), &self.device)?;
        self.range = Some(h);
        let mut loss = 0.0;
        for (i, y) in self.ys.iter().enumerate() {
            loss = m.update(&self.xs[i * self.n_features..(i + 1) * self.n_features], *y)?;
        }
        self.inner = Some(m);
        Ok(loss)
    }

    fn updates(&self) -> u64 {
        self.inner.as_ref().map_or(0, |m| m.updates())
    }
    fn parameters(&self) -> Result<Vec<f64>> {
        self.inner.as_ref().map_or(Ok(vec![]), |m| m.parameters())
    }
    fn reset_optimizer(&mut self) -> Result<()> {
        self.inner.as_mut().map_or(Ok(()), |m| m.reset_optimizer())
    }
    fn set_lr_scale(&mut self, s: f64) -> Result<()> {
        self.inner.as_mut().map_or(Ok(()), |m| m.set_lr_scale(s))
    }

    fn save(&self, s: &mut Snapshot) -> Result<()> {
        s.put("xs", self.xs.clone());
        s.put("ys", self.ys.clone());
        if let Some(m) = &self.inner {
            let h = self.range.as_ref().ok_or_else(|| Error::Internal("HL-Gauss net without a range".into()))?;
            s.put("range", vec![h.lo, h.hi]);
            s.nested("inner", |s| m.save(s))?;
        }
        Ok(())
    }

    fn load(&mut self, s: &mut Snapshot) -> Result<()> {
        self.xs = s.array("xs")?.to_vec();
        self.ys = s.array("ys")?.to_vec();
        self.inner = None;
        self.range = None;
        if let Ok(r) = s.array("range") {
            let [lo, hi] = r else { return Err(Error::Checkpoint("HL-Gauss range needs 2 values".into())) };
            let h = mlp::HlGauss { lo: *lo, hi: *hi, bins: self.cfg.hl_bins };
            let mut m = hl_net(&self.cfg, self.n_features, h.clone(), &self.device)?;
            s.nested("inner", |s| m.load(s))?;
            self.inner = Some(m);
            self.range = Some(h);
        }
        Ok(())
    }
}

/// Whether `model.precision = "f32"` has code for this kind (the networks).
pub fn has_f32(kind: ModelKind) -> bool {
    matches!(kind, ModelKind::Lstm | ModelKind::Mlp | ModelKind::Cnn1d)
}

fn build_kind(cfg: &ModelConfig, n_features: usize, device: &Device) -> Result<Box<dyn OnlineModel>> {
    if cfg.precision == Precision::F32 && !has_f32(cfg.kind) {
        return Err(Error::Config(format!("model.precision \"f32\" is for the networks (lstm, mlp, cnn1d); {} runs in f64", cfg.kind)));
    }
    if cfg.precision == Precision::F32 && cfg.loss == LossKind::HlGauss {
        return Err(Error::Config("model.precision \"f32\" is not for loss \"hl_gauss\" (its head runs in f64)".into()));
    }
    if cfg.loss == LossKind::HlGauss {
        if !matches!(cfg.kind, ModelKind::Linear | ModelKind::Mlp) {
            return Err(Error::Config(format!("model.loss \"hl_gauss\" needs kind linear or mlp, not {:?}", cfg.kind)));
        }
        if cfg.hl_bins < 2 {
            return Err(Error::Config("model.hl_bins must be at least 2".into()));
        }
        return match cfg.hl_range {
            Some([lo, hi]) if lo < hi => hl_net(cfg, n_features, mlp::HlGauss { lo, hi, bins: cfg.hl_bins }, device),
            Some(_) => Err(Error::Config("model.hl_range must be [low, high] with low < high".into())),
            None => Ok(Box::new(HlAuto {
                cfg: cfg.clone(),
                n_features,
                device: device.clone(),
                n: cfg.hl_auto_n.max(2),
                xs: vec![],
                ys: vec![],
                inner: None,
                range: None,
            })),
        };
    }
    match cfg.kind {
        ModelKind::Linear => {
            let loss = loss::Loss::new(cfg.loss, cfg.huber_delta)?;
            Ok(Box::new(linear::LinearModel::with_loss(n_features, optimizer(cfg), cfg.learning_rate, loss, device)?))
        }
        // On the CPU the MLP is plain code (the same model, see `plain`).
        ModelKind::Mlp if device.is_cpu() => {
            let (hidden, t) = (&cfg.hidden, training(cfg)?);
            Ok(match cfg.precision {
                Precision::F64 => Box::new(plain::PlainMlp::mlp(n_features, hidden, cfg.activation, &t)?),
                Precision::F32 => Box::new(plain::Plain::<_, f32>::mlp(n_features, hidden, cfg.activation, &t)?),
            })
        }
        ModelKind::Mlp => Ok(Box::new(mlp::MlpModel::with_head(n_features, &cfg.hidden, cfg.activation, None, &training(cfg)?, dtype(cfg.precision), device)?)),
        // On the CPU the LSTM is plain code in f64 or f32 (the same model, see `lstm`).
        ModelKind::Lstm if device.is_cpu() => {
            let window = cfg.window.max(1);
            let (d, hidden, t) = (n_features / window, cfg.hidden.first().copied().unwrap_or(32), training(cfg)?);
            Ok(match cfg.precision {
                Precision::F64 => Box::new(lstm::LstmModel::<f64>::new(window, d, hidden, &t)?),
                Precision::F32 => Box::new(lstm::LstmModel::<f32>::new(window, d, hidden, &t)?),
            })
        }
        // And the CNN (see `plain`).
        ModelKind::Cnn1d if device.is_cpu() => {
            let window = cfg.window.max(1);
            let hidden = cfg.hidden.first().copied().unwrap_or(32);
            let (d, t) = (n_features / window, training(cfg)?);
            Ok(match cfg.precision {
                Precision::F64 => Box::new(plain::PlainCnn::cnn(window, d, hidden, cfg.kernel, &t)?),
                Precision::F32 => Box::new(plain::Plain::<_, f32>::cnn(window, d, hidden, cfg.kernel, &t)?),
            })
        }
        ModelKind::Lstm | ModelKind::Cnn1d => {
            let window = cfg.window.max(1);
            let shape = seq::SeqShape { kind: cfg.kind, window: cfg.window, d: n_features / window, hidden: cfg.hidden.first().copied().unwrap_or(32), kernel: cfg.kernel };
            Ok(Box::new(seq::SeqModel::new(&shape, &training(cfg)?, dtype(cfg.precision), device)?))
        }
        ModelKind::Rls => Ok(Box::new(rls::RlsModel::new(n_features, cfg.forgetting_factor, cfg.regularization, device)?)),
    }
}

/// Tests: `a` and `b` agree element by element to `tol` relative to `b` (absolute
/// below 1).
#[cfg(test)]
pub(crate) fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol * (1.0 + y.abs()))
}

#[cfg(test)]
#[path = "learning_tests.rs"]
mod learning_tests;

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod snapshot_tests;

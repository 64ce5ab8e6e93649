//! A bank of K LSTMs held stacked — each parameter and AdamW moment one [K, …]
//! tensor — so that a wave (at most one row per key) is one batched forward, and a
//! wave of labelled rows one batched backward and optimizer step: the form in which
//! per-key models can use a GPU, where row at a time each key costs a few hundred
//! tiny kernel launches per row. A wave gathers its keys' rows of the stacks
//! (`index_select`), learns on them as autograd leaves, and writes them back
//! (`scatter_set`); keys outside the wave do not move.
//!
//! Every key behaves as its own LSTM fed the same rows: the same seeded start as
//! `lstm::LstmModel` (all keys alike, as a pipeline's per-key models from one
//! configuration), the same cell, loss and AdamW/SGD (per-key step counts for the
//! bias corrections) — tested on the CPU against the plain-code LSTM key by key.
//!
//! In a pipeline (`model.bank = true`) each key's model is a [`BankKey`]: a row of
//! the processor's bank (one for all the partitions it works on). Its checkpoint is
//! the key's rows under the plain LSTM's names, so a key's state moves between a
//! bank and a `LstmModel` unchanged. `keyed::run_keys` runs a batch's bank keys in
//! waves; on the CPU a key's results do not depend on which keys share its waves
//! (tested through batch cuts and threads). On a GPU a wave is one kernel launch
//! (`cuda.rs`, `lstm_bank.cu`) that computes each key in a block of its own, so a key's
//! arithmetic does not depend on its wave either (by construction). CI has no GPU:
//! a test runs the kernels on the CPU (`lstm_bank_host.cpp`: a thread per GPU thread)
//! against the candle form, and `scripts/gpu-check.sh` compares a GPU's forecasts with
//! the CPU's. candle's
//! tensor form (`TICKFLARE_BANK_KERNEL=candle`) uses batched matmuls that may pick
//! their summation by batch size.

#[cfg(feature = "cuda")]
mod cuda;
mod key;
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
mod staging;

pub use key::{lock, BankKey, SharedBank};

/// Where the GPU kernel's waves spent their time, under `TICKFLARE_BANK_PROFILE=1`
/// (a CUDA build; None otherwise).
pub fn kernel_profile() -> Option<String> {
    #[cfg(feature = "cuda")]
    {
        cuda::profile_report()
    }
    #[cfg(not(feature = "cuda"))]
    {
        None
    }
}

use candle_core::{DType, Device, Tensor, Var};

use super::linear::{adam_scales, Optim, BETA1, BETA2, EPS};
use super::loss::Loss;
use super::lstm::LstmModel;
use super::net::Training;
use super::{OnlineModel, Snapshot};
use crate::error::{Error, Result};

/// candle's variable names in order: the stack holding each, and whether the stack
/// keeps it transposed.
const NAMES: [(&str, usize, bool); 6] = [
    ("head.bias", HEAD_B, false),
    ("head.weight", HEAD_W, true),
    ("lstm.bias_hh_l0", B_HH, false),
    ("lstm.bias_ih_l0", B_IH, false),
    ("lstm.weight_hh_l0", W_HH, true),
    ("lstm.weight_ih_l0", W_IH, true),
];

/// Row `k` of a stack as f64 values in candle's layout.
fn row_values(stack: &Tensor, k: usize, transpose: bool) -> Result<Vec<f64>> {
    let t = stack.get(k)?;
    let t = if transpose { t.t()?.contiguous()? } else { t };
    Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
}

/// One key's rows, [1, rows, cols] per stack (`shapes`, in stack order), from the
/// arrays `prefix.<name>` of a checkpoint in candle's names and layouts.
fn rows_from(s: &Snapshot, prefix: &str, shapes: &[(usize, usize)], dtype: DType, device: &Device) -> Result<Vec<Tensor>> {
    let mut rows: Vec<Option<Tensor>> = vec![None; shapes.len()];
    for (name, j, transpose) in NAMES {
        let (r, c) = shapes[j];
        let v = s.array_shaped(&format!("{prefix}.{name}"), &[r, c])?;
        let t = if transpose { Tensor::from_slice(v, (c, r), device)?.t()? } else { Tensor::from_slice(v, (r, c), device)? };
        rows[j] = Some(t.unsqueeze(0)?.contiguous()?.to_dtype(dtype)?);
    }
    Ok(rows.into_iter().map(|r| r.expect("every stack named")).collect())
}

/// Which stack holds which parameter, with its per-key shape.
const W_IH: usize = 0; // W_ihᵀ [d, 4h]
const W_HH: usize = 1; // W_hhᵀ [h, 4h]
const B_IH: usize = 2; // [1, 4h]
const B_HH: usize = 3; // [1, 4h]
const HEAD_W: usize = 4; // head weightᵀ [h, 1]
const HEAD_B: usize = 5; // [1, 1]

pub struct LstmBank {
    /// Rows allocated in every stack (keys in use, free or never handed out).
    keys: usize,
    /// Rows handed out so far; below it, `free` holds the ones given back.
    used: usize,
    free: Vec<u32>,
    window: usize,
    d: usize,
    dtype: DType,
    device: Device,
    /// The six stacks, [K, rows, cols] each, contiguous.
    params: Vec<Tensor>,
    /// One key's starting parameters, [1, rows, cols] each.
    init: Vec<Tensor>,
    /// AdamW's first and second moments, stacked alike (None for SGD).
    moments: Option<(Vec<Tensor>, Vec<Tensor>)>,
    /// Per key: optimizer steps taken (AdamW's bias corrections), updates and the
    /// learning rate (a drift response may scale one key's).
    steps: Vec<u64>,
    updates: Vec<u64>,
    lrs: Vec<f64>,
    loss: Loss,
    base_lr: f64,
    /// On a GPU: a wave as one kernel launch instead of candle's tensor ops.
    #[cfg(feature = "cuda")]
    fused: Option<cuda::Fused>,
}

impl LstmBank {
    /// `keys` LSTMs over windows of `window` rows of `d` features with `hidden`
    /// units, each starting from the weights `LstmModel::new` draws from `t.seed`.
    pub fn new(keys: usize, window: usize, d: usize, hidden: usize, t: &Training, dtype: DType, device: &Device) -> Result<Self> {
        if t.optim == Optim::Nlms {
            return Err(Error::Config("model.optimizer \"nlms\" is for linear models; use adamw or sgd".into()));
        }
        // A key's start: the plain LSTM's seeded weights, read as its checkpoint.
        let mut start = Snapshot::default();
        LstmModel::<f64>::new(window, d, hidden, t)?.save(&mut start)?;
        let shapes = [(d, 4 * hidden), (hidden, 4 * hidden), (1, 4 * hidden), (1, 4 * hidden), (hidden, 1), (1, 1)];
        let init = rows_from(&start, "var", &shapes, dtype, device)?;
        let mut bank = LstmBank {
            keys: 0,
            used: 0,
            free: Vec::new(),
            window,
            d,
            dtype,
            device: device.clone(),
            params: Vec::new(),
            init,
            moments: (t.optim == Optim::AdamW).then(|| (Vec::new(), Vec::new())),
            steps: Vec::new(),
            updates: Vec::new(),
            lrs: Vec::new(),
            loss: t.loss,
            base_lr: t.learning_rate,
            #[cfg(feature = "cuda")]
            fused: cuda::Fused::new(device, dtype, window, d, hidden)?,
        };
        // Rows for `keys` keys handed out at once (benchmarks), or a first block for
        // keys added one by one (a pipeline's).
        bank.grow(keys.max(16))?;
        bank.used = keys;
        Ok(bank)
    }

    /// Rows allocated (every key that is or was handed out, and spare rows).
    pub fn keys(&self) -> usize {
        self.keys
    }

    /// Adds `more` rows at their starting values (stacks rebuilt once: callers grow
    /// geometrically).
    fn grow(&mut self, more: usize) -> Result<()> {
        let block = |t: &Tensor| -> Result<Tensor> {
            let (_, r, c) = t.dims3()?;
            Ok(t.broadcast_as((more, r, c))?.contiguous()?)
        };
        let fresh: Vec<Tensor> = self.init.iter().map(block).collect::<Result<_>>()?;
        // Each stack its own storage: rows are written in place (`scatter_set`), so
        // two stacks sharing one buffer would write each other's rows.
        let zeros = || fresh.iter().map(|t| t.zeros_like()).collect::<candle_core::Result<Vec<_>>>();
        let join = |old: &mut Vec<Tensor>, add: Vec<Tensor>| -> Result<()> {
            if old.is_empty() {
                *old = add;
            } else {
                for (o, a) in old.iter_mut().zip(&add) {
                    *o = Tensor::cat(&[&*o, a], 0)?;
                }
            }
            Ok(())
        };
        if let Some((m, v)) = &mut self.moments {
            join(m, zeros()?)?;
            join(v, zeros()?)?;
        }
        join(&mut self.params, fresh)?;
        self.keys += more;
        self.steps.resize(self.keys, 0);
        self.updates.resize(self.keys, 0);
        self.lrs.resize(self.keys, self.base_lr);
        Ok(())
    }

    /// A key for a new model: a row given back earlier (reset to the start) or a new
    /// one (the stacks doubled when full).
    pub fn add_key(&mut self) -> Result<u32> {
        if let Some(k) = self.free.pop() {
            self.reset_key(k as usize)?;
            return Ok(k);
        }
        if self.used == self.keys {
            self.grow(self.keys.max(16))?;
        }
        self.used += 1;
        Ok((self.used - 1) as u32)
    }

    /// Gives key `k`'s row back (its model was dropped).
    pub fn free_key(&mut self, k: u32) {
        self.free.push(k);
    }

    /// Key `k` back at the starting weights, with no optimizer state.
    fn reset_key(&mut self, k: usize) -> Result<()> {
        for (p, i) in self.params.iter().zip(&self.init) {
            p.slice_set(i, 0, k)?;
        }
        self.reset_optimizer(k)?;
        self.updates[k] = 0;
        Ok(())
    }

    /// Forgets key `k`'s moments and step count; its learning rate back to the base.
    pub fn reset_optimizer(&mut self, k: usize) -> Result<()> {
        if let Some((ms, vs)) = &self.moments {
            for t in ms.iter().chain(vs) {
                let (_, r, c) = t.dims3()?;
                t.slice_set(&Tensor::zeros((1, r, c), self.dtype, &self.device)?, 0, k)?;
            }
        }
        self.steps[k] = 0;
        self.lrs[k] = self.base_lr;
        Ok(())
    }

    /// Key `k`'s learning rate: the configured one × `scale`.
    pub fn set_lr_scale(&mut self, k: usize, scale: f64) {
        self.lrs[k] = self.base_lr * scale;
    }

    /// Updates key `k` has learned.
    pub fn updates(&self, k: usize) -> u64 {
        self.updates[k]
    }

    /// The wave's key ids as a tensor, after checking them.
    fn ids(&self, keys: &[u32]) -> Result<Tensor> {
        self.check_keys(keys)?;
        Ok(Tensor::from_slice(keys, keys.len(), &self.device)?)
    }

    /// Checks that each of the wave's keys is in range and appears once.
    fn check_keys(&self, keys: &[u32]) -> Result<()> {
        let mut seen = vec![false; self.keys];
        for &k in keys {
            let s = seen.get_mut(k as usize).ok_or_else(|| Error::Internal(format!("key {k} of a bank of {}", self.keys)))?;
            if std::mem::replace(s, true) {
                return Err(Error::Internal(format!("key {k} twice in one wave")));
            }
        }
        Ok(())
    }

    /// Checks that `xs` holds `n` windows.
    fn check_windows(&self, n: usize, xs: &[f64]) -> Result<()> {
        if xs.len() != n * self.window * self.d {
            return Err(Error::Internal(format!("expected {n}×{}×{} window values, got {}", self.window, self.d, xs.len())));
        }
        Ok(())
    }

    /// The wave's windows as [n, window, d] in the bank's dtype.
    fn windows(&self, n: usize, xs: &[f64]) -> Result<Tensor> {
        self.check_windows(n, xs)?;
        Ok(Tensor::from_slice(xs, (n, self.window, self.d), &self.device)?.to_dtype(self.dtype)?)
    }

    /// The forecasts [n] of the keys whose gathered parameters are `w` (candle-nn's
    /// LSTM cell: gates i, f, g, o; the last hidden state through the head).
    fn forward(&self, w: &[Tensor], x: &Tensor) -> Result<Tensor> {
        let n = x.dim(0)?;
        let h = w[W_HH].dim(1)?;
        let mut hs = Tensor::zeros((n, 1, h), self.dtype, &self.device)?;
        let mut cs = hs.clone();
        for t in 0..self.window {
            let xt = x.narrow(1, t, 1)?.contiguous()?;
            let pre = ((xt.matmul(&w[W_IH])? + &w[B_IH])? + (hs.matmul(&w[W_HH])? + &w[B_HH])?)?;
            let gates = pre.chunk(4, 2)?;
            let i = candle_nn::ops::sigmoid(&gates[0])?;
            let f = candle_nn::ops::sigmoid(&gates[1])?;
            let g = gates[2].tanh()?;
            let o = candle_nn::ops::sigmoid(&gates[3])?;
            cs = ((f * &cs)? + (i * g)?)?;
            hs = (o * cs.tanh()?)?;
        }
        Ok((hs.matmul(&w[HEAD_W])? + &w[HEAD_B])?.flatten_all()?)
    }

    /// One forecast per key of the wave (`xs`: their windows, in `keys`' order).
    pub fn predict(&self, keys: &[u32], xs: &[f64], out: &mut Vec<f64>) -> Result<()> {
        #[cfg(feature = "cuda")]
        if let Some(f) = &self.fused {
            self.check_keys(keys)?;
            self.check_windows(keys.len(), xs)?;
            return f.predict(&self.params, keys, xs, out);
        }
        let ids = self.ids(keys)?;
        let x = self.windows(keys.len(), xs)?;
        let w = self.params.iter().map(|p| p.index_select(&ids, 0)).collect::<candle_core::Result<Vec<_>>>()?;
        *out = self.forward(&w, &x)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        Ok(())
    }

    /// One optimizer step of every key of the wave on its own row (`xs`, `ys`);
    /// returns each row's loss before the step.
    pub fn update(&mut self, keys: &[u32], xs: &[f64], ys: &[f64]) -> Result<Vec<f64>> {
        let n = keys.len();
        if ys.len() != n {
            return Err(Error::Internal(format!("{n} keys, {} targets", ys.len())));
        }
        #[cfg(feature = "cuda")]
        if let Some(f) = &self.fused {
            self.check_keys(keys)?;
            self.check_windows(n, xs)?;
            let (lr, scales) = self.step_rates(keys);
            let per_key: Vec<(f64, f64, f64)> = match &scales {
                Some((m, v)) => lr.iter().zip(m).zip(v).map(|((&l, &m), &v)| (l, m, v)).collect(),
                None => lr.iter().map(|&l| (l, 1.0, 1.0)).collect(),
            };
            let moments = self.moments.as_ref().map(|(m, v)| (m.as_slice(), v.as_slice()));
            let losses = f.update(&self.params, moments, keys, xs, ys, &per_key, self.loss)?;
            self.stepped(keys);
            return Ok(losses);
        }
        let ids = self.ids(keys)?;
        let x = self.windows(n, xs)?;
        let leaves = self.params.iter().map(|p| Var::from_tensor(&p.index_select(&ids, 0)?)).collect::<candle_core::Result<Vec<_>>>()?;
        let w: Vec<Tensor> = leaves.iter().map(|v| v.as_tensor().clone()).collect();
        let pred = self.forward(&w, &x)?;
        let target = Tensor::from_slice(ys, n, &self.device)?.to_dtype(self.dtype)?;
        // The sum of the keys' losses: each key's gradient is its own row's.
        let losses = self.loss.per_row(&pred, &target)?;
        let grads = losses.sum_all()?.backward()?;
        let per_key = |s: Vec<f64>| -> Result<Tensor> { Ok(Tensor::from_vec(s, (n, 1, 1), &self.device)?.to_dtype(self.dtype)?) };
        let (lr, scales) = self.step_rates(keys);
        let lr = per_key(lr)?;
        let adam = match scales {
            Some((m, v)) => Some((per_key(m)?, per_key(v)?)),
            None => None,
        };
        for (j, leaf) in leaves.iter().enumerate() {
            let theta = leaf.as_tensor().detach();
            let g = grads.get(leaf).ok_or_else(|| Error::Internal("an LSTM parameter without a gradient".into()))?;
            let rows = ids.reshape((n, 1, 1))?.broadcast_as(theta.shape())?.contiguous()?;
            let next = match (&mut self.moments, &adam) {
                (Some((ms, vs)), Some((scale_m, scale_v))) => {
                    let (m, v) = (ms[j].index_select(&ids, 0)?, vs[j].index_select(&ids, 0)?);
                    let next_m = ((&m * BETA1)? + (g * (1.0 - BETA1))?)?;
                    let next_v = ((&v * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?;
                    let m_hat = next_m.broadcast_mul(scale_m)?;
                    let v_hat = next_v.broadcast_mul(scale_v)?;
                    let adjusted = (m_hat / (v_hat.sqrt()? + EPS)?)?;
                    ms[j].scatter_set(&rows, &next_m, 0)?;
                    vs[j].scatter_set(&rows, &next_v, 0)?;
                    (theta - adjusted.broadcast_mul(&lr)?)?
                }
                _ => (theta - g.broadcast_mul(&lr)?)?,
            };
            self.params[j].scatter_set(&rows, &next, 0)?;
        }
        self.stepped(keys);
        Ok(losses.to_dtype(DType::F64)?.to_vec1::<f64>()?)
    }

    /// Each key's learning rate for this step and, under AdamW, its bias scales as
    /// NetOptimizer's scalars: 1/(1 − βᵗ) with the key's own t (this step's; the
    /// counters move once every stack is written).
    #[allow(clippy::type_complexity)]
    fn step_rates(&self, keys: &[u32]) -> (Vec<f64>, Option<(Vec<f64>, Vec<f64>)>) {
        let lr = keys.iter().map(|&k| self.lrs[k as usize]).collect();
        let scales = self.moments.is_some().then(|| keys.iter().map(|&k| adam_scales(self.steps[k as usize] + 1)).unzip());
        (lr, scales)
    }

    /// Counts a step and an update for each key of a wave just learned.
    fn stepped(&mut self, keys: &[u32]) {
        for &k in keys {
            self.steps[k as usize] += 1;
            self.updates[k as usize] += 1;
        }
    }

    /// Key `k`'s parameters in candle's variable order and layout (as
    /// `OnlineModel::parameters` of its own `LstmModel`).
    pub fn parameters(&self, k: usize) -> Result<Vec<f64>> {
        let mut out = Vec::new();
        for (_, j, transpose) in NAMES {
            out.extend(row_values(&self.params[j], k, transpose)?);
        }
        Ok(out)
    }

    /// Key `k`'s state as its own `LstmModel` saves it: the same names, layouts and
    /// counters, so either restores the other.
    pub fn save_key(&self, k: usize, s: &mut Snapshot) -> Result<()> {
        s.put_int("updates", self.updates[k]);
        s.put_int("step_t", self.steps[k]);
        s.put_f64("lr", self.lrs[k]);
        let mut put = |prefix: &str, stacks: &[Tensor]| -> Result<()> {
            for (name, j, transpose) in NAMES {
                s.put(&format!("{prefix}.{name}"), row_values(&stacks[j], k, transpose)?);
            }
            Ok(())
        };
        put("var", &self.params)?;
        if let Some((m, v)) = &self.moments {
            put("adam_m", m)?;
            put("adam_v", v)?;
        }
        Ok(())
    }

    /// Reads what [`LstmBank::save_key`] (or an `LstmModel`) wrote into key `k`.
    pub fn load_key(&mut self, k: usize, s: &mut Snapshot) -> Result<()> {
        let (updates, steps, lr) = (s.int("updates")?, s.int("step_t")?, s.f64("lr")?);
        let shapes: Vec<(usize, usize)> = self.init.iter().map(|t| t.dims3().map(|(_, r, c)| (r, c))).collect::<candle_core::Result<_>>()?;
        let (dtype, device) = (self.dtype, self.device.clone());
        let set = |prefix: &str, stacks: &[Tensor]| -> Result<()> {
            for (stack, row) in stacks.iter().zip(rows_from(s, prefix, &shapes, dtype, &device)?) {
                stack.slice_set(&row, 0, k)?;
            }
            Ok(())
        };
        set("var", &self.params)?;
        if let Some((m, v)) = &self.moments {
            set("adam_m", m)?;
            set("adam_v", v)?;
        }
        self.updates[k] = updates;
        self.steps[k] = steps;
        self.lrs[k] = lr;
        Ok(())
    }

    /// Optimizer steps key `k` has taken.
    pub fn steps(&self, k: usize) -> u64 {
        self.steps[k]
    }
}

#[cfg(test)]
mod tests;

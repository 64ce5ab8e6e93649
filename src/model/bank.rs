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
//! Not yet a pipeline model: `bench-models --bank` and `scripts/gpu-check.sh` use it.

use candle_core::{DType, Device, Tensor, Var};

use super::linear::{Optim, BETA1, BETA2, EPS};
use super::loss::Loss;
use super::lstm::LstmModel;
use super::net::Training;
use super::OnlineModel;
use crate::error::{Error, Result};

/// Which stack holds which parameter, with its per-key shape.
const W_IH: usize = 0; // W_ihᵀ [d, 4h]
const W_HH: usize = 1; // W_hhᵀ [h, 4h]
const B_IH: usize = 2; // [1, 4h]
const B_HH: usize = 3; // [1, 4h]
const HEAD_W: usize = 4; // head weightᵀ [h, 1]
const HEAD_B: usize = 5; // [1, 1]

pub struct LstmBank {
    keys: usize,
    window: usize,
    d: usize,
    dtype: DType,
    device: Device,
    /// The six stacks, [K, rows, cols] each, contiguous.
    params: Vec<Tensor>,
    /// AdamW's first and second moments, stacked alike (None for SGD).
    moments: Option<(Vec<Tensor>, Vec<Tensor>)>,
    /// Per key: optimizer steps taken (AdamW's bias corrections) and updates.
    steps: Vec<u64>,
    loss: Loss,
    lr: f64,
}

impl LstmBank {
    /// `keys` LSTMs over windows of `window` rows of `d` features with `hidden`
    /// units, each starting from the weights `LstmModel::new` draws from `t.seed`.
    pub fn new(keys: usize, window: usize, d: usize, hidden: usize, t: &Training, dtype: DType, device: &Device) -> Result<Self> {
        if keys == 0 {
            return Err(Error::Config("a model bank needs at least one key".into()));
        }
        if t.optim == Optim::Nlms {
            return Err(Error::Config("model.optimizer \"nlms\" is for linear models; use adamw or sgd".into()));
        }
        let one = LstmModel::<f64>::new(window, d, hidden, t)?;
        // parameters(): candle's names in order — head.bias [1], head.weight [1, h],
        // bias_hh [4h], bias_ih [4h], weight_hh [4h, h], weight_ih [4h, d].
        let p = one.parameters()?;
        let (h, g) = (hidden, 4 * hidden);
        let mut at = 0;
        let mut take = |n: usize| {
            let s = p[at..at + n].to_vec();
            at += n;
            s
        };
        let (head_b, head_w, b_hh, b_ih, w_hh, w_ih) = (take(1), take(h), take(g), take(g), take(g * h), take(g * d));
        let stack = |v: Vec<f64>, rows: usize, cols: usize, transpose: bool| -> Result<Tensor> {
            let t = if transpose { Tensor::from_vec(v, (cols, rows), device)?.t()? } else { Tensor::from_vec(v, (rows, cols), device)? };
            Ok(t.unsqueeze(0)?.broadcast_as((keys, rows, cols))?.contiguous()?.to_dtype(dtype)?)
        };
        let params = vec![
            stack(w_ih, d, g, true)?,
            stack(w_hh, h, g, true)?,
            stack(b_ih, 1, g, false)?,
            stack(b_hh, 1, g, false)?,
            stack(head_w, h, 1, true)?,
            stack(head_b, 1, 1, false)?,
        ];
        let moments = match t.optim {
            Optim::AdamW => {
                let zeros = || params.iter().map(|p| p.zeros_like()).collect::<candle_core::Result<Vec<_>>>();
                Some((zeros()?, zeros()?))
            }
            _ => None,
        };
        Ok(LstmBank { keys, window, d, dtype, device: device.clone(), params, moments, steps: vec![0; keys], loss: t.loss, lr: t.learning_rate })
    }

    pub fn keys(&self) -> usize {
        self.keys
    }

    /// The wave's key ids as a tensor, after checking each is in range and appears once.
    fn ids(&self, keys: &[u32]) -> Result<Tensor> {
        let mut seen = vec![false; self.keys];
        for &k in keys {
            let s = seen.get_mut(k as usize).ok_or_else(|| Error::Internal(format!("key {k} of a bank of {}", self.keys)))?;
            if std::mem::replace(s, true) {
                return Err(Error::Internal(format!("key {k} twice in one wave")));
            }
        }
        Ok(Tensor::from_slice(keys, keys.len(), &self.device)?)
    }

    /// The wave's windows as [n, window, d] in the bank's dtype.
    fn windows(&self, n: usize, xs: &[f64]) -> Result<Tensor> {
        if xs.len() != n * self.window * self.d {
            return Err(Error::Internal(format!("expected {n}×{}×{} window values, got {}", self.window, self.d, xs.len())));
        }
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
        let ids = self.ids(keys)?;
        let x = self.windows(keys.len(), xs)?;
        let w = self.params.iter().map(|p| p.index_select(&ids, 0)).collect::<candle_core::Result<Vec<_>>>()?;
        *out = self.forward(&w, &x)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        Ok(())
    }

    /// One optimizer step of every key of the wave on its own row (`xs`, `ys`).
    pub fn update(&mut self, keys: &[u32], xs: &[f64], ys: &[f64]) -> Result<()> {
        let n = keys.len();
        if ys.len() != n {
            return Err(Error::Internal(format!("{n} keys, {} targets", ys.len())));
        }
        let ids = self.ids(keys)?;
        let x = self.windows(n, xs)?;
        let leaves = self.params.iter().map(|p| Var::from_tensor(&p.index_select(&ids, 0)?)).collect::<candle_core::Result<Vec<_>>>()?;
        let w: Vec<Tensor> = leaves.iter().map(|v| v.as_tensor().clone()).collect();
        let pred = self.forward(&w, &x)?;
        let target = Tensor::from_slice(ys, n, &self.device)?.to_dtype(self.dtype)?;
        // The sum of the keys' losses: each key's gradient is its own row's.
        let grads = self.loss.per_row(&pred, &target)?.sum_all()?.backward()?;
        for &k in keys {
            self.steps[k as usize] += 1;
        }
        // Per key, as NetOptimizer's scalars: 1/(1 − βᵗ) with the key's own t.
        let scale = |beta: f64| -> Result<Tensor> {
            let s: Vec<f64> = keys.iter().map(|&k| 1f64 / (1f64 - beta.powi(self.steps[k as usize] as i32))).collect();
            Ok(Tensor::from_vec(s, (n, 1, 1), &self.device)?.to_dtype(self.dtype)?)
        };
        let lr = self.lr;
        let adam = match &self.moments {
            Some(_) => Some((scale(BETA1)?, scale(BETA2)?)),
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
                    (theta - (adjusted * lr)?)?
                }
                _ => (theta - (g * lr)?)?,
            };
            self.params[j].scatter_set(&rows, &next, 0)?;
        }
        Ok(())
    }

    /// Key `k`'s parameters in candle's variable order and layout (as
    /// `OnlineModel::parameters` of its own `LstmModel`).
    pub fn parameters(&self, k: usize) -> Result<Vec<f64>> {
        let row = |j: usize, transpose: bool| -> Result<Vec<f64>> {
            let t = self.params[j].get(k)?;
            let t = if transpose { t.t()?.contiguous()? } else { t };
            Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
        };
        let mut out = Vec::new();
        for (j, transpose) in [(HEAD_B, false), (HEAD_W, true), (B_HH, false), (B_IH, false), (W_HH, true), (W_IH, true)] {
            out.extend(row(j, transpose)?);
        }
        Ok(out)
    }

    /// Optimizer steps key `k` has taken.
    pub fn steps(&self, k: usize) -> u64 {
        self.steps[k]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::rand::Draws;

    const WINDOW: usize = 4;
    const D: usize = 3;
    const H: usize = 5;

    fn row(key: usize, i: usize) -> (Vec<f64>, f64) {
        let x: Vec<f64> = (0..WINDOW * D).map(|j| (((key * 5 + i * 7 + j * 13) % 29) as f64 / 14.5 - 1.0) * (1.0 + key as f64 * 0.1)).collect();
        let y = 0.8 * x[x.len() - 1] - 0.3 * x[x.len() - 2] + 0.1 * ((i % 5) as f64) - 0.05 * key as f64;
        (x, y)
    }

    /// Keys' rows arrive interleaved in a shuffled order and are run in waves (the
    /// i-th queued row of every key; within a wave, predictions then updates) of
    /// every size: each key's forecasts and final weights equal those of its own
    /// plain-code `LstmModel` fed only its rows, to rounding (candle's batched
    /// matmuls sum in another order than the plain code's loops).
    #[test]
    fn each_key_learns_as_its_own_lstm() {
        for (loss, optim, lr) in [(Loss::Mse, Optim::AdamW, 0.01), (Loss::Huber { delta: 0.3 }, Optim::AdamW, 0.02), (Loss::Mse, Optim::Sgd, 0.05)] {
            let t = Training { loss, optim, learning_rate: lr, seed: 9 };
            let keys = 6;
            // 40 rows per key, shuffled across keys (each key's own rows stay in order).
            let mut order: Vec<usize> = (0..keys).flat_map(|k| std::iter::repeat_n(k, 40)).collect();
            let mut d = Draws(3);
            for i in (1..order.len()).rev() {
                let j = ((d.symmetric(1.0) + 1.0) / 2.0 * (i + 1) as f64) as usize % (i + 1);
                order.swap(i, j);
            }
            let mut bank = LstmBank::new(keys, WINDOW, D, H, &t, DType::F64, &Device::Cpu).unwrap();
            let mut own: Vec<LstmModel> = (0..keys).map(|_| LstmModel::<f64>::new(WINDOW, D, H, &t).unwrap()).collect();
            let mut seen = vec![0usize; keys];
            let mut worst = 0f64;
            // Batches of 1, 7 and the rest, as the pipeline's fetches might cut them.
            let mut at = 0usize;
            for len in [1, 7, usize::MAX] {
                let batch = &order[at..at.saturating_add(len).min(order.len())];
                at += batch.len();
                let mut queues: Vec<Vec<usize>> = vec![Vec::new(); keys];
                for &k in batch {
                    queues[k].push(seen[k]);
                    seen[k] += 1;
                }
                let waves = queues.iter().map(Vec::len).max().unwrap_or(0);
                for wave in 0..waves {
                    let (mut ks, mut xs, mut ys) = (Vec::new(), Vec::new(), Vec::new());
                    for (k, q) in queues.iter().enumerate() {
                        if let Some(&i) = q.get(wave) {
                            let (x, y) = row(k, i);
                            ks.push(k as u32);
                            xs.extend(x);
                            ys.push(y);
                        }
                    }
                    let mut preds = Vec::new();
                    bank.predict(&ks, &xs, &mut preds).unwrap();
                    bank.update(&ks, &xs, &ys).unwrap();
                    for (j, &k) in ks.iter().enumerate() {
                        let x = &xs[j * WINDOW * D..(j + 1) * WINDOW * D];
                        let p = own[k as usize].predict(x).unwrap();
                        worst = worst.max((p - preds[j]).abs());
                        assert!((p - preds[j]).abs() < 1e-10, "{loss:?} {optim:?} key {k}: {p} vs bank {}", preds[j]);
                        own[k as usize].update(x, ys[j]).unwrap();
                    }
                }
            }
            assert_eq!(at, order.len());
            for (k, m) in own.iter().enumerate() {
                assert_eq!(bank.steps(k), 40);
                let (a, b) = (m.parameters().unwrap(), bank.parameters(k).unwrap());
                assert_eq!(a.len(), b.len());
                assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 1e-9 * (1.0 + y.abs())), "{loss:?} {optim:?} key {k}");
            }
            // The keys did diverge from one another (each learned its own rows).
            assert_ne!(bank.parameters(0).unwrap(), bank.parameters(1).unwrap());
            eprintln!("{loss:?} {optim:?}: worst forecast difference {worst:.1e}");
        }
    }

    /// In F32 each key follows its own f32 `LstmModel` to f32 rounding (one wave of
    /// all keys per step, 60 steps).
    #[test]
    fn f32_bank_follows_the_f32_lstm() {
        let t = Training { loss: Loss::Mse, optim: Optim::AdamW, learning_rate: 0.01, seed: 4 };
        let keys = 3;
        let mut bank = LstmBank::new(keys, WINDOW, D, H, &t, DType::F32, &Device::Cpu).unwrap();
        let mut own: Vec<LstmModel<f32>> = (0..keys).map(|_| LstmModel::<f32>::new(WINDOW, D, H, &t).unwrap()).collect();
        let ks: Vec<u32> = (0..keys as u32).collect();
        let mut preds = Vec::new();
        for i in 0..60 {
            let rows: Vec<(Vec<f64>, f64)> = (0..keys).map(|k| row(k, i)).collect();
            let xs: Vec<f64> = rows.iter().flat_map(|r| r.0.clone()).collect();
            let ys: Vec<f64> = rows.iter().map(|r| r.1).collect();
            bank.predict(&ks, &xs, &mut preds).unwrap();
            bank.update(&ks, &xs, &ys).unwrap();
            for (k, (x, y)) in rows.iter().enumerate() {
                let p = own[k].predict(x).unwrap();
                assert!((p - preds[k]).abs() < 1e-5, "step {i} key {k}: {p} vs bank {}", preds[k]);
                own[k].update(x, *y).unwrap();
            }
        }
        for (k, m) in own.iter().enumerate() {
            let (a, b) = (m.parameters().unwrap(), bank.parameters(k).unwrap());
            assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 1e-4 * (1.0 + y.abs())), "key {k}");
        }
    }

    /// A wave names each key once and only keys of the bank.
    #[test]
    fn refuses_a_key_twice_or_out_of_range() {
        let t = Training { loss: Loss::Mse, optim: Optim::AdamW, learning_rate: 0.01, seed: 1 };
        let mut bank = LstmBank::new(2, WINDOW, D, H, &t, DType::F64, &Device::Cpu).unwrap();
        let (x, y) = row(0, 0);
        let xs: Vec<f64> = x.iter().chain(&x).copied().collect();
        assert!(bank.update(&[1, 1], &xs, &[y, y]).is_err());
        assert!(bank.predict(&[0, 2], &xs, &mut Vec::new()).is_err());
        assert!(bank.update(&[0], &x, &[y]).is_ok());
        assert_eq!((bank.steps(0), bank.steps(1)), (1, 0));
    }
}

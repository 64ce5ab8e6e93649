//! One online model for every candle network (the MLP, the candle LSTM, the 1-D
//! CNN): an architecture ([`Arch`]: its layers, how rows become estimates and a
//! loss) inside [`NetModel`], which holds what they all share — the variables, the
//! optimizer and its learning rate, the step count — and implements
//! [`OnlineModel`] once for all of them.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

use super::linear::Optim;
use super::loss::Loss;
use super::optim::NetOptimizer;
use super::{OnlineModel, Snapshot};
use crate::error::Result;

/// How a network is trained, whatever its layers.
#[derive(Debug, Clone, Copy)]
pub struct Training {
    pub loss: Loss,
    pub optim: Optim,
    pub learning_rate: f64,
    /// Seeds the initial weights.
    pub seed: u64,
}

/// A network's layers: rows in, estimates and losses out.
pub trait Arch: Send + Sync {
    /// The regression estimate of each row of `xs` (row-major, `[rows, 1]`).
    fn estimate(&self, xs: &[f64], device: &Device) -> Result<Tensor>;
    /// The mean loss over rows `xs` with targets `ys`.
    fn loss(&self, xs: &[f64], ys: &[f64], loss: &Loss, device: &Device) -> Result<Tensor>;
    /// Whether several rows go through as one batch (else one at a time).
    fn batches(&self) -> bool {
        false
    }
}

pub struct NetModel<A> {
    pub arch: A,
    loss: Loss,
    opt: NetOptimizer,
    lr: f64,
    varmap: VarMap,
    device: Device,
    updates: u64,
}

impl<A: Arch> NetModel<A> {
    /// `arch` built over `varmap`'s variables (already initialised).
    pub fn from_parts(arch: A, varmap: VarMap, t: &Training, device: &Device) -> Result<Self> {
        let opt = NetOptimizer::new(t.optim, &varmap, t.learning_rate)?;
        Ok(NetModel { arch, loss: t.loss, opt, lr: t.learning_rate, varmap, device: device.clone(), updates: 0 })
    }

    /// Named parameters (the safetensors keys), in name order.
    pub fn named(&self) -> Vec<(String, Tensor)> {
        sorted_vars(&self.varmap)
    }

    /// One optimizer step on the mean loss over rows `xs` with targets `ys`.
    fn step(&mut self, xs: &[f64], ys: &[f64]) -> Result<f64> {
        let loss = self.arch.loss(xs, ys, &self.loss, &self.device)?;
        let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        self.opt.step(&loss)?;
        self.updates += 1;
        Ok(value)
    }
}

/// A varmap's variables sorted by name.
pub fn sorted_vars(varmap: &VarMap) -> Vec<(String, Tensor)> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut v: Vec<(String, Tensor)> = data.iter().map(|(k, var)| (k.clone(), var.as_tensor().clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

impl<A: Arch> OnlineModel for NetModel<A> {
    fn predict(&self, x: &[f64]) -> Result<f64> {
        Ok(self.arch.estimate(x, &self.device)?.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?[0])
    }

    fn update(&mut self, x: &[f64], y: f64) -> Result<f64> {
        self.step(x, &[y])
    }

    fn updates(&self) -> u64 {
        self.updates
    }

    fn predict_batch(&self, xs: &[f64], n: usize, out: &mut Vec<f64>) -> Result<()> {
        if self.arch.batches() {
            *out = self.arch.estimate(xs, &self.device)?.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        } else {
            out.clear();
            for x in xs.chunks(n) {
                out.push(self.predict(x)?);
            }
        }
        Ok(())
    }

    fn update_batch(&mut self, xs: &[f64], n: usize, ys: &[f64]) -> Result<()> {
        if self.arch.batches() {
            return self.step(xs, ys).map(|_| ());
        }
        for (x, y) in xs.chunks(n).zip(ys) {
            self.update(x, *y)?;
        }
        Ok(())
    }

    fn reset_optimizer(&mut self) -> Result<()> {
        self.opt.reset()?;
        self.opt.set_lr(self.lr);
        Ok(())
    }

    fn set_lr_scale(&mut self, scale: f64) -> Result<()> {
        self.opt.set_lr(self.lr * scale);
        Ok(())
    }

    fn parameters(&self) -> Result<Vec<f64>> {
        let mut out = Vec::new();
        for (_, t) in self.named() {
            out.extend(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?);
        }
        Ok(out)
    }

    fn save(&self, s: &mut Snapshot) -> Result<()> {
        s.put_int("updates", self.updates);
        self.opt.save(s)
    }

    fn load(&mut self, s: &mut Snapshot) -> Result<()> {
        self.updates = s.int("updates")?;
        self.opt.load(s)
    }
}

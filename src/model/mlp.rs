//! A multilayer perceptron regressor in candle: layers named `l0`, `l1`, … through a
//! `VarBuilder` (the names are the safetensors keys), ReLU or tanh between them, one
//! optimizer step per labelled row.
//!
//! Weights are initialised from a seeded generator (uniform ±1/√fan_in, like
//! PyTorch's default), so two runs — and a restarted run — start identically.

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW, SGD};
use candle_nn::{Linear, VarBuilder, VarMap};

use super::linear::Optim;
use super::loss::Loss;
use super::OnlineModel;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Relu,
    Tanh,
}

impl Activation {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "relu" => Ok(Activation::Relu),
            "tanh" => Ok(Activation::Tanh),
            other => Err(Error::Config(format!("model.activation {other:?} is not one of relu, tanh"))),
        }
    }
}

enum Opt {
    Sgd(SGD),
    AdamW(AdamW),
}

pub struct MlpModel {
    layers: Vec<Linear>,
    act: Activation,
    loss: Loss,
    opt: Opt,
    optim: Optim,
    lr: f64,
    varmap: VarMap,
    device: Device,
    n: usize,
    updates: u64,
}

fn make_opt(optim: Optim, vars: Vec<Var>, lr: f64) -> Result<Opt> {
    Ok(match optim {
        Optim::Sgd => Opt::Sgd(SGD::new(vars, lr)?),
        Optim::AdamW => Opt::AdamW(AdamW::new(vars, ParamsAdamW { lr, weight_decay: 0.0, ..Default::default() })?),
    })
}

/// SplitMix64: a tiny seeded generator for initial weights.
struct SplitMix(u64);
impl SplitMix {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl MlpModel {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        n_features: usize,
        hidden: &[usize],
        act: Activation,
        loss: Loss,
        optim: Optim,
        lr: f64,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let varmap = VarMap::new();
        let mut rng = SplitMix(seed);
        let mut dims = vec![n_features];
        dims.extend_from_slice(hidden);
        dims.push(1);
        {
            let mut data = varmap.data().lock().map_err(|_| Error::Internal("varmap lock".into()))?;
            for (i, w) in dims.windows(2).enumerate() {
                let (fan_in, fan_out) = (w[0], w[1]);
                let bound = 1.0 / (fan_in as f64).sqrt();
                let mut draw = |n: usize| -> Vec<f64> { (0..n).map(|_| (2.0 * rng.next_f64() - 1.0) * bound).collect() };
                let weight = Tensor::from_vec(draw(fan_in * fan_out), (fan_out, fan_in), device)?;
                let bias = Tensor::from_vec(draw(fan_out), fan_out, device)?;
                data.insert(format!("l{i}.weight"), Var::from_tensor(&weight)?);
                data.insert(format!("l{i}.bias"), Var::from_tensor(&bias)?);
            }
        }
        let vb = VarBuilder::from_varmap(&varmap, DType::F64, device);
        let layers = dims
            .windows(2)
            .enumerate()
            .map(|(i, w)| candle_nn::linear(w[0], w[1], vb.pp(format!("l{i}"))))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let opt = make_opt(optim, varmap.all_vars(), lr)?;
        Ok(MlpModel { layers, act, loss, opt, optim, lr, varmap, device: device.clone(), n: n_features, updates: 0 })
    }

    fn forward(&self, x: &[f64]) -> Result<Tensor> {
        if x.len() != self.n {
            return Err(Error::Internal(format!("expected {} features, got {}", self.n, x.len())));
        }
        let mut h = Tensor::from_slice(x, (1, self.n), &self.device)?;
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward(&h)?;
            if i < last {
                h = match self.act {
                    Activation::Relu => h.relu()?,
                    Activation::Tanh => h.tanh()?,
                };
            }
        }
        Ok(h)
    }

    /// Named parameters, as saved to safetensors.
    pub fn named(&self) -> Vec<(String, Tensor)> {
        let data = self.varmap.data().lock().expect("varmap lock");
        let mut v: Vec<_> = data.iter().map(|(k, var)| (k.clone(), var.as_tensor().clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

impl OnlineModel for MlpModel {
    fn predict(&self, x: &[f64]) -> Result<f64> {
        Ok(self.forward(x)?.flatten_all()?.to_vec1::<f64>()?[0])
    }

    fn update(&mut self, x: &[f64], y: f64) -> Result<f64> {
        let pred = self.forward(x)?;
        let target = Tensor::new(&[[y]], &self.device)?;
        let loss = self.loss.apply(&pred, &target)?;
        let value = loss.to_scalar::<f64>()?;
        match &mut self.opt {
            Opt::Sgd(o) => o.backward_step(&loss)?,
            Opt::AdamW(o) => o.backward_step(&loss)?,
        }
        self.updates += 1;
        Ok(value)
    }

    fn updates(&self) -> u64 {
        self.updates
    }

    fn reset_optimizer(&mut self) -> Result<()> {
        self.opt = make_opt(self.optim, self.varmap.all_vars(), self.lr)?;
        Ok(())
    }

    fn set_lr_scale(&mut self, scale: f64) -> Result<()> {
        match &mut self.opt {
            Opt::Sgd(o) => o.set_learning_rate(self.lr * scale),
            Opt::AdamW(o) => o.set_learning_rate(self.lr * scale),
        }
        Ok(())
    }

    fn parameters(&self) -> Result<Vec<f64>> {
        let mut out = Vec::new();
        for (_, t) in self.named() {
            out.extend(t.flatten_all()?.to_vec1::<f64>()?);
        }
        Ok(out)
    }
}

//! The tracker's network (candle): a Siamese CNN — one conv trunk shared by the
//! previous-frame crop and the current-frame crop — whose two feature maps, with the
//! event type one-hot, go through two fully connected layers to 4 numbers: the
//! correction (Δx/w, Δy/h, ln w'/w, ln h'/h) to the rotation prior's box. The last
//! layer starts at zero, so an untrained network is the rotation-only tracker.

use std::collections::HashMap;

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder, VarMap};

use crate::model::linear::Optim;
use crate::model::optim::NetOptimizer;
use crate::model::rand::Draws;
use crate::model::Snapshot;

pub struct TrackerNet {
    pub crop: usize,
    varmap: VarMap,
    convs: [Conv2d; 3],
    fc1: Linear,
    fc2: Linear,
    opt: NetOptimizer,
    device: Device,
    pub updates: u64,
}

const CH: [usize; 3] = [8, 16, 16];
const HIDDEN: usize = 64;

impl TrackerNet {
    /// A fresh network for S × S crops (S a multiple of 8), weights from `seed`.
    pub fn new(crop: usize, lr: f64, seed: u64, device: &Device) -> crate::error::Result<Self> {
        crate::ensure!(Config, crop >= 16 && crop.is_multiple_of(8), "tracker crop {crop}: use a multiple of 8, at least 16");
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let c = |stride, padding| Conv2dConfig { stride, padding, ..Default::default() };
        let convs = [
            candle_nn::conv2d(1, CH[0], 5, c(2, 2), vb.pp("conv1"))?,
            candle_nn::conv2d(CH[0], CH[1], 3, c(2, 1), vb.pp("conv2"))?,
            candle_nn::conv2d(CH[1], CH[2], 3, c(2, 1), vb.pp("conv3"))?,
        ];
        let flat = CH[2] * (crop / 8) * (crop / 8);
        let fc1 = candle_nn::linear(2 * flat + 2, HIDDEN, vb.pp("fc1"))?;
        let fc2 = candle_nn::linear(HIDDEN, 4, vb.pp("fc2"))?;
        // Seeded initial weights (candle's initialisers draw from a global RNG):
        // uniform ±1/√fan_in, and the output layer at zero.
        let mut rng = Draws(seed);
        for (name, t) in sorted(&varmap) {
            let n = t.elem_count();
            let fan_in = if t.rank() > 1 { n / t.dims()[0] } else { n };
            let bound = 1.0 / (fan_in as f64).sqrt();
            let zero = name.starts_with("fc2");
            let vals: Vec<f32> = (0..n).map(|_| if zero { 0.0 } else { rng.symmetric(bound) as f32 }).collect();
            var(&varmap, &name)?.set(&Tensor::from_vec(vals, t.shape(), device)?)?;
        }
        let opt = NetOptimizer::new(Optim::AdamW, &varmap, lr)?;
        Ok(TrackerNet { crop, varmap, convs, fc1, fc2, opt, device: device.clone(), updates: 0 })
    }

    fn trunk(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for c in &self.convs {
            h = c.forward(&h)?.relu()?;
        }
        h.flatten_from(1)
    }

    /// Corrections for a batch: `prev` and `cur` hold n crops of S×S each, `types`
    /// the event type index (0 = AR, 1 = CH) of each.
    fn forward(&self, prev: &[f32], cur: &[f32], types: &[usize]) -> candle_core::Result<Tensor> {
        let n = types.len();
        let s = self.crop;
        let p = Tensor::from_slice(prev, (n, 1, s, s), &self.device)?;
        let c = Tensor::from_slice(cur, (n, 1, s, s), &self.device)?;
        let onehot: Vec<f32> = types.iter().flat_map(|t| [(*t == 0) as u8 as f32, (*t == 1) as u8 as f32]).collect();
        let oh = Tensor::from_vec(onehot, (n, 2), &self.device)?;
        let z = Tensor::cat(&[self.trunk(&p)?, self.trunk(&c)?, oh], 1)?;
        self.fc2.forward(&self.fc1.forward(&z)?.relu()?)
    }

    pub fn predict(&self, prev: &[f32], cur: &[f32], types: &[usize]) -> crate::error::Result<Vec<[f32; 4]>> {
        if types.is_empty() {
            return Ok(Vec::new());
        }
        let out = self.forward(prev, cur, types)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        Ok(out.into_iter().map(|r| [r[0], r[1], r[2], r[3]]).collect())
    }

    /// One AdamW step on a batch of pairs and their target corrections (smooth L1);
    /// returns the loss before the step.
    pub fn learn(&mut self, prev: &[f32], cur: &[f32], types: &[usize], targets: &[[f32; 4]]) -> crate::error::Result<f32> {
        let n = types.len();
        let out = self.forward(prev, cur, types)?;
        let flat: Vec<f32> = targets.iter().flatten().copied().collect();
        let t = Tensor::from_vec(flat, (n, 4), &self.device)?;
        let d = (out - t)?;
        let a = d.abs()?;
        // Smooth L1 (β = 0.1): 0.5 d²/β where |d| < β, |d| − β/2 beyond.
        let beta = 0.1f64;
        let quad = ((d.sqr()? * (0.5 / beta))?).minimum(&((&a - beta / 2.0)?.maximum(&(d.sqr()? * (0.5 / beta))?)?))?;
        let lin = (&a - beta / 2.0)?;
        let small = a.lt(beta)?;
        let loss = small.where_cond(&quad, &lin)?.mean_all()?;
        let value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        self.opt.step(&loss)?;
        self.updates += 1;
        Ok(value)
    }

    /// Weights, optimizer moments and the update count.
    pub fn save(&self, s: &mut Snapshot) -> crate::error::Result<()> {
        s.nested("net", |s| self.opt.save(s))?;
        s.put_int("net_updates", self.updates);
        Ok(())
    }

    pub fn load(&mut self, s: &mut Snapshot) -> crate::error::Result<()> {
        let opt = &mut self.opt;
        s.nested("net", |s| opt.load(s))?;
        self.updates = s.int("net_updates")?;
        Ok(())
    }

    /// Weights only, as safetensors (what `train-tracker` writes).
    pub fn save_weights(&self, path: &std::path::Path) -> crate::error::Result<()> {
        Ok(self.varmap.save(path)?)
    }

    pub fn load_weights(&mut self, path: &std::path::Path) -> crate::error::Result<()> {
        let tensors = candle_core::safetensors::load(path, &self.device)?;
        for (name, t) in sorted(&self.varmap) {
            let v = tensors.get(&name).ok_or_else(|| crate::error::Error::Input(format!("{}: no tensor {name}", path.display())))?;
            crate::ensure!(Input, v.dims() == t.dims(), "{}: {name} has shape {:?}, the network {:?} (another crop size?)", path.display(), v.dims(), t.dims());
            var(&self.varmap, &name)?.set(v)?;
        }
        Ok(())
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.opt.set_lr(lr);
    }
}

fn sorted(varmap: &VarMap) -> Vec<(String, Tensor)> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut v: Vec<(String, Tensor)> = data.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn var(varmap: &VarMap, name: &str) -> crate::error::Result<Var> {
    let data = varmap.data().lock().map_err(|_| crate::error::Error::Internal("varmap lock".into()))?;
    let m: &HashMap<String, Var> = &data;
    m.get(name).cloned().ok_or_else(|| crate::error::Error::Internal(format!("no variable {name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Untrained, the network outputs zero (rotation-only); a few steps on one
    /// pair fit its target; save/load restores the outputs exactly.
    #[test]
    fn starts_at_zero_learns_and_restores() {
        let s = 16;
        let mut net = TrackerNet::new(s, 0.01, 1, &Device::Cpu).unwrap();
        let prev: Vec<f32> = (0..s * s).map(|i| ((i % s) as f32 / s as f32) - 0.5).collect();
        let cur: Vec<f32> = (0..s * s).map(|i| ((i / s) as f32 / s as f32) - 0.5).collect();
        assert_eq!(net.predict(&prev, &cur, &[0]).unwrap()[0], [0.0; 4]);
        let target = [0.2f32, -0.1, 0.05, 0.0];
        let first = net.learn(&prev, &cur, &[0], &[target]).unwrap();
        let mut last = first;
        for _ in 0..150 {
            last = net.learn(&prev, &cur, &[0], &[target]).unwrap();
        }
        assert!(last < first * 0.1, "{first} → {last}");
        let out = net.predict(&prev, &cur, &[0]).unwrap()[0];
        assert!((out[0] - 0.2).abs() < 0.05, "{out:?}");
        let mut snap = Snapshot::default();
        net.save(&mut snap).unwrap();
        let mut other = TrackerNet::new(s, 0.01, 99, &Device::Cpu).unwrap();
        other.load(&mut snap).unwrap();
        assert_eq!(other.predict(&prev, &cur, &[0]).unwrap()[0], out);
        assert_eq!(other.updates, 151);
    }
}

//! The autograd optimizers of the neural models (MLP, LSTM, CNN): SGD and AdamW
//! (weight decay off), written out with exactly candle-nn's tensor operations (see
//! `optim.rs` there) so their state — moments and step count — can be checkpointed.
//! A test checks the result equals candle-nn's `AdamW` bit for bit.

use candle_core::{Tensor, Var};
use candle_nn::VarMap;

use super::linear::Optim;
use super::Snapshot;
use crate::error::Result;

use super::linear::{BETA1, BETA2, EPS};

/// One variable with its AdamW moments.
struct Slot {
    name: String,
    var: Var,
    m: Option<(Tensor, Tensor)>,
}

pub struct NetOptimizer {
    slots: Vec<Slot>,
    step_t: u64,
    lr: f64,
}

impl NetOptimizer {
    /// An optimizer over every variable of `varmap`, in name order.
    pub fn new(optim: Optim, varmap: &VarMap, lr: f64) -> Result<Self> {
        let data = varmap.data().lock().map_err(|_| crate::error::Error::Internal("varmap lock".into()))?;
        let mut slots = Vec::with_capacity(data.len());
        for (name, var) in data.iter() {
            let m = match optim {
                Optim::Nlms => {
                    return Err(crate::error::Error::Config("model.optimizer \"nlms\" is for linear models; use adamw or sgd".into()))
                }
                Optim::Sgd => None,
                Optim::AdamW => Some((var.as_tensor().zeros_like()?, var.as_tensor().zeros_like()?)),
            };
            slots.push(Slot { name: name.clone(), var: var.clone(), m });
        }
        slots.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(NetOptimizer { slots, step_t: 0, lr })
    }

    /// Backpropagates `loss` and takes one step.
    pub fn step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step_t += 1;
        let lr = self.lr;
        let (scale_m, scale_v) = super::linear::adam_scales(self.step_t);
        for s in &mut self.slots {
            let Some(g) = grads.get(&s.var) else { continue };
            match &mut s.m {
                None => s.var.set(&s.var.sub(&(g * lr)?)?)?,
                Some((m, v)) => {
                    let next_m = ((&*m * BETA1)? + (g * (1.0 - BETA1))?)?;
                    let next_v = ((&*v * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?;
                    let m_hat = (&next_m * scale_m)?;
                    let v_hat = (&next_v * scale_v)?;
                    // Weight decay 0: θ·(1 − lr·λ) = θ·1, kept for bit equality.
                    let next_theta = (s.var.as_tensor() * 1f64)?;
                    let adjusted = (m_hat / (v_hat.sqrt()? + EPS)?)?;
                    let next_theta = (next_theta - (adjusted * lr)?)?;
                    // Detached: gradients carry their op graph, and a moment that
                    // kept it would chain every step's graph to the next (memory
                    // grows with every update).
                    *m = next_m.detach();
                    *v = next_v.detach();
                    s.var.set(&next_theta)?;
                }
            }
        }
        Ok(())
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr
    }

    /// Forgets the moments and the step count.
    pub fn reset(&mut self) -> Result<()> {
        self.step_t = 0;
        for s in &mut self.slots {
            if let Some((m, v)) = &mut s.m {
                *m = m.zeros_like()?;
                *v = v.zeros_like()?;
            }
        }
        Ok(())
    }

    /// Writes the variables, the moments, the step count and the learning rate.
    pub fn save(&self, s: &mut Snapshot) -> Result<()> {
        s.put_int("step_t", self.step_t);
        s.put_f64("lr", self.lr);
        for slot in &self.slots {
            s.put_tensor(&format!("var.{}", slot.name), slot.var.as_tensor())?;
            if let Some((m, v)) = &slot.m {
                s.put_tensor(&format!("adam_m.{}", slot.name), m)?;
                s.put_tensor(&format!("adam_v.{}", slot.name), v)?;
            }
        }
        Ok(())
    }

    pub fn load(&mut self, s: &mut Snapshot) -> Result<()> {
        self.step_t = s.int("step_t")?;
        self.lr = s.f64("lr")?;
        for slot in &mut self.slots {
            s.set_var(&format!("var.{}", slot.name), &slot.var)?;
            if let Some((m, v)) = &mut slot.m {
                *m = s.tensor_like(&format!("adam_m.{}", slot.name), m)?;
                *v = s.tensor_like(&format!("adam_v.{}", slot.name), v)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};

    /// Our AdamW and candle-nn's, on the same two-variable problem and stream, give
    /// the same variables bit for bit (same operations in the same order).
    #[test]
    fn adamw_equals_candle_nn_exactly() {
        let dev = Device::Cpu;
        let mk = || {
            let vm = VarMap::new();
            {
                let mut d = vm.data().lock().unwrap();
                d.insert("a".into(), Var::from_tensor(&Tensor::new(&[0.3f64, -0.2], &dev).unwrap()).unwrap());
                d.insert("b".into(), Var::from_tensor(&Tensor::new(&[0.1f64], &dev).unwrap()).unwrap());
            }
            vm
        };
        let (ours_vm, theirs_vm) = (mk(), mk());
        let mut ours = NetOptimizer::new(Optim::AdamW, &ours_vm, 0.05).unwrap();
        let mut theirs = AdamW::new(theirs_vm.all_vars(), ParamsAdamW { lr: 0.05, weight_decay: 0.0, ..Default::default() }).unwrap();
        let loss = |vm: &VarMap, i: usize| {
            let d = vm.data().lock().unwrap();
            let (a, b) = (d["a"].as_tensor().clone(), d["b"].as_tensor().clone());
            let x = Tensor::new(&[(i as f64).sin(), (i as f64 * 0.5).cos()], &dev).unwrap();
            let y = 2.0 * (i as f64).sin() - 0.5;
            let p = (a * x).unwrap().sum_all().unwrap().broadcast_add(&b.sum_all().unwrap()).unwrap();
            (p - y).unwrap().sqr().unwrap()
        };
        for i in 0..40 {
            ours.step(&loss(&ours_vm, i)).unwrap();
            theirs.backward_step(&loss(&theirs_vm, i)).unwrap();
        }
        let flat = |vm: &VarMap| {
            let d = vm.data().lock().unwrap();
            let mut v = d["a"].as_tensor().to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
            v.extend(d["b"].as_tensor().to_vec1::<f64>().unwrap());
            v
        };
        assert_eq!(flat(&ours_vm), flat(&theirs_vm));
    }
}

//! The autograd optimizers used by the neural models (MLP, LSTM, CNN): candle-nn's
//! SGD and AdamW (weight decay off) behind one type.

use candle_core::{Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW, SGD};

use super::linear::Optim;
use crate::error::Result;

pub enum NetOptimizer {
    Sgd(SGD),
    AdamW(AdamW),
}

impl NetOptimizer {
    pub fn new(optim: Optim, vars: Vec<Var>, lr: f64) -> Result<Self> {
        Ok(match optim {
            Optim::Sgd => NetOptimizer::Sgd(SGD::new(vars, lr)?),
            Optim::AdamW => NetOptimizer::AdamW(AdamW::new(vars, ParamsAdamW { lr, weight_decay: 0.0, ..Default::default() })?),
        })
    }

    /// Backpropagates `loss` and takes one step.
    pub fn step(&mut self, loss: &Tensor) -> Result<()> {
        match self {
            NetOptimizer::Sgd(o) => o.backward_step(loss)?,
            NetOptimizer::AdamW(o) => o.backward_step(loss)?,
        }
        Ok(())
    }

    pub fn set_lr(&mut self, lr: f64) {
        match self {
            NetOptimizer::Sgd(o) => o.set_learning_rate(lr),
            NetOptimizer::AdamW(o) => o.set_learning_rate(lr),
        }
    }
}

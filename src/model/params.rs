//! A plain-code network's parameters with their optimizer state — θ, the AdamW
//! moments beside it, the step count and the learning rate — and their checkpoint in
//! candle's variable names and layouts (`var.<name>`, `adam_m.<name>`, `adam_v.<name>`,
//! `step_t`, `lr`, `updates`: what `optim::NetOptimizer` writes), so a checkpoint of a
//! plain network and of its candle version load into each other. Shared by the plain
//! LSTM (`lstm`) and the plain MLP and CNN (`plain`).

use super::kernels::{sgd_step, AdamStep, Real};
use super::linear::Optim;
use super::rand::Draws;
use super::Snapshot;
use crate::error::{Error, Result};

/// One of candle's variables: its name, its shape as [rows, cols] (a vector as
/// [n, 1]; only the element count is checked on load), the fan-in its initial values
/// are drawn with (uniform ±1/√fan_in), and where its element [r, c] sits in θ.
pub struct Var {
    pub name: String,
    pub shape: [usize; 2],
    pub fan_in: usize,
    pub at: Box<dyn Fn(usize, usize) -> usize>,
}

pub struct Params<F> {
    pub theta: Vec<F>,
    /// AdamW moments (empty for SGD).
    pub m: Vec<F>,
    pub v: Vec<F>,
    pub step_t: u64,
    pub optim: Optim,
    pub lr: f64,
    pub base_lr: f64,
    pub updates: u64,
}

impl<F: Real> Params<F> {
    /// `len` parameters drawn from `seed` as candle's versions draw them: the
    /// variables in `order`, each element in row-major order, uniform ±1/√fan_in.
    pub fn drawn(len: usize, order: &[Var], seed: u64, optim: Optim, lr: f64) -> Result<Self> {
        if optim == Optim::Nlms {
            return Err(Error::Config("model.optimizer \"nlms\" is for linear models; use adamw or sgd".into()));
        }
        let mut theta = vec![F::ZERO; len];
        let mut draws = Draws(seed);
        for var in order {
            let bound = 1.0 / (var.fan_in.max(1) as f64).sqrt();
            for r in 0..var.shape[0] {
                for c in 0..var.shape[1] {
                    theta[(var.at)(r, c)] = F::of(draws.symmetric(bound));
                }
            }
        }
        let moments = if optim == Optim::AdamW { vec![F::ZERO; len] } else { Vec::new() };
        Ok(Params { theta, v: moments.clone(), m: moments, step_t: 0, optim, lr, base_lr: lr, updates: 0 })
    }

    /// One optimizer step with the gradient `grad` of all of θ (as
    /// `optim::NetOptimizer`), counted as an update: [`Params::begin_step`] with one
    /// block.
    #[inline(always)]
    pub fn step(&mut self, grad: &[F]) {
        self.begin_step().slice(0, grad);
    }

    /// Begins one optimizer step, counted as an update, to be applied a slice of θ
    /// at a time with [`Stepper::slice`] as the gradient is worked out (every
    /// parameter once per step).
    #[inline(always)]
    pub fn begin_step(&mut self) -> Stepper<'_, F> {
        let adam = (self.optim == Optim::AdamW).then(|| {
            self.step_t += 1;
            AdamStep::at(self.step_t, self.lr)
        });
        self.updates += 1;
        Stepper { p: self, adam }
    }

    /// Forgets the moments and the step count; the configured learning rate again.
    pub fn reset_optimizer(&mut self) {
        self.step_t = 0;
        self.m.fill(F::ZERO);
        self.v.fill(F::ZERO);
        self.lr = self.base_lr;
    }

    pub fn set_lr_scale(&mut self, scale: f64) {
        self.lr = self.base_lr * scale;
    }

    /// `of`'s values (θ or a moment) per variable of `vars`, in candle's layout.
    pub fn values(of: &[F], vars: &[Var]) -> Vec<(String, Vec<f64>)> {
        vars.iter()
            .map(|Var { name, shape: [rows, cols], at, .. }| (name.clone(), (0..*rows).flat_map(|r| (0..*cols).map(move |c| (r, c))).map(|(r, c)| of[at(r, c)].f64()).collect()))
            .collect()
    }

    /// θ flattened in `vars`' order and candle's layouts.
    pub fn flat(&self, vars: &[Var]) -> Vec<f64> {
        Self::values(&self.theta, vars).into_iter().flat_map(|(_, v)| v).collect()
    }

    pub fn save(&self, s: &mut Snapshot, vars: &[Var]) {
        s.put_int("updates", self.updates);
        s.put_int("step_t", self.step_t);
        s.put_f64("lr", self.lr);
        let mut put = |prefix: &str, of: &[F]| {
            for (name, v) in Self::values(of, vars) {
                s.put(&format!("{prefix}.{name}"), v);
            }
        };
        put("var", &self.theta);
        if self.optim == Optim::AdamW {
            put("adam_m", &self.m);
            put("adam_v", &self.v);
        }
    }

    /// Reads what `save` wrote (or the candle version's checkpoint), rounding to F; a
    /// checkpoint that fails half-way leaves everything as it was.
    pub fn load(&mut self, s: &Snapshot, vars: &[Var]) -> Result<()> {
        let (updates, step_t, lr) = (s.int("updates")?, s.int("step_t")?, s.f64("lr")?);
        let read = |prefix: &str, into: &mut Vec<F>| -> Result<()> {
            for Var { name, shape: [rows, cols], at, .. } in vars {
                let v = s.array_shaped(&format!("{prefix}.{name}"), &[*rows, *cols])?;
                for r in 0..*rows {
                    for c in 0..*cols {
                        into[at(r, c)] = F::of(v[r * cols + c]);
                    }
                }
            }
            Ok(())
        };
        let (mut theta, mut m, mut v) = (self.theta.clone(), self.m.clone(), self.v.clone());
        read("var", &mut theta)?;
        if self.optim == Optim::AdamW {
            read("adam_m", &mut m)?;
            read("adam_v", &mut v)?;
        }
        (self.theta, self.m, self.v) = (theta, m, v);
        (self.updates, self.step_t, self.lr) = (updates, step_t, lr);
        Ok(())
    }
}

/// One optimizer step under way ([`Params::begin_step`]).
pub struct Stepper<'a, F> {
    p: &'a mut Params<F>,
    adam: Option<AdamStep<F>>,
}

impl<F: Real> Stepper<'_, F> {
    /// Steps θ[at..at + grad.len()] with its gradient `grad`.
    #[inline(always)]
    pub fn slice(&mut self, at: usize, grad: &[F]) {
        let end = at + grad.len();
        match &self.adam {
            Some(a) => a.apply(&mut self.p.theta[at..end], &mut self.p.m[at..end], &mut self.p.v[at..end], grad),
            None => sgd_step(&mut self.p.theta[at..end], grad, self.p.lr),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(optim: Optim) -> Params<f64> {
        let order = [Var { name: "w".into(), shape: [10, 1], fan_in: 3, at: Box::new(|r, _| r) }];
        Params::drawn(10, &order, 5, optim, 0.05).unwrap()
    }

    /// Steps begun once and applied a block at a time, in any block order, give
    /// θ and the moments of the whole-gradient step, bit for bit; and that step is
    /// AdamW (weight decay 0) as written out here with `powi` (candle-nn's
    /// formula: m̂ / (√v̂ + ε), β₁ = 0.9, β₂ = 0.999, ε = 10⁻⁸), or θ − lr·g for SGD.
    #[test]
    fn a_step_in_blocks_is_the_whole_step() {
        for optim in [Optim::AdamW, Optim::Sgd] {
            let (mut whole, mut blocks) = (params(optim), params(optim));
            let (mut theta, mut m, mut v) = (whole.theta.clone(), vec![0.0; 10], vec![0.0; 10]);
            for t in 1..=30i32 {
                let grad: Vec<f64> = (0..10).map(|i| ((i as f64 + 1.0) * t as f64 * 0.37).sin()).collect();
                whole.step(&grad);
                let mut s = blocks.begin_step();
                for (at, len) in [(7, 3), (0, 4), (4, 3)] {
                    s.slice(at, &grad[at..at + len]);
                }
                for i in 0..10 {
                    if optim == Optim::AdamW {
                        m[i] = m[i] * 0.9 + grad[i] * (1.0 - 0.9);
                        v[i] = v[i] * 0.999 + grad[i] * grad[i] * (1.0 - 0.999);
                        let (mh, vh) = (m[i] * (1.0 / (1.0 - 0.9f64.powi(t))), v[i] * (1.0 / (1.0 - 0.999f64.powi(t))));
                        theta[i] -= mh / (vh.sqrt() + 1e-8) * 0.05;
                    } else {
                        theta[i] -= grad[i] * 0.05;
                    }
                }
                assert_eq!(blocks.theta, whole.theta, "{optim:?} step {t}");
                assert_eq!((&blocks.m, &blocks.v), (&whole.m, &whole.v));
                assert_eq!(whole.theta, theta, "{optim:?} step {t}: the written-out step");
            }
            assert_eq!((blocks.updates, blocks.step_t), (whole.updates, whole.step_t));
            assert_eq!(blocks.updates, 30);
        }
    }
}

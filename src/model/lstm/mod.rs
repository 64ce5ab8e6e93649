//! The LSTM regressor on the CPU as plain code: forward over the key's window,
//! backpropagation through time written out, AdamW or SGD in place — no tensors, no
//! per-row allocation — in f64, or in f32 for `model.precision = "f32"` (the same
//! code over [`Real`]; the f64 instance keeps the bits it had before f32 existed).
//! The same model as `seq::SeqModel`'s candle-nn LSTM (gate order
//! input, forget, cell, output; last hidden state → linear head; the same seeded
//! initial weights, drawn in the same name order) whose autograd serves as the test's
//! independent reference. candle's version stays for CUDA.
//!
//! One step of a 32-unit LSTM over 8 rows of 8 features is ~50k multiply-adds forward
//! and ~75k backward; candle spent most of a step on ~400 tiny tensor ops.
//!
//! Parameters live in one flat vector θ laid out for contiguous inner loops (the
//! weight matrices transposed: one row of 4h gate values per input), with the AdamW
//! moments beside it in the same layout. Checkpoints store them under candle's
//! variable names and layouts, so a checkpoint of either implementation loads into
//! the other (as f64 values: an f32 model's are exact, and candle's F32 LSTM is its
//! reference).

mod layout;

use layout::{sized, Layout, Scratch, WithScratch};

use super::kernels::{dot, dot_rows, gemv_acc, sigmoid, tanh, Real, Simd};
use super::loss::Loss;
use super::net::Training;
use super::params::Params;
use super::{OnlineModel, Snapshot};
use crate::error::{Error, Result};

/// `F` is the precision the weights, moments and passes are held and computed in:
/// f64, or f32 for `model.precision = "f32"` (inputs and outputs stay f64).
pub struct LstmModel<F: Real = f64> {
    lay: Layout,
    window: usize,
    /// θ and its optimizer state.
    p: Params<F>,
    loss: Loss,
    /// Unique per model (never reused), and bumped whenever θ changes: the tag of a
    /// forward pass kept in the thread's scratch.
    id: u64,
    version: u64,
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl<F: Real + WithScratch> LstmModel<F> {
    /// An LSTM over windows of `window` rows of `d` features with `hidden` units.
    pub fn new(window: usize, d: usize, hidden: usize, t: &Training) -> Result<Self> {
        let Training { loss, optim, learning_rate: lr, seed } = *t;
        if window == 0 || hidden == 0 || d == 0 {
            return Err(Error::Config("lstm needs model.window ≥ 1, a hidden size ≥ 1 and ≥ 1 feature".into()));
        }
        let lay = Layout::new(d, hidden);
        // As seq::seed_vars: variables in name order, uniform ±1/√fan_in.
        let vars = lay.vars();
        Ok(LstmModel {
            lay,
            window,
            p: Params::drawn(lay.len, &vars, seed, optim, lr)?,
            loss,
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            version: 0,
        })
    }

    fn check(&self, x: &[f64]) -> Result<()> {
        if x.len() != self.window * self.lay.d {
            return Err(Error::Internal(format!("expected {}×{} window values, got {}", self.window, self.lay.d, x.len())));
        }
        Ok(())
    }

    /// [`LstmModel::forward`], or the pass the scratch already holds for these
    /// weights and this input (bit for bit what it would compute again).
    #[inline(always)]
    fn forward_cached(&self, x: &[f64], s: &mut Scratch<F>) -> F {
        if s.last == Some((self.id, self.version)) && s.last_x == x {
            return s.last_pred;
        }
        let xs = std::mem::take(&mut s.xs);
        let pred = self.forward(&xs, s);
        s.xs = xs;
        s.last = Some((self.id, self.version));
        s.last_x.clear();
        s.last_x.extend_from_slice(x);
        s.last_pred = pred;
        pred
    }

    /// Runs the window through the cell, keeping every step's activations in `s`;
    /// returns the prediction.
    #[inline(always)]
    fn forward(&self, x: &[F], s: &mut Scratch<F>) -> F {
        // The activations are overwritten: whatever pass was kept is gone.
        s.last = None;
        let Layout { d, h, g, .. } = self.lay;
        let t_n = self.window;
        let th = &self.p.theta;
        let acts = sized(&mut s.acts, t_n * g);
        let cells = sized(&mut s.cells, t_n * h);
        let tanh_c = sized(&mut s.tanh_c, t_n * h);
        let hidden = sized(&mut s.hidden, t_n * h);
        // (x·W_ihᵀ + b_ih) + (h·W_hhᵀ + b_hh), as candle groups it. The inputs' part
        // does not wait on the recurrence: every step's, first, while W_ih is in
        // cache, so the steps' loop streams only W_hh.
        let pre_all = sized(&mut s.pre_a, t_n * g);
        for (t, pre_a) in pre_all.chunks_exact_mut(g).enumerate() {
            pre_a.copy_from_slice(&th[self.lay.b_ih..self.lay.b_ih + g]);
            gemv_acc(pre_a, &x[t * d..(t + 1) * d], &th[self.lay.wih..self.lay.wih + d * g]);
        }
        let pre_b = sized(&mut s.pre_b, g);
        for t in 0..t_n {
            let pre_a = &pre_all[t * g..(t + 1) * g];
            pre_b.copy_from_slice(&th[self.lay.b_hh..self.lay.b_hh + g]);
            if t > 0 {
                gemv_acc(pre_b, &hidden[(t - 1) * h..t * h], &th[self.lay.whh..self.lay.whh + h * g]);
            }
            let a = &mut acts[t * g..(t + 1) * g];
            // Gates i, f and o are sigmoids; the cell candidate (the third) a tanh.
            // Loops over whole slices, so they vectorise; each gate's function once.
            for r in [0..2 * h, 3 * h..g] {
                for ((ar, pa), pb) in a[r.clone()].iter_mut().zip(&pre_a[r.clone()]).zip(&pre_b[r]) {
                    *ar = sigmoid(*pa + *pb);
                }
            }
            for ((ar, pa), pb) in a[2 * h..3 * h].iter_mut().zip(&pre_a[2 * h..3 * h]).zip(&pre_b[2 * h..3 * h]) {
                *ar = tanh(*pa + *pb);
            }
            for k in 0..h {
                let prev = if t > 0 { cells[(t - 1) * h + k] } else { F::ZERO };
                cells[t * h + k] = a[h + k] * prev + a[k] * a[2 * h + k];
            }
            for k in 0..h {
                tanh_c[t * h + k] = tanh(cells[t * h + k]);
            }
            for k in 0..h {
                hidden[t * h + k] = a[3 * h + k] * tanh_c[t * h + k];
            }
        }
        let last = &hidden[(t_n - 1) * h..t_n * h];
        dot(last, &th[self.lay.head_w..self.lay.head_w + h]) + th[self.lay.head_b]
    }

    /// Backpropagation through time for the window `x` whose forward pass is in `s`,
    /// and the optimizer step: ∂loss/∂θ is worked out a block of θ at a time (a
    /// weight row, a bias, the head) into one row-sized buffer and each block
    /// stepped as soon as it is complete — θ, the moments and the gradient meet
    /// while in cache, and no θ-sized gradient is written, cleared or read back.
    /// Every value is what a whole gradient then one step over θ gives, bit for bit
    /// (the step is per element; the block's gradient is the same sums).
    #[inline(always)]
    fn backward_step(&mut self, x: &[F], dpred: F, s: &mut Scratch<F>) {
        let Layout { d, h, g, .. } = self.lay;
        let t_n = self.window;
        let lay = self.lay;
        let Scratch { acts, cells, tanh_c, hidden, grad, dh, dh_prev, dc, dpre, coefs, .. } = s;
        // One block's gradient: a row of g gate values, or the head's h + 1.
        let row = sized(grad, g.max(h + 1));
        let dh = sized(dh, h);
        let dh_prev = sized(dh_prev, h);
        let dc = sized(dc, h);
        // Every step's ∂loss/∂(gate pre-activations), kept for the weight gradients.
        let dpre_all = sized(dpre, t_n * g);
        let coefs = sized(coefs, t_n);
        {
            // θ is only read until every step's dpre is known.
            let th = &self.p.theta;
            for k in 0..h {
                dh[k] = th[lay.head_w + k] * dpred;
            }
            dc.fill(F::ZERO);
            for t in (0..t_n).rev() {
                let a = &acts[t * g..(t + 1) * g];
                let dpre = &mut dpre_all[t * g..(t + 1) * g];
                for k in 0..h {
                    let (i, f, gg, o) = (a[k], a[h + k], a[2 * h + k], a[3 * h + k]);
                    let tc = tanh_c[t * h + k];
                    let c_prev = if t > 0 { cells[(t - 1) * h + k] } else { F::ZERO };
                    let one = F::ONE;
                    let dck = dc[k] + dh[k] * o * (one - tc * tc);
                    dpre[k] = dck * gg * i * (one - i);
                    dpre[h + k] = dck * c_prev * f * (one - f);
                    dpre[2 * h + k] = dck * i * (one - gg * gg);
                    dpre[3 * h + k] = dh[k] * tc * o * (one - o);
                    dc[k] = dck * f;
                }
                if t > 0 {
                    dot_rows(dh_prev, &th[lay.whh..lay.whh + h * g], dpre);
                    dh.copy_from_slice(dh_prev);
                }
            }
        }
        let mut step = self.p.begin_step();
        // The weight gradients sum over the steps: ∂W_ihᵀ[j] = Σₜ xₜ[j]·dpreₜ,
        // ∂W_hhᵀ[k] = Σₜ₌₁ hₜ₋₁[k]·dpreₜ, the biases Σₜ dpreₜ — each row one block.
        let grow = &mut row[..g];
        coefs.fill(F::ONE);
        grow.fill(F::ZERO);
        gemv_acc(grow, coefs, dpre_all);
        step.slice(lay.b_ih, grow);
        step.slice(lay.b_hh, grow);
        for j in 0..d {
            for (c, t) in coefs.iter_mut().zip(0..t_n) {
                *c = x[t * d + j];
            }
            grow.fill(F::ZERO);
            gemv_acc(grow, coefs, dpre_all);
            step.slice(lay.wih + j * g, grow);
        }
        for k in 0..h {
            grow.fill(F::ZERO);
            // One step only: W_hh had no part in it; its gradient is zero (and AdamW
            // still moves it by its moments).
            if t_n > 1 {
                for (c, t) in coefs.iter_mut().zip(1..t_n) {
                    *c = hidden[(t - 1) * h + k];
                }
                gemv_acc(grow, &coefs[..t_n - 1], &dpre_all[g..]);
            }
            step.slice(lay.whh + k * g, grow);
        }
        // The head (weights, then the bias right after them in θ).
        let last = &hidden[(t_n - 1) * h..t_n * h];
        let head = &mut row[..h + 1];
        for k in 0..h {
            head[k] = last[k] * dpred;
        }
        head[h] = dpred;
        step.slice(lay.head_w, head);
    }

    /// One update: forward, backward, optimizer step; returns the loss before it.
    #[inline(always)]
    fn learn(&mut self, x: &[f64], y: f64, s: &mut Scratch<F>) -> f64 {
        let pred = self.forward_cached(x, s);
        let (loss, dpred) = self.loss.value_slope(pred.f64(), y);
        let xs = std::mem::take(&mut s.xs);
        self.backward_step(&xs, F::of(dpred), s);
        s.xs = xs;
        self.version += 1;
        loss
    }

    // The same code compiled for AVX2's 4-wide f64 lanes. No FMA: every product and
    // sum is rounded as in the baseline build, so the results are bit for bit the same
    // on any x86-64 (tested).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn forward_avx2(&self, x: &[f64], s: &mut Scratch<F>) -> F {
        self.forward_cached(x, s)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn learn_avx2(&mut self, x: &[f64], y: f64, s: &mut Scratch<F>) -> f64 {
        self.learn(x, y, s)
    }

    // And for AVX-512's 8-wide lanes (same rounding, same bits: tested).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn forward_avx512(&self, x: &[f64], s: &mut Scratch<F>) -> F {
        self.forward_cached(x, s)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn learn_avx512(&mut self, x: &[f64], y: f64, s: &mut Scratch<F>) -> f64 {
        self.learn(x, y, s)
    }
}

impl<F: Real + WithScratch> OnlineModel for LstmModel<F> {
    fn predict(&self, x: &[f64]) -> Result<f64> {
        self.check(x)?;
        Ok(F::with_scratch(|s| {
            s.take_input(x);
            match Simd::detect() {
                // SAFETY: `Simd::detect` found the instruction set on this CPU.
                #[cfg(target_arch = "x86_64")]
                Simd::Avx512 => unsafe { self.forward_avx512(x, s) }.f64(),
                #[cfg(target_arch = "x86_64")]
                Simd::Avx2 => unsafe { self.forward_avx2(x, s) }.f64(),
                _ => self.forward_cached(x, s).f64(),
            }
        }))
    }

    fn update(&mut self, x: &[f64], y: f64) -> Result<f64> {
        self.check(x)?;
        F::with_scratch(|s| {
            s.take_input(x);
            Ok(match Simd::detect() {
                // SAFETY: `Simd::detect` found the instruction set on this CPU.
                #[cfg(target_arch = "x86_64")]
                Simd::Avx512 => unsafe { self.learn_avx512(x, y, s) },
                #[cfg(target_arch = "x86_64")]
                Simd::Avx2 => unsafe { self.learn_avx2(x, y, s) },
                _ => self.learn(x, y, s),
            })
        })
    }

    fn updates(&self) -> u64 {
        self.p.updates
    }

    fn parameters(&self) -> Result<Vec<f64>> {
        Ok(self.p.flat(&self.lay.vars()))
    }

    fn reset_optimizer(&mut self) -> Result<()> {
        self.p.reset_optimizer();
        Ok(())
    }

    fn set_lr_scale(&mut self, scale: f64) -> Result<()> {
        self.p.set_lr_scale(scale);
        Ok(())
    }

    /// The names and layouts `seq::SeqModel` writes (its `NetOptimizer`'s).
    fn save(&self, s: &mut Snapshot) -> Result<()> {
        self.p.save(s, &self.lay.vars());
        Ok(())
    }

    fn load(&mut self, s: &mut Snapshot) -> Result<()> {
        self.version += 1;
        self.p.load(s, &self.lay.vars())
    }
}

#[cfg(test)]
mod tests;

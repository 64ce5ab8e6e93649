//! The LSTM's parameter layout in one flat θ (candle's variable names and shapes,
//! so checkpoints cross-load) and the per-thread scratch its passes reuse.

use std::cell::RefCell;

pub(super) use crate::model::kernels::sized;
use crate::model::kernels::Real;
use crate::model::params::Var;

/// Where each parameter block starts in θ (d inputs, h hidden units, g = 4h).
#[derive(Debug, Clone, Copy)]
pub(super) struct Layout {
    pub(super) d: usize,
    pub(super) h: usize,
    pub(super) g: usize,
    /// W_ihᵀ: d rows of g.
    pub(super) wih: usize,
    /// W_hhᵀ: h rows of g.
    pub(super) whh: usize,
    pub(super) b_ih: usize,
    pub(super) b_hh: usize,
    pub(super) head_w: usize,
    pub(super) head_b: usize,
    pub(super) len: usize,
}

impl Layout {
    pub(super) fn new(d: usize, h: usize) -> Self {
        let g = 4 * h;
        let wih = 0;
        let whh = wih + d * g;
        let b_ih = whh + h * g;
        let b_hh = b_ih + g;
        let head_w = b_hh + g;
        let head_b = head_w + h;
        Layout { d, h, g, wih, whh, b_ih, b_hh, head_w, head_b, len: head_b + 1 }
    }

    /// candle's variables in name order, with their θ index of element [r, c] and the
    /// fan-in `seq::seed_vars` draws them with (the product of the trailing
    /// dimensions: a weight's columns, a bias's own length).
    pub(super) fn vars(&self) -> Vec<Var> {
        let (g, s) = (self.g, *self);
        let var = |name: &str, shape: [usize; 2], at: Box<dyn Fn(usize, usize) -> usize>| {
            let fan_in = if name.contains("weight") { shape[1] } else { shape[0] * shape[1] };
            Var { name: name.into(), shape, fan_in, at }
        };
        vec![
            var("head.bias", [1, 1], Box::new(move |_, _| s.head_b)),
            var("head.weight", [1, s.h], Box::new(move |_, c| s.head_w + c)),
            var("lstm.bias_hh_l0", [1, g], Box::new(move |_, c| s.b_hh + c)),
            var("lstm.bias_ih_l0", [1, g], Box::new(move |_, c| s.b_ih + c)),
            // W_hh is [g, h]: element [r, c] sits at row c, column r of W_hhᵀ.
            var("lstm.weight_hh_l0", [g, s.h], Box::new(move |r, c| s.whh + c * g + r)),
            var("lstm.weight_ih_l0", [g, s.d], Box::new(move |r, c| s.wih + c * g + r)),
        ]
    }
}

/// Per-thread buffers of one forward/backward pass (reused; sized on first use).
#[derive(Default)]
pub struct Scratch<F> {
    /// The input window in F (a copy of the f64 row).
    pub(super) xs: Vec<F>,
    /// Per step: gate activations (i, f, g, o: 4h), cell c (h), tanh(c) (h), hidden (h).
    pub(super) acts: Vec<F>,
    pub(super) cells: Vec<F>,
    pub(super) tanh_c: Vec<F>,
    pub(super) hidden: Vec<F>,
    /// Per step: the gate pre-activations' input part x·W_ihᵀ + b_ih (4h), and the
    /// current step's recurrent part h·W_hhᵀ + b_hh.
    pub(super) pre_a: Vec<F>,
    pub(super) pre_b: Vec<F>,
    /// One block of ∂loss/∂θ (a weight row, a bias, the head), stepped as soon as
    /// it is complete.
    pub(super) grad: Vec<F>,
    pub(super) dh: Vec<F>,
    pub(super) dh_prev: Vec<F>,
    pub(super) dc: Vec<F>,
    pub(super) dpre: Vec<F>,
    /// One coefficient per step (a column of the inputs or hidden states).
    pub(super) coefs: Vec<F>,
    /// Whose forward pass the activations above hold: (model id, weights version),
    /// its input and its output. A prediction followed by the update on the same row
    /// (a horizon of one row) reuses it instead of running the window again.
    pub(super) last: Option<(u64, u64)>,
    pub(super) last_x: Vec<f64>,
    pub(super) last_pred: F,
}

impl<F: Real> Scratch<F> {
    /// The f64 input window copied into `xs` in F.
    #[inline(always)]
    pub(super) fn take_input(&mut self, x: &[f64]) {
        self.xs.clear();
        self.xs.extend(x.iter().map(|&v| F::of(v)));
    }
}

thread_local! {
    static SCRATCH64: RefCell<Scratch<f64>> = RefCell::new(Scratch::default());
    static SCRATCH32: RefCell<Scratch<f32>> = RefCell::new(Scratch::default());
}

/// The thread's scratch for the precision `Self` (f64 and f32 each have their own).
pub trait WithScratch: Real {
    fn with_scratch<R>(f: impl FnOnce(&mut Scratch<Self>) -> R) -> R;
}

impl WithScratch for f64 {
    fn with_scratch<R>(f: impl FnOnce(&mut Scratch<f64>) -> R) -> R {
        SCRATCH64.with(|s| f(&mut s.borrow_mut()))
    }
}

impl WithScratch for f32 {
    fn with_scratch<R>(f: impl FnOnce(&mut Scratch<f32>) -> R) -> R {
        SCRATCH32.with(|s| f(&mut s.borrow_mut()))
    }
}

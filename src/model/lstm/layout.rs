//! The LSTM's parameter layout in one flat θ (candle's variable names and shapes,
//! so checkpoints cross-load) and the per-thread scratch its passes reuse.

use std::cell::RefCell;

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

    /// candle's variables in name order: (name, shape, θ index of element [r, c]).
    pub(super) fn vars(&self) -> [(&'static str, [usize; 2], Box<dyn Fn(usize, usize) -> usize + '_>); 6] {
        let (g, s) = (self.g, *self);
        [
            ("head.bias", [1, 1], Box::new(move |_, _| s.head_b)),
            ("head.weight", [1, s.h], Box::new(move |_, c| s.head_w + c)),
            ("lstm.bias_hh_l0", [1, g], Box::new(move |_, c| s.b_hh + c)),
            ("lstm.bias_ih_l0", [1, g], Box::new(move |_, c| s.b_ih + c)),
            // W_hh is [g, h]: element [r, c] sits at row c, column r of W_hhᵀ.
            ("lstm.weight_hh_l0", [g, s.h], Box::new(move |r, c| s.whh + c * g + r)),
            ("lstm.weight_ih_l0", [g, s.d], Box::new(move |r, c| s.wih + c * g + r)),
        ]
    }
}

/// Per-thread buffers of one forward/backward pass (reused; sized on first use).
#[derive(Default)]
pub(super) struct Scratch {
    /// Per step: gate activations (i, f, g, o: 4h), cell c (h), tanh(c) (h), hidden (h).
    pub(super) acts: Vec<f64>,
    pub(super) cells: Vec<f64>,
    pub(super) tanh_c: Vec<f64>,
    pub(super) hidden: Vec<f64>,
    pub(super) pre_a: Vec<f64>,
    pub(super) pre_b: Vec<f64>,
    pub(super) grad: Vec<f64>,
    pub(super) dh: Vec<f64>,
    pub(super) dh_prev: Vec<f64>,
    pub(super) dc: Vec<f64>,
    pub(super) dpre: Vec<f64>,
    /// One coefficient per step (a column of the inputs or hidden states).
    pub(super) coefs: Vec<f64>,
    /// Whose forward pass the activations above hold: (model id, weights version),
    /// its input and its output. A prediction followed by the update on the same row
    /// (a horizon of one row) reuses it instead of running the window again.
    pub(super) last: Option<(u64, u64)>,
    pub(super) last_x: Vec<f64>,
    pub(super) last_pred: f64,
}

thread_local! {
    pub(super) static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

pub(super) fn sized(v: &mut Vec<f64>, n: usize) -> &mut [f64] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}


//! The 1-D CNN's layers as plain code: as `seq::Seq`'s CNN, a Conv1d over the window
//! (features as channels, `hidden` filters of `kernel` steps, stride 1, no padding),
//! ReLU, flattened (filter-major, as candle's `flatten_from(1)`) into a linear head.
//!
//! The window arrives oldest row first (`window` rows of `d` features), so the k rows
//! under the filter at position p are one contiguous run of k·d inputs: the filters are
//! held as Wᵀ (k·d rows of `hidden`, row j·d + i for feature i at step j) and each
//! position is one gemv over that run.

use super::{sized, Bufs, Net, Var};
use crate::model::kernels::{axpy, dot, gemv_acc, Real};

pub struct CnnNet {
    window: usize,
    d: usize,
    hidden: usize,
    kernel: usize,
    /// Positions of the filter: window − kernel + 1.
    positions: usize,
    /// θ: Wᵀ at 0, the filter biases, the head's weights (position-major: [p·hidden +
    /// c]), the head's bias.
    b: usize,
    hw: usize,
    hb: usize,
}

impl CnnNet {
    /// `kernel` in 1..=window (checked by the caller).
    pub fn new(window: usize, d: usize, hidden: usize, kernel: usize) -> Self {
        let positions = window - kernel + 1;
        let b = kernel * d * hidden;
        let hw = b + hidden;
        let hb = hw + positions * hidden;
        CnnNet { window, d, hidden, kernel, positions, b, hw, hb }
    }
}

impl Net for CnnNet {
    /// As candle's sequence nets: a step per row, also in `update_batch`.
    const MEAN_BATCH: bool = false;

    fn inputs(&self) -> usize {
        self.window * self.d
    }

    fn params(&self) -> usize {
        self.hb + 1
    }

    /// candle's names and shapes, sorted (the order `seq::seed_vars` draws them in);
    /// fan-in the product of a variable's trailing dimensions, a vector's own length.
    fn vars(&self) -> Vec<Var> {
        let CnnNet { d, hidden: h, kernel: k, positions: p, b, hw, hb, .. } = *self;
        vec![
            Var { name: "conv.bias".into(), shape: [h, 1], fan_in: h, at: Box::new(move |c, _| b + c) },
            // [h, d, k] as [h, d·k]: element [c, i·k + j] is feature i at step j.
            Var { name: "conv.weight".into(), shape: [h, d * k], fan_in: d * k, at: Box::new(move |c, col| (col % k * d + col / k) * h + c) },
            Var { name: "head.bias".into(), shape: [1, 1], fan_in: 1, at: Box::new(move |_, _| hb) },
            // [1, h·p], filter-major: element c·p + q is filter c at position q.
            Var { name: "head.weight".into(), shape: [1, h * p], fan_in: h * p, at: Box::new(move |_, col| hw + col % p * h + col / p) },
        ]
    }

    fn draw_order(&self) -> Vec<Var> {
        self.vars()
    }

    #[inline(always)]
    fn forward<F: Real>(&self, th: &[F], x: &[F], s: &mut Bufs<F>) -> F {
        let (h, run, n) = (self.hidden, self.kernel * self.d, self.positions * self.hidden);
        let (z, a) = (sized(&mut s.z, n), sized(&mut s.a, n));
        for p in 0..self.positions {
            let zp = &mut z[p * h..(p + 1) * h];
            // The convolution, then the bias (candle adds it to the finished sums).
            zp.fill(F::ZERO);
            gemv_acc(zp, &x[p * self.d..p * self.d + run], &th[..self.b]);
            for (zc, bc) in zp.iter_mut().zip(&th[self.b..self.hw]) {
                *zc += *bc;
            }
        }
        a.iter_mut().zip(z.iter()).for_each(|(a, z)| *a = if *z > F::ZERO { *z } else { F::ZERO });
        dot(a, &th[self.hw..self.hb]) + th[self.hb]
    }

    #[inline(always)]
    fn backward<F: Real>(&self, th: &[F], x: &[F], dpred: F, s: &mut Bufs<F>, grad: &mut [F]) {
        let (h, run, n) = (self.hidden, self.kernel * self.d, self.positions * self.hidden);
        let (z, a, dz) = (&s.z[..n], &s.a[..n], sized(&mut s.dz, n));
        grad[self.hb] += dpred;
        axpy(&mut grad[self.hw..self.hb], dpred, a);
        // candle's ReLU gradient: 1 where the pre-activation is ≥ 0.
        for ((d, z), w) in dz.iter_mut().zip(z).zip(&th[self.hw..self.hb]) {
            *d = if *z >= F::ZERO { *w * dpred } else { F::ZERO };
        }
        for p in 0..self.positions {
            let dzp = &dz[p * h..(p + 1) * h];
            axpy(&mut grad[self.b..self.hw], F::ONE, dzp);
            for (r, &xv) in x[p * self.d..p * self.d + run].iter().enumerate() {
                axpy(&mut grad[r * h..(r + 1) * h], xv, dzp);
            }
        }
    }
}

//! Numeric kernels of the plain-code networks, generic over f64 and f32 ([`Real`]): a
//! vectorisable eˣ, sigmoid and tanh, and the fixed-order vector loops (axpy,
//! four-row gemv, sixteen-sum dot, four dots at once). Fixed summation orders and no
//! FMA: the same bits on any x86-64 and in any build, for either precision.

use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub, SubAssign};

/// The float types the kernels and the plain-code LSTM run in: f64 (the default, the
/// bits the candle reference pins) and f32 (half the memory traffic and twice the
/// SIMD lanes, for users who ask for `model.precision = "f32"`).
pub trait Real:
    Copy
    + Default
    + PartialEq
    + PartialOrd
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
{
    const ZERO: Self;
    const ONE: Self;
    const TWO: Self;
    /// `x` rounded to this type (exact for f64).
    fn of(x: f64) -> Self;
    /// The value as f64 (exact).
    fn f64(self) -> f64;
    /// The correctly rounded square root.
    fn root(self) -> Self;
    /// [`exp`] in this type.
    fn exp_k(self) -> Self;
}

impl Real for f64 {
    const ZERO: f64 = 0.0;
    const ONE: f64 = 1.0;
    const TWO: f64 = 2.0;
    #[inline(always)]
    fn of(x: f64) -> f64 {
        x
    }
    #[inline(always)]
    fn f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn root(self) -> f64 {
        self.sqrt()
    }
    #[inline(always)]
    fn exp_k(self) -> f64 {
        exp64(self)
    }
}

impl Real for f32 {
    const ZERO: f32 = 0.0;
    const ONE: f32 = 1.0;
    const TWO: f32 = 2.0;
    #[inline(always)]
    fn of(x: f64) -> f32 {
        x as f32
    }
    #[inline(always)]
    fn f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn root(self) -> f32 {
        self.sqrt()
    }
    #[inline(always)]
    fn exp_k(self) -> f32 {
        exp32(self)
    }
}

/// eˣ in either precision (see [`exp64`], [`exp32`]).
#[inline(always)]
pub fn exp<F: Real>(x: F) -> F {
    x.exp_k()
}

/// eˣ without a library call, so loops over gates vectorise: x = k·ln 2 + r with
/// |r| ≤ ½ln 2 (Cody–Waite, ln 2 split in two), eʳ by its Taylor series to r¹²
/// (truncation < 2·10⁻¹⁶ relative), 2ᵏ put straight into the exponent bits. Within
/// ~2 ulp of libm's (tested); saturates below e⁻⁷⁰⁸ and above e⁷⁰⁹.
#[inline(always)]
pub fn exp64(x: f64) -> f64 {
    const LOG2E: f64 = std::f64::consts::LOG2_E;
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    // Adding 1.5·2⁵² rounds to an integer and leaves it in the low mantissa bits.
    const SHIFT: f64 = 6_755_399_441_055_744.0;
    let x = x.clamp(-708.0, 709.0);
    let t = x * LOG2E + SHIFT;
    let k = t - SHIFT;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let mut p = 1.0 / 479_001_600.0;
    for c in [39_916_800.0, 3_628_800.0, 362_880.0, 40_320.0, 5_040.0, 720.0, 120.0, 24.0, 6.0, 2.0, 1.0, 1.0] {
        p = p * r + 1.0 / c;
    }
    let two_k = f64::from_bits(t.to_bits().wrapping_add(1023) << 52);
    p * two_k
}

/// eˣ in f32, as [`exp64`]: x = k·ln 2 + r with |r| ≤ ½ln 2 (Cody–Waite, ln 2 split
/// in two), eʳ by its Taylor series to r⁸ (truncation < 10⁻⁹ relative), 2ᵏ put
/// straight into the exponent bits. Within a few ulp of libm's (tested); saturates
/// below e⁻⁸⁷ and above e⁸⁸.
#[inline(always)]
pub fn exp32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2's leading 16 bits (k·LN2_HI is exact for |k| ≤ 2⁸) and the rest.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding 1.5·2²³ rounds to an integer and leaves it in the low mantissa bits.
    const SHIFT: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + SHIFT;
    let k = t - SHIFT;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let mut p = 1.0 / 40_320.0;
    for c in [5_040.0, 720.0, 120.0, 24.0, 6.0, 2.0, 1.0, 1.0] {
        p = p * r + 1.0 / c;
    }
    let two_k = f32::from_bits(t.to_bits().wrapping_add(127) << 23);
    p * two_k
}

#[inline(always)]
pub fn sigmoid<F: Real>(x: F) -> F {
    F::ONE / (F::ONE + exp(-x))
}

/// tanh x = 1 − 2/(e²ˣ + 1): absolute error ~10⁻¹⁶ (relative error grows near 0,
/// where the value itself is small).
#[inline(always)]
pub fn tanh<F: Real>(x: F) -> F {
    F::ONE - F::TWO / (exp(F::TWO * x) + F::ONE)
}

/// y += a·x over equal-length slices.
#[inline(always)]
pub fn axpy<F: Real>(y: &mut [F], a: F, x: &[F]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * *xi;
    }
}

/// y += Σᵢ aᵢ·wᵢ, wᵢ the i-th row (of y's length) of `w`, in a fixed order: per
/// element, the rows four at a time as (a₀w₀ + a₁w₁) + (a₂w₂ + a₃w₃), then the rest
/// one by one. Sixteen elements of y at a time stay in registers over all the rows
/// (one load and store of y in all), the rows read sixteen values at a time; a
/// length that is not a multiple of 16 ends in a block of 8 and one of 4 (vectors
/// too), then single elements — each element's sums are the same whatever its block.
#[inline(always)]
pub fn gemv_acc<F: Real>(y: &mut [F], a: &[F], w: &[F]) {
    let n = y.len();
    assert!(w.len() >= a.len() * n, "a row per coefficient");
    let mut c0 = 0;
    while c0 + 16 <= n {
        gemv_block::<F, 16>(y, a, w, c0);
        c0 += 16;
    }
    if c0 + 8 <= n {
        gemv_block::<F, 8>(y, a, w, c0);
        c0 += 8;
    }
    if c0 + 4 <= n {
        gemv_block::<F, 4>(y, a, w, c0);
        c0 += 4;
    }
    while c0 < n {
        gemv_block::<F, 1>(y, a, w, c0);
        c0 += 1;
    }
}

/// [`gemv_acc`] for y[c0..c0 + C], held in registers over all the rows.
#[inline(always)]
fn gemv_block<F: Real, const C: usize>(y: &mut [F], a: &[F], w: &[F], c0: usize) {
    let n = y.len();
    let yb: &mut [F; C] = (&mut y[c0..c0 + C]).try_into().expect("C values");
    let mut acc = *yb;
    let mut coefs = a.chunks_exact(4);
    let mut r = 0;
    for c in coefs.by_ref() {
        let row = |i: usize| -> &[F; C] { w[(r + i) * n + c0..(r + i) * n + c0 + C].try_into().expect("C values") };
        let (w0, w1, w2, w3) = (row(0), row(1), row(2), row(3));
        let (a0, a1, a2, a3) = (c[0], c[1], c[2], c[3]);
        for k in 0..C {
            acc[k] += (a0 * w0[k] + a1 * w1[k]) + (a2 * w2[k] + a3 * w3[k]);
        }
        r += 4;
    }
    for &ai in coefs.remainder() {
        let wr: &[F; C] = w[r * n + c0..r * n + c0 + C].try_into().expect("C values");
        for k in 0..C {
            acc[k] += ai * wr[k];
        }
        r += 1;
    }
    *yb = acc;
}

/// x·y with sixteen running sums (four 4-wide vectors; fixed order, so
/// deterministic), then the remainder.
#[inline(always)]
pub fn dot<F: Real>(x: &[F], y: &[F]) -> F {
    let mut acc = [F::ZERO; 16];
    let (xc, yc) = (x.chunks_exact(16), y.chunks_exact(16));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (a, b) in xc.zip(yc) {
        for k in 0..16 {
            acc[k] += a[k] * b[k];
        }
    }
    dot_finish(&acc, xr, yr)
}

/// [`dot`]'s sixteen sums folded in its fixed order, plus the remainder.
#[inline(always)]
fn dot_finish<F: Real>(acc: &[F; 16], xr: &[F], yr: &[F]) -> F {
    let mut lanes = [F::ZERO; 4];
    for k in 0..4 {
        lanes[k] = (acc[k] + acc[k + 4]) + (acc[k + 8] + acc[k + 12]);
    }
    let mut s = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    for (a, b) in xr.iter().zip(yr) {
        s += *a * *b;
    }
    s
}

/// `out[r] = dot(row r of m, y)` for the consecutive rows (of y's length) of `m`:
/// bit for bit [`dot`]'s sums, four rows at a time so each load of `y` serves four
/// rows and every row's sixteen sums stay in registers.
#[inline(always)]
pub fn dot_rows<F: Real>(out: &mut [F], m: &[F], y: &[F]) {
    let n = y.len();
    let (yc, yr) = (y.chunks_exact(16), y.chunks_exact(16).remainder());
    let mut outs = out.chunks_exact_mut(4);
    let mut rows = m.chunks_exact(n);
    for o in outs.by_ref() {
        let (r0, r1, r2, r3) = (rows.next().expect("a row per output"), rows.next().expect("row"), rows.next().expect("row"), rows.next().expect("row"));
        let (mut c0, mut c1, mut c2, mut c3) = ([F::ZERO; 16], [F::ZERO; 16], [F::ZERO; 16], [F::ZERO; 16]);
        for ((((b, a0), a1), a2), a3) in yc.clone().zip(r0.chunks_exact(16)).zip(r1.chunks_exact(16)).zip(r2.chunks_exact(16)).zip(r3.chunks_exact(16)) {
            for k in 0..16 {
                c0[k] += a0[k] * b[k];
                c1[k] += a1[k] * b[k];
                c2[k] += a2[k] * b[k];
                c3[k] += a3[k] * b[k];
            }
        }
        let tail = n - yr.len();
        o[0] = dot_finish(&c0, &r0[tail..], yr);
        o[1] = dot_finish(&c1, &r1[tail..], yr);
        o[2] = dot_finish(&c2, &r2[tail..], yr);
        o[3] = dot_finish(&c3, &r3[tail..], yr);
    }
    for o in outs.into_remainder() {
        *o = dot(rows.next().expect("a row per output"), y);
    }
}

/// The widest instruction set the plain networks' passes (LSTM, MLP, CNN) are compiled
/// for that this CPU runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Simd {
    Base,
    Avx2,
    Avx512,
}

impl Simd {
    /// AVX-512F, else AVX2, else the baseline build.
    pub fn detect() -> Simd {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Simd::Avx512;
            } else if std::arch::is_x86_feature_detected!("avx2") {
                return Simd::Avx2;
            }
        }
        Simd::Base
    }
}

/// `v`'s first `n` values, growing it (with zeros) if it is shorter: the plain
/// networks' reused buffers.
pub fn sized<F: Real>(v: &mut Vec<F>, n: usize) -> &mut [F] {
    if v.len() < n {
        v.resize(n, F::ZERO);
    }
    &mut v[..n]
}

/// One AdamW step (weight decay 0) at step `t` (1 on the first): its constants,
/// rounded once to F (exact for f64) and worked out once (the bias corrections take
/// a few dozen multiplications); [`AdamStep::apply`] then steps θ, with the moments
/// `m`, `v` beside it, a slice at a time with `optim::NetOptimizer`'s arithmetic per
/// element — so a gradient can be applied block by block as it is computed, with
/// the bits of one step over the whole of θ.
#[derive(Clone, Copy)]
pub struct AdamStep<F> {
    scale_m: F,
    scale_v: F,
    lr: F,
}

impl<F: Real> AdamStep<F> {
    #[inline(always)]
    pub fn at(t: u64, lr: f64) -> Self {
        let (scale_m, scale_v) = crate::model::linear::adam_scales(t);
        AdamStep { scale_m: F::of(scale_m), scale_v: F::of(scale_v), lr: F::of(lr) }
    }

    #[inline(always)]
    pub fn apply(&self, theta: &mut [F], m: &mut [F], v: &mut [F], grad: &[F]) {
        use crate::model::linear::{BETA1, BETA2, EPS};
        let AdamStep { scale_m, scale_v, lr } = *self;
        let (b1, b2, eps) = (F::of(BETA1), F::of(BETA2), F::of(EPS));
        let (c1, c2) = (F::of(1.0 - BETA1), F::of(1.0 - BETA2));
        for (((th, m), v), &g) in theta.iter_mut().zip(m).zip(v).zip(grad) {
            *m = *m * b1 + g * c1;
            *v = *v * b2 + g * g * c2;
            let (m_hat, v_hat) = (*m * scale_m, *v * scale_v);
            *th -= m_hat / (v_hat.root() + eps) * lr;
        }
    }
}

/// One SGD step: θ −= lr·grad.
#[inline(always)]
pub fn sgd_step<F: Real>(theta: &mut [F], grad: &[F], lr: f64) {
    let lr = F::of(lr);
    for (th, &g) in theta.iter_mut().zip(grad) {
        *th -= g * lr;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `gemv_acc` (columns outer) gives the bits of the plain loop it replaced:
    /// rows four at a time over the whole of y, then the rest as axpy.
    #[test]
    fn gemv_acc_is_the_row_pass_loop_bit_for_bit() {
        fn rows_outer(y: &mut [f64], a: &[f64], w: &[f64]) {
            let n = y.len();
            let mut rows = w.chunks_exact(n);
            let mut coefs = a.chunks_exact(4);
            for c in coefs.by_ref() {
                let (w0, w1, w2, w3) = (rows.next().unwrap(), rows.next().unwrap(), rows.next().unwrap(), rows.next().unwrap());
                for ((((yr, p0), p1), p2), p3) in y.iter_mut().zip(w0).zip(w1).zip(w2).zip(w3) {
                    *yr += (c[0] * p0 + c[1] * p1) + (c[2] * p2 + c[3] * p3);
                }
            }
            for &ai in coefs.remainder() {
                axpy(y, ai, rows.next().unwrap());
            }
        }
        let mut d = crate::model::rand::Draws(11);
        for (rows, n) in [(32, 128), (8, 128), (7, 128), (3, 40), (9, 21), (1, 5), (0, 16), (30, 120), (6, 44), (5, 3)] {
            let w: Vec<f64> = (0..rows * n).map(|_| d.symmetric(1.0)).collect();
            let a: Vec<f64> = (0..rows).map(|_| d.symmetric(2.0)).collect();
            let y0: Vec<f64> = (0..n).map(|_| d.symmetric(1.0)).collect();
            let (mut y1, mut y2) = (y0.clone(), y0.clone());
            gemv_acc(&mut y1, &a, &w);
            rows_outer(&mut y2, &a, &w);
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&y1), bits(&y2), "{rows}×{n}");
        }
    }

    /// `dot_rows` is `dot` row by row, to the bit (lengths with and without a
    /// remainder, row counts with and without one).
    #[test]
    fn dot_rows_is_dot_per_row_bit_for_bit() {
        let mut d = crate::model::rand::Draws(7);
        for (rows, n) in [(32, 128), (5, 37), (4, 16), (3, 9), (1, 200)] {
            let m: Vec<f64> = (0..rows * n).map(|_| d.symmetric(1.0)).collect();
            let y: Vec<f64> = (0..n).map(|_| d.symmetric(3.0)).collect();
            let mut out = vec![0.0; rows];
            dot_rows(&mut out, &m, &y);
            for (r, o) in out.iter().enumerate() {
                assert_eq!(o.to_bits(), dot(&m[r * n..(r + 1) * n], &y).to_bits(), "{rows}×{n}, row {r}");
            }
        }
    }

    /// Against libm over the range the gates see (and beyond): relative error of
    /// `exp` ≤ 4·10⁻¹⁶, absolute error of `tanh` and `sigmoid` ≤ 4·10⁻¹⁶;
    /// saturation at the ends.
    #[test]
    fn exp_tanh_sigmoid_match_libm() {
        for i in -70_000..=70_000 {
            let x = i as f64 * 1e-2 + 1e-7 * (i % 7) as f64;
            let (e, want) = (exp(x), x.exp());
            assert!((e - want).abs() <= 4e-16 * want, "exp({x}) = {e}, libm {want}");
            assert!((tanh(x) - x.tanh()).abs() <= 4e-16, "tanh({x})");
            assert!((sigmoid(x) - 1.0 / (1.0 + (-x).exp())).abs() <= 4e-16, "sigmoid({x})");
        }
        assert_eq!(exp(0.0), 1.0);
        assert!(sigmoid(-1e6) < 1e-300 && sigmoid(1e6) == 1.0);
        assert_eq!((tanh(1e6), tanh(-1e6)), (1.0, -1.0));
        assert!(exp(f64::NAN).is_nan());
    }

    /// The f32 kernels against libm's f64 functions (an independent reference, read
    /// at f32 precision) over the gates' range and beyond: relative error of `exp` ≤
    /// 4 ulp (4·2⁻²³), absolute error of `tanh` and `sigmoid` ≤ 4·2⁻²³; saturation at
    /// the ends.
    #[test]
    fn f32_exp_tanh_sigmoid_match_libm() {
        let ulp = f32::EPSILON as f64;
        let mut worst = [0.0f64; 3];
        for i in -87_000..=88_000 {
            let x = (i as f64 * 1e-3 + 1e-7 * (i % 7) as f64) as f32;
            let xd = x as f64;
            let want = xd.exp();
            let e = exp(x) as f64;
            worst[0] = worst[0].max((e - want).abs() / want);
            worst[1] = worst[1].max((tanh(x) as f64 - xd.tanh()).abs());
            worst[2] = worst[2].max((sigmoid(x) as f64 - 1.0 / (1.0 + (-xd).exp())).abs());
        }
        assert!(worst[0] <= 4.0 * ulp, "exp: {} ulp", worst[0] / ulp);
        assert!(worst[1] <= 4.0 * ulp && worst[2] <= 4.0 * ulp, "tanh, sigmoid: {:?} ulp", [worst[1] / ulp, worst[2] / ulp]);
        assert_eq!(exp(0.0f32), 1.0);
        assert!(sigmoid(-1e6f32) < 1e-37 && sigmoid(1e6f32) == 1.0);
        assert_eq!((tanh(1e6f32), tanh(-1e6f32)), (1.0, -1.0));
        assert!(exp(f32::NAN).is_nan());
    }

    /// The f32 instances keep the f64 ones' summation order: each f32 result equals
    /// the same loop written out in f32 here (`gemv_acc` against the row pass,
    /// `dot_rows` against `dot`).
    #[test]
    fn f32_loops_keep_the_fixed_order() {
        let mut d = crate::model::rand::Draws(5);
        for (rows, n) in [(32, 128), (8, 128), (5, 37), (3, 9)] {
            let w: Vec<f32> = (0..rows * n).map(|_| d.symmetric(1.0) as f32).collect();
            let a: Vec<f32> = (0..rows).map(|_| d.symmetric(2.0) as f32).collect();
            let mut y = vec![0.5f32; n];
            gemv_acc(&mut y, &a, &w);
            for (j, yj) in y.iter().enumerate() {
                let mut want = 0.5f32;
                let mut r = 0;
                while r + 4 <= rows {
                    let at = |i: usize| w[(r + i) * n + j];
                    want += (a[r] * at(0) + a[r + 1] * at(1)) + (a[r + 2] * at(2) + a[r + 3] * at(3));
                    r += 4;
                }
                while r < rows {
                    want += a[r] * w[r * n + j];
                    r += 1;
                }
                assert_eq!(yj.to_bits(), want.to_bits(), "{rows}×{n}, element {j}");
            }
            let ys: Vec<f32> = (0..n).map(|_| d.symmetric(3.0) as f32).collect();
            let mut out = vec![0.0f32; rows];
            dot_rows(&mut out, &w, &ys);
            for (r, o) in out.iter().enumerate() {
                assert_eq!(o.to_bits(), dot(&w[r * n..(r + 1) * n], &ys).to_bits(), "{rows}×{n}, row {r}");
            }
        }
    }
}

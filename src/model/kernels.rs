//! Numeric kernels of the f64 networks: a vectorisable eˣ, sigmoid and tanh, and
//! the fixed-order vector loops (axpy, four-row gemv, sixteen-sum dot). Fixed
//! summation orders and no FMA: the same bits on any x86-64 and in any build.

/// eˣ without a library call, so loops over gates vectorise: x = k·ln 2 + r with
/// |r| ≤ ½ln 2 (Cody–Waite, ln 2 split in two), eʳ by its Taylor series to r¹²
/// (truncation < 2·10⁻¹⁶ relative), 2ᵏ put straight into the exponent bits. Within
/// ~2 ulp of libm's (tested); saturates below e⁻⁷⁰⁸ and above e⁷⁰⁹.
#[inline(always)]
pub fn exp(x: f64) -> f64 {
    const LOG2E: f64 = std::f64::consts::LOG2_E;
    const LN2_HI: f64 = 6.931_471_803_691_238_2e-1;
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

#[inline(always)]
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + exp(-x))
}

/// tanh x = 1 − 2/(e²ˣ + 1): absolute error ~10⁻¹⁶ (relative error grows near 0,
/// where the value itself is small).
#[inline(always)]
pub fn tanh(x: f64) -> f64 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

/// y += a·x over equal-length slices.
#[inline(always)]
pub fn axpy(y: &mut [f64], a: f64, x: &[f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// y += Σᵢ aᵢ·wᵢ, wᵢ the i-th row (of y's length) of `w`: four rows per pass over y
/// (one load and store of y per four multiply-adds), summed in a fixed order.
#[inline(always)]
pub fn gemv_acc(y: &mut [f64], a: &[f64], w: &[f64]) {
    let n = y.len();
    let mut rows = w.chunks_exact(n);
    let mut coefs = a.chunks_exact(4);
    for c in coefs.by_ref() {
        let (w0, w1, w2, w3) = (rows.next().expect("a row per coefficient"), rows.next().expect("row"), rows.next().expect("row"), rows.next().expect("row"));
        let (a0, a1, a2, a3) = (c[0], c[1], c[2], c[3]);
        for ((((yr, p0), p1), p2), p3) in y.iter_mut().zip(w0).zip(w1).zip(w2).zip(w3) {
            *yr += (a0 * p0 + a1 * p1) + (a2 * p2 + a3 * p3);
        }
    }
    for &ai in coefs.remainder() {
        axpy(y, ai, rows.next().expect("a row per coefficient"));
    }
}

/// x·y with sixteen running sums (four 4-wide vectors; fixed order, so
/// deterministic), then the remainder.
#[inline(always)]
pub fn dot(x: &[f64], y: &[f64]) -> f64 {
    let mut acc = [0.0f64; 16];
    let (xc, yc) = (x.chunks_exact(16), y.chunks_exact(16));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (a, b) in xc.zip(yc) {
        for k in 0..16 {
            acc[k] += a[k] * b[k];
        }
    }
    let mut lanes = [0.0f64; 4];
    for k in 0..4 {
        lanes[k] = (acc[k] + acc[k + 4]) + (acc[k + 8] + acc[k + 12]);
    }
    let mut s = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    for (a, b) in xr.iter().zip(yr) {
        s += a * b;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

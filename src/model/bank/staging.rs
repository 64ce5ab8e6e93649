//! A bank wave's inputs packed into one buffer, for one copy up to a GPU: the
//! windows, then (an update) the targets, learning rates and AdamW's two bias scales,
//! each converted once to the bank's precision. `cuda.rs` packs into page-locked
//! memory it reuses from wave to wave (`TICKFLARE_BANK_STAGING=pinned`) and hands the
//! kernel one view of the device copy per part — where the default form allocates,
//! converts and copies each array on its own, from pageable memory.

use std::ops::Range;

/// Where each part of a packed update wave sits.
#[derive(Debug, Clone, PartialEq)]
pub struct Parts {
    pub x: Range<usize>,
    pub y: Range<usize>,
    pub lr: Range<usize>,
    pub sm: Range<usize>,
    pub sv: Range<usize>,
}

/// The values a wave of `n` keys with windows of `win` values packs into: the
/// windows, plus four per key for an update.
pub fn packed_len(n: usize, win: usize, update: bool) -> usize {
    n * win + if update { 4 * n } else { 0 }
}

/// Packs a predict wave (`xs`: its windows) at the start of `out`; returns their range.
pub fn pack_predict<T>(out: &mut [T], xs: &[f64], of: impl Fn(f64) -> T) -> Range<usize> {
    for (o, &v) in out[..xs.len()].iter_mut().zip(xs) {
        *o = of(v);
    }
    0..xs.len()
}

/// Packs an update wave at the start of `out`: the windows `xs`, the targets `ys`,
/// then per key (learning rate, AdamW's scale of m, of v) as three runs.
pub fn pack_update<T>(out: &mut [T], xs: &[f64], ys: &[f64], per_key: &[(f64, f64, f64)], of: impl Fn(f64) -> T) -> Parts {
    let n = ys.len();
    assert_eq!(per_key.len(), n, "a learning rate and scales per key");
    let x = pack_predict(out, xs, &of);
    let run = |start: usize| start..start + n;
    let (y, lr) = (run(x.end), run(x.end + n));
    let (sm, sv) = (run(lr.end), run(lr.end + n));
    for (o, &v) in out[y.clone()].iter_mut().zip(ys) {
        *o = of(v);
    }
    for (k, &(l, m, v)) in per_key.iter().enumerate() {
        out[lr.start + k] = of(l);
        out[sm.start + k] = of(m);
        out[sv.start + k] = of(v);
    }
    Parts { x, y, lr, sm, sv }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each part, cut from the packed buffer at its range, is the array the default
    /// form uploads on its own (the same conversion, value by value); the parts fill
    /// `packed_len` exactly, in order, and the rest of a larger buffer is untouched.
    #[test]
    fn each_part_is_its_own_array() {
        let (n, win) = (3, 4);
        let xs: Vec<f64> = (0..n * win).map(|i| i as f64 * 0.25 - 1.0).collect();
        let ys = [0.5, -1.5, 2.0];
        let per_key = [(0.01, 10.0, 1000.0), (0.02, 20.0, 2000.0), (0.03, 30.0, 3000.0)];
        let of = |v: f64| v as f32;
        let mut out = vec![f32::NAN; packed_len(n, win, true) + 5];
        let p = pack_update(&mut out, &xs, &ys, &per_key, of);
        let want = |v: Vec<f64>| v.into_iter().map(of).collect::<Vec<f32>>();
        assert_eq!(out[p.x.clone()], want(xs.clone())[..]);
        assert_eq!(out[p.y.clone()], want(ys.to_vec())[..]);
        assert_eq!(out[p.lr.clone()], want(per_key.iter().map(|k| k.0).collect())[..]);
        assert_eq!(out[p.sm.clone()], want(per_key.iter().map(|k| k.1).collect())[..]);
        assert_eq!(out[p.sv.clone()], want(per_key.iter().map(|k| k.2).collect())[..]);
        let ends = [(p.x.start, p.x.end), (p.y.start, p.y.end), (p.lr.start, p.lr.end), (p.sm.start, p.sm.end), (p.sv.start, p.sv.end)];
        assert_eq!(ends[0].0, 0);
        for w in ends.windows(2) {
            assert_eq!(w[0].1, w[1].0, "parts back to back: {ends:?}");
        }
        assert_eq!(ends[4].1, 24, "3 windows of 4 values, then 4 runs of 3 (by hand)");
        assert_eq!(ends[4].1, packed_len(n, win, true));
        assert!(out[ends[4].1..].iter().all(|v| v.is_nan()), "past the parts: untouched");

        let mut out = vec![f64::NAN; packed_len(n, win, false) + 1];
        assert_eq!(pack_predict(&mut out, &xs, |v| v), 0..12);
        assert_eq!(out[..12], xs[..]);
        assert!(out[12].is_nan());
    }
}

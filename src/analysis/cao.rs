//! Cao's method for the minimum embedding dimension (L. Cao, "Practical method for
//! determining the minimum embedding dimension of a scalar time series", Physica D
//! 110, 1997).
//!
//! With delay vectors yᵢ(d) = (xᵢ, xᵢ₊τ, …, xᵢ₊₍d₋₁₎τ) and n(i, d) the nearest
//! neighbour of yᵢ(d) in the maximum norm:
//!   a(i, d) = ‖yᵢ(d+1) − yₙ(d+1)‖ / ‖yᵢ(d) − yₙ(d)‖,  E(d) = mean a(i, d),
//!   E1(d) = E(d+1) / E(d);
//!   E*(d) = mean |xᵢ₊dτ − xₙ₊dτ|,  E2(d) = E*(d+1) / E*(d).
//! E1 saturates near 1 once d reaches the embedding dimension; E2 ≠ 1 for some d
//! distinguishes deterministic series from noise. The dimension reported is the
//! smallest d with E1(d) ≥ `threshold` (0.9 by default).

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Cao {
    /// E1(d) for d = 1..=max_dim.
    pub e1: Vec<f64>,
    /// E2(d) for d = 1..=max_dim.
    pub e2: Vec<f64>,
    pub dimension: usize,
}

/// E(d) and E*(d) for one d, over the points that have a (d+1)-dimensional vector.
fn e_and_estar(x: &[f64], tau: usize, d: usize, points: usize) -> (f64, f64) {
    let (mut e, mut es, mut used) = (0.0, 0.0, 0usize);
    for i in 0..points {
        let mut best = (f64::INFINITY, usize::MAX);
        for j in 0..points {
            if j == i {
                continue;
            }
            let mut dist: f64 = 0.0;
            for k in 0..d {
                dist = dist.max((x[i + k * tau] - x[j + k * tau]).abs());
                if dist >= best.0 {
                    break;
                }
            }
            if dist < best.0 && dist > 0.0 {
                best = (dist, j);
            }
        }
        let (dd, n) = best;
        if n == usize::MAX {
            continue;
        }
        let extra = (x[i + d * tau] - x[n + d * tau]).abs();
        e += dd.max(extra) / dd;
        es += extra;
        used += 1;
    }
    let u = used.max(1) as f64;
    (e / u, es / u)
}

/// Runs Cao's method for d = 1..=max_dim (needs max_dim + 1 for the ratios).
pub fn cao(x: &[f64], tau: usize, max_dim: usize, threshold: f64) -> Cao {
    let tau = tau.max(1);
    let mut e = Vec::new();
    let mut es = Vec::new();
    for d in 1..=max_dim + 1 {
        // Points whose (d+1)-vector fits; the same count for every d keeps the
        // ratios comparable.
        let points = x.len().saturating_sub((max_dim + 1) * tau);
        let (a, b) = e_and_estar(x, tau, d, points);
        e.push(a);
        es.push(b);
    }
    let ratio = |v: &[f64], d: usize| if v[d - 1] > 0.0 { v[d] / v[d - 1] } else { 1.0 };
    let e1: Vec<f64> = (1..=max_dim).map(|d| ratio(&e, d)).collect();
    let e2: Vec<f64> = (1..=max_dim).map(|d| ratio(&es, d)).collect();
    let dimension = e1.iter().position(|&v| v >= threshold).map_or(max_dim, |i| i + 1);
    Cao { e1, e2, dimension }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Hénon map xₙ₊₁ = 1 − 1.4xₙ² + yₙ, yₙ₊₁ = 0.3xₙ: its x-series needs a
    /// two-dimensional embedding (Cao 1997, Fig. 1).
    #[test]
    fn henon_needs_two_dimensions() {
        let (mut x, mut y) = (0.1, 0.1);
        let mut xs = Vec::new();
        for i in 0..1300 {
            let nx = 1.0 - 1.4 * x * x + y;
            y = 0.3 * x;
            x = nx;
            if i >= 300 {
                xs.push(x);
            }
        }
        let c = cao(&xs, 1, 6, 0.9);
        assert_eq!(c.dimension, 2, "E1 = {:?}", c.e1);
        assert!(c.e1[0] < 0.9);
    }

    /// Cao's test for determinism: for i.i.d. noise the next value of a neighbour is
    /// unrelated to the point's, so E*(d) ≈ E|U − U'| = 1/3 for every d and E2 ≈ 1;
    /// for the deterministic Hénon series E2(1) is far from 1.
    #[test]
    fn e2_separates_noise_from_determinism() {
        let mut s: u64 = 42;
        let noise: Vec<f64> = (0..1000)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (s >> 11) as f64 / (1u64 << 53) as f64
            })
            .collect();
        let c = cao(&noise, 1, 4, 0.9);
        assert!(c.e2.iter().all(|v| (v - 1.0).abs() < 0.1), "E2 = {:?}", c.e2);
        let (mut x, mut y) = (0.1, 0.1);
        let henon: Vec<f64> = (0..1000)
            .map(|_| {
                let nx = 1.0 - 1.4 * x * x + y;
                y = 0.3 * x;
                x = nx;
                x
            })
            .collect();
        let h = cao(&henon, 1, 4, 0.9);
        assert!((h.e2[0] - 1.0).abs() > 0.3, "E2 = {:?}", h.e2);
    }
}

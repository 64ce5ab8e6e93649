//! Synthetic SDO-like sequences with exact ground truth, made from one real frame:
//! the disk turns by the Snodgrass differential rotation (through the frame's WCS),
//! detected regions grow or shrink slowly about their centres, the pointing jitters
//! by a fraction of a pixel, brightness drifts, noise is added and a few frames go
//! missing. Active regions (bright) and coronal holes (dark, on disk) are found on
//! the first frame by thresholds; their boxes are then propagated exactly.

use serde::{Deserialize, Serialize};

use super::frame::{bilinear, Frame};
use super::rotation::synodic_shift_deg;
use super::track::EventType;
use super::wcs::SolarWcs;
use crate::model::rand::Draws;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SynthConfig {
    /// Output frames are size × size pixels (the source is resampled).
    pub size: usize,
    pub hours: f64,
    pub cadence_min: f64,
    pub seed: u64,
    /// Probability that a frame is missing.
    pub missing: f64,
    /// Gaussian noise, as a fraction of the disk's median intensity.
    pub noise: f64,
    /// Pointing jitter per frame (standard deviation, pixels).
    pub jitter_px: f64,
    /// Largest growth (or shrink) rate of a region's size, per hour.
    pub growth_per_hour: f64,
    /// At most this many regions of each type.
    pub max_regions: usize,
    /// Labels every this many hours (the catalogue's cadence), from the first frame.
    pub label_every_hours: f64,
    /// Further "regions" that are random patches of the disk (training data for the
    /// tracker: any texture moves with the rotation).
    pub random_regions: usize,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig { size: 256, hours: 24.0, cadence_min: 12.0, seed: 7, missing: 0.03, noise: 0.02, jitter_px: 0.8, growth_per_hour: 0.02, max_regions: 5, label_every_hours: 6.0, random_regions: 0 }
    }
}

/// A region found on the first frame.
#[derive(Debug, Clone)]
pub struct Region {
    pub event_id: String,
    pub event_type: EventType,
    /// Heliographic positions (lat, lon) of its pixels on the first frame.
    points: Vec<(f64, f64)>,
    /// Its centre (lat, lon) and angular radius (degrees of arc) on the first frame.
    centre: (f64, f64),
    radius_deg: f64,
    /// Size change per hour (e.g. 0.02 = +2 %/h).
    growth: f64,
}

/// The true box of one region in one frame.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Truth {
    pub frame_time_ms: i64,
    pub event_id: String,
    pub event_type: EventType,
    pub bbox_px: [f64; 4],
}

pub struct Sequence {
    pub frames: Vec<Frame>,
    pub truth: Vec<Truth>,
    /// Label times (every `label_every_hours`, on frames that exist).
    pub label_times_ms: Vec<i64>,
    pub regions: Vec<Region>,
}

/// The frame resampled to size × size with the WCS to match.
pub fn resample(src: &Frame, size: usize) -> Frame {
    let f = src.width as f64 / size as f64;
    let g = src.height as f64 / size as f64;
    let mut wcs = src.wcs;
    wcs.cdelt1 *= f;
    wcs.cdelt2 *= g;
    wcs.crpix1 = (wcs.crpix1 - 0.5) / f + 0.5;
    wcs.crpix2 = (wcs.crpix2 - 0.5) / g + 0.5;
    let mut pixels = vec![0f32; size * size];
    for y in 0..size {
        for x in 0..size {
            pixels[y * size + x] = src.sample((x as f64 + 0.5) * f - 0.5, (y as f64 + 0.5) * g - 0.5);
        }
    }
    Frame { width: size, height: size, wcs, pixels, ..src.clone() }
}

fn median(mut v: Vec<f32>) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    let mid = v.len() / 2;
    *v.select_nth_unstable_by(mid, f32::total_cmp).1
}

/// Box blur of radius r (separable).
fn blur(px: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
    let pass = |src: &[f32], horizontal: bool| -> Vec<f32> {
        let mut out = vec![0f32; src.len()];
        for y in 0..h {
            for x in 0..w {
                let (mut s, mut n) = (0f32, 0f32);
                for d in -(r as i64)..=(r as i64) {
                    let (xx, yy) = if horizontal { (x as i64 + d, y as i64) } else { (x as i64, y as i64 + d) };
                    if xx >= 0 && yy >= 0 && (xx as usize) < w && (yy as usize) < h {
                        s += src[yy as usize * w + xx as usize];
                        n += 1.0;
                    }
                }
                out[y * w + x] = s / n;
            }
        }
        out
    };
    pass(&pass(px, true), false)
}

/// Connected components (4-neighbour) of `mask`, largest first, as pixel lists.
fn components(mask: &[bool], w: usize, h: usize) -> Vec<Vec<(usize, usize)>> {
    let mut seen = vec![false; mask.len()];
    let mut out = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || seen[start] {
            continue;
        }
        let mut comp = Vec::new();
        let mut stack = vec![start];
        seen[start] = true;
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            comp.push((x, y));
            let mut push = |j: usize| {
                if mask[j] && !seen[j] {
                    seen[j] = true;
                    stack.push(j);
                }
            };
            if x > 0 {
                push(i - 1);
            }
            if x + 1 < w {
                push(i + 1);
            }
            if y > 0 {
                push(i - w);
            }
            if y + 1 < h {
                push(i + w);
            }
        }
        out.push(comp);
    }
    out.sort_by(|a, b| b.len().cmp(&a.len()).then(a[0].cmp(&b[0])));
    out
}

/// Finds active regions (bright) and coronal holes (dark, well inside the limb).
pub fn detect(fr: &Frame, max_regions: usize, rng: &mut Draws, growth_per_hour: f64) -> Vec<Region> {
    let (w, h) = (fr.width, fr.height);
    let wcs = &fr.wcs;
    let smooth = blur(&fr.pixels, w, h, (w / 128).max(1));
    let (cx, cy) = wcs.hpc_to_pix(0.0, 0.0);
    let r = wcs.rsun_px();
    let rad = |x: usize, y: usize| ((x as f64 - cx).powi(2) + (y as f64 - cy).powi(2)).sqrt() / r;
    let disk: Vec<f32> = (0..w * h).filter(|i| rad(i % w, i / w) < 0.9).map(|i| smooth[i]).collect();
    let med = median(disk);
    let min_area = (w * h) / 2000;
    let mut regions = Vec::new();
    for (ty, thr, inside) in [(EventType::Ar, 2.2 * med, 0.92), (EventType::Ch, 0.45 * med, 0.8)] {
        let mask: Vec<bool> = (0..w * h)
            .map(|i| {
                let v = smooth[i];
                rad(i % w, i / w) < inside && if ty == EventType::Ar { v > thr } else { v < thr }
            })
            .collect();
        for (k, comp) in components(&mask, w, h).into_iter().filter(|c| c.len() >= min_area).take(max_regions).enumerate() {
            let points: Vec<(f64, f64)> = comp.iter().filter_map(|&(x, y)| wcs.pix_to_hg(x as f64, y as f64)).collect();
            if points.is_empty() {
                continue;
            }
            let n = points.len() as f64;
            let centre = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
            let radius_deg = points.iter().map(|p| ang(*p, centre)).fold(0.0, f64::max).max(1.0);
            let growth = (rng.uniform() * 2.0 - 1.0) * growth_per_hour;
            regions.push(Region { event_id: format!("{}-{}", ty.as_str(), k + 1), event_type: ty, points, centre, radius_deg, growth });
        }
    }
    regions
}

/// `n` random square patches on the disk, as regions (types alternate).
fn random_patches(fr: &Frame, n: usize, rng: &mut Draws, growth_per_hour: f64) -> Vec<Region> {
    let mut out = Vec::new();
    let mut tries = 0;
    while out.len() < n && tries < 50 * n.max(1) {
        tries += 1;
        let (lat, lon) = (rng.uniform() * 80.0 - 40.0, rng.uniform() * 100.0 - 60.0);
        let Some((cx, cy)) = fr.wcs.hg_to_pix(lat, lon) else { continue };
        let half = (fr.width as f64 * (0.02 + 0.05 * rng.uniform())).max(3.0);
        let mut points = Vec::new();
        let (x0, x1) = ((cx - half).round() as i64, (cx + half).round() as i64);
        let (y0, y1) = ((cy - half).round() as i64, (cy + half).round() as i64);
        for y in y0..=y1 {
            for x in x0..=x1 {
                if let Some(p) = fr.wcs.pix_to_hg(x as f64, y as f64) {
                    points.push(p);
                }
            }
        }
        if points.len() < 9 {
            continue;
        }
        let k = points.len() as f64;
        let centre = (points.iter().map(|p| p.0).sum::<f64>() / k, points.iter().map(|p| p.1).sum::<f64>() / k);
        let radius_deg = points.iter().map(|p| ang(*p, centre)).fold(0.0, f64::max).max(1.0);
        let ty = if out.len() % 2 == 0 { EventType::Ar } else { EventType::Ch };
        let growth = (rng.uniform() * 2.0 - 1.0) * growth_per_hour;
        out.push(Region { event_id: format!("PATCH-{}", out.len() + 1), event_type: ty, points, centre, radius_deg, growth });
    }
    out
}

/// Small-angle distance in degrees between two (lat, lon).
fn ang(a: (f64, f64), b: (f64, f64)) -> f64 {
    let dlon = (a.1 - b.1) * ((a.0 + b.0) / 2.0).to_radians().cos();
    (dlon * dlon + (a.0 - b.0).powi(2)).sqrt()
}

/// Moves `p` radially about `c` (heliographic, locally flat) to distance `d_new`.
fn radial(p: (f64, f64), c: (f64, f64), d_old: f64, d_new: f64) -> (f64, f64) {
    if d_old < 1e-12 {
        return p;
    }
    let k = d_new / d_old;
    (c.0 + (p.0 - c.0) * k, c.1 + (p.1 - c.1) * k)
}

impl Region {
    fn scale(&self, hours: f64) -> f64 {
        (1.0 + self.growth * hours).clamp(0.5, 1.9)
    }

    /// Its centre at `hours` after the first frame.
    pub fn centre_at(&self, hours: f64) -> (f64, f64) {
        let (lat, lon) = self.centre;
        (lat, lon + synodic_shift_deg(lat, hours / 24.0))
    }

    /// Its true box in a frame with `wcs` at `hours`, shifted by the pointing `jitter`.
    fn bbox(&self, wcs: &SolarWcs, hours: f64, jitter: (f64, f64)) -> Option<[f64; 4]> {
        let s = self.scale(hours);
        let c = self.centre_at(hours);
        wcs.hg_to_pix(c.0, c.1)?;
        let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
        let mut any = false;
        for &p in &self.points {
            let d = ang(p, self.centre);
            let q = radial(p, self.centre, d, d * s);
            let q = (q.0, q.1 + synodic_shift_deg(q.0, hours / 24.0));
            if let Some((x, y)) = wcs.hg_to_pix(q.0, q.1) {
                let (x, y) = (x + jitter.0, y + jitter.1);
                x0 = x0.min(x - 0.5);
                y0 = y0.min(y - 0.5);
                x1 = x1.max(x + 0.5);
                y1 = y1.max(y + 0.5);
                any = true;
            }
        }
        any.then_some([x0, y0, x1, y1])
    }

    /// Where the pixel now at heliographic `p` (already de-rotated to the first
    /// frame) came from, undoing this region's growth.
    fn unwarp(&self, p: (f64, f64), hours: f64) -> (f64, f64) {
        let s = self.scale(hours);
        let rho = self.radius_deg * 1.3;
        let d = ang(p, self.centre);
        // Inverse radial map: d/s inside ρ·s, identity beyond 2ρ, linear between.
        let (inner, outer) = (rho * s, 2.0 * rho);
        let src = if d <= inner {
            d / s
        } else if d >= outer || outer <= inner {
            d
        } else {
            rho + (d - inner) * (outer - rho) / (outer - inner)
        };
        radial(p, self.centre, d, src)
    }
}

/// Makes the sequence.
pub fn synthesize(source: &Frame, cfg: &SynthConfig) -> Sequence {
    let mut rng = Draws(cfg.seed);
    let base = resample(source, cfg.size);
    let mut regions = detect(&base, cfg.max_regions, &mut rng, cfg.growth_per_hour);
    regions.extend(random_patches(&base, cfg.random_regions, &mut rng, cfg.growth_per_hour));
    let n = (cfg.hours * 60.0 / cfg.cadence_min).floor() as usize + 1;
    let wcs = base.wcs;
    let (w, h) = (base.width, base.height);
    let disk: Vec<f32> = base.pixels.clone();
    let med = median(disk.iter().copied().filter(|v| *v > 0.0).collect());
    let mut frames = Vec::new();
    let mut truth = Vec::new();
    let mut label_times = Vec::new();
    let every = (cfg.label_every_hours * 60.0 / cfg.cadence_min).round().max(1.0) as usize;
    for k in 0..n {
        let hours = k as f64 * cfg.cadence_min / 60.0;
        let time_ms = base.time_ms + (hours * 3_600_000.0).round() as i64;
        let jitter = if k == 0 { (0.0, 0.0) } else { (rng.normal() * cfg.jitter_px, rng.normal() * cfg.jitter_px) };
        let label_frame = k % every == 0;
        // Frames carrying a label are never missing (the catalogue labels frames it has).
        if !label_frame && rng.uniform() < cfg.missing {
            continue;
        }
        let gain = 1.0 + 0.05 * (2.0 * std::f64::consts::PI * hours / 10.0).sin();
        let mut px = vec![0f32; w * h];
        for y in 0..h {
            for x in 0..w {
                // The pointing moved by `jitter`: this pixel shows what the fixed grid
                // has at (x − jx, y − jy).
                let (gx, gy) = (x as f64 - jitter.0, y as f64 - jitter.1);
                let v = match wcs.pix_to_hg(gx, gy) {
                    Some(p) => {
                        let mut q = (p.0, p.1 - synodic_shift_deg(p.0, hours / 24.0));
                        for r in &regions {
                            q = r.unwarp(q, hours);
                        }
                        match wcs.hg_to_pix(q.0, q.1) {
                            Some((sx, sy)) => bilinear(&base.pixels, w, h, sx, sy),
                            // Rotated in from the far side: nothing is known there;
                            // keep what the first frame shows at this place.
                            None => bilinear(&base.pixels, w, h, gx, gy),
                        }
                    }
                    None => bilinear(&base.pixels, w, h, gx, gy),
                };
                px[y * w + x] = (v as f64 * gain + rng.normal() * cfg.noise * med as f64) as f32;
            }
        }
        for r in &regions {
            if let Some(b) = r.bbox(&wcs, hours, jitter) {
                truth.push(Truth { frame_time_ms: time_ms, event_id: r.event_id.clone(), event_type: r.event_type, bbox_px: b });
            }
        }
        if label_frame {
            label_times.push(time_ms);
        }
        frames.push(Frame { time_ms, pixels: px, ..base.clone() });
    }
    Sequence { frames, truth, label_times_ms: label_times, regions }
}

/// The label records of a sequence (HEK-like JSON), in time order.
pub fn labels(seq: &Sequence) -> Vec<serde_json::Value> {
    seq.truth
        .iter()
        .filter(|t| seq.label_times_ms.contains(&t.frame_time_ms))
        .map(|t| {
            serde_json::json!({
                "event_id": t.event_id,
                "event_type": t.event_type.as_str(),
                "time": crate::source::file::rfc3339_ms(t.frame_time_ms),
                "bbox": {"px": t.bbox_px},
            })
        })
        .collect()
}

#[cfg(test)]
#[path = "synth_tests.rs"]
mod tests;

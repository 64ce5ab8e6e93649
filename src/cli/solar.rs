//! `tickflare synth-sun` (a synthetic SDO-like sequence with exact truth from a real
//! frame) and `tickflare train-tracker` (offline pre-training of the tracker network
//! on such sequences and on augmented pairs).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use rdkafka::producer::FutureRecord;

use crate::model::rand::Draws;
use crate::solar::frame::{decode, encode_ipc, Frame};
use crate::solar::net::TrackerNet;
use crate::solar::synth::{labels, synthesize, SynthConfig};
use crate::solar::track::{crop, BoxPx};
use crate::solar::tracker::rotate_box;

#[derive(clap::Args, Debug)]
pub struct SynthArgs {
    /// A real FITS frame (e.g. ../shared/data/solar/aia_171_level1.fits).
    #[arg(long)]
    pub from: PathBuf,
    #[arg(long, default_value_t = 24.0)]
    pub hours: f64,
    /// Minutes between frames.
    #[arg(long, default_value_t = 12.0)]
    pub cadence: f64,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Hours between labels (the catalogue's cadence).
    #[arg(long, default_value_t = 6.0)]
    pub label_every: f64,
    /// Also publish frames (Arrow IPC) and labels (JSON) to these brokers.
    #[arg(long)]
    pub brokers: Option<String>,
    #[arg(long, default_value = "sdo-frames")]
    pub frames_topic: String,
    #[arg(long, default_value = "hek-labels")]
    pub labels_topic: String,
}

fn read_frame(p: &std::path::Path) -> anyhow::Result<Frame> {
    let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    decode(&bytes, usize::MAX).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
}

pub async fn synth_sun(a: SynthArgs) -> anyhow::Result<ExitCode> {
    let src = read_frame(&a.from)?;
    let cfg = SynthConfig { size: a.size, hours: a.hours, cadence_min: a.cadence, seed: a.seed, label_every_hours: a.label_every, ..Default::default() };
    let seq = synthesize(&src, &cfg);
    let frames_dir = a.out.join("frames");
    std::fs::create_dir_all(&frames_dir).with_context(|| format!("creating {}", frames_dir.display()))?;
    for (i, f) in seq.frames.iter().enumerate() {
        std::fs::write(frames_dir.join(format!("{i:05}.arrow")), encode_ipc(f)?)?;
    }
    let lines = |v: Vec<serde_json::Value>| v.iter().map(|x| x.to_string() + "\n").collect::<String>();
    std::fs::write(a.out.join("truth.jsonl"), lines(seq.truth.iter().map(|t| serde_json::to_value(t).unwrap_or_default()).collect()))?;
    let labs = labels(&seq);
    std::fs::write(a.out.join("labels.jsonl"), lines(labs.clone()))?;
    if let Some(b) = &a.brokers {
        let prod = crate::sink::kafka::producer(b)?;
        for l in &labs {
            let payload = serde_json::to_vec(l)?;
            let t = crate::source::file::parse_time_ms(&l["time"]);
            let mut r = FutureRecord::<[u8], [u8]>::to(&a.labels_topic).payload(&payload);
            if let Some(t) = t {
                r = r.timestamp(t);
            }
            prod.send(r, Duration::from_secs(30)).await.map_err(|(e, _)| e)?;
        }
        for f in &seq.frames {
            let payload = encode_ipc(f)?;
            prod.send(FutureRecord::<[u8], [u8]>::to(&a.frames_topic).payload(&payload).timestamp(f.time_ms), Duration::from_secs(30)).await.map_err(|(e, _)| e)?;
        }
    }
    println!(
        "{} frames ({} missing), {} regions ({} AR, {} CH), {} labels at {} times → {}",
        seq.frames.len(),
        (a.hours * 60.0 / a.cadence).floor() as usize + 1 - seq.frames.len(),
        seq.regions.len(),
        seq.regions.iter().filter(|r| r.event_type == crate::solar::track::EventType::Ar).count(),
        seq.regions.iter().filter(|r| r.event_type == crate::solar::track::EventType::Ch).count(),
        labs.len(),
        seq.label_times_ms.len(),
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Real FITS frames to make training sequences from (repeatable).
    #[arg(long = "from", required = true)]
    pub from: Vec<PathBuf>,
    /// Where to write the weights (safetensors).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 64)]
    pub crop: usize,
    #[arg(long, default_value_t = 2.0)]
    pub context: f64,
    /// Frame size of the training sequences.
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Sequences per frame (each with its own seed).
    #[arg(long, default_value_t = 3)]
    pub sequences: usize,
    #[arg(long, default_value_t = 12.0)]
    pub hours: f64,
    #[arg(long, default_value_t = 30)]
    pub epochs: usize,
    #[arg(long, default_value_t = 0.001)]
    pub learning_rate: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Random disk patches tracked as extra regions in each training sequence.
    #[arg(long, default_value_t = 12)]
    pub patches: usize,
    /// cpu, cuda (a build with `--features cuda` and a GPU) or auto (CUDA when present).
    #[arg(long, default_value = "cpu")]
    pub device: crate::pipeline::config::choice::DeviceChoice,
}

/// One training pair.
struct Pair {
    prev: Vec<f32>,
    cur: Vec<f32>,
    ty: usize,
    target: [f32; 4],
}

/// Pairs as the tracker meets them: the template — the crop around the last label's
/// box in its frame (a frame up to `label_every` earlier) — and the current frame's
/// crop around the prior, that box carried by the rotation; the target is the
/// correction from the prior to the true box. Plus the same with a perturbed prior.
fn pairs(frames: &[Frame], truth: &[crate::solar::synth::Truth], s: usize, ctx: f64, label_every_ms: i64, rng: &mut Draws) -> Vec<Pair> {
    let mut out = Vec::new();
    let at = |t: i64, id: &str| truth.iter().find(|x| x.frame_time_ms == t && x.event_id == id);
    for (k, w) in frames.windows(2).enumerate() {
        let (a, b) = (&w[0], &w[1]);
        // A random earlier frame within the label cadence plays the last label.
        let earliest = frames.iter().position(|f| f.time_ms >= b.time_ms - label_every_ms).unwrap_or(0).min(k);
        let l = &frames[earliest + rng.below((k - earliest + 1) as u64) as usize];
        for ta in truth.iter().filter(|t| t.frame_time_ms == a.time_ms) {
            let (Some(tb), Some(tl)) = (at(b.time_ms, &ta.event_id), at(l.time_ms, &ta.event_id)) else { continue };
            let (bb, bl) = (BoxPx::from_corners(tb.bbox_px), BoxPx::from_corners(tl.bbox_px));
            let dt = (b.time_ms - l.time_ms) as f64 / 86_400_000.0;
            let Some(prior) = rotate_box(&bl, &l.wcs, &b.wcs, dt, 85.0) else { continue };
            let (prev, norm) = crop(l, &bl, s, ctx, None);
            let (cur, _) = crop(b, &prior, s, ctx, Some(norm));
            out.push(Pair { prev: prev.clone(), cur, ty: ta.event_type.index(), target: prior.delta_to(&bb) });
            let p2 = prior.perturbed(rng, 0.08, 0.05);
            let (cur2, _) = crop(b, &p2, s, ctx, Some(norm));
            out.push(Pair { prev, cur: cur2, ty: ta.event_type.index(), target: p2.delta_to(&bb) });
        }
    }
    out
}

/// One of the 8 symmetries of the square applied to an S×S crop: bit 0 flips x,
/// bit 1 flips y, bit 2 transposes (after the flips).
fn dihedral(c: &[f32], s: usize, k: u64) -> Vec<f32> {
    let mut out = vec![0f32; c.len()];
    for y in 0..s {
        for x in 0..s {
            let (mut u, mut v) = (x, y);
            if k & 1 != 0 {
                u = s - 1 - u;
            }
            if k & 2 != 0 {
                v = s - 1 - v;
            }
            if k & 4 != 0 {
                std::mem::swap(&mut u, &mut v);
            }
            out[v * s + u] = c[y * s + x];
        }
    }
    out
}

/// The target under the same symmetry: flips negate Δx or Δy, the transpose swaps
/// x with y (and the two size terms).
fn dihedral_target(t: [f32; 4], k: u64) -> [f32; 4] {
    let mut t = t;
    if k & 1 != 0 {
        t[0] = -t[0];
    }
    if k & 2 != 0 {
        t[1] = -t[1];
    }
    if k & 4 != 0 {
        t = [t[1], t[0], t[3], t[2]];
    }
    t
}

pub async fn train_tracker(a: TrainArgs) -> anyhow::Result<ExitCode> {
    let device = crate::model::device(a.device)?;
    eprintln!("training on {}", crate::model::device_name(&device));
    let mut net = TrackerNet::new(a.crop, a.learning_rate, a.seed, &device)?;
    let mut rng = Draws(a.seed);
    let mut data = Vec::new();
    for f in &a.from {
        let src = read_frame(f)?;
        for k in 0..a.sequences {
            let cfg = SynthConfig { size: a.size, hours: a.hours, seed: a.seed * 1000 + k as u64 + 1, random_regions: a.patches, ..Default::default() };
            let seq = synthesize(&src, &cfg);
            let p = pairs(&seq.frames, &seq.truth, a.crop, a.context, (cfg.label_every_hours * 3_600_000.0) as i64, &mut rng);
            eprintln!("{}: sequence {} → {} regions, {} pairs", f.display(), k + 1, seq.regions.len(), p.len());
            data.extend(p);
        }
    }
    anyhow::ensure!(!data.is_empty(), "no training pairs (no regions detected in the frames)");
    let s2 = a.crop * a.crop;
    let batch = 32;
    let mut order: Vec<usize> = (0..data.len()).collect();
    for epoch in 0..a.epochs {
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut total = 0.0;
        let mut n = 0;
        for chunk in order.chunks(batch) {
            let mut prev = Vec::with_capacity(chunk.len() * s2);
            let mut cur = Vec::with_capacity(chunk.len() * s2);
            let (mut types, mut targets) = (Vec::new(), Vec::new());
            for &i in chunk {
                // Augmented on the fly: a symmetry of the square and a common affine
                // change of intensity, so the network learns motion, not textures.
                let k = rng.below(8);
                let (g, o) = (0.8 + 0.45 * rng.uniform() as f32, 0.4 * rng.uniform() as f32 - 0.2);
                prev.extend(dihedral(&data[i].prev, a.crop, k).into_iter().map(|v| v * g + o));
                cur.extend(dihedral(&data[i].cur, a.crop, k).into_iter().map(|v| v * g + o));
                types.push(data[i].ty);
                targets.push(dihedral_target(data[i].target, k));
            }
            total += net.learn(&prev, &cur, &types, &targets)? as f64;
            n += 1;
        }
        if epoch % 5 == 0 || epoch + 1 == a.epochs {
            eprintln!("epoch {:>3}: mean loss {:.5}", epoch + 1, total / n.max(1) as f64);
        }
    }
    net.save_weights(&a.out)?;
    println!("trained on {} pairs for {} epochs → {}", data.len(), a.epochs, a.out.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bright pixel right of centre moves left under an x flip, below centre under
    /// the transpose of that, and the targets follow the same way.
    #[test]
    fn symmetries_move_crops_and_targets_together() {
        let s = 4;
        let mut c = vec![0f32; 16];
        c[s + 3] = 1.0; // x = 3, y = 1
        let f = dihedral(&c, s, 1);
        assert_eq!(f[s], 1.0); // x = 0
        let t = dihedral(&c, s, 4);
        assert_eq!(t[3 * s + 1], 1.0); // transposed: x = 1, y = 3
        assert_eq!(dihedral_target([0.1, -0.2, 0.3, 0.0], 1), [-0.1, -0.2, 0.3, 0.0]);
        assert_eq!(dihedral_target([0.1, -0.2, 0.3, 0.0], 4), [-0.2, 0.1, 0.0, 0.3]);
    }
}

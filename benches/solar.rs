//! `cargo bench --bench solar`: tracker throughput in frames/s with 20 live tracks at
//! 256×256 and 512×512 (CPU, or the device named by TICKFLARE_DEVICE: cpu, cuda),
//! on a synthetic sequence from the shipped AIA frame: the rotation prior, crops,
//! one batched network pass and the outputs, per frame.

use std::path::Path;
use std::time::Instant;

use tickflare::pipeline::config::choice::DeviceChoice;
use tickflare::solar::frame::decode;
use tickflare::solar::synth::{synthesize, SynthConfig};
use tickflare::solar::tracker::{Label, LabelBox, Tracker, TrackerConfig};

/// Timed passes per frame size (the median is reported).
const PASSES: usize = 3;

fn main() {
    tickflare::model::init_cpu_threads();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = decode(&std::fs::read(root.join("data/solar/aia_171_level1.fits")).expect("frame"), usize::MAX).expect("decode");
    let device: DeviceChoice = std::env::var("TICKFLARE_DEVICE")
        .unwrap_or_else(|_| "cpu".into())
        .parse()
        .unwrap_or_else(|e| panic!("TICKFLARE_DEVICE: {e}"));
    for size in [256usize, 512] {
        let cfg = SynthConfig { size, hours: 4.0, cadence_min: 6.0, missing: 0.0, max_regions: 0, random_regions: 30, ..Default::default() };
        let seq = synthesize(&src, &cfg);
        // (Random patches overlap: no IoU matching, so each label keeps its own track.)
        let tcfg = TrackerConfig { weights: Some(root.join("data/solar/tracker-eit.safetensors")), device, match_iou: 2.0, ..Default::default() };
        // 40 frames take ~0.4 s: one pass alone moved by ~10 % between runs, so three
        // passes, each a fresh tracker over the same sequence, and their median.
        let mut rates = Vec::new();
        for pass in 1..=PASSES {
            let mut tr = Tracker::new(tcfg.clone(), root).expect("tracker");
            let first = &seq.frames[0];
            tr.on_frame(first).expect("frame");
            for t in seq.truth.iter().filter(|t| t.frame_time_ms == first.time_ms).take(20) {
                tr.on_label(&Label { event_id: t.event_id.clone(), event_type: t.event_type, time_ms: t.frame_time_ms, bbox: LabelBox::Px(t.bbox_px) }).expect("label");
            }
            let live = tr.tracks.len();
            let t0 = Instant::now();
            let mut outs = 0;
            for f in &seq.frames[1..] {
                tr.on_frame(f).expect("frame");
                outs += tr.outputs().len();
            }
            let secs = t0.elapsed().as_secs_f64();
            let n = seq.frames.len() - 1;
            rates.push(n as f64 / secs);
            println!("solar_tracker {size}x{size} on {device}, pass {pass}: {n} frames, {live} live tracks ({outs} track records) in {secs:.3}s = {:.1} frames/s", n as f64 / secs);
        }
        rates.sort_by(f64::total_cmp);
        println!("solar_tracker {size}x{size} on {device}: median {:.1} frames/s (min {:.1}, max {:.1}) over {PASSES} passes", rates[PASSES / 2], rates[0], rates[PASSES - 1]);
    }
}

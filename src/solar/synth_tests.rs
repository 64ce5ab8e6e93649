//! Tests of the synthetic sequences: rotation of regions and the truth boxes.

use super::*;

/// The shipped AIA 171 Å frame (data/solar).
fn aia() -> Frame {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/solar/aia_171_level1.fits");
    super::super::frame::decode(&std::fs::read(p).unwrap(), 1 << 24).unwrap()
}

/// A region's true centre moves by the Snodgrass synodic rate: after 6 h a
/// region at latitude φ has turned (14.713 − 2.396 sin²φ − 1.787 sin⁴φ − 0.9856)/4
/// degrees, checked here by hand for the detected regions' latitudes.
#[test]
fn truth_moves_with_the_rotation() {
    let src = aia();
    let cfg = SynthConfig { size: 128, hours: 6.0, cadence_min: 60.0, missing: 0.0, growth_per_hour: 0.0, jitter_px: 0.0, ..Default::default() };
    let seq = synthesize(&src, &cfg);
    assert!(seq.regions.iter().any(|r| r.event_type == EventType::Ar), "no active region found");
    assert_eq!(seq.frames.len(), 7);
    for r in &seq.regions {
        let (lat, lon) = r.centre;
        let s2 = lat.to_radians().sin().powi(2);
        let by_hand = (14.713 - 2.396 * s2 - 1.787 * s2 * s2 - 360.0 / 365.256363) / 4.0;
        let (_, lon6) = r.centre_at(6.0);
        assert!((lon6 - lon - by_hand).abs() < 1e-9);
    }
    // The first frame is the resampled source (plus noise): its regions' truth
    // boxes hold the detected pixels.
    assert_eq!(seq.label_times_ms.len(), 2);
    let t0 = seq.frames[0].time_ms;
    assert!(seq.truth.iter().filter(|t| t.frame_time_ms == t0).count() == seq.regions.len());
}

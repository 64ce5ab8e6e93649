//! What a solar run reports: counts, the skill at the labels (any input) and, on a
//! synthetic sequence, the evaluation against its exact truth.

use std::collections::BTreeMap;

use serde::Serialize;

use super::eval::Evaluation;
use super::tracker::TrackerCounts;

/// The mean IoU with each label's box of the box predicted for the label's frame.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AtLabels {
    pub n: u64,
    pub tracker_mean_iou: f64,
    pub rotation_mean_iou: f64,
}

impl AtLabels {
    pub fn of(c: &TrackerCounts) -> Self {
        let n = c.labels_scored.max(1) as f64;
        AtLabels { n: c.labels_scored, tracker_mean_iou: c.label_iou_sum / n, rotation_mean_iou: c.label_iou_rotation_sum / n }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SolarSummary {
    pub pipeline: String,
    pub frames_in: u64,
    pub labels_in: u64,
    pub tracks_out: u64,
    pub dead_letters: u64,
    pub dead_letters_by_reason: BTreeMap<String, u64>,
    /// Recomputed outputs already in the output topics (after a restart): not sent again.
    pub suppressed: u64,
    pub checkpoints: u64,
    pub tracker: TrackerCounts,
    /// At the labels: the skill measurable on any input, real or synthetic.
    pub at_labels: AtLabels,
    pub elapsed_s: f64,
    pub frames_per_s: f64,
    /// Present when the input's truth is known (the synthetic sequence).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracking: Option<Evaluation>,
}

impl SolarSummary {
    pub fn human(&self) -> String {
        let mut s = format!(
            "pipeline {}: {} frames, {} labels in {:.2}s ({:.1} frames/s); {} track records out; {} dead letters {:?}\n  tracks started {}, ended at the limb {}, ended without labels {}; network updates {}",
            self.pipeline,
            self.frames_in,
            self.labels_in,
            self.elapsed_s,
            self.frames_per_s,
            self.tracks_out,
            self.dead_letters,
            self.dead_letters_by_reason,
            self.tracker.tracks_started,
            self.tracker.tracks_ended_limb,
            self.tracker.tracks_ended_stale,
            self.tracker.network_updates
        );
        if self.at_labels.n > 0 {
            s += &format!(
                "\n  at the {} labels met by a predicted track: mean IoU tracker {:.4}, rotation only {:.4}",
                self.at_labels.n, self.at_labels.tracker_mean_iou, self.at_labels.rotation_mean_iou
            );
        }
        if self.suppressed > 0 {
            s += &format!("\n  {} recomputed outputs were already published (not sent again)", self.suppressed);
        }
        if let Some(t) = &self.tracking {
            s += &format!("\n  between labels ({} box-frames):            mean IoU   centre error (arcsec)", t.tracker.n);
            for (name, m) in [("tracker", &t.tracker), ("rotation only", &t.rotation_only), ("static", &t.r#static)] {
                s += &format!("\n    {name:<14} {:>10.4} {:>12.2}", m.mean_iou, m.center_err_arcsec);
            }
        }
        s
    }
}


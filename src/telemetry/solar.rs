//! The solar tracking pipeline's metrics, on the same `/metrics` as every
//! pipeline's (`tickflare_solar_*`, plus the shared dead-letter, suppression and
//! checkpoint series).

use metrics::{counter, describe_counter, describe_gauge, gauge, Counter, Gauge};

use crate::solar::tracker::TrackerCounts;

pub fn describe() {
    describe_counter!("tickflare_solar_frames_total", "Frames processed by the tracker");
    describe_counter!("tickflare_solar_labels_total", "Catalogue labels read");
    describe_counter!("tickflare_solar_track_records_total", "Track records computed, one per live track and frame (after a restart, those already in the topic are not sent again)");
    describe_gauge!("tickflare_solar_live_tracks", "Tracks alive after the last frame");
    describe_counter!("tickflare_solar_tracker_updates_total", "Training steps of the tracker network");
    describe_counter!("tickflare_solar_tracks_ended_total", "Tracks ended, by why: limb (rotated off the disk) or stale (no label for too long)");
    describe_counter!("tickflare_solar_labels_scored_total", "Labels whose track was predicted on the label's frame (scored below)");
    describe_gauge!("tickflare_solar_label_iou", "IoU with the label's box of the box predicted for the label's frame, at the last scored label: the tracker's and the rotation-only baseline's");
    describe_gauge!("tickflare_solar_label_iou_mean", "Mean over every scored label of the same IoU");
    describe_gauge!("tickflare_solar_frames_per_second", "Frames processed per second since the run started");
}

pub struct SolarMetrics {
    frames: Counter,
    labels: Counter,
    track_records: Counter,
    live_tracks: Gauge,
    updates: Counter,
    ended_limb: Counter,
    ended_stale: Counter,
    scored: Counter,
    iou: [Gauge; 2],
    iou_mean: [Gauge; 2],
    frames_per_s: Gauge,
    pipeline: String,
}

impl SolarMetrics {
    pub fn new(pipeline: &str) -> Self {
        let p = || pipeline.to_string();
        let f = |name: &'static str, who: &'static str| gauge!(name, "pipeline" => p(), "forecaster" => who);
        SolarMetrics {
            frames: counter!("tickflare_solar_frames_total", "pipeline" => p()),
            labels: counter!("tickflare_solar_labels_total", "pipeline" => p()),
            track_records: counter!("tickflare_solar_track_records_total", "pipeline" => p()),
            live_tracks: gauge!("tickflare_solar_live_tracks", "pipeline" => p()),
            updates: counter!("tickflare_solar_tracker_updates_total", "pipeline" => p()),
            ended_limb: counter!("tickflare_solar_tracks_ended_total", "pipeline" => p(), "why" => "limb"),
            ended_stale: counter!("tickflare_solar_tracks_ended_total", "pipeline" => p(), "why" => "stale"),
            scored: counter!("tickflare_solar_labels_scored_total", "pipeline" => p()),
            iou: [f("tickflare_solar_label_iou", "tracker"), f("tickflare_solar_label_iou", "rotation_only")],
            iou_mean: [f("tickflare_solar_label_iou_mean", "tracker"), f("tickflare_solar_label_iou_mean", "rotation_only")],
            frames_per_s: gauge!("tickflare_solar_frames_per_second", "pipeline" => p()),
            pipeline: pipeline.to_string(),
        }
    }

    /// One labels-topic record read (valid or not).
    pub fn label_read(&self) {
        self.labels.increment(1);
    }

    /// A frame went through the tracker: what its counters moved by since `before`.
    pub fn frame(&self, before: &TrackerCounts, now: &TrackerCounts, live_tracks: usize, records: u64, frames_per_s: f64) {
        self.frames.increment(1);
        self.track_records.increment(records);
        self.live_tracks.set(live_tracks as f64);
        self.updates.increment(now.network_updates - before.network_updates);
        self.ended_limb.increment(now.tracks_ended_limb - before.tracks_ended_limb);
        self.ended_stale.increment(now.tracks_ended_stale - before.tracks_ended_stale);
        self.frames_per_s.set(frames_per_s);
        let n = now.labels_scored - before.labels_scored;
        if n > 0 {
            self.scored.increment(n);
            let last = [now.label_iou_sum - before.label_iou_sum, now.label_iou_rotation_sum - before.label_iou_rotation_sum];
            let sums = [now.label_iou_sum, now.label_iou_rotation_sum];
            for i in 0..2 {
                self.iou[i].set(last[i] / n as f64);
                self.iou_mean[i].set(sums[i] / now.labels_scored as f64);
            }
            tracing::debug!(pipeline = %self.pipeline, iou_tracker = last[0] / n as f64, iou_rotation = last[1] / n as f64, "labels scored");
        }
    }
}

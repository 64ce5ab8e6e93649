//! A solar tracking pipeline's file (`[source]`, `[tracker]`, `[sink]`,
//! `[checkpoint]`: a pipeline is solar when it has `[tracker]`) and the label
//! records of its labels topic.

use std::path::{Path, PathBuf};

use crate::error::Context;
use serde::{Deserialize, Serialize};

use super::synth::SynthConfig;
use crate::pipeline::config::choice::DeviceChoice;
use crate::pipeline::config::read::{read, Read};
use crate::pipeline::kafka_props::KafkaProps;
use super::track::EventType;
use super::tracker::{Label, LabelBox};

#[derive(Debug, Clone, Deserialize)]
pub struct SolarConfig {
    pub name: String,
    pub source: SolarSource,
    #[serde(default)]
    pub tracker: TrackerConfig,
    pub sink: SolarSink,
    #[serde(default)]
    pub checkpoint: SolarCheckpointConfig,
    /// `[kafka]`: librdkafka properties for a real cluster (TLS, SASL), as a
    /// forecasting pipeline's.
    #[serde(default)]
    pub kafka: KafkaProps,
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[checkpoint]`: where the tracker's state and input positions are kept.
#[derive(Debug, Clone, Deserialize)]
pub struct SolarCheckpointConfig {
    pub dir: Option<PathBuf>,
    /// Checkpoints kept (older ones are deleted after a write).
    #[serde(default = "keep")]
    pub keep: usize,
    /// Frames between checkpoints (and always at the end / on shutdown).
    #[serde(default = "every")]
    pub interval_frames: u64,
}

impl Default for SolarCheckpointConfig {
    fn default() -> Self {
        SolarCheckpointConfig { dir: None, keep: keep(), interval_frames: every() }
    }
}

fn every() -> u64 {
    20
}
fn keep() -> usize {
    3
}

#[derive(Debug, Clone, Deserialize)]
pub struct SolarSource {
    /// `"embedded"` (seeded from `synthetic`) or `host:port,…`.
    #[serde(default = "embedded")]
    pub brokers: String,
    pub frames_topic: String,
    pub labels_topic: String,
    pub group: Option<String>,
    /// Frames with more pixels go to the dead-letter topic (`frame_too_large`).
    #[serde(default = "max_pixels")]
    pub max_frame_pixels: usize,
    /// Partitions of the frames topic on the embedded broker (frames are spread
    /// round-robin; the pipeline merges them back into time order).
    #[serde(default = "frame_partitions")]
    pub frame_partitions: i32,
    /// What the embedded broker is seeded with.
    pub synthetic: Option<SyntheticSource>,
}

fn embedded() -> String {
    "embedded".into()
}
fn max_pixels() -> usize {
    4096 * 4096
}
fn frame_partitions() -> i32 {
    8
}

#[derive(Debug, Clone, Deserialize)]
pub struct SyntheticSource {
    /// A real FITS frame, relative to the pipeline file.
    pub from: PathBuf,
    #[serde(flatten)]
    pub synth: SynthConfig,
    /// Extra undecodable frame messages mixed in (to exercise the dead-letter path).
    #[serde(default)]
    pub corrupt_frames: usize,
    /// Extra labels for events that do not exist in the truth (they start tracks).
    #[serde(default)]
    pub unknown_labels: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SolarSink {
    pub topic: String,
    pub dead_letter_topic: String,
}

/// `[tracker]`: the tracker network and how it learns from labels.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrackerConfig {
    /// Crop side S (pixels; a multiple of 8).
    #[serde(default = "d_crop")]
    pub crop: usize,
    /// Crop side as a multiple of the box.
    #[serde(default = "d_context")]
    pub context: f64,
    /// Augmented pairs trained with each label.
    #[serde(default = "d_augment")]
    pub augment: usize,
    /// AdamW steps per label (each on the observed pair and fresh augmented pairs).
    #[serde(default = "d_steps")]
    pub steps_per_label: usize,
    #[serde(default = "d_lr")]
    pub learning_rate: f64,
    /// A track without a label for this long ends.
    #[serde(default = "d_max_hours")]
    pub max_hours_without_label: f64,
    /// A track whose centre passes this Stonyhurst longitude (or leaves the disk) ends.
    #[serde(default = "d_limb")]
    pub limb_lon_deg: f64,
    /// Laplace scales of the augmentation: shift (fraction of the box) and ln-scale.
    #[serde(default = "d_shift")]
    pub shift_scale: f64,
    #[serde(default = "d_size")]
    pub size_scale: f64,
    /// Minimum IoU for a label without a known event id to match a track.
    #[serde(default = "d_iou")]
    pub match_iou: f64,
    #[serde(default)]
    pub seed: u64,
    /// Pre-trained weights (`tickflare train-tracker`); none: start at rotation-only.
    pub weights: Option<std::path::PathBuf>,
    #[serde(default)]
    pub device: DeviceChoice,
}

fn d_crop() -> usize {
    64
}
fn d_context() -> f64 {
    2.0
}
fn d_augment() -> usize {
    8
}
fn d_steps() -> usize {
    1
}
fn d_lr() -> f64 {
    3e-4
}
fn d_max_hours() -> f64 {
    24.0
}
fn d_limb() -> f64 {
    80.0
}
fn d_shift() -> f64 {
    0.1
}
fn d_size() -> f64 {
    0.05
}
fn d_iou() -> f64 {
    0.3
}

impl Default for TrackerConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

impl SolarConfig {
    /// Reads the file at `path`, with its unknown keys and unknown words (for
    /// `validate`, which reports them with every other problem).
    pub fn read(path: &Path) -> crate::error::Result<Read<Self>> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut r = read::<SolarConfig>(&text).with_context(|| format!("in {}", path.display()))?;
        r.value.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(r)
    }

    /// Reads the file at `path` to run it: an unknown key or word is an error.
    pub fn load(path: &Path) -> crate::error::Result<Self> {
        let r = Self::read(path)?;
        let problems: Vec<String> = r.problems().map(|(k, m)| format!("{k}: {m}")).collect();
        if !problems.is_empty() {
            let e = crate::error::Error::Config(format!("in {}: {}", path.display(), problems.join("; ")));
            return Err(e);
        }
        Ok(r.value)
    }

    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
}

/// Whether a pipeline file is a solar tracking pipeline (it has a `[tracker]` table).
pub fn is_solar(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .is_some_and(|t| t.contains_key("tracker"))
}

/// Parses a label record.
pub fn parse_label(bytes: &[u8]) -> Result<Label, String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).ok_or_else(|| format!("missing string field {k:?}"));
    let event_id = s("event_id")?.to_string();
    let event_type = EventType::parse(s("event_type")?).ok_or("event_type must be \"AR\" or \"CH\"")?;
    let time_ms = crate::source::file::parse_time_ms(&serde_json::Value::from(s("time")?)).ok_or("unreadable time")?;
    let four = |x: &serde_json::Value| -> Option<[f64; 4]> {
        let a = x.as_array()?;
        (a.len() == 4).then_some(())?;
        let f: Vec<f64> = a.iter().filter_map(|e| e.as_f64()).collect();
        (f.len() == 4 && f.iter().all(|x| x.is_finite()) && f[2] > f[0] && f[3] > f[1]).then(|| [f[0], f[1], f[2], f[3]])
    };
    let bb = v.get("bbox").ok_or("missing bbox")?;
    let bbox = if let Some(b) = bb.get("px").and_then(four) {
        LabelBox::Px(b)
    } else if let Some(b) = bb.get("arcsec").and_then(four) {
        LabelBox::Arcsec(b)
    } else {
        return Err("bbox needs \"px\" or \"arcsec\": [x0, y0, x1, y1] with x1 > x0, y1 > y0".into());
    };
    Ok(Label { event_id, event_type, time_ms, bbox })
}

/// Fails unless the config names distinct topics.
pub fn check(cfg: &SolarConfig) -> crate::error::Result<()> {
    let t = [&cfg.source.frames_topic, &cfg.source.labels_topic, &cfg.sink.topic, &cfg.sink.dead_letter_topic];
    for (i, a) in t.iter().enumerate() {
        if t[..i].contains(a) {
            crate::fail!(Config, "topic {a:?} is used twice");
        }
    }
    Ok(())
}

//! The solar pipeline's checkpoint, in the store every pipeline uses
//! ([`CheckpointStore`]: a directory or object-store URL; files, then a manifest with
//! their SHA-256, fsynced on a local disk; the newest `keep` kept; a fingerprint of
//! the tracker's configuration). The tracker is one state unit over every frames
//! partition, stored as partition 0 and named by the frames processed:
//! `state.json` (input positions, labels read but not yet due, the tracker's tracks
//! and counters, what the output topics hold ahead of the state) and
//! `tracker.safetensors` (network weights, AdamW moments, every track's crops).

use std::collections::BTreeMap;

use crate::error::Context;
use serde::{Deserialize, Serialize};

use super::config::SolarConfig;
use super::tracker::{Label, Tracker};
use crate::sink::dedupe::Marks;
use crate::state::checkpoint::{safetensors_to_snapshots, snapshots_to_safetensors, Manifest, FORMAT_VERSION};
use crate::state::store::{sha256, CheckpointStore};

/// Where the inputs stand: what a restart reads next.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// Per frames partition, the next offset to process.
    pub frames_next: BTreeMap<i32, i64>,
    pub labels_next: i64,
    pub pending_labels: Vec<Label>,
    pub last_frame_ms: i64,
    pub frames_done: u64,
}

/// What the output topics (tracks, dead letters) hold as far as the state knows:
/// their ends, and per source partition the furthest output published ahead of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutputMarks {
    pub ends: [i64; 2],
    pub marks: [Marks; 2],
}

/// A checkpoint read back.
pub struct Restored {
    pub position: Position,
    pub outputs: OutputMarks,
}

/// The state unit's partition in the store.
const UNIT: i32 = 0;

pub struct SolarCheckpoints {
    pub store: CheckpointStore,
    pipeline: String,
    fingerprint: String,
    outputs: [String; 2],
}

/// What makes a tracker state meaningful: its configuration (less the device it
/// runs on and the weights it started from: a checkpoint carries its own) and the
/// input topics.
pub fn fingerprint(cfg: &SolarConfig) -> String {
    let mut t = cfg.tracker.clone();
    t.device = crate::pipeline::config::choice::DeviceChoice::Cpu;
    t.weights = None;
    // The device printed as the empty string it was cleared to while it was a
    // string setting, so checkpoints written then still match.
    let t = format!("{t:?}").replacen("device: \"cpu\"", "device: \"\"", 1);
    sha256(format!("{t}|{}|{}", cfg.source.frames_topic, cfg.source.labels_topic).as_bytes())
}

impl SolarCheckpoints {
    pub fn open(location: &str, cfg: &SolarConfig) -> crate::error::Result<Self> {
        Ok(SolarCheckpoints {
            store: CheckpointStore::open(location, &cfg.name, cfg.checkpoint.keep)?,
            pipeline: cfg.name.clone(),
            fingerprint: fingerprint(cfg),
            outputs: [cfg.sink.topic.clone(), cfg.sink.dead_letter_topic.clone()],
        })
    }

    /// Writes a checkpoint of `tracker` at `pos`; returns the bytes written.
    pub async fn write(&self, tracker: &Tracker, pos: &Position, out: &OutputMarks) -> crate::error::Result<u64> {
        let (json, snap) = tracker.save()?;
        let state = serde_json::json!({"position": pos, "outputs": out, "tracker": json});
        let files = vec![
            ("state.json".to_string(), serde_json::to_vec(&state)?),
            ("tracker.safetensors".to_string(), snapshots_to_safetensors(&[("t".into(), snap)])?),
        ];
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            pipeline: self.pipeline.clone(),
            partition: UNIT,
            next_offset: pos.frames_done as i64,
            fingerprint: self.fingerprint.clone(),
            model_updates: tracker.counts.network_updates,
            messages_in: pos.frames_done,
            outputs: self.outputs.iter().cloned().zip(out.ends).collect(),
            published_ahead: [None, None],
            txn: None,
            writer_epoch: 0,
            created_at_ms: chrono::Utc::now().timestamp_millis(),
            files: Vec::new(),
        };
        let (bytes, _) = self.store.write(manifest, files).await?;
        tracing::info!(frames = pos.frames_done, bytes, location = %self.store.location, "solar checkpoint written");
        Ok(bytes)
    }

    /// Loads the newest intact checkpoint into `tracker` (a damaged one is skipped
    /// for the previous); `None` when there is none.
    pub async fn restore(&self, tracker: &mut Tracker) -> crate::error::Result<Option<Restored>> {
        let Some((m, files)) = self.store.latest(UNIT).await? else { return Ok(None) };
        let at = format!("checkpoint {}/{} in {}", self.pipeline, m.next_offset, self.store.location);
        crate::ensure!(Config, 
            m.fingerprint == self.fingerprint,
            "{at} was written by a different tracker configuration or input topics; restore it with the configuration that wrote it, or use a new checkpoint location"
        );
        let state: serde_json::Value = serde_json::from_slice(files.get("state.json").ok_or_else(|| crate::error::Error::Checkpoint(format!("{at}: state.json missing")))?).with_context(|| format!("{at}: state.json"))?;
        let mut snaps = safetensors_to_snapshots(files.get("tracker.safetensors").ok_or_else(|| crate::error::Error::Checkpoint(format!("{at}: tracker.safetensors missing")))?)?;
        let mut snap = snaps.remove("t").unwrap_or_default();
        tracker.load(&state["tracker"], &mut snap).with_context(|| format!("restoring the tracker from {at}"))?;
        let position: Position = serde_json::from_value(state["position"].clone()).with_context(|| format!("{at}: position"))?;
        let outputs: OutputMarks = serde_json::from_value(state["outputs"].clone()).with_context(|| format!("{at}: outputs"))?;
        tracing::info!(frames = position.frames_done, location = %self.store.location, "solar checkpoint restored");
        Ok(Some(Restored { position, outputs }))
    }
}

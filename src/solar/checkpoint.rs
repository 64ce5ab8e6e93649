//! The solar pipeline's checkpoint: the tracker (network weights and AdamW moments,
//! every track with its crops, the last frame) and the input positions (next offset
//! per frames partition, the labels offset and labels read but not yet due), written
//! as `state.json` + `tracker.safetensors` into a fresh directory that is renamed
//! into place, so a crash never leaves a half-written checkpoint; the newest two kept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::tracker::{Label, Tracker};
use crate::state::checkpoint::{safetensors_to_snapshots, snapshots_to_safetensors};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Position {
    pub frames_next: BTreeMap<i32, i64>,
    pub labels_next: i64,
    pub pending_labels: Vec<Label>,
    pub last_frame_ms: i64,
    pub frames_done: u64,
}

fn root(dir: &Path, pipeline: &str) -> PathBuf {
    dir.join(pipeline).join("solar")
}

/// Writes a checkpoint after `pos.frames_done` frames.
pub fn write(dir: &Path, pipeline: &str, tracker: &Tracker, pos: &Position) -> anyhow::Result<()> {
    let r = root(dir, pipeline);
    std::fs::create_dir_all(&r).with_context(|| format!("creating {}", r.display()))?;
    let (json, snap) = tracker.save()?;
    let state = serde_json::json!({"format_version": 1, "pipeline": pipeline, "position": pos, "tracker": json});
    let name = format!("{:012}", pos.frames_done);
    let tmp = r.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    std::fs::write(tmp.join("tracker.safetensors"), snapshots_to_safetensors(&[("t".into(), snap)])?)?;
    std::fs::write(tmp.join("state.json"), serde_json::to_vec(&state)?)?;
    let dst = r.join(&name);
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::rename(&tmp, &dst).with_context(|| format!("renaming into {}", dst.display()))?;
    let mut all: Vec<PathBuf> = std::fs::read_dir(&r)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.file_name().is_some_and(|n| !n.to_string_lossy().starts_with('.'))).collect();
    all.sort();
    for old in all.iter().rev().skip(2) {
        let _ = std::fs::remove_dir_all(old);
    }
    tracing::info!(frames = pos.frames_done, dir = %dst.display(), "solar checkpoint written");
    Ok(())
}

/// Restores the newest checkpoint into `tracker`; returns its input position.
pub fn restore(dir: &Path, pipeline: &str, tracker: &mut Tracker) -> anyhow::Result<Option<Position>> {
    let r = root(dir, pipeline);
    let Ok(rd) = std::fs::read_dir(&r) else { return Ok(None) };
    let mut all: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.file_name().is_some_and(|n| !n.to_string_lossy().starts_with('.'))).collect();
    all.sort();
    let Some(newest) = all.last() else { return Ok(None) };
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(newest.join("state.json"))?).with_context(|| format!("{}/state.json", newest.display()))?;
    anyhow::ensure!(state["format_version"] == 1, "{}: unknown checkpoint format {}", newest.display(), state["format_version"]);
    let bytes = std::fs::read(newest.join("tracker.safetensors"))?;
    let mut snaps = safetensors_to_snapshots(&bytes)?;
    let mut snap = snaps.remove("t").unwrap_or_default();
    tracker.load(&state["tracker"], &mut snap).with_context(|| format!("restoring the tracker from {}", newest.display()))?;
    let pos: Position = serde_json::from_value(state["position"].clone())?;
    tracing::info!(frames = pos.frames_done, dir = %newest.display(), "solar checkpoint restored");
    Ok(Some(pos))
}

//! Online tracking of Active Regions and Coronal Holes between sparse labels.
//!
//! Per frame, the track's last label box is carried by the differential rotation
//! to the frame (the physics prior, through the frames' WCS); the network then
//! regresses a correction from two crops: the labelled frame around the label box
//! (the template: the region as the catalogue last saw it) and the current frame
//! around the prior. GOTURN pairs consecutive frames; between sparse labels that
//! chains each frame's error into the next, so here the earlier crop is the last
//! labelled one and every frame is corrected afresh from the prior. A label re-anchors its track (matched by event id, else by
//! overlap; a label with no track starts one) and, when the tracker had predicted
//! that very frame, trains the network on that pair plus augmented pairs (the label
//! box shifted and scaled by Laplace draws, as in GOTURN's motion model).
//! Rotation-only and static boxes are kept beside each track as baselines.

use serde::{Deserialize, Serialize};

pub use super::config::TrackerConfig;
use super::frame::Frame;
use super::net::TrackerNet;
use super::rotation::synodic_shift_deg;
use super::track::{crop, BoxPx, EventType};
use super::wcs::SolarWcs;
use crate::model::rand::Draws;
use crate::model::Snapshot;

/// A label: a catalogue box for an event at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    pub event_id: String,
    pub event_type: EventType,
    pub time_ms: i64,
    pub bbox: LabelBox,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum LabelBox {
    Px([f64; 4]),
    Arcsec([f64; 4]),
}

impl LabelBox {
    pub fn to_px(&self, wcs: &SolarWcs) -> BoxPx {
        match *self {
            LabelBox::Px(b) => BoxPx::from_corners(b),
            LabelBox::Arcsec(b) => {
                let (x0, y0) = wcs.hpc_to_pix(b[0], b[1]);
                let (x1, y1) = wcs.hpc_to_pix(b[2], b[3]);
                BoxPx::from_corners([x0.min(x1), y0.min(y1), x0.max(x1), y0.max(y1)])
            }
        }
    }
}

/// What the tracker saw for a track at its last frame (besides the template, which
/// does not change until the label that consumes this pair).
#[derive(Debug, Clone)]
struct Pair {
    time_ms: i64,
    cur: Vec<f32>,
    prior: BoxPx,
}

#[derive(Debug, Clone)]
pub struct Track {
    pub id: u64,
    pub event_id: String,
    pub event_type: EventType,
    pub tracker: BoxPx,
    pub rotation: BoxPx,
    pub fixed: BoxPx,
    pub last_time_ms: i64,
    pub last_label_ms: i64,
    pub confidence: f64,
    /// Re-anchored on a label at `last_time_ms`.
    pub from_label: bool,
    /// The template: the crop around the last label box in its frame.
    template: Vec<f32>,
    norm: (f32, f32),
    pair: Option<Pair>,
}

/// One track's output for one frame.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TrackOut {
    pub track_id: u64,
    pub event_id: String,
    pub event_type: EventType,
    pub frame_time: String,
    pub frame_time_ms: i64,
    pub bbox_px: [f64; 4],
    pub bbox_arcsec: [f64; 4],
    pub center_lat_deg: Option<f64>,
    pub center_lon_deg: Option<f64>,
    pub confidence: f64,
    pub source: &'static str,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrackerCounts {
    pub frames: u64,
    pub labels: u64,
    pub labels_matched_by_id: u64,
    pub labels_matched_by_iou: u64,
    pub tracks_started: u64,
    pub tracks_ended_limb: u64,
    pub tracks_ended_stale: u64,
    pub network_updates: u64,
    /// Mean training loss of the last update (smooth L1).
    pub last_loss: f64,
    /// Labels that found their track predicted on the label's frame: the skill
    /// measurable on real data, where the only truth is the labels. Sums of the IoU
    /// of the tracker's and the rotation-only box with the label's.
    #[serde(default)]
    pub labels_scored: u64,
    #[serde(default)]
    pub label_iou_sum: f64,
    #[serde(default)]
    pub label_iou_rotation_sum: f64,
}

pub struct Tracker {
    pub cfg: TrackerConfig,
    pub net: TrackerNet,
    pub tracks: Vec<Track>,
    next_id: u64,
    rng: Draws,
    /// The frame last processed (labels at its time train on it).
    last: Option<Frame>,
    pub counts: TrackerCounts,
}

/// Moves a box's centre by the differential rotation from `from` to `to` (same
/// size); `None` once the centre leaves the disk or passes `limb` degrees.
pub fn rotate_box(b: &BoxPx, from: &SolarWcs, to: &SolarWcs, dt_days: f64, limb: f64) -> Option<BoxPx> {
    let (lat, lon) = from.pix_to_hg(b.cx, b.cy)?;
    let lon2 = lon + synodic_shift_deg(lat, dt_days);
    if (lon2 - to.l0_deg).abs() > limb {
        return None;
    }
    let (x, y) = to.hg_to_pix(lat, lon2)?;
    Some(BoxPx { cx: x, cy: y, ..*b })
}

impl Tracker {
    pub fn new(cfg: TrackerConfig, base_dir: &std::path::Path) -> crate::error::Result<Self> {
        let device = crate::model::device(cfg.device)?;
        let mut net = TrackerNet::new(cfg.crop, cfg.learning_rate, cfg.seed ^ 0x5eed, &device)?;
        if let Some(w) = &cfg.weights {
            let p = if w.is_absolute() { w.clone() } else { base_dir.join(w) };
            net.load_weights(&p)?;
        }
        Ok(Tracker { rng: Draws(cfg.seed), cfg, net, tracks: Vec::new(), next_id: 1, last: None, counts: TrackerCounts::default() })
    }

    /// Predicts every track's box in `fr` (before any label at its time).
    pub fn on_frame(&mut self, fr: &Frame) -> crate::error::Result<()> {
        self.counts.frames += 1;
        let prev_wcs = self.last.as_ref().map(|f| f.wcs).unwrap_or(fr.wcs);
        let (s, ctx, limb) = (self.cfg.crop, self.cfg.context, self.cfg.limb_lon_deg);
        let max_ms = (self.cfg.max_hours_without_label * 3_600_000.0) as i64;
        let mut keep = Vec::with_capacity(self.tracks.len());
        for mut t in std::mem::take(&mut self.tracks) {
            let dt = (fr.time_ms - t.last_time_ms) as f64 / 86_400_000.0;
            if fr.time_ms - t.last_label_ms > max_ms {
                self.counts.tracks_ended_stale += 1;
                continue;
            }
            // The prior is the rotation-only box (the last label carried by the
            // rotation), not the tracker's own last box: the network corrects it
            // afresh on every frame, so its errors do not accumulate between labels.
            let (Some(_), Some(rot)) = (rotate_box(&t.tracker, &prev_wcs, &fr.wcs, dt, limb), rotate_box(&t.rotation, &prev_wcs, &fr.wcs, dt, limb)) else {
                self.counts.tracks_ended_limb += 1;
                continue;
            };
            t.rotation = rot;
            let prior = rot;
            let (cur, _) = crop(fr, &prior, s, ctx, Some(t.norm));
            t.pair = Some(Pair { time_ms: fr.time_ms, cur, prior });
            t.tracker = prior;
            t.last_time_ms = fr.time_ms;
            t.from_label = false;
            keep.push(t);
        }
        self.tracks = keep;
        // One forward pass for every track.
        let n = self.tracks.len();
        let mut prev = Vec::with_capacity(n * s * s);
        let mut cur = Vec::with_capacity(n * s * s);
        let mut types = Vec::with_capacity(n);
        for t in &self.tracks {
            let p = t.pair.as_ref().expect("set above");
            prev.extend_from_slice(&t.template);
            cur.extend_from_slice(&p.cur);
            types.push(t.event_type.index());
        }
        let deltas = self.net.predict(&prev, &cur, &types)?;
        for (t, d) in self.tracks.iter_mut().zip(deltas) {
            let prior = t.pair.as_ref().expect("set above").prior;
            t.tracker = prior.apply(d);
            t.confidence = (-(d.iter().map(|v| v.abs() as f64).sum::<f64>())).exp();
        }
        self.last = Some(fr.clone());
        Ok(())
    }

    /// Applies a label at (or before) the last frame's time: re-anchors or starts a
    /// track, and trains the network when the track was predicted on that frame.
    pub fn on_label(&mut self, l: &Label) -> crate::error::Result<()> {
        let Some(fr) = self.last.clone() else { crate::fail!(Input, "label before any frame") };
        self.counts.labels += 1;
        let mut b = l.bbox.to_px(&fr.wcs);
        if l.time_ms < fr.time_ms {
            // A late label: carry it to the current frame by the rotation.
            let dt = (fr.time_ms - l.time_ms) as f64 / 86_400_000.0;
            match rotate_box(&b, &fr.wcs, &fr.wcs, dt, self.cfg.limb_lon_deg) {
                Some(r) => b = r,
                None => return Ok(()),
            }
        }
        let by_id = self.tracks.iter().position(|t| t.event_id == l.event_id);
        let idx = match by_id {
            Some(i) => {
                self.counts.labels_matched_by_id += 1;
                Some(i)
            }
            None => {
                let best = self
                    .tracks
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| t.event_type == l.event_type)
                    .map(|(i, t)| (i, t.tracker.iou(&b)))
                    .filter(|(_, v)| *v >= self.cfg.match_iou)
                    .max_by(|a, b| a.1.total_cmp(&b.1));
                best.map(|(i, _)| {
                    self.counts.labels_matched_by_iou += 1;
                    i
                })
            }
        };
        let (s, ctx) = (self.cfg.crop, self.cfg.context);
        let (anchor, norm) = crop(&fr, &b, s, ctx, None);
        match idx {
            Some(i) => {
                let t = &mut self.tracks[i];
                if !t.from_label && t.last_time_ms == fr.time_ms {
                    self.counts.labels_scored += 1;
                    self.counts.label_iou_sum += t.tracker.iou(&b);
                    self.counts.label_iou_rotation_sum += t.rotation.iou(&b);
                }
                t.event_id = l.event_id.clone();
                if let Some(p) = t.pair.take().filter(|p| p.time_ms == l.time_ms) {
                    let ty = t.event_type.index();
                    // The template the pair was predicted from (replaced below).
                    let template = std::mem::take(&mut t.template);
                    for _ in 0..self.cfg.steps_per_label.max(1) {
                        let mut prev = template.clone();
                        let mut cur = p.cur.clone();
                        let mut types = vec![ty];
                        let mut targets = vec![p.prior.delta_to(&b)];
                        for _ in 0..self.cfg.augment {
                            let shifted = b.perturbed(&mut self.rng, self.cfg.shift_scale, self.cfg.size_scale);
                            let (c, _) = crop(&fr, &shifted, s, ctx, Some(norm));
                            prev.extend_from_slice(&anchor);
                            cur.extend_from_slice(&c);
                            types.push(ty);
                            targets.push(shifted.delta_to(&b));
                        }
                        self.counts.last_loss = self.net.learn(&prev, &cur, &types, &targets)? as f64;
                        self.counts.network_updates += 1;
                    }
                }
                let t = &mut self.tracks[i];
                t.tracker = b;
                t.rotation = b;
                t.fixed = b;
                t.last_label_ms = l.time_ms;
                t.last_time_ms = fr.time_ms;
                t.template = anchor;
                t.norm = norm;
                t.confidence = 1.0;
                t.from_label = true;
            }
            None => {
                self.counts.tracks_started += 1;
                let id = self.next_id;
                self.next_id += 1;
                self.tracks.push(Track {
                    id,
                    event_id: l.event_id.clone(),
                    event_type: l.event_type,
                    tracker: b,
                    rotation: b,
                    fixed: b,
                    last_time_ms: fr.time_ms,
                    last_label_ms: l.time_ms,
                    confidence: 1.0,
                    from_label: true,
                    template: anchor,
                    norm,
                    pair: None,
                });
            }
        }
        Ok(())
    }

    /// Every live track's output for the last frame.
    pub fn outputs(&self) -> Vec<TrackOut> {
        let Some(fr) = &self.last else { return Vec::new() };
        self.tracks
            .iter()
            .map(|t| {
                let c = t.tracker.corners();
                let (ax0, ay0) = fr.wcs.pix_to_hpc(c[0], c[1]);
                let (ax1, ay1) = fr.wcs.pix_to_hpc(c[2], c[3]);
                let hg = fr.wcs.pix_to_hg(t.tracker.cx, t.tracker.cy);
                TrackOut {
                    track_id: t.id,
                    event_id: t.event_id.clone(),
                    event_type: t.event_type,
                    frame_time: crate::source::file::rfc3339_ms(fr.time_ms),
                    frame_time_ms: fr.time_ms,
                    bbox_px: c,
                    bbox_arcsec: [ax0.min(ax1), ay0.min(ay1), ax0.max(ax1), ay0.max(ay1)],
                    center_lat_deg: hg.map(|h| h.0),
                    center_lon_deg: hg.map(|h| h.1),
                    confidence: t.confidence,
                    source: if t.from_label { "label" } else { "tracker" },
                }
            })
            .collect()
    }

    /// The tracker's whole state: JSON for the tracks' boxes and counters, a
    /// snapshot for the network (weights, AdamW moments), the tracks' crops and the
    /// last frame.
    pub fn save(&self) -> crate::error::Result<(serde_json::Value, Snapshot)> {
        let mut s = Snapshot::default();
        self.net.save(&mut s)?;
        let f32s = |v: &[f32]| v.iter().map(|x| *x as f64).collect::<Vec<f64>>();
        let mut tracks = Vec::new();
        for t in &self.tracks {
            s.put(&format!("track{}.template", t.id), f32s(&t.template));
            if let Some(p) = &t.pair {
                s.put(&format!("track{}.pair_cur", t.id), f32s(&p.cur));
            }
            tracks.push(serde_json::json!({
                "id": t.id, "event_id": t.event_id, "event_type": t.event_type,
                "tracker": t.tracker, "rotation": t.rotation, "fixed": t.fixed,
                "last_time_ms": t.last_time_ms, "last_label_ms": t.last_label_ms,
                "confidence": t.confidence, "from_label": t.from_label, "norm": [t.norm.0, t.norm.1],
                "pair": t.pair.as_ref().map(|p| serde_json::json!({"time_ms": p.time_ms, "prior": p.prior})),
            }));
        }
        let last = self.last.as_ref().map(|f| {
            s.put("last_frame.pixels", f32s(&f.pixels));
            serde_json::json!({"time_ms": f.time_ms, "instrument": f.instrument, "wavelength": f.wavelength, "width": f.width, "height": f.height, "wcs": f.wcs})
        });
        let json = serde_json::json!({"next_id": self.next_id, "rng": self.rng.0, "tracks": tracks, "last_frame": last, "counts": self.counts});
        Ok((json, s))
    }

    /// Restores what [`Tracker::save`] wrote.
    pub fn load(&mut self, json: &serde_json::Value, s: &mut Snapshot) -> crate::error::Result<()> {
        use crate::error::Context;
        self.net.load(s)?;
        let f32s = |v: &[f64]| v.iter().map(|x| *x as f32).collect::<Vec<f32>>();
        self.next_id = json["next_id"].as_u64().ok_or_else(|| missing("next_id"))?;
        self.rng = Draws(json["rng"].as_u64().ok_or_else(|| missing("rng"))?);
        self.counts = serde_json::from_value(json["counts"].clone())?;
        let bx = |v: &serde_json::Value| -> crate::error::Result<BoxPx> { Ok(serde_json::from_value(v.clone())?) };
        self.tracks.clear();
        for t in json["tracks"].as_array().context("tracks")? {
            let id = t["id"].as_u64().context("id")?;
            let pair = match t.get("pair").filter(|p| !p.is_null()) {
                Some(p) => Some(Pair {
                    time_ms: p["time_ms"].as_i64().ok_or_else(|| missing("pair time"))?,
                    cur: f32s(s.array(&format!("track{id}.pair_cur"))?),
                    prior: bx(&p["prior"])?,
                }),
                None => None,
            };
            self.tracks.push(Track {
                id,
                event_id: t["event_id"].as_str().ok_or_else(|| missing("event_id"))?.to_string(),
                event_type: serde_json::from_value(t["event_type"].clone())?,
                tracker: bx(&t["tracker"])?,
                rotation: bx(&t["rotation"])?,
                fixed: bx(&t["fixed"])?,
                last_time_ms: t["last_time_ms"].as_i64().ok_or_else(|| missing("last_time_ms"))?,
                last_label_ms: t["last_label_ms"].as_i64().ok_or_else(|| missing("last_label_ms"))?,
                confidence: t["confidence"].as_f64().ok_or_else(|| missing("confidence"))?,
                from_label: t["from_label"].as_bool().unwrap_or(false),
                template: f32s(s.array(&format!("track{id}.template"))?),
                norm: (t["norm"][0].as_f64().unwrap_or(0.0) as f32, t["norm"][1].as_f64().unwrap_or(1.0) as f32),
                pair,
            });
        }
        self.last = match json.get("last_frame").filter(|v| !v.is_null()) {
            Some(f) => Some(Frame {
                time_ms: f["time_ms"].as_i64().ok_or_else(|| missing("time"))?,
                instrument: f["instrument"].as_str().unwrap_or_default().to_string(),
                wavelength: f["wavelength"].as_f64().unwrap_or(0.0),
                width: f["width"].as_u64().context("width")? as usize,
                height: f["height"].as_u64().context("height")? as usize,
                wcs: serde_json::from_value(f["wcs"].clone())?,
                pixels: f32s(s.array("last_frame.pixels")?),
            }),
            None => None,
        };
        Ok(())
    }
}

/// A tracker state (from a checkpoint) without a field it must have.
fn missing(what: &str) -> crate::error::Error {
    crate::error::Error::Checkpoint(format!("tracker state: no {what}"))
}

//! The solar tracking pipeline: frames topic + labels topic → tracker → tracks topic
//! (and dead letters), with its config file and, on the embedded broker, a
//! synthetic sequence made from a shipped real frame whose exact truth scores the
//! tracker against rotation-only and static boxes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::eval::{Evaluation, Evaluator};
use super::frame::{decode, encode_ipc};
use super::synth::{labels as synth_labels, synthesize, SynthConfig, Truth};
use super::track::EventType;
use super::tracker::{Label, LabelBox, Tracker, TrackerConfig};
use crate::broker::EmbeddedBroker;
use crate::sink::kafka::{dead_letter_future_record, producer};
use crate::sink::DeadLetter;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SolarConfig {
    pub name: String,
    pub source: SolarSource,
    #[serde(default)]
    pub tracker: TrackerConfig,
    pub sink: SolarSink,
    #[serde(default)]
    pub checkpoint: SolarCheckpointConfig,
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[checkpoint]`: where the tracker's state and input positions are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SolarCheckpointConfig {
    pub dir: Option<PathBuf>,
    /// Frames between checkpoints (and always at the end / on shutdown).
    #[serde(default = "every")]
    pub interval_frames: u64,
}

impl Default for SolarCheckpointConfig {
    fn default() -> Self {
        SolarCheckpointConfig { dir: None, interval_frames: every() }
    }
}

fn every() -> u64 {
    20
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
pub struct SolarSink {
    pub topic: String,
    pub dead_letter_topic: String,
}

impl SolarConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut c: SolarConfig = toml::from_str(&text).with_context(|| format!("in {}", path.display()))?;
        c.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(c)
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

#[derive(Debug, Clone, Serialize)]
pub struct SolarSummary {
    pub pipeline: String,
    pub frames_in: u64,
    pub labels_in: u64,
    pub tracks_out: u64,
    pub dead_letters: u64,
    pub dead_letters_by_reason: BTreeMap<String, u64>,
    pub tracker: super::tracker::TrackerCounts,
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
        if let Some(t) = &self.tracking {
            s += &format!("\n  between labels ({} box-frames):            mean IoU   centre error (arcsec)", t.tracker.n);
            for (name, m) in [("tracker", &t.tracker), ("rotation only", &t.rotation_only), ("static", &t.r#static)] {
                s += &format!("\n    {name:<14} {:>10.4} {:>12.2}", m.mean_iou, m.center_err_arcsec);
            }
        }
        s
    }
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

/// Options of a run.
#[derive(Debug, Clone, Default)]
pub struct SolarRunOptions {
    pub brokers: Option<String>,
    pub stop_at_end: bool,
    /// Write the evaluation report (JSON + plots) here.
    pub report: Option<PathBuf>,
    /// Overrides `[checkpoint] dir`.
    pub checkpoint_dir: Option<PathBuf>,
}

struct Seeded {
    broker: EmbeddedBroker,
    truth: Vec<Truth>,
}

/// Creates the topics and publishes the synthetic sequence and its labels.
async fn seed(cfg: &SolarConfig) -> anyhow::Result<Seeded> {
    let syn = cfg.source.synthetic.as_ref().context("the embedded broker needs [source.synthetic]")?;
    let bytes = std::fs::read(cfg.resolve(&syn.from)).with_context(|| format!("reading {}", syn.from.display()))?;
    let src = decode(&bytes, usize::MAX).map_err(|e| anyhow::anyhow!("{}: {e}", syn.from.display()))?;
    let seq = synthesize(&src, &syn.synth);
    let b = EmbeddedBroker::start()?;
    b.create_topic(&cfg.source.frames_topic, cfg.source.frame_partitions.max(1))?;
    for t in [&cfg.source.labels_topic, &cfg.sink.topic, &cfg.sink.dead_letter_topic] {
        b.create_topic(t, 1)?;
    }
    let parts = cfg.source.frame_partitions.max(1);
    let mut sent = 0i32;
    let prod = producer(b.bootstrap_servers())?;
    let mut labels = synth_labels(&seq);
    for i in 0..syn.unknown_labels {
        let t = seq.label_times_ms.get(1 + i).or(seq.label_times_ms.first()).copied().unwrap_or(src.time_ms);
        let c = syn.synth.size as f64 / 2.0;
        labels.push(serde_json::json!({"event_id": format!("UNKNOWN-{}", i + 1), "event_type": "AR", "time": crate::source::file::rfc3339_ms(t), "bbox": {"px": [c - 8.0, c - 8.0, c + 8.0, c + 8.0]}}));
    }
    labels.sort_by_key(|l| crate::source::file::parse_time_ms(&l["time"]).unwrap_or(0));
    for l in &labels {
        let t = crate::source::file::parse_time_ms(&l["time"]);
        let payload = serde_json::to_vec(l)?;
        let mut r = FutureRecord::<[u8], [u8]>::to(&cfg.source.labels_topic).partition(0).payload(&payload).key(l["event_id"].as_str().unwrap_or("").as_bytes());
        if let Some(t) = t {
            r = r.timestamp(t);
        }
        prod.send(r, Duration::from_secs(10)).await.map_err(|(e, _)| e)?;
    }
    let every = (seq.frames.len() / (syn.corrupt_frames + 1)).max(1);
    for (i, fr) in seq.frames.iter().enumerate() {
        if syn.corrupt_frames > 0 && i > 0 && i % every == 0 && i / every <= syn.corrupt_frames {
            let junk = b"SIMPLE  =                    T / but nothing else".to_vec();
            prod.send(FutureRecord::<[u8], [u8]>::to(&cfg.source.frames_topic).partition(sent % parts).payload(&junk).timestamp(fr.time_ms), Duration::from_secs(10))
                .await
                .map_err(|(e, _)| e)?;
            sent += 1;
        }
        let payload = encode_ipc(fr)?;
        prod.send(FutureRecord::<[u8], [u8]>::to(&cfg.source.frames_topic).partition(sent % parts).payload(&payload).timestamp(fr.time_ms), Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)?;
        sent += 1;
    }
    b.check_retained(&cfg.source.frames_topic)?;
    tracing::info!(frames = seq.frames.len(), labels = labels.len(), regions = seq.regions.len(), "seeded the embedded broker with a synthetic sequence");
    Ok(Seeded { broker: b, truth: seq.truth })
}

/// Publishes a dead letter (to partition 0 of the dead-letter topic) and counts it.
async fn dead_letter(prod: &FutureProducer, topic: &str, source_topic: &str, d: &DeadLetter, counts: &mut BTreeMap<String, u64>) -> anyhow::Result<()> {
    *counts.entry(d.reason.to_string()).or_default() += 1;
    tracing::warn!(topic = source_topic, partition = d.partition, offset = d.offset, reason = d.reason, detail = %d.detail, "dead-lettered");
    prod.send(dead_letter_future_record(topic, source_topic, d, 0), Duration::from_secs(30)).await.map_err(|(e, _)| e)?;
    Ok(())
}

/// A frame message read but not processed: payload, offset, timestamp.
type Queued = (Vec<u8>, i64, Option<i64>);

/// Hours since the label, the frame and its boxes.
type Worst = (f64, super::frame::Frame, Vec<super::eval::Boxes>);

/// Runs the pipeline: until the end of the input (embedded / `stop_at_end`) or
/// until `shutdown`.
pub async fn run(cfg: &SolarConfig, opts: SolarRunOptions, mut shutdown: tokio::sync::watch::Receiver<bool>) -> anyhow::Result<SolarSummary> {
    let mut tracker = Tracker::new(cfg.tracker.clone(), &cfg.base_dir)?;
    let ckpt_dir = opts.checkpoint_dir.clone().or_else(|| cfg.checkpoint.dir.as_ref().map(|d| cfg.resolve(d)));
    let restored = match &ckpt_dir {
        Some(d) => super::checkpoint::restore(d, &cfg.name, &mut tracker)?,
        None => None,
    };
    let brokers = opts.brokers.clone().unwrap_or_else(|| cfg.source.brokers.clone());
    let mut seeded = None;
    let (brokers, stop_at_end) = if brokers == "embedded" {
        let s = seed(cfg).await?;
        let bs = s.broker.bootstrap_servers().to_string();
        seeded = Some(s);
        (bs, true)
    } else {
        (brokers, opts.stop_at_end)
    };
    let truth: BTreeMap<(i64, String), [f64; 4]> =
        seeded.as_ref().map(|s| s.truth.iter().map(|t| ((t.frame_time_ms, t.event_id.clone()), t.bbox_px)).collect()).unwrap_or_default();
    let mut eval = Evaluator::default();
    let group = cfg.source.group.clone().unwrap_or_else(|| format!("tickflare-{}", cfg.name));
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.message.max.bytes", "67108864")
        .set("max.partition.fetch.bytes", "67108864")
        .create()?;
    let prod = producer(&brokers)?;
    let t10 = Duration::from_secs(10);
    let frames_end = crate::source::kafka::end_offsets(&consumer, &cfg.source.frames_topic, t10).with_context(|| format!("topic {:?}", cfg.source.frames_topic))?;
    if frames_end.is_empty() {
        bail!("frames topic {:?} does not exist on {brokers}", cfg.source.frames_topic);
    }
    let (_, labels_end) = consumer.fetch_watermarks(&cfg.source.labels_topic, 0, t10).with_context(|| format!("topic {:?}", cfg.source.labels_topic))?;
    let mut tpl = TopicPartitionList::new();
    let pos = restored.unwrap_or_default();
    let at = |o: Option<&i64>| o.map_or(Offset::Beginning, |o| Offset::Offset(*o));
    for p in frames_end.keys() {
        tpl.add_partition_offset(&cfg.source.frames_topic, *p, at(pos.frames_next.get(p)))?;
    }
    tpl.add_partition_offset(&cfg.source.labels_topic, 0, if pos.labels_next > 0 { Offset::Offset(pos.labels_next) } else { Offset::Beginning })?;
    consumer.assign(&tpl)?;
    drop(tpl);
    let mut pending_labels: Vec<Label> = pos.pending_labels.clone();
    // Per frames partition: records read, not yet processed.
    let mut queues: BTreeMap<i32, std::collections::VecDeque<Queued>> = frames_end.keys().map(|p| (*p, Default::default())).collect();
    let mut frames_next: BTreeMap<i32, i64> = frames_end.keys().map(|p| (*p, pos.frames_next.get(p).copied().unwrap_or(0))).collect();
    // Next offset per partition of the frames actually processed (what a checkpoint records).
    let mut processed = frames_next.clone();
    let mut frames_done = pos.frames_done;
    let mut waiting_since: Option<Instant> = None;
    let (mut frames_in, mut labels_in, mut tracks_out) = (0u64, 0u64, 0u64);
    let mut dlq: BTreeMap<String, u64> = BTreeMap::new();
    let mut labels_next = pos.labels_next;
    let mut last_frame_ms = if pos.frames_done > 0 { pos.last_frame_ms } else { i64::MIN };
    let started = Instant::now();
    // The frame furthest from its labels, for the report's picture.
    let mut worst: Option<Worst> = None;
    loop {
        if *shutdown.borrow() {
            break;
        }
        // Frames wait until every label up to their time has been read (on a finite
        // input: the labels topic's end), so the order of the two topics' fetches
        // never changes the result.
        let labels_done = labels_next >= labels_end;
        // The next frame in time over all partitions: once every partition has one
        // queued (or, on a finite input, is at its end); live, after a 2 s wait for
        // the slowest partition.
        let complete = queues.iter().all(|(p, q)| !q.is_empty() || (stop_at_end && frames_next[p] >= frames_end[p]));
        let any = queues.values().any(|q| !q.is_empty());
        if any && !complete && !stop_at_end {
            waiting_since.get_or_insert_with(Instant::now);
        }
        let live_timeout = waiting_since.is_some_and(|w| w.elapsed() > Duration::from_secs(2));
        let ready = any && (if stop_at_end { labels_done && complete } else { complete || live_timeout });
        if ready {
            waiting_since = None;
            let p = *queues
                .iter()
                .filter(|(_, q)| !q.is_empty())
                .min_by_key(|(p, q)| (q.front().and_then(|f| f.2).unwrap_or(i64::MIN), **p))
                .map(|(p, _)| p)
                .expect("some queue has a frame");
            if let Some((payload, offset, ts)) = queues.get_mut(&p).and_then(|q| q.pop_front()) {
                processed.insert(p, offset + 1);
                frames_done += 1;
                match decode(&payload, cfg.source.max_frame_pixels) {
                    Err(e) => {
                        let d = DeadLetter { partition: p, offset, reason: e.reason, detail: e.detail, key: None, payload: Some(payload), timestamp_ms: ts };
                        dead_letter(&prod, &cfg.sink.dead_letter_topic, &cfg.source.frames_topic, &d, &mut dlq).await?;
                    }
                    Ok(fr) if fr.time_ms <= last_frame_ms => {
                        let detail = "frame time not after the previous frame's".to_string();
                        let d = DeadLetter { partition: p, offset, reason: "frame_out_of_order", detail, key: None, payload: Some(payload), timestamp_ms: ts };
                        dead_letter(&prod, &cfg.sink.dead_letter_topic, &cfg.source.frames_topic, &d, &mut dlq).await?;
                    }
                    Ok(fr) => {
                        frames_in += 1;
                        last_frame_ms = fr.time_ms;
                        tracker.on_frame(&fr)?;
                        if !truth.is_empty() {
                            let boxes = eval.observe(&tracker, &fr, &truth);
                            let h = boxes.iter().map(|b| b.hours_since_label).fold(0.0, f64::max);
                            if !boxes.is_empty() && worst.as_ref().is_none_or(|w| h > w.0) {
                                worst = Some((h, fr.clone(), boxes));
                            }
                        }
                        pending_labels.sort_by_key(|l| l.time_ms);
                        let due: Vec<Label> = pending_labels.iter().filter(|l| l.time_ms <= fr.time_ms).cloned().collect();
                        pending_labels.retain(|l| l.time_ms > fr.time_ms);
                        for l in &due {
                            tracker.on_label(l)?;
                        }
                        for out in tracker.outputs() {
                            let payload = serde_json::to_vec(&out)?;
                            prod.send(
                                FutureRecord::<[u8], [u8]>::to(&cfg.sink.topic).partition(0).key(out.event_id.as_bytes()).payload(&payload).timestamp(out.frame_time_ms),
                                Duration::from_secs(30),
                            )
                            .await
                            .map_err(|(e, _)| e)?;
                            tracks_out += 1;
                        }
                    }
                }
                if let Some(d) = &ckpt_dir {
                    if frames_done % cfg.checkpoint.interval_frames.max(1) == 0 {
                        let pos = super::checkpoint::Position { frames_next: processed.clone(), labels_next, pending_labels: pending_labels.clone(), last_frame_ms, frames_done };
                        super::checkpoint::write(d, &cfg.name, &tracker, &pos).context("writing a checkpoint (stopping: restarts would lose the tracker's state)")?;
                    }
                }
                continue;
            }
        }
        if stop_at_end && frames_next.iter().all(|(p, n)| *n >= frames_end[p]) && labels_next >= labels_end && !any {
            break;
        }
        let m = tokio::select! {
            _ = shutdown.changed() => continue,
            r = tokio::time::timeout(Duration::from_secs(1), consumer.recv()) => match r {
                Err(_) => continue,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "consume error");
                    continue;
                }
                Ok(Ok(m)) => m,
            },
        };
        if m.topic() == cfg.source.labels_topic {
            labels_next = m.offset() + 1;
            match parse_label(m.payload().unwrap_or_default()) {
                Ok(l) => {
                    labels_in += 1;
                    pending_labels.push(l);
                }
                Err(detail) => {
                    let d = DeadLetter {
                        partition: m.partition(),
                        offset: m.offset(),
                        reason: "label_invalid",
                        detail,
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().map(<[u8]>::to_vec),
                        timestamp_ms: m.timestamp().to_millis(),
                    };
                    dead_letter(&prod, &cfg.sink.dead_letter_topic, &cfg.source.labels_topic, &d, &mut dlq).await?;
                }
            }
        } else {
            frames_next.insert(m.partition(), m.offset() + 1);
            queues.entry(m.partition()).or_default().push_back((m.payload().unwrap_or_default().to_vec(), m.offset(), m.timestamp().to_millis()));
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(d) = &ckpt_dir {
        // Frames read but not processed are read again after a restart.
        let pos = super::checkpoint::Position { frames_next: processed.clone(), labels_next, pending_labels: pending_labels.clone(), last_frame_ms, frames_done };
        super::checkpoint::write(d, &cfg.name, &tracker, &pos).context("writing the final checkpoint")?;
    }
    drop(consumer);
    let tracking = (!truth.is_empty()).then(|| eval.summary());
    if let (Some(dir), Some(t)) = (&opts.report, &tracking) {
        super::eval::write_report(dir, t, worst.as_ref().map(|w| (&w.1, w.2.as_slice())))?;
    }
    drop(prod);
    drop(seeded);
    Ok(SolarSummary {
        pipeline: cfg.name.clone(),
        frames_in,
        labels_in,
        tracks_out,
        dead_letters: dlq.values().sum(),
        dead_letters_by_reason: dlq,
        tracker: tracker.counts.clone(),
        elapsed_s: elapsed,
        frames_per_s: frames_in as f64 / elapsed.max(1e-9),
        tracking,
    })
}


/// Fails unless the config names distinct topics.
pub fn check(cfg: &SolarConfig) -> anyhow::Result<()> {
    let t = [&cfg.source.frames_topic, &cfg.source.labels_topic, &cfg.sink.topic, &cfg.sink.dead_letter_topic];
    for (i, a) in t.iter().enumerate() {
        if t[..i].contains(a) {
            bail!("topic {a:?} is used twice");
        }
    }
    Ok(())
}

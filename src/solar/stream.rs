//! The solar tracking pipeline run: frames topic + labels topic → tracker → tracks
//! topic (and dead letters). Its steps: connect (real brokers, or the embedded one
//! seeded by [`super::seed`]); restore the tracker and read the outputs' tails
//! ([`super::checkpoint`], [`super::publish`]); then frames in time order
//! ([`super::input`]), labels applied when due, each frame's tracks published and
//! acknowledged, a checkpoint every `interval_frames`; metrics on the shared
//! `/metrics`; at the end a [`SolarSummary`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::Context;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

pub use super::config::{check, is_solar, parse_label, SolarConfig};
use super::checkpoint::{Position, SolarCheckpoints};
use super::eval::{Boxes, Evaluator};
use super::frame::{decode, Frame};
use super::input::{FrameMerge, Queued};
use super::publish::SolarSink;
use super::seed::{seed, Seeded};
pub use super::summary::SolarSummary;
use super::summary::AtLabels;
use super::tracker::{Label, Tracker};
use crate::pipeline::kafka_props::{KafkaProps, Role};
use crate::sink::kafka::producer_with;
use crate::source::gather::{gather, Take, Window};
use crate::sink::DeadLetter;
use crate::telemetry::events::CheckpointWritten;
use crate::telemetry::solar::SolarMetrics;
use crate::telemetry::{self, Health};

/// Options of a run.
#[derive(Debug, Clone, Default)]
pub struct SolarRunOptions {
    pub brokers: Option<String>,
    pub stop_at_end: bool,
    /// Write the evaluation report (JSON + plots) here.
    pub report: Option<PathBuf>,
    /// Overrides `[checkpoint] dir` (a directory or an object-store URL).
    pub checkpoint_dir: Option<String>,
    /// Serve `/metrics`, `/healthz`, `/readyz` here (`None`: no endpoint)…
    pub metrics_addr: Option<String>,
    /// …failing when it cannot be bound (an address the user gave).
    pub metrics_required: bool,
}

/// The solar loop takes one record at a time (frames are merged by time before they
/// are tracked), waiting a second at most.
const ONE: Window = Window { max_rows: 1, wait: Duration::from_secs(1), idle: None };

/// Hours since the label, the frame and its boxes.
type Worst = (f64, Frame, Vec<Boxes>);

/// Runs the pipeline: until the end of the input (embedded / `stop_at_end`) or
/// until `shutdown`.
pub async fn run(cfg: &SolarConfig, opts: SolarRunOptions, mut shutdown: tokio::sync::watch::Receiver<bool>) -> crate::error::Result<SolarSummary> {
    let health = Health::new();
    let endpoint = telemetry::serve(opts.metrics_addr.as_deref(), opts.metrics_required, health.clone()).await?;
    let brokers = opts.brokers.clone().unwrap_or_else(|| cfg.source.brokers.clone());
    let (brokers, stop_at_end, seeded) = if brokers == "embedded" {
        let s = tokio::select! {
            s = seed(cfg) => s?,
            _ = shutdown.changed() => crate::fail!(Interrupted, "stopped by a signal while seeding the embedded broker"),
        };
        (s.broker.bootstrap_servers().to_string(), true, Some(s))
    } else {
        (brokers, opts.stop_at_end, None)
    };
    // The `[kafka]` properties are for real clusters, not the embedded broker.
    let props = if seeded.is_some() { KafkaProps::default() } else { cfg.kafka.clone() };
    let mut cc = rdkafka::ClientConfig::new();
    cc.set("bootstrap.servers", &brokers)
        .set("group.id", cfg.source.group.clone().unwrap_or_else(|| format!("tickflare-{}", cfg.name)))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.message.max.bytes", "67108864")
        .set("max.partition.fetch.bytes", "67108864");
    let consumer = crate::source::kafka::Leaving::new(props.create::<StreamConsumer>(&mut cc, Role::Consumer)?);
    let t10 = Duration::from_secs(10);
    let frames_end = crate::source::kafka::end_offsets(&*consumer, &cfg.source.frames_topic, t10)
        .with_context(|| crate::source::kafka::diagnosed(&brokers, &props, format!("topic {:?}", cfg.source.frames_topic)))?;
    if frames_end.is_empty() {
        crate::fail!(Config, "frames topic {:?} does not exist on {brokers}", cfg.source.frames_topic);
    }
    let (_, labels_end) = consumer.fetch_watermarks(&cfg.source.labels_topic, 0, t10).with_context(|| format!("topic {:?}", cfg.source.labels_topic))?;

    health.restoring.store(true, Ordering::Relaxed);
    let mut run = Run::restore(cfg, &opts, &brokers, &props, seeded.as_ref()).await?;
    // A checkpoint past an input's end (the topics were recreated) is refused.
    for (p, next) in &run.pos.frames_next {
        crate::source::kafka::within_topic(&*consumer, &cfg.source.frames_topic, *p, *next).await?;
    }
    crate::source::kafka::within_topic(&*consumer, &cfg.source.labels_topic, 0, run.pos.labels_next).await?;
    let mut merge = FrameMerge::new(frames_end.clone(), &run.pos.frames_next);
    assign(&consumer, cfg, &frames_end, &run.pos)?;
    health.assigned.store(frames_end.len() + 1, Ordering::Relaxed);
    health.restoring.store(false, Ordering::Relaxed);
    health.consuming.store(true, Ordering::Relaxed);
    tracing::info!(pipeline = %cfg.name, brokers = %brokers, "solar pipeline started");
    loop {
        if *shutdown.borrow() {
            break;
        }
        if let Some(q) = merge.next(stop_at_end, run.pos.labels_next >= labels_end) {
            run.frame(q).await?;
            continue;
        }
        if stop_at_end && merge.all_received() && run.pos.labels_next >= labels_end && !merge.any() {
            break;
        }
        // One record at a time: a label is applied before the next frame is taken.
        let mut label = None;
        gather(&consumer, ONE, Some(&mut shutdown), |m| {
            if m.topic() == cfg.source.labels_topic {
                label = Some(m.detach());
            } else {
                merge.push(Queued { partition: m.partition(), offset: m.offset(), timestamp_ms: m.timestamp().to_millis(), payload: m.payload().unwrap_or_default().to_vec() });
            }
            Ok(Take::Row)
        })
        .await?;
        if let Some(m) = label {
            run.label(&m).await?;
        }
    }
    health.consuming.store(false, Ordering::Relaxed);
    // Frames read but not processed are read again after a restart.
    run.checkpoint().await.context("writing the final checkpoint")?;
    drop(consumer);
    let summary = run.finish(opts.report.as_deref())?;
    drop(seeded);
    drop(endpoint);
    Ok(summary)
}

/// Reads every frames partition and the labels topic from the restored position.
fn assign(consumer: &StreamConsumer, cfg: &SolarConfig, frames_end: &BTreeMap<i32, i64>, pos: &Position) -> crate::error::Result<()> {
    let mut tpl = TopicPartitionList::new();
    for p in frames_end.keys() {
        tpl.add_partition_offset(&cfg.source.frames_topic, *p, pos.frames_next.get(p).map_or(Offset::Beginning, |o| Offset::Offset(*o)))?;
    }
    tpl.add_partition_offset(&cfg.source.labels_topic, 0, if pos.labels_next > 0 { Offset::Offset(pos.labels_next) } else { Offset::Beginning })?;
    consumer.assign(&tpl)?;
    Ok(())
}

/// One run's state: the tracker and where the inputs stand (the checkpointed
/// unit), the outputs, and what the summary and metrics count.
struct Run<'a> {
    cfg: &'a SolarConfig,
    tracker: Tracker,
    pos: Position,
    sink: SolarSink,
    ckpt: Option<SolarCheckpoints>,
    metrics: SolarMetrics,
    /// The synthetic sequence's truth per (frame time, event), when known.
    truth: BTreeMap<(i64, String), [f64; 4]>,
    eval: Evaluator,
    /// The frame furthest from its labels, for the report's picture.
    worst: Option<Worst>,
    frames_in: u64,
    labels_in: u64,
    tracks_out: u64,
    checkpoints: u64,
    started: Instant,
}

impl<'a> Run<'a> {
    /// The tracker from the newest checkpoint (or fresh), and the outputs' tails.
    async fn restore(cfg: &'a SolarConfig, opts: &SolarRunOptions, brokers: &str, props: &KafkaProps, seeded: Option<&Seeded>) -> crate::error::Result<Run<'a>> {
        let mut tracker = Tracker::new(cfg.tracker.clone(), &cfg.base_dir)?;
        let location = opts.checkpoint_dir.clone().or_else(|| cfg.checkpoint.dir.as_ref().map(|d| crate::state::store::location_in_file(&d.to_string_lossy(), &cfg.base_dir)));
        let ckpt = match &location {
            Some(l) => Some(SolarCheckpoints::open(l, cfg).with_context(|| format!("opening checkpoints at {l:?}"))?),
            None => None,
        };
        let mut sink = SolarSink::new(producer_with(brokers, props)?, cfg, crate::sink::kafka::max_message_bytes(props));
        let mut pos = Position { last_frame_ms: i64::MIN, ..Default::default() };
        if let Some(ck) = &ckpt {
            let restored = ck.restore(&mut tracker).await?;
            let from = restored.as_ref().map(|r| r.outputs.clone()).unwrap_or_default();
            if let Some(r) = restored {
                pos = r.position;
            }
            // Outputs published after the checkpoint (or, fresh, by a run that
            // crashed before its first one) are recomputed, not sent again.
            sink.resume(brokers, props, from).await?;
        }
        let truth = seeded.map(|s| s.truth.iter().map(|t| ((t.frame_time_ms, t.event_id.clone()), t.bbox_px)).collect()).unwrap_or_default();
        Ok(Run {
            cfg,
            tracker,
            pos,
            sink,
            ckpt,
            metrics: SolarMetrics::new(&cfg.name),
            truth,
            eval: Evaluator::default(),
            worst: None,
            frames_in: 0,
            labels_in: 0,
            tracks_out: 0,
            checkpoints: 0,
            started: Instant::now(),
        })
    }

    /// A labels-topic record: pending until a frame reaches its time, or a dead letter.
    async fn label(&mut self, m: &OwnedMessage) -> crate::error::Result<()> {
        self.pos.labels_next = m.offset() + 1;
        self.metrics.label_read();
        match parse_label(m.payload().unwrap_or_default()) {
            Ok(l) => {
                self.labels_in += 1;
                self.pos.pending_labels.push(l);
                Ok(())
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
                self.sink.dead_letter(&self.cfg.source.labels_topic, &d).await
            }
        }
    }

    /// The next frame in time: tracked (or dead-lettered), its due labels applied,
    /// its tracks published; then a checkpoint when one is due.
    async fn frame(&mut self, q: Queued) -> crate::error::Result<()> {
        self.pos.frames_next.insert(q.partition, q.offset + 1);
        self.pos.frames_done += 1;
        let dead = |reason, detail, q: Queued| DeadLetter { partition: q.partition, offset: q.offset, reason, detail, key: None, payload: Some(q.payload), timestamp_ms: q.timestamp_ms };
        match decode(&q.payload, self.cfg.source.max_frame_pixels) {
            Err(e) => self.sink.dead_letter(&self.cfg.source.frames_topic, &dead(e.reason, e.detail, q)).await?,
            Ok(fr) if fr.time_ms <= self.pos.last_frame_ms => {
                let d = dead("frame_out_of_order", "frame time not after the previous frame's".into(), q);
                self.sink.dead_letter(&self.cfg.source.frames_topic, &d).await?
            }
            Ok(fr) => self.track(&fr, q.partition, q.offset).await?,
        }
        if self.pos.frames_done.is_multiple_of(self.cfg.checkpoint.interval_frames.max(1)) {
            self.checkpoint().await.context("writing a checkpoint (stopping: restarts would lose the tracker's state)")?;
        }
        Ok(())
    }

    async fn track(&mut self, fr: &Frame, partition: i32, offset: i64) -> crate::error::Result<()> {
        let before = self.tracker.counts.clone();
        self.frames_in += 1;
        self.pos.last_frame_ms = fr.time_ms;
        self.tracker.on_frame(fr)?;
        if !self.truth.is_empty() {
            let boxes = self.eval.observe(&self.tracker, fr, &self.truth);
            let h = boxes.iter().map(|b| b.hours_since_label).fold(0.0, f64::max);
            if !boxes.is_empty() && self.worst.as_ref().is_none_or(|w| h > w.0) {
                self.worst = Some((h, fr.clone(), boxes));
            }
        }
        let pending = &mut self.pos.pending_labels;
        pending.sort_by_key(|l| l.time_ms);
        let due: Vec<Label> = pending.iter().filter(|l| l.time_ms <= fr.time_ms).cloned().collect();
        pending.retain(|l| l.time_ms > fr.time_ms);
        for l in &due {
            self.tracker.on_label(l)?;
        }
        let outs = self.tracker.outputs();
        let sent = self.sink.tracks(partition, offset, &outs).await?;
        self.tracks_out += sent;
        crate::pipeline::fault::crash_point("after_publish");
        let fps = self.frames_in as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        self.metrics.frame(&before, &self.tracker.counts, self.tracker.tracks.len(), outs.len() as u64, fps);
        Ok(())
    }

    /// Writes a checkpoint (when checkpointing): every output so far is acknowledged.
    async fn checkpoint(&mut self) -> crate::error::Result<()> {
        let Some(ck) = &self.ckpt else { return Ok(()) };
        let t0 = Instant::now();
        let bytes = ck.write(&self.tracker, &self.pos, &self.sink.outputs).await?;
        self.checkpoints += 1;
        let next_offset = self.pos.frames_done as i64;
        CheckpointWritten { pipeline: &self.cfg.name, partition: 0, next_offset, bytes, seconds: t0.elapsed().as_secs_f64() }.emit();
        crate::pipeline::fault::crash_point("after_checkpoint");
        Ok(())
    }

    fn finish(self, report: Option<&std::path::Path>) -> crate::error::Result<SolarSummary> {
        let elapsed = self.started.elapsed().as_secs_f64();
        let tracking = (!self.truth.is_empty()).then(|| self.eval.summary());
        if let (Some(dir), Some(t)) = (report, &tracking) {
            super::eval::write_report(dir, t, self.worst.as_ref().map(|w| (&w.1, w.2.as_slice())))?;
        }
        let by_reason = self.sink.dead_letters_by_reason.clone();
        Ok(SolarSummary {
            pipeline: self.cfg.name.clone(),
            frames_in: self.frames_in,
            labels_in: self.labels_in,
            tracks_out: self.tracks_out,
            dead_letters: by_reason.values().sum(),
            dead_letters_by_reason: by_reason,
            suppressed: self.sink.suppressed,
            checkpoints: self.checkpoints,
            at_labels: AtLabels::of(&self.tracker.counts),
            tracker: self.tracker.counts.clone(),
            elapsed_s: elapsed,
            frames_per_s: self.frames_in as f64 / elapsed.max(1e-9),
            tracking,
        })
    }
}

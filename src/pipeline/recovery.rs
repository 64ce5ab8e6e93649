//! Exactly-once glue for the run loop: restore a partition (checkpoint + tail read of
//! the output topics), keep the consumer on the restored offset, write checkpoints
//! when due, and drop recomputed outputs the output topics already hold.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::client::{Client, ClientContext};

pub use super::position::{seek, Admit, Position};
use super::build::Built;
use super::kafka_props::KafkaProps;
use crate::error::{Error, Result};
use crate::sink::{dedupe, Outputs};
use crate::state::checkpoint;
use crate::state::store::CheckpointStore;
use crate::state::PartitionState;
use crate::telemetry::events::{CheckpointAge, CheckpointWritten, Restored, Suppressed};

/// A partition read back, before it joins the bookkeeping.
struct Loaded {
    state: PartitionState,
    from: &'static str,
    published: Published,
    epoch_start: Option<BTreeMap<String, i64>>,
    known: [i64; 2],
    writer_epoch: u64,
}

/// Highest source offsets already present in the prediction and dead-letter topics.
pub type Published = (Option<i64>, Option<i64>);

pub struct Checkpointer {
    pub store: CheckpointStore,
    pipeline: String,
    fingerprint: String,
    brokers: String,
    /// The `[kafka]` properties of `brokers` (none for the embedded broker).
    props: KafkaProps,
    source_topic: String,
    outputs: [String; 2],
    every_records: u64,
    every: Duration,
    /// Per partition: offset and time of the latest checkpoint written or restored.
    last: BTreeMap<i32, (i64, Instant)>,
    /// Per partition: what the output topics already hold.
    pub published: BTreeMap<i32, Published>,
    /// `delivery = "transactional"`: checkpoints are written prepared, then marked.
    transactional: bool,
    /// Transactional: per partition, the highest source offsets sent this epoch…
    epoch_sent: BTreeMap<i32, [Option<i64>; 2]>,
    /// …the output partitions' ends when the epoch began (where a resolving tail
    /// read must start: the epoch's own outputs lie after them)…
    epoch_start: BTreeMap<i32, BTreeMap<String, i64>>,
    /// …and the checkpoints prepared for the commit in progress.
    prepared: Vec<checkpoint::Manifest>,
    /// Per partition: the output partitions' ends measured at restore.
    known_ends: BTreeMap<i32, [i64; 2]>,
    /// Per partition: the writer epoch this process claimed at restore.
    writer_epochs: BTreeMap<i32, u64>,
    /// When the writer epochs were last compared with the store's.
    fence_checked: Instant,
}

impl Checkpointer {
    pub fn new(built: &Built, location: &str, brokers: &str, props: &KafkaProps) -> Result<Self> {
        let cfg = &built.config;
        Ok(Checkpointer {
            store: CheckpointStore::open(location, &cfg.name, cfg.checkpoint.keep)?,
            pipeline: cfg.name.clone(),
            fingerprint: built.fingerprint.clone(),
            brokers: brokers.to_string(),
            props: props.clone(),
            source_topic: cfg.source.topic.clone(),
            outputs: [cfg.sink.topic.clone(), cfg.sink.dead_letter_topic.clone()],
            every_records: cfg.checkpoint.interval_records.max(1),
            every: Duration::from_secs(cfg.checkpoint.interval_seconds),
            last: BTreeMap::new(),
            published: BTreeMap::new(),
            transactional: cfg.sink.delivery == crate::pipeline::config::Delivery::Transactional,
            epoch_sent: BTreeMap::new(),
            epoch_start: BTreeMap::new(),
            prepared: Vec::new(),
            known_ends: BTreeMap::new(),
            writer_epochs: BTreeMap::new(),
            fence_checked: Instant::now(),
        })
    }

    /// The newest usable checkpoint of `p`. A prepared (transactional) checkpoint
    /// whose commit is unknown is resolved by a `read_committed` tail read: its
    /// outputs visible → it is marked committed and used; not → it is discarded and
    /// the previous one tried.
    async fn newest_usable(&self, p: i32) -> Result<Option<(checkpoint::Manifest, BTreeMap<String, bytes::Bytes>)>> {
        loop {
            let Some((mut m, files)) = self.store.latest(p).await? else { return Ok(None) };
            let Some(mark) = m.txn.filter(|t| !t.committed) else { return Ok(Some((m, files))) };
            let mut visible = [None, None];
            for (i, topic) in self.outputs.iter().enumerate() {
                let from = m.outputs.get(topic).copied().unwrap_or(0);
                visible[i] = self.tail(topic, p, from).await?;
            }
            if crate::sink::txn::resolve(&mark, visible) {
                tracing::info!(partition = p, checkpoint = m.next_offset, "prepared checkpoint: its transaction committed; marking it");
                m.txn = Some(crate::sink::txn::TxnMark { committed: true, ..mark });
                self.store.rewrite_manifest(&m).await?;
                return Ok(Some((m, files)));
            }
            tracing::warn!(partition = p, checkpoint = m.next_offset, "prepared checkpoint: its transaction did not commit; discarding it");
            self.store.discard(p, m.next_offset).await?;
        }
    }

    /// Highest source offset of partition `p` in output `topic` from `from` on.
    async fn tail(&self, topic: &str, p: i32, from: i64) -> Result<Option<i64>> {
        let (b, props, t, st) = (self.brokers.clone(), self.props.clone(), topic.to_string(), self.source_topic.clone());
        let tail = tokio::task::spawn_blocking(move || dedupe::scan(&b, &props, &t, p, from, &st, Duration::from_millis(300)))
            .await
            .map_err(|e| Error::Internal(format!("tail read task: {e}")))??;
        Ok(tail.last_source_offset)
    }

    /// Transactional: remembers the highest source offsets sent per partition.
    pub fn note_sent(&mut self, out: &Outputs) {
        if !self.transactional {
            return;
        }
        for r in &out.predictions {
            let e = self.epoch_sent.entry(r.partition).or_default();
            e[0] = e[0].max(Some(r.offset));
        }
        for d in &out.dead_letters {
            let e = self.epoch_sent.entry(d.partition).or_default();
            e[1] = e[1].max(Some(d.offset));
        }
    }

    /// Transactional: marks the prepared checkpoints committed and starts an epoch.
    pub async fn mark_committed(&mut self, ends: &BTreeMap<i32, [i64; 2]>) -> Result<()> {
        for mut m in std::mem::take(&mut self.prepared) {
            if let Some(t) = &mut m.txn {
                t.committed = true;
            }
            self.store.rewrite_manifest(&m).await?;
        }
        self.epoch_sent.clear();
        let parts: Vec<i32> = self.last.keys().copied().collect();
        for p in parts {
            let e = self.ends(p, ends);
            self.epoch_start.insert(p, e);
        }
        Ok(())
    }

    /// Transactional: the commit failed — the prepared checkpoints must not be used.
    pub async fn discard_prepared(&mut self) -> Result<()> {
        for m in std::mem::take(&mut self.prepared) {
            self.store.discard(m.partition, m.next_offset).await?;
        }
        Ok(())
    }

    /// The output partitions' ends as far as this process knows: measured at
    /// restore, then moved past every acknowledged message (`acked`). Never beyond
    /// the true ends, so a tail read from there misses nothing.
    fn ends(&self, p: i32, acked: &BTreeMap<i32, [i64; 2]>) -> BTreeMap<String, i64> {
        let known = self.known_ends.get(&p).copied().unwrap_or([0, 0]);
        let acked = acked.get(&p).copied().unwrap_or([0, 0]);
        self.outputs.iter().enumerate().map(|(i, t)| (t.clone(), known[i].max(acked[i]))).collect()
    }

    fn output_ends<Cx: ClientContext>(&self, client: &Client<Cx>, p: i32) -> Result<BTreeMap<String, i64>> {
        let mut outputs = BTreeMap::new();
        for t in &self.outputs {
            let (_, high) = client.fetch_watermarks(t, p, Duration::from_secs(10))?;
            outputs.insert(t.clone(), high);
        }
        Ok(outputs)
    }

    pub fn transactional(&self) -> bool {
        self.transactional
    }

    /// Loads partition `p`: its newest intact checkpoint (or a fresh state starting
    /// at `low`, the input's first offset), and what the outputs already hold.
    pub async fn restore<Cx: ClientContext>(
        &mut self,
        built: &Built,
        p: i32,
        low: i64,
        client: &Client<Cx>,
    ) -> Result<PartitionState> {
        let loaded = self.load(built, p, low, client).await?;
        Ok(self.adopt(loaded))
    }

    /// Restores several partitions at once (their tail reads run in parallel).
    pub async fn restore_all<Cx: ClientContext>(
        &mut self,
        built: &Built,
        parts: &[(i32, i64)],
        client: &Client<Cx>,
    ) -> Result<Vec<PartitionState>> {
        let this = &*self;
        let loaded = futures::future::try_join_all(parts.iter().map(|(p, low)| this.load(built, *p, *low, client))).await?;
        Ok(loaded.into_iter().map(|l| self.adopt(l)).collect())
    }

    /// Takes a loaded partition into the bookkeeping.
    fn adopt(&mut self, l: Loaded) -> PartitionState {
        let p = l.state.partition;
        Restored { pipeline: &self.pipeline, partition: p, from: l.from, next_offset: l.state.next_offset, published: l.published }.emit();
        if let Some(ends) = l.epoch_start {
            self.epoch_start.insert(p, ends);
        }
        self.published.insert(p, l.published);
        self.known_ends.insert(p, l.known);
        self.last.insert(p, (l.state.next_offset, Instant::now()));
        self.writer_epochs.insert(p, l.writer_epoch);
        l.state
    }

    /// Whether a newer owner of partition `p` claimed a later writer epoch than
    /// this process's (it was paused or cut off while the partition moved on): it
    /// must then neither publish nor checkpoint for `p` again.
    pub async fn fenced(&self, p: i32) -> Result<bool> {
        let mine = self.writer_epochs.get(&p).copied().unwrap_or(0);
        Ok(self.store.claimed_epoch(p).await? > mine)
    }

    /// Those of `parts` that are [`fenced`](Self::fenced): checked at most once a
    /// second unless `force` (a process resuming from a longer pause checks first).
    pub async fn fenced_among(&mut self, parts: impl IntoIterator<Item = i32>, force: bool) -> Result<Vec<i32>> {
        if !force && self.fence_checked.elapsed() < Duration::from_secs(1) {
            return Ok(Vec::new());
        }
        self.fence_checked = Instant::now();
        let mut lost = Vec::new();
        for p in parts {
            if self.fenced(p).await? {
                lost.push(p);
            }
        }
        Ok(lost)
    }

    async fn load<Cx: ClientContext>(&self, built: &Built, p: i32, low: i64, client: &Client<Cx>) -> Result<Loaded> {
        let found = self.newest_usable(p).await?;
        let (state, from, scan_from, ahead, written_by) = match found {
            Some((m, files)) => {
                let st = checkpoint::decode(&m, &files, &self.fingerprint, &|| built.processor.fresh_model())?;
                let scan = [m.outputs.get(&self.outputs[0]).copied().unwrap_or(0), m.outputs.get(&self.outputs[1]).copied().unwrap_or(0)];
                (st, "checkpoint", scan, m.published_ahead, m.writer_epoch)
            }
            None => {
                let mut st = PartitionState::new(p);
                st.next_offset = low;
                (st, "none", [0, 0], [None, None], 0)
            }
        };
        // A new writer epoch, claimed before the tail read: from here on, an earlier
        // owner that still runs (paused while the partition moved) is fenced.
        let writer_epoch = self.store.claimed_epoch(p).await?.max(written_by) + 1;
        self.store.claim_epoch(p, writer_epoch).await?;
        let (seen_pred, seen_dlq) =
            futures::try_join!(self.tail(&self.outputs[0], p, scan_from[0]), self.tail(&self.outputs[1], p, scan_from[1]))?;
        let published: Published = (ahead[0].max(seen_pred), ahead[1].max(seen_dlq));
        let ends = self.output_ends(client, p)?;
        let known = [ends[&self.outputs[0]], ends[&self.outputs[1]]];
        let epoch_start = self.transactional.then_some(ends);
        Ok(Loaded { state, from, published, epoch_start, known, writer_epoch })
    }

    /// Whether partition `st` is due for a checkpoint (and reports its age).
    pub fn due(&self, st: &PartitionState) -> bool {
        let Some((off, at)) = self.last.get(&st.partition) else { return st.next_offset > 0 };
        CheckpointAge { pipeline: &self.pipeline, partition: st.partition, seconds: at.elapsed().as_secs_f64() }.emit();
        st.next_offset > *off && (st.next_offset - off >= self.every_records as i64 || at.elapsed() >= self.every)
    }

    /// Writes `st`'s checkpoint if it moved since the last one. Every output of the
    /// records before `st.next_offset` must already be acknowledged.
    pub async fn write(&mut self, st: &PartitionState, ends: &BTreeMap<i32, [i64; 2]>) -> Result<()> {
        if self.last.get(&st.partition).is_some_and(|(off, _)| *off == st.next_offset) {
            return Ok(());
        }
        let t0 = Instant::now();
        // Where a later tail read may start: the output partitions' current ends
        // (a lagging watermark only makes the read longer, never wrong) — or, for a
        // transaction not yet committed, their ends when its epoch began.
        let outputs = match (self.transactional, self.epoch_start.get(&st.partition)) {
            (true, Some(o)) => o.clone(),
            _ => self.ends(st.partition, ends),
        };
        let (mut manifest, files) = checkpoint::encode(st, &self.pipeline, &self.fingerprint, outputs)?;
        manifest.writer_epoch = self.writer_epochs.get(&st.partition).copied().unwrap_or(0);
        if let Some((a, b)) = self.published.get(&st.partition) {
            manifest.published_ahead = [*a, *b];
        }
        if super::fault::fires("checkpoint_fails") {
            return Err(Error::Checkpoint(format!("writing to {}: No space left on device (injected by TICKFLARE_FAULT)", self.store.location)));
        }
        if self.transactional {
            let expect = self.epoch_sent.get(&st.partition).copied().unwrap_or([None, None]);
            manifest.txn = Some(crate::sink::txn::TxnMark { committed: false, expect });
        }
        let (bytes, stored) = self.store.write(manifest, files).await?;
        if self.transactional {
            self.prepared.push(stored);
        }
        super::fault::crash_point("after_checkpoint");
        self.last.insert(st.partition, (st.next_offset, Instant::now()));
        CheckpointWritten {
            pipeline: &self.pipeline,
            partition: st.partition,
            next_offset: st.next_offset,
            bytes,
            seconds: t0.elapsed().as_secs_f64(),
        }
        .emit();
        Ok(())
    }

    /// Removes outputs the output topics already hold (source offset at or below
    /// what the tail read found); forgets a partition's watermark once passed.
    pub fn suppress(&mut self, out: &mut Outputs) {
        if self.published.is_empty() {
            return;
        }
        let mut dropped: BTreeMap<i32, usize> = BTreeMap::new();
        let published = &self.published;
        out.predictions.retain(|r| {
            let keep = published.get(&r.partition).and_then(|p| p.0).is_none_or(|max| r.offset > max);
            if !keep {
                *dropped.entry(r.partition).or_default() += 1;
            }
            keep
        });
        out.dead_letters.retain(|d| {
            let keep = published.get(&d.partition).and_then(|p| p.1).is_none_or(|max| d.offset > max);
            if !keep {
                *dropped.entry(d.partition).or_default() += 1;
            }
            keep
        });
        for (p, count) in dropped {
            Suppressed { pipeline: &self.pipeline, partition: p, count }.emit();
        }
    }

    /// Forgets watermarks that every partition's state has moved past.
    pub fn retire_watermarks(&mut self, states: &BTreeMap<i32, PartitionState>) {
        self.published.retain(|p, (a, b)| {
            let next = states.get(p).map_or(i64::MAX, |s| s.next_offset);
            a.is_some_and(|a| a >= next) || b.is_some_and(|b| b >= next)
        });
    }

    pub fn forget(&mut self, p: i32) {
        self.last.remove(&p);
        self.published.remove(&p);
        self.epoch_start.remove(&p);
        self.epoch_sent.remove(&p);
        self.known_ends.remove(&p);
        self.writer_epochs.remove(&p);
    }
}

/// One transactional commit's checkpoint side: every owned partition's state.
pub struct Epoch<'a> {
    pub ck: &'a mut Checkpointer,
    pub states: &'a BTreeMap<i32, PartitionState>,
    pub ends: &'a BTreeMap<i32, [i64; 2]>,
}

impl crate::sink::txn::PreparedCheckpoints for Epoch<'_> {
    async fn write_prepared(&mut self) -> Result<()> {
        for st in self.states.values() {
            self.ck.write(st, self.ends).await?;
        }
        super::fault::crash_point("after_prepare");
        Ok(())
    }
    async fn mark_committed(&mut self) -> Result<()> {
        self.ck.mark_committed(self.ends).await
    }
    async fn discard_prepared(&mut self) -> Result<()> {
        self.ck.discard_prepared().await
    }
}

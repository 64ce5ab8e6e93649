//! The daemon's loop, step by step: [`connect`] (real brokers or the embedded one),
//! open the sink (and transactions), restore every assigned partition, then
//! repeatedly gather a micro-batch ([`Live::gather`]), hand over revoked partitions
//! ([`Live::hand_off`]), process and publish ([`Live::step`]), checkpoint what is due
//! ([`Live::checkpoint_due`]) and restore newly assigned partitions ([`Live::adopt`]);
//! at the end, [`Live::finish`] publishes what it owes and writes the last state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::Context;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Message;
use tokio::sync::watch;

use super::batch::{store_offsets, Batch};
use super::build::Built;
use super::recovery::{self, Admit, Checkpointer, Epoch, Position};
use super::summary::Summary;
use super::{start_embedded, wait_true, RunOptions};
use crate::broker::EmbeddedBroker;
use crate::pipeline::config::Delivery;
use crate::sink::kafka::{sink_producer, KafkaSink, KafkaTransactions};
use crate::sink::txn::Coordinator;
use crate::source::batch::PartitionInput;
use crate::source::context::SourceContext;
use crate::source::gather::{gather, Take, Window};
use crate::source::kafka::{assign_all, consumer_with, diagnosed, end_offsets, ends_reached, positions, within_topic};
use crate::telemetry::events::PipelineMetrics;
use crate::telemetry::{self, Health};

mod handoff;

/// Runs the pipeline until the end of input (embedded / `stop_at_end`) or until
/// `shutdown` turns true; then publishes what it owes, commits and returns.
pub async fn run(built: &Built, opts: RunOptions, mut shutdown: watch::Receiver<bool>) -> crate::error::Result<Summary> {
    let health = Health::new();
    let endpoint = telemetry::serve(opts.metrics_addr.as_deref(), opts.metrics_required, health.clone()).await?;
    let conn = connect(built, &opts, &mut shutdown).await?;
    let mut live = Live::open(built, &opts, &conn, health).await?;
    live.start(&conn).await?;
    loop {
        if *shutdown.borrow() || (live.stop_at_end && live.at_end()) {
            break;
        }
        let unrestored = live.gather(&mut shutdown).await?;
        live.hand_off().await?;
        live.step().await?;
        live.checkpoint_due().await?;
        if let Some(p) = unrestored {
            live.adopt(p).await?;
        }
    }
    let summary = live.finish().await?;
    // Clients go before the embedded broker they talk to.
    drop(conn.embedded);
    drop(endpoint);
    Ok(summary)
}

/// Where the run reads: the brokers (and the embedded broker when it runs one).
struct Connection {
    brokers: String,
    embedded: Option<EmbeddedBroker>,
    assign: bool,
    stop_at_end: bool,
}

/// Real brokers as given, or an embedded broker seeded with the pipeline's sample
/// (then every partition is assigned and the run stops at the end of the input).
async fn connect(built: &Built, opts: &RunOptions, shutdown: &mut watch::Receiver<bool>) -> crate::error::Result<Connection> {
    let brokers = opts.brokers.clone().unwrap_or_else(|| built.config.source.brokers.clone());
    if brokers != "embedded" {
        return Ok(Connection { brokers, embedded: None, assign: opts.assign, stop_at_end: opts.stop_at_end });
    }
    // Seeding a large sample takes a while: a signal stops it too.
    let b = tokio::select! {
        b = start_embedded(built) => b?,
        _ = wait_true(shutdown) => crate::fail!(Interrupted, "stopped by a signal while seeding the embedded broker"),
    };
    Ok(Connection { brokers: b.bootstrap_servers().to_string(), embedded: Some(b), assign: true, stop_at_end: true })
}

/// A running pipeline: its clients, checkpoints, the batch and its partitions.
struct Live<'a> {
    built: &'a Built,
    consumer: crate::source::kafka::Leaving<SourceContext>,
    sink: KafkaSink,
    ckpt: Option<Checkpointer>,
    coord: Coordinator,
    batch: Batch,
    metrics: PipelineMetrics,
    health: Arc<Health>,
    revocations: Arc<AtomicU64>,
    seen_revocations: u64,
    /// Set while revocations are held for a hand-off (with checkpoints, in a group).
    hold_revoked: Arc<AtomicBool>,
    /// Revoked partitions held until they are checkpointed.
    held: Arc<Mutex<Vec<i32>>>,
    /// Partitions a newer owner took while this process was paused: their records
    /// are ignored until the group assigns them again.
    fenced: BTreeSet<i32>,

    /// The input's end offsets at start.
    ends: BTreeMap<i32, i64>,
    /// Next offset received per partition: lets a run that stops at the end close
    /// its last batch at once instead of waiting out `max_batch_wait_ms`.
    received: BTreeMap<i32, i64>,
    stop_at_end: bool,
    assign: bool,
    max_rows: usize,
    started: Instant,
}

impl<'a> Live<'a> {
    /// The consumer, the checkpoints and the sink (transactions initialised).
    async fn open(built: &'a Built, opts: &RunOptions, conn: &Connection, health: Arc<Health>) -> crate::error::Result<Live<'a>> {
        let cfg = &built.config;
        let group = opts.group.clone().unwrap_or_else(|| cfg.group());
        let ctx = SourceContext::new(&cfg.name, &cfg.source.topic, health.clone());
        let (revocations, hold_revoked, held) = (ctx.revocations.clone(), ctx.hold_revoked.clone(), ctx.held.clone());
        // The `[kafka]` properties are for real clusters, not the embedded broker.
        let props = if conn.embedded.is_some() { Default::default() } else { cfg.kafka.clone() };
        let consumer = consumer_with(&conn.brokers, &group, ctx, &props)?;
        let ends = end_offsets(&*consumer, &cfg.source.topic, Duration::from_secs(10))
            .with_context(|| diagnosed(&conn.brokers, &props, format!("reading end offsets of {:?}", cfg.source.topic)))?;
        let location = opts.checkpoint_dir.clone().or_else(|| cfg.checkpoint.dir.as_deref().map(|d| crate::state::store::location_in_file(d, &cfg.base_dir)));
        let ckpt = match &location {
            Some(l) => Some(Checkpointer::new(built, l, &conn.brokers, &props).with_context(|| format!("opening checkpoints at {l:?}"))?),
            None => None,
        };
        let transactional = cfg.sink.delivery == Delivery::Transactional;
        if transactional && ckpt.is_none() {
            crate::fail!(Config, "sink.delivery = \"transactional\" commits transactions with checkpoints: give [checkpoint] dir or --checkpoint-dir");
        }
        let txn_id = cfg.sink.transactional_id.clone().unwrap_or_else(|| format!("tickflare-{}", cfg.name));
        let sink = KafkaSink {
            producer: sink_producer(&conn.brokers, transactional.then_some(txn_id.as_str()), &props)?,
            source_topic: cfg.source.topic.clone(),
            topic: cfg.sink.topic.clone(),
            dead_letter_topic: cfg.sink.dead_letter_topic.clone(),
            max_message_bytes: crate::sink::kafka::max_message_bytes(&props),
        };
        let mut coord = Coordinator::default();
        if transactional {
            // Fences an earlier incarnation with the same id and aborts its open
            // transaction, before any tail read looks at the outputs.
            use rdkafka::producer::Producer;
            sink.producer.init_transactions(Duration::from_secs(30)).context("initialising transactions")?;
            coord.start(&mut KafkaTransactions(&sink.producer)).await?;
        }
        tracing::info!(pipeline = %cfg.name, brokers = %conn.brokers, group = %group, "pipeline started");
        Ok(Live {
            built,
            consumer,
            sink,
            ckpt,
            coord,
            batch: Batch::default(),
            metrics: PipelineMetrics::new(&cfg.name, &cfg.source.topic, cfg.model.kind.as_str()),
            health,
            revocations,
            seen_revocations: 0,
            hold_revoked,
            held,
            fenced: BTreeSet::new(),

            ends,
            received: BTreeMap::new(),
            stop_at_end: conn.stop_at_end,
            assign: conn.assign,
            max_rows: opts.max_batch_rows.unwrap_or(cfg.source.max_batch_rows).max(1),
            started: Instant::now(),
        })
    }

    /// Assigned: every partition restored first, then each read from its own
    /// offset. Grouped: subscribed (partitions are restored as they arrive).
    async fn start(&mut self, conn: &Connection) -> crate::error::Result<()> {
        let topic = &self.built.config.source.topic;
        if !conn.assign {
            // With checkpoints a revoked partition is checkpointed before it is
            // released (see `hand_off`).
            self.hold_revoked.store(self.ckpt.is_some(), Ordering::SeqCst);
            self.consumer.subscribe(&[topic])?;
        } else if let Some(ck) = &mut self.ckpt {
            self.health.restoring.store(true, Ordering::Relaxed);
            let mut lows = Vec::with_capacity(self.ends.len());
            for &p in self.ends.keys() {
                let (low, _) = self.consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
                lows.push((p, low));
            }
            let restored = ck.restore_all(self.built, &lows, self.consumer.client()).await.with_context(|| format!("restoring partitions from {}", ck.store.location))?;
            for st in &restored {
                within_topic(&*self.consumer, topic, st.partition, st.next_offset).await?;
            }
            let mut tpl = rdkafka::TopicPartitionList::new();
            for st in restored {
                let p = st.partition;
                tpl.add_partition_offset(topic, p, rdkafka::Offset::Offset(st.next_offset))?;
                let low = lows.iter().find(|(q, _)| *q == p).map_or(0, |(_, low)| *low);
                self.batch.positions.insert(p, Position::new(st.next_offset, low));
                self.batch.states.insert(p, st);
            }
            self.consumer.assign(&tpl)?;
            drop(tpl);
            self.health.restoring.store(false, Ordering::Relaxed);
        } else {
            assign_all(&*self.consumer, topic, self.ends.len() as i32)?;
        }
        if conn.assign {
            self.health.assigned.store(self.ends.len(), Ordering::Relaxed);
        }
        self.health.consuming.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Every partition's state, or the consumer's position past offsets that hold no
    /// record, reached the input's end offset at start ([`ends_reached`]; checked
    /// between batches, when every record handed out has been processed).
    fn at_end(&self) -> bool {
        let positions = positions(&*self.consumer, &self.built.config.source.topic);
        ends_reached(&self.ends, |p| self.batch.states.get(&p).map(|s| s.next_offset), &positions)
    }


    /// Gathers one micro-batch: up to `max_batch_rows` records, closed after
    /// `max_batch_wait_ms`, or `max_batch_idle_ms` without a record, or a signal.
    /// With checkpoints, records a restored partition already processed are skipped
    /// (and a gap seeks back); a record of a partition not restored yet ends the
    /// batch and is returned, to be restored before it is read.
    async fn gather(&mut self, shutdown: &mut watch::Receiver<bool>) -> crate::error::Result<Option<i32>> {
        let src = &self.built.config.source;
        let window = Window {
            max_rows: self.max_rows,
            wait: Duration::from_millis(src.max_batch_wait_ms),
            idle: src.max_batch_idle_ms.map(Duration::from_millis),
        };
        let mut unrestored = None;
        let (consumer, batch, health, schema) = (&self.consumer, &mut self.batch, &self.health, &self.built.schema);
        let (fenced, checkpoints, stop_at_end) = (&self.fenced, self.ckpt.is_some(), self.stop_at_end);
        let (received, ends) = (&mut self.received, &self.ends);
        gather(consumer, window, Some(shutdown), |m| {
            health.brokers_down.store(false, Ordering::Relaxed);
            let t0 = Instant::now();
            let p = m.partition();
            if fenced.contains(&p) {
                return Ok(Take::Skip);
            }
            if checkpoints {
                let Some(pos) = batch.positions.get_mut(&p) else {
                    unrestored = Some(p);
                    return Ok(Take::Close);
                };
                match pos.admit(m.offset()) {
                    Admit::Accept => {}
                    Admit::Skip => return Ok(Take::Skip),
                    Admit::Seek(o) => {
                        recovery::seek(&**consumer, &src.topic, p, o)?;
                        return Ok(Take::Skip);
                    }
                    Admit::Fail(why) => crate::fail!(Checkpoint, "partition {p}: {why}"),
                }
            }
            batch.inputs.entry(p).or_insert_with(|| PartitionInput::new(p, schema.clone())).push(m.key(), m.payload(), m.offset(), m.timestamp().to_millis());
            batch.timings.decode += t0.elapsed();
            if stop_at_end {
                received.insert(p, m.offset() + 1);
                if ends.iter().all(|(p, &high)| high <= 0 || received.get(p).is_some_and(|n| *n >= high)) {
                    return Ok(Take::Last);
                }
            }
            Ok(Take::Row)
        })
        .await?;
        Ok(unrestored)
    }

    /// Processes and publishes the batch; stores the offsets its predecessor's
    /// acknowledgements made safe.
    async fn step(&mut self) -> crate::error::Result<()> {
        if let Some(acked) = self.batch.process(self.built, &self.sink, &mut self.metrics, self.ckpt.as_mut()).await? {
            store_offsets(&*self.consumer, &self.built.config.source.topic, &acked);
        }
        // Partitions the batch found fenced before publishing are dropped now.
        if !self.batch.fenced.is_empty() {
            self.fence(false).await?;
        }
        Ok(())
    }

    /// Waits for the outstanding acknowledgements and stores their offsets.
    async fn settle(&mut self) -> crate::error::Result<()> {
        if let Some(acked) = self.batch.drain().await? {
            store_offsets(&*self.consumer, &self.built.config.source.topic, &acked);
        }
        Ok(())
    }

    /// Checkpoints (transactional: commits) once any partition is due.
    async fn checkpoint_due(&mut self) -> crate::error::Result<()> {
        let due = self.ckpt.as_ref().is_some_and(|ck| self.batch.states.values().any(|s| ck.due(s)));
        if !due {
            return Ok(());
        }
        self.settle().await?;
        self.fence(true).await?;
        const STOP: &str = "writing a checkpoint (consumption stops: without checkpoints the exactly-once guarantee would be lost)";
        let Some(ck) = &mut self.ckpt else { return Ok(()) };
        if ck.transactional() {
            let mut epoch = Epoch { ck: &mut *ck, states: &self.batch.states, ends: &self.batch.output_ends };
            self.coord.commit(&mut KafkaTransactions(&self.sink.producer), &mut epoch).await.context(STOP)?;
        } else {
            for st in self.batch.states.values() {
                if ck.due(st) {
                    ck.write(st, &self.batch.output_ends).await.context(STOP)?;
                }
            }
        }
        Ok(())
    }

    /// A newly assigned partition: restored from its checkpoint, then read from
    /// the restored offset.
    async fn adopt(&mut self, p: i32) -> crate::error::Result<()> {
        let Some(ck) = &mut self.ckpt else { return Ok(()) };
        self.health.restoring.store(true, Ordering::Relaxed);
        let topic = &self.built.config.source.topic;
        let (low, _) = self.consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).with_context(|| format!("reading the offsets of {topic}/{p}"))?;
        let st = ck.restore(self.built, p, low, self.consumer.client()).await.with_context(|| format!("restoring partition {p} from {}", ck.store.location))?;
        within_topic(&*self.consumer, topic, p, st.next_offset).await?;
        recovery::seek(&*self.consumer, topic, p, st.next_offset)?;
        self.batch.positions.insert(p, Position::new(st.next_offset, low));
        self.batch.restored(st);
        self.health.restoring.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Processes anything read but not processed yet (a shutdown mid-batch), awaits
    /// every acknowledgement, writes the last checkpoints (transactional: the last
    /// commit), commits the group's offsets and sums up the run.
    async fn finish(mut self) -> crate::error::Result<Summary> {
        self.health.consuming.store(false, Ordering::Relaxed);
        self.step().await?;
        // A revocation held open is completed before the last writes.
        self.hand_off().await?;
        self.fence(true).await?;
        self.settle().await?;
        if let Some(ck) = &mut self.ckpt {
            if ck.transactional() {
                let mut epoch = Epoch { ck: &mut *ck, states: &self.batch.states, ends: &self.batch.output_ends };
                self.coord.commit(&mut KafkaTransactions(&self.sink.producer), &mut epoch).await.context("the final commit")?;
                // The transaction begun after the commit carries nothing.
                use crate::sink::txn::Transactions;
                KafkaTransactions(&self.sink.producer).abort().await.context("closing the last transaction")?;
            } else {
                for st in self.batch.states.values() {
                    ck.write(st, &self.batch.output_ends).await.context("writing the final checkpoint")?;
                }
            }
        }
        if !self.assign {
            if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
                tracing::warn!(error = %e, "final offset commit failed");
            }
        }
        let cfg = &self.built.config;
        let all = self.batch.states.values().chain(self.batch.retired.iter());
        let mut summary = Summary::from_states(&cfg.name, all, self.started.elapsed().as_secs_f64(), Some(self.built.processor.experts()));
        summary.stage_seconds = self.batch.totals.seconds();
        tracing::info!(pipeline = %cfg.name, messages = summary.messages_in, "pipeline stopped");
        Ok(summary)
    }
}

impl Drop for Live<'_> {
    /// The consumer closes after this (leaving the group revokes everything): that
    /// revocation, or one still held because the run failed, is not held.
    fn drop(&mut self) {
        self.hold_revoked.store(false, Ordering::SeqCst);
        let held = self.held.lock().map(|mut h| std::mem::take(&mut *h)).unwrap_or_default();
        if !held.is_empty() {
            let _ = crate::source::context::release_revoked(&*self.consumer, &self.built.config.source.topic, &held);
        }
    }
}

//! Pipeline wiring: Kafka source → per-partition [`processor`] → Kafka sink, with
//! micro-batching, offset storage after delivery, graceful shutdown and the embedded
//! broker for self-contained runs.

pub mod backtest;
pub mod build;
pub mod config;
pub mod fault;
pub mod kafka_props;
pub mod processor;
pub mod recovery;
pub mod series;
pub mod summary;
mod workers;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Message;
use tokio::sync::watch;

use crate::broker::EmbeddedBroker;
use crate::sink::kafka::{sink_producer, KafkaSink, KafkaTransactions};
use crate::sink::txn::Coordinator;
use crate::sink::{Acks, Outputs, Publish};
use crate::source::batch::PartitionInput;
use crate::source::context::SourceContext;
use crate::source::kafka::{assign_all, consumer_with, end_offsets};
use crate::telemetry::events::{BatchProcessed, BatchPublished, DeadLettered, PipelineMetrics, StageTimings};
use crate::telemetry::{self, Health};
use crate::source::sample;
use crate::state::PartitionState;
use build::Built;
use recovery::{Admit, Checkpointer, Epoch, Position};
use summary::Summary;

/// How to run a built pipeline.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Bootstrap servers; `None` or `"embedded"` runs on an in-process broker.
    pub brokers: Option<String>,
    /// Stop once every partition reached the end offset it had at start.
    pub stop_at_end: bool,
    /// Read by assigning all partitions instead of joining the consumer group.
    pub assign: bool,
    /// Overrides `source.max_batch_rows`.
    pub max_batch_rows: Option<usize>,
    /// Overrides the consumer group.
    pub group: Option<String>,
    /// Serve `/metrics`, `/healthz`, `/readyz` here (`None`: no endpoint).
    pub metrics_addr: Option<String>,
    /// When the address cannot be bound: fail (`true`, an address the user gave) or
    /// log a warning and run without the endpoint (`false`, the default address).
    pub metrics_required: bool,
    /// Overrides `checkpoint.dir` (checkpointing is on when either is set).
    pub checkpoint_dir: Option<String>,
}

/// Runs the pipeline until the end of input (embedded / `stop_at_end`) or until
/// `shutdown` turns true; then publishes what it owes, commits and returns.
pub async fn run(built: &Built, opts: RunOptions, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<Summary> {
    let cfg = &built.config;
    let health = Health::new();
    let endpoint = telemetry::serve(opts.metrics_addr.as_deref(), opts.metrics_required, health.clone()).await?;
    let brokers = opts.brokers.clone().unwrap_or_else(|| cfg.source.brokers.clone());
    let mut embedded = None;
    let (brokers, assign, stop_at_end) = if brokers == "embedded" {
        // Seeding a large sample takes a while: a signal stops it too.
        let b = tokio::select! {
            b = start_embedded(built) => b?,
            _ = wait_true(&mut shutdown) => anyhow::bail!("stopped by a signal while seeding the embedded broker"),
        };
        let bs = b.bootstrap_servers().to_string();
        embedded = Some(b);
        (bs, true, true)
    } else {
        (brokers, opts.assign, opts.stop_at_end)
    };
    let group = opts.group.clone().unwrap_or_else(|| cfg.group());
    let revocations = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ctx = SourceContext {
        pipeline: cfg.name.clone(),
        topic: cfg.source.topic.clone(),
        health: health.clone(),
        revocations: revocations.clone(),
    };
    let mut seen_revocations = 0;
    // The `[kafka]` properties are for real clusters, not the embedded broker.
    let props = if embedded.is_some() { Default::default() } else { cfg.kafka.clone() };
    let consumer = consumer_with(&brokers, &group, ctx, &props)?;
    let meta_timeout = Duration::from_secs(10);
    let ends = end_offsets(&consumer, &cfg.source.topic, meta_timeout)
        .with_context(|| format!("reading end offsets of {:?}", cfg.source.topic))?;
    let mut batch = Batch::default();
    let location = opts.checkpoint_dir.clone().or_else(|| cfg.checkpoint.dir.clone());
    let mut ckpt = match &location {
        Some(l) => Some(Checkpointer::new(built, l, &brokers).with_context(|| format!("opening checkpoints at {l:?}"))?),
        None => None,
    };
    let transactional = cfg.sink.delivery == "transactional";
    if transactional && ckpt.is_none() {
        anyhow::bail!("sink.delivery = \"transactional\" commits transactions with checkpoints: give [checkpoint] dir or --checkpoint-dir");
    }
    let txn_id = cfg.sink.transactional_id.clone().unwrap_or_else(|| format!("tickflare-{}", cfg.name));
    let sink = KafkaSink {
        producer: sink_producer(&brokers, transactional.then_some(txn_id.as_str()), &props)?,
        source_topic: cfg.source.topic.clone(),
        topic: cfg.sink.topic.clone(),
        dead_letter_topic: cfg.sink.dead_letter_topic.clone(),
    };
    let mut coord = Coordinator::default();
    if transactional {
        // Fences an earlier incarnation with the same id and aborts its open
        // transaction, before any tail read looks at the outputs.
        use rdkafka::producer::Producer;
        sink.producer.init_transactions(Duration::from_secs(30)).context("initialising transactions")?;
        coord.start(&mut KafkaTransactions(&sink.producer)).await?;
    }
    if assign {
        match &mut ckpt {
            // Restore every partition first, then read each from its own offset.
            Some(ck) => {
                health.restoring.store(true, Ordering::Relaxed);
                let mut tpl = rdkafka::TopicPartitionList::new();
                let mut lows = Vec::with_capacity(ends.len());
                for &p in ends.keys() {
                    let (low, _) = consumer.fetch_watermarks(&cfg.source.topic, p, Duration::from_secs(10))?;
                    lows.push((p, low));
                }
                let restored = ck
                    .restore_all(built, &lows, consumer.client())
                    .await
                    .with_context(|| format!("restoring partitions from {}", ck.store.location))?;
                for st in restored {
                    let p = st.partition;
                    tpl.add_partition_offset(&cfg.source.topic, p, rdkafka::Offset::Offset(st.next_offset))?;
                    batch.positions.insert(p, Position::new(st.next_offset));
                    batch.states.insert(p, st);
                }
                consumer.assign(&tpl)?;
                drop(tpl);
                health.restoring.store(false, Ordering::Relaxed);
            }
            None => assign_all(&consumer, &cfg.source.topic, ends.len() as i32)?,
        }
        health.assigned.store(ends.len(), Ordering::Relaxed);
    } else {
        consumer.subscribe(&[&cfg.source.topic])?;
    }
    let mut metrics = PipelineMetrics::new(&cfg.name, &cfg.source.topic, &cfg.model.kind);
    let max_rows = opts.max_batch_rows.unwrap_or(cfg.source.max_batch_rows).max(1);
    let max_wait = Duration::from_millis(cfg.source.max_batch_wait_ms);
    let idle = Duration::from_millis(cfg.source.max_batch_idle_ms);
    let started = Instant::now();
    tracing::info!(pipeline = %cfg.name, brokers = %brokers, group = %group, "pipeline started");
    health.consuming.store(true, Ordering::Relaxed);
    let at_end = |states: &BTreeMap<i32, PartitionState>| {
        ends.iter().all(|(p, &high)| high <= 0 || states.get(p).is_some_and(|s| s.next_offset >= high))
    };
    // Next offset received per partition: lets a run that stops at the end close its
    // last batch at once instead of waiting out `max_batch_wait_ms`.
    let mut received: BTreeMap<i32, i64> = BTreeMap::new();
    let received_all = |r: &BTreeMap<i32, i64>| ends.iter().all(|(p, &high)| high <= 0 || r.get(p).is_some_and(|n| *n >= high));
    loop {
        if *shutdown.borrow() || (stop_at_end && at_end(&batch.states)) {
            break;
        }
        let deadline = tokio::time::Instant::now() + max_wait;
        // Once a record is in, the batch also closes after `idle` without another.
        let mut idle_until: Option<tokio::time::Instant> = None;
        let mut rows = 0;
        let mut unrestored = None;
        while rows < max_rows {
            let until = idle_until.map_or(deadline, |i| i.min(deadline));
            tokio::select! {
                biased;
                _ = wait_true(&mut shutdown) => break,
                r = tokio::time::timeout_at(until, consumer.recv()) => match r {
                    Err(_) => break,
                    Ok(Ok(m)) => {
                        health.brokers_down.store(false, Ordering::Relaxed);
                        let t0 = Instant::now();
                        let p = m.partition();
                        if ckpt.is_some() {
                            let Some(pos) = batch.positions.get_mut(&p) else {
                                // A newly assigned partition: restore it (below), then seek.
                                unrestored = Some(p);
                                break;
                            };
                            match pos.admit(m.offset()) {
                                Admit::Accept => {}
                                Admit::Skip => continue,
                                Admit::Seek(o) => {
                                    recovery::seek(&consumer, &cfg.source.topic, p, o)?;
                                    continue;
                                }
                                Admit::Fail(why) => anyhow::bail!("partition {p}: {why}"),
                            }
                        }
                        batch.inputs
                            .entry(p)
                            .or_insert_with(|| PartitionInput::new(p, built.schema.clone()))
                            .push(m.key(), m.payload(), m.offset(), m.timestamp().to_millis());
                        batch.timings.decode += t0.elapsed();
                        rows += 1;
                        if !idle.is_zero() {
                            idle_until = Some(tokio::time::Instant::now() + idle);
                        }
                        if stop_at_end {
                            received.insert(p, m.offset() + 1);
                            if received_all(&received) {
                                break;
                            }
                        }
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "consume error"),
                },
            }
        }
        let r = revocations.load(Ordering::SeqCst);
        if r != seen_revocations {
            seen_revocations = r;
            let owned = assigned_partitions(&consumer, &cfg.source.topic);
            if let Some(ck) = &mut ckpt {
                // Checkpoint what is being handed over (outputs acknowledged first).
                if let Some(acked) = batch.drain().await? {
                    store_offsets(&consumer, &cfg.source.topic, &acked);
                }
                if ck.transactional() {
                    let mut epoch = Epoch { ck: &mut *ck, states: &batch.states, ends: &batch.output_ends };
                    coord.commit(&mut KafkaTransactions(&sink.producer), &mut epoch).await.context("committing before a hand-off")?;
                }
                for (p, st) in batch.states.iter().filter(|(p, _)| !owned.contains(p)) {
                    ck.write(st, &batch.output_ends).await.with_context(|| format!("checkpointing revoked partition {p}"))?;
                    ck.forget(*p);
                }
            }
            batch.keep_only(&owned);
        }
        if let Some(acked) = batch.process(built, &sink, &mut metrics, ckpt.as_mut()).await? {
            store_offsets(&consumer, &cfg.source.topic, &acked);
        }
        if let Some(ck) = &mut ckpt {
            if batch.states.values().any(|s| ck.due(s)) {
                if let Some(acked) = batch.drain().await? {
                    store_offsets(&consumer, &cfg.source.topic, &acked);
                }
                const STOP: &str = "writing a checkpoint (consumption stops: without checkpoints the exactly-once guarantee would be lost)";
                if ck.transactional() {
                    let mut epoch = Epoch { ck: &mut *ck, states: &batch.states, ends: &batch.output_ends };
                    coord.commit(&mut KafkaTransactions(&sink.producer), &mut epoch).await.context(STOP)?;
                } else {
                    for st in batch.states.values() {
                        if ck.due(st) {
                            ck.write(st, &batch.output_ends).await.context(STOP)?;
                        }
                    }
                }
            }
            if let Some(p) = unrestored {
                health.restoring.store(true, Ordering::Relaxed);
                let st = restore(ck, built, &consumer, p).await?;
                recovery::seek(&consumer, &cfg.source.topic, p, st.next_offset)?;
                batch.positions.insert(p, Position::new(st.next_offset));
                batch.inputs.remove(&p);
                batch.states.insert(p, st);
                health.restoring.store(false, Ordering::Relaxed);
            }
        }
    }
    health.consuming.store(false, Ordering::Relaxed);
    // Anything read but not processed yet (shutdown mid-batch) is processed now, and
    // every outstanding acknowledgement awaited.
    if let Some(acked) = batch.process(built, &sink, &mut metrics, ckpt.as_mut()).await? {
        store_offsets(&consumer, &cfg.source.topic, &acked);
    }
    if let Some(acked) = batch.drain().await? {
        store_offsets(&consumer, &cfg.source.topic, &acked);
    }
    if let Some(ck) = &mut ckpt {
        if ck.transactional() {
            let mut epoch = Epoch { ck: &mut *ck, states: &batch.states, ends: &batch.output_ends };
            coord.commit(&mut KafkaTransactions(&sink.producer), &mut epoch).await.context("the final commit")?;
            // The transaction begun after the commit carries nothing.
            use crate::sink::txn::Transactions;
            KafkaTransactions(&sink.producer).abort().await.context("closing the last transaction")?;
        } else {
            for st in batch.states.values() {
                ck.write(st, &batch.output_ends).await.context("writing the final checkpoint")?;
            }
        }
    }
    if !assign {
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::warn!(error = %e, "final offset commit failed");
        }
    }
    let all = batch.states.values().chain(batch.retired.iter());
    let mut summary = Summary::from_states(&cfg.name, all, started.elapsed().as_secs_f64(), Some(built.processor.experts()));
    summary.stage_seconds = batch.totals.seconds();
    tracing::info!(pipeline = %cfg.name, messages = summary.messages_in, "pipeline stopped");
    // Clients go before the embedded broker they talk to.
    drop(consumer);
    drop(sink);
    drop(embedded);
    drop(endpoint);
    Ok(summary)
}

/// Restores partition `p` (checkpoint or fresh from the input's first offset).
async fn restore<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    ck: &mut Checkpointer,
    built: &Built,
    consumer: &C,
    p: i32,
) -> anyhow::Result<PartitionState> {
    let topic = &built.config.source.topic;
    let (low, _) = consumer
        .fetch_watermarks(topic, p, Duration::from_secs(10))
        .with_context(|| format!("reading the offsets of {topic}/{p}"))?;
    ck.restore(built, p, low, consumer.client()).await.with_context(|| format!("restoring partition {p} from {}", ck.store.location))
}

/// Stores next-offsets whose batch outputs were all acknowledged.
fn store_offsets<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    consumer: &C,
    topic: &str,
    acked: &BTreeMap<i32, i64>,
) {
    for (p, next) in acked {
        if *next > 0 {
            let _ = consumer.store_offset(topic, *p, next - 1);
        }
    }
}

/// Partitions of `topic` currently assigned to this consumer.
fn assigned_partitions<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    consumer: &C,
    topic: &str,
) -> std::collections::BTreeSet<i32> {
    let set = match consumer.assignment() {
        Ok(tpl) => tpl.elements_for_topic(topic).iter().map(|e| e.partition()).collect(),
        Err(_) => Default::default(),
    };
    // (The TopicPartitionList is dropped here, before anything else can drop the
    // consumer: a live list at consumer shutdown hangs librdkafka.)
    set
}

/// A published batch whose acknowledgements are still outstanding, and the input
/// offsets that become safe to commit once they arrive.
struct Inflight {
    acks: Acks,
    offsets: BTreeMap<i32, i64>,
}

/// The micro-batch being assembled and the partition states it advances.
#[derive(Default)]
struct Batch {
    inputs: BTreeMap<i32, PartitionInput>,
    states: BTreeMap<i32, PartitionState>,
    out: Outputs,
    timings: StageTimings,
    /// Sum of every batch's timings (for the summary).
    totals: StageTimings,
    timestamps: Vec<i64>,
    inflight: Option<Inflight>,
    /// States of revoked partitions, kept for the run summary only.
    retired: Vec<PartitionState>,
    /// With checkpoints: where each restored partition's consumer must read next.
    positions: BTreeMap<i32, Position>,
    /// Per output partition, the prediction and dead-letter topics' ends after this
    /// process's acknowledged messages (where a later tail read may start).
    output_ends: BTreeMap<i32, [i64; 2]>,
    /// Per-partition outputs of parallel batches, kept for reuse.
    outs: Vec<Outputs>,
}

impl Batch {
    /// Forgets every partition not in `owned` — its buffered records and its state.
    /// Without checkpoints, a partition that comes back later starts afresh from the
    /// committed offset, exactly as after a restart; buffered records of a revoked
    /// partition are left to its new owner.
    fn keep_only(&mut self, owned: &std::collections::BTreeSet<i32>) {
        let gone: Vec<i32> = self.states.keys().chain(self.inputs.keys()).filter(|p| !owned.contains(p)).copied().collect();
        for p in gone {
            if let Some(mut st) = self.states.remove(&p) {
                tracing::info!(partition = p, "partition revoked: dropping its in-memory state");
                // Keep what the run summary reports; free the heavy parts.
                st.lookback = None;
                st.model = None;
                st.live_models = 0;
                for k in st.keys.values_mut() {
                    k.model = None;
                    k.pending_x.clear();
                    k.window.clear();
                }
                self.retired.push(st);
            }
            self.inputs.remove(&p);
            self.positions.remove(&p);
        }
    }

    /// Remembers the end of each output partition after acknowledged messages.
    fn note_delivered(&mut self, ends: &crate::sink::Ends) {
        for (p, [a, b]) in ends {
            let e = self.output_ends.entry(*p).or_insert([0, 0]);
            e[0] = e[0].max(*a);
            e[1] = e[1].max(*b);
        }
    }

    /// Waits for the outstanding batch's acknowledgements; returns its offsets.
    async fn drain(&mut self) -> anyhow::Result<Option<BTreeMap<i32, i64>>> {
        match self.inflight.take() {
            Some(f) => {
                let at = f.acks.wait().await.context("publishing outputs")?;
                self.note_delivered(&at);
                Ok(Some(f.offsets))
            }
            None => Ok(None),
        }
    }

    /// Runs every partition's records through the processor and publishes the
    /// outputs; then waits for the *previous* batch's acknowledgements (so they
    /// overlap with this batch's work) and returns the offsets they make safe.
    async fn process(
        &mut self,
        built: &Built,
        sink: &impl Publish,
        metrics: &mut PipelineMetrics,
        ckpt: Option<&mut Checkpointer>,
    ) -> anyhow::Result<Option<BTreeMap<i32, i64>>> {
        let parts: Vec<i32> = self.inputs.iter().filter(|(_, i)| !i.is_empty()).map(|(p, _)| *p).collect();
        let mut before = Vec::with_capacity(parts.len());
        for p in &parts {
            let state = self.states.entry(*p).or_insert_with(|| PartitionState::new(*p));
            before.push((state.counters.clone(), state.drift_events()));
            let input = self.inputs.get_mut(p).expect("listed above");
            self.timestamps.extend_from_slice(&input.timestamps_ms);
            input.clear_timestamps();
        }
        if parts.len() > 1 && built.processor.workers() > 1 {
            // In parallel, each partition into its own outputs, then appended in
            // partition order: the same outputs as one at a time.
            let mut outs = std::mem::take(&mut self.outs);
            outs.resize_with(parts.len().max(outs.len()), Outputs::default);
            let states = self.states.iter_mut().filter(|(p, _)| parts.binary_search(p).is_ok());
            let inputs = self.inputs.iter_mut().filter(|(p, _)| parts.binary_search(p).is_ok());
            let mut jobs: Vec<workers::Job<'_>> = states
                .zip(inputs)
                .zip(outs.drain(..parts.len()))
                .map(|(((p, state), (_, input)), out)| workers::Job { partition: *p, state, input, out, timings: StageTimings::default(), result: Ok(()) })
                .collect();
            workers::run(&built.processor, &mut jobs);
            let mut first_err = None;
            for mut j in jobs {
                self.out.append(&mut j.out);
                self.timings.add(&j.timings);
                if let Err(e) = j.result {
                    first_err.get_or_insert((j.partition, e));
                }
                outs.push(j.out);
            }
            self.outs = outs;
            if let Some((p, e)) = first_err {
                return Err(anyhow::Error::new(e).context(format!("partition {p}")));
            }
        } else {
            for p in &parts {
                let state = self.states.get_mut(p).expect("created above");
                let input = self.inputs.get_mut(p).expect("listed above");
                built.processor.process(state, input, &mut self.out, &mut self.timings).await.with_context(|| format!("partition {p}"))?;
            }
        }
        for (p, (b, drift_before)) in parts.iter().zip(before) {
            let state = &self.states[p];
            let c = &state.counters;
            let (mae_model, mae_persistence) = state.rolling.mae();
            BatchProcessed {
                partition: *p,
                records: c.messages_in - b.messages_in,
                predictions: c.predictions_out - b.predictions_out,
                warmup: c.warmup - b.warmup,
                filtered: c.filtered - b.filtered,
                labelled: c.labelled - b.labelled,
                pending: state.pending(),
                drift_events: state.drift_events() - drift_before,
                evictions: c.evictions - b.evictions,
                fallbacks: c.model_fallbacks - b.model_fallbacks,
                rolling_mae_model: mae_model,
                rolling_mae_persistence: mae_persistence,
                weights: {
                    let ex = built.processor.experts();
                    summary::mean_weights(&ex.names, state.keys.values().filter_map(|k| k.agg.as_ref()), ex.method)
                },
            }
            .emit(metrics);
        }
        if self.timestamps.is_empty() && self.out.predictions.is_empty() && self.out.dead_letters.is_empty() {
            // Idle: settle what is outstanding.
            return self.drain().await;
        }
        // Dead letters come from two stages (decoding as records arrive, the model
        // stage when the batch runs), so their order within a batch depended on
        // where batches ended. In source-offset order, the dead-letter topic is the
        // same whatever the batching — which exactly-once restarts rely on.
        self.out.dead_letters.sort_by_key(|d| (d.partition, d.offset));
        if let Some(ck) = ckpt {
            ck.suppress(&mut self.out);
            ck.retire_watermarks(&self.states);
            ck.note_sent(&self.out);
        }
        let t0 = Instant::now();
        let acks = sink.send(&self.out).await.context("publishing outputs")?;
        let offsets = self.states.iter().map(|(p, s)| (*p, s.next_offset)).collect();
        let previous = self.inflight.replace(Inflight { acks, offsets });
        let acked = match previous {
            Some(f) => {
                let at = f.acks.wait().await.context("publishing outputs")?;
                self.note_delivered(&at);
                fault::crash_point("after_publish");
                Some(f.offsets)
            }
            None => None,
        };
        self.timings.produce = t0.elapsed();
        self.totals.add(&self.timings);
        for d in &self.out.dead_letters {
            DeadLettered(d).emit(metrics);
        }
        BatchPublished {
            timings: self.timings,
            record_timestamps_ms: &self.timestamps,
            published_at_ms: chrono::Utc::now().timestamp_millis(),
            live_models: self.states.values().map(PartitionState::live_models).sum(),
        }
        .emit(metrics);
        self.out.clear();
        self.timestamps.clear();
        self.timings = StageTimings::default();
        Ok(acked)
    }
}

/// Starts the embedded broker, creates the pipeline's topics and seeds the input
/// from the sample file.
pub async fn start_embedded(built: &Built) -> anyhow::Result<EmbeddedBroker> {
    let cfg = &built.config;
    let b = EmbeddedBroker::start()?;
    let n = cfg.source.partitions;
    for t in [&cfg.source.topic, &cfg.sink.topic, &cfg.sink.dead_letter_topic] {
        b.create_topic(t, n)?;
    }
    if let Some(path) = &cfg.source.sample {
        let path = cfg.resolve(path);
        // JSON lines go in byte for byte; other files (CSV, Parquet), and any file of
        // a `[series]` pipeline, through the pipeline's `[source.file]` mapping.
        let lines = if path.extension().is_some_and(|e| e == "jsonl" || e == "json") && cfg.series.is_none() {
            sample::read_lines(&path)?
        } else {
            crate::source::mapping::file_messages(&path, &cfg.source.file, &built.schema, &cfg.source.time)?
                .into_iter()
                .map(|(line, _)| line)
                .collect()
        };
        let prod = sample::seed_producer(b.bootstrap_servers())?;
        let seeded = sample::seed_lines(&prod, &cfg.source.topic, n, &built.schema, &cfg.source.key, lines).await?;
        b.check_retained(&cfg.source.topic)?;
        tracing::info!(records = seeded, topic = %cfg.source.topic, "seeded the embedded broker");
    }
    Ok(b)
}

/// Resolves once the switch is true; never, if its sender is gone while false.
async fn wait_true(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A shutdown switch flipped by SIGINT or SIGTERM.
pub fn shutdown_on_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    let tx = Arc::new(tx);
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining and stopping"),
            _ = int.recv() => tracing::info!("SIGINT: draining and stopping"),
        }
        let _ = tx.send(true);
    });
    rx
}

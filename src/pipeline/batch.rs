//! The micro-batch: records gathered per partition, run through the processor
//! (partitions in parallel), published, and the input offsets that become safe to
//! store once the batch's acknowledgements arrive (awaited while the next batch runs).

use std::collections::BTreeMap;
use std::time::Instant;

use crate::error::Context;
use rdkafka::consumer::Consumer;

use super::build::Built;
use super::recovery::{Checkpointer, Position};
use super::{fault, summary, workers};
use crate::sink::{Acks, Outputs, Publish};
use crate::source::batch::PartitionInput;
use crate::state::PartitionState;
use crate::telemetry::events::{BatchProcessed, BatchPublished, DeadLettered, PipelineMetrics, StageTimings};

/// Stores next-offsets whose batch outputs were all acknowledged.
pub(super) fn store_offsets<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
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

/// A published batch whose acknowledgements are still outstanding, and the input
/// offsets that become safe to commit once they arrive.
struct Inflight {
    acks: Acks,
    offsets: BTreeMap<i32, i64>,
}

/// The micro-batch being assembled and the partition states it advances.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) inputs: BTreeMap<i32, PartitionInput>,
    pub(super) states: BTreeMap<i32, PartitionState>,
    out: Outputs,
    pub(super) timings: StageTimings,
    /// Sum of every batch's timings (for the summary).
    pub(super) totals: StageTimings,
    timestamps: Vec<i64>,
    inflight: Option<Inflight>,
    /// States of revoked partitions, kept for the run summary only.
    pub(super) retired: Vec<PartitionState>,
    /// With checkpoints: where each restored partition's consumer must read next.
    pub(super) positions: BTreeMap<i32, Position>,
    /// Per output partition, the prediction and dead-letter topics' ends after this
    /// process's acknowledged messages (where a later tail read may start).
    pub(super) output_ends: BTreeMap<i32, [i64; 2]>,
    /// Per-partition outputs of parallel batches, kept for reuse.
    outs: Vec<Outputs>,
    /// Partitions found fenced right before a publish (their outputs were dropped);
    /// the run loop drops their state.
    pub(super) fenced: Vec<i32>,
}

impl Batch {
    /// Forgets every partition not in `owned` — its buffered records and its state.
    /// Without checkpoints, a partition that comes back later starts afresh from the
    /// committed offset, exactly as after a restart; buffered records of a revoked
    /// partition are left to its new owner.
    pub(super) fn keep_only(&mut self, owned: &std::collections::BTreeSet<i32>) {
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

    /// Takes in partition `st.partition` as restored from its checkpoint. Its state
    /// carries on the checkpoint's counters, which include what this process counted
    /// for it before a revocation: a retired state of it is superseded (the run
    /// summary counted it twice, and every round trip kept one more).
    pub(super) fn restored(&mut self, st: PartitionState) {
        let p = st.partition;
        self.retired.retain(|r| r.partition != p);
        self.inputs.remove(&p);
        self.states.insert(p, st);
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
    pub(super) async fn drain(&mut self) -> crate::error::Result<Option<BTreeMap<i32, i64>>> {
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
    pub(super) async fn process(
        &mut self,
        built: &Built,
        sink: &impl Publish,
        metrics: &mut PipelineMetrics,
        ckpt: Option<&mut Checkpointer>,
    ) -> crate::error::Result<Option<BTreeMap<i32, i64>>> {
        self.process_ahead(built, sink, metrics, ckpt, &mut BTreeMap::new()).await
    }

    /// [`Batch::process`], with the next batch's records (`ahead`) decoded by workers
    /// that have no partition of this batch left to take (backtests, which hold the
    /// next batch already). Decoding is a function of each record alone: `ahead` then
    /// processes as it would have undecoded.
    pub(super) async fn process_ahead(
        &mut self,
        built: &Built,
        sink: &impl Publish,
        metrics: &mut PipelineMetrics,
        ckpt: Option<&mut Checkpointer>,
        ahead: &mut BTreeMap<i32, PartitionInput>,
    ) -> crate::error::Result<Option<BTreeMap<i32, i64>>> {
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
            let mut ahead: Vec<&mut PartitionInput> = ahead.values_mut().collect();
            self.timings.decode += workers::run(&built.processor, &mut jobs, &mut ahead);
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
                return Err(e.context(format!("partition {p}")));
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
        fault::stall_point("before_publish");
        if let Some(ck) = ckpt {
            // Zombie fencing: after a pause, a newer owner may have taken partitions.
            let lost = ck.fenced_among(self.states.keys().copied(), false).await?;
            if !lost.is_empty() {
                self.out.predictions.retain(|r| !lost.contains(&r.partition));
                self.out.dead_letters.retain(|d| !lost.contains(&d.partition));
                self.fenced.extend(lost);
            }
            ck.suppress(&mut self.out);
            ck.retire_watermarks(&self.states);
            ck.note_sent(&self.out);
        }
        let t0 = Instant::now();
        let acks = sink.send(&self.out).await.context("publishing outputs")?;
        let offsets = self.states.iter().filter(|(p, _)| !self.fenced.contains(p)).map(|(p, s)| (*p, s.next_offset)).collect();
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


#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::summary::Summary;

    fn state(p: i32, messages: u64) -> PartitionState {
        let mut st = PartitionState::new(p);
        st.counters.messages_in = messages;
        st
    }

    /// A partition revoked and later restored from the checkpoint written at the
    /// hand-off is counted once in the run summary (the checkpoint's counters go
    /// on from what the revoked state had counted), and no retired copy is kept;
    /// one revoked for good still counts.
    #[test]
    fn a_partition_that_comes_back_is_counted_once() {
        let mut b = Batch::default();
        b.states.insert(0, state(0, 100));
        b.states.insert(1, state(1, 7));
        for _ in 0..3 {
            b.keep_only(&std::collections::BTreeSet::from([1]));
            b.keep_only(&std::collections::BTreeSet::new());
            // Both revoked; 0 comes back from its checkpoint (100 counted before,
            // 50 more by another member since).
            b.restored(state(0, 150));
        }
        let summary = Summary::from_states("p", b.states.values().chain(b.retired.iter()), 1.0, None);
        assert_eq!(summary.messages_in, 150 + 7);
        assert_eq!(b.retired.len(), 1, "only partition 1's last state");
    }
}

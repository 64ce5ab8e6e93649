//! Hand-offs of a live run: partitions revoked by a rebalance are checkpointed
//! before they are released, and partitions a newer owner claimed are fenced.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::*;

impl Live<'_> {
    /// After a rebalance: the partitions handed over are checkpointed (outputs
    /// acknowledged first; transactional: committed) and forgotten; a revocation
    /// held open for this is then released to the group.
    pub(super) async fn hand_off(&mut self) -> crate::error::Result<()> {
        let r = self.revocations.load(Ordering::SeqCst);
        if r == self.seen_revocations {
            return Ok(());
        }
        self.seen_revocations = r;
        let built = self.built;
        let topic = &built.config.source.topic;
        let held: Vec<i32> = self.held.lock().map(|mut h| std::mem::take(&mut *h)).unwrap_or_default();
        let mut owned = crate::source::context::assigned_partitions(&*self.consumer, topic);
        for p in &held {
            owned.remove(p);
        }
        let t0 = Instant::now();
        self.fence(true).await?;
        if let Some(ck) = &mut self.ckpt {
            if let Some(acked) = self.batch.drain().await? {
                store_offsets(&*self.consumer, topic, &acked);
            }
            if ck.transactional() {
                let mut epoch = Epoch { ck: &mut *ck, states: &self.batch.states, ends: &self.batch.output_ends };
                self.coord.commit(&mut KafkaTransactions(&self.sink.producer), &mut epoch).await.context("committing before a hand-off")?;
            }
            for (p, st) in self.batch.states.iter().filter(|(p, _)| !owned.contains(p)) {
                ck.write(st, &self.batch.output_ends).await.with_context(|| format!("checkpointing revoked partition {p}"))?;
                ck.forget(*p);
            }
        }
        self.batch.keep_only(&owned);
        // A new assignment follows a revocation: what it gives is this process's again.
        self.fenced.clear();
        if !held.is_empty() {
            crate::source::context::release_revoked(&*self.consumer, topic, &held)?;
            let n = crate::source::context::assigned_count(&*self.consumer, topic);
            self.health.assigned.store(n, Ordering::Relaxed);
            tracing::info!(partitions = ?held, seconds = t0.elapsed().as_secs_f64(), "revoked partitions checkpointed and released");
        }
        Ok(())
    }

    /// Zombie fencing without transactions: drops every partition whose checkpoint
    /// store holds a newer writer epoch than the one this process claimed (a newer
    /// owner restored it while this process was paused or cut off) — before this
    /// process publishes or checkpoints for it again. Checked at most once a second
    /// before publishing (`force`: always, before checkpoint writes), so a process
    /// resuming from a pause longer than that checks before its first publish.
    pub(super) async fn fence(&mut self, force: bool) -> crate::error::Result<()> {
        let mut lost = std::mem::take(&mut self.batch.fenced);
        if let Some(ck) = &mut self.ckpt {
            let parts: Vec<i32> = self.batch.states.keys().copied().collect();
            lost.extend(ck.fenced_among(parts, force).await?);
        }
        lost.sort_unstable();
        lost.dedup();
        if lost.is_empty() {
            return Ok(());
        }
        tracing::warn!(partitions = ?lost, "fenced: a newer owner took these partitions (was this process paused?); dropping them without publishing");
        crate::telemetry::events::Fenced { pipeline: &self.built.config.name, partitions: lost.len() }.emit();
        self.fenced.extend(lost.iter().copied());
        let keep: BTreeSet<i32> = self.batch.states.keys().chain(self.batch.inputs.keys()).filter(|p| !self.fenced.contains(p)).copied().collect();
        self.batch.keep_only(&keep);
        if let Some(ck) = &mut self.ckpt {
            for p in lost {
                ck.forget(p);
            }
        }
        Ok(())
    }
}

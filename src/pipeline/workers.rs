//! Runs a batch's partitions on several cores at once: first every partition's
//! records are decoded in shares of consecutive records spread over all workers (so
//! one busy partition does not leave a core idle during the costliest stage); then
//! each worker thread, with its own feature plan, takes partitions from a shared
//! queue, and each partition writes its own outputs — so what a partition emits is a
//! function of its records alone, however many workers there are. A backtest, which
//! holds the next batch's records already, has them decoded in shares behind the
//! partitions in the same queue: a worker left without a partition decodes ahead.
//! Workers run on a pool of threads started once, not threads spawned per batch.

use std::time::Duration;

use super::processor::Processor;
use crate::error::Result;
use crate::sink::Outputs;
use crate::source::batch::{PartitionInput, ShareJob};
use crate::state::PartitionState;
use crate::telemetry::events::StageTimings;

/// One partition's share of a batch.
pub(super) struct Job<'a> {
    pub partition: i32,
    pub state: &'a mut PartitionState,
    pub input: &'a mut PartitionInput,
    pub out: Outputs,
    pub timings: StageTimings,
    pub result: Result<()>,
}

/// Processes every job, on up to `processor.workers()` threads; each job's `result`
/// says how it went. (One partition, or one worker, is processed in place by the
/// caller without coming here.) Workers take the next job from one queue, the
/// partitions with the most records first, so one busy partition does not leave a
/// core idle behind a fixed share (which feature plan runs a job does not change what
/// it computes). Behind the partitions in the queue: shares of `ahead`, records of the
/// next batch, decoded as [`decode_shared`] would (each input then holds its decoded
/// rows); returns the time those took (summed).
pub(super) fn run(processor: &Processor, jobs: &mut [Job<'_>], ahead: &mut [&mut PartitionInput]) -> Duration {
    let w = processor.workers().min(jobs.len()).max(1);
    decode_shared(w, jobs);
    let handle = tokio::runtime::Handle::current();
    // Popped from the end: the partitions, largest first, then the shares ahead.
    let mut queue: Vec<Work<'_, '_>> = shares(w, ahead.iter_mut().map(|i| &mut **i)).into_iter().map(Work::Decode).collect();
    let mut parts: Vec<&mut Job<'_>> = jobs.iter_mut().collect();
    parts.sort_by_key(|j| (j.input.messages, std::cmp::Reverse(j.partition)));
    queue.extend(parts.into_iter().map(Work::Partition));
    on_threads(w, queue, |worker, item| match item {
        Work::Partition(j) => {
            // The runtime's context, for anything the feature plan spawns.
            let _rt = handle.enter();
            // Every worker is busy: the model stage stays on this one's thread.
            j.result = futures::executor::block_on(processor.process_on(worker, 1, j.state, j.input, &mut j.out, &mut j.timings));
        }
        Work::Decode(share) => share.run(),
    });
    ahead.iter_mut().map(|i| i.join_shares()).sum()
}

/// An item of the workers' queue.
enum Work<'q, 'j> {
    Partition(&'q mut Job<'j>),
    Decode(ShareJob<'q>),
}

/// Shares of fewer records cost more to hand out and join than they save.
const MIN_SHARE: usize = 512;

/// Decodes every job's records on `w` threads, in shares of consecutive records
/// (about two per thread in all, the largest taken first); each job's input then
/// holds its decoded batch and dead letters as if it had decoded them itself.
fn decode_shared(w: usize, jobs: &mut [Job<'_>]) {
    let shares = shares(w, jobs.iter_mut().map(|j| &mut *j.input));
    if shares.is_empty() {
        return;
    }
    on_threads(w, shares, |_, share| share.run());
    for j in jobs.iter_mut() {
        j.timings.decode += j.input.join_shares();
    }
}

/// The undecoded records of `inputs` cut into shares for `w` threads (about two per
/// thread, none under [`MIN_SHARE`] records), largest last (threads pop from the end);
/// none when there are too few to be worth it or a single thread.
fn shares<'a>(w: usize, inputs: impl Iterator<Item = &'a mut PartitionInput>) -> Vec<ShareJob<'a>> {
    let inputs: Vec<&'a mut PartitionInput> = inputs.collect();
    let total: usize = inputs.iter().map(|i| i.undecoded()).sum();
    if w < 2 || total < 2 * MIN_SHARE {
        return Vec::new();
    }
    let per = total.div_ceil(2 * w).max(MIN_SHARE);
    let mut shares: Vec<ShareJob<'a>> = inputs.into_iter().flat_map(|i| {
        let n = i.undecoded().div_ceil(per);
        i.share_out(n)
    }).collect();
    shares.sort_by_key(|s| s.len());
    shares
}

/// The threads workers run on: started once, one per worker (`build::workers()`, the
/// most any processor has) and kept between batches — a thread spawned per batch
/// started late (1–4 ms behind on a busy core) and with its allocator caches empty.
fn pool(w: usize) -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(super::build::workers().max(w))
            .thread_name(|i| format!("worker-{i}"))
            .build()
            .expect("starting the worker threads")
    })
}

/// Runs `each` on every item of `queue` with `w` workers on the worker pool, worker
/// `i` (passed to `each`; no two run at once with the same `i`) taking the next item
/// from the end of the queue until none is left (blocking this thread until all are
/// done).
fn on_threads<T: Send>(w: usize, queue: Vec<T>, each: impl Fn(usize, T) + Sync) {
    let queue = std::sync::Mutex::new(queue);
    let work = || {
        pool(w).scope(|s| {
            for worker in 0..w {
                let (queue, each) = (&queue, &each);
                s.spawn(move |_| loop {
                    let next = queue.lock().expect("work queue").pop();
                    let Some(item) = next else { break };
                    each(worker, item);
                });
            }
        })
    };
    match tokio::runtime::Handle::current().runtime_flavor() {
        // Blocking a worker of the runtime: tell it, so other tasks move elsewhere.
        tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(work),
        _ => work(),
    }
}

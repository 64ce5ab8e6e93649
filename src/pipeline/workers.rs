//! Runs a batch's partitions on several cores at once: first every partition's
//! records are decoded in shares of consecutive records spread over all workers (so
//! one busy partition does not leave a core idle during the costliest stage); then
//! each worker thread, with its own feature plan, takes partitions from a shared
//! queue, and each partition writes its own outputs — so what a partition emits is a
//! function of its records alone, however many workers there are.

use super::processor::Processor;
use crate::error::Result;
use crate::sink::Outputs;
use crate::source::batch::PartitionInput;
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
/// it computes).
pub(super) fn run(processor: &Processor, jobs: &mut [Job<'_>]) {
    let w = processor.workers().min(jobs.len()).max(1);
    decode_shared(w, jobs);
    let handle = tokio::runtime::Handle::current();
    let mut queue: Vec<&mut Job<'_>> = jobs.iter_mut().collect();
    // Largest last: workers pop from the end.
    queue.sort_by_key(|j| (j.input.messages, std::cmp::Reverse(j.partition)));
    on_threads(w, "worker", queue, |worker, j| {
        // The runtime's context, for anything the feature plan spawns.
        let _rt = handle.enter();
        // Every worker is busy: the model stage stays on this one's thread.
        j.result = futures::executor::block_on(processor.process_on(worker, 1, j.state, j.input, &mut j.out, &mut j.timings));
    });
}

/// Shares of fewer records cost more to hand out and join than they save.
const MIN_SHARE: usize = 512;

/// Decodes every job's records on `w` threads, in shares of consecutive records
/// (about two per thread in all, the largest taken first); each job's input then
/// holds its decoded batch and dead letters as if it had decoded them itself.
fn decode_shared(w: usize, jobs: &mut [Job<'_>]) {
    let total: usize = jobs.iter().map(|j| j.input.undecoded()).sum();
    if w < 2 || total < 2 * MIN_SHARE {
        return;
    }
    let per = total.div_ceil(2 * w).max(MIN_SHARE);
    let mut shares: Vec<_> = jobs.iter_mut().flat_map(|j| {
        let n = j.input.undecoded().div_ceil(per);
        j.input.share_out(n)
    }).collect();
    // Largest last: threads pop from the end.
    shares.sort_by_key(|s| s.len());
    on_threads(w, "decode", shares, |_, share| share.run());
    for j in jobs.iter_mut() {
        j.timings.decode += j.input.join_shares();
    }
}

/// Runs `each` on every item of `queue` on `w` scoped threads named `{name}-{i}`,
/// each thread taking the next item from the end of the queue until none is left
/// (blocking this thread until all are done).
fn on_threads<T: Send>(w: usize, name: &str, queue: Vec<T>, each: impl Fn(usize, T) + Sync) {
    let queue = std::sync::Mutex::new(queue);
    let work = || {
        std::thread::scope(|s| {
            for worker in 0..w {
                let (queue, each) = (&queue, &each);
                let spawned = std::thread::Builder::new().name(format!("{name}-{worker}")).spawn_scoped(s, move || loop {
                    let next = queue.lock().expect("work queue").pop();
                    let Some(item) = next else { break };
                    each(worker, item);
                });
                spawned.expect("spawning a worker thread");
            }
        })
    };
    match tokio::runtime::Handle::current().runtime_flavor() {
        // Blocking a worker of the runtime: tell it, so other tasks move elsewhere.
        tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(work),
        _ => work(),
    }
}

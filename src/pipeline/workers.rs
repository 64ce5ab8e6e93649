//! Runs a batch's partitions on several cores at once: each worker thread takes every
//! W-th partition (in partition order) with its own feature plan, and each partition
//! writes its own outputs — so what a partition emits is a function of its records
//! alone, however many workers there are.

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
/// caller without coming here.)
pub(super) fn run(processor: &Processor, jobs: &mut [Job<'_>]) {
    let w = processor.workers().min(jobs.len()).max(1);
    let handle = tokio::runtime::Handle::current();
    let mut work = || {
        std::thread::scope(|s| {
            let mut groups: Vec<Vec<&mut Job<'_>>> = (0..w).map(|_| Vec::new()).collect();
            for (i, j) in jobs.iter_mut().enumerate() {
                groups[i % w].push(j);
            }
            for (worker, group) in groups.into_iter().enumerate() {
                let h = handle.clone();
                s.spawn(move || {
                    // The runtime's context, for anything the feature plan spawns.
                    let _rt = h.enter();
                    futures::executor::block_on(async {
                        for j in group {
                            // Every worker is busy: the model stage stays on this one's thread.
                            j.result = processor.process_on(worker, 1, j.state, j.input, &mut j.out, &mut j.timings).await;
                        }
                    })
                });
            }
        })
    };
    match handle.runtime_flavor() {
        // Blocking a worker of the runtime: tell it, so other tasks move elsewhere.
        tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(work),
        _ => work(),
    }
}

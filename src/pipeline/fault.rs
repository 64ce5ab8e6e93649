//! Fault injection for the crash tests: `TICKFLARE_FAULT=POINT:N` makes the N-th
//! pass through `POINT` abort the process (as a SIGKILL would: no cleanup), for
//! `checkpoint_fails` fail the checkpoint write as a full disk would, or for a stall
//! point freeze the pipeline there for `TICKFLARE_FAULT_STALL_MS` (a long GC-like
//! pause or a stuck disk: the process's partitions may move on meanwhile). Unset in
//! normal use; reading it costs one branch per checkpoint or batch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

fn target() -> &'static Option<(String, u64)> {
    static T: OnceLock<Option<(String, u64)>> = OnceLock::new();
    T.get_or_init(|| {
        let v = std::env::var("TICKFLARE_FAULT").ok()?;
        let (p, n) = v.split_once(':')?;
        Some((p.to_string(), n.parse().ok()?))
    })
}

static HITS: AtomicU64 = AtomicU64::new(0);

/// Whether this pass through `point` is the configured N-th one.
pub fn fires(point: &str) -> bool {
    match target() {
        Some((p, n)) if p == point => HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n,
        _ => false,
    }
}

/// Aborts the process on the configured N-th pass through `point`.
pub fn crash_point(point: &str) {
    if fires(point) {
        eprintln!("TICKFLARE_FAULT: aborting at {point}");
        std::process::abort();
    }
}

/// Blocks the calling thread on the configured N-th pass through `point`.
pub fn stall_point(point: &str) {
    if fires(point) {
        let ms = std::env::var("TICKFLARE_FAULT_STALL_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(15_000);
        eprintln!("TICKFLARE_FAULT: stalling {ms} ms at {point}");
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

//! A progress line for long reads (`replay`, file backtests): a bar with the rate and
//! an ETA on a terminal, a log line every 5 s otherwise.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    what: &'static str,
    started: Instant,
    last: Instant,
    tty: bool,
    enabled: bool,
}

impl Progress {
    /// `what` names the work ("replaying", "backtesting"); `enabled = false` is silent.
    pub fn new(what: &'static str, enabled: bool) -> Self {
        let now = Instant::now();
        Progress { what, started: now, last: now, tty: std::io::stderr().is_terminal(), enabled }
    }

    /// `records` done so far; `done` of `total` units (bytes, rows) give the fraction
    /// and the ETA.
    pub fn tick(&mut self, records: u64, done: u64, total: u64) {
        let every = if self.tty { Duration::from_millis(200) } else { Duration::from_secs(5) };
        if !self.enabled || self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let rate = records as f64 / secs;
        let frac = if total > 0 { (done as f64 / total as f64).min(1.0) } else { 0.0 };
        let eta = if frac > 0.0 { secs * (1.0 - frac) / frac } else { f64::NAN };
        if self.tty {
            let filled = ((frac * 30.0) as usize).min(30);
            eprint!("\r[{}{}] {:>3.0}% {records} records {rate:.0} rec/s ETA {eta:.0}s ", "#".repeat(filled), ".".repeat(30 - filled), 100.0 * frac);
            let _ = std::io::stderr().flush();
        } else {
            tracing::info!(records, percent = format!("{:.0}", 100.0 * frac), rate = format!("{rate:.0}/s"), eta_s = format!("{eta:.0}"), "{}", self.what);
        }
    }

    pub fn finish(&self) {
        if self.enabled && self.tty {
            eprintln!();
        }
    }
}

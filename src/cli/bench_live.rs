//! `tickflare bench --latency RATE` and `--soak SECONDS`: the pipeline running live on
//! an embedded broker while records are offered at a fixed rate (the input file looped,
//! every timestamp in a line moved one file-span later per loop, so event time keeps
//! going forward). Latency: from a record's send to its prediction's arrival at a
//! consumer of the output topic (matched by the source partition and offset headers),
//! p50/p99 after the first 10 % of records. Soak: the process's RSS every second.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::message::{Headers, Message};
use rdkafka::producer::FutureRecord;
use serde::Serialize;

use crate::pipeline::build::Built;
use crate::pipeline::{self, RunOptions};
use crate::sink::kafka::{producer, H_SOURCE_OFFSET, H_SOURCE_PARTITION};
use crate::source::sample::{key_of, partition_for};

/// What a live run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LiveResult {
    pub offered_msgs_per_s: f64,
    pub achieved_msgs_per_s: f64,
    pub seconds: f64,
    pub records: u64,
    /// Record → prediction latency (ms), over predictions after the first 10 %.
    pub latency_samples: usize,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    /// RSS (MB) sampled each second after the first 20 % of the run.
    pub rss_first_mb: f64,
    pub rss_last_mb: f64,
    pub rss_min_mb: f64,
    pub rss_max_mb: f64,
    /// (max − min) / first, in percent.
    pub rss_spread_pct: f64,
}

fn rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// `line` with every RFC 3339 time string (`"YYYY-MM-DDTHH:MM:SS[.f]Z"` or with an
/// offset) moved `shift_ms` later, written in UTC with as many fraction digits as it
/// had (0, 3, 6 or 9; others as few as the value needs).
pub fn shift_times(line: &str, shift_ms: i64) -> String {
    if shift_ms == 0 {
        return line.to_string();
    }
    let mut out = String::with_capacity(line.len() + 8);
    let mut rest = line;
    while let Some(i) = rest.find('"') {
        out.push_str(&rest[..=i]);
        rest = &rest[i + 1..];
        let end = rest.find('"').unwrap_or(0);
        let cand = &rest[..end];
        if cand.len() >= 20 && cand.as_bytes().get(10) == Some(&b'T') {
            if let Ok(t) = chrono::DateTime::parse_from_rfc3339(cand) {
                let digits = cand.get(20..).map_or(0, |f| if cand.as_bytes()[19] == b'.' { f.bytes().take_while(u8::is_ascii_digit).count() } else { 0 });
                let format = match digits {
                    0 => chrono::SecondsFormat::Secs,
                    3 => chrono::SecondsFormat::Millis,
                    6 => chrono::SecondsFormat::Micros,
                    9 => chrono::SecondsFormat::Nanos,
                    _ => chrono::SecondsFormat::AutoSi,
                };
                let t = t.to_utc() + chrono::Duration::milliseconds(shift_ms);
                out.push_str(&t.to_rfc3339_opts(format, true));
                rest = &rest[end..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Runs `built` live for `seconds` while offering `rate` records/s from `input`.
/// Without `latency` no per-record bookkeeping is kept (a soak measures the
/// pipeline's memory, not the benchmark's).
pub async fn live(built: Built, input: &Path, rate: f64, seconds: f64, partitions: i32, latency: bool) -> anyhow::Result<LiveResult> {
    let lines: Vec<String> = std::fs::read_to_string(input)?.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect();
    anyhow::ensure!(!lines.is_empty(), "{} is empty", input.display());
    let cfg = built.config.clone();
    let times: Vec<i64> = lines.iter().filter_map(|l| first_time_ms(l)).collect();
    let schema = built.schema.clone();
    let span_ms = times.iter().max().zip(times.iter().min()).map_or(0, |(a, b)| a - b) + 1_000;
    let broker = crate::broker::EmbeddedBroker::start()?;
    let bs = broker.bootstrap_servers().to_string();
    let n = partitions.max(1);
    for t in [&cfg.source.topic, &cfg.sink.topic, &cfg.sink.dead_letter_topic] {
        broker.create_topic(t, n)?;
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let opts = RunOptions { brokers: Some(bs.clone()), assign: true, ..Default::default() };
    // Predictions as they arrive: (source partition, source offset) → when.
    let arrived: Arc<Mutex<HashMap<(i32, i64), Instant>>> = Default::default();
    let out = crate::source::kafka::consumer(&bs, "tickflare-bench-latency")?;
    crate::source::kafka::assign_all(&out, &cfg.sink.topic, n)?;
    let (a2, done) = (arrived.clone(), Arc::new(std::sync::atomic::AtomicBool::new(false)));
    let done2 = done.clone();
    let reader = tokio::spawn(async move {
        while !done2.load(std::sync::atomic::Ordering::Relaxed) {
            let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(200), out.recv()).await else { continue };
            let now = Instant::now();
            let (mut p, mut o) = (None, None);
            if let Some(h) = m.headers() {
                for x in h.iter() {
                    let v = x.value.and_then(|v| std::str::from_utf8(v).ok());
                    match x.key {
                        H_SOURCE_PARTITION => p = v.and_then(|v| v.parse::<i32>().ok()),
                        H_SOURCE_OFFSET => o = v.and_then(|v| v.parse::<i64>().ok()),
                        _ => {}
                    }
                }
            }
            if let (true, Some(p), Some(o)) = (latency, p, o) {
                a2.lock().expect("arrivals").insert((p, o), now);
            }
        }
        drop(out);
    });
    let prod = producer(&bs)?;
    // The feed and the pipeline side by side in this task (the pipeline's future
    // stays on this thread).
    let feed = async {
    let started = Instant::now();
    let mut sent: Vec<(Instant, rdkafka::producer::DeliveryFuture)> = Vec::new();
    let mut offsets: Vec<(Instant, i32, i64)> = Vec::new();
    let (mut i, mut rss) = (0usize, Vec::new());
    let mut next_sample = Duration::from_secs(1);
    while started.elapsed().as_secs_f64() < seconds {
        // Due by now at `rate`: send up to there, then sleep a millisecond.
        let due = (started.elapsed().as_secs_f64() * rate) as usize;
        while i < due {
            let copy = (i / lines.len()) as i64;
            let line = shift_times(&lines[i % lines.len()], copy * span_ms);
            let key = key_of(line.as_bytes(), &schema, &cfg.source.key);
            let p = key.as_deref().map_or(0, |k| partition_for(k.as_bytes(), n));
            let mut rec = FutureRecord::<[u8], [u8]>::to(&cfg.source.topic).partition(p).payload(line.as_bytes());
            if let Some(k) = key.as_deref() {
                rec = rec.key(k.as_bytes());
            }
            let f = prod.send_result(rec).map_err(|(e, _)| e)?;
            sent.push((Instant::now(), f));
            i += 1;
        }
        if sent.len() >= 5_000 {
            for (t, f) in sent.drain(..) {
                let d = f.await?.map_err(|(e, _)| e)?;
                if latency {
                    offsets.push((t, d.partition, d.offset));
                }
            }
        }
        if started.elapsed() >= next_sample {
            rss.push(rss_mb());
            next_sample += Duration::from_secs(1);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    for (t, f) in sent.drain(..) {
        let d = f.await?.map_err(|(e, _)| e)?;
        offsets.push((t, d.partition, d.offset));
    }
    // Let the last predictions arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = stop_tx.send(true);
    anyhow::Ok((i, elapsed, offsets, rss))
    };
    let (summary, fed) = tokio::join!(pipeline::run(&built, opts, stop_rx), feed);
    let (i, elapsed, offsets, rss) = fed?;
    let summary = summary?;
    reader.await?;
    let arrived = arrived.lock().expect("arrivals");
    let skip = offsets.len() / 10;
    let mut lat: Vec<f64> = offsets[skip..]
        .iter()
        .filter_map(|(t, p, o)| arrived.get(&(*p, *o)).map(|a| a.duration_since(*t).as_secs_f64() * 1e3))
        .collect();
    lat.sort_by(f64::total_cmp);
    let q = |f: f64| if lat.is_empty() { f64::NAN } else { lat[((lat.len() - 1) as f64 * f).round() as usize] };
    let rss = &rss[rss.len() / 5..];
    let (first, last) = (rss.first().copied().unwrap_or(f64::NAN), rss.last().copied().unwrap_or(f64::NAN));
    let (min, max) = rss.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
    drop(prod);
    drop(broker);
    tracing::debug!(messages = summary.messages_in, "live bench done");
    Ok(LiveResult {
        offered_msgs_per_s: rate,
        achieved_msgs_per_s: i as f64 / elapsed,
        seconds: elapsed,
        records: i as u64,
        latency_samples: lat.len(),
        latency_p50_ms: q(0.5),
        latency_p99_ms: q(0.99),
        latency_max_ms: lat.last().copied().unwrap_or(f64::NAN),
        rss_first_mb: first,
        rss_last_mb: last,
        rss_min_mb: min,
        rss_max_mb: max,
        rss_spread_pct: 100.0 * (max - min) / first,
    })
}

/// The first RFC 3339 time string in a line (ms).
fn first_time_ms(line: &str) -> Option<i64> {
    line.split('"').filter(|c| c.len() >= 20 && c.as_bytes().get(10) == Some(&b'T')).find_map(|c| chrono::DateTime::parse_from_rfc3339(c).ok()).map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_move_forward() {
        let l = r#"{"a":"2025-03-25T23:59:59.773674205Z","b":"x","c":"2025-03-25T23:07:00Z"}"#;
        assert_eq!(shift_times(l, 1_000), r#"{"a":"2025-03-26T00:00:00.773674205Z","b":"x","c":"2025-03-25T23:07:01Z"}"#);
        assert_eq!(shift_times(l, 0), l);
        // Fraction digits as they were, even where the value needs fewer.
        assert_eq!(shift_times(r#"{"t":"2025-03-25T23:07:00.100000000Z"}"#, 300_000), r#"{"t":"2025-03-25T23:12:00.100000000Z"}"#);
        assert_eq!(shift_times(r#"{"t":"2025-03-25T23:07:00.500Z"}"#, 1), r#"{"t":"2025-03-25T23:07:00.501Z"}"#);
    }
}

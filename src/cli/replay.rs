//! `tickflare replay FILE --topic T`: publishes a historical file into a topic, each
//! record's Kafka timestamp set to its event time, as fast as the broker takes it or
//! at the original spacing compressed by a factor.
//!
//! JSON lines are published as they are; CSV rows become flat JSON objects (header
//! names as keys, numeric cells as numbers). `--time` names the event-time field
//! (RFC 3339, `YYYY-MM-DD[ HH:MM:SS]`, or `dd.mm.yyyy HH:MM:SS.mmm`, or epoch
//! milliseconds); `--key` the field whose value keys (and partitions) the records.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::producer::FutureRecord;
use serde_json::Value;

use crate::sink::kafka::producer;
use crate::source::file::read_records;
use crate::source::sample::stable_hash;

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// JSON-lines or CSV file.
    pub file: PathBuf,
    /// Topic to publish to (it must exist).
    #[arg(long)]
    pub topic: String,
    /// Bootstrap servers.
    #[arg(long, env = "TICKFLARE_BROKERS")]
    pub brokers: String,
    /// Field holding the event time.
    #[arg(long)]
    pub time: String,
    /// Field whose value is the record key (partition = stable hash of it).
    #[arg(long)]
    pub key: Option<String>,
    /// `max` (as fast as possible), `1x` (original spacing) or `Nx` (N times faster).
    #[arg(long, default_value = "max")]
    pub speed: String,
    /// Only records at or after this event time (same formats as the data).
    #[arg(long)]
    pub from: Option<String>,
    /// Only records before this event time.
    #[arg(long)]
    pub to: Option<String>,
    /// Partitions of the topic (for key hashing).
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
}

/// Parses the event-time formats found in the shipped data into epoch milliseconds.
pub fn parse_time_ms(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
                return Some(t.timestamp_millis());
            }
            for f in ["%Y-%m-%d %H:%M:%S", "%d.%m.%Y %H:%M:%S%.3f", "%Y-%m-%dT%H:%M:%S", "%m/%d/%Y %H:%M:%S"] {
                if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
                    return Some(t.and_utc().timestamp_millis());
                }
            }
            for f in ["%Y-%m-%d", "%m/%d/%Y"] {
                if let Ok(d) = chrono::NaiveDate::parse_from_str(s, f) {
                    return Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis());
                }
            }
            None
        }
        _ => None,
    }
}

fn speed_factor(s: &str) -> anyhow::Result<Option<f64>> {
    if s == "max" {
        return Ok(None);
    }
    match s.strip_suffix('x').and_then(|n| n.parse::<f64>().ok()) {
        Some(f) if f > 0.0 => Ok(Some(f)),
        _ => bail!("--speed {s:?}: use max, 1x or Nx (e.g. 60x)"),
    }
}

pub async fn replay(a: ReplayArgs) -> anyhow::Result<ExitCode> {
    let speed = speed_factor(&a.speed)?;
    let bound = |s: &Option<String>| -> anyhow::Result<Option<i64>> {
        s.as_ref()
            .map(|s| parse_time_ms(&Value::from(s.as_str())).with_context(|| format!("cannot read time {s:?}")))
            .transpose()
    };
    let (from, to) = (bound(&a.from)?, bound(&a.to)?);
    let records = read_records(&a.file)?;
    let prod = producer(&a.brokers)?;
    let started = Instant::now();
    let (mut sent, mut skipped) = (0u64, 0u64);
    let mut first_event: Option<i64> = None;
    let mut acks = Vec::new();
    let total = records.len();
    for (i, rec) in records.iter().enumerate() {
        let Some(t) = rec.get(&a.time).and_then(parse_time_ms) else {
            bail!("record {}: no readable event time in field {:?}", i + 1, a.time);
        };
        if from.is_some_and(|f| t < f) || to.is_some_and(|e| t >= e) {
            skipped += 1;
            continue;
        }
        if let Some(f) = speed {
            let t0 = *first_event.get_or_insert(t);
            let due = Duration::from_secs_f64(((t - t0) as f64 / 1000.0 / f).max(0.0));
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        let key = a.key.as_ref().and_then(|k| rec.get(k)).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        let payload = serde_json::to_vec(rec)?;
        let part = key.as_deref().map_or(0, |k| (stable_hash(k.as_bytes()) % a.partitions.max(1) as u64) as i32);
        let mut r = FutureRecord::<[u8], [u8]>::to(&a.topic).partition(part).payload(&payload).timestamp(t);
        if let Some(k) = key.as_deref() {
            r = r.key(k.as_bytes());
        }
        acks.push(prod.send_result(r).map_err(|(e, _)| e)?);
        sent += 1;
        if acks.len() >= 10_000 {
            for f in acks.drain(..) {
                f.await?.map_err(|(e, _)| e)?;
            }
        }
        if (i + 1) % 50_000 == 0 {
            let rate = sent as f64 / started.elapsed().as_secs_f64();
            tracing::info!(done = i + 1, total, rate = format!("{rate:.0}/s"), "replaying");
        }
    }
    for f in acks {
        f.await?.map_err(|(e, _)| e)?;
    }
    println!(
        "replayed {sent} records to {} in {:.2}s ({skipped} outside --from/--to)",
        a.topic,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The formats of the shipped files, converted by hand: 2017-01-01 22:00 UTC is
    /// 1483308000000 ms; 2000-01-01 is 946684800000 ms.
    #[test]
    fn time_formats() {
        assert_eq!(parse_time_ms(&Value::from("01.01.2017 22:00:00.000")), Some(1_483_308_000_000));
        assert_eq!(parse_time_ms(&Value::from("2000-01-01T00:00:00Z")), Some(946_684_800_000));
        assert_eq!(parse_time_ms(&Value::from("2000-01-01")), Some(946_684_800_000));
        assert_eq!(parse_time_ms(&Value::from("1/4/1999")), Some(915_408_000_000));
        assert_eq!(parse_time_ms(&Value::from(1234)), Some(1234));
        assert_eq!(parse_time_ms(&Value::from("soon")), None);
        assert!(speed_factor("60x").unwrap() == Some(60.0) && speed_factor("max").unwrap().is_none());
        assert!(speed_factor("fast").is_err());
    }
}

//! Sink stage: what a processed batch emits — encoded predictions and dead letters —
//! and how they are published: to Kafka ([`kafka`]) or, in file backtests, to Parquet
//! files ([`file`]), both behind [`Publish`].

pub mod dedupe;
pub mod file;
pub mod kafka;
pub mod txn;

use std::io::Write;

/// A record that could not be processed, with why. Published to the dead-letter
/// topic with the original key and bytes, a `reason` header and source coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub partition: i32,
    pub offset: i64,
    /// Stable reason code: `malformed_json`, `missing_field`, `wrong_type`,
    /// `non_finite`, `empty_payload`, `late`, `non_finite_feature`, `feature_error` (`model_diverged` before the divergence guard replaced it).
    pub reason: &'static str,
    pub detail: String,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// The source record's Kafka timestamp (ms), reused so the topic is deterministic.
    pub timestamp_ms: Option<i64>,
}

/// An encoded prediction: ranges into [`Outputs::buf`].
#[derive(Debug, Clone, Copy)]
pub struct OutRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: (usize, usize),
    pub payload: (usize, usize),
    /// Kafka timestamp (ms): the input record's event time.
    pub timestamp_ms: i64,
    /// The payload's fields that are not text, kept for sinks that write columns.
    pub event_time_ns: i64,
    pub predicted: f64,
    pub model_updates: u64,
}

/// Where a batch's outputs go. `send` enqueues every prediction and dead letter of a
/// batch, in order; the returned [`Acks`] resolve once all are stored.
pub trait Publish {
    fn send(&self, out: &Outputs) -> impl std::future::Future<Output = crate::error::Result<Acks>> + Send;
}

/// A sink that keeps nothing (compute-only benchmarks): outputs are encoded, then
/// dropped.
pub struct Discard;

impl Publish for Discard {
    async fn send(&self, _out: &Outputs) -> crate::error::Result<Acks> {
        Ok(Acks::Done(Ends::new()))
    }
}

/// Per output partition, the end (last offset + 1) of the prediction and of the
/// dead-letter topic after a batch's messages.
pub type Ends = std::collections::BTreeMap<i32, [i64; 2]>;

/// Outstanding deliveries of one batch.
pub enum Acks {
    /// Counted by the Kafka producer's delivery callback.
    Kafka(std::sync::Arc<kafka::BatchAcks>),
    /// Already stored.
    Done(Ends),
}

impl Acks {
    /// Waits until every message is stored; where the topics end now. The first
    /// failure is the error.
    pub async fn wait(self) -> crate::error::Result<Ends> {
        match self {
            Acks::Kafka(a) => a.wait().await,
            Acks::Done(e) => Ok(e),
        }
    }
}

/// Integer → decimal text in a stack buffer (header values without allocating).
#[derive(Default)]
pub struct Itoa([u8; 24]);

impl Itoa {
    pub fn fmt(&mut self, v: i64) -> &str {
        self.magnitude(v < 0, v.unsigned_abs())
    }

    /// `u`, with a minus sign when `neg` (any u64: integers beyond i64 too).
    pub fn magnitude(&mut self, neg: bool, mut u: u64) -> &str {
        let mut i = self.0.len();
        loop {
            i -= 1;
            self.0[i] = b'0' + (u % 10) as u8;
            u /= 10;
            if u == 0 {
                break;
            }
        }
        if neg {
            i -= 1;
            self.0[i] = b'-';
        }
        std::str::from_utf8(&self.0[i..]).expect("ASCII digits")
    }
}

/// `v` (0 ≤ v < 10^width) in exactly `width` decimal digits, zero-padded.
fn digits(b: &mut Vec<u8>, v: i64, width: usize) {
    let at = b.len();
    b.resize(at + width, b'0');
    let mut u = v.unsigned_abs();
    for d in b[at..].iter_mut().rev() {
        *d = b'0' + (u % 10) as u8;
        u /= 10;
    }
}

/// Everything a batch produced, in record order.
#[derive(Default)]
pub struct Outputs {
    pub buf: Vec<u8>,
    pub predictions: Vec<OutRecord>,
    pub dead_letters: Vec<DeadLetter>,
    /// The last event day (days since the epoch) and its "YYYY-MM-DD": the calendar
    /// is worked out once per day, not per prediction.
    day: Option<(i64, [u8; 10])>,
}

/// The fields of one prediction message (see `schemas/predictions.json`).
pub struct PredictionRef<'a> {
    pub key: &'a str,
    pub event_time_ns: i64,
    pub horizon: &'a str,
    pub target: &'a str,
    pub predicted: f64,
    pub model_updates: u64,
    pub partition: i32,
    pub offset: i64,
}

impl Outputs {
    pub fn clear(&mut self) {
        self.buf.clear();
        self.predictions.clear();
        self.dead_letters.clear();
    }

    /// Moves everything of `other` to the end of these outputs (leaving it empty).
    pub fn append(&mut self, other: &mut Outputs) {
        let base = self.buf.len();
        self.buf.extend_from_slice(&other.buf);
        self.predictions.extend(other.predictions.iter().map(|r| OutRecord {
            key: (r.key.0 + base, r.key.1 + base),
            payload: (r.payload.0 + base, r.payload.1 + base),
            ..*r
        }));
        self.dead_letters.append(&mut other.dead_letters);
        other.buf.clear();
        other.predictions.clear();
    }

    pub fn key(&self, r: &OutRecord) -> &[u8] {
        &self.buf[r.key.0..r.key.1]
    }

    pub fn payload(&self, r: &OutRecord) -> &[u8] {
        &self.buf[r.payload.0..r.payload.1]
    }

    /// Encodes a prediction as JSON into the shared buffer.
    pub fn push_prediction(&mut self, p: &PredictionRef<'_>) {
        let k0 = self.buf.len();
        self.buf.extend_from_slice(p.key.as_bytes());
        let k1 = self.buf.len();
        let (secs, nanos) = (p.event_time_ns.div_euclid(1_000_000_000), p.event_time_ns.rem_euclid(1_000_000_000));
        let (day, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let date = match self.day {
            Some((d, text)) if d == day => text,
            _ => {
                use chrono::Datelike;
                let t = chrono::DateTime::from_timestamp_nanos(p.event_time_ns);
                let mut text = [0u8; 10];
                let _ = write!(&mut text[..], "{:04}-{:02}-{:02}", t.year(), t.month(), t.day());
                self.day = Some((day, text));
                text
            }
        };
        let b = &mut self.buf;
        // Writing into a Vec cannot fail.
        let _ = b.write_all(b"{\"key\":");
        let _ = serde_json::to_writer(&mut *b, p.key);
        let _ = b.write_all(b",\"event_time\":\"");
        let _ = b.write_all(&date);
        // Fixed-width digits and itoa (through serde_json) rather than `fmt`: this runs
        // once per prediction.
        b.push(b'T');
        digits(b, sod / 3600, 2);
        b.push(b':');
        digits(b, sod / 60 % 60, 2);
        b.push(b':');
        digits(b, sod % 60, 2);
        b.push(b'.');
        digits(b, nanos, 9);
        let _ = b.write_all(b"Z\",\"event_time_ns\":");
        let _ = serde_json::to_writer(&mut *b, &p.event_time_ns);
        let _ = b.write_all(b",\"horizon\":");
        let _ = serde_json::to_writer(&mut *b, p.horizon);
        let _ = b.write_all(b",\"target\":");
        let _ = serde_json::to_writer(&mut *b, p.target);
        let _ = b.write_all(b",\"predicted\":");
        let _ = serde_json::to_writer(&mut *b, &p.predicted);
        let _ = b.write_all(b",\"model_updates\":");
        let _ = serde_json::to_writer(&mut *b, &p.model_updates);
        let _ = b.write_all(b",\"source_partition\":");
        let _ = serde_json::to_writer(&mut *b, &p.partition);
        let _ = b.write_all(b",\"source_offset\":");
        let _ = serde_json::to_writer(&mut *b, &p.offset);
        b.push(b'}');
        let p1 = self.buf.len();
        self.predictions.push(OutRecord {
            partition: p.partition,
            offset: p.offset,
            key: (k0, k1),
            payload: (k1, p1),
            timestamp_ms: p.event_time_ns.div_euclid(1_000_000),
            event_time_ns: p.event_time_ns,
            predicted: p.predicted,
            model_updates: p.model_updates,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn itoa_matches_to_string() {
        let mut b = Itoa::default();
        for v in [0, 7, -7, 10, 1234567890123, i64::MAX, i64::MIN] {
            assert_eq!(b.fmt(v), v.to_string());
        }
        assert_eq!(b.magnitude(false, u64::MAX), u64::MAX.to_string());
        assert_eq!(b.magnitude(true, u64::MAX), format!("-{}", u64::MAX));
    }

    #[test]
    fn prediction_json_parses_back() {
        let mut o = Outputs::default();
        o.push_prediction(&PredictionRef {
            key: "BTC\"USDT",
            event_time_ns: 1_500_000_001,
            horizon: "1 rows",
            target: "ret",
            predicted: -0.25,
            model_updates: 3,
            partition: 2,
            offset: 41,
        });
        let r = o.predictions[0];
        assert_eq!(o.key(&r), b"BTC\"USDT");
        let v: serde_json::Value = serde_json::from_slice(o.payload(&r)).unwrap();
        assert_eq!(v["key"], "BTC\"USDT");
        assert_eq!(v["event_time"], "1970-01-01T00:00:01.500000001Z");
        // The per-day cache against chrono's own formatting, across days, leap days
        // and before 1970.
        for ns in [-1i64, -86_400_000_000_001, 951_782_399_999_999_999, 951_782_400_000_000_000, 1_742_944_020_773_674_205, 4_102_444_800_123_456_789] {
            o.push_prediction(&PredictionRef { key: "k", event_time_ns: ns, horizon: "1s", target: "y", predicted: 0.0, model_updates: 0, partition: 0, offset: 0 });
            let r = *o.predictions.last().unwrap();
            let v: serde_json::Value = serde_json::from_slice(o.payload(&r)).unwrap();
            let want = chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
            assert_eq!(v["event_time"], want.as_str(), "{ns}");
        }
        assert_eq!(v["predicted"], -0.25);
        assert_eq!(v["source_offset"], 41);
        // Every field of a payload, byte for byte, against `format!` of the same values.
        let p = PredictionRef { key: "k", event_time_ns: 1_742_944_020_073_004_005, horizon: "1s", target: "y", predicted: 1.5, model_updates: 12, partition: 3, offset: -1 };
        o.push_prediction(&p);
        let r = *o.predictions.last().unwrap();
        let want = format!(
            "{{\"key\":\"k\",\"event_time\":\"2025-03-25T23:07:00.073004005Z\",\"event_time_ns\":{},\"horizon\":\"1s\",\"target\":\"y\",\"predicted\":1.5,\"model_updates\":{},\"source_partition\":{},\"source_offset\":{}}}",
            p.event_time_ns, p.model_updates, p.partition, p.offset
        );
        assert_eq!(std::str::from_utf8(o.payload(&r)).unwrap(), want);
    }
}

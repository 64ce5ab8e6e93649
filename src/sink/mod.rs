//! Sink stage: what a processed batch emits — encoded predictions and dead letters —
//! and ([`kafka`]) how they are published.

pub mod dedupe;
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
}

/// Everything a batch produced, in record order.
#[derive(Default)]
pub struct Outputs {
    pub buf: Vec<u8>,
    pub predictions: Vec<OutRecord>,
    pub dead_letters: Vec<DeadLetter>,
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
        let b = &mut self.buf;
        let t = chrono::DateTime::from_timestamp_nanos(p.event_time_ns);
        use chrono::{Datelike, Timelike};
        // Writing into a Vec cannot fail.
        let _ = b.write_all(b"{\"key\":");
        let _ = serde_json::to_writer(&mut *b, p.key);
        // Formatted field by field: chrono's `format` re-parses its pattern per call.
        let _ = write!(
            b,
            ",\"event_time\":\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z\"",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.nanosecond()
        );
        let _ = write!(b, ",\"event_time_ns\":{},\"horizon\":", p.event_time_ns);
        let _ = serde_json::to_writer(&mut *b, p.horizon);
        let _ = b.write_all(b",\"target\":");
        let _ = serde_json::to_writer(&mut *b, p.target);
        let _ = b.write_all(b",\"predicted\":");
        let _ = serde_json::to_writer(&mut *b, &p.predicted);
        let _ = write!(
            b,
            ",\"model_updates\":{},\"source_partition\":{},\"source_offset\":{}}}",
            p.model_updates, p.partition, p.offset
        );
        let p1 = self.buf.len();
        self.predictions.push(OutRecord {
            partition: p.partition,
            offset: p.offset,
            key: (k0, k1),
            payload: (k1, p1),
            timestamp_ms: p.event_time_ns.div_euclid(1_000_000),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(v["predicted"], -0.25);
        assert_eq!(v["source_offset"], 41);
    }
}

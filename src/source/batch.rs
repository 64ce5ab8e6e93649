//! A micro-batch of one input partition being assembled: the raw bytes of every
//! record (so any later stage can dead-letter the original message), decoded when the
//! batch is processed.

use std::sync::Arc;

use super::decode::Decoder;
use super::schema::TopicSchema;
use crate::sink::DeadLetter;

/// Where a decoded row's original bytes sit in the batch arena.
#[derive(Debug, Clone, Copy)]
pub struct RawRow {
    pub offset: i64,
    pub key: Option<(usize, usize)>,
    pub payload: Option<(usize, usize)>,
    pub timestamp_ms: Option<i64>,
}

/// Records of one partition collected for the next micro-batch.
pub struct PartitionInput {
    pub partition: i32,
    pub decoder: Decoder,
    pub arena: Vec<u8>,
    /// One entry per decoded row, in offset order.
    pub rows: Vec<RawRow>,
    /// Records that failed to decode.
    pub dead: Vec<DeadLetter>,
    /// Records added but not yet decoded, in offset order.
    undecoded: Vec<RawRow>,
    /// Records received (decoded or not).
    pub messages: u64,
    pub last_offset: Option<i64>,
    /// Kafka timestamps (ms) of the records, for end-to-end latency.
    pub timestamps_ms: Vec<i64>,
}

impl PartitionInput {
    pub fn new(partition: i32, schema: Arc<TopicSchema>) -> Self {
        PartitionInput {
            partition,
            decoder: Decoder::new(schema),
            arena: Vec::new(),
            rows: Vec::new(),
            dead: Vec::new(),
            undecoded: Vec::new(),
            messages: 0,
            last_offset: None,
            timestamps_ms: Vec::new(),
        }
    }

    /// Adds one record, kept as bytes until [`PartitionInput::decode`] (which runs on
    /// the worker that processes the partition).
    pub fn push(&mut self, key: Option<&[u8]>, payload: Option<&[u8]>, offset: i64, timestamp_ms: Option<i64>) {
        self.messages += 1;
        if let Some(t) = timestamp_ms {
            self.timestamps_ms.push(t);
        }
        self.last_offset = Some(offset);
        let key = key.map(|k| self.stash(k));
        let payload = payload.map(|p| self.stash(p));
        self.undecoded.push(RawRow { offset, key, payload, timestamp_ms });
    }

    /// Decodes the records added since the last call: each into the batch, or into a
    /// dead letter with the reason.
    pub fn decode(&mut self) {
        let PartitionInput { decoder, arena, rows, dead, undecoded, partition, .. } = self;
        let bytes = |r: Option<(usize, usize)>| r.map(|(s, e)| &arena[s..e]);
        for r in undecoded.drain(..) {
            match decoder.push(bytes(r.payload), r.offset) {
                Ok(()) => rows.push(r),
                Err(e) => dead.push(DeadLetter {
                    partition: *partition,
                    offset: r.offset,
                    reason: e.reason(),
                    detail: e.to_string(),
                    key: bytes(r.key).map(<[u8]>::to_vec),
                    payload: bytes(r.payload).map(<[u8]>::to_vec),
                    timestamp_ms: r.timestamp_ms,
                }),
            }
        }
    }

    fn stash(&mut self, bytes: &[u8]) -> (usize, usize) {
        let s = self.arena.len();
        self.arena.extend_from_slice(bytes);
        (s, self.arena.len())
    }

    /// A dead letter carrying the original bytes of the decoded row at `offset`.
    pub fn dead_letter(&self, offset: i64, reason: &'static str, detail: String) -> DeadLetter {
        let row = self
            .rows
            .binary_search_by_key(&offset, |r| r.offset)
            .ok()
            .map(|i| self.rows[i]);
        let bytes = |r: Option<(usize, usize)>| r.map(|(s, e)| self.arena[s..e].to_vec());
        DeadLetter {
            partition: self.partition,
            offset,
            reason,
            detail,
            key: row.and_then(|r| bytes(r.key)),
            payload: row.and_then(|r| bytes(r.payload)),
            timestamp_ms: row.and_then(|r| r.timestamp_ms),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.messages == 0
    }

    /// Forgets the batch (after it has been processed).
    pub fn clear(&mut self) {
        self.arena.clear();
        self.rows.clear();
        self.dead.clear();
        self.undecoded.clear();
        self.messages = 0;
        self.last_offset = None;
    }

    /// Forgets the timestamps (after latency was recorded).
    pub fn clear_timestamps(&mut self) {
        self.timestamps_ms.clear();
    }
}

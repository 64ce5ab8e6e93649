//! A micro-batch of one input partition being assembled: the raw bytes of every
//! record (so any later stage can dead-letter the original message), decoded when the
//! batch is processed — by the partition's worker, or in shares of consecutive
//! records on several threads (decoding is a function of each record alone).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;

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
    /// Decoders (and results) of shares decoded on other threads; kept for reuse.
    shares: Vec<Share>,
    /// Rows the shares decoded, in offset order, ahead of any the decoder holds.
    decoded: Option<RecordBatch>,
}

/// One share of a partition's records, decoded apart: its own decoder, and what it
/// produced.
struct Share {
    decoder: Decoder,
    rows: Vec<RawRow>,
    dead: Vec<DeadLetter>,
    batch: Option<RecordBatch>,
    took: Duration,
}

/// A run of consecutive undecoded records of one partition, to be decoded on any
/// thread ([`ShareJob::run`]); [`PartitionInput::join_shares`] takes the results.
pub struct ShareJob<'a> {
    partition: i32,
    arena: &'a [u8],
    recs: &'a [RawRow],
    share: &'a mut Share,
}

impl ShareJob<'_> {
    /// Records in the run.
    pub fn len(&self) -> usize {
        self.recs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }

    /// Decodes the run: each record into the share's batch or a dead letter.
    pub fn run(self) {
        let t0 = Instant::now();
        let Share { decoder, rows, dead, batch, took } = self.share;
        for r in self.recs {
            decode_one(decoder, self.arena, *r, self.partition, rows, dead);
        }
        *batch = Some(decoder.finish());
        *took = t0.elapsed();
    }
}

/// Decodes `r` into `decoder` (its row noted in `rows`) or into a dead letter.
fn decode_one(decoder: &mut Decoder, arena: &[u8], r: RawRow, partition: i32, rows: &mut Vec<RawRow>, dead: &mut Vec<DeadLetter>) {
    let bytes = |r: Option<(usize, usize)>| r.map(|(s, e)| &arena[s..e]);
    match decoder.push(bytes(r.payload), r.offset) {
        Ok(()) => rows.push(r),
        Err(e) => dead.push(DeadLetter {
            partition,
            offset: r.offset,
            reason: e.reason(),
            detail: e.to_string(),
            key: bytes(r.key).map(<[u8]>::to_vec),
            payload: bytes(r.payload).map(<[u8]>::to_vec),
            timestamp_ms: r.timestamp_ms,
        }),
    }
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
            shares: Vec::new(),
            decoded: None,
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
        for r in undecoded.drain(..) {
            decode_one(decoder, arena, r, *partition, rows, dead);
        }
    }

    /// Records added and not yet decoded.
    pub fn undecoded(&self) -> usize {
        self.undecoded.len()
    }

    /// Splits the undecoded records into up to `n` runs of consecutive records, each
    /// decoded by a decoder of its own on whatever thread runs it. Once every job has
    /// run, [`PartitionInput::join_shares`] puts the results in place.
    pub fn share_out(&mut self, n: usize) -> Vec<ShareJob<'_>> {
        let PartitionInput { arena, undecoded, shares, partition, decoder, .. } = self;
        if undecoded.is_empty() {
            return Vec::new();
        }
        // The shares' rows go ahead of the decoder's: it must hold none yet.
        debug_assert!(decoder.is_empty(), "sharing out records after some were decoded");
        let per = undecoded.len().div_ceil(n.max(1));
        let runs = undecoded.len().div_ceil(per);
        while shares.len() < runs {
            let decoder = Decoder::new(decoder.schema().clone());
            shares.push(Share { decoder, rows: Vec::new(), dead: Vec::new(), batch: None, took: Duration::ZERO });
        }
        let arena = &arena[..];
        undecoded.chunks(per).zip(shares.iter_mut()).map(|(recs, share)| ShareJob { partition: *partition, arena, recs, share }).collect()
    }

    /// Takes what the jobs of [`PartitionInput::share_out`] decoded, in offset order,
    /// as decoded records (after any an earlier sharing decoded); returns the time
    /// they took (summed).
    pub fn join_shares(&mut self) -> Duration {
        let mut took = Duration::ZERO;
        let mut batches = Vec::new();
        for s in &mut self.shares {
            let Some(b) = s.batch.take() else { continue };
            self.rows.append(&mut s.rows);
            self.dead.append(&mut s.dead);
            batches.push(b);
            took += std::mem::take(&mut s.took);
        }
        if !batches.is_empty() {
            self.undecoded.clear();
            // Records shared out before these keep their place ahead of them.
            batches.splice(0..0, self.decoded.take());
            let schema = self.decoder.schema().arrow.clone();
            self.decoded = Some(if batches.len() == 1 {
                batches.pop().expect("one batch")
            } else {
                arrow::compute::concat_batches(&schema, &batches).expect("shares decode to the schema's columns")
            });
        }
        took
    }

    /// The decoded records as one batch (the shares' rows first, then the
    /// decoder's), leaving both empty.
    pub fn take_batch(&mut self) -> RecordBatch {
        match self.decoded.take() {
            Some(b) if self.decoder.is_empty() => b,
            Some(b) => {
                let own = self.decoder.finish();
                arrow::compute::concat_batches(&b.schema(), [&b, &own]).expect("the same schema")
            }
            None => self.decoder.finish(),
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
        self.decoded = None;
        self.messages = 0;
        self.last_offset = None;
    }

    /// Forgets the timestamps (after latency was recorded).
    pub fn clear_timestamps(&mut self) {
        self.timestamps_ms.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records decoded in shares — shared out twice, with more records added between —
    /// come out as the partition's own decoder gives them read one by one: the same
    /// batch, rows and dead letters, in offset order.
    #[test]
    fn shares_equal_decoding_in_place() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let schema = Arc::new(TopicSchema::load(&root.join("schemas/binance-ticks.json")).unwrap());
        let text = std::fs::read_to_string(root.join("data/binance_ticks_sample.jsonl")).unwrap();
        let mut lines: Vec<&str> = text.lines().take(2000).collect();
        lines[700] = "{not json";
        lines[1500] = "{\"Item\":{}}";
        let (mut shared, mut own) = (PartitionInput::new(4, schema.clone()), PartitionInput::new(4, schema));
        let run = |p: &mut PartitionInput| {
            for job in p.share_out(3) {
                job.run();
            }
            p.join_shares();
        };
        for (i, l) in lines.iter().enumerate() {
            shared.push(None, Some(l.as_bytes()), i as i64, None);
            own.push(None, Some(l.as_bytes()), i as i64, None);
            if i == 1199 {
                run(&mut shared);
            }
        }
        run(&mut shared);
        own.decode();
        assert_eq!(shared.undecoded(), 0);
        let offsets = |p: &PartitionInput| p.rows.iter().map(|r| r.offset).collect::<Vec<_>>();
        assert_eq!(offsets(&shared), offsets(&own));
        assert_eq!(shared.dead.iter().map(|d| d.offset).collect::<Vec<_>>(), [700, 1500]);
        assert_eq!(own.dead.iter().map(|d| d.offset).collect::<Vec<_>>(), [700, 1500]);
        let (a, b) = (shared.take_batch(), own.take_batch());
        assert_eq!(a.num_rows(), 1998);
        assert_eq!(a, b);
    }
}

//! Where a restored partition's consumer stands: which records to skip, accept or
//! seek back for, so processing resumes at exactly the checkpoint's offset.

use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::Offset;

use crate::error::Result;

/// Where a partition's consumer stands relative to its restored state.
///
/// After a restore the first record processed must be exactly the checkpoint's
/// offset: records before it are skipped (fetched before a seek took effect, or
/// served from the start of a broker-side batch); a record *after* it means the
/// broker did not serve the wanted offset — some brokers (Tansu) answer a fetch in
/// the middle of a record batch with the next batch — so the consumer seeks further
/// back until it sees records before the wanted one. Only a gap the broker shows
/// in context (records before, then records after: compaction, transaction markers),
/// or one at the log start, is accepted; records are never skipped on a guess.
#[derive(Debug, Clone, Copy)]
pub struct Position {
    /// The next offset the state expects.
    pub expect: i64,
    /// Until the first accepted record.
    pub exact: bool,
    seeks: u32,
    /// A record before `expect` arrived since the last seek.
    saw_before: bool,
}

/// What to do with a received message.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    Accept,
    /// Already in the state (a message fetched before a seek took effect).
    Skip,
    /// Seek the partition to this offset and skip the message.
    Seek(i64),
    /// The broker will not serve the wanted offset.
    Fail(String),
}

impl Position {
    /// Expecting offset `expect` of a partition whose log starts at `low`. At the
    /// log start nothing comes before `expect`: the first record served is the first
    /// there is (records between are compacted away or aborted transactions).
    pub fn new(expect: i64, low: i64) -> Self {
        Position { expect, exact: expect != low, seeks: 0, saw_before: false }
    }

    pub fn admit(&mut self, offset: i64) -> Admit {
        if offset < self.expect {
            self.saw_before = true;
            return Admit::Skip;
        }
        if offset > self.expect && self.exact && !self.saw_before {
            if self.seeks >= 12 {
                return Admit::Fail(format!(
                    "the broker serves offset {offset} when asked for {} (tried {} seeks); refusing to skip records",
                    self.expect, self.seeks
                ));
            }
            let back = if self.seeks == 0 { 0 } else { 256i64 << (self.seeks - 1) };
            self.seeks += 1;
            return Admit::Seek((self.expect - back).max(0));
        }
        if offset > self.expect {
            tracing::warn!(expected = self.expect, got = offset, "offsets missing from the input partition (compaction or transaction markers)");
        }
        self.exact = false;
        self.expect = offset + 1;
        Admit::Accept
    }
}

/// Seeks partition `p` of `topic` to `offset`.
pub fn seek<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(consumer: &C, topic: &str, p: i32, offset: i64) -> Result<()> {
    consumer.seek(topic, p, Offset::Offset(offset), Duration::from_secs(10))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_skips_old_seeks_back_and_never_guesses() {
        let mut p = Position::new(10, 0);
        assert_eq!(p.admit(4), Admit::Skip);
        // A record before the wanted one was seen: 12 after it is a gap in context.
        assert_eq!(p.admit(12), Admit::Accept);
        assert_eq!(p.admit(13), Admit::Accept);
        assert_eq!(p.admit(13), Admit::Skip);
        // After the first accepted record, gaps are accepted (compacted topics).
        assert_eq!(p.admit(20), Admit::Accept);

        // The broker answers with a later batch: seek at, then further back.
        let mut q = Position::new(2000, 0);
        assert_eq!(q.admit(2999), Admit::Seek(2000));
        assert_eq!(q.admit(2999), Admit::Seek(2000 - 256));
        assert_eq!(q.admit(2999), Admit::Seek(2000 - 512));
        assert_eq!(q.admit(1500), Admit::Skip);
        assert_eq!(q.admit(2000), Admit::Accept);

        // A broker that never serves it: an error, not a silent skip.
        let mut r = Position::new(5, 0);
        let mut last = Admit::Skip;
        for _ in 0..13 {
            last = r.admit(9);
        }
        assert!(matches!(last, Admit::Fail(_)), "{last:?}");
        // Nor one whose log start moved past the checkpoint (retention deleted
        // records it had not processed).
        let mut r = Position::new(5, 8);
        let mut last = Admit::Skip;
        for _ in 0..13 {
            last = r.admit(8);
        }
        assert!(matches!(last, Admit::Fail(_)), "{last:?}");
    }

    /// Read from the partition's start (a partition without a checkpoint, or a
    /// checkpoint at the log start), there is nothing before: the first record the
    /// broker serves is the first there is, even above the log start — a compacted
    /// topic keeps its start offset, and a read-committed consumer never sees a
    /// first transaction that was aborted. It used to seek for records before it
    /// until it failed, on every start.
    #[test]
    fn from_the_log_start_the_first_record_served_is_the_first() {
        for low in [0, 40] {
            let mut p = Position::new(low, low);
            assert_eq!(p.admit(low + 5), Admit::Accept, "log start {low}");
            assert_eq!(p.admit(low + 6), Admit::Accept);
            assert_eq!(p.admit(low + 6), Admit::Skip);
            assert_eq!(p.admit(low + 9), Admit::Accept);
        }
    }
}

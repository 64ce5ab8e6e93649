//! The frames topic's partitions merged back into time order: records wait per
//! partition until the next frame in time is known — every partition has one
//! queued (or, on a finite input, is at its end); live, after a 2 s wait for the
//! slowest partition — so the order of fetches never changes the result.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// A frame record read but not yet processed.
pub struct Queued {
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub payload: Vec<u8>,
}

pub struct FrameMerge {
    queues: BTreeMap<i32, VecDeque<Queued>>,
    /// Per partition, the next offset to be received.
    received: BTreeMap<i32, i64>,
    /// Per partition, the end offset at start (where a finite input stops).
    ends: BTreeMap<i32, i64>,
    waiting_since: Option<Instant>,
}

/// How long a live run waits for a partition without a queued frame.
const LIVE_WAIT: Duration = Duration::from_secs(2);

impl FrameMerge {
    /// Partitions `ends` (their end offsets at start), each read from `start`'s
    /// offset (0 where absent).
    pub fn new(ends: BTreeMap<i32, i64>, start: &BTreeMap<i32, i64>) -> Self {
        FrameMerge {
            queues: ends.keys().map(|p| (*p, VecDeque::new())).collect(),
            received: ends.keys().map(|p| (*p, start.get(p).copied().unwrap_or(0))).collect(),
            ends,
            waiting_since: None,
        }
    }

    pub fn push(&mut self, q: Queued) {
        self.received.insert(q.partition, q.offset + 1);
        self.queues.entry(q.partition).or_default().push_back(q);
    }

    /// Whether any frame is queued.
    pub fn any(&self) -> bool {
        self.queues.values().any(|q| !q.is_empty())
    }

    /// Whether every partition was read to its end offset at start.
    pub fn all_received(&self) -> bool {
        self.received.iter().all(|(p, n)| *n >= self.ends.get(p).copied().unwrap_or(0))
    }

    /// The next frame in time (ties: the lower partition) once it is known. On a
    /// finite input (`finite`) also only once `labels_done`: frames then see every
    /// label up to their time whatever order the two topics were fetched in.
    pub fn next(&mut self, finite: bool, labels_done: bool) -> Option<Queued> {
        let any = self.any();
        let complete = self.queues.iter().all(|(p, q)| !q.is_empty() || (finite && self.received[p] >= self.ends[p]));
        if any && !complete && !finite {
            self.waiting_since.get_or_insert_with(Instant::now);
        }
        let timed_out = self.waiting_since.is_some_and(|w| w.elapsed() > LIVE_WAIT);
        let ready = any && if finite { labels_done && complete } else { complete || timed_out };
        if !ready {
            return None;
        }
        self.waiting_since = None;
        let p = *self
            .queues
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .min_by_key(|(p, q)| (q.front().and_then(|f| f.timestamp_ms).unwrap_or(i64::MIN), **p))
            .map(|(p, _)| p)?;
        self.queues.get_mut(&p)?.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(partition: i32, offset: i64, t: i64) -> Queued {
        Queued { partition, offset, timestamp_ms: Some(t), payload: Vec::new() }
    }

    /// Two partitions holding interleaved times come out in time order, whichever
    /// partition's records arrive first; a finite input waits for the labels and
    /// for a partition that is not yet at its end.
    #[test]
    fn merges_partitions_into_time_order() {
        let ends = BTreeMap::from([(0, 2), (1, 2)]);
        let mut m = FrameMerge::new(ends, &BTreeMap::new());
        m.push(q(1, 0, 20));
        m.push(q(1, 1, 40));
        assert!(m.next(true, true).is_none(), "partition 0 not read yet");
        m.push(q(0, 0, 10));
        assert!(m.next(true, false).is_none(), "labels not all read");
        m.push(q(0, 1, 30));
        let order: Vec<i64> = std::iter::from_fn(|| m.next(true, true)).map(|x| x.timestamp_ms.unwrap()).collect();
        assert_eq!(order, [10, 20, 30, 40]);
        assert!(m.all_received() && !m.any());
    }
}

//! Kafka consumer setup: at-least-once settings (offsets stored only after the sink
//! acknowledged a batch), assignment or group subscription, and end-of-topic marks.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::context::SourceContext;
use crate::error::Result;
use crate::pipeline::kafka_props::{KafkaProps, Role};

/// Creates the pipeline's consumer. Auto-commit only commits offsets the pipeline
/// stored explicitly, after their outputs were delivered.
pub fn consumer(brokers: &str, group: &str) -> Result<StreamConsumer> {
    Ok(consumer_config(brokers, group).create()?)
}

/// The pipeline's consumer, reporting rebalances, errors and lag through `ctx`, with
/// the `[kafka]` properties (`props`) on top of tickflare's settings.
pub fn consumer_with(brokers: &str, group: &str, ctx: SourceContext, props: &KafkaProps) -> Result<Leaving<SourceContext>> {
    let mut c = consumer_config(brokers, group);
    c.set("statistics.interval.ms", "1000");
    Ok(Leaving::new(props.create_with(&mut c, Role::Consumer, ctx)?))
}

/// A consumer that is closed when dropped, unless librdkafka raised a fatal error on
/// it (a static member fenced by another with its `group.instance.id`): librdkafka
/// 2.12 then never finishes closing it — its main thread spins waiting for the
/// group handler to end, and the drop waits on that thread forever — so it is left
/// open instead. The run it served has failed with that error and the process is
/// on its way out.
pub struct Leaving<C: ConsumerContext + 'static>(std::mem::ManuallyDrop<StreamConsumer<C>>);

impl<C: ConsumerContext + 'static> Leaving<C> {
    pub fn new(c: StreamConsumer<C>) -> Self {
        Leaving(std::mem::ManuallyDrop::new(c))
    }
}

impl<C: ConsumerContext + 'static> std::ops::Deref for Leaving<C> {
    type Target = StreamConsumer<C>;
    fn deref(&self) -> &StreamConsumer<C> {
        &self.0
    }
}

impl<C: ConsumerContext + 'static> Drop for Leaving<C> {
    fn drop(&mut self) {
        // SAFETY: a live client handle; no error string is asked for.
        let fatal = unsafe { rdkafka::bindings::rd_kafka_fatal_error(self.0.client().native_ptr(), std::ptr::null_mut(), 0) };
        if fatal != rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            tracing::warn!(error = ?fatal, "the consumer hit a fatal error: left open (librdkafka cannot close it)");
            return;
        }
        // SAFETY: dropped once, here; `self.0` is not used after.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.0) }
    }
}

fn consumer_config(brokers: &str, group: &str) -> ClientConfig {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "5")
        .set("client.id", "tickflare")
        .clone()
}

/// Assigns every partition of `topic` from the beginning (no group protocol; used
/// where this process alone reads the topic, e.g. on the embedded broker).
pub fn assign_all<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(c: &C, topic: &str, partitions: i32) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    Ok(())
}

/// Number of partitions of `topic` according to the broker's metadata.
pub fn partition_count<K: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(c: &K, topic: &str, timeout: Duration) -> Result<i32> {
    let md = c.fetch_metadata(Some(topic), timeout)?;
    let n = md.topics().iter().find(|t| t.name() == topic).map(|t| t.partitions().len()).unwrap_or(0);
    Ok(n as i32)
}

/// High watermark (next offset to be written) of every partition of `topic`.
pub fn end_offsets<K: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(c: &K, topic: &str, timeout: Duration) -> Result<BTreeMap<i32, i64>> {
    let n = partition_count(c, topic, timeout)?;
    let mut out = BTreeMap::new();
    for p in 0..n {
        let (_, high) = c.fetch_watermarks(topic, p, timeout)?;
        out.insert(p, high);
    }
    Ok(out)
}

/// The consumer's position (next offset to hand out) in each partition of `topic`
/// where it has one.
pub fn positions<K: Consumer<X>, X: ConsumerContext>(c: &K, topic: &str) -> BTreeMap<i32, i64> {
    let Ok(list) = c.position() else { return BTreeMap::new() };
    let out = list
        .elements_for_topic(topic)
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect();
    // (The list goes before the consumer can: a live list at consumer shutdown hangs.)
    drop(list);
    out
}

/// Whether a read that must reach `ends` (per partition, the high watermark at
/// start) has: in each partition either the next offset to process (`next`) or the
/// consumer's position is there. The position counts because a partition may end
/// in offsets that hold no record — a transaction's commit marker, records
/// compacted away — which librdkafka passes over without handing anything out, so
/// no record ever brings the next offset to the watermark.
pub fn ends_reached(ends: &BTreeMap<i32, i64>, next: impl Fn(i32) -> Option<i64>, positions: &BTreeMap<i32, i64>) -> bool {
    ends.iter().all(|(&p, &high)| high <= 0 || next(p).is_some_and(|n| n >= high) || positions.get(&p).is_some_and(|&o| o >= high))
}

/// Refuses a restored partition whose next offset is past the input topic's end:
/// the topic holds fewer records than the checkpoint has read (it was deleted and
/// recreated, or this is another cluster), and reading on would skip every record
/// below that offset as already processed. A broker whose reported end lags
/// (Tansu) gets a few seconds to catch up.
pub async fn within_topic<C: Consumer<X>, X: ConsumerContext>(c: &C, topic: &str, p: i32, next: i64) -> Result<()> {
    let mut high = 0;
    for attempt in 0..5 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        high = c.fetch_watermarks(topic, p, Duration::from_secs(10)).map_err(|e| crate::error::Error::from(e).context(format!("reading the offsets of {topic}/{p}")))?.1;
        if next <= high {
            return Ok(());
        }
    }
    crate::fail!(
        Checkpoint,
        "partition {p}: the checkpoint resumes at offset {next}, but {topic}/{p} ends at {high} — the topic holds fewer records than \
         the checkpoint has read (was it deleted and recreated, or is this another cluster?); nothing was consumed. To start \
         over, use a new checkpoint location or delete this one"
    )
}

/// One message read back from a topic (tests, tools).
#[derive(Debug, Clone, PartialEq)]
pub struct ReadMessage {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub timestamp_ms: Option<i64>,
}

impl ReadMessage {
    /// An owned copy of a consumed message.
    pub fn of<M: rdkafka::message::Message>(m: &M) -> Self {
        use rdkafka::message::Headers;
        let headers = m
            .headers()
            .map(|h| h.iter().map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec())).collect())
            .unwrap_or_default();
        ReadMessage {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            headers,
            timestamp_ms: m.timestamp().to_millis(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// Reads every message of `topic` up to its current end, ordered by partition then
/// offset.
pub fn read_to_end(brokers: &str, topic: &str) -> Result<Vec<ReadMessage>> {
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::message::Message;
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "tickflare-reader")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let t = Duration::from_secs(10);
    let ends = end_offsets(&c, topic, t)?;
    let mut tpl = TopicPartitionList::new();
    for p in ends.keys() {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    drop(tpl);
    let mut out = Vec::new();
    let mut next: BTreeMap<i32, i64> = ends.keys().map(|p| (*p, 0)).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut last_error = None;
    while next.iter().any(|(p, n)| *n < ends[p]) {
        if std::time::Instant::now() > deadline {
            let why = last_error.map_or(String::new(), |e| format!(" (last consume error: {e})"));
            return Err(crate::error::Error::Internal(format!("timed out reading {topic}{why}")));
        }
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                next.insert(m.partition(), m.offset() + 1);
                out.push(ReadMessage::of(&m));
            }
            // librdkafka reports a consume error (a dropped connection: "all brokers
            // down") and recovers; the deadline bounds the wait, as in `gather`.
            Some(Err(e)) => {
                tracing::warn!(error = %e, topic, "consume error while reading to the end");
                last_error = Some(e);
            }
            None => {}
        }
    }
    out.sort_by_key(|m| (m.partition, m.offset));
    Ok(out)
}

/// A client context that keeps librdkafka's error reports (TLS handshake and SASL
/// authentication failures arrive only this way), so a failed probe can say why.
#[derive(Default)]
pub struct ErrorLog(std::sync::Mutex<Vec<String>>);

impl rdkafka::client::ClientContext for ErrorLog {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        // The first report of each kind: librdkafka repeats them per retry.
        if let Ok(mut v) = self.0.lock() {
            let kind = error.to_string();
            if !v.iter().any(|l| l.starts_with(&format!("{kind}: "))) && v.len() < 8 {
                v.push(format!("{kind}: {reason}"));
            }
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ErrorLog {}

impl ErrorLog {
    /// The distinct reports so far, joined.
    pub fn summary(&self) -> String {
        self.0.lock().map(|v| v.join("; ")).unwrap_or_default()
    }
}

/// A metadata client for `brokers` with the `[kafka]` consumer properties (the
/// producers' are resolved too, so their missing secrets are reported): what
/// `validate --brokers` probes a cluster with. Its context keeps why a connection
/// failed.
pub fn probe(brokers: &str, props: &KafkaProps) -> Result<rdkafka::consumer::BaseConsumer<ErrorLog>> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers).set("client.id", "tickflare-validate");
    props.resolved(Role::Producer)?;
    props.create_with(&mut c, Role::Consumer, ErrorLog::default())
}

/// A failed metadata request of a [`probe`], with librdkafka's reports of why.
pub fn probe_failure(c: &rdkafka::consumer::BaseConsumer<ErrorLog>, brokers: &str, e: impl std::fmt::Display) -> String {
    // The reports arrive as events, handed to the context by polling.
    for _ in 0..10 {
        if c.poll(Duration::from_millis(50)).is_none() && !c.context().summary().is_empty() {
            break;
        }
    }
    let why = c.context().summary();
    let why = if why.is_empty() { String::new() } else { format!(" — {why}") };
    format!("cannot fetch metadata from {brokers}: {e}{why}")
}

/// `what` failed, and — when a [`probe`] of `brokers` fails too — why, in
/// librdkafka's words (a refused login, an untrusted certificate): the context of a
/// client error whose own text says little ("broker transport failure"). Call it
/// only on an error (it waits for the probe).
pub fn diagnosed(brokers: &str, props: &KafkaProps, what: String) -> String {
    match diagnose(brokers, props) {
        Some(why) => format!("{what} ({why})"),
        None => what,
    }
}

/// Why `brokers` cannot be reached with `props`, from a [`probe`]'s metadata
/// request; `None` when the probe gets through.
pub fn diagnose(brokers: &str, props: &KafkaProps) -> Option<String> {
    use rdkafka::consumer::Consumer;
    let c = match probe(brokers, props) {
        Ok(c) => c,
        Err(e) => return Some(e.to_string()),
    };
    match c.fetch_metadata(None, Duration::from_secs(10)) {
        Ok(_) => None,
        Err(e) => Some(probe_failure(&c, brokers, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A partition is at its end when its next offset or the consumer's position
    /// reaches the watermark: one whose last offset is a commit marker (records to
    /// 8, the marker at 9, the watermark 10) never has a record bring the next
    /// offset past 9, but the position passes the marker.
    #[test]
    fn the_end_is_reached_by_the_next_offset_or_the_position() {
        let ends = BTreeMap::from([(0, 10), (1, 5), (2, 0)]);
        let next = |n0: i64| move |p: i32| [Some(n0), Some(5), None][p as usize];
        assert!(ends_reached(&ends, next(10), &BTreeMap::new()));
        assert!(!ends_reached(&ends, next(9), &BTreeMap::new()), "record 9 not processed, no position");
        assert!(!ends_reached(&ends, next(9), &BTreeMap::from([(0, 9)])));
        assert!(ends_reached(&ends, next(9), &BTreeMap::from([(0, 10)])), "the marker at 9 passed");
        assert!(!ends_reached(&ends, next(9), &BTreeMap::from([(1, 10)])), "another partition's position");
    }
}

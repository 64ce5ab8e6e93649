//! Kafka producer for predictions and dead letters.
//!
//! Each input partition maps to the same output partition; the producer is
//! idempotent; every message carries its source coordinates as headers. A full
//! producer queue is backpressure (wait and retry), not an error. Deliveries are
//! counted per batch by the producer's callback ([`BatchAcks`]): the run loop sends a
//! batch, works on the next one, then waits for the first batch's count to settle
//! before it stores the input offsets.

use std::time::Duration;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, FutureProducer, Producer, ProducerContext};
use rdkafka::ClientConfig;

use super::{DeadLetter, Ends, Itoa, Outputs};
use crate::pipeline::kafka_props::{KafkaProps, Role};
use crate::error::{Error, Result};

/// Header names carried by every output message.
pub const H_SOURCE_TOPIC: &str = "tickflare.source.topic";
pub const H_SOURCE_PARTITION: &str = "tickflare.source.partition";
pub const H_SOURCE_OFFSET: &str = "tickflare.source.offset";
/// Where one source record has several outputs (a frame's tracks): the output's
/// place among them, from 0.
pub const H_SOURCE_INDEX: &str = "tickflare.source.index";
/// Dead-letter headers.
pub const H_REASON: &str = "reason";
pub const H_ERROR: &str = "error";
/// On a dead letter whose payload (or key) was cut to fit the producer's
/// `message.max.bytes`: the original length.
pub const H_PAYLOAD_LENGTH: &str = "tickflare.payload.length";
pub const H_KEY_LENGTH: &str = "tickflare.key.length";

/// librdkafka's default `message.max.bytes`.
const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_000_000;

/// The largest message the producer made with `props` sends (`message.max.bytes`).
pub fn max_message_bytes(props: &KafkaProps) -> usize {
    let set = props.resolved(Role::Producer).ok().and_then(|kv| kv.into_iter().rev().find(|(k, _)| k == "message.max.bytes"));
    set.and_then(|(_, v)| v.trim().parse().ok()).unwrap_or(DEFAULT_MAX_MESSAGE_BYTES)
}

pub fn producer(brokers: &str) -> Result<FutureProducer> {
    Ok(config(brokers, None).create()?)
}

/// An idempotent producer's settings; transactional when `transactional_id` is given.
fn config(brokers: &str, transactional_id: Option<&str>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .set("queue.buffering.max.messages", "1000000")
        .set("client.id", "tickflare");
    if let Some(id) = transactional_id {
        c.set("transactional.id", id);
    }
    c
}

/// The sink's producer: a thread of its own serves its delivery reports, and
/// deliveries are counted per batch by [`Deliveries`] (no future per message).
///
/// It replaces rdkafka's `ThreadedProducer`, whose thread polls 100 ms at a time and
/// is joined on drop: stopping a pipeline waited up to 100 ms for that poll (the
/// benchmark's end-to-end time fell on 0.30 s or 0.40 s by where it was). Here the
/// thread sleeps until librdkafka signals that the producer's event queue went from
/// empty to non-empty (`rd_kafka_queue_cb_event_enable`), drains it, and sleeps again;
/// dropping wakes it at once.
pub struct SinkProducer {
    producer: Arc<BaseProducer<Deliveries>>,
    stop: Arc<AtomicBool>,
    poller: Option<std::thread::JoinHandle<()>>,
    /// The event queue the wake-up is registered on, and the thread it wakes (owned
    /// here, handed to librdkafka as the callback's opaque pointer).
    queue: *mut rdkafka::bindings::rd_kafka_queue_t,
    waker: *mut std::thread::Thread,
}

// The raw pointers are a librdkafka queue handle (thread-safe) and a `Thread` handle
// (`Send + Sync`), both released in `drop` after the callback is unregistered.
unsafe impl Send for SinkProducer {}
unsafe impl Sync for SinkProducer {}

/// Called by a librdkafka thread when the event queue becomes non-empty.
unsafe extern "C" fn wake_poller(_rk: *mut rdkafka::bindings::rd_kafka_t, opaque: *mut std::ffi::c_void) {
    // SAFETY: `opaque` is the `Thread` that `SinkProducer` keeps alive while registered.
    unsafe { (*(opaque as *const std::thread::Thread)).unpark() }
}

impl SinkProducer {
    fn new(producer: BaseProducer<Deliveries>) -> Result<Self> {
        use rdkafka::bindings as rd;
        let producer = Arc::new(producer);
        let stop = Arc::new(AtomicBool::new(false));
        // SAFETY: the client handle is valid while `producer` lives; the queue handle
        // is a new reference, destroyed in `drop`.
        let queue = unsafe { rd::rd_kafka_queue_get_main(producer.client().native_ptr()) };
        if queue.is_null() {
            return Err(Error::Internal("the sink producer has no event queue".into()));
        }
        let (p, st) = (producer.clone(), stop.clone());
        let q = queue as usize;
        let poller = std::thread::Builder::new()
            .name("sink-poll".into())
            .spawn(move || {
                let q = q as *mut rd::rd_kafka_queue_t;
                while !st.load(Ordering::Acquire) {
                    // Each zero-timeout poll serves one event; a bounded number per
                    // wake-up, then a check of `stop`.
                    for _ in 0..100_000 {
                        // SAFETY: the queue handle outlives this thread (joined first).
                        if unsafe { rd::rd_kafka_queue_length(q) } == 0 {
                            break;
                        }
                        p.poll(Duration::ZERO);
                    }
                    // Woken by the callback, by `drop`, or after a while regardless
                    // (a safety net: nothing is lost if a wake-up were missed).
                    std::thread::park_timeout(Duration::from_millis(100));
                }
            });
        let poller = match poller {
            Ok(h) => h,
            Err(e) => {
                unsafe { rd::rd_kafka_queue_destroy(queue) };
                return Err(Error::Internal(format!("starting the sink producer's polling thread: {e}")));
            }
        };
        let waker = Box::into_raw(Box::new(poller.thread().clone()));
        // SAFETY: `waker` stays valid until the callback is unregistered in `drop`.
        unsafe { rd::rd_kafka_queue_cb_event_enable(queue, Some(wake_poller), waker.cast()) };
        // Events queued before the callback was registered.
        poller.thread().unpark();
        Ok(SinkProducer { producer, stop, poller: Some(poller), queue, waker })
    }
}

impl std::ops::Deref for SinkProducer {
    type Target = BaseProducer<Deliveries>;

    fn deref(&self) -> &Self::Target {
        &self.producer
    }
}

impl Drop for SinkProducer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.poller.take() {
            h.thread().unpark();
            if h.join().is_err() {
                tracing::warn!("the sink producer's polling thread panicked");
            }
        }
        // SAFETY: unregistering takes the queue's lock, which the callback runs
        // under, so no call is in flight afterwards and `waker` can be freed.
        unsafe {
            rdkafka::bindings::rd_kafka_queue_cb_event_enable(self.queue, None, std::ptr::null_mut());
            rdkafka::bindings::rd_kafka_queue_destroy(self.queue);
            drop(Box::from_raw(self.waker));
        }
    }
}

/// An idempotent sink producer; transactional when `transactional_id` is given; the
/// `[kafka]` properties (`props`) on top.
pub fn sink_producer(brokers: &str, transactional_id: Option<&str>, props: &KafkaProps) -> Result<SinkProducer> {
    SinkProducer::new(props.create_with(&mut config(brokers, transactional_id), Role::Producer, Deliveries)?)
}

/// [`producer`] with the `[kafka]` properties on top (replaying into a real cluster).
pub fn producer_with(brokers: &str, props: &KafkaProps) -> Result<FutureProducer> {
    props.create(&mut config(brokers, None), Role::Producer)
}

/// The producer context: each delivery report lands in its batch's [`BatchAcks`].
pub struct Deliveries;

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Arc<BatchAcks>;

    fn delivery(&self, result: &DeliveryResult<'_>, acks: Arc<BatchAcks>) {
        acks.delivered(result);
    }
}

/// The deliveries of one batch: a countdown, where the messages landed (per output
/// partition, the end of the prediction and the dead-letter topic) and the first
/// failure.
pub struct BatchAcks {
    /// The prediction topic (anything else is the dead-letter topic).
    topic: String,
    pending: AtomicUsize,
    state: Mutex<(Ends, Option<KafkaError>)>,
    done: tokio::sync::Notify,
}

impl BatchAcks {
    fn new(topic: &str, messages: usize) -> Arc<Self> {
        Arc::new(BatchAcks { topic: topic.to_string(), pending: AtomicUsize::new(messages), state: Mutex::new((Ends::new(), None)), done: tokio::sync::Notify::new() })
    }

    fn delivered(&self, result: &DeliveryResult<'_>) {
        if let Ok(mut st) = self.state.lock() {
            match result {
                Ok(m) => {
                    let kind = usize::from(m.topic() != self.topic);
                    let e = st.0.entry(m.partition()).or_insert([0, 0]);
                    e[kind] = e[kind].max(m.offset() + 1);
                }
                Err((e, _)) => {
                    st.1.get_or_insert_with(|| e.clone());
                }
            }
        }
        self.settle(1);
    }

    /// `n` messages are accounted for.
    fn settle(&self, n: usize) {
        if n > 0 && self.pending.fetch_sub(n, Ordering::AcqRel) == n {
            self.done.notify_one();
        }
    }

    /// Waits until every message of the batch was acknowledged (or failed).
    pub async fn wait(&self) -> Result<Ends> {
        while self.pending.load(Ordering::Acquire) > 0 {
            self.done.notified().await;
        }
        let mut st = self.state.lock().map_err(|_| Error::Internal("delivery state poisoned".into()))?;
        match st.1.take() {
            Some(e) => Err(Error::Kafka(e)),
            None => Ok(std::mem::take(&mut st.0)),
        }
    }
}

/// rdkafka's transactional producer behind [`super::txn::Transactions`].
pub struct KafkaTransactions<'a>(pub &'a SinkProducer);

const TXN_TIMEOUT: Duration = Duration::from_secs(30);

impl super::txn::Transactions for KafkaTransactions<'_> {
    async fn begin(&mut self) -> Result<()> {
        Ok(self.0.begin_transaction()?)
    }
    async fn commit(&mut self) -> Result<()> {
        Ok(self.0.commit_transaction(TXN_TIMEOUT)?)
    }
    async fn abort(&mut self) -> Result<()> {
        Ok(self.0.abort_transaction(TXN_TIMEOUT)?)
    }
}

/// Publishes a batch's outputs.
pub struct KafkaSink {
    pub producer: SinkProducer,
    pub source_topic: String,
    pub topic: String,
    pub dead_letter_topic: String,
    /// The producer's `message.max.bytes` ([`max_message_bytes`]): dead letters are
    /// cut to fit it.
    pub max_message_bytes: usize,
}

impl KafkaSink {
    /// Enqueues every prediction and dead letter of `out` (in order); the returned
    /// [`BatchAcks`] settles as the delivery reports come in.
    pub async fn send_all(&self, out: &Outputs) -> Result<Arc<BatchAcks>> {
        let total = out.predictions.len() + out.dead_letters.len();
        let acks = BatchAcks::new(&self.topic, total);
        let mut sent = 0;
        for r in &out.predictions {
            let headers = source_headers(&self.source_topic, r.partition, r.offset, 3);
            let rec = BaseRecord::with_opaque_to(&self.topic, acks.clone())
                .partition(r.partition)
                .key(out.key(r))
                .payload(out.payload(r))
                .timestamp(r.timestamp_ms)
                .headers(headers);
            if let Err(e) = self.enqueue(rec).await {
                acks.settle(total - sent);
                return Err(e);
            }
            sent += 1;
        }
        for d in &out.dead_letters {
            let rec = dead_letter_record(&self.dead_letter_topic, &self.source_topic, d, d.partition, acks.clone(), self.max_message_bytes);
            if let Err(e) = self.enqueue(rec).await {
                acks.settle(total - sent);
                return Err(e);
            }
            sent += 1;
        }
        Ok(acks)
    }

    async fn enqueue<'a, K, P>(&self, mut rec: BaseRecord<'a, K, P, Arc<BatchAcks>>) -> Result<()>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        loop {
            match self.producer.send(rec) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((e, _)) => return Err(Error::Kafka(e)),
            }
        }
    }
}

impl super::Publish for KafkaSink {
    async fn send(&self, out: &Outputs) -> Result<super::Acks> {
        Ok(super::Acks::Kafka(self.send_all(out).await?))
    }
}

/// The dead-letter message for `d` on output `partition`: the record's original key,
/// payload and timestamp, its source coordinates, `reason` and `error` as headers.
/// A record near the size limit would not fit with the headers added, and a refused
/// send stops the run — at every restart, on the same record — so the payload, then
/// the key, is cut to fit `max_bytes` (the producer's `message.max.bytes`), with its
/// original length in a header ([`H_PAYLOAD_LENGTH`], [`H_KEY_LENGTH`]). The whole
/// record stays in the input topic, at the offset the headers give.
pub fn dead_letter_record<'a, D: rdkafka::util::IntoOpaque>(
    topic: &'a str,
    source_topic: &str,
    d: &'a DeadLetter,
    partition: i32,
    opaque: D,
    max_bytes: usize,
) -> BaseRecord<'a, [u8], [u8], D> {
    let mut headers = dead_letter_headers(source_topic, d);
    let (mut key, mut payload) = (d.key.as_deref(), d.payload.as_deref());
    // librdkafka counts a message as key + value + headers + at most 36 bytes of
    // framing (`rd_kafka_msg_max_wire_size`); a header is its name and value with
    // two length varints. Room is kept for the framing, a record batch's header
    // (61 bytes) and the two length headers this may add.
    let header_bytes: usize = headers.iter().map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len) + 10).sum();
    let mut room = max_bytes.saturating_sub(header_bytes + 36 + 61 + 2 * 64);
    for (field, name) in [(&mut key, H_KEY_LENGTH), (&mut payload, H_PAYLOAD_LENGTH)] {
        let Some(v) = *field else { continue };
        if v.len() > room {
            *field = Some(&v[..room]);
            headers = headers.insert(Header { key: name, value: Some(Itoa::default().fmt(v.len() as i64)) });
        }
        room -= field.map_or(0, <[u8]>::len);
    }
    let mut rec = BaseRecord::<[u8], [u8], D>::with_opaque_to(topic, opaque).partition(partition).headers(headers);
    if let Some(k) = key {
        rec = rec.key(k);
    }
    if let Some(p) = payload {
        rec = rec.payload(p);
    }
    if let Some(t) = d.timestamp_ms {
        rec = rec.timestamp(t);
    }
    rec
}

/// [`dead_letter_record`] for a `FutureProducer` (the solar stream's): the same
/// message, moved into the future producer's record type.
pub fn dead_letter_future_record<'a>(topic: &'a str, source_topic: &str, d: &'a DeadLetter, partition: i32, max_bytes: usize) -> rdkafka::producer::FutureRecord<'a, [u8], [u8]> {
    let r = dead_letter_record(topic, source_topic, d, partition, (), max_bytes);
    rdkafka::producer::FutureRecord { topic: r.topic, partition: r.partition, payload: r.payload, key: r.key, timestamp: r.timestamp, headers: r.headers }
}

/// Every output's headers: its source coordinates (room for `capacity` headers).
fn source_headers(topic: &str, partition: i32, offset: i64, capacity: usize) -> OwnedHeaders {
    let (mut pbuf, mut obuf) = (Itoa::default(), Itoa::default());
    OwnedHeaders::new_with_capacity(capacity)
        .insert(Header { key: H_SOURCE_TOPIC, value: Some(topic) })
        .insert(Header { key: H_SOURCE_PARTITION, value: Some(pbuf.fmt(partition as i64)) })
        .insert(Header { key: H_SOURCE_OFFSET, value: Some(obuf.fmt(offset)) })
}

/// The headers of output `index` of one source record.
pub fn indexed_source_headers(topic: &str, partition: i32, offset: i64, index: i64) -> OwnedHeaders {
    source_headers(topic, partition, offset, 4).insert(Header { key: H_SOURCE_INDEX, value: Some(Itoa::default().fmt(index)) })
}

/// A dead letter's headers: its source coordinates, `reason` and `error`.
fn dead_letter_headers(source_topic: &str, d: &DeadLetter) -> OwnedHeaders {
    source_headers(source_topic, d.partition, d.offset, 5)
        .insert(Header { key: H_REASON, value: Some(d.reason) })
        .insert(Header { key: H_ERROR, value: Some(&d.detail) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::producer::DefaultProducerContext;

    #[test]
    fn the_size_limit_is_the_producers_setting() {
        let props = |text: &str| -> KafkaProps { toml::from_str(text).unwrap() };
        assert_eq!(max_message_bytes(&props("")), 1_000_000, "librdkafka's default");
        assert_eq!(max_message_bytes(&props("[producer]\n\"message.max.bytes\" = 200000")), 200_000);
        assert_eq!(max_message_bytes(&props("\"message.max.bytes\" = \"300000\"")), 300_000);
        assert_eq!(max_message_bytes(&props("[consumer]\n\"message.max.bytes\" = 5")), 1_000_000, "the consumer's is not the producer's");
    }

    /// librdkafka itself judges the size: a producer with `message.max.bytes` =
    /// 200,000 refuses the whole dead letter of a 300,000-byte record and takes the
    /// cut one, whose payload (or key) keeps its first bytes and says how long it was.
    #[test]
    fn a_dead_letter_is_cut_to_what_the_producer_takes() {
        let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
        mock.create_topic("dlq", 1, 1).unwrap();
        let producer: BaseProducer<DefaultProducerContext> =
            ClientConfig::new().set("bootstrap.servers", mock.bootstrap_servers()).set("message.max.bytes", "200000").create().unwrap();
        let max = 200_000;
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let letter = |key: Vec<u8>, payload: Vec<u8>| DeadLetter {
            partition: 0,
            offset: 7,
            reason: "malformed_json",
            detail: "expected value at line 1 column 1".into(),
            key: Some(key),
            payload: Some(payload),
            timestamp_ms: Some(1),
        };
        let header = |r: &BaseRecord<'_, [u8], [u8], ()>, name: &str| -> Option<String> {
            r.headers.as_ref()?.iter().find(|h| h.key == name).and_then(|h| h.value).map(|v| String::from_utf8(v.to_vec()).unwrap())
        };
        for (key, payload) in [(b"BTC".to_vec(), big.clone()), (big.clone(), b"{}".to_vec())] {
            let d = letter(key.clone(), payload.clone());
            let whole = dead_letter_record("dlq", "ticks", &d, 0, (), usize::MAX);
            let refused = producer.send(whole).err().map(|(e, _)| e);
            assert_eq!(refused, Some(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)));
            let cut = dead_letter_record("dlq", "ticks", &d, 0, (), max);
            let (k, p) = (cut.key.unwrap().to_vec(), cut.payload.unwrap().to_vec());
            assert_eq!(k, key[..k.len()], "the key's first bytes");
            assert_eq!(p, payload[..p.len()], "the payload's first bytes");
            if key.len() > max {
                assert_eq!(header(&cut, H_KEY_LENGTH).as_deref(), Some("300000"));
                assert!(k.len() > 199_000 && p.is_empty(), "{} {}", k.len(), p.len());
            } else {
                assert_eq!(header(&cut, H_PAYLOAD_LENGTH).as_deref(), Some("300000"));
                assert!(header(&cut, H_KEY_LENGTH).is_none() && k.len() == 3 && p.len() > 199_000, "{}", p.len());
            }
            assert!(producer.send(cut).is_ok(), "the cut dead letter is taken");
        }
        // A dead letter that fits is left whole, with no length header.
        let d = letter(b"BTC".to_vec(), b"{\"price\":".to_vec());
        let r = dead_letter_record("dlq", "ticks", &d, 0, (), max);
        assert_eq!((r.key, r.payload), (Some(&b"BTC"[..]), Some(&b"{\"price\":"[..])));
        assert!(header(&r, H_PAYLOAD_LENGTH).is_none() && header(&r, H_KEY_LENGTH).is_none());
        producer.flush(Duration::from_secs(10)).unwrap();
    }
}

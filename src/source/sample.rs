//! Seeds a topic from a JSON-lines file: each line one message, keyed by the schema's
//! key field and placed on the partition Kafka's Java producer would choose for that
//! key (murmur2), so the same file always lands the same way — and where other
//! producers put the same keys.

use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

use crate::error::Context;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::schema::TopicSchema;

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`): the hash the Java
/// producer's default partitioner (and librdkafka's `murmur2_random`) places keyed
/// records by.
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in chunks.by_ref() {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        for (i, b) in rest.iter().enumerate().rev() {
            h ^= (*b as u32) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of `partitions` a keyed record goes to, as Kafka's Java producer
/// places it: `(murmur2(key) & 0x7fffffff) % partitions`.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

/// The text of the key field of one JSON line, if it has one.
pub fn key_of(line: &[u8], schema: &TopicSchema, key: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    super::mapping::key_text(&v, schema, key)
}

/// How seeded records are spread over partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// By the key's murmur2 hash, as Kafka's producers: all records of a key in one
    /// partition.
    ByKey,
    /// Line i to partition i mod n (spreads a few hot keys; each partition then sees
    /// its own subsequence of every key).
    RoundRobin,
}

/// Publishes each non-empty line of `lines` to `topic`, keyed by the schema's key
/// field and placed by key hash; returns the count.
pub async fn seed_lines<I: IntoIterator<Item = Vec<u8>>>(
    producer: &FutureProducer,
    topic: &str,
    partitions: i32,
    schema: &TopicSchema,
    key: &str,
    lines: I,
) -> crate::error::Result<u64> {
    seed_lines_placed(producer, topic, partitions, schema, key, lines, Placement::ByKey).await
}

/// [`seed_lines`] with a choice of placement.
pub async fn seed_lines_placed<I: IntoIterator<Item = Vec<u8>>>(
    producer: &FutureProducer,
    topic: &str,
    partitions: i32,
    schema: &TopicSchema,
    key: &str,
    lines: I,
    placement: Placement,
) -> crate::error::Result<u64> {
    seed_timed(producer, topic, partitions, schema, key, lines.into_iter().map(|l| (l, None)), placement).await
}

/// [`seed_lines_placed`] where each line may carry its Kafka timestamp (ms).
pub async fn seed_timed<I: IntoIterator<Item = (Vec<u8>, Option<i64>)>>(
    producer: &FutureProducer,
    topic: &str,
    partitions: i32,
    schema: &TopicSchema,
    key: &str,
    lines: I,
    placement: Placement,
) -> crate::error::Result<u64> {
    let mut n = 0u64;
    let mut acks = Vec::new();
    for (i, (line, ts)) in lines.into_iter().enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let k = key_of(&line, schema, key);
        let p = match placement {
            Placement::ByKey => k.as_deref().map_or(0, |k| partition_for(k.as_bytes(), partitions)),
            Placement::RoundRobin => (n % partitions as u64) as i32,
        };
        let mut rec = FutureRecord::<[u8], [u8]>::to(topic).partition(p).payload(&line[..]);
        if let Some(t) = ts {
            rec = rec.timestamp(t);
        }
        if let Some(k) = k.as_deref() {
            rec = rec.key(k.as_bytes());
        }
        acks.push(send(producer, rec, &|| format!("line {} ({} bytes)", i + 1, line.len())).await?);
        n += 1;
        if acks.len() >= 50_000 {
            for a in acks.drain(..) {
                a.await?.map_err(|(e, _)| e)?;
            }
        }
    }
    for a in acks {
        a.await?.map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(n)
}

/// How long a full producer queue may keep a record waiting before seeding gives up.
const QUEUE_FULL_LIMIT: Duration = Duration::from_secs(60);

/// Hands `rec` to the producer. A full local queue is waited out (yielding to the
/// runtime, so a shutdown can interrupt) for at most a minute; any other refusal —
/// a record larger than `message.max.bytes`, an unknown partition — is an error that
/// names the record (`what`) instead of a retry forever.
pub async fn send<'a, K: rdkafka::message::ToBytes + ?Sized, P: rdkafka::message::ToBytes + ?Sized>(
    producer: &FutureProducer,
    mut rec: FutureRecord<'a, K, P>,
    what: &dyn Fn() -> String,
) -> crate::error::Result<rdkafka::producer::DeliveryFuture> {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    let started = std::time::Instant::now();
    loop {
        match producer.send_result(rec) {
            Ok(f) => return Ok(f),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) if started.elapsed() < QUEUE_FULL_LIMIT => {
                rec = r;
                producer.poll(Duration::ZERO);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => crate::fail!(Broker, "{} could not be published: {e}", what()),
        }
    }
}

/// A producer for seeding the embedded broker: lz4-compressed batches, because the
/// broker's 5 MB per-partition retention counts stored (compressed) bytes — a file of
/// several MB of JSON fits. Consumers see the same messages either way.
pub fn seed_producer(brokers: &str) -> crate::error::Result<FutureProducer> {
    Ok(rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .set("client.id", "tickflare-seed")
        .create()?)
}

/// Reads a JSON-lines file's lines.
pub fn read_lines(path: &Path) -> crate::error::Result<Vec<Vec<u8>>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening sample {}", path.display()))?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(f).split(b'\n') {
        out.push(line?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Apache Kafka's own vectors (`UtilsTest.testMurmur2`), and the Java
    /// partitioner's choice for "foobar" over 50 partitions: (−790332482 & 0x7fffffff)
    /// = 1357151166, mod 50 = 16.
    #[test]
    fn murmur2_matches_kafkas_java_client() {
        for (key, want) in [
            (&b"21"[..], -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            (b"abc", 479_470_107),
        ] {
            assert_eq!(murmur2(key), want, "{}", String::from_utf8_lossy(key));
        }
        assert_eq!(partition_for(b"foobar", 50), 16);
    }
}

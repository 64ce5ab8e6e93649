//! The one consume loop: live runs, topic backtests and the solar tracker all take
//! their records through [`gather`], which fills the caller's micro-batch until it
//! is full, its wait runs out, no record has come for its idle time, a signal
//! arrives, or the caller closes it — the caller says what each record is worth.

use std::time::Duration;

use rdkafka::consumer::{ConsumerContext, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::Result;

/// How long and how large one micro-batch may grow.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Records taken ([`Take::Row`]) before the batch closes.
    pub max_rows: usize,
    /// The batch closes this long after it opened…
    pub wait: Duration,
    /// …or once no record has been taken for this long after the last one (none:
    /// only `wait`; zero: as soon as no further record is already waiting in the
    /// client's queue). Under load batches fill; a trickle is processed at once.
    pub idle: Option<Duration>,
}

/// What the caller did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Added to the batch: counts toward `max_rows` and restarts the idle time.
    Row,
    /// Added to the batch, which closes with it (the last record wanted).
    Last,
    /// Not part of the batch (already processed, out of range, fenced, a seek).
    Skip,
    /// Ends the batch now (the record was not taken; the caller kept what it needs).
    Close,
}

/// Why a batch closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    Full,
    /// `wait` ran out, or `idle` after the last record.
    Timeout,
    /// The shutdown switch turned on.
    Stopped,
    /// The caller returned [`Take::Close`] or [`Take::Last`].
    ByCaller,
}

/// The result of one [`gather`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gathered {
    pub rows: usize,
    pub closed: Closed,
}

/// Fills one micro-batch from `consumer`: hands every record to `take` until the
/// window closes. Consume errors are logged (librdkafka reports them and recovers)
/// and waiting goes on, except a fatal one (a static member fenced by another with
/// its `group.instance.id`, say), which ends the batch with an error, as an error
/// from `take` does.
pub async fn gather<X: ConsumerContext + 'static>(
    consumer: &StreamConsumer<X>,
    window: Window,
    mut shutdown: Option<&mut watch::Receiver<bool>>,
    mut take: impl FnMut(BorrowedMessage<'_>) -> Result<Take>,
) -> Result<Gathered> {
    let deadline = Instant::now() + window.wait;
    let mut idle_until: Option<Instant> = None;
    let mut rows = 0;
    while rows < window.max_rows {
        let until = idle_until.map_or(deadline, |i| i.min(deadline));
        let m = match next(consumer, until, shutdown.as_deref_mut()).await {
            Next::Record(m) => m,
            Next::Timeout => return Ok(Gathered { rows, closed: Closed::Timeout }),
            Next::Stopped => return Ok(Gathered { rows, closed: Closed::Stopped }),
            Next::Fatal(e) => {
                return Err(crate::error::Error::Broker(format!("the Kafka consumer hit a fatal error and will not recover (the process must restart): {e}")))
            }
        };
        match take(m)? {
            Take::Row => {
                rows += 1;
                if let Some(idle) = window.idle {
                    idle_until = Some(Instant::now() + idle);
                }
            }
            Take::Last => return Ok(Gathered { rows: rows + 1, closed: Closed::ByCaller }),
            Take::Skip => {}
            Take::Close => return Ok(Gathered { rows, closed: Closed::ByCaller }),
        }
    }
    Ok(Gathered { rows, closed: Closed::Full })
}

enum Next<'c> {
    Record(BorrowedMessage<'c>),
    Timeout,
    Stopped,
    Fatal(rdkafka::error::KafkaError),
}

/// The next record, waiting until `until` at most and returning at once when
/// `shutdown` turns on.
async fn next<'c, X: ConsumerContext + 'static>(
    consumer: &'c StreamConsumer<X>,
    until: Instant,
    shutdown: Option<&mut watch::Receiver<bool>>,
) -> Next<'c> {
    let stop = async {
        match shutdown {
            Some(rx) => crate::pipeline::wait_true(rx).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => return Next::Stopped,
            r = tokio::time::timeout_at(until, consumer.recv()) => match r {
                Err(_) => return Next::Timeout,
                Ok(Ok(m)) => return Next::Record(m),
                Ok(Err(e @ rdkafka::error::KafkaError::MessageConsumptionFatal(_))) => return Next::Fatal(e),
                Ok(Err(e)) => tracing::warn!(error = %e, "consume error"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::consumer::Consumer;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};

    /// Against librdkafka's mock cluster: a full batch, a caller's close, the idle
    /// close of a trickle and a signal — each with the rows it took.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_closes_full_by_the_caller_on_timeout_and_on_a_signal() {
        let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
        mock.create_topic("t", 1, 1).unwrap();
        let brokers = mock.bootstrap_servers();
        let producer: ThreadedProducer<DefaultProducerContext> =
            ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
        for i in 0..10 {
            producer.send(BaseRecord::<(), _>::to("t").payload(&format!("{i}"))).unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "g")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("t", 0, Offset::Beginning).unwrap();
        consumer.assign(&tpl).unwrap();
        drop(tpl);
        let long = Window { max_rows: 4, wait: Duration::from_secs(10), idle: None };
        let g = gather(&consumer, long, None, |_| Ok(Take::Row)).await.unwrap();
        assert_eq!(g, Gathered { rows: 4, closed: Closed::Full });
        // Odd payloads skipped (not counted); the caller closes at "9".
        let mut seen = Vec::new();
        let g = gather(&consumer, long, None, |m| {
            use rdkafka::Message;
            let v: u32 = std::str::from_utf8(m.payload().unwrap()).unwrap().parse().unwrap();
            seen.push(v);
            Ok(if v == 9 { Take::Close } else if v % 2 == 1 { Take::Skip } else { Take::Row })
        })
        .await
        .unwrap();
        assert_eq!(seen, [4, 5, 6, 7, 8, 9]);
        assert_eq!(g, Gathered { rows: 3, closed: Closed::ByCaller });
        // Nothing left: the idle time does not start before the first record, the
        // wait ends the batch.
        let short = Window { max_rows: 4, wait: Duration::from_millis(200), idle: Some(Duration::from_millis(1)) };
        let t0 = std::time::Instant::now();
        let g = gather(&consumer, short, None, |_| Ok(Take::Row)).await.unwrap();
        assert_eq!(g, Gathered { rows: 0, closed: Closed::Timeout });
        assert!(t0.elapsed() >= Duration::from_millis(200));
        // A signal ends a long wait at once.
        let (tx, mut rx) = watch::channel(false);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            tx.send(true).unwrap();
        });
        let t0 = std::time::Instant::now();
        let g = gather(&consumer, long, Some(&mut rx), |_| Ok(Take::Row)).await.unwrap();
        assert_eq!(g, Gathered { rows: 0, closed: Closed::Stopped });
        assert!(t0.elapsed() < Duration::from_secs(5));
        // An idle time of 0: a batch waits for its first record, takes the ones
        // already waiting and closes — long before its 10 s wait.
        for i in 10..13 {
            producer.send(BaseRecord::<(), _>::to("t").payload(&format!("{i}"))).unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        let at_once = Window { max_rows: 100, wait: Duration::from_secs(10), idle: Some(Duration::ZERO) };
        let (t0, mut got) = (std::time::Instant::now(), 0);
        while got < 3 {
            let g = gather(&consumer, at_once, None, |_| Ok(Take::Row)).await.unwrap();
            assert_eq!(g.closed, Closed::Timeout);
            assert!(g.rows >= 1, "{g:?}");
            got += g.rows;
        }
        assert_eq!(got, 3);
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        drop(consumer);
    }

    /// A fatal consumer error (a static member fenced by another with its
    /// `group.instance.id`, say) ends the batch with that error: the consumer will
    /// not recover, and waiting on would leave a process that never consumes again.
    #[test]
    fn a_fatal_consumer_error_ends_the_batch_with_it() {
        // In a thread of its own, so that the test fails rather than hangs: before,
        // the batch waited out its window, and dropping the consumer then never
        // returned (librdkafka's close after a fatal error).
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let _ = tx.send(rt.block_on(fatal_error_in_gather()));
        });
        let e = rx.recv_timeout(Duration::from_secs(60)).expect("gather and the consumer's drop return");
        assert!(e.contains("fatal"), "{e}");
    }

    async fn fatal_error_in_gather() -> String {
        let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
        mock.create_topic("t", 1, 1).unwrap();
        // Left open when dropped, as the pipelines' consumers are (closing hangs).
        let consumer = crate::source::kafka::Leaving::new(ClientConfig::new().set("bootstrap.servers", mock.bootstrap_servers()).set("group.id", "g").create::<StreamConsumer>().unwrap());
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("t", 0, Offset::Beginning).unwrap();
        consumer.assign(&tpl).unwrap();
        drop(tpl);
        let reason = std::ffi::CString::new("injected by the test").unwrap();
        // SAFETY: a live client handle and a NUL-terminated reason.
        let err = unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(consumer.client().native_ptr(), rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID, reason.as_ptr())
        };
        assert_eq!(err, rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
        let window = Window { max_rows: 10, wait: Duration::from_secs(5), idle: None };
        let e = gather(&consumer, window, None, |_| Ok(Take::Row)).await.expect_err("a fatal error ends the batch");
        drop(consumer);
        e.to_string()
    }
}

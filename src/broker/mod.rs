//! The embedded broker: librdkafka's in-process mock cluster, which speaks the Kafka
//! protocol on a loopback port (produce, fetch, consumer groups, commits).
//!
//! Its partitions keep at most 5 MB / 100,000 messages each (librdkafka's fixed mock
//! retention, counting stored batches — which is why seeding compresses them, see
//! [`crate::source::sample::seed_producer`]): older messages are deleted.
//! [`EmbeddedBroker::check_retained`] turns that into a clear error instead of
//! silently missing records.
//!
//! `tickflare broker --port N` runs one as its own process and forwards `127.0.0.1:N`
//! to it, so other processes can bootstrap from a port they chose.

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use tokio::net::{TcpListener, TcpStream};

use crate::error::Result;

/// An in-process Kafka-protocol broker. Dropping it stops it.
pub struct EmbeddedBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
    bootstrap: String,
}

impl EmbeddedBroker {
    pub fn start() -> Result<Self> {
        let cluster = MockCluster::new(1)?;
        let bootstrap = cluster.bootstrap_servers();
        Ok(EmbeddedBroker { cluster, bootstrap })
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Creates a topic (a no-op if it exists with that many partitions).
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<()> {
        self.cluster.create_topic(name, partitions, 1)?;
        Ok(())
    }
}

impl EmbeddedBroker {
    /// Fails if any partition of `topic` already dropped messages to retention.
    pub fn check_retained(&self, topic: &str) -> crate::error::Result<()> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let c: BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", &self.bootstrap).create()?;
        let t = std::time::Duration::from_secs(10);
        let n = crate::source::kafka::partition_count(&c, topic, t)?;
        for p in 0..n {
            let (low, high) = c.fetch_watermarks(topic, p, t)?;
            if low > 0 {
                crate::fail!(Config, 
                    "the embedded broker keeps at most 5 MB / 100,000 messages per partition; {topic}[{p}] already dropped {low} of {high} messages — use a smaller sample, more partitions, or a real broker"
                );
            }
        }
        Ok(())
    }
}

/// Forwards every connection accepted on `listener` to `target` until the task is
/// dropped.
pub async fn forward(listener: TcpListener, target: String) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else { continue };
        let target = target.clone();
        tokio::spawn(async move {
            match TcpStream::connect(&target).await {
                Ok(mut out) => {
                    let _ = inbound.set_nodelay(true);
                    let _ = out.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
                Err(e) => tracing::warn!(error = %e, "broker forward: cannot reach the mock cluster"),
            }
        });
    }
}

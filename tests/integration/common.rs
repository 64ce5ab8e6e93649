//! Helpers: write pipeline files, seed topics, run pipelines against a broker the
//! test owns, read topics back.

use std::path::{Path, PathBuf};

use rdkafka::producer::{FutureProducer, FutureRecord};
use tickflare::broker::EmbeddedBroker;
use tickflare::pipeline::build::{build, Built};
use tickflare::pipeline::summary::Summary;
use tickflare::pipeline::{run, RunOptions};
use tickflare::sink::kafka::producer;
use tickflare::source::kafka::{read_to_end, ReadMessage};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tickflare"))
}

/// A pipeline over the flat tick schema, 1 partition unless `partitions` says more.
pub fn flat_pipeline(dir: &Path, sql: &str, model: &str, partitions: i32) -> PathBuf {
    let schema = repo().join("schemas/flat-ticks.json");
    let text = format!(
        r#"name = "test"
[source]
brokers = "127.0.0.1:1"
topic = "in"
schema = "{}"
key = "symbol"
time = "ts"
partitions = {partitions}
max_batch_rows = 1000
max_batch_wait_ms = 50
allowed_lateness_ms = 1000
[features]
lookback_rows = 16
sql = """{sql}"""
[model]
{model}
[sink]
topic = "out"
dead_letter_topic = "dlq"
"#,
        schema.display()
    );
    let p = dir.join("pipeline.toml");
    std::fs::write(&p, text).unwrap();
    p
}

pub async fn built(path: &Path) -> Built {
    match build(path).await {
        Ok(b) => b,
        Err(p) => panic!("pipeline does not build: {p:?}"),
    }
}

/// A broker with the pipeline's three topics.
pub fn broker_for(b: &Built) -> EmbeddedBroker {
    let broker = EmbeddedBroker::start().unwrap();
    let c = &b.config;
    for t in [&c.source.topic, &c.sink.topic, &c.sink.dead_letter_topic] {
        broker.create_topic(t, c.source.partitions).unwrap();
    }
    broker
}

/// Produces `(partition, payload)` records in order and waits for the acks.
pub async fn produce(brokers: &str, topic: &str, records: &[(i32, Option<&[u8]>)]) {
    let p: FutureProducer = producer(brokers).unwrap();
    for (part, payload) in records {
        let mut r = FutureRecord::<[u8], [u8]>::to(topic).partition(*part).key(b"k".as_slice());
        if let Some(v) = payload {
            r = r.payload(*v);
        }
        p.send(r, std::time::Duration::from_secs(10)).await.unwrap();
    }
}

/// Runs the pipeline over what the input topic holds now.
pub async fn run_to_end(b: &Built, brokers: &str, batch_rows: usize) -> Summary {
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let opts = RunOptions {
        brokers: Some(brokers.to_string()),
        stop_at_end: true,
        assign: true,
        max_batch_rows: Some(batch_rows),
        group: None,
        metrics_addr: None,
        metrics_required: false,
        checkpoint_dir: None,
    };
    run(b, opts, rx).await.unwrap()
}

pub fn read(brokers: &str, topic: &str) -> Vec<ReadMessage> {
    read_to_end(brokers, topic).unwrap()
}

pub fn json(m: &ReadMessage) -> serde_json::Value {
    serde_json::from_slice(m.payload.as_deref().unwrap()).unwrap()
}

/// A flat tick as JSON.
pub fn tick(symbol: &str, ts_ms: i64, price: f64, size: f64) -> String {
    format!(r#"{{"symbol":"{symbol}","ts":{ts_ms},"price":{price},"size":{size}}}"#)
}

/// Kills the child on drop so a failing test leaves no process behind.
pub struct Child(pub std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `tickflare broker` on a free port with the market pipeline's topics (2
/// partitions each); returns the process and its bootstrap address.
pub fn broker_process() -> (Child, String) {
    broker_process_with(&["ticks:2", "tick-predictions:2", "ticks-dlq:2"])
}

/// Starts `tickflare broker` on a free port with the given `topic:partitions`.
pub fn broker_process_with(topics: &[&str]) -> (Child, String) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut args = vec!["broker", "--port", "0"];
    for t in topics {
        args.extend(["--topic", t]);
    }
    let mut child = Child(
        Command::new(bin())
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.split_whitespace().nth(4).expect("listening line").to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{line}");
    (child, addr)
}

/// A small deterministic generator, so a failing crash schedule can be replayed.
pub struct Lcg(pub u64);
impl Lcg {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

/// The crash schedule's seed: `TICKFLARE_CRASH_SEED`, else the clock (printed, so a
/// failing schedule can be rerun).
pub fn crash_seed() -> u64 {
    let seed = std::env::var("TICKFLARE_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("crash schedule seed: {seed} (rerun with TICKFLARE_CRASH_SEED={seed})");
    seed
}

/// Runs `cmd` for `wait`, then sends it `signal` (`KILL`, `TERM`); `false` when it
/// finished by itself first.
pub fn interrupt_after(cmd: &mut std::process::Command, wait: std::time::Duration, signal: &str) -> bool {
    let mut child = Child(cmd.spawn().unwrap());
    let t = std::time::Instant::now();
    while t.elapsed() < wait {
        if child.0.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::process::Command::new("kill").args([&format!("-{signal}"), &child.0.id().to_string()]).status().unwrap();
    let status = child.0.wait().unwrap();
    eprintln!("SIG{signal} after {wait:?} -> {status}");
    true
}

//! Operability: a daemon against a separate broker process, scraped over HTTP.
//! Counters must match what the run did (and what the output topic holds);
//! `/readyz` must say not-ready before the group assigned partitions, ready after.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

pub fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((code, body))
}

/// Sum of a metric's samples whose label set contains every `want` pair.
pub fn sum(body: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let (n, labels) = series.split_once('{').map_or((series, ""), |(n, l)| (n, l));
        if n != name || !want.iter().all(|(k, v)| labels.contains(&format!("{k}=\"{v}\""))) {
            continue;
        }
        *found.get_or_insert(0.0) += value.parse::<f64>().unwrap();
    }
    found
}

pub fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn metrics_match_the_run_and_readiness_follows_assignment() {
    let (_broker, kafka) = broker_process();
    let http = format!("127.0.0.1:{}", free_port());
    let daemon = Child(
        Command::new(bin())
            .current_dir(repo())
            .args(["run", "pipelines/market-ticks.toml", "--group", "metrics-test", "--brokers", &kafka, "--metrics-addr", &http])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Before the group has assigned partitions (the first join takes seconds), the
    // endpoint is up but not ready.
    let (code, body) = wait_for("the endpoint", 30, || get(&http, "/readyz"));
    assert_eq!(code, 503, "{body}");
    // (Retried only on transport errors: a loaded CI machine can be slow to answer.)
    assert_eq!(wait_for("/healthz", 30, || get(&http, "/healthz")).0, 200);
    wait_for("readiness", 60, || get(&http, "/readyz").filter(|(c, _)| *c == 200));

    let mut lines: Vec<Vec<u8>> = tickflare::source::sample::read_lines(&repo().join("data/binance_ticks_sample.jsonl"))
        .unwrap()
        .into_iter()
        .take(600)
        .collect();
    lines.insert(100, br#"{"Item": oops"#.to_vec());
    lines.insert(300, b"not json at all".to_vec());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let b = built(&repo().join("pipelines/market-ticks.toml")).await;
        let prod = tickflare::sink::kafka::producer(&kafka).unwrap();
        tickflare::source::sample::seed_lines(&prod, "ticks", 2, &b.schema, "symbol", lines).await.unwrap();
    });
    // Every record read, and every one accounted for: records are counted when their
    // batch is processed, dead letters when they are published, so wait for both.
    let body = wait_for("all 602 records", 60, || {
        let (_, b) = get(&http, "/metrics")?;
        let outs = ["tickflare_predictions_total", "tickflare_dead_letters_total", "tickflare_warmup_total", "tickflare_filtered_total"]
            .iter()
            .map(|n| sum(&b, n, &[]))
            .sum::<Option<f64>>()?;
        (sum(&b, "tickflare_records_in_total", &[])? == 602.0 && outs == 602.0).then_some(b)
    });
    let m = |name: &str, want: &[(&str, &str)]| sum(&body, name, want).unwrap_or_else(|| panic!("{name} missing"));
    let preds = m("tickflare_predictions_total", &[]);
    let dead = m("tickflare_dead_letters_total", &[]);
    assert_eq!(m("tickflare_dead_letters_total", &[("reason", "malformed_json")]), 2.0);
    assert_eq!(dead, 2.0);
    // (Trade records are counted as filtered: the feature SQL predicts at L1 updates.)
    let filtered = m("tickflare_filtered_total", &[]);
    assert!(filtered > 0.0);
    assert_eq!(602.0, preds + dead + m("tickflare_warmup_total", &[]) + filtered, "records in = predictions + dead letters + warm-up + filtered");
    assert_eq!(preds, m("tickflare_labelled_total", &[]) + m("tickflare_pending_predictions", &[]), "predictions = labelled + pending");
    assert_eq!(m("tickflare_model_updates_total", &[("model", "linear")]), m("tickflare_labelled_total", &[]));
    // The aggregation weights: one gauge per expert and partition, each a mean of
    // convex weights (so the experts' gauges of a partition sum to 1).
    let w = ["learner", "zero", "microprice"].map(|e| m("tickflare_aggregation_weight", &[("expert", e)]));
    assert!(w.iter().all(|v| *v >= 0.0), "{w:?}");
    let total = w.iter().sum::<f64>();
    assert!((total - total.round()).abs() < 1e-6 && total >= 1.0 && total <= m("tickflare_assigned_partitions", &[]), "{w:?}");
    // What the output topic holds, counted independently of the daemon.
    assert_eq!(read(&kafka, "tick-predictions").len() as f64, preds);
    assert_eq!(read(&kafka, "ticks-dlq").len() as f64, dead);
    assert_eq!(m("tickflare_end_to_end_latency_seconds_count", &[]), 602.0);
    for stage in ["decode", "features", "predict", "update", "produce"] {
        assert!(m("tickflare_stage_seconds_count", &[("stage", stage)]) > 0.0, "{stage}");
    }
    // (Over these ~2 s of ticks the mid rarely moves within the 1 s horizon, so zero
    // change — persistence of the level — may be exactly right on every label.)
    assert!(m("tickflare_rolling_mae", &[("forecaster", "model")]) >= 0.0);
    assert!(m("tickflare_rolling_mae", &[("forecaster", "persistence")]) >= 0.0);
    assert_eq!(m("tickflare_assigned_partitions", &[]), 2.0);
    assert!(m("tickflare_live_models", &[]) >= 2.0, "per-key models of the seeded symbols");
    // librdkafka statistics arrive every second; all records consumed → lag 0.
    let lag = wait_for("consumer lag", 30, || {
        let (_, b) = get(&http, "/metrics")?;
        sum(&b, "tickflare_consumer_lag", &[("topic", "ticks")])
    });
    assert_eq!(lag, 0.0);

    // Graceful stop.
    let pid = daemon.0.id() as i32;
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let mut daemon = daemon;
    let status = wait_for("exit", 30, || daemon.0.try_wait().unwrap());
    assert!(status.success());
}

pub fn scrape(http: &str, name: &str) -> Option<f64> {
    let (_, b) = get(http, "/metrics")?;
    sum(&b, name, &[])
}

/// A second daemon joins the group: the eager rebalance revokes every partition from
/// the first, which must drop its in-memory state (no checkpoints yet: a partition
/// restarts from the committed offset exactly as after a restart). So in each
/// partition the first prediction on the records seeded after the rebalance comes
/// from a fresh model (model_updates = 0), not from one that kept learning.
#[test]
fn rebalance_drops_revoked_partition_state() {
    let (_broker, kafka) = broker_process();
    let lines: Vec<Vec<u8>> = tickflare::source::sample::read_lines(&repo().join("data/binance_ticks_sample.jsonl"))
        .unwrap()
        .into_iter()
        .take(1200)
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let b = rt.block_on(built(&repo().join("pipelines/market-ticks.toml")));
    let seed = |part: &[Vec<u8>]| {
        rt.block_on(async {
            let prod = tickflare::sink::kafka::producer(&kafka).unwrap();
            tickflare::source::sample::seed_lines(&prod, "ticks", 2, &b.schema, "symbol", part.to_vec()).await.unwrap();
        })
    };
    seed(&lines[..600]);
    let daemon = |http: &str| {
        Child(
            Command::new(bin())
                .current_dir(repo())
                .args(["run", "pipelines/market-ticks.toml", "--group", "rebalance-test", "--brokers", &kafka, "--metrics-addr", http])
                // Short sessions: rebalances complete within a few heartbeats, also
                // on a machine loaded by the other group tests.
                .env("TICKFLARE_KAFKA_SESSION_TIMEOUT_MS", "6000")
                .env("TICKFLARE_KAFKA_HEARTBEAT_INTERVAL_MS", "500")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let (http_a, http_b) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let _a = daemon(&http_a);
    wait_for("A to read phase 1", 60, || (scrape(&http_a, "tickflare_records_in_total")? == 600.0).then_some(()));
    // Let auto-commit (1 s) commit phase 1 before anyone else can be assigned.
    std::thread::sleep(Duration::from_millis(2500));
    let ends: Vec<i64> = {
        let msgs = read(&kafka, "ticks");
        (0..2).map(|p| msgs.iter().filter(|m| m.partition == p).count() as i64).collect()
    };
    let _b = daemon(&http_b);
    wait_for("one partition each", 150, || {
        let (a, b) = (scrape(&http_a, "tickflare_assigned_partitions")?, scrape(&http_b, "tickflare_assigned_partitions")?);
        (a == 1.0 && b == 1.0).then_some(())
    });
    seed(&lines[600..]);
    wait_for("phase 2 read", 90, || {
        let total = scrape(&http_a, "tickflare_records_in_total").unwrap_or(0.0) + scrape(&http_b, "tickflare_records_in_total").unwrap_or(0.0);
        (total >= 1200.0).then_some(())
    });
    std::thread::sleep(Duration::from_millis(1000));
    let preds = read(&kafka, "tick-predictions");
    let mut checked = 0;
    for p in 0..2 {
        if let Some(first) = preds.iter().find(|m| m.partition == p && json(m)["source_offset"].as_i64().unwrap() >= ends[p as usize]) {
            assert_eq!(json(first)["model_updates"], 0, "partition {p}: a fresh model after the rebalance");
            checked += 1;
        }
    }
    assert!(checked >= 1, "no predictions after the rebalance");
}

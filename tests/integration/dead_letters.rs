//! Bad input: one test per kind. Each asserts the dead-letter record (original bytes,
//! reason, source offset) and that every good record around it was still predicted.

use crate::common::*;

const SQL: &str = "SELECT _offset, symbol, ts, price, ln(price) AS lp, \
    price - LAG(price, 1) OVER (PARTITION BY symbol ORDER BY _offset) AS d1 FROM ticks";
const MODEL: &str = r#"features = ["d1", "lp"]
target = "price"
horizon = 1
learning_rate = 0.001"#;

/// Ten good ticks with a bad record (or none) at offset 5. Returns predictions and
/// dead letters.
async fn run_with(bad: Option<Option<&[u8]>>) -> (Vec<serde_json::Value>, Vec<tickflare::source::kafka::ReadMessage>) {
    let dir = tempfile::tempdir().unwrap();
    let b = built(&flat_pipeline(dir.path(), SQL, MODEL, 1)).await;
    let broker = broker_for(&b);
    let bs = broker.bootstrap_servers().to_string();
    let good: Vec<String> = (0..10).map(|i| tick("A", 100_000 + i * 100, 10.0 + i as f64, 1.0)).collect();
    let mut recs: Vec<(i32, Option<&[u8]>)> = good.iter().map(|l| (0, Some(l.as_bytes()))).collect();
    if let Some(bad) = bad {
        recs.insert(5, (0, bad));
    }
    produce(&bs, "in", &recs).await;
    let s = run_to_end(&b, &bs, 4).await;
    assert_eq!(s.messages_in as usize, recs.len());
    let out: Vec<_> = read(&bs, "out").iter().map(json).collect();
    let dlq = read(&bs, "dlq");
    assert_eq!(s.dead_letters as usize, dlq.len());
    (out, dlq)
}

async fn check(bad: &[u8], reason: &str) {
    let (out, dlq) = run_with(Some(Some(bad))).await;
    assert_eq!(dlq.len(), 1, "{reason}");
    let d = &dlq[0];
    assert_eq!(d.payload.as_deref(), Some(bad), "original bytes kept");
    assert_eq!(d.header("reason"), Some(reason));
    assert_eq!(d.header("tickflare.source.offset"), Some("5"));
    assert_eq!(d.header("tickflare.source.partition"), Some("0"));
    assert!(!d.header("error").unwrap_or("").is_empty());
    // 10 good ticks; the first has no d1 (warm-up), the other 9 are predicted.
    let offsets: Vec<i64> = out.iter().map(|v| v["source_offset"].as_i64().unwrap()).collect();
    assert_eq!(offsets, vec![1, 2, 3, 4, 6, 7, 8, 9, 10], "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_stream_has_no_dead_letters() {
    let (out, dlq) = run_with(None).await;
    assert!(dlq.is_empty());
    assert_eq!(out.len(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json() {
    check(br#"{"symbol":"A","ts":100450,"price":"#, "malformed_json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_field() {
    check(br#"{"symbol":"A","ts":100450,"size":1}"#, "missing_field").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistyped_field() {
    check(br#"{"symbol":"A","ts":100450,"price":{"v":1}}"#, "wrong_type").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nan_number() {
    check(br#"{"symbol":"A","ts":100450,"price":"NaN"}"#, "non_finite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_number() {
    check(br#"{"symbol":"A","ts":100450,"price":"-Infinity"}"#, "non_finite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_payload() {
    let (out, dlq) = run_with(Some(None)).await;
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].header("reason"), Some("empty_payload"));
    assert_eq!(dlq[0].header("tickflare.source.offset"), Some("5"));
    assert_eq!(out.len(), 9);
}

/// A malformed record close to the producer's size limit (librdkafka's default
/// `message.max.bytes`, 1,000,000): its dead letter — the same bytes plus five
/// headers — would not fit, and the refused send stopped the daemon on it at every
/// start. The dead letter keeps the payload's first bytes and says how long it was;
/// the record itself stays in the input topic at the offset the headers give.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_record_at_the_size_limit_is_dead_lettered_shortened() {
    let mut bad = br#"{"symbol":"A","ts":100450,"pad":""#.to_vec();
    bad.resize(999_900, b'x');
    let (out, dlq) = run_with(Some(Some(&bad))).await;
    assert_eq!(dlq.len(), 1);
    let d = &dlq[0];
    assert_eq!(d.header("reason"), Some("malformed_json"));
    assert_eq!(d.header("tickflare.source.offset"), Some("5"));
    assert_eq!(d.header("tickflare.payload.length"), Some("999900"));
    let kept = d.payload.as_deref().unwrap();
    assert!(kept.len() < bad.len() && kept.len() > 990_000, "{} bytes kept", kept.len());
    assert_eq!(kept, &bad[..kept.len()], "the payload's first bytes");
    assert_eq!(out.len(), 9, "every good record still predicted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_than_allowed_lateness() {
    // The key's latest event time is 100400 ms; 1000 ms lateness allowed.
    check(br#"{"symbol":"A","ts":99000,"price":12.5}"#, "late").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_but_within_allowed_lateness_is_kept() {
    let bad = br#"{"symbol":"A","ts":99500,"price":12.5}"#;
    let (out, dlq) = run_with(Some(Some(bad))).await;
    assert!(dlq.is_empty());
    assert_eq!(out.len(), 10, "the out-of-order record is predicted too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_sql_gives_infinity() {
    // price 0 → ln(0) = −inf in the feature SQL.
    check(br#"{"symbol":"A","ts":100450,"price":0}"#, "non_finite_feature").await;
}

/// A record on which the feature SQL itself fails at run time (CAST of 1e19 to a
/// 64-bit integer overflows): only that record is dead-lettered, the others in its
/// batch are predicted as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_sql_fails_on_one_record() {
    let dir = tempfile::tempdir().unwrap();
    let sql = "SELECT _offset, symbol, ts, price, CAST(size * 1e9 AS BIGINT) / 1e9 AS lp, \
        price - LAG(price, 1) OVER (PARTITION BY symbol ORDER BY _offset) AS d1 FROM ticks";
    let b = built(&flat_pipeline(dir.path(), sql, MODEL, 1)).await;
    let broker = broker_for(&b);
    let bs = broker.bootstrap_servers().to_string();
    let good: Vec<String> = (0..10).map(|i| tick("A", 100_000 + i * 100, 10.0 + i as f64, 1.0)).collect();
    let bad = br#"{"symbol":"A","ts":100450,"price":12.5,"size":1e10}"#;
    let mut recs: Vec<(i32, Option<&[u8]>)> = good.iter().map(|l| (0, Some(l.as_bytes()))).collect();
    recs.insert(5, (0, Some(bad.as_slice())));
    produce(&bs, "in", &recs).await;
    let s = run_to_end(&b, &bs, 4).await;
    let dlq = read(&bs, "dlq");
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].header("reason"), Some("feature_error"));
    assert_eq!(dlq[0].header("tickflare.source.offset"), Some("5"));
    assert_eq!(dlq[0].payload.as_deref(), Some(bad.as_slice()));
    let offsets: Vec<i64> = read(&bs, "out").iter().map(|m| json(m)["source_offset"].as_i64().unwrap()).collect();
    assert_eq!(offsets, vec![1, 2, 3, 4, 6, 7, 8, 9, 10]);
    assert_eq!(s.messages_in, 11);
}

/// SGD at learning rate 10 on features ~100 diverges within a few updates. The
/// divergence guard replaces every such forecast by the baseline (persistence here:
/// the record's own price), counts it and rebuilds the model: no null, infinite or
/// absurd prediction is published, nothing is dead-lettered for it, and the run still
/// accounts for every record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diverging_model_falls_back_to_the_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let sql = "SELECT _offset, symbol, ts, price, price * 10 AS lp, \
        price - LAG(price, 1) OVER (PARTITION BY symbol ORDER BY _offset) AS d1 FROM ticks";
    let model = "features = [\"d1\", \"lp\"]\ntarget = \"price\"\nhorizon = 1\nlearning_rate = 10.0";
    let b = built(&flat_pipeline(dir.path(), sql, model, 1)).await;
    let broker = broker_for(&b);
    let bs = broker.bootstrap_servers().to_string();
    let price = |i: i64| 10.0 + (i % 7) as f64;
    let lines: Vec<String> = (0..200).map(|i| tick("A", 100_000 + i * 100, price(i), 1.0)).collect();
    let recs: Vec<(i32, Option<&[u8]>)> = lines.iter().map(|l| (0, Some(l.as_bytes()))).collect();
    produce(&bs, "in", &recs).await;
    let s = run_to_end(&b, &bs, 50).await;
    let out = read(&bs, "out");
    assert!(out.iter().all(|m| json(m)["predicted"].as_f64().is_some_and(|v| v.is_finite())), "finite predictions only");
    // Prices are 10..16: a forecast outside [0, 100] would be the blown-up model.
    assert!(out.iter().all(|m| (0.0..100.0).contains(&json(m)["predicted"].as_f64().unwrap())));
    let at_persistence = out
        .iter()
        .filter(|m| json(m)["predicted"].as_f64() == Some(price(json(m)["source_offset"].as_i64().unwrap())))
        .count();
    assert!(s.model_fallbacks > 100, "fallbacks {}", s.model_fallbacks);
    assert!(at_persistence as u64 >= s.model_fallbacks, "{at_persistence} forecasts equal persistence");
    assert_eq!(s.dead_letters, 0);
    assert_eq!(s.messages_in, s.predictions_out + s.dead_letters + s.warmup + s.filtered);
}


//! End to end through the Kafka-protocol broker: predictions equal an independent
//! SGD computation; output is byte-identical whatever the batch size.

use std::collections::HashMap;

use crate::common::*;

const SQL_DIFF: &str = "SELECT _offset, symbol, ts, price, \
    price - LAG(price, 1) OVER (PARTITION BY symbol ORDER BY _offset) AS d1, size AS x2 FROM ticks";

/// Known ticks for two symbols in one partition, one global linear model trained by
/// SGD (lr 0.05) to predict the next price change of the same symbol from
/// (d1, size). The test redoes the whole recurrence in plain f64:
///   features: d1 = price − previous price of the symbol, x2 = size;
///   on each row of symbol k with a target: every pending prediction of k due
///   (made 1 row of k earlier) is labelled with this row's d1 and the model is
///   updated once: g = 2(w·x + b − y), w ← w − lr·g·x, b ← b − lr·g;
///   then, if d1 exists, the row is predicted with ŷ = w·x + b.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predictions_match_sgd_worked_out_independently() {
    let dir = tempfile::tempdir().unwrap();
    let model = r#"kind = "linear"
optimizer = "sgd"
learning_rate = 0.05
features = ["d1", "x2"]
target = "d1"
horizon = 1
scope = "global""#;
    let b = built(&flat_pipeline(dir.path(), SQL_DIFF, model, 1)).await;
    let broker = broker_for(&b);
    let bs = broker.bootstrap_servers().to_string();
    let mut rows = Vec::new();
    for i in 0..80i64 {
        let sym = if i % 3 == 0 { "B" } else { "A" };
        let price = 100.0 + (i as f64 * 0.7).sin() * 2.0 + if sym == "B" { 50.0 } else { 0.0 };
        let size = 0.5 + (i % 5) as f64 * 0.25;
        rows.push((sym, 1_000 + i * 10, price, size));
    }
    let lines: Vec<String> = rows.iter().map(|(s, t, p, z)| tick(s, *t, *p, *z)).collect();
    let recs: Vec<(i32, Option<&[u8]>)> = lines.iter().map(|l| (0, Some(l.as_bytes()))).collect();
    produce(&bs, "in", &recs).await;
    let summary = run_to_end(&b, &bs, 13).await;

    // Independent reference.
    let lr = 0.05;
    let (mut w, mut bias) = ([0.0f64; 2], 0.0f64);
    let mut last_price: HashMap<&str, f64> = HashMap::new();
    let mut pending: HashMap<&str, Vec<[f64; 2]>> = HashMap::new();
    let mut expected = Vec::new();
    for (i, (sym, _, price, size)) in rows.iter().enumerate() {
        let d1 = last_price.get(sym).map(|p| price - p);
        last_price.insert(sym, *price);
        if let Some(y) = d1 {
            for x in pending.remove(sym).unwrap_or_default() {
                let g = 2.0 * (w[0] * x[0] + w[1] * x[1] + bias - y);
                w[0] -= lr * g * x[0];
                w[1] -= lr * g * x[1];
                bias -= lr * g;
            }
            let x = [y, *size];
            expected.push((i as i64, w[0] * x[0] + w[1] * x[1] + bias));
            pending.entry(sym).or_default().push(x);
        }
    }
    let out = read(&bs, "out");
    assert_eq!(out.len(), expected.len());
    assert_eq!(summary.predictions_out as usize, expected.len());
    assert_eq!(summary.labelled as usize, expected.len() - 2, "all but the last of each symbol");
    for (m, (off, yhat)) in out.iter().zip(&expected) {
        let v = json(m);
        assert_eq!(v["source_offset"], *off);
        assert_eq!(m.header("tickflare.source.offset"), Some(off.to_string().as_str()));
        assert_eq!(m.timestamp_ms, Some(rows[*off as usize].1), "Kafka timestamp = event time");
        let got = v["predicted"].as_f64().unwrap();
        assert!((got - yhat).abs() <= 1e-9 * (1.0 + yhat.abs()), "offset {off}: {got} vs {yhat}");
    }
    // The model learned something: later predictions are not all zero.
    assert!(expected.iter().skip(10).any(|(_, y)| y.abs() > 1e-3));
}

/// The shipped market pipeline on real Binance ticks, 3 partitions, micro-batches of
/// 1, 7 and 1000 records: predictions and dead letters must be byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_identical_for_batch_sizes_1_7_1000() {
    let b = built(&repo().join("pipelines/market-ticks.toml")).await;
    let lines: Vec<Vec<u8>> = tickflare::source::sample::read_lines(&repo().join("data/binance_ticks_sample.jsonl"))
        .unwrap()
        .into_iter()
        .take(1500)
        .collect();
    let mut outputs = Vec::new();
    for batch in [1usize, 7, 1000] {
        let broker = broker_for(&b);
        let bs = broker.bootstrap_servers().to_string();
        let prod = tickflare::sink::kafka::producer(&bs).unwrap();
        tickflare::source::sample::seed_lines(&prod, "ticks", 3, &b.schema, "symbol", lines.clone()).await.unwrap();
        let s = run_to_end(&b, &bs, batch).await;
        assert_eq!(s.messages_in, 1500);
        let out = read(&bs, "tick-predictions");
        let dlq = read(&bs, "ticks-dlq");
        assert!(out.len() > 1000, "batch {batch}: only {} predictions", out.len());
        outputs.push((batch, out, dlq));
    }
    for (batch, out, dlq) in &outputs[1..] {
        assert_eq!(out.len(), outputs[0].1.len(), "batch {batch}");
        for (a, b) in outputs[0].1.iter().zip(out) {
            assert_eq!(a, b, "batch 1 vs batch {batch}");
        }
        assert_eq!(&outputs[0].2, dlq, "dead letters, batch {batch}");
    }
}

/// Horizon as a duration: a prediction made at event time t is labelled by the first
/// later row of the same symbol with event time ≥ t + 25 ms. Ticks arrive at uneven
/// spacing, so one row may label several predictions (each one SGD step, oldest
/// first) and some rows label none. Per-key models (scope = "per_key"), lr 0.02.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_horizon_labels_by_event_time() {
    let dir = tempfile::tempdir().unwrap();
    let model = r#"kind = "linear"
optimizer = "sgd"
learning_rate = 0.02
features = ["d1", "x2"]
target = "d1"
horizon = "25ms"
scope = "per_key""#;
    let b = built(&flat_pipeline(dir.path(), SQL_DIFF, model, 1)).await;
    let broker = broker_for(&b);
    let bs = broker.bootstrap_servers().to_string();
    let gaps = [3i64, 11, 7, 19, 2, 30, 5, 5, 13, 41, 1, 8];
    let mut rows = Vec::new();
    let mut t = 10_000i64;
    for i in 0..90usize {
        t += gaps[i % gaps.len()];
        let sym = if i % 4 == 3 { "Y" } else { "X" };
        let price = 20.0 + ((i * 7919) % 13) as f64 * 0.1;
        rows.push((sym, t, price, 1.0 + (i % 3) as f64 * 0.5));
    }
    let lines: Vec<String> = rows.iter().map(|(s, t, p, z)| tick(s, *t, *p, *z)).collect();
    let recs: Vec<(i32, Option<&[u8]>)> = lines.iter().map(|l| (0, Some(l.as_bytes()))).collect();
    produce(&bs, "in", &recs).await;
    let summary = run_to_end(&b, &bs, 9).await;

    let (lr, h) = (0.02, 25i64);
    struct Key {
        w: [f64; 2],
        b: f64,
        last: Option<f64>,
        pending: Vec<(i64, [f64; 2])>,
    }
    let mut keys: HashMap<&str, Key> = HashMap::new();
    let mut expected = Vec::new();
    let mut labelled = 0;
    for (i, (sym, t, price, size)) in rows.iter().enumerate() {
        let k = keys.entry(sym).or_insert(Key { w: [0.0; 2], b: 0.0, last: None, pending: vec![] });
        let d1 = k.last.map(|p| price - p);
        k.last = Some(*price);
        let Some(y) = d1 else { continue };
        while let Some((t0, x)) = k.pending.first().copied() {
            if *t < t0 + h {
                break;
            }
            k.pending.remove(0);
            let g = 2.0 * (k.w[0] * x[0] + k.w[1] * x[1] + k.b - y);
            k.w[0] -= lr * g * x[0];
            k.w[1] -= lr * g * x[1];
            k.b -= lr * g;
            labelled += 1;
        }
        let x = [y, *size];
        expected.push((i as i64, k.w[0] * x[0] + k.w[1] * x[1] + k.b));
        k.pending.push((*t, x));
    }
    assert_eq!(summary.labelled, labelled);
    let out = read(&bs, "out");
    assert_eq!(out.len(), expected.len());
    for (m, (off, yhat)) in out.iter().zip(&expected) {
        let v = json(m);
        assert_eq!(v["source_offset"], *off);
        assert_eq!(v["horizon"], "25ms");
        let got = v["predicted"].as_f64().unwrap();
        assert!((got - yhat).abs() <= 1e-9 * (1.0 + yhat.abs()), "offset {off}: {got} vs {yhat}");
    }
}

/// A key whose value repeats every 7 rows: seasonal naive (season 7, horizon 1)
/// forecasts y[i+1] by y[i−6] and must be exact once 7 values are known, i.e. for
/// predictions at rows 6..=48 of 50 (43 labels); persistence is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seasonal_naive_baseline_is_exact_on_a_weekly_pattern() {
    let dir = tempfile::tempdir().unwrap();
    let model = r#"kind = "rls"
features = ["x"]
target = "price"
horizon = 1
season = 7"#;
    let sql = "SELECT _offset, symbol, ts, price, price AS x FROM ticks";
    let b = built(&flat_pipeline(dir.path(), sql, model, 1)).await;
    let broker = broker_for(&b);
    let bs = broker.bootstrap_servers().to_string();
    let week = [100.0, 120.0, 90.0, 95.0, 130.0, 60.0, 55.0];
    let lines: Vec<String> = (0..50).map(|i| tick("D", 86_400_000 * i as i64, week[i % 7], 1.0)).collect();
    let recs: Vec<(i32, Option<&[u8]>)> = lines.iter().map(|l| (0, Some(l.as_bytes()))).collect();
    produce(&bs, "in", &recs).await;
    let s = run_to_end(&b, &bs, 10).await;
    assert_eq!(s.labelled, 49);
    let sn = s.metrics.seasonal_naive.expect("seasonal naive reported");
    assert_eq!(sn.n, 43);
    assert_eq!(sn.mae, Some(0.0));
    assert!(s.metrics.persistence.mae.unwrap() > 10.0);
    assert_eq!(s.per_key["D"].seasonal_naive.unwrap().n, 43);
    // Fewer labels than the rolling window: the rolling metrics are the whole run's.
    assert_eq!(s.rolling.model, s.metrics.model);
    assert_eq!(s.per_key_rolling["D"].seasonal_naive, s.metrics.seasonal_naive);
}

/// Per-key models capped at 2 with keys A, B, C in turn: the first two rows build
/// models, and every later row's key has just lost its model to the cap (it is the
/// least recently used), so each of rows 3..=30 evicts exactly one: 28 evictions,
/// and never more than 2 live models.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_model_cap_evicts_least_recently_used() {
    let dir = tempfile::tempdir().unwrap();
    let model = r#"kind = "linear"
features = ["x"]
target = "price"
horizon = 1
scope = "per_key"
max_live_models = 2"#;
    let sql = "SELECT _offset, symbol, ts, price, price AS x FROM ticks";
    let b = built(&flat_pipeline(dir.path(), sql, model, 1)).await;
    let broker = broker_for(&b);
    let bs = broker.bootstrap_servers().to_string();
    let lines: Vec<String> = (0..30).map(|i| tick(["A", "B", "C"][i % 3], 1000 + i as i64, 1.0 + i as f64 * 0.01, 1.0)).collect();
    let recs: Vec<(i32, Option<&[u8]>)> = lines.iter().map(|l| (0, Some(l.as_bytes()))).collect();
    produce(&bs, "in", &recs).await;
    let s = run_to_end(&b, &bs, 7).await;
    assert_eq!(s.predictions_out, 30);
    assert_eq!(s.evictions, 28);
    assert_eq!(s.live_models, 2);
    assert_eq!(s.labelled, 27, "all but the last prediction of each key");
}

/// An LSTM over the last 5 rows of each key, through the whole pipeline: the first 4
/// complete rows of a key only fill its window (warm-up), then every row is predicted
/// and labelled by the next; the model learns (its error falls below persistence on
/// a smooth series).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lstm_over_a_window_of_rows() {
    let dir = tempfile::tempdir().unwrap();
    let model = r#"kind = "lstm"
optimizer = "adamw"
learning_rate = 0.02
window = 5
hidden = [8]
features = ["x"]
target = "x"
horizon = 1
scope = "per_key""#;
    let sql = "SELECT _offset, symbol, ts, price, price - 10 AS x FROM ticks";
    let b = built(&flat_pipeline(dir.path(), sql, model, 1)).await;
    let broker = broker_for(&b);
    let bs = broker.bootstrap_servers().to_string();
    // Two keys, each a sampled sine: persistence lags behind, a sequence model can do better.
    let lines: Vec<String> = (0..2000)
        .map(|i| {
            let k = i % 2;
            let n = (i / 2) as f64;
            tick(["S", "T"][k], 1000 + i as i64, 10.0 + (n * 0.3 + k as f64).sin(), 1.0)
        })
        .collect();
    let recs: Vec<(i32, Option<&[u8]>)> = lines.iter().map(|l| (0, Some(l.as_bytes()))).collect();
    produce(&bs, "in", &recs).await;
    let s = run_to_end(&b, &bs, 50).await;
    assert_eq!(s.warmup, 8, "4 rows per key fill the window");
    assert_eq!(s.predictions_out, 1992);
    assert_eq!(s.labelled, 1990);
    let (m, p) = (s.metrics.model.mae.unwrap(), s.metrics.persistence.mae.unwrap());
    assert!(m < p, "lstm MAE {m} vs persistence {p}");
}

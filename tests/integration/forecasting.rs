//! Forecasters beyond the bare model: baseline-relative learning, change outputs and
//! the online aggregation, checked against plain-f64 recomputations.

use std::collections::HashMap;

use crate::common::*;

const SQL: &str = "SELECT _offset, symbol, ts, price, \
    price - LAG(price, 1) OVER (PARTITION BY symbol ORDER BY _offset) AS d1, size AS x2 FROM ticks";

fn rows() -> Vec<(&'static str, i64, f64, f64)> {
    (0..80i64)
        .map(|i| {
            let sym = if i % 3 == 0 { "B" } else { "A" };
            let price = 100.0 + (i as f64 * 0.7).sin() * 2.0 + if sym == "B" { 50.0 } else { 0.0 };
            (sym, 1_000 + i * 10, price, 0.5 + (i % 5) as f64 * 0.25)
        })
        .collect()
}

async fn run(model: &str) -> (Vec<(i64, f64, u64)>, tickflare::pipeline::summary::Summary) {
    let dir = tempfile::tempdir().unwrap();
    let b = built(&flat_pipeline(dir.path(), SQL, model, 1)).await;
    let broker = broker_for(&b);
    let bs = broker.bootstrap_servers().to_string();
    let lines: Vec<String> = rows().iter().map(|(s, t, p, z)| tick(s, *t, *p, *z)).collect();
    let recs: Vec<(i32, Option<&[u8]>)> = lines.iter().map(|l| (0, Some(l.as_bytes()))).collect();
    produce(&bs, "in", &recs).await;
    let s = run_to_end(&b, &bs, 11).await;
    let out = read(&bs, "out")
        .iter()
        .map(|m| {
            let v = json(m);
            (v["source_offset"].as_i64().unwrap(), v["predicted"].as_f64().unwrap(), v["model_updates"].as_u64().unwrap())
        })
        .collect();
    (out, s)
}

/// The price level with `baseline = "persistence"`: the model learns the next change
/// and the forecast is price[t] + model. Redone in plain f64: a global linear model on
/// (d1, size), SGD lr 0.05, learning y[t+1] − price[t] when row t+1 of the key arrives.
/// Before its first update the model outputs 0, so the forecast is exactly persistence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baseline_relative_forecasts_match_a_plain_recomputation() {
    let model = "kind = \"linear\"\noptimizer = \"sgd\"\nlearning_rate = 0.05\nfeatures = [\"d1\", \"x2\"]\n\
                 target = \"price\"\nhorizon = 1\nscope = \"global\"\nbaseline = \"persistence\"";
    let (out, summary) = run(model).await;
    let lr = 0.05;
    let (mut w, mut bias) = ([0.0f64; 2], 0.0f64);
    let mut last: HashMap<&str, f64> = HashMap::new();
    let mut pending: HashMap<&str, Vec<([f64; 2], f64)>> = HashMap::new();
    let mut expected = Vec::new();
    for (i, (sym, _, price, size)) in rows().into_iter().enumerate() {
        let d1 = last.get(sym).map(|p| price - p);
        last.insert(sym, price);
        for (x, base) in pending.remove(sym).unwrap_or_default() {
            let y = price - base;
            let g = 2.0 * (w[0] * x[0] + w[1] * x[1] + bias - y);
            w[0] -= lr * g * x[0];
            w[1] -= lr * g * x[1];
            bias -= lr * g;
        }
        if let Some(d1) = d1 {
            let x = [d1, size];
            expected.push((i as i64, price + w[0] * x[0] + w[1] * x[1] + bias, price));
            pending.entry(sym).or_default().push((x, price));
        }
    }
    assert_eq!(out.len(), expected.len());
    assert_eq!(summary.model_fallbacks, 0);
    let mut untrained = 0;
    for ((off, got, updates), (want_off, want, persistence)) in out.iter().zip(&expected) {
        assert_eq!(off, want_off);
        assert!((got - want).abs() <= 1e-9 * want.abs(), "offset {off}: {got} vs {want}");
        if *updates == 0 {
            assert_eq!(got.to_bits(), persistence.to_bits(), "an untrained model forecasts exactly the baseline");
            untrained += 1;
        }
    }
    assert!(untrained >= 1);
    assert!(out.iter().skip(10).any(|(off, got, _)| (got - rows()[*off as usize].2).abs() > 1e-6), "the model moved off the baseline");
}

/// `baseline = "seasonal"` (season 4 rows of the key, horizon 3 rows): an untrained
/// model forecasts the seasonal-naive value y[t+3−4] = y[t−1] once a season of history
/// exists, and persistence before that. (A key's first label arrives 3 rows after its
/// first forecast, so its first three forecasts are untrained.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrained_seasonal_baseline_model_forecasts_seasonal_naive() {
    // learning_rate is tiny, but any update moves the model: check rows before one.
    let model = "kind = \"linear\"\noptimizer = \"sgd\"\nlearning_rate = 0.01\nfeatures = [\"d1\", \"x2\"]\n\
                 target = \"price\"\nhorizon = 3\nscope = \"per_key\"\nseason = 4\nbaseline = \"seasonal\"";
    let (out, _) = run(model).await;
    let rows = rows();
    let mut hist: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut want: HashMap<i64, f64> = HashMap::new();
    for (i, (sym, _, price, _)) in rows.iter().enumerate() {
        let h = hist.entry(sym).or_default();
        h.push(*price);
        // After pushing y[t]: y[t+3−4] = y[t−1], the second newest.
        want.insert(i as i64, if h.len() >= 4 { h[h.len() - 2] } else { *price });
    }
    let fresh: Vec<_> = out.iter().filter(|(_, _, u)| *u == 0).collect();
    assert_eq!(fresh.len(), 6, "three per key");
    let seasonal = fresh.iter().filter(|(off, _, _)| want[off] != rows[*off as usize].2).count();
    assert_eq!(seasonal, 2, "the third untrained forecast of each key has a season of history");
    for (off, got, _) in fresh {
        assert_eq!(got.to_bits(), want[off].to_bits(), "offset {off}");
    }
}

/// Aggregation of a model that cannot learn the level (baseline none, learning rate
/// ~0: it forecasts ≈ 0 for prices ≈ 100) with persistence: ML-Poly must move nearly
/// all weight to persistence, so late forecasts are within 1 % of persistence, and
/// the summary reports the weights and the learner's own (terrible) error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregation_follows_the_better_expert() {
    let model = "kind = \"linear\"\noptimizer = \"sgd\"\nlearning_rate = 1e-9\nfeatures = [\"d1\", \"x2\"]\n\
                 target = \"price\"\nhorizon = 1\nscope = \"per_key\"\nguard = 0\naggregate = \"mlpoly\"\nexperts = [\"model\", \"persistence\"]";
    let (out, s) = run(model).await;
    let rows = rows();
    let late: Vec<_> = out.iter().skip(40).collect();
    assert!(late.iter().all(|(off, got, _)| (got - rows[*off as usize].2).abs() < 0.01 * rows[*off as usize].2), "{late:?}");
    assert!(s.weights["persistence"] > 0.95, "{:?}", s.weights);
    let learner = s.metrics.experts["learner"].mae.unwrap();
    let published = s.metrics.model.mae.unwrap();
    let persistence = s.metrics.persistence.mae.unwrap();
    assert!(learner > 50.0, "the learner alone forecasts ~0: MAE {learner}");
    assert!(published < 0.2 * learner && published < 10.0 * persistence, "published {published}, persistence {persistence}");
}

/// Expert and baseline names are checked against the feature SQL's output when the
/// pipeline is built (so `validate` reports them), each under its own config key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_experts_and_baselines_are_config_problems() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, key, words) in [
        ("aggregate = \"mlpoly\"\nexperts = [\"model\", \"nope\"]", "model.experts", "\"nope\""),
        ("aggregate = \"mlpoly\"\nexperts = [\"persistence\", \"zero\"]", "model.experts", "must include \"model\""),
        ("baseline = \"nope\"", "model.baseline", "\"nope\""),
        ("baseline = \"seasonal\"", "model.baseline", "needs model.season"),
    ] {
        let model = format!("features = [\"d1\", \"x2\"]\ntarget = \"price\"\nhorizon = 1\n{extra}");
        let probs = tickflare::pipeline::build::build(&flat_pipeline(dir.path(), SQL, &model, 1)).await.err().expect(extra);
        assert!(probs.iter().any(|p| p.at == key && p.message.contains(words)), "{extra}: {probs:?}");
    }
}

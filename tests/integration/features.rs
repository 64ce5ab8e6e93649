//! Feature SQL: window results against direct computation, and look-back that makes
//! split batches give the same bits as one batch.

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type};
use tickflare::features::{lookback::retain_last_per_key, FeatureEngine};
use tickflare::source::decode::Decoder;
use tickflare::source::schema::TopicSchema;

use crate::common::*;

const SQL: &str = "SELECT _offset, symbol, ts, price, \
  LAG(price, 2) OVER (PARTITION BY symbol ORDER BY _offset) AS lag2, \
  AVG(price) OVER (PARTITION BY symbol ORDER BY _offset ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS ma4, \
  STDDEV(price) OVER (PARTITION BY symbol ORDER BY _offset ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS sd4, \
  ln(price / LAG(price, 1) OVER (PARTITION BY symbol ORDER BY _offset)) AS ret \
  FROM ticks";

fn schema() -> Arc<TopicSchema> {
    Arc::new(TopicSchema::load(&repo().join("schemas/flat-ticks.json")).unwrap())
}

fn prices() -> Vec<(&'static str, f64)> {
    (0..40)
        .map(|i| (if i % 4 == 1 { "B" } else { "A" }, 10.0 + ((i * 37) % 11) as f64 * 0.1 + i as f64 * 0.013))
        .collect()
}

fn decode(rows: &[(&str, f64)], first_offset: i64) -> RecordBatch {
    let mut d = Decoder::new(schema());
    for (i, (s, p)) in rows.iter().enumerate() {
        let o = first_offset + i as i64;
        d.push(Some(tick(s, o * 1000, *p, 1.0).as_bytes()), o).unwrap();
    }
    d.finish()
}

fn col(b: &RecordBatch, name: &str) -> Vec<Option<f64>> {
    let c = b.column_by_name(name).unwrap().as_primitive::<Float64Type>();
    (0..c.len()).map(|i| c.is_valid(i).then(|| c.value(i))).collect()
}

#[tokio::test]
async fn windows_match_direct_computation() {
    let rows = prices();
    let e = FeatureEngine::plan(SQL, "ticks", schema().arrow.clone()).await.unwrap();
    let out = e.compute(None, &decode(&rows, 0)).await.unwrap();
    assert_eq!(out.num_rows(), rows.len());
    let offs = out.column_by_name("_offset").unwrap().as_primitive::<Int64Type>();
    assert!(offs.values().iter().enumerate().all(|(i, o)| *o == i as i64), "rows in offset order");
    let (lag2, ma4, sd4, ret) = (col(&out, "lag2"), col(&out, "ma4"), col(&out, "sd4"), col(&out, "ret"));
    for (i, (sym, p)) in rows.iter().enumerate() {
        // The symbol's history up to and including row i, computed directly.
        let hist: Vec<f64> = rows[..=i].iter().filter(|(s, _)| s == sym).map(|(_, p)| *p).collect();
        let n = hist.len();
        let want_lag2 = (n >= 3).then(|| hist[n - 3]);
        assert_eq!(lag2[i], want_lag2, "lag2 row {i}");
        let win = &hist[n.saturating_sub(4)..];
        let mean = win.iter().sum::<f64>() / win.len() as f64;
        assert!((ma4[i].unwrap() - mean).abs() < 1e-12, "ma4 row {i}");
        if win.len() >= 2 {
            let var = win.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (win.len() - 1) as f64;
            assert!((sd4[i].unwrap() - var.sqrt()).abs() < 1e-12, "sd4 row {i}");
        } else {
            assert_eq!(sd4[i], None);
        }
        let want_ret = (n >= 2).then(|| (p / hist[n - 2]).ln());
        match (ret[i], want_ret) {
            (Some(a), Some(b)) => assert!((a - b).abs() < 1e-15),
            (a, b) => assert_eq!(a, b),
        }
    }
}

/// Splitting the same rows into batches of 1, 3 and 7 with the per-key look-back gives
/// exactly the bits of one batch.
#[tokio::test]
async fn lookback_makes_batches_bit_identical() {
    let rows = prices();
    let e = FeatureEngine::plan(SQL, "ticks", schema().arrow.clone()).await.unwrap();
    let whole = e.compute(None, &decode(&rows, 0)).await.unwrap();
    for size in [1usize, 3, 7] {
        let mut history = None;
        let mut parts = Vec::new();
        for (k, chunk) in rows.chunks(size).enumerate() {
            let batch = decode(chunk, (k * size) as i64);
            parts.push(e.compute(history.as_ref(), &batch).await.unwrap());
            history = Some(retain_last_per_key(history.as_ref(), &batch, 0, 5).unwrap());
        }
        let split = arrow::compute::concat_batches(&whole.schema(), &parts).unwrap();
        assert_eq!(split, whole, "batch size {size}");
    }
}

//! `backtest`: parity with a live run, time-range boundaries, several models in one
//! pass, determinism, and the report's numbers against a hand computation.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::common::{bin, broker_process_with, json, read, repo};

const SAMPLE: &str = "data/eurusd_1h_2017_q1.csv";

fn tickflare(args: &[&str]) -> String {
    let out = Command::new(bin()).current_dir(repo()).args(args).output().unwrap();
    assert!(out.status.success(), "tickflare {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn report(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap()
}

/// The shipped sample's (time ms, close) rows, read here independently of tickflare
/// (chrono for the `dd.mm.yyyy HH:MM:SS.mmm` times).
fn sample_rows() -> Vec<(i64, f64)> {
    let text = std::fs::read_to_string(repo().join(SAMPLE)).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            let t = chrono::NaiveDateTime::parse_from_str(c[0], "%d.%m.%Y %H:%M:%S%.3f").unwrap().and_utc().timestamp_millis();
            (t, c[4].parse().unwrap())
        })
        .collect()
}

/// Backtest = live: the sample replayed into a broker process, run live (`run`) and
/// backtested from the same topic, gives byte-identical prediction messages (key,
/// payload, timestamp) in the live and the shadow topic; the file mode (embedded
/// broker) reports the same metrics; the same backtest twice writes the same
/// report.json; and the report's persistence MAE equals the one computed here by hand
/// from the CSV.
#[test]
fn backtest_equals_live_and_is_deterministic() {
    let (_broker, addr) = broker_process_with(&[
        "bars:1",
        "bar-forecasts:1",
        "bars-dlq:1",
        "bar-forecasts.backtest:1",
        "bars-dlq.backtest:1",
        "bar-forecasts.backtest.linear_nlms:1",
        "bars-dlq.backtest.linear_nlms:1",
        "bar-forecasts.backtest.rls_alone:1",
        "bars-dlq.backtest.rls_alone:1",
        "bar-forecasts.again:1",
        "bars-dlq.again:1",
        "bar-forecasts.again.linear_nlms:1",
        "bars-dlq.again.linear_nlms:1",
        "bar-forecasts.again.rls_alone:1",
        "bars-dlq.again.rls_alone:1",
    ]);
    tickflare(&["replay", SAMPLE, "--pipeline", "pipelines/market-bars.toml", "--brokers", &addr]);
    tickflare(&["run", "pipelines/market-bars.toml", "--brokers", &addr, "--stop-at-end", "--assign", "--metrics-addr", "off"]);
    let dir = tempfile::tempdir().unwrap();
    let (topic_dir, file_dir, again_dir) = (dir.path().join("topic"), dir.path().join("file"), dir.path().join("again"));
    tickflare(&["backtest", "pipelines/market-bars.toml", "--brokers", &addr, "--report", topic_dir.to_str().unwrap()]);
    let live = read(&addr, "bar-forecasts");
    let shadow = read(&addr, "bar-forecasts.backtest");
    let rows = sample_rows();
    // Every row but the 3 of warm-up (d3 needs three earlier closes) is predicted.
    assert_eq!(live.len(), rows.len() - 3);
    assert_eq!(live.len(), shadow.len());
    for (a, b) in live.iter().zip(&shadow) {
        assert_eq!((&a.key, &a.payload, a.timestamp_ms), (&b.key, &b.payload, b.timestamp_ms));
    }
    assert_eq!(json(&live[0])["event_time_ns"], Value::from(rows[3].0 * 1_000_000));
    // The compare lane wrote its own shadow topic, with other predictions.
    let other = read(&addr, "bar-forecasts.backtest.linear_nlms");
    assert_eq!(other.len(), shadow.len());
    assert_ne!(json(&other[10])["predicted"], json(&shadow[10])["predicted"]);
    // A second backtest refuses to append to the shadow topics it already filled.
    let again = Command::new(bin()).current_dir(repo()).args(["backtest", "pipelines/market-bars.toml", "--brokers", &addr, "--report", again_dir.to_str().unwrap()]).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds records"), "{}", String::from_utf8_lossy(&again.stderr));
    // The same backtest into fresh shadow topics writes the same messages.
    tickflare(&["backtest", "pipelines/market-bars.toml", "--brokers", &addr, "--shadow-suffix", "again", "--report", again_dir.to_str().unwrap()]);
    for (a, b) in [
        ("bar-forecasts.backtest", "bar-forecasts.again"),
        ("bar-forecasts.backtest.linear_nlms", "bar-forecasts.again.linear_nlms"),
        ("bar-forecasts.backtest.rls_alone", "bar-forecasts.again.rls_alone"),
    ] {
        let (x, y) = (read(&addr, a), read(&addr, b));
        assert_eq!(x.len(), y.len());
        assert!(x.iter().zip(&y).all(|(m, n)| (&m.key, &m.payload, m.timestamp_ms) == (&n.key, &n.payload, n.timestamp_ms)), "{a} vs {b}");
    }

    let file2 = dir.path().join("file2");
    for d in [&file_dir, &file2] {
        tickflare(&["backtest", "pipelines/market-bars.toml", "--input", SAMPLE, "--report", d.to_str().unwrap()]);
    }
    for f in ["report.json", "predictions.png", "rolling_error.png", "residuals.png"] {
        assert!(std::fs::read(file_dir.join(f)).unwrap() == std::fs::read(file2.join(f)).unwrap(), "the same backtest twice wrote two different {f}");
    }
    let (t, f) = (report(&topic_dir), report(&file_dir));
    assert_eq!(t["models"], f["models"], "topic and file backtests disagree");
    assert_eq!(f["models"][0]["name"], "base");
    assert_eq!(f["models"][1]["name"], "linear_nlms");
    assert_eq!(f["models"][2]["name"], "rls_alone");

    // Persistence by hand: the prediction made at row i (i ≥ 3) is labelled by row
    // i+1; persistence forecasts close_i.
    let errs: Vec<f64> = (3..rows.len() - 1).map(|i| (rows[i + 1].1 - rows[i].1).abs()).collect();
    let mae = errs.iter().sum::<f64>() / errs.len() as f64;
    let m = &f["models"][0]["metrics"]["persistence"];
    assert_eq!(m["n"], Value::from(errs.len()));
    assert!((m["mae"].as_f64().unwrap() - mae).abs() < 1e-12, "{} vs {mae}", m["mae"]);
    // The walk-forward rows split the labels by month of the label time.
    let periods = f["models"][0]["periods"].as_array().unwrap();
    assert_eq!(f["period"], "week");
    let total: u64 = periods.iter().map(|p| p["model"]["n"].as_u64().unwrap()).sum();
    assert_eq!(total as usize, errs.len());
}

/// `--from` is inclusive and `--to` exclusive, by event time; records outside are
/// read but neither fed nor scored. The sample has bars exactly at both boundaries,
/// so an off-by-one on either side changes the counts checked here.
#[test]
fn time_range_boundaries() {
    let rows = sample_rows();
    let from = chrono::DateTime::parse_from_rfc3339("2017-02-01T00:00:00Z").unwrap().timestamp_millis();
    let to = chrono::DateTime::parse_from_rfc3339("2017-03-01T00:00:00Z").unwrap().timestamp_millis();
    assert!(rows.iter().any(|r| r.0 == from) && rows.iter().any(|r| r.0 == to), "the sample has bars at both boundaries");
    let inside = rows.iter().filter(|r| r.0 >= from && r.0 < to).count();
    let before = rows.iter().filter(|r| r.0 < from).count();
    let dir = tempfile::tempdir().unwrap();
    tickflare(&["backtest", "pipelines/market-bars.toml", "--input", SAMPLE, "--from", "2017-02-01", "--to", "2017-03-01T00:00:00Z", "--report", dir.path().to_str().unwrap()]);
    let r = report(dir.path());
    assert_eq!(r["records_in_range"], Value::from(inside));
    assert_eq!(r["records_before_range"], Value::from(before));
    assert_eq!(r["records_after_range"], Value::from(rows.len() - inside - before));
    let m = &r["models"][0];
    assert_eq!(m["messages_in"], Value::from(inside));
    // Warm-up restarts at the range: 3 rows; the last prediction waits for a label.
    assert_eq!(m["labelled"], Value::from(inside - 4));
    let periods: Vec<&str> = m["periods"].as_array().unwrap().iter().map(|p| p["period"].as_str().unwrap()).collect();
    // 2017-02-01 is the Wednesday of ISO week 5, 2017-02-28 the Tuesday of week 9.
    assert_eq!(periods, ["2017-W05", "2017-W06", "2017-W07", "2017-W08", "2017-W09"]);
    // Persistence over the range by hand: rows in range, from the 4th, labelled by the next.
    let inr: Vec<f64> = rows.iter().filter(|r| r.0 >= from && r.0 < to).map(|r| r.1).collect();
    let mae = (3..inr.len() - 1).map(|i| (inr[i + 1] - inr[i]).abs()).sum::<f64>() / (inr.len() - 4) as f64;
    assert!((m["metrics"]["persistence"]["mae"].as_f64().unwrap() - mae).abs() < 1e-12);
}

/// Several models in one pass are independent lanes: a `--model` file identical to
/// the pipeline's `[[compare]]` entry gives identical metrics; the report has the
/// three files, the page embeds every plot and fetches nothing.
#[test]
fn several_models_in_one_pass_and_the_report_files() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("again.toml");
    std::fs::write(&model, "[model]\nname = \"again\"\nkind = \"linear\"\noptimizer = \"nlms\"\nlearning_rate = 0.05\nnormalize = true\n").unwrap();
    let out = dir.path().join("report");
    tickflare(&["backtest", "pipelines/market-bars.toml", "--input", SAMPLE, "--model", model.to_str().unwrap(), "--report", out.to_str().unwrap()]);
    let r = report(&out);
    let names: Vec<&str> = r["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["base", "linear_nlms", "rls_alone", "again"]);
    assert_eq!(r["models"][1]["metrics"], r["models"][3]["metrics"]);
    assert_eq!(r["models"][1]["periods"], r["models"][3]["periods"]);
    assert_ne!(r["models"][0]["metrics"]["model"], r["models"][1]["metrics"]["model"]);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let plots: Vec<&str> = r["plots"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert!(plots.contains(&"predictions.png") && plots.contains(&"rolling_error.png") && plots.contains(&"residuals.png"), "{plots:?}");
    // The base lane aggregates: its weights are in the report and drawn over time.
    assert!(plots.contains(&"weights.png"), "{plots:?}");
    let w = r["models"][0]["weights"].as_object().unwrap();
    assert_eq!(w.keys().collect::<Vec<_>>(), ["learner", "persistence"]);
    assert!(r["models"][2]["weights"].is_null(), "rls_alone does not aggregate");
    assert_eq!(html.matches("src=\"data:image/png;base64,").count(), plots.len());
    assert!(!html.contains("http://") && !html.contains("https://"));
    for p in plots {
        let png = std::fs::read(out.join(p)).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{p}");
        // IHDR width, big-endian at byte 16.
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 1200, "{p}");
    }
}

/// The acceptance files: S&P 500 daily (gzip'd CSV) and US births (CSV whose date is
/// three columns) backtest through the shipped pipelines' file mappings; every row
/// is read and none is a dead letter.
#[test]
fn shipped_real_files_backtest() {
    let sp = repo().join("../shared/data/market/sp500_daily_1999_2018.csv.gz");
    let births = repo().join("../shared/data/demand/us_births_daily_2000_2014.csv");
    if !sp.exists() || !births.exists() {
        eprintln!("skipping: ../shared/data not present");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (pipeline, file, rows, key) in [
        ("pipelines/market-bars.toml", &sp, 5031, "sp500_daily_1999_2018"),
        ("pipelines/daily-demand.toml", &births, 5479, "us_births_daily_2000_2014"),
    ] {
        let out = dir.path().join(key);
        tickflare(&["backtest", pipeline, "--input", file.to_str().unwrap(), "--report", out.to_str().unwrap()]);
        let r = report(&out);
        let m = &r["models"][0];
        assert_eq!(m["messages_in"], Value::from(rows), "{key}");
        assert_eq!(m["dead_letters"], Value::from(0), "{key}: {}", m["dead_letters_by_reason"]);
        assert!(m["per_key"].get(key).is_some(), "{key}: {}", m["per_key"]);
        assert_eq!(r["period"], "year", "{key}");
    }
}

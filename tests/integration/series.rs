//! `[series]` (`pipelines/series.toml`): any file's column forecast with no per-file
//! settings — the frequency detected on the shipped files, and backtests, runs and
//! replays whose counts and baseline errors are worked out here from the input.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use tickflare::pipeline::build::{build_with, BuildOptions};
use tickflare::pipeline::series::{SeriesOptions, SeriesPlan};

use crate::common::{bin, broker_process_with, json, read, repo};

const PIPELINE: &str = "pipelines/series.toml";
const SAMPLE: &str = "data/eurusd_1h_2017_q1.csv";

fn tickflare(args: &[&str]) -> String {
    let out = Command::new(bin()).current_dir(repo()).args(args).output().unwrap();
    assert!(out.status.success(), "tickflare {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The sample's closes (5th column), read here without tickflare.
fn sample_closes() -> Vec<f64> {
    let text = std::fs::read_to_string(repo().join(SAMPLE)).unwrap();
    text.lines().skip(1).filter(|l| !l.trim().is_empty()).map(|l| l.split(',').nth(4).unwrap().parse().unwrap()).collect()
}

fn mean_abs(errors: impl Iterator<Item = f64>) -> (f64, usize) {
    let v: Vec<f64> = errors.collect();
    (v.iter().map(|e| e.abs()).sum::<f64>() / v.len() as f64, v.len())
}

async fn plan(file: &Path, column: &str) -> SeriesPlan {
    let opts = BuildOptions {
        sample: None,
        series: SeriesOptions { input: Some(file.to_path_buf()), column: Some(column.into()), ..Default::default() },
    };
    match build_with(&repo().join(PIPELINE), &opts).await {
        Ok(b) => b.series.expect("series.toml has [series]"),
        Err(p) => panic!("{}: {p:?}", file.display()),
    }
}

/// The shipped sample (EUR/USD hours, Sunday 22:00 to Friday 21:00, weekends absent)
/// is hourly with a daily season of 24; the S&P 500 (trading days) business-daily
/// with a weekly season of 5; US births (a date in three columns) daily, season 7;
/// the bikeshare counts hourly, timed by `ts` (not by the `date` it repeats 24 times).
#[tokio::test]
async fn frequency_of_the_shipped_files() {
    let p = plan(&repo().join(SAMPLE), "Close").await;
    assert_eq!((p.detected.frequency.to_string().as_str(), p.detected.season, p.time_column.as_deref()), ("hourly", Some(24), Some("Time")));
    assert_eq!(p.detected.median_gap_ms, Some(3_600_000));
}

/// The workplace's full files (see `frequency_of_the_shipped_files`).
#[tokio::test]
#[cfg_attr(not(shared_data), ignore = "needs ../shared/data (the workplace's real data files)")]
async fn frequency_of_the_real_files() {
    let shared = repo().join("../shared/data");
    for (file, column, time, frequency, season) in [
        ("market/eurusd_1h_2017.csv", "Close", "Time", "hourly", 24),
        ("market/sp500_daily_1999_2018.csv.gz", "Close", "Date", "business-daily", 5),
        ("demand/us_births_daily_2000_2014.csv", "births", "{year}-{month}-{date_of_month}", "daily", 7),
        ("demand/bikesharing_hourly_2010_2019.csv", "count", "ts", "hourly", 24),
    ] {
        let p = plan(&shared.join(file), column).await;
        assert_eq!(p.time_column.as_deref(), Some(time), "{file}");
        assert_eq!((p.detected.frequency.to_string().as_str(), p.detected.season), (frequency, Some(season)), "{file}");
    }
}

/// `backtest pipelines/series.toml --input SAMPLE --column Close`: every row read, the
/// rows after the warm-up predicted and scored, persistence and seasonal naive exactly
/// as computed here from the CSV, and the detection printed and written beside the
/// report.
#[test]
fn backtest_of_the_hourly_sample() {
    let dir = tempfile::tempdir().unwrap();
    let out = tickflare(&["backtest", PIPELINE, "--input", SAMPLE, "--column", "Close", "--report", dir.path().to_str().unwrap()]);
    assert!(out.contains("frequency: hourly") && out.contains("season 24"), "{out}");
    let c = sample_closes();
    let n = c.len();
    // Hourly, season 24: the longest look-back is LAG 47 (2·24 − 1, the target's hour
    // two days back), so rows 0–46 lack a feature; rows 47… are predicted, each but
    // the last labelled by the next row.
    let warm = 47;
    let r = read_json(&dir.path().join("report.json"));
    let m = &r["models"][0];
    assert_eq!(m["messages_in"], Value::from(n));
    assert_eq!(m["dead_letters"], Value::from(0));
    assert_eq!(m["predictions_out"], Value::from(n - warm));
    assert_eq!(m["labelled"], Value::from(n - warm - 1));
    // Persistence forecasts close[i] for close[i+1]; seasonal naive close[i+1−24].
    let (persistence, k) = mean_abs((warm..n - 1).map(|i| c[i + 1] - c[i]));
    let (seasonal, _) = mean_abs((warm..n - 1).map(|i| c[i + 1] - c[i + 1 - 24]));
    let metrics = &m["metrics"];
    assert_eq!(metrics["persistence"]["n"], Value::from(k));
    assert!((metrics["persistence"]["mae"].as_f64().unwrap() - persistence).abs() < 1e-12, "{} vs {persistence}", metrics["persistence"]["mae"]);
    assert_eq!(metrics["seasonal_naive"]["n"], Value::from(k));
    assert!((metrics["seasonal_naive"]["mae"].as_f64().unwrap() - seasonal).abs() < 1e-12, "{} vs {seasonal}", metrics["seasonal_naive"]["mae"]);
    assert!(metrics["model"]["mae"].as_f64().unwrap().is_finite());
    assert!(m["per_key"].get("eurusd_1h_2017_q1").is_some(), "keyed by the file stem: {}", m["per_key"]);
    let s = read_json(&dir.path().join("series.json"));
    assert_eq!((&s["frequency"], &s["season"], &s["column"]), (&Value::from("hourly"), &Value::from(24), &Value::from("Close")));
    let features: Vec<&str> = s["features"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    // The value, 5 lag differences, 2 mean gaps, and 23 hour one-hots (hour 0 dropped).
    assert_eq!(features.len(), 1 + 5 + 2 + 23, "{features:?}");
    assert!(features.contains(&"d_lag47") && features.contains(&"next_h23") && !features.contains(&"next_h00"), "{features:?}");
}

/// `run` works out of the box on the shipped sample, and on any other file with
/// `--input`: here JSON lines, gzip'd, with a `day` time column named on the command
/// line and a value that grows by 1 a day, so persistence is off by exactly 1 and
/// seasonal naive (a week back) by exactly 7.
#[test]
fn run_on_the_sample_and_on_another_file() {
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("sample.json");
    let out = tickflare(&["run", PIPELINE, "--metrics-addr", "off", "--summary-json", summary.to_str().unwrap()]);
    assert!(out.contains("frequency: hourly"), "{out}");
    let s = read_json(&summary);
    let n = sample_closes().len();
    assert_eq!(s["messages_in"], Value::from(n));
    assert_eq!(s["labelled"], Value::from(n - 47 - 1));

    // 60 days from 2020-01-01; the other column is noise the mapping ignores.
    let file = dir.path().join("shop_sales.jsonl.gz");
    let mut lines = String::new();
    let day0 = chrono::NaiveDate::from_ymd_opt(2020, 1, 1).unwrap();
    for i in 0..60 {
        let day = day0 + chrono::Days::new(i);
        lines.push_str(&format!("{{\"day\":\"{day}\",\"sales\":{},\"store\":\"x\"}}\n", 100 + i));
    }
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut enc, lines.as_bytes()).unwrap();
    std::fs::write(&file, enc.finish().unwrap()).unwrap();
    let summary = dir.path().join("sales.json");
    let out = tickflare(&[
        "run",
        PIPELINE,
        "--input",
        file.to_str().unwrap(),
        "--column",
        "sales",
        "--time-column",
        "day",
        "--metrics-addr",
        "off",
        "--summary-json",
        summary.to_str().unwrap(),
    ]);
    // 2020-01-01 was a Wednesday; every day is present: daily, season 7.
    assert!(out.contains("frequency: daily") && out.contains("season 7"), "{out}");
    let s = read_json(&summary);
    assert_eq!(s["messages_in"], Value::from(60));
    assert_eq!(s["dead_letters"], Value::from(0));
    // Daily, season 7: the longest lag is 13 (2·7 − 1): 60 − 13 predictions, 46 labelled.
    assert_eq!(s["predictions_out"], Value::from(47));
    assert_eq!(s["labelled"], Value::from(46));
    assert_eq!(s["metrics"]["persistence"]["mae"].as_f64(), Some(1.0));
    assert_eq!(s["metrics"]["seasonal_naive"]["mae"].as_f64(), Some(7.0));
    assert!(s["per_key"].get("shop_sales").is_some(), "{}", s["per_key"]);
}

/// `replay FILE --pipeline pipelines/series.toml --column births`: a CSV whose date is
/// three columns lands in the topic as {series: file stem, time: RFC 3339, value},
/// keyed by the stem, timestamped with the event time (2000-01-01 = 946684800000 ms).
#[test]
fn replay_maps_any_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("births.csv");
    std::fs::write(&file, "year,month,date_of_month,day_of_week,births\n2000,1,1,6,9083\n2000,1,2,7,8006\n2000,1,3,1,11363\n").unwrap();
    let (_broker, addr) = broker_process_with(&["series:1"]);
    tickflare(&["replay", file.to_str().unwrap(), "--pipeline", PIPELINE, "--column", "births", "--brokers", &addr]);
    let msgs = read(&addr, "series");
    assert_eq!(msgs.len(), 3);
    let first = json(&msgs[0]);
    assert_eq!((&first["series"], &first["time"], &first["value"]), (&Value::from("births"), &Value::from("2000-01-01T00:00:00.000Z"), &Value::from(9083)));
    assert_eq!(msgs[0].key.as_deref(), Some(b"births".as_slice()));
    assert_eq!(msgs[2].timestamp_ms, Some(946_684_800_000 + 2 * 86_400_000));
    // A column the file lacks is an error that names the file's columns.
    let out = Command::new(bin()).current_dir(repo()).args(["replay", file.to_str().unwrap(), "--pipeline", PIPELINE, "--column", "Close", "--brokers", &addr]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("series.column") && err.contains("births"), "{err}");
}

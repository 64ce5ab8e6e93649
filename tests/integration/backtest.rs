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
    let (mut t, mut f) = (report(&topic_dir), report(&file_dir));
    // Outputs went to shadow topics in one, to Parquet files in the other.
    for m in t["models"].as_array_mut().unwrap().iter_mut().chain(f["models"].as_array_mut().unwrap()) {
        let m = m.as_object_mut().unwrap();
        m.remove("shadow_topic");
        m.remove("shadow_dead_letter_topic");
    }
    assert_eq!(t["models"], f["models"], "topic and file backtests disagree");
    assert_eq!(f["models"][0]["shadow_topic"], Value::Null);
    assert_eq!(report(&file2)["models"][0]["shadow_topic"], "predictions.parquet");
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
#[cfg_attr(not(shared_data), ignore = "needs ../shared/data (the workplace's real data files)")]
fn shipped_real_files_backtest() {
    let sp = repo().join("../shared/data/market/sp500_daily_1999_2018.csv.gz");
    let births = repo().join("../shared/data/demand/us_births_daily_2000_2014.csv");
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

/// One output message as a topic or a Parquet file holds it: partition, offset,
/// timestamp, key, payload, headers.
type Out = (i32, i64, Option<i64>, Option<Vec<u8>>, Option<Vec<u8>>, Vec<(String, Vec<u8>)>);

fn topic_outputs(addr: &str, topic: &str) -> Vec<Out> {
    let mut v: Vec<Out> = read(addr, topic).into_iter().map(|m| (m.partition, m.offset, m.timestamp_ms, m.key, m.payload, m.headers)).collect();
    v.sort_by_key(|o| (o.0, o.1));
    v
}

/// Rows of `predictions.parquet` / `dead_letters.parquet`, read with the parquet
/// crate's own reader: the columns named like Kafka's message parts, and every
/// column named `tickflare.*`, `reason` or `error` as a header, in file order.
fn parquet_outputs(path: &Path) -> Vec<Out> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int32Type, Int64Type, TimestampMillisecondType};
    let f = std::fs::File::open(path).unwrap();
    let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap();
    let mut out = Vec::new();
    for b in r {
        let b = b.unwrap();
        let col = |n: &str| b.column_by_name(n).unwrap_or_else(|| panic!("no column {n}")).clone();
        let bytes = |c: &dyn Array, i: usize| -> Option<Vec<u8>> {
            if c.is_null(i) {
                return None;
            }
            Some(match c.data_type() {
                arrow::datatypes::DataType::Utf8 => c.as_string::<i32>().value(i).as_bytes().to_vec(),
                _ => c.as_binary::<i32>().value(i).to_vec(),
            })
        };
        let headers: Vec<String> = b.schema().fields().iter().map(|f| f.name().clone()).filter(|n| n.starts_with("tickflare.") || n == "reason" || n == "error").collect();
        let (p, o, t, k, v) = (col("partition"), col("offset"), col("timestamp"), col("key"), col("payload"));
        for i in 0..b.num_rows() {
            let ts = t.as_primitive::<TimestampMillisecondType>();
            out.push((
                p.as_primitive::<Int32Type>().value(i),
                o.as_primitive::<Int64Type>().value(i),
                ts.is_valid(i).then(|| ts.value(i)),
                bytes(k.as_ref(), i),
                bytes(v.as_ref(), i),
                headers.iter().map(|h| (h.clone(), bytes(col(h).as_ref(), i).unwrap())).collect(),
            ));
        }
    }
    out.sort_by_key(|o| (o.0, o.1));
    out
}

/// The shipped tick sample with three bad lines in it (not JSON; a price that is not
/// a number; no instrument), written to `dir`.
fn ticks_with_bad_lines(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo().join("data/binance_ticks_sample.jsonl")).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.insert(100, "{not json".into());
    let l1 = lines.iter().position(|l| l.contains("OrderBookL1") && l.contains("\"price\":\"")).unwrap();
    let wrong = lines[l1 + 1000].replacen("\"price\":\"", "\"price\":\"x", 1);
    lines.insert(1000, wrong);
    let missing = lines[2000].replacen("\"instrument\":", "\"instrumentx\":", 1);
    lines.insert(2000, missing);
    let p = dir.join("ticks.jsonl");
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

/// A file backtest (no broker) writes to `predictions.parquet` exactly what a topic
/// backtest of the same records publishes: the same partitions, offsets, timestamps,
/// keys, payloads (byte for byte) and header values; dead letters likewise (their
/// reason and error included; a line that is not JSON has no event time, so its
/// timestamp is the broker's clock in one and absent in the other).
#[test]
fn file_backtest_writes_what_the_topic_backtest_publishes() {
    let dir = tempfile::tempdir().unwrap();
    let input = ticks_with_bad_lines(dir.path());
    let input = input.to_str().unwrap();
    let (_broker, addr) = broker_process_with(&["ticks:3", "tick-predictions.backtest:3", "ticks-dlq.backtest:3"]);
    tickflare(&["replay", input, "--pipeline", "pipelines/market-ticks.toml", "--brokers", &addr]);
    let (topic_dir, file_dir) = (dir.path().join("topic"), dir.path().join("file"));
    tickflare(&["backtest", "pipelines/market-ticks.toml", "--brokers", &addr, "--report", topic_dir.to_str().unwrap()]);
    tickflare(&["backtest", "pipelines/market-ticks.toml", "--input", input, "--report", file_dir.to_str().unwrap(), "--quiet"]);
    let (topic, file) = (topic_outputs(&addr, "tick-predictions.backtest"), parquet_outputs(&file_dir.join("predictions.parquet")));
    assert!(topic.len() > 7000, "{} predictions", topic.len());
    assert_eq!(topic.len(), file.len());
    for (a, b) in topic.iter().zip(&file) {
        assert_eq!(a, b);
    }
    // (The three symbols hash to two of the three partitions.)
    assert_eq!((0..3).filter(|p| file.iter().any(|o| o.0 == *p)).count(), 2, "keys spread over partitions");
    let (mut td, mut fd) = (topic_outputs(&addr, "ticks-dlq.backtest"), parquet_outputs(&file_dir.join("dead_letters.parquet")));
    let reasons = |v: &[Out]| v.iter().map(|o| String::from_utf8(o.5.iter().find(|h| h.0 == "reason").unwrap().1.clone()).unwrap()).collect::<Vec<_>>();
    let mut got = reasons(&fd);
    got.sort();
    assert_eq!(got, ["malformed_json", "missing_field", "wrong_type"]);
    for o in td.iter_mut().chain(fd.iter_mut()).filter(|o| o.4.as_deref() == Some(&b"{not json"[..])) {
        o.2 = None;
    }
    assert_eq!(td, fd);
}

/// `--warmup-from` before the file's start: the models have learnt from every record
/// before `--from` when scoring starts, so the predictions in the range equal, byte
/// for byte, those of a backtest of the whole file; none before it is written or
/// scored.
#[test]
fn warmup_gives_the_models_of_a_live_run() {
    let dir = tempfile::tempdir().unwrap();
    let (all, warm) = (dir.path().join("all"), dir.path().join("warm"));
    tickflare(&["backtest", "pipelines/market-bars.toml", "--input", SAMPLE, "--report", all.to_str().unwrap(), "--quiet"]);
    tickflare(&["backtest", "pipelines/market-bars.toml", "--input", SAMPLE, "--from", "2017-02-01", "--warmup-from", "2016-12-01", "--report", warm.to_str().unwrap(), "--quiet"]);
    let from_ns = chrono::DateTime::parse_from_rfc3339("2017-02-01T00:00:00Z").unwrap().timestamp_nanos_opt().unwrap();
    let event_ns = |o: &Out| serde_json::from_slice::<Value>(o.4.as_ref().unwrap()).unwrap()["event_time_ns"].as_i64().unwrap();
    for lane in ["predictions.parquet", "predictions.linear_nlms.parquet"] {
        let a: Vec<Out> = parquet_outputs(&all.join(lane)).into_iter().filter(|o| event_ns(o) >= from_ns).collect();
        let w = parquet_outputs(&warm.join(lane));
        assert!(!w.is_empty());
        assert_eq!(a.iter().map(|o| &o.4).collect::<Vec<_>>(), w.iter().map(|o| &o.4).collect::<Vec<_>>(), "{lane}");
        assert!(w.iter().all(|o| event_ns(o) >= from_ns));
    }
    let rows = sample_rows();
    let from_ms = from_ns / 1_000_000;
    let r = report(&warm);
    assert_eq!(r["records_warmup"], Value::from(rows.iter().filter(|x| x.0 < from_ms).count()));
    assert_eq!(r["records_in_range"], Value::from(rows.iter().filter(|x| x.0 >= from_ms).count()));
    // Every in-range prediction but the last (no label yet) is scored, none before.
    let inside = rows.iter().filter(|x| x.0 >= from_ms).count();
    assert_eq!(r["models"][0]["metrics"]["persistence"]["n"], Value::from(inside - 1));
}

/// A warm-up is fed, not counted or published: with a bad record in the warm-up
/// and one in range, each model's counts are the range's — `messages_in` is the
/// records in range and `predictions_out + dead_letters + warmup` adds up to it —
/// and only the in-range record is dead-lettered. (The warm-up's records were in
/// `messages_in`, its rows without features in `warmup` and its bad records
/// published, while its forecasts were not.)
#[test]
fn a_warmup_is_fed_but_not_counted_or_published() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo().join(SAMPLE)).unwrap();
    let spoil = |l: &str| {
        let mut cells: Vec<&str> = l.split(',').collect();
        cells[4] = "abc";
        cells.join(",")
    };
    // Rows on 2017-01-10 (warm-up) and 2017-02-10 (in range) with a close that is no number.
    let lines: Vec<String> = text.lines().map(|l| if l.starts_with("10.01.2017 12:") || l.starts_with("10.02.2017 12:") { spoil(l) } else { l.to_string() }).collect();
    assert_eq!(lines.iter().filter(|l| l.contains(",abc,")).count(), 2);
    let input = dir.path().join("spoiled.csv");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = dir.path().join("warm");
    tickflare(&["backtest", "pipelines/market-bars.toml", "--input", input.to_str().unwrap(), "--from", "2017-02-01", "--warmup-from", "2016-12-01", "--report", out.to_str().unwrap(), "--quiet"]);
    let r = report(&out);
    let in_range = r["records_in_range"].as_u64().unwrap();
    assert!(r["records_warmup"].as_u64().unwrap() > 500);
    for m in r["models"].as_array().unwrap() {
        let n = |k: &str| m[k].as_u64().unwrap();
        assert_eq!(n("messages_in"), in_range, "{}", m["name"]);
        assert_eq!(n("predictions_out") + n("dead_letters") + n("warmup"), n("messages_in"), "{}", m["name"]);
        assert_eq!(n("dead_letters"), 1, "{}", m["name"]);
        assert_eq!(n("predictions_out"), n("labelled") + n("pending"));
    }
    let dead = parquet_outputs(&out.join("dead_letters.parquet"));
    assert_eq!(dead.len(), 1, "only the in-range bad record is published");
    let payload = String::from_utf8_lossy(dead[0].4.as_ref().unwrap()).into_owned();
    assert!(payload.contains("2017-02-10T12:") || payload.contains("10.02.2017 12:"), "{payload}");
}

/// Partitions processed on two cores give the same outputs as on one: each
/// partition's output is a function of its records alone (the tick sample fills two
/// partitions; batches of 500 so that many batches run in parallel, and of 4,000 so
/// that records are decoded in shares on both cores). Some lines are damaged, so that
/// dead letters come from shares too.
#[test]
fn two_workers_write_what_one_writes() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo().join("data/binance_ticks_sample.jsonl")).unwrap();
    let lines: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| match i % 997 {
            13 => l[..l.len() / 2].to_string(),
            500 => l.replace("\"best_bid\"", "\"best_bod\"").replace("\"side\"", "\"sode\""),
            _ => l.to_string(),
        })
        .collect();
    let input = dir.path().join("damaged.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let (mut got, mut outputs) = (Vec::new(), Vec::new());
    for (w, rows) in [("1", "500"), ("2", "500"), ("1", "4000"), ("2", "4000")] {
        let out = dir.path().join(format!("{w}-{rows}"));
        let o = Command::new(bin())
            .current_dir(repo())
            .env("TICKFLARE_WORKERS", w)
            .args(["backtest", "pipelines/market-ticks.toml", "--batch-rows", rows, "--quiet", "--input"])
            .arg(&input)
            .arg("--report")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let read = |f: &str| std::fs::read(out.join(f)).unwrap();
        got.push([read("predictions.parquet"), read("dead_letters.parquet"), read("report.json")]);
        // Across batch sizes the files interleave partitions differently: compare
        // each output partition's messages, in their order.
        outputs.push((parquet_outputs(&out.join("predictions.parquet")), parquet_outputs(&out.join("dead_letters.parquet"))));
    }
    assert!(outputs[0].1.len() >= 10, "only {} dead letters", outputs[0].1.len());
    for (a, b) in [(0, 1), (2, 3)] {
        for (i, f) in ["predictions.parquet", "dead_letters.parquet", "report.json"].iter().enumerate() {
            assert!(got[a][i] == got[b][i], "{f} differs between 1 and 2 workers (batches of {})", ["500", "4000"][a / 2]);
        }
    }
    assert!(outputs[0] == outputs[3], "per-partition outputs differ between batches of 500 on 1 worker and of 4000 on 2");
}

/// A directory of files is one stream: the tick sample cut into three files (named so
/// that their names sort in the wrong order; they are read in the order of their first
/// event times) gives the same predictions, byte for byte, as the whole file, with
/// batches of 700 rows so that many chunks are read ahead while batches run.
#[test]
fn a_directory_of_files_reads_as_the_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo().join("data/binance_ticks_sample.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let parts = dir.path().join("parts");
    std::fs::create_dir(&parts).unwrap();
    let cut = [0, 3001, 7777, lines.len()];
    for (i, name) in ["c.jsonl", "b.jsonl", "a.jsonl"].iter().enumerate() {
        std::fs::write(parts.join(name), lines[cut[i]..cut[i + 1]].join("\n") + "\n").unwrap();
    }
    let mut got = Vec::new();
    for input in [repo().join("data/binance_ticks_sample.jsonl"), parts] {
        let out = dir.path().join(format!("out{}", got.len()));
        tickflare(&["backtest", "pipelines/market-ticks.toml", "--input", input.to_str().unwrap(), "--batch-rows", "700", "--quiet", "--report", out.to_str().unwrap()]);
        got.push(std::fs::read(out.join("predictions.parquet")).unwrap());
        let r = report(&out);
        assert_eq!(r["records_in_range"], 10_000, "{input:?}");
    }
    assert!(got[0] == got[1], "predictions.parquet of the directory differs from the whole file's");
}

/// Per-key models are independent: six keys' rows (each key's own order and clock
/// kept) interleaved round-robin, shuffled, or key after key, cut into batches of 1,
/// 7 and 1000 rows, with the queued per-key work on one thread or two — every key
/// gets the same forecasts, bit for bit, and the same update counts, as the
/// round-robin stream processed one row at a time on one thread. (Per-key LSTMs: the
/// model with per-thread scratch buffers.) The same holds for the keys of a stacked
/// bank (`model.bank = true`, run in waves whose make-up follows the batches), whose
/// forecasts are also the plain LSTMs' to rounding.
#[test]
fn per_key_results_do_not_depend_on_interleaving_batches_or_threads() {
    use crate::common::{flat_pipeline, tick};
    let dir = tempfile::tempdir().unwrap();
    let sql = "SELECT _offset, symbol, ts, price, price - LAG(price, 1) OVER (PARTITION BY symbol ORDER BY _offset) AS dp FROM ticks";
    let model = "kind = \"lstm\"\noptimizer = \"adamw\"\nlearning_rate = 0.02\nwindow = 3\nhidden = [5]\nfeatures = [\"price\", \"dp\"]\ntarget = \"price\"\nhorizon = 1\nscope = \"per_key\"";
    let plain = flat_pipeline(dir.path(), sql, model, 1);
    let banked = dir.path().join("banked.toml");
    std::fs::write(&banked, std::fs::read_to_string(&plain).unwrap().replace("scope = \"per_key\"", "scope = \"per_key\"\nbank = true")).unwrap();
    assert!(std::fs::read_to_string(&banked).unwrap().contains("bank = true"));
    let (keys, per_key) = (6usize, 150usize);
    let row = |k: usize, n: usize| tick(&format!("K{k}"), 1_000_000 + n as i64 * 1000 + k as i64, 10.0 + (n as f64 * 0.21 + k as f64).sin() * (1.0 + k as f64), 1.0);
    let round_robin: Vec<usize> = (0..keys * per_key).map(|i| i % keys).collect();
    let mut shuffled = round_robin.clone();
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..shuffled.len()).rev() {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        shuffled.swap(i, (s >> 33) as usize % (i + 1));
    }
    let blocks: Vec<usize> = (0..keys * per_key).map(|i| i / per_key).collect();
    let per_key_forecasts = |pipeline: &Path, order: &[usize], batch: &str, workers: &str| {
        let mut next = vec![0; keys];
        let lines: Vec<String> = order.iter().map(|&k| { next[k] += 1; row(k, next[k] - 1) }).collect();
        let lane = pipeline.file_stem().unwrap().to_string_lossy().into_owned();
        let tag = format!("{lane}-{}-{batch}-{workers}", order[..12].iter().map(|k| k.to_string()).collect::<String>());
        let input = dir.path().join(format!("{tag}.jsonl"));
        std::fs::write(&input, lines.join("\n") + "\n").unwrap();
        let out = dir.path().join(&tag);
        let o = Command::new(bin())
            .env("TICKFLARE_WORKERS", workers)
            .args(["backtest", pipeline.to_str().unwrap(), "--input", input.to_str().unwrap(), "--batch-rows", batch, "--quiet", "--report"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{tag}: {}", String::from_utf8_lossy(&o.stderr));
        let mut by_key: std::collections::BTreeMap<Vec<u8>, Vec<(u64, u64)>> = Default::default();
        for m in parquet_outputs(&out.join("predictions.parquet")) {
            let p: Value = serde_json::from_slice(&m.4.unwrap()).unwrap();
            by_key.entry(m.3.unwrap()).or_default().push((p["predicted"].as_f64().unwrap().to_bits(), p["model_updates"].as_u64().unwrap()));
        }
        by_key
    };
    let want = per_key_forecasts(&plain, &round_robin, "1", "1");
    assert_eq!(want.len(), keys);
    // Window of 3 complete rows (the first has no dp): 146 forecasts per key, the
    // last one made after 145 updates.
    assert!(want.values().all(|f| f.len() == per_key - 3 && f.last().unwrap().1 == (per_key - 4) as u64), "{:?}", want.values().map(Vec::len).collect::<Vec<_>>());
    let bank_want = per_key_forecasts(&banked, &round_robin, "1", "1");
    for (k, f) in &want {
        let b = &bank_want[k];
        assert_eq!(b.len(), f.len());
        for ((p, u), (q, v)) in f.iter().zip(b) {
            assert_eq!(u, v);
            let (p, q) = (f64::from_bits(*p), f64::from_bits(*q));
            assert!((p - q).abs() <= 1e-9 * (1.0 + p.abs()), "bank {q} vs plain {p}");
        }
    }
    for (pipeline, want) in [(&plain, &want), (&banked, &bank_want)] {
        for (name, order) in [("round-robin", &round_robin), ("shuffled", &shuffled), ("key after key", &blocks)] {
            for batch in ["1", "7", "1000"] {
                for workers in ["1", "2"] {
                    assert!(per_key_forecasts(pipeline, order, batch, workers) == *want, "{pipeline:?}: {name}, batches of {batch}, {workers} thread(s)");
                }
            }
        }
    }
}

/// `update_block = 2` on a global linear model (SGD, lr 0.1, one constant feature,
/// weights from 0, horizon 1 row), by hand — y = 1, 2, 3, 4, 5 at offsets 0…4:
/// block {0,1} predicts with θ = 0: 0, 0 (row 1's label y = 2 waits for the block's
/// end); block {2,3} starts with one step on that label, θ = 0 − 0.1·2(0 − 2) = 0.4
/// per weight, ŷ = w + b = 0.8 for both rows; block {4} starts with one step on the
/// mean gradient of labels 3 and 4 at ŷ = 0.8: θ = 0.4 + 0.1·(2·2.2 + 2·3.2)/2 = 0.94,
/// ŷ = 1.88. Without blocks every label is learned at once: 0, 0.8, 1.68, 2.608,
/// 3.5648. The same forecasts for batches of 1, 2 and 1000 rows.
#[test]
fn update_blocks_learn_together_whatever_the_batches() {
    use crate::common::{flat_pipeline, tick};
    let dir = tempfile::tempdir().unwrap();
    let sql = "SELECT _offset, symbol, ts, price, 1.0 AS one FROM ticks";
    let input = dir.path().join("five.jsonl");
    let lines: Vec<String> = (0..5).map(|i| tick("A", 1_000 + i, (i + 1) as f64, 1.0)).collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    for (block, want) in [(2, [0.0, 0.0, 0.8, 0.8, 1.88]), (0, [0.0, 0.8, 1.68, 2.608, 3.5648])] {
        let model = format!(
            "kind = \"linear\"\noptimizer = \"sgd\"\nlearning_rate = 0.1\nbaseline = \"none\"\nfeatures = [\"one\"]\ntarget = \"price\"\nhorizon = 1\nscope = \"global\"\nupdate_block = {block}"
        );
        let pdir = dir.path().join(format!("p{block}"));
        std::fs::create_dir_all(&pdir).unwrap();
        let pipeline = flat_pipeline(&pdir, sql, &model, 1);
        for batch in ["1", "2", "1000"] {
            let out = pdir.join(batch);
            tickflare(&["backtest", pipeline.to_str().unwrap(), "--input", input.to_str().unwrap(), "--batch-rows", batch, "--quiet", "--report", out.to_str().unwrap()]);
            let got: Vec<f64> = parquet_outputs(&out.join("predictions.parquet"))
                .into_iter()
                .map(|m| serde_json::from_slice::<Value>(&m.4.unwrap()).unwrap()["predicted"].as_f64().unwrap())
                .collect();
            assert_eq!(got.len(), 5, "update_block {block}, batches of {batch}");
            assert!(got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-12), "update_block {block}, batches of {batch}: {got:?} vs {want:?}");
        }
    }
}

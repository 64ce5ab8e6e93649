//! The binary as users run it: the README's main command, `validate`, and a run
//! against `tickflare broker` in a separate process.

use std::process::Command;

use crate::common::*;

#[test]
fn main_command_runs_the_shipped_pipeline_on_the_embedded_broker() {
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.json");
    let out = Command::new(bin())
        .current_dir(repo())
        .args(["run", "pipelines/market-ticks.toml", "--summary-json"])
        .arg(&summary)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(human.contains("predictions"), "{human}");
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let n = |k: &str| s[k].as_u64().unwrap();
    // Every record of the sample is accounted for exactly once.
    let lines = std::fs::read_to_string(repo().join("data/binance_ticks_sample.jsonl")).unwrap();
    assert_eq!(n("messages_in"), lines.lines().filter(|l| !l.trim().is_empty()).count() as u64);
    assert_eq!(n("messages_in"), n("predictions_out") + n("dead_letters") + n("warmup") + n("filtered"));
    // Every prediction is labelled or still pending.
    assert_eq!(n("predictions_out"), n("labelled") + n("pending"));
    // The published mixture, its experts and the yardsticks a quant compares against
    // (zero change, the microprice) are all scored on the same labels.
    for m in ["model", "persistence", "zero", "microprice", "learner"] {
        assert_eq!(s["metrics"][m]["n"].as_u64().unwrap(), n("labelled"), "{m}");
        for k in ["mae", "rmse"] {
            assert!(s["metrics"][m][k].as_f64().unwrap().is_finite(), "{m}.{k}");
        }
    }
    // Zero change is persistence for a change forecast: the same errors.
    assert_eq!(s["metrics"]["zero"]["mae"], s["metrics"]["persistence"]["mae"]);
    // The aggregation weights are reported and form a convex combination.
    let w = s["weights"].as_object().expect("weights");
    assert_eq!(w.keys().collect::<Vec<_>>(), ["learner", "microprice", "zero"]);
    let total: f64 = w.values().map(|v| v.as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-9 && w.values().all(|v| v.as_f64().unwrap() >= 0.0), "{w:?}");
}

#[test]
fn validate_reports_every_problem_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let schema = repo().join("schemas/flat-ticks.json");
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        format!(
            r#"name = "bad"
[source]
topic = "in"
schema = "{}"
key = "sym"
time = "ts"
sample = "nowhere.jsonl"
max_batch_rowz = 10
[features]
sql = "SELECT _offset, symbol, ts, price FROM ticks"
[model]
optimizer = "adam"
activation = "gelu"
features = ["price", "nope"]
target = "price"
horizon = 1
scope = "per_key"
update_block = 4
[sink]
topic = "out"
dead_letter_topic = "out"
"#,
            schema.display()
        ),
    )
    .unwrap();
    let out = Command::new(bin()).arg("validate").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "source.max_batch_rowz: unknown key",
        "source.key: column \"sym\"",
        "source.sample:",
        "model.optimizer: \"adam\" is not one of auto, sgd, adamw, nlms",
        "model.activation: \"gelu\" is not one of relu, tanh",
        "model.features[1]: column \"nope\"",
        "model.update_block:",
        "sink.dead_letter_topic: topic \"out\" is used twice",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    let ok = Command::new(bin()).current_dir(repo()).args(["validate", "pipelines/market-ticks.toml"]).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
}

#[test]
fn validate_points_at_the_sql_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = flat_pipeline(dir.path(), "SELECT _offset, symbol, ts, price FROM ticks WHERE", "features = [\"price\"]\ntarget = \"price\"\nhorizon = 1", 1);
    let out = Command::new(bin()).arg("validate").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("features.sql:"), "{err}");
}

#[test]
fn run_against_a_broker_in_another_process() {
    let (_broker, addr) = broker_process();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let lines: Vec<Vec<u8>> = tickflare::source::sample::read_lines(&repo().join("data/binance_ticks_sample.jsonl"))
        .unwrap()
        .into_iter()
        .take(600)
        .collect();
    rt.block_on(async {
        let b = built(&repo().join("pipelines/market-ticks.toml")).await;
        let prod = tickflare::sink::kafka::producer(&addr).unwrap();
        tickflare::source::sample::seed_lines(&prod, "ticks", 2, &b.schema, "symbol", lines).await.unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("s.json");
    let out = Command::new(bin())
        .current_dir(repo())
        .args(["run", "pipelines/market-ticks.toml", "--stop-at-end", "--group", "two-process-test", "--brokers", &addr, "--summary-json"])
        .arg(&summary)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(s["messages_in"], 600);
    let preds = read(&addr, "tick-predictions");
    assert_eq!(preds.len() as u64, s["predictions_out"].as_u64().unwrap());
    assert!(preds.len() > 400);
    // Each prediction sits in the partition of its source record.
    for m in &preds {
        assert_eq!(m.header("tickflare.source.partition"), Some(m.partition.to_string().as_str()));
    }
}

/// The daily-demand pipeline on the shipped sample (US births, 5,479 days; Capital
/// Bikeshare rentals summed to days, 3,269 days): for each series and overall, the
/// default model's SMAPE must beat persistence and seasonal naive (both computed by
/// tickflare's baselines, whose formulas the unit and seasonal tests pin).
#[test]
fn daily_demand_model_beats_both_baselines() {
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.json");
    let out = Command::new(bin())
        .current_dir(repo())
        .args(["run", "pipelines/daily-demand.toml", "--metrics-addr", "off", "--summary-json"])
        .arg(&summary)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(s["messages_in"], 5479 + 3269);
    assert_eq!(s["dead_letters"], 0);
    // The rolling window holds each series' last 1000 labels.
    for k in ["us_births", "bikesharing"] {
        assert_eq!(s["per_key_rolling"][k]["model"]["n"], 1000);
        assert_eq!(s["per_key_rolling"][k]["seasonal_naive"]["n"], 1000);
    }
    for m in [&s["metrics"], &s["per_key"]["us_births"], &s["per_key"]["bikesharing"]] {
        let smape = |k: &str| m[k]["smape"].as_f64().unwrap_or_else(|| panic!("{k}"));
        let (model, pers, seas) = (smape("model"), smape("persistence"), smape("seasonal_naive"));
        assert!(model < seas && model < pers, "model {model} vs seasonal naive {seas}, persistence {pers}");
    }
}

/// `validate --brokers` against a live broker: clean when the topics exist with
/// enough partitions; each missing or too-small topic reported otherwise.
#[test]
fn validate_checks_the_brokers_and_topics() {
    let (_broker, addr) = broker_process();
    let ok = Command::new(bin()).current_dir(repo()).args(["validate", "pipelines/market-ticks.toml", "--brokers", &addr]).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    // daily-demand's topics do not exist on this broker.
    let bad = Command::new(bin()).current_dir(repo()).args(["validate", "pipelines/daily-demand.toml", "--brokers", &addr]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("source.topic: topic \"demand\" does not exist"), "{err}");
    // Nothing listens on port 1: a broker problem, reported as such.
    let down = Command::new(bin()).current_dir(repo()).args(["validate", "pipelines/market-ticks.toml", "--brokers", "127.0.0.1:1"]).output().unwrap();
    assert_eq!(down.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&down.stderr).contains("source.brokers"), "{}", String::from_utf8_lossy(&down.stderr));
}

/// `replay` publishes a file with each record's Kafka timestamp = its event time,
/// keyed and partitioned by the key field, honouring --from (inclusive) and --to
/// (exclusive): JSON lines (the shipped daily series, December 2014: 31 births days +
/// 31 bikeshare days) and CSV (the shipped EUR/USD hourly bars, 2 February 2017: 24
/// rows, the first at 00:00 = 1485993600000 ms).
#[test]
fn replay_publishes_with_event_time_timestamps() {
    let (_broker, addr) = broker_process();
    let run = |args: &[&str]| {
        let out = Command::new(bin()).current_dir(repo()).arg("replay").args(args).args(["--brokers", &addr]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["data/daily_demand.jsonl", "--topic", "ticks", "--time", "date", "--key", "series", "--partitions", "2", "--from", "2014-12-01", "--to", "2015-01-01"]);
    let msgs = read(&addr, "ticks");
    assert_eq!(msgs.len(), 62);
    for m in &msgs {
        let v = json(m);
        let day = v["date"].as_str().unwrap();
        assert!(day.starts_with("2014-12-"), "{day}");
        let t = chrono::DateTime::parse_from_rfc3339(day).unwrap().timestamp_millis();
        assert_eq!(m.timestamp_ms, Some(t));
        assert_eq!(m.key.as_deref(), Some(v["series"].as_str().unwrap().as_bytes()));
    }
    // Each series stays in one partition.
    for series in ["us_births", "bikesharing"] {
        let parts: std::collections::BTreeSet<i32> =
            msgs.iter().filter(|m| json(m)["series"] == series).map(|m| m.partition).collect();
        assert_eq!(parts.len(), 1, "{series}");
    }
    run(&["data/eurusd_1h_2017_q1.csv", "--topic", "tick-predictions", "--time", "Time", "--from", "02.02.2017 00:00:00.000", "--to", "03.02.2017 00:00:00.000"]);
    let bars = read(&addr, "tick-predictions");
    assert_eq!(bars.len(), 24);
    assert_eq!(bars[0].timestamp_ms, Some(1_485_993_600_000));
    assert!(json(&bars[0])["Close"].is_f64());
}

/// `replay --pipeline`: the gzip'd S&P 500 file through market-bars' [source.file]
/// mapping (Date → time as RFC 3339, Close → close, symbol = the file's stem).
/// 1999-01-04 = 915408000000 ms; its close 1228.099976 (the file's first row).
#[test]
#[cfg_attr(not(shared_data), ignore = "needs ../shared/data (the workplace's real data files)")]
fn replay_maps_a_gzipped_csv_through_the_pipeline() {
    let (_broker, addr) = broker_process();
    let run = |args: &[&str]| {
        let out = Command::new(bin()).current_dir(repo()).arg("replay").args(args).args(["--brokers", &addr]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let sp = repo().join("../shared/data/market/sp500_daily_1999_2018.csv.gz");
    run(&[sp.to_str().unwrap(), "--pipeline", "pipelines/market-bars.toml", "--topic", "ticks-dlq", "--to", "1999-02-01"]);
    let sp = read(&addr, "ticks-dlq");
    assert_eq!(sp.len(), 19, "trading days in January 1999");
    let v = json(&sp[0]);
    assert_eq!(sp[0].timestamp_ms, Some(915_408_000_000));
    assert_eq!(v["time"], "1999-01-04T00:00:00.000Z");
    assert_eq!(v["close"], 1228.099976);
    assert_eq!(v["symbol"], "sp500_daily_1999_2018");
    assert_eq!(sp[0].key.as_deref(), Some(b"sp500_daily_1999_2018".as_slice()));
}

/// A 3 MB line in an embedded sample (over librdkafka's 1 MB `message.max.bytes`)
/// stops `run` promptly with an error naming the line — it used to retry the send
/// forever at 17 % CPU.
#[test]
fn an_oversized_sample_line_is_a_clear_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let sample = dir.path().join("sample.jsonl");
    let big = format!(r#"{{"symbol":"A","ts":1001,"price":1.0,"size":1.0,"pad":"{}"}}"#, "x".repeat(3 << 20));
    let big_len = big.len();
    std::fs::write(&sample, [tick("A", 1000, 1.0, 1.0), big, tick("A", 1002, 1.0, 1.0)].join("\n") + "\n").unwrap();
    let p = flat_pipeline(dir.path(), "SELECT _offset, symbol, ts, price FROM ticks", "features = [\"price\"]\ntarget = \"price\"\nhorizon = 1", 1);
    let text = std::fs::read_to_string(&p).unwrap().replace("brokers = \"127.0.0.1:1\"", &format!("brokers = \"embedded\"\nsample = \"{}\"", sample.display()));
    std::fs::write(&p, text).unwrap();
    let mut child = Child(Command::new(bin()).arg("run").arg(&p).stderr(std::process::Stdio::piped()).spawn().unwrap());
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "run still going after 60 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains(&format!("line 2 ({big_len} bytes) could not be published")), "{err}");
}

/// `validate` reports what a model build would stop `run` on — a bad replay policy
/// found by building a model, a non-positive mixup α found by the checks — together,
/// and builds every `[[compare]]` lane (RLS cannot take the HL-Gauss loss); it
/// validates solar pipelines too (the shipped one is clean; a missing weights file is
/// reported at its key, a crop the network cannot take at `tracker`, topics a real
/// broker lacks at `source.brokers`, a checkpoint of another configuration at
/// `checkpoint.dir`).
#[test]
fn validate_builds_models_lanes_and_solar_pipelines() {
    let dir = tempfile::tempdir().unwrap();
    let model = "features = [\"price\"]\ntarget = \"price\"\nhorizon = 1\nreplay = 2\nreplay_policy = \"bogus\"\nmixup = true\nmixup_alpha = 0.0\nloss = \"hl_gauss\"\nhl_bins = 1\nhl_range = [5.0, -5.0]";
    let p = flat_pipeline(dir.path(), "SELECT _offset, symbol, ts, price FROM ticks", model, 1);
    let validate = |p: &std::path::Path| {
        let out = Command::new(bin()).current_dir(repo()).arg("validate").arg(p).args(["--brokers", "embedded"]).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout))
    };
    let (code, err) = validate(&p);
    assert_eq!(code, Some(2), "{err}");
    for needle in ["model.replay_policy: \"bogus\"", "model.mixup_alpha:", "model.hl_bins: must be at least 2", "model.hl_range: must be [low, high]"] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    let fixed = std::fs::read_to_string(&p).unwrap().replace("\"bogus\"", "\"recent\"").replace("mixup_alpha = 0.0", "mixup_alpha = 0.4").replace("\nloss = \"hl_gauss\"\nhl_bins = 1\nhl_range = [5.0, -5.0]", "");
    std::fs::write(&p, fixed + "[[compare]]\nname = \"rls_hl\"\nkind = \"rls\"\nloss = \"hl_gauss\"\n[[compare]]\nname = \"fine\"\nkind = \"linear\"\n").unwrap();
    let (code, err) = validate(&p);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("compare[0] (rls_hl): model.loss: \"hl_gauss\" needs kind linear or mlp"), "{err}");
    assert!(!err.contains("compare[1]"), "{err}");
    let (code, out) = validate(&repo().join("pipelines/solar-tracking.toml"));
    assert_eq!(code, Some(0), "{out}");
    let solar = dir.path().join("solar.toml");
    let text = std::fs::read_to_string(repo().join("pipelines/solar-tracking.toml")).unwrap();
    let text = text.replace("../data/", &format!("{}/data/", repo().display())).replace("tracker-eit.safetensors", "nope.safetensors");
    // An unknown word and an unknown key are reported with the rest (they were read
    // past, not stopped at — and `run` refuses the file).
    let text = text.replace("[tracker]\n", "[tracker]\ndevice = \"tpu\"\nmatch_iuo = 0.5\n");
    std::fs::write(&solar, text).unwrap();
    let (code, err) = validate(&solar);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("tracker.weights:") && err.contains("nope.safetensors does not exist"), "{err}");
    assert!(err.contains("tracker.device: \"tpu\" is not one of cpu, cuda, auto"), "{err}");
    assert!(err.contains("tracker.match_iuo: unknown key"), "{err}");
    let run = Command::new(bin()).arg("run").arg(&solar).output().unwrap();
    let run_err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{run_err}");
    assert!(run_err.contains("tracker.match_iuo: unknown key"), "{run_err}");
    let crop = std::fs::read_to_string(repo().join("tests/fixtures/solar-crash.toml")).unwrap().replace("crop = 64", "crop = 60");
    let bad_crop = dir.path().join("crop.toml");
    std::fs::write(&bad_crop, &crop).unwrap();
    let (code, err) = validate(&bad_crop);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("tracker: tracker crop 60: use a multiple of 8"), "{err}");
    // Against a broker that has only the frames topic.
    let (_b, addr) = broker_process_with(&["sdo-frames:2"]);
    let out = Command::new(bin()).current_dir(repo()).args(["validate", "tests/fixtures/solar-crash.toml", "--brokers", &addr]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    for t in ["hek-labels", "solar-tracks", "solar-dlq"] {
        assert!(err.contains(&format!("source.brokers: topic {t:?} does not exist")), "{t}: {err}");
    }
    assert!(!err.contains("\"sdo-frames\""), "{err}");
    // A checkpoint written by another tracker configuration is refused.
    let ck = dir.path().join("ck");
    let with_ck = |crop: &str| format!("{}\n[checkpoint]\ndir = {:?}\n", std::fs::read_to_string(repo().join("tests/fixtures/solar-small.toml")).unwrap().replace("crop = 64", crop), ck.display().to_string());
    let (a, b) = (dir.path().join("a.toml"), dir.path().join("b.toml"));
    std::fs::write(&a, with_ck("crop = 64")).unwrap();
    std::fs::write(&b, with_ck("crop = 32")).unwrap();
    let (_b2, addr2) = broker_process_with(&["sdo-frames:1", "hek-labels:1", "solar-tracks:1", "solar-dlq:1"]);
    let out = Command::new(bin()).current_dir(repo()).args(["run", a.to_str().unwrap(), "--brokers", &addr2, "--stop-at-end", "--metrics-addr", "off"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (code, out) = validate(&a);
    assert_eq!(code, Some(0), "{out}");
    let (code, err) = validate(&b);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("checkpoint.dir:") && err.contains("different tracker configuration"), "{err}");
}

/// `[kafka]` properties reach the clients: against a live broker, a valid set (with
/// a value from the environment) validates clean; a property librdkafka does not know
/// is a problem at `kafka`; an unset `${env:…}` secret names its key — and no value
/// is ever printed.
#[test]
fn kafka_properties_reach_the_clients() {
    let (_broker, addr) = broker_process();
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(repo().join("pipelines/market-ticks.toml")).unwrap().replace("../schemas/", &format!("{}/schemas/", repo().display())).replace("../data/", &format!("{}/data/", repo().display()));
    let validate = |kafka: &str, env: &[(&str, &str)]| {
        let p = dir.path().join("p.toml");
        std::fs::write(&p, format!("{base}\n[kafka]\n{kafka}\n")).unwrap();
        let out = Command::new(bin()).args(["validate"]).arg(&p).args(["--brokers", &addr]).envs(env.iter().copied()).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout))
    };
    let (code, out) = validate("\"client.id\" = \"${env:TF_TEST_CLIENT}\"\n\"socket.keepalive.enable\" = true\n[kafka.consumer]\n\"session.timeout.ms\" = 45000", &[("TF_TEST_CLIENT", "desk-7")]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = validate("\"no.such.property\" = \"hunter2\"", &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("  kafka: property \"no.such.property\"") && !out.contains("hunter2"), "{out}");
    let (code, out) = validate("\"sasl.password\" = \"${env:TF_TEST_UNSET_SECRET}\"", &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("kafka.sasl.password: environment variable TF_TEST_UNSET_SECRET is not set"), "{out}");
    // An environment override reaches the clients too (librdkafka refuses this value).
    let (code, out) = validate("", &[("TICKFLARE_KAFKA_SOCKET_TIMEOUT_MS", "not-a-number")]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("  kafka: property \"socket.timeout.ms\"") && !out.contains("not-a-number"), "{out}");
}

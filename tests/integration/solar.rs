//! The solar tracking stream: frames (Arrow IPC) and sparse labels through a broker
//! process into tracks, with a corrupt frame, an invalid label and a label for an
//! event no track knows; and the shipped pipeline's evaluation on the embedded broker.

use std::process::Command;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

use crate::common::{bin, broker_process_with, json, read, repo};

fn tickflare(args: &[&str]) -> String {
    let out = Command::new(bin()).current_dir(repo()).args(args).output().unwrap();
    assert!(out.status.success(), "tickflare {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}


#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_and_sparse_labels_to_tracks() {
    let (_broker, addr) = broker_process_with(&["sdo-frames:1", "hek-labels:1", "solar-tracks:1", "solar-dlq:1"]);
    let dir = tempfile::tempdir().unwrap();
    let out = tickflare(&[
        "synth-sun", "--from", "data/solar/aia_171_level1.fits", "--hours", "8", "--cadence", "20", "--size", "128", "--label-every", "4",
        "--out", dir.path().to_str().unwrap(), "--brokers", &addr,
    ]);
    assert!(out.contains("frames"), "{out}");
    let labels: Vec<Value> = std::fs::read_to_string(dir.path().join("labels.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let frames = std::fs::read_dir(dir.path().join("frames")).unwrap().count();
    let first = labels[0]["time"].as_str().unwrap().to_string();
    let regions: std::collections::BTreeSet<&str> = labels.iter().map(|l| l["event_id"].as_str().unwrap()).collect();
    // A label for an event no track has (it starts one), an invalid label and a
    // corrupt frame (after the others: frames must arrive in time order).
    let p: FutureProducer = tickflare::sink::kafka::producer(&addr).unwrap();
    let send = |topic: &'static str, payload: Vec<u8>| {
        let p = p.clone();
        async move {
            p.send(FutureRecord::<[u8], [u8]>::to(topic).payload(&payload), Duration::from_secs(10)).await.unwrap();
        }
    };
    send("hek-labels", serde_json::to_vec(&serde_json::json!({"event_id": "SOL2011-NEW", "event_type": "CH", "time": first, "bbox": {"arcsec": [-200.0, -150.0, -100.0, -50.0]}})).unwrap()).await;
    send("hek-labels", br#"{"event_id": "X", "event_type": "AR", "time": "2011-02-15T00:00:00Z"}"#.to_vec()).await;
    send("sdo-frames", b"SIMPLE  =                    T / truncated".to_vec()).await;
    let summary = dir.path().join("summary.json");
    tickflare(&["run", "tests/fixtures/solar-small.toml", "--brokers", &addr, "--stop-at-end", "--metrics-addr", "off", "--summary-json", summary.to_str().unwrap()]);
    let s: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(s["frames_in"], Value::from(frames));
    assert_eq!(s["labels_in"], Value::from(labels.len() + 1));
    assert_eq!(s["dead_letters_by_reason"]["frame_unreadable"], 1);
    assert_eq!(s["dead_letters_by_reason"]["label_invalid"], 1);
    assert_eq!(s["tracker"]["tracks_started"], Value::from(regions.len() + 1));
    let dlq = read(&addr, "solar-dlq");
    let mut reasons: Vec<String> = dlq.iter().filter_map(|m| m.header("reason").map(str::to_string)).collect();
    reasons.sort();
    assert_eq!(reasons, ["frame_unreadable", "label_invalid"]);
    // Every frame carries every live track; the new event's track starts at its label.
    let tracks: Vec<Value> = read(&addr, "solar-tracks").iter().map(json).collect();
    assert_eq!(Value::from(tracks.len()), s["tracks_out"]);
    let new: Vec<&Value> = tracks.iter().filter(|t| t["event_id"] == "SOL2011-NEW").collect();
    assert!(!new.is_empty());
    assert_eq!(new[0]["source"], "label");
    assert_eq!(new[0]["event_type"], "CH");
    // Its box in arcsec is the label's (converted to pixels and back).
    let b = new[0]["bbox_arcsec"].as_array().unwrap();
    for (got, want) in b.iter().zip([-200.0, -150.0, -100.0, -50.0]) {
        assert!((got.as_f64().unwrap() - want).abs() < 1e-6, "{b:?}");
    }
    assert!(new.iter().skip(1).all(|t| t["source"] == "tracker" || t["source"] == "label"));
    for t in &tracks {
        for k in ["track_id", "event_id", "event_type", "frame_time", "bbox_px", "bbox_arcsec", "center_lat_deg", "center_lon_deg", "confidence", "source"] {
            assert!(t.get(k).is_some(), "{k} missing in {t}");
        }
    }
    // Tracks move west (Stonyhurst longitude grows) between labels.
    let id = regions.iter().next().unwrap();
    let lons: Vec<f64> = tracks.iter().filter(|t| t["event_id"] == *id).filter_map(|t| t["center_lon_deg"].as_f64()).collect();
    assert!(lons.len() > 3 && lons[lons.len() - 1] > lons[0] + 2.0, "{lons:?}");
}

/// The shipped pipeline on the embedded broker (a 24 h synthetic sequence from the
/// real AIA 171 frame, labels every 6 h, network pre-trained on EIT frames only):
/// between labels the tracker's boxes overlap the truth more, and are centred
/// closer, than the rotation-only and static baselines' on average.
#[test]
fn tracker_beats_rotation_only_on_the_shipped_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.json");
    let report = dir.path().join("report");
    tickflare(&["run", "pipelines/solar-tracking.toml", "--metrics-addr", "off", "--summary-json", summary.to_str().unwrap(), "--report", report.to_str().unwrap()]);
    let s: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let t = &s["tracking"];
    let (tr, rot, st) = (&t["tracker"], &t["rotation_only"], &t["static"]);
    eprintln!("tracker {tr}\nrotation {rot}\nstatic {st}");
    assert!(tr["n"].as_u64().unwrap() > 500);
    assert!(tr["mean_iou"].as_f64().unwrap() > rot["mean_iou"].as_f64().unwrap());
    assert!(tr["center_err_arcsec"].as_f64().unwrap() < rot["center_err_arcsec"].as_f64().unwrap());
    assert!(rot["mean_iou"].as_f64().unwrap() > st["mean_iou"].as_f64().unwrap());
    for f in ["tracking.json", "iou_by_hours.png", "center_error_by_hours.png", "frame.png"] {
        assert!(report.join(f).exists(), "{f}");
    }
}

/// Publishes a synth-sun output's labels and frames `range` (Arrow IPC files) to a broker.
async fn publish(addr: &str, dir: &std::path::Path, labels: bool, range: std::ops::Range<usize>) {
    let p: FutureProducer = tickflare::sink::kafka::producer(addr).unwrap();
    if labels {
        for l in std::fs::read_to_string(dir.join("labels.jsonl")).unwrap().lines() {
            p.send(FutureRecord::<[u8], [u8]>::to("hek-labels").payload(l.as_bytes()), Duration::from_secs(10)).await.unwrap();
        }
    }
    let mut files: Vec<_> = std::fs::read_dir(dir.join("frames")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for f in &files[range] {
        let bytes = std::fs::read(f).unwrap();
        p.send(FutureRecord::<[u8], [u8]>::to("sdo-frames").payload(&bytes), Duration::from_secs(10)).await.unwrap();
    }
}

/// Stopped half-way and restarted from its checkpoint, the tracker (network weights
/// and moments, tracks, crops, labels not yet due) continues exactly: the tracks
/// written by the two runs equal those of one uninterrupted run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_from_checkpoint_equals_uninterrupted() {
    let dir = tempfile::tempdir().unwrap();
    let seq = dir.path().join("seq");
    tickflare(&["synth-sun", "--from", "data/solar/aia_171_level1.fits", "--hours", "8", "--cadence", "20", "--size", "128", "--label-every", "3", "--out", seq.to_str().unwrap()]);
    let n = std::fs::read_dir(seq.join("frames")).unwrap().count();
    let topics = ["sdo-frames:1", "hek-labels:1", "solar-tracks:1", "solar-dlq:1"];
    let run = |addr: &str, ckpt: Option<&std::path::Path>| {
        let mut args = vec!["run", "tests/fixtures/solar-small.toml", "--brokers", addr, "--stop-at-end", "--metrics-addr", "off"];
        if let Some(c) = ckpt {
            args.extend(["--checkpoint-dir", c.to_str().unwrap()]);
        }
        tickflare(&args);
    };
    let (_a, whole) = broker_process_with(&topics);
    publish(&whole, &seq, true, 0..n).await;
    run(&whole, None);
    let (_b, split) = broker_process_with(&topics);
    let ckpt = dir.path().join("ckpt");
    publish(&split, &seq, true, 0..n / 2).await;
    run(&split, Some(&ckpt));
    let half = read(&split, "solar-tracks").len();
    assert!(half > 0);
    publish(&split, &seq, false, n / 2..n).await;
    run(&split, Some(&ckpt));
    let (x, y) = (read(&whole, "solar-tracks"), read(&split, "solar-tracks"));
    assert!(y.len() > half);
    assert_eq!(x.len(), y.len());
    for (a, b) in x.iter().zip(&y) {
        assert_eq!(json(a), json(b));
    }
    // The checkpoint against topics that hold fewer frames than it has read (they
    // were recreated): refused, not read from past their end.
    let (_c, fewer) = broker_process_with(&topics);
    publish(&fewer, &seq, true, 0..n / 4).await;
    let out = Command::new(bin())
        .current_dir(repo())
        .args(["run", "tests/fixtures/solar-small.toml", "--brokers", &fewer, "--stop-at-end", "--metrics-addr", "off", "--checkpoint-dir"])
        .arg(&ckpt)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("the checkpoint resumes at offset"), "{err}");
    assert!(read(&fewer, "solar-tracks").is_empty());
}

/// A live solar run (no `--stop-at-end`) serves its metrics on the shared endpoint:
/// frames, labels, dead letters and track records as the input and the tracks topic
/// hold them, label IoUs in [0, 1]; `/readyz` is ready while it consumes; SIGTERM
/// stops it cleanly.
#[test]
fn solar_metrics_are_served_and_match_the_topics() {
    use crate::telemetry::{free_port, get, sum, wait_for};
    let dir = tempfile::tempdir().unwrap();
    let (frames, labels) = crate::solar_crash::sequence(&dir.path().join("seq"));
    let (_broker, addr) = crate::solar_crash::seeded_broker(&frames, &labels);
    let http = format!("127.0.0.1:{}", free_port());
    let mut daemon = crate::common::Child(
        Command::new(bin())
            .current_dir(repo())
            .args(["run", "tests/fixtures/solar-crash.toml", "--brokers", &addr, "--metrics-addr", &http, "--summary-json"])
            .arg(dir.path().join("summary.json"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let at = |body: &str, name: &str, want: &[(&str, &str)]| sum(body, name, want).unwrap_or(-1.0);
    wait_for("every frame tracked", 120, || {
        let (_, b) = get(&http, "/metrics")?;
        (at(&b, "tickflare_solar_frames_total", &[]) == frames.len() as f64).then_some(())
    });
    assert_eq!(get(&http, "/readyz").unwrap().0, 200);
    // The last frame is counted when it is taken; its records and the last labels may
    // still be on their way: wait for the topic and the counters to agree.
    let (body, tracks) = wait_for("the tracks topic holds every counted record", 60, || {
        let (_, b) = get(&http, "/metrics")?;
        let tracks = read(&addr, "solar-tracks").len();
        let settled = at(&b, "tickflare_solar_track_records_total", &[]) == tracks as f64
            && at(&b, "tickflare_solar_labels_total", &[("pipeline", "solar-crash")]) == labels.len() as f64 + 1.0;
        settled.then_some((b, tracks))
    });
    assert_eq!(at(&body, "tickflare_solar_labels_total", &[("pipeline", "solar-crash")]), labels.len() as f64 + 1.0);
    assert_eq!(at(&body, "tickflare_dead_letters_total", &[("reason", "frame_unreadable")]), 1.0);
    assert_eq!(at(&body, "tickflare_dead_letters_total", &[("reason", "label_invalid")]), 1.0);
    assert!(at(&body, "tickflare_solar_live_tracks", &[]) > 0.0);
    assert!(at(&body, "tickflare_solar_labels_scored_total", &[]) > 0.0);
    for who in ["tracker", "rotation_only"] {
        let iou = at(&body, "tickflare_solar_label_iou_mean", &[("forecaster", who)]);
        assert!((0.0..=1.0).contains(&iou) && iou > 0.0, "{who}: {iou}");
    }
    Command::new("kill").args(["-TERM", &daemon.0.id().to_string()]).status().unwrap();
    let status = wait_for("exit", 30, || daemon.0.try_wait().unwrap());
    assert!(status.success());
    // The counters kept frame by frame add up to the run's totals.
    let s: Value = serde_json::from_slice(&std::fs::read(dir.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["tracks_out"], Value::from(tracks));
    assert_eq!(Value::from(at(&body, "tickflare_solar_tracker_updates_total", &[]) as u64), s["tracker"]["network_updates"]);
    assert_eq!(Value::from(at(&body, "tickflare_solar_labels_scored_total", &[]) as u64), s["at_labels"]["n"]);
}

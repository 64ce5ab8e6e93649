//! Exactly-once solar tracks: the tracking pipeline killed (aborts right after a
//! checkpoint and right after a publish, then SIGKILLs at seeded random times) and
//! restarted over and over must leave exactly the track topic, the dead-letter topic
//! and the tracker (network weights, AdamW moments, tracks) of a run that never
//! stopped — against `tickflare broker` running as its own process.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};
use tickflare::source::kafka::ReadMessage;
use tickflare::state::store::CheckpointStore;

use crate::common::*;

const PIPELINE: &str = "tests/fixtures/solar-crash.toml";
const NAME: &str = "solar-crash";
const TOPICS: [&str; 4] = ["sdo-frames:2", "hek-labels:1", "solar-tracks:1", "solar-dlq:1"];

/// A synthetic sequence from the shipped real AIA 171 frame: frames (Arrow IPC) and
/// its catalogue-style labels.
pub fn sequence(dir: &Path) -> (Vec<Vec<u8>>, Vec<String>) {
    let out = Command::new(bin())
        .current_dir(repo())
        .args(["synth-sun", "--from", "data/solar/aia_171_level1.fits", "--hours", "14", "--cadence", "15", "--size", "128", "--label-every", "3", "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut files: Vec<_> = std::fs::read_dir(dir.join("frames")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let frames = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let labels = std::fs::read_to_string(dir.join("labels.jsonl")).unwrap().lines().map(str::to_string).collect();
    (frames, labels)
}

/// A broker process holding the sequence: frames alternating over two partitions
/// with their observation times as timestamps, labels, a corrupt frame and an
/// invalid label (both dead letters).
pub fn seeded_broker(frames: &[Vec<u8>], labels: &[String]) -> (Child, String) {
    let (child, addr) = broker_process_with(&TOPICS);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let p: FutureProducer = tickflare::sink::kafka::producer(&addr).unwrap();
        let send = |topic: &'static str, partition: i32, payload: Vec<u8>, t: Option<i64>| {
            let p = p.clone();
            async move {
                let mut r = FutureRecord::<[u8], [u8]>::to(topic).partition(partition).payload(&payload);
                if let Some(t) = t {
                    r = r.timestamp(t);
                }
                p.send(r, Duration::from_secs(10)).await.unwrap();
            }
        };
        // (Fixed timestamps: the two brokers must hold the same input.)
        let t0 = 1_297_728_000_000;
        for (i, l) in labels.iter().enumerate() {
            send("hek-labels", 0, l.as_bytes().to_vec(), Some(t0 + i as i64)).await;
        }
        send("hek-labels", 0, br#"{"event_id": "X", "event_type": "AR"}"#.to_vec(), Some(t0 - 1)).await;
        let mut last = 0;
        for (i, f) in frames.iter().enumerate() {
            let t = tickflare::solar::frame::decode(f, usize::MAX).unwrap().time_ms;
            send("sdo-frames", i as i32 % 2, f.clone(), Some(t)).await;
            if i == frames.len() / 3 {
                send("sdo-frames", 1 - i as i32 % 2, b"SIMPLE  =                    T / truncated".to_vec(), Some(t + 1)).await;
            }
            last = t;
        }
        assert!(last > 0);
    });
    (child, addr)
}

fn daemon(addr: &str, ckpt: &Path, fault: Option<&str>) -> Command {
    let mut c = Command::new(bin());
    c.current_dir(repo())
        .args(["run", PIPELINE, "--stop-at-end", "--metrics-addr", "off", "--brokers", addr, "--checkpoint-dir"])
        .arg(ckpt)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match fault {
        Some(f) => c.env("TICKFLARE_FAULT", f),
        None => c.env_remove("TICKFLARE_FAULT"),
    };
    c
}

/// The newest checkpoint: its id (frames processed), the tracker's part of
/// `state.json`, the input position, and the tracker's tensors by name.
fn final_state(dir: &Path) -> (i64, serde_json::Value, serde_json::Value, std::collections::BTreeMap<String, Vec<u8>>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = CheckpointStore::open(dir.to_str().unwrap(), NAME, 2).unwrap();
        let (m, files) = store.latest(0).await.unwrap().expect("a checkpoint");
        let state: serde_json::Value = serde_json::from_slice(&files["state.json"]).unwrap();
        let st = safetensors::SafeTensors::deserialize(&files["tracker.safetensors"]).unwrap();
        let tensors = st.tensors().into_iter().map(|(n, t)| (n, t.data().to_vec())).collect();
        (m.next_offset, state["tracker"].clone(), state["position"].clone(), tensors)
    })
}

/// A message's key, payload, headers and timestamp.
type Observed = (Option<Vec<u8>>, Option<Vec<u8>>, Vec<(String, Vec<u8>)>, Option<i64>);

/// Everything observable of a message but its offset.
fn observable(ms: Vec<ReadMessage>) -> Vec<Observed> {
    ms.into_iter().map(|m| (m.key, m.payload, m.headers, m.timestamp_ms)).collect()
}

#[test]
fn solar_crash_restarts_equal_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let (frames, labels) = sequence(&dir.path().join("seq"));
    assert!(frames.len() > 40, "{} frames", frames.len());

    // The reference: one uninterrupted run.
    let (_ref_broker, ref_addr) = seeded_broker(&frames, &labels);
    let ref_ckpt = dir.path().join("ref");
    let t0 = Instant::now();
    let out = daemon(&ref_addr, &ref_ckpt, None).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let full = t0.elapsed();
    let (ref_tracks, ref_dlq) = (read(&ref_addr, "solar-tracks"), read(&ref_addr, "solar-dlq"));
    assert!(ref_tracks.len() > 100, "{} track records", ref_tracks.len());
    assert_eq!(ref_dlq.len(), 2);

    // The same input, interrupted again and again.
    let seed = crash_seed();
    eprintln!("uninterrupted run {full:?}");
    let mut rng = Lcg(seed);
    let (_broker, addr) = seeded_broker(&frames, &labels);
    let ckpt = dir.path().join("crashed");
    let mut interruptions = 0;
    // An abort right after the first publish (before any checkpoint: the restart
    // starts afresh and must not publish the first frame's tracks twice), right
    // after a checkpoint, and right after a later publish.
    for fault in ["after_publish:1", "after_checkpoint:2", "after_publish:13"] {
        let out = daemon(&addr, &ckpt, Some(fault)).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("TICKFLARE_FAULT: aborting"), "{fault}: {err}");
        interruptions += 1;
    }
    for round in 0..8 {
        // Short enough that the rounds do not finish the input (each resumes from a
        // checkpoint, so progress per round is small), even on a loaded machine.
        let wait = Duration::from_millis(150 + rng.below(full.as_millis() as u64 / 6 + 1));
        eprint!("round {round}: ");
        if interrupt_after(daemon(&addr, &ckpt, None).stderr(Stdio::null()), wait, "KILL") {
            interruptions += 1;
        }
    }
    assert!(interruptions >= 3 + 4, "only {interruptions} interruptions landed (seed {seed})");
    let out = daemon(&addr, &ckpt, None).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let (tracks, dlq) = (read(&addr, "solar-tracks"), read(&addr, "solar-dlq"));
    assert_eq!(tracks.len(), ref_tracks.len(), "track records (seed {seed})");
    let (a, b) = (observable(ref_tracks), observable(tracks));
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(x == y, "track record {i} differs (seed {seed}): {:?} vs {:?}", String::from_utf8_lossy(x.1.as_deref().unwrap_or_default()), String::from_utf8_lossy(y.1.as_deref().unwrap_or_default()));
    }
    let show = |ms: &[ReadMessage]| ms.iter().map(|m| format!("{:?}", m.headers.iter().map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v))).collect::<Vec<_>>())).collect::<Vec<_>>();
    let (sa, sb) = (show(&ref_dlq), show(&dlq));
    assert!(observable(ref_dlq) == observable(dlq), "dead letters differ (seed {seed}):\n{sa:#?}\n{sb:#?}");
    let (id_a, tracker_a, pos_a, tensors_a) = final_state(&ref_ckpt);
    let (id_b, tracker_b, pos_b, tensors_b) = final_state(&ckpt);
    assert_eq!(id_a, frames.len() as i64 + 1, "every frame and the corrupt one processed");
    assert_eq!(id_a, id_b);
    assert_eq!(pos_a, pos_b);
    assert!(tracker_a["counts"]["network_updates"].as_u64().unwrap() > 0);
    assert_eq!(tracker_a, tracker_b, "tracker state (seed {seed})");
    assert!(tensors_a.len() > 10 && tensors_a.keys().eq(tensors_b.keys()), "{:?} vs {:?}", tensors_a.keys(), tensors_b.keys());
    for (name, t) in &tensors_a {
        assert!(*t == tensors_b[name], "tensor {name} differs (seed {seed})");
    }
}

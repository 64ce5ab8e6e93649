//! Seeded mutation fuzzing of every decoder, with a fixed case budget per target
//! (`TICKFLARE_FUZZ_CASES` scales it; `scripts/fuzz.sh` runs long ones): valid
//! records — the shipped samples — with bytes flipped, set to JSON/CSV punctuation,
//! deleted, duplicated, inserted, truncated or spliced from another record, plus pure
//! noise. No decoder may panic, and every refusal must carry a dead-letter reason.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use tickflare::model::rand::Draws;
use tickflare::pipeline::config::PipelineConfig;
use tickflare::source::decode::Decoder;
use tickflare::source::mapping::FileMessages;
use tickflare::source::schema::TopicSchema;

use crate::common::repo;

/// Cases per target: `base` × `TICKFLARE_FUZZ_CASES / 1000` (default 1000).
fn budget(base: usize) -> usize {
    let scale = std::env::var("TICKFLARE_FUZZ_CASES").ok().and_then(|v| v.parse::<usize>().ok()).unwrap_or(1000);
    (base * scale / 1000).max(1)
}

/// The seed of a run: `TICKFLARE_FUZZ_SEED`, else fixed (so `cargo test` is
/// repeatable); printed so a failure can be replayed.
fn seed() -> u64 {
    let s = std::env::var("TICKFLARE_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(20261202);
    eprintln!("fuzz seed {s} (TICKFLARE_FUZZ_SEED replays it)");
    s
}

const PUNCT: &[u8] = b"\"{}[],:\\-+.eE0123456789 \n\r\t\x00\xff\xc3nulltruefalseNaN";

/// One mutation of `base` (with `other` for splices).
fn mutate(base: &[u8], other: &[u8], r: &mut Draws) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..1 + r.below(4) {
        let n = v.len().max(1) as u64;
        let at = r.below(n) as usize;
        match r.below(8) {
            0 if !v.is_empty() => {
                let i = at.min(v.len() - 1);
                v[i] ^= 1 << r.below(8);
            }
            1 if !v.is_empty() => {
                let i = at.min(v.len() - 1);
                v[i] = PUNCT[r.below(PUNCT.len() as u64) as usize];
            }
            2 if !v.is_empty() => {
                let end = (at + 1 + r.below(16) as usize).min(v.len());
                v.drain(at.min(end)..end);
            }
            3 if !v.is_empty() => {
                let end = (at + 1 + r.below(16) as usize).min(v.len());
                let piece = v[at.min(end)..end].to_vec();
                v.splice(at..at, piece);
            }
            4 => {
                let piece: Vec<u8> = (0..1 + r.below(8)).map(|_| r.below(256) as u8).collect();
                v.splice(at.min(v.len())..at.min(v.len()), piece);
            }
            5 => v.truncate(at),
            6 if !other.is_empty() => {
                let from = r.below(other.len() as u64) as usize;
                v.truncate(at);
                v.extend_from_slice(&other[from..]);
            }
            _ => {
                let len = r.below(64) as usize;
                v = (0..len).map(|_| r.below(256) as u8).collect();
            }
        }
    }
    v
}

/// Runs `f` on `cases` mutations of the seeds; panics are failures (with the input).
fn fuzz(name: &str, seeds: &[Vec<u8>], cases: usize, mut f: impl FnMut(&[u8])) {
    let mut r = Draws(seed() ^ name.len() as u64);
    for i in 0..cases {
        let a = &seeds[r.below(seeds.len() as u64) as usize];
        let b = &seeds[r.below(seeds.len() as u64) as usize];
        let input = mutate(a, b, &mut r);
        if catch_unwind(AssertUnwindSafe(|| f(&input))).is_err() {
            panic!("{name}: case {i} panicked on {} bytes: {:?}", input.len(), String::from_utf8_lossy(&input[..input.len().min(300)]));
        }
    }
}

fn lines(path: &str, n: usize) -> Vec<Vec<u8>> {
    std::fs::read_to_string(repo().join(path)).unwrap().lines().filter(|l| !l.trim().is_empty()).take(n).map(|l| l.as_bytes().to_vec()).collect()
}

/// market-bars' pipeline (EUR/USD hourly bars from a CSV file) and its input schema.
fn market_bars() -> (PipelineConfig, Arc<TopicSchema>) {
    let cfg = PipelineConfig::load(&repo().join("pipelines/market-bars.toml")).unwrap().value;
    let schema = Arc::new(TopicSchema::load(&cfg.resolve(&cfg.source.schema)).unwrap());
    (cfg, schema)
}

/// The first `n` messages market-bars' file mapping makes of the shipped EUR/USD
/// hourly bars (JSON in `ohlcv-bars.json`'s shape), with each one's time in ms.
fn bar_messages(n: usize) -> Vec<(Vec<u8>, i64)> {
    let (cfg, schema) = market_bars();
    let mut m = FileMessages::open(&repo().join("data/eurusd_1h_2017_q1.csv"), &cfg.source.file, schema, &cfg.source.time, Some(&cfg.source.key)).unwrap();
    let mut out = Vec::new();
    while let Some(r) = m.next_message() {
        let msg = r.unwrap();
        out.push((msg.payload.to_vec(), msg.time_ms.expect("a bar's time")));
        if out.len() == n {
            break;
        }
    }
    out
}

/// The schema-driven JSON decoder, on every shipped JSON input schema with records of
/// its own: accepted records become rows, refused ones a reason.
#[test]
fn json_decoders_never_panic() {
    let flat = vec![br#"{"symbol":"BTCUSDT","ts":1742944020773,"price":87232.0,"size":0.5}"#.to_vec(), br#"{"symbol":"ETH","ts":"2025-03-25T23:07:00.773Z","price":2059.1}"#.to_vec()];
    let bars = bar_messages(50);
    // series.json's records, made from the same bars' closes: the time as text, or
    // as epoch milliseconds (the schema reads an integer time as ms).
    let series: Vec<Vec<u8>> = bars
        .iter()
        .enumerate()
        .map(|(i, (bar, ms))| {
            let v: serde_json::Value = serde_json::from_slice(bar).unwrap();
            let time = if i % 2 == 0 { v["time"].clone() } else { serde_json::json!(ms) };
            serde_json::to_vec(&serde_json::json!({"series": "eurusd_1h_2017_q1", "time": time, "value": v["close"]})).unwrap()
        })
        .collect();
    for (schema, seeds) in [
        ("schemas/binance-ticks.json", lines("data/binance_ticks_sample.jsonl", 200)),
        ("schemas/daily-demand.json", lines("data/daily_demand.jsonl", 50)),
        ("schemas/flat-ticks.json", flat),
        ("schemas/ohlcv-bars.json", bars.into_iter().map(|(b, _)| b).collect()),
        ("schemas/series.json", series),
    ] {
        let s = Arc::new(TopicSchema::load(&repo().join(schema)).unwrap());
        // The seeds themselves are records of the schema (else only refusals are fuzzed).
        let mut whole = Decoder::new(s.clone());
        for seed in &seeds {
            whole.push(Some(seed), 0).unwrap_or_else(|e| panic!("{schema}: a seed is refused: {}", e.reason()));
        }
        assert_eq!(whole.finish().num_rows(), seeds.len());
        let mut d = Decoder::new(s);
        let mut accepted = 0;
        fuzz(schema, &seeds, budget(4000), |input| match d.push(Some(input), 0) {
            Ok(()) => accepted += 1,
            Err(e) => assert!(!e.reason().is_empty()),
        });
        let batch = d.finish();
        assert_eq!(batch.num_rows(), accepted, "{schema}: every accepted record is one row");
        assert!(accepted > 0, "{schema}: some mutations stay valid");
    }
}

/// Solar labels (HEK-style JSON): a label or a reason.
#[test]
fn solar_labels_never_panic() {
    let seeds = vec![
        br#"{"event_id": "AR-1", "event_type": "AR", "time": "2011-02-15T06:00:00Z", "bbox": {"px": [10, 20, 40, 60]}}"#.to_vec(),
        br#"{"event_id": "SOL2011-NEW", "event_type": "CH", "time": "2011-02-15T00:00:00Z", "bbox": {"arcsec": [-200.0, -150.0, -100.0, -50.0]}}"#.to_vec(),
    ];
    fuzz("labels", &seeds, budget(4000), |input| {
        if let Err(e) = tickflare::solar::stream::parse_label(input) {
            assert!(!e.is_empty());
        }
    });
}

/// Solar frames: the shipped FITS file and an Arrow IPC frame made from it, mutated.
#[test]
fn solar_frames_never_panic() {
    let fits = std::fs::read(repo().join("data/solar/aia_171_level1.fits")).unwrap();
    let frame = tickflare::solar::frame::decode(&fits, 1 << 24).unwrap();
    let ipc = tickflare::solar::frame::encode_ipc(&frame).unwrap();
    for (name, seed, cases) in [("fits", fits, budget(400)), ("ipc", ipc, budget(1500))] {
        fuzz(name, std::slice::from_ref(&seed), cases, |input| {
            if let Err(e) = tickflare::solar::frame::decode(input, 1 << 24) {
                assert!(!e.reason.is_empty());
            }
        });
    }
}

/// CSV through a pipeline's file mapping (market-bars: EUR/USD hourly bars): each
/// mutated file is read record by record; a record is a message or an error.
#[test]
fn csv_files_never_panic() {
    let (cfg, schema) = market_bars();
    let text = std::fs::read_to_string(repo().join("data/eurusd_1h_2017_q1.csv")).unwrap();
    let seed: Vec<u8> = text.lines().take(12).collect::<Vec<_>>().join("\n").into_bytes();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bars.csv");
    fuzz("csv", std::slice::from_ref(&seed), budget(300), |input| {
        std::fs::write(&path, input).unwrap();
        let Ok(mut m) = FileMessages::open(&path, &cfg.source.file, schema.clone(), &cfg.source.time, Some(&cfg.source.key)) else { return };
        while let Some(r) = m.next_message() {
            if let Err(e) = r {
                assert!(!e.to_string().is_empty());
            }
        }
    });
}

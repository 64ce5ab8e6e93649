//! `cargo bench --bench stages`: the market pipeline's per-partition stages on one
//! core — decode, the feature SQL, and the model stage (labelling, learning,
//! predicting, scoring, the experts, encoding) — over the Binance tick file (the full
//! one in `../shared/data` when present, else the shipped sample) as one partition in
//! batches of 8,192. Nanoseconds per record, best of nine rounds, each from a fresh
//! partition state.

use std::path::Path;
use std::time::Instant;

use tickflare::sink::Outputs;
use tickflare::source::batch::PartitionInput;
use tickflare::state::PartitionState;
use tickflare::telemetry::events::StageTimings;

const ROUNDS: usize = 9;
const BATCH: usize = 8192;

fn main() {
    // One feature plan and one thread for the per-key model work: a one-core figure.
    std::env::set_var("TICKFLARE_WORKERS", "1");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let built = match rt.block_on(tickflare::pipeline::build::build(&root.join("pipelines/market-ticks.toml"))) {
        Ok(b) => b,
        Err(p) => panic!("pipeline has problems: {p:?}"),
    };
    let input = tickflare::cli::bench::bench_input(&built, None).expect("input");
    let lines = tickflare::source::sample::read_lines(&input).expect("input");
    let key = |l: &[u8]| tickflare::source::sample::key_of(l, &built.schema, &built.config.source.key);
    let keys: Vec<Option<String>> = lines.iter().map(|l| key(l)).collect();
    let (mut best_total, mut best_decode, mut best_features) = (f64::INFINITY, f64::INFINITY, f64::INFINITY);
    let mut predictions = 0;
    for _ in 0..ROUNDS {
        let mut state = PartitionState::new(0);
        let mut input = PartitionInput::new(0, built.schema.clone());
        let mut out = Outputs::default();
        let mut timings = StageTimings::default();
        let t0 = Instant::now();
        predictions = 0;
        for (chunk, (ls, ks)) in lines.chunks(BATCH).zip(keys.chunks(BATCH)).enumerate() {
            for (i, (l, k)) in ls.iter().zip(ks).enumerate() {
                input.push(k.as_deref().map(str::as_bytes), Some(l), (chunk * BATCH + i) as i64, None);
            }
            rt.block_on(built.processor.process(&mut state, &mut input, &mut out, &mut timings)).expect("processed");
            predictions += out.predictions.len();
            out.clear();
        }
        let n = lines.len() as f64;
        best_total = best_total.min(t0.elapsed().as_secs_f64() * 1e9 / n);
        best_decode = best_decode.min(timings.decode.as_secs_f64() * 1e9 / n);
        best_features = best_features.min(timings.features.as_secs_f64() * 1e9 / n);
    }
    println!(
        "stages: {} records ({predictions} predictions) of {}, one partition, batches of {BATCH} | all {best_total:.0} ns/record | decode {best_decode:.0} | features {best_features:.0} | the rest (model stage, late check) ~{:.0}",
        lines.len(),
        input.display(),
        best_total - best_decode - best_features
    );
}

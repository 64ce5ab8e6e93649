//! `tickflare bench-models`: predict + update throughput (rows/s) of every model kind
//! on one device, on a synthetic stream with 8 features (windows of 8 rows for the
//! sequence models), at mini-batch sizes 1, 32 and 256: predict the batch, then one
//! optimizer step on it (models without a batched path — RLS, LSTM, CNN — step once
//! per row, so their rows/s hardly changes). The pipeline itself uses batch 1.

use std::process::ExitCode;
use std::time::Instant;

use crate::model::{self, device};
use crate::pipeline::config::ModelConfig;

#[derive(clap::Args, Debug)]
pub struct BenchModelsArgs {
    /// Labelled rows per model kind.
    #[arg(long, default_value_t = 2000)]
    pub rows: usize,
    /// `cpu`, `cuda` or `auto`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Only these kinds (default: all).
    #[arg(long = "kind")]
    pub kinds: Vec<String>,
}

pub async fn bench_models(a: BenchModelsArgs) -> anyhow::Result<ExitCode> {
    let dev = device(&a.device)?;
    let d = 8usize;
    let all = ["linear", "rls", "mlp", "lstm", "cnn1d"];
    let kinds: Vec<&str> = if a.kinds.is_empty() { all.to_vec() } else { a.kinds.iter().map(String::as_str).collect() };
    println!("device {:?}, {} rows per kind, {d} features", a.device, a.rows);
    for kind in kinds {
        let window = if matches!(kind, "lstm" | "cnn1d") { 8 } else { 1 };
        let cfg: ModelConfig = toml::from_str(&format!(
            "kind = \"{kind}\"\noptimizer = \"adamw\"\nlearning_rate = 0.001\nhidden = [32]\nwindow = {window}\nkernel = 3\n\
             features = [\"f\"]\ntarget = \"y\"\nhorizon = 1"
        ))?;
        let n = d * window;
        let mut line = format!("{kind:<8}");
        for batch in [1usize, 32, 256] {
            let mut m = model::build(&cfg, n, &dev)?;
            let xs: Vec<f64> = (0..batch * n).map(|j| ((j * 31 + 17) % 101) as f64 / 50.0 - 1.0).collect();
            let ys: Vec<f64> = xs.chunks(n).map(|x| x[0] - 0.5 * x[1]).collect();
            let mut out = Vec::new();
            let steps = a.rows.div_ceil(batch);
            let started = Instant::now();
            for _ in 0..steps {
                m.predict_batch(&xs, n, &mut out)?;
                m.update_batch(&xs, n, &ys)?;
            }
            let s = started.elapsed().as_secs_f64();
            line.push_str(&format!("  batch {batch:>3}: {:>10.0} rows/s", (steps * batch) as f64 / s));
        }
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

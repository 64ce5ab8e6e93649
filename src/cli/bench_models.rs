//! `tickflare bench-models`: predict + update throughput (rows/s) of every model kind
//! on one device, on a synthetic stream with 8 features (windows of 8 rows for the
//! sequence models). One row per optimizer step, as the pipeline does.

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
        let mut m = model::build(&cfg, n, &dev)?;
        let mut x = vec![0.0f64; n];
        let started = Instant::now();
        for i in 0..a.rows {
            for (j, v) in x.iter_mut().enumerate() {
                *v = ((i * 31 + j * 17) % 101) as f64 / 50.0 - 1.0;
            }
            let y = x[0] - 0.5 * x[1];
            m.predict(&x)?;
            m.update(&x, y)?;
        }
        let s = started.elapsed().as_secs_f64();
        println!("{kind:<8} {:>10.0} rows/s   ({:.1} µs per predict+update)", a.rows as f64 / s, 1e6 * s / a.rows as f64);
    }
    Ok(ExitCode::SUCCESS)
}

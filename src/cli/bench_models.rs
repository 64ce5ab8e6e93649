//! `tickflare bench-models`: predict + update throughput (rows/s) of every model kind
//! on one device, on a synthetic stream with 8 features (windows of 8 rows for the
//! sequence models), at mini-batch sizes 1, 32 and 256: predict the batch, then one
//! optimizer step on it (models without a batched path — RLS, LSTM, CNN — step once
//! per row, so their rows/s hardly changes). The pipeline itself uses batch 1.
//!
//! With `--keys K` (K > 1) it measures what a partition with K keyed models does: K
//! models, rows arriving round-robin over the keys, each row one predict and one
//! update of its key's model, queued per key in batches of 4,096 rows and run as the
//! pipeline runs them (`model::keyed`: key by key, on one thread and on every core).

use std::process::ExitCode;
use std::time::Instant;

use crate::model::keyed::{self, KeyOps};
use crate::model::{self, device};
use crate::pipeline::config::choice::{DeviceChoice, ModelKind, Precision};
use crate::pipeline::config::ModelConfig;

#[derive(clap::Args, Debug)]
pub struct BenchModelsArgs {
    /// Labelled rows per model kind (default 2,000; with `--keys K`, 100 per key and
    /// at least 2,000 — with fewer, building the models is most of what is timed —
    /// and never fewer than K).
    #[arg(long)]
    pub rows: Option<usize>,
    /// `cpu`, `cuda` or `auto`.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    /// Only these kinds (default: all).
    #[arg(long = "kind")]
    pub kinds: Vec<ModelKind>,
    /// Keyed models per partition (rows round-robin over them).
    #[arg(long, default_value_t = 1)]
    pub keys: usize,
    /// `f64` or `f32` (`model.precision`: the networks — lstm, mlp, cnn1d; the other
    /// kinds are skipped under f32).
    #[arg(long, default_value = "f64")]
    pub precision: Precision,
    /// With `--keys`: run the keyed LSTMs as one stacked bank (`model::bank`: each
    /// wave of at most one row per key is one batched predict and one batched
    /// update) instead of key by key; other kinds are skipped.
    #[arg(long)]
    pub bank: bool,
    /// With `--keys`: each row's update comes this many of its key's rows after its
    /// prediction, as when its label arrives later (a pipeline's `horizon`): the
    /// update then runs a forward pass of its own, at the weights of then. With 0
    /// (the default) a row is predicted and updated back to back, and the LSTM's
    /// update reuses the prediction's pass (the MLP and CNN always run their own).
    #[arg(long, default_value_t = 0)]
    pub lag: usize,
    /// Also write the results as a JSON list of {kind, keys, batch, threads, rows_per_s, device, precision}.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

/// One measured configuration.
#[derive(Debug, serde::Serialize)]
pub struct ModelRate {
    pub kind: String,
    pub keys: usize,
    pub batch: usize,
    /// Threads the keys' work was spread over.
    pub threads: usize,
    pub rows_per_s: f64,
    pub device: String,
    /// `f64` or `f32`.
    pub precision: String,
    /// Keyed models run as one stacked bank (`--bank`).
    pub bank: bool,
    /// Rows of its key between a row's prediction and its update (`--lag`).
    pub lag: usize,
    /// With keys: the share of the time spent inside the models' predict and update
    /// calls (the rest is queueing the rows and running the keys' queues).
    pub model_share: Option<f64>,
}

pub async fn bench_models(a: BenchModelsArgs) -> anyhow::Result<ExitCode> {
    let dev = device(a.device)?;
    let d = 8usize;
    let all = [ModelKind::Linear, ModelKind::Rls, ModelKind::Mlp, ModelKind::Lstm, ModelKind::Cnn1d];
    let kinds: Vec<ModelKind> = if a.kinds.is_empty() { all.to_vec() } else { a.kinds.clone() };
    let dev_name = model::device_name(&dev).to_string();
    // Keyed: at least one row per key.
    let rows = match a.rows {
        Some(r) if a.keys > 1 => r.max(a.keys),
        Some(r) => r,
        None if a.keys > 1 => a.keys.saturating_mul(100).max(2000),
        None => 2000,
    };
    println!("device {:?}, {rows} rows per kind, {d} features, {} key(s), {}, lag {}", a.device, a.keys, a.precision, a.lag);
    let precision = a.precision.as_str().to_string();
    let mut rates = Vec::new();
    for kind in kinds {
        if (a.precision == Precision::F32 && !model::has_f32(kind)) || (a.bank && kind != ModelKind::Lstm) {
            continue;
        }
        let window = if kind.is_sequence() { 8 } else { 1 };
        let cfg: ModelConfig = toml::from_str(&format!(
            "kind = \"{kind}\"\noptimizer = \"adamw\"\nlearning_rate = 0.001\nhidden = [32]\nwindow = {window}\nkernel = 3\nprecision = \"{}\"\n\
             features = [\"f\"]\ntarget = \"y\"\nhorizon = 1\nscope = \"per_key\"\nbank = {}",
            a.precision,
            a.bank && a.keys > 1
        ))?;
        let n = d * window;
        let mut line = format!("{kind:<8}");
        if a.keys > 1 && a.bank {
            // Every key a row of one bank: `run_keys` runs them in waves, as a pipeline does.
            let bank = model::new_bank(&cfg, n, &dev)?;
            let build = || -> crate::error::Result<Box<dyn model::OnlineModel>> { Ok(Box::new(model::bank::BankKey::new(&bank)?)) };
            let (rate, share) = keyed_rate(&build, n, a.keys, rows, 1, a.lag)?;
            println!("{kind:<8}  {} keys, one stacked bank: {rate:>10.0} rows/s ({:.0} % of the time in the bank's predict and update)", a.keys, 100.0 * share);
            if let Some(p) = model::bank::kernel_profile() {
                println!("{p}");
            }
            rates.push(ModelRate { kind: kind.to_string(), keys: a.keys, batch: 1, threads: 1, rows_per_s: rate, device: dev_name.clone(), precision: precision.clone(), bank: true, lag: a.lag, model_share: Some(share) });
            continue;
        }
        if a.keys > 1 {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let mut counts = vec![1];
            if cores > 1 {
                counts.push(cores);
            }
            for threads in counts {
                let build = || model::build(&cfg, n, &dev);
                let (rate, share) = keyed_rate(&build, n, a.keys, rows, threads, a.lag)?;
                println!("{kind:<8}  {} keys, {threads} thread(s): {rate:>10.0} rows/s", a.keys);
                // With threads, the models' time is summed over them: a share only for one.
                let model_share = (threads == 1).then_some(share);
                rates.push(ModelRate { kind: kind.to_string(), keys: a.keys, batch: 1, threads, rows_per_s: rate, device: dev_name.clone(), precision: precision.clone(), bank: false, lag: a.lag, model_share });
            }
            continue;
        }
        for batch in [1usize, 32, 256] {
            let mut m = model::build(&cfg, n, &dev)?;
            let xs: Vec<f64> = (0..batch * n).map(|j| ((j * 31 + 17) % 101) as f64 / 50.0 - 1.0).collect();
            let ys: Vec<f64> = xs.chunks(n).map(|x| x[0] - 0.5 * x[1]).collect();
            let mut out = Vec::new();
            let steps = rows.div_ceil(batch);
            let started = Instant::now();
            for _ in 0..steps {
                m.predict_batch(&xs, n, &mut out)?;
                m.update_batch(&xs, n, &ys)?;
            }
            let s = started.elapsed().as_secs_f64();
            let rate = (steps * batch) as f64 / s;
            line.push_str(&format!("  batch {batch:>3}: {rate:>10.0} rows/s"));
            rates.push(ModelRate { kind: kind.to_string(), keys: 1, batch, threads: 1, rows_per_s: rate, device: dev_name.clone(), precision: precision.clone(), bank: false, lag: 0, model_share: None });
        }
        println!("{line}");
    }
    if let Some(p) = a.json {
        std::fs::write(&p, serde_json::to_string_pretty(&rates)?)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Rows/s of K keyed models fed round-robin, each row a predict of its key's model
/// and an update — of the same row, or (`lag` > 0) of the key's row `lag` rows back
/// — in batches of 4,096 rows run through `model::keyed`; and the share of the time
/// inside the models' predict and update calls.
fn keyed_rate(build: keyed::Build<'_>, n: usize, keys: usize, rows: usize, threads: usize, lag: usize) -> anyhow::Result<(f64, f64)> {
    let mut slots: Vec<Option<Box<dyn model::OnlineModel>>> = (0..keys).map(|_| None).collect();
    let mut ops: Vec<KeyOps> = (0..keys).map(|_| KeyOps::default()).collect();
    let lags = Lags { keys, lag };
    let xs: Vec<f64> = (0..lags.windows() * n).map(|j| ((j * 31 + 17) % 101) as f64 / 50.0 - 1.0).collect();
    let window = |w: usize| &xs[w * n..(w + 1) * n];
    let started = Instant::now();
    let mut in_model = std::time::Duration::ZERO;
    let mut r = 0;
    while r < rows {
        let end = (r + 4096).min(rows);
        for i in r..end {
            let (k, predicted, learned) = lags.row(i);
            ops[k].predict(window(predicted));
            if let Some(w) = learned {
                let x = window(w);
                ops[k].learn(x, x[0] - 0.5 * x[1]);
            }
        }
        let work = ops.iter_mut().zip(slots.iter_mut()).filter(|(o, _)| o.queued()).collect();
        let o = keyed::run_keys(work, threads, build)?;
        in_model += o.predict + o.update;
        ops.iter_mut().for_each(KeyOps::clear);
        r = end;
    }
    let s = started.elapsed().as_secs_f64();
    Ok((rows as f64 / s, in_model.as_secs_f64() / s))
}

/// Which input window each row of the keyed bench predicts and which it updates on.
struct Lags {
    keys: usize,
    lag: usize,
}

impl Lags {
    /// Distinct windows: one per key without a lag; with one, more than `lag`.
    fn windows(&self) -> usize {
        if self.lag == 0 { self.keys } else { self.keys.max(self.lag + 1) }
    }

    /// Row `i`: its key, the window predicted and the window updated on (none for a
    /// key's first `lag` rows). Without a lag every row of a key is the key's one
    /// window; with one, the key's j-th row is window (k + j) mod P with P > lag, so
    /// the row updated on differs from the row just predicted.
    fn row(&self, i: usize) -> (usize, usize, Option<usize>) {
        let (k, j) = (i % self.keys, i / self.keys);
        let p = self.windows();
        let w = |j: usize| if self.lag == 0 { k } else { (k + j) % p };
        (k, w(j), (j >= self.lag).then(|| w(j - self.lag)))
    }
}

#[cfg(test)]
mod tests {
    use super::Lags;

    /// Each update is of the row its key predicted `lag` rows before, never of the
    /// row just predicted; without a lag, of the row just predicted.
    #[test]
    fn a_lagged_update_is_of_the_keys_row_lag_rows_back() {
        for (keys, lag) in [(1, 1), (1, 3), (3, 1), (4, 7), (1000, 1), (5, 0)] {
            let l = Lags { keys, lag };
            let rows = keys * (lag + 12);
            let predicted: Vec<(usize, usize)> = (0..rows).map(|i| (l.row(i).0, l.row(i).1)).collect();
            for i in 0..rows {
                let (k, p, u) = l.row(i);
                assert_eq!(k, i % keys);
                assert!(p < l.windows());
                match u {
                    None => assert!(i / keys < lag, "keys {keys}, lag {lag}: row {i} has no update"),
                    Some(u) => {
                        // The same key's row `lag` of its rows back: row i − lag·keys.
                        assert_eq!(predicted[i - lag * keys], (k, u), "keys {keys}, lag {lag}, row {i}");
                        assert_eq!(u == p, lag == 0, "keys {keys}, lag {lag}, row {i}");
                    }
                }
            }
        }
    }
}

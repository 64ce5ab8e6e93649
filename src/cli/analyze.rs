//! `tickflare analyze --input FILE --column C`: ACF, the delay τ and Cao's embedding
//! dimension of one numeric column, with a feature-SQL snippet for the embedding.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};

use crate::analysis::{acf, cao::cao, delay};
use crate::source::file::read_records;

#[derive(clap::Args, Debug)]
pub struct AnalyzeArgs {
    /// CSV with a header row, or JSON lines.
    #[arg(long)]
    pub input: PathBuf,
    /// Column (CSV header name or JSON key) to analyse.
    #[arg(long)]
    pub column: String,
    /// Largest ACF lag.
    #[arg(long, default_value_t = 60)]
    pub max_lag: usize,
    /// Largest embedding dimension tried.
    #[arg(long, default_value_t = 10)]
    pub max_dim: usize,
    /// Use at most the last N values for Cao's method (it is O(N²)).
    #[arg(long, default_value_t = 2000)]
    pub max_points: usize,
    /// E1 level taken as saturated.
    #[arg(long, default_value_t = 0.9)]
    pub threshold: f64,
}

/// Reads one numeric column from a CSV (header row) or JSON-lines file.
pub fn read_column(path: &std::path::Path, column: &str) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::new();
    for (i, rec) in read_records(path)?.iter().enumerate() {
        let x = match rec.get(column) {
            Some(serde_json::Value::Number(n)) => n.as_f64(),
            Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        out.push(x.with_context(|| format!("record {}: no numeric {column:?}", i + 1))?);
    }
    if out.len() < 20 {
        bail!("{} values: too few to analyse", out.len());
    }
    Ok(out)
}

pub async fn analyze(a: AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let x = read_column(&a.input, &a.column)?;
    let r = acf(&x, a.max_lag);
    let (tau, rule) = delay(&r);
    let tail = &x[x.len().saturating_sub(a.max_points)..];
    let c = cao(tail, tau, a.max_dim, a.threshold);
    println!("{} values of {:?} from {}", x.len(), a.column, a.input.display());
    let shown: Vec<String> = r.iter().take(15).enumerate().map(|(k, v)| format!("{k}:{v:.3}")).collect();
    println!("ACF  {}", shown.join("  "));
    println!("delay τ = {tau} ({rule:?})");
    println!("Cao's method on the last {} values (τ = {tau}):", tail.len());
    println!("   d      E1       E2");
    for d in 0..c.e1.len() {
        println!("  {:>2}  {:>7.4}  {:>7.4}", d + 1, c.e1[d], c.e2[d]);
    }
    println!("embedding dimension m = {} (first d with E1 ≥ {})", c.dimension, a.threshold);
    let lags: Vec<String> = (1..c.dimension)
        .map(|j| format!("  LAG({col}, {l}) OVER (PARTITION BY <key> ORDER BY _offset) AS {col}_emb{j}", col = a.column, l = j * tau))
        .collect();
    println!("suggested feature SQL (delay embedding x(t), x(t−τ), …, x(t−(m−1)τ)):");
    if lags.is_empty() {
        println!("  -- m = 1: the current value {} alone", a.column);
    } else {
        println!("{}", lags.join(",\n"));
    }
    Ok(ExitCode::SUCCESS)
}

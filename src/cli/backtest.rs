//! `tickflare backtest PIPELINE --report DIR`: replays a time range of the input
//! topic (into shadow topics) or of files (straight, into Parquet files beside the
//! report) through the live code path, for the pipeline's model and every `[[compare]]` / `--model`
//! configuration in one pass, and writes the report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use serde_json::Value;

use super::{print_problems, SeriesArgs};
use crate::pipeline::backtest::{backtest as run_backtest, BacktestOptions, Variant};
use crate::pipeline::build::{build_variant_with, build_with, BuildOptions};
use crate::report::{self, Period};
use crate::source::file::parse_time_ms;

#[derive(clap::Args, Debug)]
pub struct BacktestArgs {
    /// Pipeline file (TOML).
    pub pipeline: PathBuf,
    /// Read this file (CSV, JSON lines, Parquet; `.gz` too), directory or glob (its
    /// files in time order) instead of the pipeline's input topic; predictions go to
    /// `DIR/predictions.parquet`.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Score records with event time at or after this (RFC 3339, YYYY-MM-DD, …).
    #[arg(long)]
    pub from: Option<String>,
    /// Score records with event time before this.
    #[arg(long)]
    pub to: Option<String>,
    /// Let the models learn, unscored, on the records of this long before --from
    /// (e.g. 1d, 6h), like models that were already live.
    #[arg(long, conflicts_with = "warmup_from")]
    pub warmup: Option<String>,
    /// Warm-up from this event time to --from.
    #[arg(long)]
    pub warmup_from: Option<String>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Directory for report.json, report.html and the plots.
    #[arg(long)]
    pub report: PathBuf,
    /// A further model configuration (a TOML file with a `[model]` table, or model
    /// keys at the top; `name` names it). Repeatable; adds to the pipeline's `[[compare]]`.
    #[arg(long = "model")]
    pub models: Vec<PathBuf>,
    /// Bootstrap servers holding the input topic (default: the pipeline's).
    #[arg(long, env = "TICKFLARE_BROKERS")]
    pub brokers: Option<String>,
    /// Walk-forward periods: auto, hour, day, week, month or year.
    #[arg(long, default_value = "auto")]
    pub period: String,
    /// Override `source.max_batch_rows`.
    #[arg(long)]
    pub batch_rows: Option<usize>,
    /// Also write every labelled prediction to `DIR/labels.csv` (for scoring the same
    /// rows with another tool).
    #[arg(long)]
    pub labels: bool,
    /// Shadow topics are `<sink topic>.<suffix>[.<model name>]`.
    #[arg(long, default_value = "backtest")]
    pub shadow_suffix: String,
    #[command(flatten)]
    pub series: SeriesArgs,
}

fn time_arg(s: &Option<String>) -> anyhow::Result<Option<i64>> {
    s.as_ref().map(|s| parse_time_ms(&Value::from(s.as_str())).with_context(|| format!("cannot read time {s:?}"))).transpose()
}

/// A `--model` file as a name and its model keys.
fn model_file(path: &Path) -> anyhow::Result<(String, toml::Table)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut doc: toml::Table = text.parse().with_context(|| format!("in {}", path.display()))?;
    let name = doc.get("name").and_then(|v| v.as_str()).map(str::to_string);
    let mut table = match doc.remove("model") {
        Some(toml::Value::Table(t)) => t,
        Some(_) => bail!("{}: `model` is not a table", path.display()),
        None => doc,
    };
    let name = table
        .get("name")
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .or(name)
        .unwrap_or_else(|| crate::source::mapping::file_stem(path));
    table.remove("name");
    Ok((name, table))
}

pub async fn backtest(a: BacktestArgs) -> anyhow::Result<ExitCode> {
    let (from_ms, to_ms) = (time_arg(&a.from)?, time_arg(&a.to)?);
    if let (Some(f), Some(t)) = (from_ms, to_ms) {
        if t <= f {
            bail!("--to must be after --from");
        }
    }
    let warmup_from_ms = match (&a.warmup, time_arg(&a.warmup_from)?) {
        (Some(d), _) => {
            let from = from_ms.context("--warmup needs --from")?;
            let ns = crate::pipeline::config::parse_duration_ns(d).map_err(anyhow::Error::msg)?;
            Some(from - ns / 1_000_000)
        }
        (None, Some(w)) => {
            let from = from_ms.context("--warmup-from needs --from")?;
            if w >= from {
                bail!("--warmup-from must be before --from");
            }
            Some(w)
        }
        (None, None) => None,
    };
    let period = Period::parse(&a.period)?;
    let opts = BuildOptions { sample: None, series: a.series.options(a.input.clone()) };
    let base = match build_with(&a.pipeline, &opts).await {
        Ok(b) => b,
        Err(probs) => {
            print_problems(&a.pipeline, &probs);
            return Ok(ExitCode::from(2));
        }
    };
    let mut overrides: Vec<(String, toml::Table)> = Vec::new();
    for (i, c) in base.config.compare.iter().enumerate() {
        let name = c.get("name").and_then(|v| v.as_str()).with_context(|| format!("compare[{i}] needs a name"))?;
        overrides.push((name.to_string(), c.clone()));
    }
    for f in &a.models {
        overrides.push(model_file(f)?);
    }
    let mut variants = vec![Variant { name: "base".into(), built: base }];
    for (name, table) in overrides {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            bail!("model name {name:?}: use letters, digits, - and _");
        }
        if variants.iter().any(|v| v.name == name) {
            bail!("model name {name:?} is used twice");
        }
        match build_variant_with(&a.pipeline, &table, &opts).await {
            Ok(built) => variants.push(Variant { name, built }),
            Err(probs) => {
                eprintln!("model {name:?}:");
                print_problems(&a.pipeline, &probs);
                return Ok(ExitCode::from(2));
            }
        }
    }
    let pipeline_name = variants[0].built.config.name.clone();
    let series = variants[0].built.series.clone();
    if let Some(plan) = &series {
        println!("{plan}");
    }
    let opts = BacktestOptions {
        input: a.input.clone(),
        brokers: a.brokers.clone(),
        from_ms,
        to_ms,
        warmup_from_ms,
        max_batch_rows: a.batch_rows,
        shadow_suffix: a.shadow_suffix.clone(),
        output_dir: Some(a.report.clone()),
        progress: !a.quiet,
        discard_outputs: false,
    };
    let result = run_backtest(variants, &opts).await?;
    let rep = report::build(&pipeline_name, a.input.as_deref(), from_ms, to_ms, period, &result);
    print_table(&rep);
    report::write(&a.report, rep, &result)?;
    if let Some(plan) = &series {
        // What [series] resolved to, beside report.json.
        let path = a.report.join("series.json");
        std::fs::write(&path, serde_json::to_string_pretty(plan)?).with_context(|| format!("writing {}", path.display()))?;
    }
    if a.labels {
        report::write_labels(&a.report, &result)?;
    }
    let lanes = result.lanes.len();
    println!(
        "{} records in range ({} before, {} of them warm-up; {} after) × {lanes} model(s) in {:.2}s: {:.0} records/s; report in {}",
        result.in_range,
        result.before_range + result.warmup,
        result.warmup,
        result.after_range,
        result.elapsed_s,
        result.in_range as f64 / result.elapsed_s.max(1e-9),
        a.report.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn print_table(r: &report::Report) {
    let f = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.6}"));
    println!("{:<28} {:>8} {:>14} {:>14} {:>10} {:>10}", "forecaster", "n", "MAE", "RMSE", "SMAPE %", "Theil U");
    let line = |name: &str, s: &crate::state::score::ErrorSummary| {
        println!("{name:<28} {:>8} {:>14} {:>14} {:>10} {:>10}", s.n, f(s.mae), f(s.rmse), f(s.smape), f(s.theil_u));
    };
    if let Some(m) = r.models.first() {
        line("persistence", &m.metrics.persistence);
        if let Some(s) = &m.metrics.seasonal_naive {
            line("seasonal naive", s);
        }
    }
    for m in &r.models {
        line(&format!("model {} ({})", m.name, m.kind), &m.metrics.model);
        for (name, e) in &m.metrics.experts {
            line(&format!("  {} · {name}", m.name), e);
        }
        if !m.weights.is_empty() {
            let w: Vec<String> = m.weights.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
            println!("  {} aggregation weights: {}", m.name, w.join(", "));
        }
    }
}

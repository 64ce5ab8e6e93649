//! `cargo bench --bench backtest`: backtest throughput (records/s) through the live
//! code path — the EUR/USD 2017 hourly bars with two models in one pass, and the
//! 10,000 shipped Binance events with one — in release mode. Reports the replay pass alone
//! and end to end (publishing the file into the embedded broker, the pass, the report
//! with its plots).

use std::path::Path;
use std::time::Instant;

use tickflare::pipeline::backtest::{backtest, BacktestOptions, Variant};
use tickflare::pipeline::build::{build, build_variant};

async fn one(root: &Path, pipeline: &str, input: &Path, compare: bool) -> anyhow::Result<()> {
    let p = root.join(pipeline);
    let base = build(&p).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut variants = Vec::new();
    let extra: Vec<_> = if compare { base.config.compare.clone() } else { Vec::new() };
    variants.push(Variant { name: "base".into(), built: base });
    for t in extra {
        let name = t.get("name").and_then(|v| v.as_str()).unwrap_or("x").to_string();
        variants.push(Variant { name, built: build_variant(&p, &t).await.map_err(|e| anyhow::anyhow!("{e:?}"))? });
    }
    let lanes = variants.len();
    let opts = BacktestOptions { input: Some(input.to_path_buf()), shadow_suffix: "backtest".into(), ..Default::default() };
    let t0 = Instant::now();
    let r = backtest(variants, &opts).await?;
    let rep = tickflare::report::build("bench", Some(input), None, None, None, &r);
    let dir = tempfile::tempdir()?;
    tickflare::report::write(dir.path(), rep, &r)?;
    let total = t0.elapsed().as_secs_f64();
    println!(
        "backtest {pipeline} over {}: {} records x {lanes} model(s) | pass {:.3}s = {:.0} records/s | end to end (publish + pass + report) {:.3}s = {:.0} records/s",
        input.file_name().unwrap().to_string_lossy(),
        r.in_range,
        r.elapsed_s,
        r.in_range as f64 / r.elapsed_s,
        total,
        r.in_range as f64 / total
    );
    Ok(())
}

fn main() {
    tickflare::model::init_cpu_threads();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared/data");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let eurusd = shared.join("market/eurusd_1h_2017.csv");
    let eurusd = if eurusd.exists() { eurusd } else { root.join("data/eurusd_1h_2017_q1.csv") };
    // (The full 50,000-event file exceeds the embedded broker's 5 MB per partition
    // on the busiest symbol's partition: the shipped 10,000-event sample it is.)
    let ticks = root.join("data/binance_ticks_sample.jsonl");
    rt.block_on(async {
        one(root, "pipelines/market-bars.toml", &eurusd, true).await.expect("bars");
        one(root, "pipelines/market-ticks.toml", &ticks, false).await.expect("ticks");
    });
}

//! `cargo bench --bench backtest`: file backtests through the live code path, in
//! release mode.
//!
//! 1. In process: the EUR/USD 2017 hourly bars with their models in one pass, and the
//!    shipped 10,000 Binance events — the pass alone and end to end (with the report).
//! 2. The `tickflare` binary on 2.5M real-derived ticks: the 50,000-event Binance
//!    capture repeated 50 times, each copy 5 minutes later (every timestamp in the
//!    line shifted), backtested with `pipelines/market-ticks.toml` twice — wall time
//!    end to end including the report, peak RSS (wait4), and whether both runs wrote
//!    the same report.json. Needs `../shared/data`; the file is made once under the
//!    target directory. `BENCH_LONG_COPIES=N` changes the 50.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
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
    let dir = tempfile::tempdir()?;
    let opts = BacktestOptions { input: Some(input.to_path_buf()), output_dir: Some(dir.path().to_path_buf()), ..Default::default() };
    let t0 = Instant::now();
    let r = backtest(variants, &opts).await?;
    let rep = tickflare::report::build("bench", Some(input), None, None, None, &r);
    tickflare::report::write(dir.path(), rep, &r)?;
    let total = t0.elapsed().as_secs_f64();
    println!(
        "backtest {pipeline} over {}: {} records x {lanes} model(s) | pass {:.3}s = {:.0} records/s | end to end (pass + report) {:.3}s = {:.0} records/s",
        input.file_name().unwrap().to_string_lossy(),
        r.in_range,
        r.elapsed_s,
        r.in_range as f64 / r.elapsed_s,
        total,
        r.in_range as f64 / total
    );
    Ok(())
}

/// `src` repeated `copies` times, copy c with every time string moved c × 5 minutes
/// later (`tickflare::cli::bench_live::shift_times`).
fn repeat_shifted(src: &Path, copies: i64, dst: &Path) -> anyhow::Result<()> {
    let lines: Vec<String> = std::io::BufReader::new(std::fs::File::open(src)?).lines().collect::<Result<_, _>>()?;
    let tmp = dst.with_extension("partial");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    for c in 0..copies {
        for l in &lines {
            out.write_all(tickflare::cli::bench_live::shift_times(l, c * 5 * 60_000).as_bytes())?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    drop(out);
    std::fs::rename(tmp, dst)?;
    Ok(())
}

/// Runs `cmd` to the end; its wall time (s) and peak RSS (MB).
fn timed(cmd: &mut std::process::Command) -> anyhow::Result<(f64, f64)> {
    let t0 = Instant::now();
    let child = cmd.spawn()?;
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid out-parameter; wait4 fills it for our child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    let wall = t0.elapsed().as_secs_f64();
    anyhow::ensure!(pid > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "command failed: {status}");
    Ok((wall, ru.ru_maxrss as f64 / 1024.0))
}

fn long_ticks(root: &Path, shared: &Path) -> anyhow::Result<()> {
    let src = shared.join("market/binance_spot_l1_trades_2025-03-25.jsonl");
    if !src.exists() {
        println!("long ticks: skipped ({} not present)", src.display());
        return Ok(());
    }
    let copies: i64 = std::env::var("BENCH_LONG_COPIES").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let file = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("binance_ticks_x{copies}.jsonl"));
    if !file.exists() {
        let t0 = Instant::now();
        repeat_shifted(&src, copies, &file)?;
        println!("long ticks: wrote {} in {:.1}s", file.display(), t0.elapsed().as_secs_f64());
    }
    let records = std::io::BufReader::new(std::fs::File::open(&file)?).lines().count();
    let mb = std::fs::metadata(&file)?.len() as f64 / 1e6;
    let dir = tempfile::tempdir()?;
    let mut reports = Vec::new();
    for run in 0..2 {
        let out = dir.path().join(format!("run{run}"));
        let (wall, rss) = timed(
            std::process::Command::new(env!("CARGO_BIN_EXE_tickflare"))
                .current_dir(root)
                .args(["backtest", "pipelines/market-ticks.toml", "--quiet", "--input"])
                .arg(&file)
                .arg("--report")
                .arg(&out)
                .stdout(std::process::Stdio::null()),
        )?;
        println!(
            "long ticks run {}: {records} records ({mb:.0} MB JSON lines) backtested end to end (read, decode, features, model, scoring, predictions.parquet, report + plots) in {wall:.2}s = {:.0} records/s, peak RSS {rss:.0} MB",
            run + 1,
            records as f64 / wall
        );
        reports.push(std::fs::read(out.join("report.json"))?);
    }
    println!("long ticks: the two runs' report.json are {}", if reports[0] == reports[1] { "identical" } else { "DIFFERENT" });
    Ok(())
}

fn main() {
    tickflare::model::init_cpu_threads();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared/data");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let eurusd = shared.join("market/eurusd_1h_2017.csv");
    let eurusd = if eurusd.exists() { eurusd } else { root.join("data/eurusd_1h_2017_q1.csv") };
    let ticks = root.join("data/binance_ticks_sample.jsonl");
    rt.block_on(async {
        one(root, "pipelines/market-bars.toml", &eurusd, true).await.expect("bars");
        one(root, "pipelines/market-ticks.toml", &ticks, false).await.expect("ticks");
    });
    long_ticks(root, &shared).expect("long ticks");
}

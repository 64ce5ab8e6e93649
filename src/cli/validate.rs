//! `tickflare validate PIPELINE`: every config, schema, SQL and broker problem at once.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{print_problems, BrokerArg, SeriesArgs};
use crate::pipeline::build::{build_with, check_brokers, BuildOptions, Problem};
use crate::pipeline::config::PipelineConfig;

#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    /// Pipeline file (TOML).
    pub pipeline: PathBuf,
    #[command(flatten)]
    pub brokers: BrokerArg,
    /// A `[series]` pipeline: read the series from this file instead of `source.sample`.
    #[arg(long)]
    pub input: Option<PathBuf>,
    #[command(flatten)]
    pub series: SeriesArgs,
}

pub async fn validate(a: ValidateArgs) -> anyhow::Result<ExitCode> {
    if crate::solar::stream::is_solar(&a.pipeline) {
        return Ok(report(&a.pipeline, validate_solar(&a.pipeline, a.brokers.brokers.as_deref()).await));
    }
    let mut probs: Vec<Problem> = Vec::new();
    let opts = BuildOptions { sample: None, series: a.series.options(a.input.clone()) };
    let mut main_built = false;
    let cfg = match build_with(&a.pipeline, &opts).await {
        Ok(b) => {
            main_built = true;
            if let Some(plan) = &b.series {
                println!("{plan}");
            }
            Some(b.config)
        }
        Err(p) => {
            probs.extend(p);
            PipelineConfig::load(&a.pipeline).ok().map(|l| l.value)
        }
    };
    if let Some(cfg) = cfg.as_ref().filter(|_| main_built) {
        // Every `[[compare]]` lane a backtest would run, built as it would build it
        // (once the main pipeline builds: its problems would repeat in every lane).
        for (i, lane) in cfg.compare.iter().enumerate() {
            if let Err(p) = crate::pipeline::build::build_variant_with(&a.pipeline, lane, &opts).await {
                let name = lane.get("name").and_then(|v| v.as_str()).unwrap_or("?");
                probs.extend(p.into_iter().map(|p| Problem { at: format!("compare[{i}] ({name}): {}", p.at), message: p.message }));
            }
        }
    }
    if let Some(cfg) = cfg {
        let brokers = a.brokers.brokers.clone().unwrap_or_else(|| cfg.source.brokers.clone());
        if brokers != "embedded" {
            let c = cfg.clone();
            let found = tokio::task::spawn_blocking(move || check_brokers(&c, &brokers)).await?;
            probs.extend(found);
        }
    }
    Ok(report(&a.pipeline, probs))
}

fn report(path: &std::path::Path, probs: Vec<Problem>) -> ExitCode {
    if probs.is_empty() {
        println!("{}: ok", path.display());
        ExitCode::SUCCESS
    } else {
        print_problems(path, &probs);
        ExitCode::from(2)
    }
}

/// A solar pipeline: its file parses (unknown keys are errors), its topics are
/// distinct, the files it names exist, the tracker builds (device, crop, weights),
/// a checkpoint already at its location was written by this configuration, and on
/// real brokers every topic exists.
async fn validate_solar(path: &std::path::Path, brokers: Option<&str>) -> Vec<Problem> {
    use crate::solar::stream::{self, SolarConfig};
    let problem = |at: &str, message: String| Problem { at: at.into(), message };
    let (cfg, mut probs) = match SolarConfig::read(path) {
        Ok(r) => {
            let probs: Vec<Problem> = r.problems().map(|(at, message)| Problem { at, message }).collect();
            (r.value, probs)
        }
        Err(e) => return vec![problem(&path.display().to_string(), format!("{e:#}"))],
    };
    if let Err(e) = stream::check(&cfg) {
        probs.push(problem("sink.topic", e.to_string()));
    }
    let files = [
        ("source.synthetic.from", cfg.source.synthetic.as_ref().map(|s| s.from.clone())),
        ("tracker.weights", cfg.tracker.weights.clone()),
    ];
    for (at, f) in files {
        if let Some(f) = f {
            let full = cfg.resolve(&f);
            if !full.exists() {
                probs.push(problem(at, format!("{} does not exist", full.display())));
            }
        }
    }
    if cfg.source.brokers == "embedded" && cfg.source.synthetic.is_none() {
        probs.push(problem("source.synthetic", "the embedded broker needs [source.synthetic] to seed frames".into()));
    }
    if let Err(e) = crate::model::device(cfg.tracker.device) {
        probs.push(problem("tracker.device", e.to_string()));
    } else if probs.is_empty() {
        match crate::solar::tracker::Tracker::new(cfg.tracker.clone(), &cfg.base_dir) {
            Err(e) => probs.push(problem("tracker", format!("{e:#}"))),
            Ok(mut t) => {
                if let Some(dir) = &cfg.checkpoint.dir {
                    let loc = crate::state::store::location_in_file(&dir.to_string_lossy(), &cfg.base_dir);
                    let restored = async { crate::solar::checkpoint::SolarCheckpoints::open(&loc, &cfg)?.restore(&mut t).await };
                    if let Err(e) = restored.await {
                        probs.push(problem("checkpoint.dir", format!("{e:#}")));
                    }
                }
            }
        }
    }
    let brokers = brokers.unwrap_or(&cfg.source.brokers).to_string();
    if brokers != "embedded" {
        let topics = [&cfg.source.frames_topic, &cfg.source.labels_topic, &cfg.sink.topic, &cfg.sink.dead_letter_topic].map(|t| t.to_string());
        let props = cfg.kafka.clone();
        let missing = tokio::task::spawn_blocking(move || missing_topics(&brokers, &props, &topics)).await;
        match missing {
            Ok(Ok(m)) => probs.extend(m.into_iter().map(|t| problem("source.brokers", format!("topic {t:?} does not exist")))),
            Ok(Err(e)) => probs.push(problem("source.brokers", e)),
            Err(e) => probs.push(problem("source.brokers", e.to_string())),
        }
    }
    probs
}

/// The `topics` that `brokers` do not have (an error when they cannot be reached).
fn missing_topics(brokers: &str, props: &crate::pipeline::kafka_props::KafkaProps, topics: &[String]) -> Result<Vec<String>, String> {
    use rdkafka::consumer::Consumer;
    use crate::source::kafka::{probe, probe_failure};
    let c = probe(brokers, props).map_err(|e| e.to_string())?;
    let md = c.fetch_metadata(None, std::time::Duration::from_secs(10)).map_err(|e| probe_failure(&c, brokers, e))?;
    let have: Vec<&str> = md.topics().iter().filter(|t| t.error().is_none()).map(|t| t.name()).collect();
    Ok(topics.iter().filter(|t| !have.contains(&t.as_str())).cloned().collect())
}

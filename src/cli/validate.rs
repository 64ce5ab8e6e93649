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
    let mut probs: Vec<Problem> = Vec::new();
    let opts = BuildOptions { sample: None, series: a.series.options(a.input.clone()) };
    let cfg = match build_with(&a.pipeline, &opts).await {
        Ok(b) => {
            if let Some(plan) = &b.series {
                println!("{plan}");
            }
            Some(b.config)
        }
        Err(p) => {
            probs.extend(p);
            PipelineConfig::load(&a.pipeline).ok().map(|l| l.config)
        }
    };
    if let Some(cfg) = cfg {
        let brokers = a.brokers.brokers.clone().unwrap_or_else(|| cfg.source.brokers.clone());
        if brokers != "embedded" {
            let c = cfg.clone();
            let found = tokio::task::spawn_blocking(move || check_brokers(&c, &brokers)).await?;
            probs.extend(found);
        }
    }
    if probs.is_empty() {
        println!("{}: ok", a.pipeline.display());
        Ok(ExitCode::SUCCESS)
    } else {
        print_problems(&a.pipeline, &probs);
        Ok(ExitCode::from(2))
    }
}

//! `tickflare validate PIPELINE`: every config, schema, SQL and broker problem at once.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{print_problems, BrokerArg};
use crate::pipeline::build::{build, check_brokers, Problem};
use crate::pipeline::config::PipelineConfig;

#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    /// Pipeline file (TOML).
    pub pipeline: PathBuf,
    #[command(flatten)]
    pub brokers: BrokerArg,
}

pub async fn validate(a: ValidateArgs) -> anyhow::Result<ExitCode> {
    let mut probs: Vec<Problem> = Vec::new();
    let cfg = match build(&a.pipeline).await {
        Ok(b) => Some(b.config),
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

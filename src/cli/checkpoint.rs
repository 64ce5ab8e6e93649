//! `tickflare checkpoint ls|show DIR`: what is stored, per pipeline and partition.

use std::process::ExitCode;

use crate::state::store::CheckpointStore;

#[derive(clap::Args, Debug)]
pub struct CheckpointArgs {
    #[command(subcommand)]
    pub command: CheckpointCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum CheckpointCommand {
    /// One line per checkpoint: partition, next offset, model updates, size, age.
    Ls {
        /// Checkpoint directory or URL.
        dir: String,
        /// Pipeline name (the `name` in its file).
        #[arg(long)]
        pipeline: String,
    },
    /// A checkpoint's manifest (the newest of the partition unless `--offset`).
    Show {
        dir: String,
        #[arg(long)]
        pipeline: String,
        #[arg(long)]
        partition: i32,
        #[arg(long)]
        offset: Option<i64>,
    },
}

pub async fn checkpoint(a: CheckpointArgs) -> anyhow::Result<ExitCode> {
    match a.command {
        CheckpointCommand::Ls { dir, pipeline } => {
            let store = CheckpointStore::open(&dir, &pipeline, usize::MAX)?;
            let now = chrono::Utc::now().timestamp_millis();
            println!("{:>9} {:>14} {:>14} {:>14} {:>12} {:>10}  status", "partition", "next_offset", "messages_in", "model_updates", "bytes", "age_s");
            for p in store.partitions().await? {
                let complete = store.ids(p, true).await?;
                for id in store.ids(p, false).await? {
                    if !complete.contains(&id) {
                        println!("{p:>9} {id:>14} {:>14} {:>14} {:>12} {:>10}  incomplete (no manifest)", "-", "-", "-", "-");
                        continue;
                    }
                    match store.read(p, id).await {
                        Ok((m, _)) => {
                            let bytes: u64 = m.files.iter().map(|f| f.bytes).sum();
                            let age = (now - m.created_at_ms) as f64 / 1000.0;
                            println!("{p:>9} {id:>14} {:>14} {:>14} {bytes:>12} {age:>10.1}  ok", m.messages_in, m.model_updates);
                        }
                        Err(e) => println!("{p:>9} {id:>14} {:>14} {:>14} {:>12} {:>10}  damaged: {e}", "-", "-", "-", "-"),
                    }
                }
            }
        }
        CheckpointCommand::Show { dir, pipeline, partition, offset } => {
            let store = CheckpointStore::open(&dir, &pipeline, usize::MAX)?;
            let id = match offset {
                Some(o) => o,
                None => *store.ids(partition, true).await?.last().ok_or_else(|| anyhow::anyhow!("partition {partition} has no checkpoint"))?,
            };
            let m = store.manifest(partition, id).await?;
            println!("{}", serde_json::to_string_pretty(&m)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

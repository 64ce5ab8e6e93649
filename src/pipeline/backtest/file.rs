//! Backtests straight from files: no broker in the way. Records stream from the
//! file(s) — placed on partitions by key hash and numbered per partition exactly as
//! `replay` or the embedded broker's seeding would place and number them, with the
//! event time as timestamp — through the same batches as a topic backtest; outputs go
//! to Parquet files instead of shadow topics. A reader thread reads, places and feeds
//! each batch while the lanes process the one before it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::Context;

use super::{count, BacktestOptions, BacktestResult, Counts, Lane, LaneSink, Variant};
use crate::source::batch::PartitionInput;
use crate::source::schema::TopicSchema;
use std::sync::Arc;
use crate::sink::file::FileSink;
use crate::source::mapping::FileMessages;
use crate::source::rows::input_files;
use crate::source::sample::partition_for;
use crate::telemetry::progress::Progress;

/// Default batch size of file backtests (or the pipeline's, if larger).
const FILE_BATCH_ROWS: usize = 8192;

pub(super) async fn backtest(variants: Vec<Variant>, input: &Path, opts: &BacktestOptions) -> crate::error::Result<BacktestResult> {
    let cfg = variants[0].built.config.clone();
    let schema = variants[0].built.schema.clone();
    let dir = match (&opts.output_dir, opts.discard_outputs) {
        (Some(d), _) => d.clone(),
        (None, true) => PathBuf::new(),
        (None, false) => crate::fail!(Config, "a file backtest needs a directory for its predictions (--report)"),
    };
    let dir = dir.as_path();
    let open = {
        let (mapping, time, key) = (cfg.source.file.clone(), cfg.source.time.clone(), cfg.source.key.clone());
        move |p: &Path| FileMessages::open(p, &mapping, schema.clone(), &time, Some(&key))
    };
    let files = in_time_order(input_files(input)?, &open)?;
    let n = cfg.source.partitions.max(1);
    let warmup = opts.warmup_from_ms.is_some();
    let mut lanes = Vec::with_capacity(variants.len());
    for (i, v) in variants.into_iter().enumerate() {
        let lane = (i > 0).then_some(v.name.as_str());
        if opts.discard_outputs {
            lanes.push(Lane::new(v, LaneSink::Discard(crate::sink::Discard), Default::default(), 0..n, warmup));
            continue;
        }
        let (horizon, target) = v.built.processor.output_labels();
        let sink = FileSink::create(dir, lane, &v.built.config.source.topic, horizon, target)
            .with_context(|| format!("creating the output files in {}", dir.display()))?;
        let name = |p: &PathBuf| p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        let outputs = (name(&sink.predictions_path), name(&sink.dead_letters_path));
        lanes.push(Lane::new(v, LaneSink::File(Box::new(sink)), outputs, 0..n, warmup));
    }
    // Outputs do not depend on where batches end; bigger ones spread the feature
    // plan's per-batch cost (and the look-back rows it re-reads) over more records.
    let max_rows = opts.max_batch_rows.unwrap_or(cfg.source.max_batch_rows.max(FILE_BATCH_ROWS)).max(1);
    let started = Instant::now();
    // Per partition: the first offset read in range or warm-up.
    let mut first: BTreeMap<i32, i64> = BTreeMap::new();
    let mut counts = Counts::default();
    let mut progress = Progress::new("backtesting", opts.progress);
    let total_bytes: u64 = files.iter().map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0)).sum();
    // The files are read, each record placed on its partition, numbered, placed
    // against the range and fed into every lane's next batch on a thread of their
    // own, while the lanes process the batches before it.
    let schemas = lanes.iter().map(|l| l.built.schema.clone()).collect();
    let (mut batches, back, reader) = read_ahead(files, open, n, max_rows, schemas, opts.clone()).context("starting the file reader thread")?;
    while let Some(fed) = batches.recv().await {
        let fed = fed?;
        counts.add(&fed.counts);
        for (p, o) in fed.first {
            first.entry(p).or_insert(o);
        }
        for (p, o) in fed.scoring {
            lanes.iter_mut().for_each(|l| l.start_scoring(p, o));
        }
        let mut spent = Vec::with_capacity(lanes.len());
        for (lane, inputs) in lanes.iter_mut().zip(fed.inputs) {
            lane.fed = inputs;
            lane.process().await?;
            spent.push(std::mem::take(&mut lane.fed));
        }
        let _ = back.send(spent);
        progress.tick(counts.in_range + counts.warmup + counts.before + counts.after, fed.bytes_done, total_bytes);
    }
    let next = reader.join().map_err(|_| crate::error::Error::Internal("the file reader thread panicked".into()))?;
    progress.finish();
    let mut results = Vec::with_capacity(lanes.len());
    for lane in lanes {
        results.push(lane.finish(started).await?);
    }
    let offsets = first.iter().map(|(&p, &o)| (p, (o, next[p as usize]))).collect();
    Ok(BacktestResult {
        lanes: results,
        brokers: "file".into(),
        input_topic: cfg.source.topic.clone(),
        offsets,
        in_range: counts.in_range,
        before_range: counts.before,
        after_range: counts.after,
        warmup: counts.warmup,
        warmup_from_ms: opts.warmup_from_ms,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

/// Per lane, its records of one batch by partition.
type LaneInputs = Vec<BTreeMap<i32, PartitionInput>>;

/// One batch as the reader thread fed it: `max_rows` records in range or warm-up (the
/// last batch fewer), in every lane's inputs, and what the main loop keeps of them.
struct Fed {
    inputs: LaneInputs,
    /// The batch's records by where they fell against the range (those before and
    /// after it are counted, not fed).
    counts: Counts,
    /// Partitions whose first record in range or warm-up is in this batch, with its offset.
    first: Vec<(i32, i64)>,
    /// With a warm-up: partitions whose first record in range is in this batch, with
    /// its offset (scoring starts there).
    scoring: Vec<(i32, i64)>,
    /// Bytes of the input read when the batch closed (all files so far).
    bytes_done: u64,
}

/// Starts the thread that reads `files` in order, places every record on one of `n`
/// partitions by its key's hash and numbers it there, places it against the range of
/// `opts` and feeds those in range or warm-up into the inputs of every lane (one
/// schema each), sending them in batches of `max_rows` (or an error, after which it
/// stops). Inputs sent back (processed, cleared) are filled again. The thread
/// returns each partition's next offset.
#[allow(clippy::type_complexity)]
fn read_ahead(
    files: Vec<PathBuf>,
    open: impl Fn(&Path) -> crate::error::Result<FileMessages> + Send + 'static,
    n: i32,
    max_rows: usize,
    schemas: Vec<Arc<TopicSchema>>,
    opts: BacktestOptions,
) -> std::io::Result<(tokio::sync::mpsc::Receiver<crate::error::Result<Fed>>, std::sync::mpsc::Sender<LaneInputs>, std::thread::JoinHandle<Vec<i64>>)> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let (back, returned) = std::sync::mpsc::channel::<LaneInputs>();
    let reader = std::thread::Builder::new().name("file-reader".into()).spawn(move || {
        let mut next = vec![0i64; n as usize];
        let (mut seen, mut scoring) = (vec![false; n as usize], vec![false; n as usize]);
        let mut bytes_before = 0u64;
        let fresh = || Fed {
            inputs: returned.try_recv().unwrap_or_else(|_| schemas.iter().map(|_| BTreeMap::new()).collect()),
            counts: Counts::default(),
            first: Vec::new(),
            scoring: Vec::new(),
            bytes_done: 0,
        };
        let mut fed = fresh();
        let mut rows = 0usize;
        for path in &files {
            let mut r = match open(path) {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return next;
                }
            };
            while let Some(m) = r.next_message() {
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return next;
                    }
                };
                let p = m.key.map_or(0, |k| partition_for(k.as_bytes(), n));
                let offset = next[p as usize];
                next[p as usize] += 1;
                let Some(in_range) = count(&mut fed.counts, m.time_ms, &opts) else { continue };
                if in_range && opts.warmup_from_ms.is_some() && !std::mem::replace(&mut scoring[p as usize], true) {
                    fed.scoring.push((p, offset));
                }
                if !std::mem::replace(&mut seen[p as usize], true) {
                    fed.first.push((p, offset));
                }
                for (inputs, schema) in fed.inputs.iter_mut().zip(&schemas) {
                    inputs
                        .entry(p)
                        .or_insert_with(|| PartitionInput::new(p, schema.clone()))
                        .push(m.key.map(str::as_bytes), Some(m.payload), offset, m.time_ms);
                }
                rows += 1;
                if rows >= max_rows {
                    rows = 0;
                    fed.bytes_done = bytes_before + r.progress().0;
                    if tx.blocking_send(Ok(std::mem::replace(&mut fed, fresh()))).is_err() {
                        return next;
                    }
                }
            }
            bytes_before += r.progress().1;
        }
        fed.bytes_done = bytes_before;
        let _ = tx.blocking_send(Ok(fed));
        next
    });
    Ok((rx, back, reader?))
}

/// Orders files by their first record's event time (files without one last, by name).
fn in_time_order(files: Vec<PathBuf>, open: &impl Fn(&Path) -> crate::error::Result<FileMessages>) -> crate::error::Result<Vec<PathBuf>> {
    if files.len() < 2 {
        return Ok(files);
    }
    let mut keyed = Vec::with_capacity(files.len());
    for f in files {
        let mut r = open(&f)?;
        let mut t = None;
        // The first readable event time among the first few rows.
        for _ in 0..100 {
            match r.next_message() {
                Some(Ok(m)) if m.time_ms.is_some() => {
                    t = m.time_ms;
                    break;
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.context(format!("reading {}", f.display()))),
                None => break,
            }
        }
        keyed.push((t.unwrap_or(i64::MAX), f));
    }
    keyed.sort();
    if keyed.is_empty() {
        crate::fail!(Input, "no input files");
    }
    Ok(keyed.into_iter().map(|(_, f)| f).collect())
}

//! Backtests straight from files: no broker in the way. Records stream from the
//! file(s) — placed on partitions by key hash and numbered per partition exactly as
//! `replay` or the embedded broker's seeding would place and number them, with the
//! event time as timestamp — through the same batches as a topic backtest; outputs go
//! to Parquet files instead of shadow topics.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::Context;

use super::{feed, BacktestOptions, BacktestResult, Counts, Input, Lane, LaneSink, Variant};
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
        lanes.push(Lane::new(v, LaneSink::File(sink), outputs, 0..n, warmup));
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
    // The files are read (and each record placed on its partition) on a thread of
    // their own, a chunk ahead of the batches being processed.
    let (mut chunks, back, reader) = read_ahead(files, open, n, max_rows).context("starting the file reader thread")?;
    let mut rows = 0usize;
    while let Some(chunk) = chunks.recv().await {
        let chunk = chunk?;
        for r in &chunk.recs {
            let bytes = |(s, e): (usize, usize)| &chunk.arena[s..e];
            let (p, o) = (r.partition, r.offset);
            if !feed(&mut lanes, &mut counts, opts, Input { partition: p, offset: o, time_ms: r.time_ms, key: r.key.map(bytes), payload: Some(bytes(r.payload)) }) {
                continue;
            }
            first.entry(p).or_insert(o);
            rows += 1;
            if rows >= max_rows {
                rows = 0;
                for lane in &mut lanes {
                    lane.process().await?;
                }
                progress.tick(counts.in_range + counts.warmup + counts.before + counts.after, chunk.bytes_done, total_bytes);
            }
        }
        let _ = back.send(chunk);
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

/// Records read ahead: their bytes in one arena.
#[derive(Default)]
struct Chunk {
    arena: Vec<u8>,
    recs: Vec<Rec>,
    /// Bytes of the input read when the chunk closed (all files so far).
    bytes_done: u64,
}

/// One record of a [`Chunk`], placed on its partition and numbered.
struct Rec {
    partition: i32,
    offset: i64,
    time_ms: Option<i64>,
    key: Option<(usize, usize)>,
    payload: (usize, usize),
}

impl Chunk {
    fn stash(&mut self, b: &[u8]) -> (usize, usize) {
        let s = self.arena.len();
        self.arena.extend_from_slice(b);
        (s, self.arena.len())
    }
}

/// Starts the thread that reads `files` in order, places every record on one of `n`
/// partitions by its key's hash and numbers it there, and sends the records in chunks
/// of `chunk_rows` (or an error, after which it stops). Chunks sent back are reused.
/// The thread returns each partition's next offset.
#[allow(clippy::type_complexity)]
fn read_ahead(
    files: Vec<PathBuf>,
    open: impl Fn(&Path) -> crate::error::Result<FileMessages> + Send + 'static,
    n: i32,
    chunk_rows: usize,
) -> std::io::Result<(tokio::sync::mpsc::Receiver<crate::error::Result<Chunk>>, std::sync::mpsc::Sender<Chunk>, std::thread::JoinHandle<Vec<i64>>)> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let (back, returned) = std::sync::mpsc::channel::<Chunk>();
    let reader = std::thread::Builder::new().name("file-reader".into()).spawn(move || {
        let mut next = vec![0i64; n as usize];
        let mut bytes_before = 0u64;
        let fresh = || {
            let mut c = returned.try_recv().unwrap_or_default();
            c.arena.clear();
            c.recs.clear();
            c
        };
        let mut chunk = fresh();
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
                let key = m.key.map(|k| chunk.stash(k.as_bytes()));
                let payload = chunk.stash(m.payload);
                chunk.recs.push(Rec { partition: p, offset, time_ms: m.time_ms, key, payload });
                if chunk.recs.len() >= chunk_rows {
                    chunk.bytes_done = bytes_before + r.progress().0;
                    if tx.blocking_send(Ok(std::mem::replace(&mut chunk, fresh()))).is_err() {
                        return next;
                    }
                }
            }
            bytes_before += r.progress().1;
        }
        chunk.bytes_done = bytes_before;
        if !chunk.recs.is_empty() {
            let _ = tx.blocking_send(Ok(chunk));
        }
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

//! Parquet files in place of output topics (file backtests): every prediction with
//! the partition, offset, timestamp, key, payload and header values its topic message
//! would carry (and the payload's fields as columns), every dead letter likewise.
//! Offsets count from 0 per partition, as in a fresh topic.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::array::{
    ArrayRef, BinaryBuilder, Float64Builder, Int32Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder,
    TimestampNanosecondBuilder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::kafka::{H_ERROR, H_REASON, H_SOURCE_OFFSET, H_SOURCE_PARTITION, H_SOURCE_TOPIC};
use super::{Acks, Ends, Itoa, Outputs, Publish};
use crate::error::{Error, Result};

/// Rows per write: the files are cut into these exact chunks whatever the batch
/// sizes, so the same outputs give the same bytes.
const CHUNK_ROWS: usize = 1 << 16;

fn utc_ms() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// The columns of `predictions.parquet`.
pub fn predictions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new("timestamp", utc_ms(), false),
        Field::new("key", DataType::Utf8, false),
        Field::new("payload", DataType::Utf8, false),
        Field::new(H_SOURCE_TOPIC, DataType::Utf8, false),
        Field::new(H_SOURCE_PARTITION, DataType::Utf8, false),
        Field::new(H_SOURCE_OFFSET, DataType::Utf8, false),
        Field::new("event_time", DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), false),
        Field::new("horizon", DataType::Utf8, false),
        Field::new("target", DataType::Utf8, false),
        Field::new("predicted", DataType::Float64, false),
        Field::new("model_updates", DataType::UInt64, false),
        Field::new("source_partition", DataType::Int32, false),
        Field::new("source_offset", DataType::Int64, false),
    ]))
}

/// The columns of `dead_letters.parquet`.
pub fn dead_letters_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new("timestamp", utc_ms(), true),
        Field::new("key", DataType::Binary, true),
        Field::new("payload", DataType::Binary, true),
        Field::new(H_SOURCE_TOPIC, DataType::Utf8, false),
        Field::new(H_SOURCE_PARTITION, DataType::Utf8, false),
        Field::new(H_SOURCE_OFFSET, DataType::Utf8, false),
        Field::new(H_REASON, DataType::Utf8, false),
        Field::new(H_ERROR, DataType::Utf8, false),
    ]))
}

#[derive(Default)]
struct PredictionColumns {
    partition: Int32Builder,
    offset: Int64Builder,
    timestamp: TimestampMillisecondBuilder,
    key: StringBuilder,
    payload: StringBuilder,
    src_topic: StringBuilder,
    src_partition: StringBuilder,
    src_offset: StringBuilder,
    event_time: TimestampNanosecondBuilder,
    horizon: StringBuilder,
    target: StringBuilder,
    predicted: Float64Builder,
    model_updates: UInt64Builder,
    source_partition: Int32Builder,
    source_offset: Int64Builder,
}

#[derive(Default)]
struct DeadLetterColumns {
    partition: Int32Builder,
    offset: Int64Builder,
    timestamp: TimestampMillisecondBuilder,
    key: BinaryBuilder,
    payload: BinaryBuilder,
    src_topic: StringBuilder,
    src_partition: StringBuilder,
    src_offset: StringBuilder,
    reason: StringBuilder,
    error: StringBuilder,
}

/// Record batches waiting to be written in exact chunks.
#[derive(Default)]
struct Chunker {
    pending: Vec<RecordBatch>,
    rows: usize,
}

impl Chunker {
    fn push(&mut self, w: &mut ArrowWriter<File>, b: RecordBatch, all: bool) -> Result<()> {
        self.rows += b.num_rows();
        if b.num_rows() > 0 {
            self.pending.push(b);
        }
        while self.rows >= CHUNK_ROWS || (all && self.rows > 0) {
            let cat = arrow::compute::concat_batches(&self.pending[0].schema(), &self.pending)?;
            let n = cat.num_rows().min(CHUNK_ROWS);
            w.write(&cat.slice(0, n)).map_err(pq)?;
            self.pending.clear();
            if cat.num_rows() > n {
                self.pending.push(cat.slice(n, cat.num_rows() - n));
            }
            self.rows -= n;
        }
        Ok(())
    }
}

/// The builders of the next batches, filled by [`FileSink::append`].
struct Inner {
    p: PredictionColumns,
    d: DeadLetterColumns,
    /// Next offset per output partition: [predictions, dead letters].
    next: BTreeMap<i32, [i64; 2]>,
    /// Header text scratch (no allocation per row).
    num: Itoa,
    writer: Writer,
}

/// The thread that encodes, compresses and writes the Parquet files, so that work
/// overlaps the next batch's processing instead of following it.
struct Writer {
    /// Each batch's (predictions, dead letters). Two may wait: memory stays bounded.
    tx: std::sync::mpsc::SyncSender<(RecordBatch, RecordBatch)>,
    thread: std::thread::JoinHandle<Result<()>>,
}

impl Writer {
    fn start(mut predictions: ArrowWriter<File>, mut dead_letters: ArrowWriter<File>) -> Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(RecordBatch, RecordBatch)>(2);
        let thread = std::thread::Builder::new()
            .name("parquet-writer".into())
            .spawn(move || {
                let (mut pc, mut dc) = (Chunker::default(), Chunker::default());
                for (p, d) in rx {
                    pc.push(&mut predictions, p, false)?;
                    dc.push(&mut dead_letters, d, false)?;
                }
                // The sink closed the channel: the last, short chunks, then the footers.
                pc.push(&mut predictions, RecordBatch::new_empty(predictions_schema()), true)?;
                dc.push(&mut dead_letters, RecordBatch::new_empty(dead_letters_schema()), true)?;
                predictions.close().map_err(pq)?;
                dead_letters.close().map_err(pq)?;
                Ok(())
            })
            .map_err(|e| Error::Internal(format!("starting the Parquet writer thread: {e}")))?;
        Ok(Writer { tx, thread })
    }

    /// Waits for the thread to write everything sent and close the files; its error,
    /// if it stopped on one.
    fn join(self) -> Result<()> {
        drop(self.tx);
        self.thread.join().map_err(|_| Error::Internal("the Parquet writer thread panicked".into()))?
    }
}

/// Writes a lane's outputs to `predictions*.parquet` and `dead_letters*.parquet`.
pub struct FileSink {
    inner: Mutex<Option<Inner>>,
    source_topic: String,
    horizon: String,
    target: String,
    pub predictions_path: PathBuf,
    pub dead_letters_path: PathBuf,
}

impl FileSink {
    /// Creates `DIR/predictions[.LANE].parquet` and `DIR/dead_letters[.LANE].parquet`;
    /// `horizon` and `target` are the lane's (constant per lane) payload fields.
    pub fn create(dir: &Path, lane: Option<&str>, source_topic: &str, horizon: &str, target: &str) -> Result<Self> {
        let io = |p: &Path, e: std::io::Error| Error::Internal(format!("{}: {e}", p.display()));
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let name = |stem: &str| match lane {
            Some(l) => dir.join(format!("{stem}.{l}.parquet")),
            None => dir.join(format!("{stem}.parquet")),
        };
        let (pp, dp) = (name("predictions"), name("dead_letters"));
        // The payload and error texts are unique per row: no dictionary, no min/max
        // statistics (both cost more than they help on them).
        let props = || {
            let mut b = WriterProperties::builder().set_compression(Compression::SNAPPY);
            for c in ["payload", "key", H_ERROR] {
                let c = ColumnPath::from(c);
                b = b.set_column_dictionary_enabled(c.clone(), false).set_column_statistics_enabled(c, EnabledStatistics::None);
            }
            b.build()
        };
        let writer = |path: &Path, schema: SchemaRef| -> Result<ArrowWriter<File>> {
            let f = File::create(path).map_err(|e| io(path, e))?;
            ArrowWriter::try_new(f, schema, Some(props())).map_err(|e| Error::Internal(format!("{}: {e}", path.display())))
        };
        let inner = Inner {
            p: PredictionColumns::default(),
            d: DeadLetterColumns::default(),
            next: BTreeMap::new(),
            num: Itoa::default(),
            writer: Writer::start(writer(&pp, predictions_schema())?, writer(&dp, dead_letters_schema())?)?,
        };
        Ok(FileSink {
            inner: Mutex::new(Some(inner)),
            source_topic: source_topic.to_string(),
            horizon: horizon.to_string(),
            target: target.to_string(),
            predictions_path: pp,
            dead_letters_path: dp,
        })
    }

    /// Writes what is buffered and closes both files.
    pub fn finish(&self) -> Result<()> {
        let mut g = self.inner.lock().map_err(|_| Error::Internal("file sink poisoned".into()))?;
        let Some(mut inner) = g.take() else { return Ok(()) };
        let sent = inner.send();
        // A writer that stopped on an error is why the last batch could not be sent.
        inner.writer.join().and(sent)
    }

    fn append(&self, out: &Outputs) -> Result<Ends> {
        let mut g = self.inner.lock().map_err(|_| Error::Internal("file sink poisoned".into()))?;
        let inner = g.as_mut().ok_or_else(|| Error::Internal("file sink already finished".into()))?;
        let mut at = Ends::new();
        let Inner { p, d, next, num, .. } = inner;
        for r in &out.predictions {
            let o = &mut next.entry(r.partition).or_insert([0, 0])[0];
            at.entry(r.partition).or_insert([0, 0])[0] = *o + 1;
            p.partition.append_value(r.partition);
            p.offset.append_value(*o);
            *o += 1;
            p.timestamp.append_value(r.timestamp_ms);
            p.key.append_value(std::str::from_utf8(out.key(r)).map_err(|e| Error::Internal(e.to_string()))?);
            p.payload.append_value(std::str::from_utf8(out.payload(r)).map_err(|e| Error::Internal(e.to_string()))?);
            p.src_topic.append_value(&self.source_topic);
            p.src_partition.append_value(num.fmt(r.partition as i64));
            p.src_offset.append_value(num.fmt(r.offset));
            p.event_time.append_value(r.event_time_ns);
            p.horizon.append_value(&self.horizon);
            p.target.append_value(&self.target);
            p.predicted.append_value(r.predicted);
            p.model_updates.append_value(r.model_updates);
            p.source_partition.append_value(r.partition);
            p.source_offset.append_value(r.offset);
        }
        for l in &out.dead_letters {
            let o = &mut next.entry(l.partition).or_insert([0, 0])[1];
            at.entry(l.partition).or_insert([0, 0])[1] = *o + 1;
            d.partition.append_value(l.partition);
            d.offset.append_value(*o);
            *o += 1;
            d.timestamp.append_option(l.timestamp_ms);
            d.key.append_option(l.key.as_deref());
            d.payload.append_option(l.payload.as_deref());
            d.src_topic.append_value(&self.source_topic);
            d.src_partition.append_value(num.fmt(l.partition as i64));
            d.src_offset.append_value(num.fmt(l.offset));
            d.reason.append_value(l.reason);
            d.error.append_value(&l.detail);
        }
        if inner.send().is_err() {
            // The writer stopped: its error says why.
            let Some(inner) = g.take() else { unreachable!("taken just now") };
            inner.writer.join()?;
            return Err(Error::Internal("the Parquet writer thread stopped".into()));
        }
        Ok(at)
    }
}

impl Publish for FileSink {
    async fn send(&self, out: &Outputs) -> Result<Acks> {
        Ok(Acks::Done(self.append(out)?))
    }
}

fn pq(e: parquet::errors::ParquetError) -> Error {
    Error::Internal(format!("writing Parquet: {e}"))
}

impl Inner {
    /// Hands the rows built so far to the writer thread (an error if it stopped).
    fn send(&mut self) -> Result<()> {
        let predictions = {
            let p = &mut self.p;
            let cols: Vec<ArrayRef> = vec![
                Arc::new(p.partition.finish()),
                Arc::new(p.offset.finish()),
                Arc::new(p.timestamp.finish().with_timezone("UTC")),
                Arc::new(p.key.finish()),
                Arc::new(p.payload.finish()),
                Arc::new(p.src_topic.finish()),
                Arc::new(p.src_partition.finish()),
                Arc::new(p.src_offset.finish()),
                Arc::new(p.event_time.finish().with_timezone("UTC")),
                Arc::new(p.horizon.finish()),
                Arc::new(p.target.finish()),
                Arc::new(p.predicted.finish()),
                Arc::new(p.model_updates.finish()),
                Arc::new(p.source_partition.finish()),
                Arc::new(p.source_offset.finish()),
            ];
            RecordBatch::try_new(predictions_schema(), cols)?
        };
        let dead_letters = {
            let d = &mut self.d;
            let cols: Vec<ArrayRef> = vec![
                Arc::new(d.partition.finish()),
                Arc::new(d.offset.finish()),
                Arc::new(d.timestamp.finish().with_timezone("UTC")),
                Arc::new(d.key.finish()),
                Arc::new(d.payload.finish()),
                Arc::new(d.src_topic.finish()),
                Arc::new(d.src_partition.finish()),
                Arc::new(d.src_offset.finish()),
                Arc::new(d.reason.finish()),
                Arc::new(d.error.finish()),
            ];
            RecordBatch::try_new(dead_letters_schema(), cols)?
        };
        self.writer.tx.send((predictions, dead_letters)).map_err(|_| Error::Internal("the Parquet writer thread stopped".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write that fails on the writer thread is not lost: joining it returns the error.
    #[test]
    fn a_failed_write_comes_back_from_the_writer_thread() {
        let full = || File::options().write(true).open("/dev/full").expect("/dev/full (Linux)");
        let w = |schema| ArrowWriter::try_new(full(), schema, None).expect("a writer over /dev/full");
        let writer = Writer::start(w(predictions_schema()), w(dead_letters_schema())).unwrap();
        let empty = (RecordBatch::new_empty(predictions_schema()), RecordBatch::new_empty(dead_letters_schema()));
        writer.tx.send(empty).unwrap();
        let e = writer.join().expect_err("/dev/full accepts no bytes");
        assert!(e.to_string().contains("writing Parquet"), "{e}");
        // The same files on a real disk close without error.
        let dir = std::env::temp_dir().join(format!("tickflare-file-sink-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let w = |name: &str, schema| ArrowWriter::try_new(File::create(dir.join(name)).unwrap(), schema, None).unwrap();
        let writer = Writer::start(w("p.parquet", predictions_schema()), w("d.parquet", dead_letters_schema())).unwrap();
        writer.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

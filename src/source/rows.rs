//! Streaming reads of historical files, a row at a time: JSON lines, CSV (through the
//! `csv` crate: quoted fields, CRLF, a byte-order mark) and Parquet (a record batch at
//! a time), each optionally gzip'd. Memory stays bounded by one batch, whatever the
//! file's size; [`RowReader::progress`] says how far through the file a read is.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::Context;
use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, TimestampMillisecondType};
use serde_json::{Map, Value};

use super::file::{rfc3339_ms, Row};

/// Rows of a Parquet batch converted at a time.
const PARQUET_BATCH: usize = 8192;

/// Counts the bytes read from the file (before decompression), for progress.
struct Counted<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

type Input = Box<dyn BufRead + Send>;

enum Inner {
    Json { input: Input, line: Vec<u8> },
    Csv { rdr: csv::Reader<Input>, header: Vec<String>, rec: csv::StringRecord },
    Parquet { reader: parquet::arrow::arrow_reader::ParquetRecordBatchReader, rows: std::vec::IntoIter<Row>, total: u64, done: u64 },
}

/// The rows of one file, in file order, read as they are asked for.
pub struct RowReader {
    inner: Inner,
    path: PathBuf,
    read: Arc<AtomicU64>,
    size: u64,
    /// 1-based line (JSON lines) or record (CSV, Parquet) number of the last row.
    pub row_number: u64,
}

impl RowReader {
    /// Opens `path`, finding its format from its first bytes (after gzip, if any).
    pub fn open(path: &Path) -> crate::error::Result<Self> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let read = Arc::new(AtomicU64::new(0));
        let mut raw = BufReader::with_capacity(1 << 16, Counted { inner: file, read: read.clone() });
        let gz = raw.fill_buf().with_context(|| format!("reading {}", path.display()))?.starts_with(&[0x1f, 0x8b]);
        let mut input: Input = if gz { Box::new(BufReader::with_capacity(1 << 16, flate2::read::MultiGzDecoder::new(raw))) } else { Box::new(raw) };
        let head = input.fill_buf().with_context(|| format!("reading {}", path.display()))?;
        let inner = if head.starts_with(b"PAR1") {
            parquet_reader(path, gz, input).with_context(|| format!("reading Parquet {}", path.display()))?
        } else {
            // A byte-order mark would otherwise become part of the first field.
            if head.starts_with("\u{feff}".as_bytes()) {
                input.consume(3);
            }
            let head = input.fill_buf()?;
            let first = head.iter().find(|b| !b.is_ascii_whitespace());
            if first == Some(&b'{') {
                Inner::Json { input, line: Vec::with_capacity(1024) }
            } else {
                let mut rdr = csv::ReaderBuilder::new().flexible(true).trim(csv::Trim::All).from_reader(input);
                let header = rdr.headers().with_context(|| format!("reading the CSV header of {}", path.display()))?;
                if header.is_empty() || (header.len() == 1 && header[0].is_empty()) {
                    crate::fail!(Input, "{}: empty file", path.display());
                }
                let header = header.iter().map(str::to_string).collect();
                Inner::Csv { rdr, header, rec: csv::StringRecord::new() }
            }
        };
        Ok(RowReader { inner, path: path.to_path_buf(), read, size, row_number: 0 })
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether rows come from JSON lines (so [`RowReader::next_line`] applies).
    pub fn is_json_lines(&self) -> bool {
        matches!(self.inner, Inner::Json { .. })
    }

    /// The next non-blank line of a JSON-lines file, as bytes (no parse), without
    /// its line end. `None` at the end or for other formats.
    pub fn next_line(&mut self) -> Option<crate::error::Result<&[u8]>> {
        let Inner::Json { input, line } = &mut self.inner else { return None };
        loop {
            line.clear();
            match input.read_until(b'\n', line) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some(Err(crate::error::Error::from(e).context(format!("reading {}", self.path.display())))),
            }
            self.row_number += 1;
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                return Some(Ok(&line[..]));
            }
        }
    }

    /// The line [`RowReader::next_line`] returned last (empty for other formats).
    pub fn line(&self) -> &[u8] {
        match &self.inner {
            Inner::Json { line, .. } => line,
            _ => &[],
        }
    }

    /// Bytes of the file consumed and its size (rows for Parquet), for progress.
    pub fn progress(&self) -> (u64, u64) {
        match &self.inner {
            Inner::Parquet { total, done, .. } => (*done, *total),
            _ => (self.read.load(Ordering::Relaxed).min(self.size), self.size),
        }
    }

    fn next_row(&mut self) -> crate::error::Result<Option<Row>> {
        match &mut self.inner {
            Inner::Json { .. } => {
                let Some(line) = self.next_line() else { return Ok(None) };
                let line = line?;
                Ok(Some(match serde_json::from_slice::<Value>(line) {
                    Ok(Value::Object(m)) => Row::Line(m, line.to_vec()),
                    _ => Row::Raw(line.to_vec()),
                }))
            }
            Inner::Csv { rdr, header, rec } => {
                loop {
                    if !rdr.read_record(rec).with_context(|| format!("{}: CSV record {}", self.path.display(), self.row_number + 1))? {
                        return Ok(None);
                    }
                    self.row_number += 1;
                    if rec.iter().all(str::is_empty) {
                        continue;
                    }
                    let mut m = Map::new();
                    for (h, cell) in header.iter().zip(rec.iter()) {
                        m.insert(h.clone(), cell_value(cell));
                    }
                    return Ok(Some(Row::Record(m)));
                }
            }
            Inner::Parquet { reader, rows, done, .. } => loop {
                if let Some(r) = rows.next() {
                    self.row_number += 1;
                    *done += 1;
                    return Ok(Some(r));
                }
                match reader.next() {
                    None => return Ok(None),
                    Some(b) => *rows = batch_rows(&b.with_context(|| format!("reading Parquet {}", self.path.display()))?)?.into_iter(),
                }
            },
        }
    }
}

impl Iterator for RowReader {
    type Item = crate::error::Result<Row>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_row().transpose()
    }
}

/// A CSV cell as JSON: nothing (an empty cell) is null; an integer written as one
/// (no sign but a minus, no leading zero) a number; other integer-looking text (an
/// identifier such as `0012`, or one past i64) stays text; else a finite float, else
/// the text. Numeric fields parse text, so only identifiers are told apart.
fn cell_value(cell: &str) -> Value {
    if cell.is_empty() {
        return Value::Null;
    }
    let digits = cell.strip_prefix(['-', '+']).unwrap_or(cell);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return match cell.parse::<i64>() {
            Ok(i) if i.to_string() == cell => Value::from(i),
            _ => Value::from(cell),
        };
    }
    match cell.parse::<f64>() {
        Ok(f) if f.is_finite() => Value::from(f),
        _ => Value::from(cell),
    }
}

fn parquet_reader(path: &Path, gz: bool, mut input: Input) -> crate::error::Result<Inner> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    fn reader<T: parquet::file::reader::ChunkReader + 'static>(b: ParquetRecordBatchReaderBuilder<T>) -> crate::error::Result<Inner> {
        let total = b.metadata().file_metadata().num_rows().max(0) as u64;
        Ok(Inner::Parquet { reader: b.with_batch_size(PARQUET_BATCH).build()?, rows: Vec::new().into_iter(), total, done: 0 })
    }
    if gz {
        // Parquet needs random access: a gzip'd file is decompressed into memory.
        let mut bytes = Vec::new();
        input.read_to_end(&mut bytes)?;
        reader(ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))?)
    } else {
        drop(input);
        reader(ParquetRecordBatchReaderBuilder::try_new(File::open(path)?)?)
    }
}

/// Parquet rows as records: integers and floats as numbers, timestamps and dates as
/// RFC 3339 strings (UTC), everything else as its Arrow text form; nulls are omitted.
fn batch_rows(batch: &arrow::record_batch::RecordBatch) -> crate::error::Result<Vec<Row>> {
    use arrow::compute::cast;
    let schema = batch.schema();
    let mut rows: Vec<Map<String, Value>> = vec![Map::new(); batch.num_rows()];
    for (f, col) in schema.fields().iter().zip(batch.columns()) {
        let name = f.name();
        match col.data_type() {
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 | DataType::UInt8 | DataType::UInt16 | DataType::UInt32 => {
                let c = cast(col, &DataType::Int64)?;
                let c = c.as_primitive::<Int64Type>();
                for (i, r) in rows.iter_mut().enumerate().filter(|(i, _)| c.is_valid(*i)) {
                    r.insert(name.clone(), Value::from(c.value(i)));
                }
            }
            DataType::Float16 | DataType::Float32 | DataType::Float64 | DataType::UInt64 | DataType::Decimal128(..) => {
                let c = cast(col, &DataType::Float64)?;
                let c = c.as_primitive::<Float64Type>();
                for (i, r) in rows.iter_mut().enumerate().filter(|(i, _)| c.is_valid(*i)) {
                    r.insert(name.clone(), Value::from(c.value(i)));
                }
            }
            DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => {
                let c = cast(col, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
                let c = c.as_primitive::<TimestampMillisecondType>();
                for (i, r) in rows.iter_mut().enumerate().filter(|(i, _)| c.is_valid(*i)) {
                    r.insert(name.clone(), Value::from(rfc3339_ms(c.value(i))));
                }
            }
            _ => {
                let c = cast(col, &DataType::Utf8)?;
                let c = c.as_string::<i32>();
                for (i, r) in rows.iter_mut().enumerate().filter(|(i, _)| c.is_valid(*i)) {
                    r.insert(name.clone(), Value::from(c.value(i)));
                }
            }
        }
    }
    Ok(rows.into_iter().map(Row::Record).collect())
}

/// The files an input names: the file itself; every regular, non-hidden file of a
/// directory; or the matches of a glob pattern (`*`, `?`, `[`). Unordered.
pub fn input_files(input: &Path) -> crate::error::Result<Vec<PathBuf>> {
    let text = input.to_string_lossy();
    if input.is_dir() {
        let mut out = Vec::new();
        for e in std::fs::read_dir(input).with_context(|| format!("listing {}", input.display()))? {
            let p = e?.path();
            let hidden = p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if p.is_file() && !hidden {
                out.push(p);
            }
        }
        out.sort();
        if out.is_empty() {
            crate::fail!(Input, "{} holds no files", input.display());
        }
        Ok(out)
    } else if !input.exists() && text.contains(['*', '?', '[']) {
        let mut out: Vec<PathBuf> = glob::glob(&text).with_context(|| format!("pattern {text:?}"))?.filter_map(Result::ok).filter(|p| p.is_file()).collect();
        out.sort();
        if out.is_empty() {
            crate::fail!(Input, "no file matches {text:?}");
        }
        Ok(out)
    } else {
        if !input.is_file() {
            crate::fail!(Input, "{} is not a file", input.display());
        }
        Ok(vec![input.to_path_buf()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(path: &Path) -> Vec<Row> {
        RowReader::open(path).unwrap().collect::<crate::error::Result<_>>().unwrap()
    }

    /// A CSV cell is a number only where the text is one as written: an empty cell
    /// is missing (NULL where the field is nullable, not a string that is no
    /// number), and identifiers that look like integers but are not written as one
    /// (`0012`, `+12`, or past i64) keep their text — as numbers, `0012` and `12`
    /// were one key. Numeric columns still parse the kept text.
    #[test]
    fn csv_cells_are_numbers_only_as_written() {
        let cells = |c: &str| cell_value(c);
        assert_eq!(cells(""), Value::Null);
        assert_eq!(cells("12"), Value::from(12));
        assert_eq!(cells("-7"), Value::from(-7));
        assert_eq!(cells("1.05236"), Value::from(1.05236));
        for text in ["0012", "+12", "-0", "007", "12345678901234567890", "A12"] {
            assert_eq!(cells(text), Value::from(text), "{text}");
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ids.csv");
        std::fs::write(&p, "series,value,volume\n0012,1,\n12,2,5\n").unwrap();
        let keys: Vec<Value> = rows(&p).into_iter().map(|r| match r {
            Row::Record(m) => m["series"].clone(),
            other => panic!("{other:?}"),
        }).collect();
        assert_eq!(keys, [Value::from("0012"), Value::from(12)]);
    }

    /// RFC 4180 CSV: quoted fields holding commas, doubled quotes and line breaks,
    /// CRLF line ends and a byte-order mark.
    #[test]
    fn csv_quotes_crlf_and_bom() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("q.csv");
        std::fs::write(&p, "\u{feff}name,note,value\r\n\"Smith, J\",\"said \"\"hi\"\"\",1.5\r\nplain,\"two\nlines\",2\r\n\r\n").unwrap();
        let r = rows(&p);
        assert_eq!(r.len(), 2);
        let Row::Record(a) = &r[0] else { panic!() };
        assert_eq!(a["name"], Value::from("Smith, J"));
        assert_eq!(a["note"], Value::from("said \"hi\""));
        assert_eq!(a["value"], Value::from(1.5));
        let Row::Record(b) = &r[1] else { panic!() };
        assert_eq!(b["note"], Value::from("two\nlines"));
        assert_eq!(b["value"], Value::from(2));
    }

    /// JSON lines stream without a parse through `next_line`; blank lines and CRLF
    /// ends are dropped; progress reaches the file's size.
    #[test]
    fn json_lines_and_progress() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        let text = "{\"a\":1}\r\n\n  \n{\"a\":2}";
        std::fs::write(&p, text).unwrap();
        let mut r = RowReader::open(&p).unwrap();
        assert!(r.is_json_lines());
        assert_eq!(r.next_line().unwrap().unwrap(), b"{\"a\":1}");
        assert_eq!(r.next_line().unwrap().unwrap(), b"{\"a\":2}");
        assert!(r.next_line().is_none());
        assert_eq!(r.row_number, 4);
        assert_eq!(r.progress(), (text.len() as u64, text.len() as u64));
    }

    #[test]
    fn directories_and_globs() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["b.csv", "a.csv", ".hidden"] {
            std::fs::write(dir.path().join(f), "x\n1\n").unwrap();
        }
        let names = |v: Vec<PathBuf>| v.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect::<Vec<_>>();
        assert_eq!(names(input_files(dir.path()).unwrap()), ["a.csv", "b.csv"]);
        assert_eq!(names(input_files(&dir.path().join("b*.csv")).unwrap()), ["b.csv"]);
        assert!(input_files(&dir.path().join("z*.csv")).is_err());
        assert!(input_files(&dir.path().join("none.csv")).is_err());
    }
}

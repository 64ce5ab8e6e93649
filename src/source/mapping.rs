//! From a historical file's rows to a topic's messages: `[source.file]` renames and
//! fills, the event time written as RFC 3339, and the Kafka timestamp set to it.

use std::path::Path;

use serde_json::{Map, Value};

use super::file::{parse_time_ms, rfc3339_ms, Row};
use super::jsonpath::{self, Found, PointerSet, Scratch, Skip};
use super::rows::RowReader;
use super::schema::{Extract, Kind, TopicSchema};
use crate::pipeline::config::FileMapping;

/// One message to publish: its payload and (when the event time could be read) its
/// Kafka timestamp in milliseconds.
pub type Message = (Vec<u8>, Option<i64>);

/// Applies renames, then fills fields the row lacks.
pub fn apply(m: &FileMapping, mut rec: Map<String, Value>, file_stem: &str) -> Map<String, Value> {
    for (from, to) in &m.rename {
        if let Some(v) = rec.remove(from) {
            rec.insert(to.clone(), v);
        }
    }
    for (field, template) in &m.fill {
        if !rec.contains_key(field) {
            if let Some(v) = render(template, &rec, file_stem) {
                rec.insert(field.clone(), Value::from(v));
            }
        }
    }
    rec
}

/// `{column}` → the column's value, `{file_stem}` → the file's stem; `None` when a
/// referenced column is missing (the field stays absent and the decoder says so).
fn render(template: &str, rec: &Map<String, Value>, file_stem: &str) -> Option<String> {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}')? + open;
        let name = &rest[open + 1..close];
        if name == "file_stem" {
            out.push_str(file_stem);
        } else {
            match rec.get(name)? {
                Value::String(s) => out.push_str(s),
                Value::Null => return None,
                v => out.push_str(&v.to_string()),
            }
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// The file's name without any extensions (`sp500_daily_1999_2018.csv.gz` →
/// `sp500_daily_1999_2018`).
pub fn file_stem(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    name.split('.').next().unwrap_or_default().to_string()
}

/// The event time (ms) of a record, read at the schema's time field.
pub fn event_time_ms(rec: &Value, schema: &TopicSchema, time: &str) -> Option<i64> {
    let f = schema.field(time)?;
    let Extract::Pointer(p) = &f.extract else { return None };
    let v = rec.pointer(p)?;
    match (v, f.kind) {
        (Value::Number(n), Kind::Timestamp { int_unit_ns }) => int_time_ms(n.as_i64()?, int_unit_ns),
        (Value::String(_), _) => parse_time_ms(v),
        _ => None,
    }
}

/// An integer timestamp in units of `int_unit_ns` nanoseconds, in milliseconds;
/// None past i64's range.
fn int_time_ms(n: i64, int_unit_ns: i64) -> Option<i64> {
    if int_unit_ns >= 1_000_000 {
        n.checked_mul(int_unit_ns / 1_000_000)
    } else {
        Some(n / (1_000_000 / int_unit_ns))
    }
}

/// The messages of a file, read as they are asked for: each row mapped, the time
/// field rewritten as RFC 3339 when it is text in another format, with its event time
/// (ms) and key. Lines that are not JSON pass through unchanged (no time, no key).
pub struct FileMessages {
    rows: RowReader,
    mapping: FileMapping,
    stem: String,
    schema: std::sync::Arc<TopicSchema>,
    time: String,
    key: Option<String>,
    time_pointer: Option<String>,
    payload: Vec<u8>,
    key_buf: String,
    has_key: bool,
    time_ms: Option<i64>,
    /// JSON lines the mapping leaves alone: the time and key pointers, read without a
    /// DOM up to where both have been found ([`PointerSet::stop_when_found`]; values
    /// skipped on the way are checked leniently, [`Skip::Lenient`]): a line broken
    /// only elsewhere (bad UTF-8 or an out-of-range number in a value no pointer
    /// reads, or anything after the key and time) is still keyed and timed here, goes
    /// out byte for byte, and is dead-lettered by the worker's full decode like any
    /// other bad record. Of duplicate keys, the first places and times the line (the
    /// full decode, like `serde_json`, reads the last).
    fast: Option<(PointerSet, Scratch, Kind)>,
}

/// One message of a file, borrowed from the reader until its next call.
pub struct FileMessage<'a> {
    pub payload: &'a [u8],
    pub time_ms: Option<i64>,
    pub key: Option<&'a str>,
}

impl FileMessages {
    /// Opens `path`; `key` names the schema field whose text keys each message.
    pub fn open(path: &Path, m: &FileMapping, schema: std::sync::Arc<TopicSchema>, time: &str, key: Option<&str>) -> crate::error::Result<Self> {
        let time_pointer = match schema.field(time).map(|f| &f.extract) {
            Some(Extract::Pointer(p)) => Some(p.clone()),
            _ => None,
        };
        let rows = RowReader::open(path)?;
        let fast = match (schema.field(time), key.and_then(|k| schema.field(k))) {
            (Some(t), k) if rows.is_json_lines() && m.rename.is_empty() && m.fill.is_empty() && matches!(t.extract, Extract::Pointer(_)) => {
                let mut ptrs = vec![t.segments.clone()];
                if let Some(k) = k {
                    ptrs.push(k.segments.clone());
                }
                Some((PointerSet::new(ptrs).with_skip(Skip::Lenient).stop_when_found(), Scratch::new(), t.kind))
            }
            _ => None,
        };
        Ok(FileMessages {
            rows,
            mapping: m.clone(),
            stem: file_stem(path),
            schema,
            time: time.to_string(),
            key: key.map(str::to_string),
            time_pointer,
            payload: Vec::new(),
            key_buf: String::new(),
            has_key: false,
            time_ms: None,
            fast,
        })
    }

    /// How far through the file (bytes, or rows for Parquet): (done, total).
    pub fn progress(&self) -> (u64, u64) {
        self.rows.progress()
    }

    /// The next message; `None` at the end of the file.
    pub fn next_message(&mut self) -> Option<crate::error::Result<FileMessage<'_>>> {
        let mut held = None;
        if let (Some((set, scratch, kind)), true) = (self.fast.as_mut(), self.rows.is_json_lines()) {
            let line = match self.rows.next_line()? {
                Ok(l) => l,
                Err(e) => return Some(Err(e)),
            };
            match fast_fill(line, set, scratch, *kind, &mut self.key_buf) {
                // Out as it came, straight from the reader's line buffer.
                Some((time_ms, has_key)) => {
                    let payload = self.rows.line();
                    return Some(Ok(FileMessage { payload, time_ms, key: has_key.then_some(self.key_buf.as_str()) }));
                }
                None => held = Some(line.to_vec()),
            }
        }
        match self.fill(held) {
            Ok(true) => Some(Ok(FileMessage { payload: &self.payload, time_ms: self.time_ms, key: self.has_key.then_some(self.key_buf.as_str()) })),
            Ok(false) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// The next message into `payload`, `time_ms` and the key: of `held` (a JSON line
    /// already read, which the pointers could not take) or else of the next row.
    fn fill(&mut self, held: Option<Vec<u8>>) -> crate::error::Result<bool> {
        self.has_key = false;
        let (rec, line) = if self.rows.is_json_lines() {
            let line = match held {
                Some(l) => l,
                None => match self.rows.next_line() {
                    None => return Ok(false),
                    Some(l) => l?.to_vec(),
                },
            };
            match serde_json::from_slice::<Value>(&line) {
                Ok(Value::Object(m)) => (m, Some(line)),
                _ => {
                    self.payload = line;
                    self.time_ms = None;
                    return Ok(true);
                }
            }
        } else {
            match self.rows.next() {
                None => return Ok(false),
                Some(r) => match r? {
                    Row::Record(m) | Row::Line(m, _) => (m, None),
                    Row::Raw(bytes) => {
                        self.payload = bytes;
                        self.time_ms = None;
                        return Ok(true);
                    }
                },
            }
        };
        let m = &self.mapping;
        let untouched = m.rename.keys().all(|k| !rec.contains_key(k)) && m.fill.keys().all(|k| rec.contains_key(k));
        let mut v = Value::Object(apply(m, rec, &self.stem));
        let mut rewritten = false;
        if let Some(slot) = self.time_pointer.as_deref().and_then(|p| v.pointer_mut(p)) {
            if let Value::String(s) = slot {
                if chrono::DateTime::parse_from_rfc3339(s).is_err() {
                    if let Some(ms) = parse_time_ms(slot) {
                        *slot = Value::from(rfc3339_ms(ms));
                        rewritten = true;
                    }
                }
            }
        }
        self.time_ms = event_time_ms(&v, &self.schema, &self.time);
        if let Some(k) = self.key.as_deref().and_then(|k| key_text(&v, &self.schema, k)) {
            self.key_buf = k;
            self.has_key = true;
        }
        // A JSON line the mapping leaves as it is goes out byte for byte.
        match line {
            Some(l) if untouched && !rewritten => self.payload = l,
            _ => {
                self.payload.clear();
                serde_json::to_writer(&mut self.payload, &v)?;
            }
        }
        Ok(true)
    }
}

/// One JSON line through the pointers: its time (ms) and whether it has a key
/// (written to `key`); `None` where the line needs the general path (a time that is
/// text but not RFC 3339, so it is rewritten; a key that is an array or object).
/// A line that is not JSON passes through with neither.
fn fast_fill(line: &[u8], set: &PointerSet, scratch: &mut Scratch, kind: Kind, key: &mut String) -> Option<(Option<i64>, bool)> {
    let (time, has_key) = match set.extract(line, scratch) {
        Err(_) => (None, false),
        Ok(found) => {
            let time = match (found.get(0), kind) {
                (Found::Str(s), _) => Some(jsonpath::parse_rfc3339_nanos(s)?.div_euclid(1_000_000)),
                (Found::Number(n), Kind::Timestamp { int_unit_ns }) => n.as_i64().and_then(|n| int_time_ms(n, int_unit_ns)),
                _ => None,
            };
            key.clear();
            let k = if found.len() > 1 { found.get(1) } else { Found::Missing };
            let has_key = match k {
                Found::Missing | Found::Null => false,
                Found::Str(s) => {
                    key.push_str(s);
                    true
                }
                Found::Number(n) => {
                    jsonpath::push_number(key, n);
                    true
                }
                Found::Bool(b) => {
                    key.push_str(if b { "true" } else { "false" });
                    true
                }
                Found::Array | Found::Object { .. } => return None,
            };
            (time, has_key)
        }
    };
    Some((time, has_key))
}

/// The text of the key field of a record (numbers as their JSON text).
pub fn key_text(rec: &Value, schema: &TopicSchema, key: &str) -> Option<String> {
    let f = schema.field(key)?;
    let p = match &f.extract {
        Extract::Pointer(p) | Extract::Variant(p) => p,
    };
    match rec.pointer(p)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Reads all of `path` as messages (payload, event time); for small files — larger
/// ones stream through [`FileMessages`].
pub fn file_messages(path: &Path, m: &FileMapping, schema: &TopicSchema, time: &str) -> crate::error::Result<Vec<Message>> {
    let mut r = FileMessages::open(path, m, std::sync::Arc::new(schema.clone()), time, None)?;
    let mut out = Vec::new();
    while let Some(msg) = r.next_message() {
        let msg = msg?;
        out.push((msg.payload.to_vec(), msg.time_ms));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(rename: &[(&str, &str)], fill: &[(&str, &str)]) -> FileMapping {
        FileMapping {
            rename: rename.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
            fill: fill.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
        }
    }

    /// An integer time in seconds too large for milliseconds is no time (the
    /// record is then refused with its reason), not an overflow: a panic in a debug
    /// build, a wrapped timestamp in a release one.
    #[test]
    fn an_integer_time_past_the_range_is_no_time() {
        assert_eq!(int_time_ms(1_700_000_000, 1_000_000_000), Some(1_700_000_000_000));
        assert_eq!(int_time_ms(1_700_000_000_123_456, 1_000), Some(1_700_000_000_123));
        assert_eq!(int_time_ms(9_223_372_036_854_776, 1_000_000_000), None);
        assert_eq!(int_time_ms(i64::MIN, 1_000_000), Some(i64::MIN));
    }

    #[test]
    fn renames_and_fills() {
        let m = mapping(&[("births", "value"), ("Absent", "x")], &[("series", "{file_stem}"), ("date", "{year}-{month}-{date_of_month}")]);
        let rec: Map<String, Value> = serde_json::from_str(r#"{"year":2000,"month":1,"date_of_month":2,"births":8006}"#).unwrap();
        let out = apply(&m, rec, "us_births_daily_2000_2014");
        assert_eq!(out["value"], Value::from(8006));
        assert_eq!(out["series"], Value::from("us_births_daily_2000_2014"));
        assert_eq!(out["date"], Value::from("2000-1-2"));
        assert!(!out.contains_key("births") && !out.contains_key("x"));
        // A field the row already has is not filled; a missing column leaves it absent.
        let rec: Map<String, Value> = serde_json::from_str(r#"{"series":"s","year":2000}"#).unwrap();
        let out = apply(&m, rec, "f");
        assert_eq!(out["series"], Value::from("s"));
        assert!(!out.contains_key("date"));
        assert_eq!(file_stem(Path::new("../x/sp500_daily_1999_2018.csv.gz")), "sp500_daily_1999_2018");
    }

    /// The pointer path for JSON lines gives what the general (DOM) path gives: the
    /// shipped tick sample and lines whose time needs rewriting, whose key is a
    /// number, an object or absent, or that are not JSON — all but a line broken
    /// only outside the pointers or after them, which the fast path still keys, and
    /// a line with its key twice, which the fast path keys by the first.
    #[test]
    fn json_lines_fast_path_equals_the_general_path() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let schema = std::sync::Arc::new(TopicSchema::load(&root.join("schemas/flat-ticks.json")).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.jsonl");
        let lines = [
            r#"{"symbol":"A","ts":"2024-01-02T03:04:05.678Z","price":1}"#,
            r#"{"symbol":7,"ts":1700000000123,"price":1}"#,
            r#"{"symbol":{"x":1},"ts":"2024-01-02T03:04:05Z"}"#,
            r#"{"symbol":"B","ts":"02.01.2024 03:04:05.000"}"#,
            r#"{"symbol":null,"ts":" 2024-01-02T03:04:05Z"}"#,
            r#"{"ts":"2024-01-02T03:04:05+02:00","symbol":"C"}"#,
            r#"{not json"#,
            r#"[1,2]"#,
            // Broken only in a value no pointer reads: serde_json's DOM refuses 1e999.
            r#"{"symbol":"D","ts":"2024-01-02T03:04:05Z","price":1e999}"#,
            // Cut short after the key and time.
            r#"{"symbol":"E","ts":"2024-01-02T03:04:05Z","price":"#,
            // The key twice: serde_json's DOM keeps the last.
            r#"{"symbol":"F","ts":"2024-01-02T03:04:05Z","symbol":"G"}"#,
        ];
        std::fs::write(&p, lines.join("\n")).unwrap();
        let all = |path: &Path, schema: std::sync::Arc<TopicSchema>, time: &str, key: &str, fast: bool| {
            let mut r = FileMessages::open(path, &FileMapping::default(), schema, time, Some(key)).unwrap();
            if !fast {
                r.fast = None;
            }
            let mut out = Vec::new();
            while let Some(m) = r.next_message() {
                let m = m.unwrap();
                out.push((m.payload.to_vec(), m.time_ms, m.key.map(str::to_string)));
            }
            out
        };
        let (a, b) = (all(&p, schema.clone(), "ts", "symbol", true), all(&p, schema, "ts", "symbol", false));
        assert_eq!(a.len(), lines.len());
        assert_eq!(a[..8], b[..8]);
        // The general path cannot key the broken line; the fast one keys and times it
        // and passes it on byte for byte (the worker's decode dead-letters it).
        assert!(serde_json::from_str::<Value>(lines[8]).is_err());
        assert_eq!(b[8], (lines[8].as_bytes().to_vec(), None, None));
        assert_eq!(a[8], (lines[8].as_bytes().to_vec(), Some(1_704_164_645_000), Some("D".to_string())));
        // Nor a line broken after its key and time; the fast path reads no further.
        assert!(serde_json::from_str::<Value>(lines[9]).is_err());
        assert_eq!(b[9], (lines[9].as_bytes().to_vec(), None, None));
        assert_eq!(a[9], (lines[9].as_bytes().to_vec(), Some(1_704_164_645_000), Some("E".to_string())));
        // Of a duplicated key the general path takes the last, the fast path the first.
        assert_eq!(serde_json::from_str::<Value>(lines[10]).unwrap()["symbol"], "G");
        assert_eq!(b[10].2.as_deref(), Some("G"));
        assert_eq!(a[10].2.as_deref(), Some("F"));
        assert_eq!(a[1].2.as_deref(), Some("7"));
        assert_eq!(a[5].1, Some(1_704_157_445_000));
        let ticks = std::sync::Arc::new(TopicSchema::load(&root.join("schemas/binance-ticks.json")).unwrap());
        let sample = root.join("data/binance_ticks_sample.jsonl");
        let (a, b) = (all(&sample, ticks.clone(), "ts", "symbol", true), all(&sample, ticks, "ts", "symbol", false));
        assert_eq!(a.len(), 10_000);
        assert_eq!(a, b);
    }

    #[test]
    fn messages_carry_event_time() {
        let schema = TopicSchema::parse(
            r#"{"name":"d","fields":[{"name":"series","data_type":"Utf8"},{"name":"date","data_type":"Timestamp(Nanosecond, UTC)"},{"name":"value","data_type":"Float64"}]}"#,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("births.csv");
        std::fs::write(&p, "year,month,date_of_month,day_of_week,births\n2000,1,1,6,9083\n2000,1,2,7,8006\n").unwrap();
        let m = mapping(&[("births", "value")], &[("series", "{file_stem}"), ("date", "{year}-{month}-{date_of_month}")]);
        let msgs = file_messages(&p, &m, &schema, "date").unwrap();
        assert_eq!(msgs.len(), 2);
        // 2000-01-02 = 946684800000 + 86400000 ms.
        assert_eq!(msgs[1].1, Some(946_771_200_000));
        let v: Value = serde_json::from_slice(&msgs[1].0).unwrap();
        assert_eq!(v["date"], Value::from("2000-01-02T00:00:00.000Z"));
        assert_eq!(v["series"], Value::from("births"));
    }
}

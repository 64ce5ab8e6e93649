//! Schema-driven decoding of message payloads into Arrow record batches.
//!
//! A record is parsed completely into a scratch row before anything is appended to
//! the column builders, so a bad record leaves the batch untouched and comes back as
//! a [`DecodeError`] with a stable reason code for the dead-letter queue.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    TimestampNanosecondBuilder,
};
use arrow::record_batch::RecordBatch;

use super::jsonpath::{parse_rfc3339_nanos, Found, PointerSet, Scratch};
use super::schema::{Extract, FieldSpec, Kind, TopicSchema};

/// Why a record could not be decoded. `reason()` is the stable code used in the
/// dead-letter `reason` header and the dead-letter counter's label.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodeError {
    EmptyPayload,
    MalformedJson(String),
    MissingField(String),
    WrongType { field: String, expected: &'static str, found: String },
    NonFinite(String),
}

impl DecodeError {
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::EmptyPayload => "empty_payload",
            DecodeError::MalformedJson(_) => "malformed_json",
            DecodeError::MissingField(_) => "missing_field",
            DecodeError::WrongType { .. } => "wrong_type",
            DecodeError::NonFinite(_) => "non_finite",
        }
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::EmptyPayload => write!(f, "message has no payload"),
            DecodeError::MalformedJson(e) => write!(f, "malformed JSON: {e}"),
            DecodeError::MissingField(p) => write!(f, "required field {p} is missing or null"),
            DecodeError::WrongType { field, expected, found } => {
                write!(f, "field {field}: expected {expected}, found {found}")
            }
            DecodeError::NonFinite(p) => write!(f, "field {p} is NaN or infinite"),
        }
    }
}

/// One parsed value, before it is appended.
#[derive(Debug, Clone, Copy)]
enum Cell {
    Null,
    F64(f64),
    I64(i64),
    Bool(bool),
    /// Byte range in the scratch string buffer.
    Str(usize, usize),
}

enum Builder {
    F64(Float64Builder),
    I64(Int64Builder),
    Str(StringBuilder),
    Bool(BooleanBuilder),
    Ts(TimestampNanosecondBuilder),
}

/// Turns payloads into rows of a [`RecordBatch`] with the topic schema's columns plus
/// `_offset`.
pub struct Decoder {
    schema: Arc<TopicSchema>,
    builders: Vec<Builder>,
    offsets: Int64Builder,
    /// The schema's pointers, in field order, read in one pass per payload.
    pointers: PointerSet,
    scratch: Scratch,
    cells: Vec<Cell>,
    text: String,
    rows: usize,
}

impl Decoder {
    pub fn new(schema: Arc<TopicSchema>) -> Self {
        let builders = schema.fields.iter().map(|f| new_builder(f.kind)).collect();
        let n = schema.fields.len();
        let pointers = PointerSet::new(schema.fields.iter().map(|f| &f.segments));
        Decoder {
            schema,
            builders,
            offsets: Int64Builder::new(),
            pointers,
            scratch: Scratch::new(),
            cells: Vec::with_capacity(n),
            text: String::new(),
            rows: 0,
        }
    }

    pub fn schema(&self) -> &Arc<TopicSchema> {
        &self.schema
    }

    /// Rows appended since the last [`Decoder::finish`].
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Parses one payload and appends it as a row, or returns why it cannot.
    pub fn push(&mut self, payload: Option<&[u8]>, offset: i64) -> Result<(), DecodeError> {
        let payload = match payload {
            Some(p) if !p.iter().all(u8::is_ascii_whitespace) => p,
            _ => return Err(DecodeError::EmptyPayload),
        };
        let found = self
            .pointers
            .extract(payload, &mut self.scratch)
            .map_err(|e| DecodeError::MalformedJson(e.to_string()))?;
        self.cells.clear();
        self.text.clear();
        for (i, f) in self.schema.fields.iter().enumerate() {
            let cell = extract(f, found.get(i), &mut self.text)?;
            self.cells.push(cell);
        }
        for (b, c) in self.builders.iter_mut().zip(self.cells.iter()) {
            append(b, *c, &self.text);
        }
        self.offsets.append_value(offset);
        self.rows += 1;
        Ok(())
    }

    /// Takes the rows appended so far as a batch (possibly empty).
    pub fn finish(&mut self) -> RecordBatch {
        let mut cols: Vec<ArrayRef> = self.builders.iter_mut().map(finish_builder).collect();
        cols.push(Arc::new(self.offsets.finish()));
        self.rows = 0;
        RecordBatch::try_new(self.schema.arrow.clone(), cols)
            .expect("decoder builds columns of the schema's types")
    }
}

fn new_builder(kind: Kind) -> Builder {
    match kind {
        Kind::Float64 => Builder::F64(Float64Builder::new()),
        Kind::Int64 => Builder::I64(Int64Builder::new()),
        Kind::Utf8 => Builder::Str(StringBuilder::new()),
        Kind::Boolean => Builder::Bool(BooleanBuilder::new()),
        Kind::Timestamp { .. } => Builder::Ts(TimestampNanosecondBuilder::new().with_timezone("UTC")),
    }
}

fn finish_builder(b: &mut Builder) -> ArrayRef {
    match b {
        Builder::F64(b) => Arc::new(b.finish()),
        Builder::I64(b) => Arc::new(b.finish()),
        Builder::Str(b) => Arc::new(b.finish()),
        Builder::Bool(b) => Arc::new(b.finish()),
        Builder::Ts(b) => Arc::new(b.finish()),
    }
}

fn append(b: &mut Builder, c: Cell, text: &str) {
    match (b, c) {
        (Builder::F64(b), Cell::F64(v)) => b.append_value(v),
        (Builder::I64(b), Cell::I64(v)) => b.append_value(v),
        (Builder::Ts(b), Cell::I64(v)) => b.append_value(v),
        (Builder::Bool(b), Cell::Bool(v)) => b.append_value(v),
        (Builder::Str(b), Cell::Str(s, e)) => b.append_value(&text[s..e]),
        (Builder::F64(b), _) => b.append_null(),
        (Builder::I64(b), _) => b.append_null(),
        (Builder::Ts(b), _) => b.append_null(),
        (Builder::Bool(b), _) => b.append_null(),
        (Builder::Str(b), _) => b.append_null(),
    }
}

/// Converts what a field's pointer led to into a cell, or says why it cannot; strings
/// are appended to `text`. The same outcomes as the DOM walk it replaces.
fn extract(f: &FieldSpec, v: Found<'_>, text: &mut String) -> Result<Cell, DecodeError> {
    let (pointer, variant) = match &f.extract {
        Extract::Pointer(p) => (p.as_str(), false),
        Extract::Variant(p) => (p.as_str(), true),
    };
    if v.is_missing_or_null() {
        return if f.nullable { Ok(Cell::Null) } else { Err(DecodeError::MissingField(pointer.to_string())) };
    }
    let wrong = |expected: &'static str| DecodeError::WrongType {
        field: pointer.to_string(),
        expected,
        found: v.type_name(),
    };
    if variant {
        return match v {
            Found::Object { single_key: Some(k) } => Ok(push_str(text, k)),
            _ => Err(wrong("an object with exactly one key")),
        };
    }
    match f.kind {
        Kind::Float64 => {
            let x = match v {
                Found::Number(n) => n.as_f64().ok_or_else(|| wrong("a number"))?,
                Found::Str(s) => parse_f64(trim(s)).ok_or_else(|| wrong("a number"))?,
                _ => return Err(wrong("a number")),
            };
            if !x.is_finite() {
                return Err(DecodeError::NonFinite(pointer.to_string()));
            }
            Ok(Cell::F64(x))
        }
        Kind::Int64 => match v {
            Found::Number(n) => n.as_i64().map(Cell::I64).ok_or_else(|| wrong("an integer")),
            Found::Str(s) => trim(s).parse::<i64>().map(Cell::I64).map_err(|_| wrong("an integer")),
            _ => Err(wrong("an integer")),
        },
        Kind::Boolean => v.as_bool().map(Cell::Bool).ok_or_else(|| wrong("a boolean")),
        Kind::Utf8 => match v {
            Found::Str(s) => Ok(push_str(text, s)),
            // Identifiers such as instrument ids arrive as numbers; keep their text.
            Found::Number(n) if n.is_i64() || n.is_u64() => {
                let start = text.len();
                crate::source::jsonpath::push_number(text, n);
                Ok(Cell::Str(start, text.len()))
            }
            _ => Err(wrong("a string")),
        },
        Kind::Timestamp { int_unit_ns } => match v {
            Found::Number(n) => n
                .as_i64()
                .and_then(|i| i.checked_mul(int_unit_ns))
                .map(Cell::I64)
                .ok_or_else(|| wrong("an integer timestamp")),
            Found::Str(s) => {
                parse_rfc3339_nanos(s).map(Cell::I64).ok_or_else(|| wrong("an RFC 3339 timestamp"))
            }
            _ => Err(wrong("a timestamp")),
        },
    }
}

/// `s.trim()`, without its character walk where both ends are already printable
/// ASCII other than a space: every Unicode white space is either ASCII at or below
/// 0x20 or encoded in bytes of 0x80 and above, so neither end can be one.
#[inline]
fn trim(s: &str) -> &str {
    match (s.as_bytes().first(), s.as_bytes().last()) {
        (Some(&a), Some(&z)) if (0x21..0x80).contains(&a) && (0x21..0x80).contains(&z) => s,
        _ => s.trim(),
    }
}

/// `s.parse::<f64>()`, with a shortcut for the usual text of a price or size:
/// `[-]digits[.digits]` with at most 15 digits in all. Those digits make an integer
/// m < 2^53 and the point a power of ten 10^k with k ≤ 15, both exact in f64, so
/// m / 10^k rounds once, correctly — what the full parser returns (Clinger's fast
/// path).
fn parse_f64(s: &str) -> Option<f64> {
    const POW10: [f64; 16] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];
    let b = s.as_bytes();
    let (neg, b) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, b),
    };
    let (mut m, mut digits, mut frac, mut point) = (0u64, 0usize, 0usize, false);
    for &c in b {
        match c {
            b'0'..=b'9' if digits < 15 => {
                m = m * 10 + u64::from(c - b'0');
                digits += 1;
                frac += usize::from(point);
            }
            b'.' if !point => point = true,
            _ => return s.parse().ok(),
        }
    }
    if digits == 0 {
        return s.parse().ok();
    }
    let x = m as f64 / POW10[frac];
    Some(if neg { -x } else { x })
}

fn push_str(text: &mut String, s: &str) -> Cell {
    let start = text.len();
    text.push_str(s);
    Cell::Str(start, text.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use serde_json::Value;
    use arrow::datatypes::{Float64Type, Int64Type, TimestampNanosecondType};

    /// The trim shortcut equals `str::trim` on every string made of a core and ends
    /// drawn from ASCII controls, spaces, printable ASCII and Unicode white space
    /// (NEL, no-break space, em space, ideographic space) or other non-ASCII letters.
    #[test]
    fn trim_equals_str_trim() {
        let ends = ["", " ", "\t", "\n", "\r", "\u{b}", "\u{c}", "\u{1f}", "\u{85}", "\u{a0}", "\u{2003}", "\u{3000}", "é", "!", "~", "0", "\u{7f}", "x"];
        let mut n = 0;
        for a in ends {
            for core in ["", "1.5", " 2 ", "a b", "\u{a0}"] {
                for z in ends {
                    let s = format!("{a}{core}{z}");
                    assert_eq!(trim(&s), s.trim(), "{s:?}");
                    n += 1;
                }
            }
        }
        assert_eq!(n, 18 * 5 * 18);
    }

    /// The shortcut returns what `str::parse::<f64>` returns, bit for bit (or fails
    /// where it fails): on edge cases, on every string of the tick sample, and on
    /// 200,000 seeded random strings of digits, points and signs.
    #[test]
    fn parse_f64_equals_the_standard_parser() {
        let same = |s: &str| {
            let (got, want) = (parse_f64(s).map(f64::to_bits), s.parse::<f64>().ok().map(f64::to_bits));
            assert_eq!(got, want, "{s:?}");
        };
        for s in [
            "0", "-0", "0.0", "-0.0", ".5", "-.5", "5.", ".", "-", "", "--1", "+1", "1.2.3", "1e5", "1E-5", "inf", "NaN",
            "0000000000000001.5", "999999999999999", "9999999999999999", "0.000000000000001", "0.0000000000000001",
            "2059.10000000", "33.09140000", "0.1", "0.3", "123456789012345", "1234567890.12345", "9007199254740993",
        ] {
            same(s);
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(root.join("data/binance_ticks_sample.jsonl")).unwrap();
        let mut n = 0;
        for v in text.lines().flat_map(|l| l.split('"')).filter(|t| t.bytes().any(|b| b.is_ascii_digit())) {
            same(v);
            n += 1;
        }
        assert!(n > 40_000, "{n}");
        let mut draws = crate::model::rand::Draws(19);
        let alphabet = b"0123456789012345678901234567890123456789.-";
        for _ in 0..200_000 {
            let len = draws.below(20) as usize;
            let s: String = (0..len).map(|_| alphabet[draws.below(alphabet.len() as u64) as usize] as char).collect();
            same(&s);
        }
    }

    fn flat() -> Arc<TopicSchema> {
        Arc::new(
            TopicSchema::parse(
                r#"{"name":"t","fields":[
                {"name":"symbol","data_type":"Utf8","nullable":false},
                {"name":"ts","data_type":"Timestamp(Nanosecond, UTC)","nullable":false,"metadata":{"time_unit":"ms"}},
                {"name":"price","data_type":"Float64","nullable":false},
                {"name":"size","data_type":"Float64"}]}"#,
            )
            .unwrap(),
        )
    }

    /// The one-pass walk of pre-split pointers agrees with serde_json's own
    /// `Value::pointer` (RFC 6901), escapes and array indices included.
    #[test]
    fn pointer_walk_matches_serde_json() {
        let text = r#"{"a/b":{"c~d":[10,{"e":true}]},"":1}"#;
        let doc: Value = serde_json::from_str(text).unwrap();
        let pointers = ["/a~1b/c~0d/0", "/a~1b/c~0d/1/e", "/a~1b", "/missing", "/a~1b/c~0d/7", "/"];
        let set = PointerSet::new(pointers.map(crate::source::schema::pointer_segments));
        let mut scratch = Scratch::new();
        let found = set.extract(text.as_bytes(), &mut scratch).unwrap();
        for (i, p) in pointers.iter().enumerate() {
            let want = match doc.pointer(p) {
                None => Found::Missing,
                Some(Value::Bool(b)) => Found::Bool(*b),
                Some(Value::Number(n)) => Found::Number(n),
                Some(Value::Object(m)) => Found::Object { single_key: m.keys().next().map(String::as_str) },
                Some(v) => panic!("{p}: {v}"),
            };
            assert_eq!(found.get(i), want, "{p}");
        }
    }

    #[test]
    fn decodes_rows_and_rejects_bad_ones_without_touching_the_batch() {
        let mut d = Decoder::new(flat());
        d.push(Some(br#"{"symbol":"A","ts":1000,"price":"1.5","size":2}"#), 7).unwrap();
        assert_eq!(d.push(Some(b"{nope"), 8).unwrap_err().reason(), "malformed_json");
        assert_eq!(d.push(Some(br#"{"symbol":"A","ts":1}"#), 9).unwrap_err().reason(), "missing_field");
        assert_eq!(
            d.push(Some(br#"{"symbol":"A","ts":1,"price":"NaN"}"#), 10).unwrap_err().reason(),
            "non_finite"
        );
        assert_eq!(
            d.push(Some(br#"{"symbol":"A","ts":1,"price":[1]}"#), 11).unwrap_err().reason(),
            "wrong_type"
        );
        assert_eq!(d.push(None, 12).unwrap_err().reason(), "empty_payload");
        d.push(Some(br#"{"symbol":7,"ts":"1970-01-01T00:00:02Z","price":3}"#), 13).unwrap();
        let b = d.finish();
        assert_eq!(b.num_rows(), 2);
        let sym = b.column(0).as_string::<i32>();
        assert_eq!((sym.value(0), sym.value(1)), ("A", "7"));
        let ts = b.column(1).as_primitive::<TimestampNanosecondType>();
        assert_eq!((ts.value(0), ts.value(1)), (1_000_000_000, 2_000_000_000));
        let price = b.column(2).as_primitive::<Float64Type>();
        assert_eq!((price.value(0), price.value(1)), (1.5, 3.0));
        assert!(b.column(3).is_null(1));
        let off = b.column(4).as_primitive::<Int64Type>();
        assert_eq!((off.value(0), off.value(1)), (7, 13));
        assert_eq!(d.finish().num_rows(), 0);
    }
}

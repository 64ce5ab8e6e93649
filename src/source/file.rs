//! Historical files as records: JSON lines, CSV with a header row (cells become
//! numbers where they parse as such) or Parquet, each optionally gzip'd (`.gz`).
//! Used by `replay`, `backtest --input` and `analyze`.

use std::path::Path;

use serde_json::{Map, Value};

/// One row of a file: a record, or a JSON line that does not parse (kept as its raw
/// bytes, so a pipeline can dead-letter it with a reason instead of losing it).
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    Record(Map<String, Value>),
    /// A JSON line that parsed, with its original bytes.
    Line(Map<String, Value>, Vec<u8>),
    Raw(Vec<u8>),
}

/// The records of a file, in file order; any unreadable line is an error.
pub fn read_records(path: &Path) -> crate::error::Result<Vec<Map<String, Value>>> {
    read_rows(path)?
        .into_iter()
        .enumerate()
        .map(|(i, r)| match r {
            Row::Record(m) | Row::Line(m, _) => Ok(m),
            Row::Raw(_) => crate::fail!(Input, "{}: row {} is not a JSON object", path.display(), i + 1),
        })
        .collect()
}

/// The rows of a file, in file order. Unreadable JSON lines become [`Row::Raw`].
/// Reads the whole file into memory: [`super::rows::RowReader`] streams it.
pub fn read_rows(path: &Path) -> crate::error::Result<Vec<Row>> {
    super::rows::RowReader::open(path)?.collect()
}

/// Epoch milliseconds as RFC 3339 (UTC, millisecond precision).
pub fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// Parses the event-time formats found in data files into epoch milliseconds (UTC
/// unless the text carries an offset): RFC 3339 (`T` or a space between date and
/// time, any offset), ISO `YYYY-MM-DD[ HH:MM[:SS[.fff]]]` (also with `/` or `T`),
/// `dd.mm.yyyy[ HH:MM[:SS[.fff]]]`, US `m/d/yyyy[ HH:MM[:SS[.fff]]]`, `dd-Mon-yyyy`,
/// `dd Mon yyyy`, `YYYY-MM` (the month's first day), or a number (taken as
/// milliseconds). Day-first `d/m/yyyy` is not accepted: it cannot be told from the US
/// form row by row.
pub fn parse_time_ms(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => parse_time_text(s.trim()),
        _ => None,
    }
}

fn parse_time_text(s: &str) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M%:z"] {
        if let Ok(t) = chrono::DateTime::parse_from_str(s, f) {
            return Some(t.timestamp_millis());
        }
    }
    // A trailing `Z` or ` UTC` says UTC, which naive times are taken as anyway.
    let s = s.strip_suffix(" UTC").or_else(|| s.strip_suffix('Z')).unwrap_or(s);
    const DATE_TIMES: [&str; 14] = [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
        "%Y/%m/%d %H:%M:%S%.f",
        "%Y/%m/%d %H:%M",
        "%d.%m.%Y %H:%M:%S%.f",
        "%d.%m.%Y %H:%M",
        "%m/%d/%Y %H:%M:%S%.f",
        "%m/%d/%Y %H:%M",
        "%d-%b-%Y %H:%M:%S%.f",
        "%d-%b-%Y %H:%M",
        "%d %b %Y %H:%M:%S%.f",
        "%d %b %Y %H:%M",
    ];
    for f in DATE_TIMES {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    for f in ["%Y-%m-%d", "%Y/%m/%d", "%d.%m.%Y", "%m/%d/%Y", "%d-%b-%Y", "%d %b %Y"] {
        if let Ok(d) = chrono::NaiveDate::parse_from_str(s, f) {
            return Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis());
        }
    }
    // `YYYY-MM`: monthly data, dated by the month's first day.
    let (y, m) = s.split_once('-')?;
    if y.len() == 4 && (1..=2).contains(&m.len()) && y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        let d = chrono::NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, 1)?;
        return Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, TimeUnit};

    fn eurusd_head() -> &'static str {
        // The first three rows of ../shared/data/market/eurusd_1h_2017.csv.
        "Time,Open,High,Low,Close,Volume\n\
         01.01.2017 22:00:00.000,1.05236,1.05253,1.05221,1.05227,143539993.3\n\
         01.01.2017 23:00:00.000,1.05227,1.05426,1.05226,1.05282,253139999.4\n\
         02.01.2017 00:00:00.000,1.05282,1.05301,1.05246,1.05268,176919998.2\n"
    }

    #[test]
    fn csv_gzip_and_raw_lines() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("a.csv");
        std::fs::write(&csv, eurusd_head()).unwrap();
        let rows = read_records(&csv).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1]["Close"], Value::from(1.05282));
        assert_eq!(rows[0]["Time"], Value::from("01.01.2017 22:00:00.000"));
        let gz = dir.path().join("a.csv.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut enc, eurusd_head().as_bytes()).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        assert_eq!(read_records(&gz).unwrap(), rows);
        let jl = dir.path().join("a.jsonl");
        std::fs::write(&jl, "{\"a\":1}\n{not json\n\n{\"a\":2}\n").unwrap();
        let r = read_rows(&jl).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[1], Row::Raw(b"{not json".to_vec()));
        assert!(read_records(&jl).is_err());
    }

    /// A Parquet file written with the parquet crate's own writer reads back as the
    /// same records as the CSV it was made from (timestamps as RFC 3339).
    #[test]
    fn parquet_round_trip() {
        use arrow::array::{Float64Array, TimestampMillisecondArray};
        use arrow::datatypes::{Field, Schema};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("time", DataType::Timestamp(TimeUnit::Millisecond, None), false),
            Field::new("close", DataType::Float64, true),
        ]));
        // 2017-01-01T22:00Z = 1483308000000 ms (by hand: 17167 days · 86400000 + 22 h).
        let batch = arrow::record_batch::RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(TimestampMillisecondArray::from(vec![1_483_308_000_000, 1_483_311_600_000])),
                Arc::new(Float64Array::from(vec![Some(1.05227), None])),
            ],
        )
        .unwrap();
        let path = dir.path().join("bars.parquet");
        let mut w = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let rows = read_records(&path).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["time"], Value::from("2017-01-01T22:00:00.000Z"));
        assert_eq!(rows[0]["close"], Value::from(1.05227));
        assert_eq!(rows[1]["time"], Value::from("2017-01-01T23:00:00.000Z"));
        assert!(!rows[1].contains_key("close"));
    }

    /// The formats of the shipped files, converted by hand: 2017-01-01 22:00 UTC is
    /// 1483308000000 ms; 2000-01-01 is 946684800000 ms.
    #[test]
    fn time_formats() {
        assert_eq!(parse_time_ms(&Value::from("01.01.2017 22:00:00.000")), Some(1_483_308_000_000));
        assert_eq!(parse_time_ms(&Value::from("2000-01-01T00:00:00Z")), Some(946_684_800_000));
        assert_eq!(parse_time_ms(&Value::from("2000-01-01")), Some(946_684_800_000));
        assert_eq!(parse_time_ms(&Value::from("2000-1-1")), Some(946_684_800_000));
        assert_eq!(parse_time_ms(&Value::from("1/4/1999")), Some(915_408_000_000));
        assert_eq!(parse_time_ms(&Value::from(1234)), Some(1234));
        assert_eq!(parse_time_ms(&Value::from("soon")), None);
        assert_eq!(rfc3339_ms(1_483_308_000_000), "2017-01-01T22:00:00.000Z");
    }

    /// The other common spellings of one instant, 2017-01-01 22:00 UTC = 1483308000000
    /// ms (its midnight: 22 h = 79200000 ms earlier, 1483228800000), and 1949-01-01,
    /// 7670 days (21 years, 5 of them leap) before the epoch.
    #[test]
    fn more_time_formats() {
        let t = |s: &str| parse_time_ms(&Value::from(s));
        for s in [
            "2017-01-01 22:00:00",
            "2017-01-01 22:00",
            "2017-01-01T22:00",
            "2017-01-01 22:00:00 UTC",
            "2017-01-01T22:00:00",
            "2017-01-01 22:00:00+00:00",
            "2017/01/01 22:00:00",
            "01.01.2017 22:00:00",
            "01.01.2017 22:00",
            "1/1/2017 22:00",
            "01-Jan-2017 22:00:00",
            "1 Jan 2017 22:00",
        ] {
            assert_eq!(t(s), Some(1_483_308_000_000), "{s}");
        }
        assert_eq!(t("2017-01-01 22:00:00+02:00"), Some(1_483_308_000_000 - 7_200_000));
        assert_eq!(t("2017-01-01 22:00:00.123"), Some(1_483_308_000_123));
        assert_eq!(t("2017-01-01T22:00:00.5Z"), Some(1_483_308_000_500));
        for s in ["2017/01/01", "01.01.2017", "01-Jan-2017", "1 Jan 2017", "2017-1-1"] {
            assert_eq!(t(s), Some(1_483_228_800_000), "{s}");
        }
        assert_eq!(t("1949-01"), Some(-7670 * 86_400_000));
        // Day-first with a day above 12, a 13th month, and words are not times.
        for s in ["13/01/2017", "2017-13", "2017-01-32", "Q1 2017", ""] {
            assert_eq!(t(s), None, "{s}");
        }
    }

    #[test]
    fn csv_byte_order_mark() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bom.csv");
        std::fs::write(&p, "\u{feff}Date,Close\n2017-01-02,1.5\n").unwrap();
        let rows = read_records(&p).unwrap();
        assert_eq!(rows[0]["Date"], Value::from("2017-01-02"));
    }
}

//! From a historical file's rows to a topic's messages: `[source.file]` renames and
//! fills, the event time written as RFC 3339, and the Kafka timestamp set to it.

use std::path::Path;

use serde_json::{Map, Value};

use super::file::{parse_time_ms, read_rows, rfc3339_ms, Row};
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
        (Value::Number(n), Kind::Timestamp { int_unit_ns }) => {
            let n = n.as_i64()?;
            Some(if int_unit_ns >= 1_000_000 { n * (int_unit_ns / 1_000_000) } else { n / (1_000_000 / int_unit_ns) })
        }
        (Value::String(_), _) => parse_time_ms(v),
        _ => None,
    }
}

/// Reads `path` and turns each row into a message for `schema`'s topic: mapped, the
/// time field rewritten as RFC 3339 when it is text in another format, timestamped
/// with the event time. Lines that are not JSON pass through unchanged (no timestamp).
pub fn file_messages(path: &Path, m: &FileMapping, schema: &TopicSchema, time: &str) -> anyhow::Result<Vec<Message>> {
    let stem = file_stem(path);
    let pointer = match schema.field(time).map(|f| &f.extract) {
        Some(Extract::Pointer(p)) => Some(p.clone()),
        _ => None,
    };
    let mut out = Vec::new();
    for row in read_rows(path)? {
        let (rec, line) = match row {
            Row::Raw(bytes) => {
                out.push((bytes, None));
                continue;
            }
            Row::Record(rec) => (rec, None),
            Row::Line(rec, line) => (rec, Some(line)),
        };
        let untouched = m.rename.keys().all(|k| !rec.contains_key(k)) && m.fill.keys().all(|k| rec.contains_key(k));
        let mut v = Value::Object(apply(m, rec, &stem));
        let mut rewritten = false;
        if let Some(slot) = pointer.as_deref().and_then(|p| v.pointer_mut(p)) {
            if let Value::String(s) = slot {
                if chrono::DateTime::parse_from_rfc3339(s).is_err() {
                    if let Some(ms) = parse_time_ms(slot) {
                        *slot = Value::from(rfc3339_ms(ms));
                        rewritten = true;
                    }
                }
            }
        }
        let t = event_time_ms(&v, schema, time);
        // A JSON line the mapping leaves as it is goes out byte for byte.
        let payload = match line {
            Some(l) if untouched && !rewritten => l,
            _ => serde_json::to_vec(&v)?,
        };
        out.push((payload, t));
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

//! Topic schemas: an Arrow schema in JSON, each field telling where its value lives in
//! the message and how to parse it. Decoding is driven entirely by this file.
//!
//! ```json
//! {"name": "flat_ticks", "format": "json",
//!  "fields": [
//!    {"name": "symbol", "data_type": "Utf8", "nullable": false, "metadata": {"path": "/symbol"}},
//!    {"name": "ts", "data_type": "Timestamp(Nanosecond, UTC)", "nullable": false,
//!     "metadata": {"path": "/ts", "time_unit": "ms"}}]}
//! ```
//! `metadata.path` is a JSON pointer (RFC 6901; default `/<name>`); `metadata.variant`
//! instead names the single key of the object at that pointer (for tagged enums such
//! as `{"kind": {"Trade": {...}}}`). Timestamps accept RFC 3339 strings or integers in
//! `metadata.time_unit` (`s`, `ms`, `us`, `ns`). Float fields accept numbers or numeric
//! strings; NaN and ±Inf are rejected.

use std::path::Path;
use std::sync::Arc;

use crate::error::Context;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::Deserialize;

/// Name of the column that carries each record's Kafka offset into the feature SQL.
pub const OFFSET_COLUMN: &str = "_offset";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SchemaFile {
    name: String,
    #[serde(default = "default_format")]
    format: String,
    #[serde(default)]
    description: Option<String>,
    fields: Vec<FieldFile>,
}

fn default_format() -> String {
    "json".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldFile {
    name: String,
    data_type: String,
    #[serde(default = "yes")]
    nullable: bool,
    #[serde(default)]
    metadata: std::collections::BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

/// How a field's value is read out of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Extract {
    /// The value at a JSON pointer.
    Pointer(String),
    /// The only key of the object at a JSON pointer.
    Variant(String),
}

/// The value type a decoded field is stored as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Float64,
    Int64,
    Utf8,
    Boolean,
    /// Nanoseconds since the epoch, UTC; integers in the message are in this unit.
    Timestamp { int_unit_ns: i64 },
}

/// One decoded field.
#[derive(Debug, Clone)]
pub struct FieldSpec {
    pub name: String,
    pub kind: Kind,
    pub nullable: bool,
    pub extract: Extract,
    /// The pointer's segments, unescaped once at load (`~1` → `/`, `~0` → `~`), so
    /// decoding walks the document without allocating.
    pub segments: Vec<String>,
}

/// Splits an RFC 6901 pointer into unescaped segments.
pub fn pointer_segments(p: &str) -> Vec<String> {
    if p.is_empty() {
        return vec![];
    }
    p.split('/').skip(1).map(|s| s.replace("~1", "/").replace("~0", "~")).collect()
}

/// A loaded topic schema.
#[derive(Debug, Clone)]
pub struct TopicSchema {
    pub name: String,
    pub description: Option<String>,
    pub fields: Vec<FieldSpec>,
    /// Arrow schema of decoded batches: the fields, then `_offset`.
    pub arrow: SchemaRef,
}

impl TopicSchema {
    pub fn load(path: &Path) -> crate::error::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading schema {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in schema {}", path.display()))
    }

    pub fn parse(text: &str) -> crate::error::Result<Self> {
        let file: SchemaFile = serde_json::from_str(text)?;
        if file.format != "json" {
            crate::fail!(Config, "format {:?} is not supported (supported: \"json\")", file.format);
        }
        let mut fields = Vec::new();
        let mut problems = Vec::new();
        for f in &file.fields {
            match field_spec(f) {
                Ok(spec) => fields.push(spec),
                Err(e) => problems.push(format!("field {:?}: {e}", f.name)),
            }
        }
        for (i, f) in fields.iter().enumerate() {
            if f.name == OFFSET_COLUMN || fields[..i].iter().any(|g| g.name == f.name) {
                problems.push(format!("field name {:?} is reserved or repeated", f.name));
            }
        }
        if !problems.is_empty() {
            crate::fail!(Config, "{}", problems.join("; "));
        }
        let mut arrow_fields: Vec<Field> = fields
            .iter()
            .map(|f| Field::new(&f.name, f.kind.data_type(), f.nullable))
            .collect();
        arrow_fields.push(Field::new(OFFSET_COLUMN, DataType::Int64, false));
        Ok(TopicSchema {
            name: file.name,
            description: file.description,
            fields,
            arrow: Arc::new(Schema::new(arrow_fields)),
        })
    }

    pub fn field(&self, name: &str) -> Option<&FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }
}

impl Kind {
    pub fn data_type(self) -> DataType {
        match self {
            Kind::Float64 => DataType::Float64,
            Kind::Int64 => DataType::Int64,
            Kind::Utf8 => DataType::Utf8,
            Kind::Boolean => DataType::Boolean,
            Kind::Timestamp { .. } => DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
        }
    }
}

fn field_spec(f: &FieldFile) -> crate::error::Result<FieldSpec> {
    let unit = f.metadata.get("time_unit").map(String::as_str);
    let kind = match f.data_type.replace(' ', "").as_str() {
        "Float64" => Kind::Float64,
        "Int64" => Kind::Int64,
        "Utf8" => Kind::Utf8,
        "Boolean" => Kind::Boolean,
        "Timestamp(Nanosecond,UTC)" | "Timestamp(Nanosecond,Some(\"UTC\"))" => Kind::Timestamp {
            int_unit_ns: match unit.unwrap_or("ns") {
                "s" => 1_000_000_000,
                "ms" => 1_000_000,
                "us" => 1_000,
                "ns" => 1,
                other => crate::fail!(Config, "metadata.time_unit {other:?} is not one of s, ms, us, ns"),
            },
        },
        other => crate::fail!(Config, 
            "data_type {other:?} is not supported (Float64, Int64, Utf8, Boolean, \"Timestamp(Nanosecond, UTC)\")"
        ),
    };
    if unit.is_some() && !matches!(kind, Kind::Timestamp { .. }) {
        crate::fail!(Config, "metadata.time_unit applies to timestamps only");
    }
    for k in f.metadata.keys() {
        if !matches!(k.as_str(), "path" | "variant" | "time_unit" | "doc") {
            crate::fail!(Config, "unknown metadata key {k:?} (known: path, variant, time_unit, doc)");
        }
    }
    let extract = match (f.metadata.get("path"), f.metadata.get("variant")) {
        (Some(_), Some(_)) => crate::fail!(Config, "give either metadata.path or metadata.variant, not both"),
        (None, Some(v)) => {
            if kind != Kind::Utf8 {
                crate::fail!(Config, "metadata.variant needs data_type Utf8");
            }
            Extract::Variant(check_pointer(v)?)
        }
        (Some(p), None) => Extract::Pointer(check_pointer(p)?),
        (None, None) => Extract::Pointer(format!("/{}", f.name.replace('~', "~0").replace('/', "~1"))),
    };
    let segments = match &extract {
        Extract::Pointer(p) | Extract::Variant(p) => pointer_segments(p),
    };
    Ok(FieldSpec { name: f.name.clone(), kind, nullable: f.nullable, extract, segments })
}

fn check_pointer(p: &str) -> crate::error::Result<String> {
    if !p.is_empty() && !p.starts_with('/') {
        crate::fail!(Config, "JSON pointer {p:?} must start with '/'");
    }
    Ok(p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_bad_field_at_once() {
        let err = TopicSchema::parse(
            r#"{"name":"x","fields":[
                {"name":"a","data_type":"Float32"},
                {"name":"b","data_type":"Int64","metadata":{"time_unit":"ms"}},
                {"name":"c","data_type":"Utf8"}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("field \"a\""), "{err}");
        assert!(err.contains("field \"b\""), "{err}");
        assert!(!err.contains("field \"c\""), "{err}");
    }

    #[test]
    fn default_pointer_escapes_name() {
        let s = TopicSchema::parse(r#"{"name":"x","fields":[{"name":"a/b","data_type":"Utf8"}]}"#)
            .unwrap();
        assert_eq!(s.fields[0].extract, Extract::Pointer("/a~1b".into()));
        assert_eq!(s.arrow.field(1).name(), OFFSET_COLUMN);
    }
}

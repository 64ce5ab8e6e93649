//! Historical files as records: JSON lines, or CSV with a header row (cells become
//! numbers where they parse as such). Used by `replay` and `analyze`.

use anyhow::{bail, Context};
use serde_json::{Map, Value};

/// The records of a JSON-lines or CSV file as JSON objects, in file order.
pub fn read_records(path: &std::path::Path) -> anyhow::Result<Vec<Map<String, Value>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    if text.trim_start().starts_with('{') {
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            match serde_json::from_str::<Value>(line).with_context(|| format!("line {}", i + 1))? {
                Value::Object(m) => out.push(m),
                _ => bail!("line {}: not a JSON object", i + 1),
            }
        }
    } else {
        let mut lines = text.lines();
        let unquote = |s: &str| s.trim().trim_matches('"').to_string();
        let header: Vec<String> = lines.next().context("empty file")?.split(',').map(unquote).collect();
        for line in lines.filter(|l| !l.trim().is_empty()) {
            let mut m = Map::new();
            for (h, cell) in header.iter().zip(line.split(',').map(unquote)) {
                let v = match cell.parse::<i64>() {
                    Ok(i) => Value::from(i),
                    Err(_) => match cell.parse::<f64>() {
                        Ok(f) if f.is_finite() => Value::from(f),
                        _ => Value::from(cell),
                    },
                };
                m.insert(h.clone(), v);
            }
            out.push(m);
        }
    }
    Ok(out)
}


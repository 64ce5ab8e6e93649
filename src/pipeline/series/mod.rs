//! `[series]`: forecast one numeric column of any file. From a file with a time
//! column this fills in what a hand-written pipeline spells out: the `[source.file]`
//! mapping onto the input schema (`key`, `time`, `value`), the frequency detected
//! from the timestamps, and from it the feature SQL, `model.features` and
//! `model.season`. It runs in the builder, before the SQL is planned (once, as for
//! any pipeline), so `run`, `backtest`, `replay` and `validate` see the same plan.
//!
//! Features of row t, all known at t (windows ordered by `_offset`): the value; its
//! differences to the values k rows back for k in 1, 2, S − 1 (the slot the target
//! t + 1 repeats), S and, for S ≤ 24, 2S − 1; its differences to the means of the
//! last S and 4S rows; and one-hots of the target row's calendar slot (hour of day
//! below a day, weekday for daily and business-daily data, month for weekly and
//! monthly data), one level dropped because the model has an intercept.

mod frequency;
mod generate;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

use super::build::Problem;
use super::config::PipelineConfig;
use crate::source::file::{parse_time_ms, read_rows, Row};
use crate::source::mapping::{apply as map_row, file_stem};

pub use frequency::{detect, Detected, Frequency};
use frequency::duration;
pub use generate::{generate, lags, means, Generated};

/// Name of the input table in the generated SQL.
pub const TABLE: &str = "points";
/// Timestamps read for detection (of the first key).
pub const SAMPLE_ROWS: usize = 2000;
/// Time column names tried first (compared in lower case), best first; after them
/// any column whose name contains "time" or "date".
const TIME_NAMES: [&str; 12] =
    ["time", "timestamp", "datetime", "date_time", "date", "ds", "ts", "dt", "period", "gmt time", "local time", "time_utc"];
/// Names under which a number is taken for a time (epoch milliseconds).
const NUMERIC_TIME_NAMES: [&str; 4] = ["time", "timestamp", "ts", "time_ms"];
/// Seasons longer than this get no season (the lags and means would need that many
/// rows of look-back per key).
const MAX_SEASON: u32 = 288;

/// What the command line says: the file the series is read from (default: the
/// pipeline's `source.sample`) and overrides of the `[series]` keys.
#[derive(Debug, Clone, Default)]
pub struct SeriesOptions {
    pub input: Option<PathBuf>,
    pub column: Option<String>,
    pub time_column: Option<String>,
    pub frequency: Option<String>,
}

impl SeriesOptions {
    fn overrides_series(&self) -> bool {
        self.column.is_some() || self.time_column.is_some() || self.frequency.is_some()
    }
}

/// What `[series]` resolved to, for the command's output and the report.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesPlan {
    /// The file read (`--input`, else `source.sample`); none with real brokers and
    /// no sample (the topic's records are already mapped).
    pub file: Option<PathBuf>,
    pub column: Option<String>,
    /// A column name, or a template of columns.
    pub time_column: Option<String>,
    #[serde(flatten)]
    pub detected: Detected,
    pub features: Vec<String>,
    /// Whether the feature SQL was generated (else the pipeline's own).
    pub generated_sql: bool,
}

impl std::fmt::Display for SeriesPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.file, &self.column, &self.time_column) {
            (Some(file), Some(c), Some(t)) => writeln!(f, "series: {c:?} of {}, time from {t:?}", file.display())?,
            _ => writeln!(f, "series: the input topic's records (no file)")?,
        }
        let d = &self.detected;
        let mut how = Vec::new();
        if let Some(m) = d.median_gap_ms {
            how.push(format!("median gap {} over {} timestamps", duration(m), d.timestamps));
        } else if d.timestamps == 0 {
            how.push("as configured".into());
        }
        if let Some(r) = d.rows_per_day {
            how.push(format!("{r} rows a day"));
        }
        let season = d.season.map_or("no season".to_string(), |s| format!("season {s}"));
        writeln!(f, "frequency: {} ({}) → {season}", d.frequency, how.join(", "))?;
        if d.out_of_order > 0 {
            writeln!(
                f,
                "warning: {} of the first {} rows are earlier than the row before them: records are read in file order, \
                 so each one older than its key's latest becomes a `late` dead letter — sort the file by time",
                d.out_of_order, d.timestamps
            )?;
        }
        write!(f, "features ({}{}): {}", self.features.len(), if self.generated_sql { "" } else { ", from [features]" }, self.features.join(", "))
    }
}

fn problem(at: &str, message: impl Into<String>) -> Problem {
    Problem { at: at.into(), message: message.into() }
}

/// Where the time comes from.
#[derive(Debug, Clone, PartialEq)]
enum TimeSource {
    Column(String),
    Template(String),
}

/// Resolves `[series]` in `cfg`, if it has one: sets the file mapping, and fills the
/// feature SQL, `model.features` and `model.season` where the pipeline leaves them
/// empty. Every problem found is returned, tagged with its key.
pub fn apply(cfg: &mut PipelineConfig, opts: &SeriesOptions) -> Result<Option<SeriesPlan>, Vec<Problem>> {
    let Some(series) = cfg.series.clone() else {
        if opts.overrides_series() {
            return Err(vec![problem("series", "--column, --time-column and --frequency need a pipeline with a [series] table")]);
        }
        return Ok(None);
    };
    let column = opts.column.clone().or(series.column);
    let time_column = opts.time_column.clone().or(series.time_column);
    let frequency = opts.frequency.clone().unwrap_or(series.frequency);
    let mut probs = Vec::new();
    let given = Frequency::parse(&frequency).unwrap_or_else(|e| {
        probs.push(problem("series.frequency", e));
        Some(Frequency::Irregular)
    });
    let file = opts.input.clone().or_else(|| cfg.source.sample.as_ref().map(|p| cfg.resolve(p)));
    let records = match &file {
        Some(f) => match read_rows(f) {
            Ok(rows) => Some(first_records(rows)),
            Err(e) => return Err(vec![problem("series", format!("{e:#}"))]),
        },
        None => None,
    };
    let (key, time, value) = (cfg.source.key.clone(), cfg.source.time.clone(), cfg.model.target.clone());
    let shown = file.as_deref().map_or_else(String::new, |p| p.display().to_string());

    // The time column: given (a name or a template), else found in the file.
    let time_src = match (time_column, &records) {
        (Some(t), _) if t.contains('{') => Some(TimeSource::Template(t)),
        (Some(t), Some(recs)) if !recs.iter().any(|r| r.contains_key(&t)) => {
            probs.push(problem("series.time_column", format!("column {t:?} is not in {shown} (columns: {})", columns(recs).join(", "))));
            None
        }
        (Some(t), _) => Some(TimeSource::Column(t)),
        (None, Some(recs)) => match find_time_column(recs) {
            Some(t) => Some(t),
            None => {
                probs.push(problem(
                    "series.time_column",
                    format!("no time column found in {shown} (columns: {}); name one with --time-column", columns(recs).join(", ")),
                ));
                None
            }
        },
        // No file (real brokers, no sample): the topic's records are already mapped.
        (None, None) => None,
    };
    let time_name = match &time_src {
        Some(TimeSource::Column(c)) => Some(c.as_str()),
        _ => None,
    };
    // The value column: given, else the file's only other numeric column.
    let column = match (column, &records) {
        (Some(c), Some(recs)) if !recs.iter().any(|r| r.contains_key(&c)) => {
            probs.push(problem("series.column", format!("column {c:?} is not in {shown} (columns: {})", columns(recs).join(", "))));
            None
        }
        (Some(c), _) if Some(c.as_str()) == time_name => {
            probs.push(problem("series.column", format!("{c:?} is the time column")));
            None
        }
        (Some(c), _) => Some(c),
        (None, Some(recs)) => {
            let numeric: Vec<String> = columns(recs)
                .into_iter()
                .filter(|c| Some(c.as_str()) != time_name && recs.iter().all(|r| r.get(c).is_none_or(|v| v.is_number())))
                .collect();
            match numeric.as_slice() {
                [one] => Some(one.clone()),
                _ => {
                    probs.push(problem(
                        "series.column",
                        format!("give --column NAME (the numeric columns of {shown}: {})", numeric.join(", ")),
                    ));
                    None
                }
            }
        }
        (None, None) => None,
    };
    if !probs.is_empty() {
        return Err(probs);
    }

    let m = &mut cfg.source.file;
    if let Some(c) = column.as_ref().filter(|c| **c != value) {
        m.rename.insert(c.clone(), value.clone());
    }
    let time_column = time_src.map(|src| match src {
        TimeSource::Column(c) => {
            if c != time {
                m.rename.insert(c.clone(), time.clone());
            }
            c
        }
        TimeSource::Template(t) => {
            m.fill.insert(time.clone(), t.clone());
            t
        }
    });
    m.fill.entry(key.clone()).or_insert_with(|| "{file_stem}".into());

    let detected = match (given, &records, &file) {
        (Some(f), _, _) => Detected::nominal(f),
        (None, Some(recs), Some(path)) => match series_times(cfg, recs, path, &key, &time) {
            Ok(t) => detect(&t),
            Err(e) => {
                probs.push(problem("series.time_column", format!("{:?} in {shown}: {e}", time_column.as_deref().unwrap_or_default())));
                Detected::nominal(Frequency::Irregular)
            }
        },
        _ => {
            probs.push(problem("series.frequency", "\"auto\" needs a file (--input or source.sample); or name the frequency"));
            Detected::nominal(Frequency::Irregular)
        }
    };
    let generated_sql = cfg.features.sql.trim().is_empty();
    if generated_sql {
        let g = generate(detected.frequency, detected.season, &key, &time, &value);
        cfg.features.sql = g.sql;
        cfg.features.table = TABLE.into();
        cfg.features.lookback_rows = cfg.features.lookback_rows.max(g.lookback_rows);
        if cfg.model.features.is_empty() {
            cfg.model.features = g.features;
        }
    } else if cfg.model.features.is_empty() {
        probs.push(problem("model.features", "list the feature columns of your [features] sql"));
    }
    if cfg.model.season.is_none() {
        cfg.model.season = detected.season;
    }
    if !probs.is_empty() {
        return Err(probs);
    }
    Ok(Some(SeriesPlan { file, column, time_column, detected, features: cfg.model.features.clone(), generated_sql }))
}

/// The first records of a file (rows that are not objects are skipped).
fn first_records(rows: Vec<Row>) -> Vec<Map<String, Value>> {
    rows.into_iter()
        .filter_map(|r| match r {
            Row::Record(m) | Row::Line(m, _) => Some(m),
            Row::Raw(_) => None,
        })
        .take(SAMPLE_ROWS)
        .collect()
}

/// Column names in the order first seen.
fn columns(recs: &[Map<String, Value>]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in recs.iter().take(100) {
        for k in r.keys() {
            if !out.contains(k) {
                out.push(k.clone());
            }
        }
    }
    out
}

/// The time column: of the columns with a time-like name whose values (nearly all)
/// read as times, the one with the most distinct values — `ts` over a `date` that
/// repeats for every hour — the earlier name on a tie. Without one, year / month /
/// day columns make a template.
fn find_time_column(recs: &[Map<String, Value>]) -> Option<TimeSource> {
    let cols = columns(recs);
    let rank = |c: &str| {
        let l = c.trim().to_ascii_lowercase();
        TIME_NAMES.iter().position(|n| *n == l).or_else(|| (l.contains("time") || l.contains("date")).then_some(TIME_NAMES.len()))
    };
    let mut best: Option<(usize, usize, &String)> = None; // (distinct, rank, name)
    for c in &cols {
        let Some(r) = rank(c) else { continue };
        let numeric_ok = NUMERIC_TIME_NAMES.contains(&c.trim().to_ascii_lowercase().as_str());
        let vals: Vec<&Value> = recs.iter().filter_map(|m| m.get(c)).filter(|v| !v.is_null()).collect();
        let parsed: Vec<i64> = vals
            .iter()
            .filter(|v| numeric_ok || v.is_string())
            .filter_map(|v| parse_time_ms(v))
            .collect();
        if vals.is_empty() || parsed.len() * 10 < vals.len() * 9 {
            continue;
        }
        let distinct = parsed.iter().collect::<BTreeSet<_>>().len();
        if best.is_none_or(|(d, br, _)| distinct > d || (distinct == d && r < br)) {
            best = Some((distinct, r, c));
        }
    }
    if let Some((_, _, c)) = best {
        return Some(TimeSource::Column(c.clone()));
    }
    let find = |names: &[&str]| cols.iter().find(|c| names.contains(&c.trim().to_ascii_lowercase().as_str())).cloned();
    let (y, m, d) = (find(&["year", "yr"])?, find(&["month", "mon"])?, find(&["day", "date_of_month", "day_of_month", "dom", "mday"])?);
    let date = format!("{{{y}}}-{{{m}}}-{{{d}}}");
    Some(TimeSource::Template(match find(&["hour", "hr"]) {
        Some(h) => format!("{date} {{{h}}}:00:00"),
        None => date,
    }))
}

/// The event times (ms) of the first key's records, read through the mapping as the
/// file will be published. Errors when few read as times or they run backwards.
fn series_times(cfg: &PipelineConfig, recs: &[Map<String, Value>], path: &Path, key: &str, time: &str) -> Result<Vec<i64>, String> {
    let stem = file_stem(path);
    let mapped: Vec<Map<String, Value>> = recs.iter().map(|r| map_row(&cfg.source.file, r.clone(), &stem)).collect();
    let first_key = mapped.first().and_then(|r| r.get(key)).cloned();
    let mine: Vec<&Map<String, Value>> = mapped.iter().filter(|r| r.get(key).cloned() == first_key).collect();
    let times: Vec<i64> = mine.iter().filter_map(|r| r.get(time).and_then(parse_time_ms)).collect();
    if times.len() * 10 < mine.len() * 9 {
        let bad = mine.iter().find(|r| r.get(time).and_then(parse_time_ms).is_none()).and_then(|r| r.get(time));
        return Err(format!(
            "only {} of the first {} values read as times (e.g. {})",
            times.len(),
            mine.len(),
            bad.map_or("a missing value".to_string(), |v| v.to_string())
        ));
    }
    let (back, fwd) = times.windows(2).fold((0, 0), |(b, f), w| (b + (w[1] < w[0]) as usize, f + (w[1] > w[0]) as usize));
    if back > fwd {
        return Err("the times run backwards; sort the file oldest first (records are processed in file order)".into());
    }
    Ok(times)
}
#[cfg(test)]
mod tests;

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

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{Datelike, Weekday};
use serde::Serialize;
use serde_json::{Map, Value};

use super::build::Problem;
use super::config::{parse_duration_ns, PipelineConfig};
use crate::source::file::{parse_time_ms, read_rows, Row};
use crate::source::mapping::{apply as map_row, file_stem};

/// Name of the input table in the generated SQL.
pub const TABLE: &str = "points";
/// Timestamps read for detection (of the first key).
pub const SAMPLE_ROWS: usize = 2000;
const SECOND_MS: i64 = 1000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
/// Steps below a day that a median gap snaps to (within 1 %).
const STEPS_MS: [i64; 22] = [
    SECOND_MS,
    2 * SECOND_MS,
    5 * SECOND_MS,
    10 * SECOND_MS,
    15 * SECOND_MS,
    20 * SECOND_MS,
    30 * SECOND_MS,
    60 * SECOND_MS,
    120 * SECOND_MS,
    180 * SECOND_MS,
    300 * SECOND_MS,
    600 * SECOND_MS,
    900 * SECOND_MS,
    1200 * SECOND_MS,
    1800 * SECOND_MS,
    HOUR_MS,
    2 * HOUR_MS,
    3 * HOUR_MS,
    4 * HOUR_MS,
    6 * HOUR_MS,
    8 * HOUR_MS,
    12 * HOUR_MS,
];
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

/// The spacing of a series' rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frequency {
    /// A fixed step below a day, in milliseconds.
    SubDaily { step_ms: i64 },
    Daily,
    /// Daily with no Saturdays and Sundays.
    BusinessDaily,
    Weekly,
    Monthly,
    Quarterly,
    Yearly,
    /// No regular step: no season, no calendar features.
    Irregular,
}

impl std::fmt::Display for Frequency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Frequency::SubDaily { step_ms: 60_000 } => write!(f, "minutely"),
            Frequency::SubDaily { step_ms: HOUR_MS } => write!(f, "hourly"),
            Frequency::SubDaily { step_ms } => write!(f, "every {}", duration(*step_ms)),
            Frequency::Daily => write!(f, "daily"),
            Frequency::BusinessDaily => write!(f, "business-daily"),
            Frequency::Weekly => write!(f, "weekly"),
            Frequency::Monthly => write!(f, "monthly"),
            Frequency::Quarterly => write!(f, "quarterly"),
            Frequency::Yearly => write!(f, "yearly"),
            Frequency::Irregular => write!(f, "irregular"),
        }
    }
}

/// As its name: `"hourly"`, `"business-daily"`, `"every 15m"`.
impl Serialize for Frequency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `3600000` → `1h`, `90000` → `90s`, `86400000` → `1d`.
fn duration(ms: i64) -> String {
    for (unit, name) in [(DAY_MS, "d"), (HOUR_MS, "h"), (60_000, "m"), (SECOND_MS, "s")] {
        if ms >= unit && ms % unit == 0 {
            return format!("{}{name}", ms / unit);
        }
    }
    format!("{ms}ms")
}

impl Frequency {
    /// `frequency = "…"`: `None` for `auto`.
    pub fn parse(s: &str) -> Result<Option<Frequency>, String> {
        Ok(Some(match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "auto" => return Ok(None),
            "minutely" => Frequency::SubDaily { step_ms: 60_000 },
            "hourly" => Frequency::SubDaily { step_ms: HOUR_MS },
            "daily" => Frequency::Daily,
            "business_daily" | "businessdaily" | "bdaily" => Frequency::BusinessDaily,
            "weekly" => Frequency::Weekly,
            "monthly" => Frequency::Monthly,
            "quarterly" => Frequency::Quarterly,
            "yearly" | "annual" => Frequency::Yearly,
            "none" | "irregular" => Frequency::Irregular,
            other => match parse_duration_ns(other) {
                Ok(ns) if ns % 1_000_000 == 0 && ns / 1_000_000 < DAY_MS => Frequency::SubDaily { step_ms: ns / 1_000_000 },
                _ => {
                    return Err(format!(
                        "{s:?} is not auto, minutely, hourly, daily, business_daily, weekly, monthly, quarterly, yearly, none, or a step below a day (\"15m\")"
                    ))
                }
            },
        }))
    }

    /// The season of a regular calendar: rows per day or per week, months a year.
    fn nominal_season(self) -> Option<u32> {
        match self {
            Frequency::SubDaily { step_ms } if DAY_MS % step_ms == 0 => Some((DAY_MS / step_ms) as u32),
            Frequency::SubDaily { .. } | Frequency::Yearly | Frequency::Irregular => None,
            Frequency::Daily => Some(7),
            Frequency::BusinessDaily => Some(5),
            Frequency::Weekly => Some(52),
            Frequency::Monthly => Some(12),
            Frequency::Quarterly => Some(4),
        }
        .filter(|s| (2..=MAX_SEASON).contains(s))
    }
}

/// What the timestamps say.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detected {
    pub frequency: Frequency,
    /// Rows per season: the seasonal-naive baseline's lag and the features' period.
    pub season: Option<u32>,
    /// Median of the positive gaps between consecutive timestamps (ms).
    pub median_gap_ms: Option<i64>,
    /// Below a day: the most common number of rows per (UTC) calendar day.
    pub rows_per_day: Option<u32>,
    /// Timestamps looked at (none when the frequency was given).
    pub timestamps: usize,
    /// Of those, how many are earlier than the one before them in file order: records
    /// are read in file order, so a key's record older than its latest is `late`.
    #[serde(default)]
    pub out_of_order: usize,
}

impl Detected {
    /// A frequency given by name: its calendar's season.
    pub fn nominal(frequency: Frequency) -> Detected {
        Detected { frequency, season: frequency.nominal_season(), median_gap_ms: None, rows_per_day: None, timestamps: 0, out_of_order: 0 }
    }
}

/// Detects the frequency from timestamps in file order (epoch ms), looking at the
/// first [`SAMPLE_ROWS`]: the median positive gap snaps to a step below a day, a day
/// (business-daily when under 2 % of the timestamps fall on a weekend, else daily), a
/// week, a month, a quarter or a year; anything else is irregular. Below a day the
/// season is the most common count of rows per calendar day (24 for hourly data,
/// also for FX hours with weekends absent; 7 for a stock's hourly session), when
/// between 2 and 288.
pub fn detect(times_ms: &[i64]) -> Detected {
    let t = &times_ms[..times_ms.len().min(SAMPLE_ROWS)];
    let out_of_order = t.windows(2).filter(|w| w[1] < w[0]).count();
    // The gaps of the times in order, so a file that is not sorted is still read right.
    let mut sorted = t.to_vec();
    sorted.sort_unstable();
    let t = &sorted[..];
    let mut gaps: Vec<i64> = t.windows(2).map(|w| w[1] - w[0]).filter(|g| *g > 0).collect();
    let irregular =
        |median| Detected { frequency: Frequency::Irregular, season: None, median_gap_ms: median, rows_per_day: None, timestamps: t.len(), out_of_order };
    if gaps.len() < 2 {
        return irregular(gaps.first().copied());
    }
    gaps.sort_unstable();
    let m = gaps[(gaps.len() - 1) / 2];
    let near = |unit: i64| (m - unit).abs() * 100 <= unit;
    let frequency = if near(DAY_MS) {
        let weekend = t.iter().filter(|&&ms| matches!(weekday(ms), Some(Weekday::Sat | Weekday::Sun))).count();
        if weekend * 50 < t.len() {
            Frequency::BusinessDaily
        } else {
            Frequency::Daily
        }
    } else if near(7 * DAY_MS) {
        Frequency::Weekly
    } else if (27 * DAY_MS + DAY_MS / 2..=31 * DAY_MS + DAY_MS / 2).contains(&m) {
        Frequency::Monthly
    } else if (88 * DAY_MS..=93 * DAY_MS).contains(&m) {
        Frequency::Quarterly
    } else if (364 * DAY_MS..=367 * DAY_MS).contains(&m) {
        Frequency::Yearly
    } else if let Some(&step_ms) = STEPS_MS.iter().find(|s| near(**s)) {
        Frequency::SubDaily { step_ms }
    } else {
        return irregular(Some(m));
    };
    let (season, rows_per_day) = match frequency {
        Frequency::SubDaily { .. } => {
            let rpd = rows_per_day(t).or(frequency.nominal_season());
            (rpd.filter(|s| (2..=MAX_SEASON).contains(s)), rpd)
        }
        f => (f.nominal_season(), None),
    };
    Detected { frequency, season, median_gap_ms: Some(m), rows_per_day, timestamps: t.len(), out_of_order }
}

fn weekday(ms: i64) -> Option<Weekday> {
    chrono::DateTime::from_timestamp_millis(ms).map(|d| d.weekday())
}

/// The most common number of rows per UTC calendar day, over the days strictly
/// between the first and the last (which may be partial); ties go to the larger.
fn rows_per_day(t: &[i64]) -> Option<u32> {
    let mut per_day: BTreeMap<i64, u32> = BTreeMap::new();
    for ms in t {
        *per_day.entry(ms.div_euclid(DAY_MS)).or_default() += 1;
    }
    let (first, last) = (*per_day.keys().next()?, *per_day.keys().next_back()?);
    let mut counts: BTreeMap<u32, u32> = BTreeMap::new();
    for (_, n) in per_day.iter().filter(|(d, _)| **d != first && **d != last) {
        *counts.entry(*n).or_default() += 1;
    }
    counts.iter().max_by_key(|(n, days)| (**days, **n)).map(|(n, _)| *n)
}

/// The generated `[features]` part.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub sql: String,
    pub features: Vec<String>,
    pub lookback_rows: usize,
}

/// The lags k of the `value − LAG(value, k)` features for a season.
pub fn lags(season: Option<u32>) -> Vec<u32> {
    let set: BTreeSet<u32> = match season {
        None => [1, 2, 3].into(),
        Some(s) if s <= 24 => [1, 2, s - 1, s, 2 * s - 1].into(),
        Some(s) => [1, 2, s - 1, s].into(),
    };
    set.into_iter().filter(|k| *k >= 1).collect()
}

/// The window lengths of the `value − AVG(value)` features.
pub fn means(season: Option<u32>) -> Vec<u32> {
    match season {
        None => vec![5, 20],
        Some(s) if s <= 52 => vec![s, 4 * s],
        Some(s) => vec![s],
    }
}

/// The target row's calendar one-hots: (name, SQL expression), one level dropped.
fn calendar(f: Frequency, time: &str) -> Vec<(String, String)> {
    const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
    let onehot = |name: String, expr: &str, level: u32| (name, format!("CASE WHEN {expr} = {level} THEN 1.0 ELSE 0.0 END"));
    match f {
        Frequency::SubDaily { step_ms } if step_ms <= HOUR_MS && step_ms % SECOND_MS == 0 => {
            let next = format!("date_part('hour', {time} + INTERVAL '{} seconds')", step_ms / SECOND_MS);
            (1..24).map(|h| onehot(format!("next_h{h:02}"), &next, h)).collect()
        }
        Frequency::Daily => {
            let next = format!("date_part('dow', {time} + INTERVAL '1 day')");
            // Monday (1) is the reference; Sunday is 0.
            [2, 3, 4, 5, 6, 0].iter().map(|&d| onehot(format!("next_{}", DAYS[d as usize]), &next, d)).collect()
        }
        Frequency::BusinessDaily => {
            // The next business day: Monday after Friday (and after a weekend row).
            let dow = format!("date_part('dow', {time})");
            let next = format!("(CASE WHEN {dow} BETWEEN 1 AND 4 THEN {dow} + 1 ELSE 1 END)");
            (2..=5).map(|d| onehot(format!("next_{}", DAYS[d as usize]), &next, d)).collect()
        }
        Frequency::Weekly | Frequency::Monthly => {
            let step = if f == Frequency::Weekly { "7 days" } else { "1 month" };
            let next = format!("date_part('month', {time} + INTERVAL '{step}')");
            (2..=12).map(|m| onehot(format!("next_{}", MONTHS[m as usize - 1]), &next, m)).collect()
        }
        _ => Vec::new(),
    }
}

/// The feature SQL over [`TABLE`] for a frequency and season, with `key`, `time` and
/// `value` the input's columns.
pub fn generate(f: Frequency, season: Option<u32>, key: &str, time: &str, value: &str) -> Generated {
    let over = format!("OVER (PARTITION BY {key} ORDER BY _offset)");
    let mut features = vec![value.to_string()];
    let mut select = vec![format!("_offset, {key}, {time}, {value}")];
    let (lags, means) = (lags(season), means(season));
    for k in &lags {
        features.push(format!("d_lag{k}"));
        select.push(format!("{value} - LAG({value}, {k}) {over} AS d_lag{k}"));
    }
    for n in &means {
        features.push(format!("d_mean{n}"));
        select.push(format!(
            "{value} - AVG({value}) OVER (PARTITION BY {key} ORDER BY _offset ROWS BETWEEN {} PRECEDING AND CURRENT ROW) AS d_mean{n}",
            n - 1
        ));
    }
    for (name, expr) in calendar(f, time) {
        select.push(format!("{expr} AS {name}"));
        features.push(name);
    }
    let lookback = lags.iter().chain(&means).copied().max().unwrap_or(1) as usize;
    Generated { sql: format!("SELECT {}\nFROM {TABLE}", select.join(",\n  ")), features, lookback_rows: lookback }
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
mod tests {
    use super::*;

    /// 2017-01-02 00:00 UTC, a Monday: 17168 days after 1970-01-01 (a Thursday;
    /// 17168 = 7·2452 + 4, Thursday + 4 = Monday).
    const MON: i64 = 17_168 * DAY_MS;

    #[test]
    fn monday_is_monday() {
        assert_eq!(weekday(MON), Some(Weekday::Mon));
    }

    /// Hourly timestamps over four full weeks: every day has 24 rows.
    #[test]
    fn hourly() {
        let t: Vec<i64> = (0..24 * 28).map(|i| MON + i * HOUR_MS).collect();
        let d = detect(&t);
        assert_eq!(d.frequency, Frequency::SubDaily { step_ms: HOUR_MS });
        assert_eq!((d.season, d.rows_per_day, d.median_gap_ms), (Some(24), Some(24), Some(HOUR_MS)));
        assert_eq!(d.frequency.to_string(), "hourly");
    }

    /// FX hours: Sunday 22:00 to Friday 21:00, weekends absent. Mon–Thu have 24 rows,
    /// so the season stays 24 though one gap a week is 49 h.
    #[test]
    fn hourly_with_weekend_gaps() {
        let sunday_22 = MON - 2 * HOUR_MS;
        let t: Vec<i64> = (0..8)
            .flat_map(|w| (0..(2 + 4 * 24 + 22)).map(move |h| sunday_22 + w * 7 * DAY_MS + h * HOUR_MS))
            .collect();
        let d = detect(&t);
        assert_eq!(d.frequency, Frequency::SubDaily { step_ms: HOUR_MS });
        assert_eq!(d.season, Some(24));
    }

    /// A stock's hourly bars 09:30–15:30 (7 a day), weekdays only: season 7, one day.
    #[test]
    fn hourly_session() {
        let t: Vec<i64> = (0..20)
            .filter(|d| d % 7 < 5)
            .flat_map(|d| (0..7).map(move |h| MON + d * DAY_MS + 9 * HOUR_MS + 30 * 60_000 + h * HOUR_MS))
            .collect();
        let d = detect(&t);
        assert_eq!((d.frequency, d.season, d.rows_per_day), (Frequency::SubDaily { step_ms: HOUR_MS }, Some(7), Some(7)));
    }

    /// A daily file in scrambled order is still daily (the gaps are those of the
    /// sorted times), and the plan counts the rows that go back in time: here the
    /// order 0, 2, 1, 4, 3, … goes back at every second row.
    #[test]
    fn unsorted_file_is_detected_and_flagged() {
        let t: Vec<i64> = (0..100).map(|i| MON + (if i % 2 == 1 && i + 1 < 100 { i + 1 } else if i % 2 == 0 && i > 0 { i - 1 } else { i }) * DAY_MS).collect();
        let d = detect(&t);
        assert_eq!((d.frequency, d.season), (Frequency::Daily, Some(7)));
        assert_eq!(d.out_of_order, 49);
        let sorted: Vec<i64> = (0..100).map(|i| MON + i * DAY_MS).collect();
        assert_eq!(detect(&sorted).out_of_order, 0);
    }

    #[test]
    fn daily_and_business_daily() {
        let daily: Vec<i64> = (0..100).map(|i| MON + i * DAY_MS).collect();
        let d = detect(&daily);
        assert_eq!((d.frequency, d.season), (Frequency::Daily, Some(7)));
        // Weekdays only, with one holiday (day 16, a Wednesday) missing.
        let business: Vec<i64> = (0..140).filter(|i| i % 7 < 5 && *i != 16).map(|i| MON + i * DAY_MS).collect();
        assert_eq!(weekday(MON + 16 * DAY_MS), Some(Weekday::Wed));
        let d = detect(&business);
        assert_eq!((d.frequency, d.season, d.median_gap_ms), (Frequency::BusinessDaily, Some(5), Some(DAY_MS)));
        assert_eq!(d.frequency.to_string(), "business-daily");
    }

    #[test]
    fn other_frequencies() {
        let every = |step: i64, n: i64| (0..n).map(|i| MON + i * step).collect::<Vec<_>>();
        assert_eq!(detect(&every(7 * DAY_MS, 60)).frequency, Frequency::Weekly);
        assert_eq!(detect(&every(7 * DAY_MS, 60)).season, Some(52));
        // Fifteen-minute data: 96 rows a day.
        let q = detect(&every(15 * 60_000, 96 * 5));
        assert_eq!((q.frequency, q.season), (Frequency::SubDaily { step_ms: 900_000 }, Some(96)));
        assert_eq!(q.frequency.to_string(), "every 15m");
        // Minutes: the 2000 timestamps looked at span no whole day, and 1440 rows a day
        // would be beyond a usable season anyway.
        let mi = detect(&every(60_000, 1440 * 3));
        assert_eq!((mi.frequency, mi.season, mi.timestamps), (Frequency::SubDaily { step_ms: 60_000 }, None, SAMPLE_ROWS));
        // Five minutes: 2000 timestamps are ~7 days; 288 rows a day is the season.
        let five = detect(&every(300_000, 288 * 8));
        assert_eq!((five.season, five.rows_per_day), (Some(288), Some(288)));
        // Months: first days of 2017 and 2018 (gaps of 28–31 days).
        let months: Vec<i64> = (0..24)
            .map(|i| chrono::NaiveDate::from_ymd_opt(2017 + i / 12, (i % 12 + 1) as u32, 1).unwrap())
            .map(|d| d.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_millis())
            .collect();
        assert_eq!((detect(&months).frequency, detect(&months).season), (Frequency::Monthly, Some(12)));
        // Gaps of 7 s, 13 s, 7 s, …: irregular, no season.
        let odd: Vec<i64> = (0..50).map(|i| MON + (i / 2) * 20_000 + (i % 2) * 7_000).collect();
        assert_eq!((detect(&odd).frequency, detect(&odd).season), (Frequency::Irregular, None));
        assert_eq!(detect(&[MON]).frequency, Frequency::Irregular);
    }

    fn records(lines: &str) -> Vec<Map<String, Value>> {
        lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn time_column_choice() {
        // The bikeshare file's shape: `date` repeats for every hour, `ts` does not.
        let r = records(
            "{\"date\":\"2010-09-20\",\"ts\":\"2010-09-20 12:00:00\",\"count\":11}\n{\"date\":\"2010-09-20\",\"ts\":\"2010-09-20 13:00:00\",\"count\":13}",
        );
        assert_eq!(find_time_column(&r), Some(TimeSource::Column("ts".into())));
        // Prophet's `ds`, any case; a numeric `DAY_of_week` is not a time.
        let r = records("{\"DS\":\"2020-01-01\",\"y\":1,\"day_of_week\":3}\n{\"DS\":\"2020-01-02\",\"y\":2,\"day_of_week\":4}");
        assert_eq!(find_time_column(&r), Some(TimeSource::Column("DS".into())));
        // Epoch milliseconds under `timestamp` count; numbers under `date` do not.
        let r = records("{\"timestamp\":1483308000000,\"date\":20170101,\"v\":1}\n{\"timestamp\":1483311600000,\"date\":20170101,\"v\":2}");
        assert_eq!(find_time_column(&r), Some(TimeSource::Column("timestamp".into())));
        // The births file: a date in three columns (and an hour when there is one).
        let r = records("{\"year\":2000,\"month\":1,\"date_of_month\":1,\"day_of_week\":6,\"births\":9083}");
        assert_eq!(find_time_column(&r), Some(TimeSource::Template("{year}-{month}-{date_of_month}".into())));
        let r = records("{\"Year\":2000,\"Month\":1,\"Day\":1,\"Hour\":5,\"v\":1}");
        assert_eq!(find_time_column(&r), Some(TimeSource::Template("{Year}-{Month}-{Day} {Hour}:00:00".into())));
        assert_eq!(find_time_column(&records("{\"a\":1,\"b\":\"x\"}")), None);
    }

    fn config(dir: &Path, series: &str) -> PipelineConfig {
        let text = format!(
            "name = \"t\"\n[source]\ntopic = \"in\"\nschema = \"{}\"\nkey = \"series\"\ntime = \"time\"\n{series}\n[model]\nfeatures = []\ntarget = \"value\"\nhorizon = 1\n[sink]\ntopic = \"out\"\ndead_letter_topic = \"dlq\"\n",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/series.json").display()
        );
        let mut c = PipelineConfig::parse(&text).unwrap().config;
        c.base_dir = dir.to_path_buf();
        c
    }

    /// `apply` maps the chosen columns, and fills SQL, features and season; a file
    /// whose times run backwards, a column it lacks or an ambiguous value column
    /// are problems with their keys.
    #[test]
    fn apply_fills_the_pipeline_or_says_why_not() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("shop.csv");
        let rows: String = (0..30).map(|i| format!("2017-01-{:02},{}\n", i + 1, 10 + i)).collect();
        std::fs::write(&file, format!("Date,Sales\n{rows}")).unwrap();
        let opts = SeriesOptions { input: Some(file.clone()), ..Default::default() };
        let mut c = config(dir.path(), "[series]");
        let plan = apply(&mut c, &opts).unwrap().unwrap();
        // The only numeric column is the value; January 2017 has weekends: daily.
        assert_eq!((plan.column.as_deref(), plan.time_column.as_deref()), (Some("Sales"), Some("Date")));
        assert_eq!((plan.detected.frequency, c.model.season), (Frequency::Daily, Some(7)));
        assert_eq!(c.source.file.rename.get("Sales").map(String::as_str), Some("value"));
        assert_eq!(c.source.file.rename.get("Date").map(String::as_str), Some("time"));
        assert_eq!(c.source.file.fill.get("series").map(String::as_str), Some("{file_stem}"));
        assert_eq!(c.features.table, TABLE);
        // The longest look-back is the 28-row mean; the default 64 already covers it.
        assert_eq!(c.features.lookback_rows, 64);
        assert_eq!(c.model.features, generate(Frequency::Daily, Some(7), "series", "time", "value").features);
        // A frequency given by name wins over the timestamps.
        let mut c = config(dir.path(), "[series]\nfrequency = \"business_daily\"");
        assert_eq!(apply(&mut c, &opts).unwrap().unwrap().detected.frequency, Frequency::BusinessDaily);
        assert_eq!(c.model.season, Some(5));

        let at = |c: &mut PipelineConfig, o: &SeriesOptions| -> Vec<String> {
            apply(c, o).unwrap_err().iter().map(|p| format!("{}: {}", p.at, p.message)).collect()
        };
        let missing = at(&mut config(dir.path(), "[series]\ncolumn = \"Close\""), &opts);
        assert!(missing.len() == 1 && missing[0].starts_with("series.column") && missing[0].contains("Sales"), "{missing:?}");
        let two = dir.path().join("two.csv");
        std::fs::write(&two, "time,a,b\n2017-01-01,1,2\n2017-01-02,3,4\n2017-01-03,5,6\n").unwrap();
        let o = SeriesOptions { input: Some(two), ..Default::default() };
        let ambiguous = at(&mut config(dir.path(), "[series]"), &o);
        assert!(ambiguous[0].starts_with("series.column: give --column") && ambiguous[0].contains("a, b"), "{ambiguous:?}");
        let back = dir.path().join("back.csv");
        std::fs::write(&back, "Date,v\n2017-01-03,1\n2017-01-02,2\n2017-01-01,3\n").unwrap();
        let o = SeriesOptions { input: Some(back), ..Default::default() };
        let backwards = at(&mut config(dir.path(), "[series]"), &o);
        assert!(backwards[0].starts_with("series.time_column") && backwards[0].contains("backwards"), "{backwards:?}");
        // Own SQL with [series]: its feature columns must be listed.
        let own = at(&mut config(dir.path(), "[series]\n[features]\nsql = \"SELECT _offset, series, time, value FROM points\""), &opts);
        assert!(own.len() == 1 && own[0].starts_with("model.features"), "{own:?}");
        // No file (real brokers, no sample): a named frequency is enough; auto is not.
        let mut c = config(dir.path(), "[series]\nfrequency = \"hourly\"");
        let plan = apply(&mut c, &SeriesOptions::default()).unwrap().unwrap();
        assert_eq!((plan.file, plan.column, c.model.season), (None, None, Some(24)));
        let auto = at(&mut config(dir.path(), "[series]"), &SeriesOptions::default());
        assert!(auto.len() == 1 && auto[0].starts_with("series.frequency"), "{auto:?}");
        // --column on a pipeline without [series].
        let no = at(&mut config(dir.path(), "[features]\nsql = \"SELECT 1\""), &SeriesOptions { column: Some("x".into()), ..Default::default() });
        assert!(no[0].starts_with("series:"), "{no:?}");
    }

    #[test]
    fn frequency_names() {
        assert_eq!(Frequency::parse("auto"), Ok(None));
        assert_eq!(Frequency::parse("business-daily"), Ok(Some(Frequency::BusinessDaily)));
        assert_eq!(Frequency::parse("15m"), Ok(Some(Frequency::SubDaily { step_ms: 900_000 })));
        assert!(Frequency::parse("fortnightly").is_err());
        assert!(Frequency::parse("2d").is_err());
        assert_eq!(Detected::nominal(Frequency::SubDaily { step_ms: HOUR_MS }).season, Some(24));
        assert_eq!(Detected::nominal(Frequency::Yearly).season, None);
    }

    #[test]
    fn lags_and_means() {
        assert_eq!(lags(Some(24)), [1, 2, 23, 24, 47]);
        assert_eq!(lags(Some(7)), [1, 2, 6, 7, 13]);
        assert_eq!(lags(Some(5)), [1, 2, 4, 5, 9]);
        assert_eq!(lags(Some(2)), [1, 2, 3]);
        assert_eq!(lags(Some(52)), [1, 2, 51, 52]);
        assert_eq!(lags(None), [1, 2, 3]);
        assert_eq!(means(Some(24)), [24, 96]);
        assert_eq!(means(Some(96)), [96]);
    }

    /// Builds a one-key batch of (time, value) rows in the series schema.
    fn batch(rows: &[(i64, f64)]) -> arrow::record_batch::RecordBatch {
        let schema = std::sync::Arc::new(
            crate::source::schema::TopicSchema::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/series.json")).unwrap(),
        );
        let mut d = crate::source::decode::Decoder::new(schema);
        for (i, (t, v)) in rows.iter().enumerate() {
            let line = serde_json::json!({"series": "s", "time": crate::source::file::rfc3339_ms(*t), "value": v}).to_string();
            d.push(Some(line.as_bytes()), i as i64).unwrap();
        }
        d.finish()
    }

    fn column(b: &arrow::record_batch::RecordBatch, name: &str) -> Vec<Option<f64>> {
        use arrow::array::{Array, AsArray};
        let c = arrow::compute::cast(b.column_by_name(name).unwrap(), &arrow::datatypes::DataType::Float64).unwrap();
        let c = c.as_primitive::<arrow::datatypes::Float64Type>();
        (0..c.len()).map(|i| c.is_valid(i).then(|| c.value(i))).collect()
    }

    /// The generated SQL plans against the series schema, and its columns hold what
    /// they say, checked against values worked out here: on hourly rows from Monday
    /// 00:00 with value = i², row i's d_lag23 is i² − (i−23)², d_mean24 is i² minus
    /// the mean of the last 24 squares, and next_hHH is 1 exactly for HH = (i+1) mod 24.
    #[tokio::test]
    async fn hourly_sql_computes_what_it_says() {
        let g = generate(Frequency::SubDaily { step_ms: HOUR_MS }, Some(24), "series", "time", "value");
        assert_eq!(g.lookback_rows, 96);
        assert_eq!(g.features.len(), 1 + 5 + 2 + 23);
        let rows: Vec<(i64, f64)> = (0..60).map(|i| (MON + i * HOUR_MS, (i * i) as f64)).collect();
        let b = batch(&rows);
        let e = crate::features::FeatureEngine::plan(&g.sql, TABLE, b.schema()).await.unwrap();
        let out = e.compute(None, &b).await.unwrap();
        assert_eq!(out.num_rows(), 60);
        let sq = |i: i64| (i * i) as f64;
        let (l23, l47, m24, m96) = (column(&out, "d_lag23"), column(&out, "d_lag47"), column(&out, "d_mean24"), column(&out, "d_mean96"));
        for i in 0..60i64 {
            let iu = i as usize;
            assert_eq!(l23[iu], (i >= 23).then(|| sq(i) - sq(i - 23)), "row {i}");
            assert_eq!(l47[iu], (i >= 47).then(|| sq(i) - sq(i - 47)), "row {i}");
            let last = |n: i64| (i.saturating_sub(n - 1).max(0)..=i).map(sq).collect::<Vec<_>>();
            let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
            assert!((m24[iu].unwrap() - (sq(i) - mean(last(24)))).abs() < 1e-9, "row {i}");
            assert!((m96[iu].unwrap() - (sq(i) - mean(last(96)))).abs() < 1e-9, "row {i}");
            for h in 1..24 {
                let want = if (i + 1) % 24 == h { 1.0 } else { 0.0 };
                assert_eq!(column(&out, &format!("next_h{h:02}"))[iu], Some(want), "row {i} hour {h}");
            }
        }
    }

    /// Every frequency's SQL plans and runs; monthly and weekly rows point at the
    /// month of the next row: rows of 2017-01-01, -21 and -28 plus a month are all in
    /// February; plus 7 days they are January 8 and 28 (January: the dropped level)
    /// and February 4.
    #[tokio::test]
    async fn every_frequency_plans() {
        let jan = |d: i64| MON + (d - 2) * DAY_MS;
        let rows: Vec<(i64, f64)> = [1, 21, 28].iter().map(|d| (jan(*d), 1.0)).collect();
        let b = batch(&rows);
        for f in [
            Frequency::SubDaily { step_ms: 900_000 },
            Frequency::SubDaily { step_ms: 6 * HOUR_MS },
            Frequency::SubDaily { step_ms: 60_000 },
            Frequency::Daily,
            Frequency::BusinessDaily,
            Frequency::Weekly,
            Frequency::Monthly,
            Frequency::Quarterly,
            Frequency::Yearly,
            Frequency::Irregular,
        ] {
            let g = generate(f, f.nominal_season(), "series", "time", "value");
            let e = crate::features::FeatureEngine::plan(&g.sql, TABLE, b.schema()).await.unwrap_or_else(|e| panic!("{f}: {e}"));
            let out = e.compute(None, &b).await.unwrap();
            assert_eq!(out.num_columns(), 3 + g.features.len(), "{f}");
            match f {
                Frequency::Monthly => assert_eq!(column(&out, "next_feb"), [Some(1.0), Some(1.0), Some(1.0)]),
                Frequency::Weekly => assert_eq!(column(&out, "next_feb"), [Some(0.0), Some(0.0), Some(1.0)]),
                _ => {}
            }
        }
    }

    /// Weekday one-hots of the next (business) day: rows Mon 2017-01-02 … Sun
    /// 2017-01-08. Daily: the row of day d points at d + 1 (Sunday's at Monday, the
    /// dropped level: all zero). Business-daily: Friday, Saturday and Sunday point at
    /// Monday (all zero), Monday–Thursday at the next day.
    #[tokio::test]
    async fn weekday_sql() {
        let rows: Vec<(i64, f64)> = (0..7).map(|i| (MON + i * DAY_MS, 1.0)).collect();
        let b = batch(&rows);
        let names = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        for (f, levels) in [(Frequency::Daily, &names[1..]), (Frequency::BusinessDaily, &names[1..5])] {
            let g = generate(f, f.nominal_season(), "series", "time", "value");
            let e = crate::features::FeatureEngine::plan(&g.sql, TABLE, b.schema()).await.unwrap();
            let out = e.compute(None, &b).await.unwrap();
            for day in 0..7 {
                let target = match f {
                    Frequency::Daily => (day + 1) % 7,
                    _ if day < 4 => day + 1,
                    _ => 0,
                };
                for l in levels.iter() {
                    let level = names.iter().position(|n| n == l).unwrap();
                    let want = if level == target { 1.0 } else { 0.0 };
                    assert_eq!(column(&out, &format!("next_{l}"))[day], Some(want), "{f} row {} level {l}", names[day]);
                }
            }
        }
    }
}

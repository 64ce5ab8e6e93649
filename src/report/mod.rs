//! Backtest reports: `report.json` (every metric, overall, per key and per period —
//! the walk-forward table — for each model configuration and the baselines), PNG
//! plots ([`plots`]) and one self-contained `report.html` ([`html`]).
//!
//! Everything in `report.json` is a function of the input and the configuration
//! (no wall-clock times), so the same backtest twice writes the same file.

pub mod html;
pub mod plots;
pub mod weights;

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::Context;
use serde::Serialize;

use crate::pipeline::backtest::{BacktestResult, LaneResult};
use crate::pipeline::summary::Metrics;
use crate::source::file::rfc3339_ms;
use crate::state::score::{ErrorStats, LabelRow};

/// Calendar buckets of the walk-forward table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Period {
    pub fn parse(s: &str) -> crate::error::Result<Option<Period>> {
        Ok(match s {
            "auto" => None,
            "hour" => Some(Period::Hour),
            "day" => Some(Period::Day),
            "week" => Some(Period::Week),
            "month" => Some(Period::Month),
            "year" => Some(Period::Year),
            _ => crate::fail!(Config, "--period {s:?}: use auto, hour, day, week, month or year"),
        })
    }

    /// About 6–40 buckets over a span of `span_ms`.
    pub fn auto(span_ms: i64) -> Period {
        const DAY: i64 = 86_400_000;
        match span_ms {
            s if s > 6 * 365 * DAY => Period::Year,
            s if s > 120 * DAY => Period::Month,
            s if s > 20 * DAY => Period::Week,
            s if s > 2 * DAY => Period::Day,
            _ => Period::Hour,
        }
    }

    /// The bucket label of an event time (ns); labels sort in time order.
    pub fn label(self, time_ns: i64) -> String {
        use chrono::Datelike;
        let t = chrono::DateTime::from_timestamp_nanos(time_ns);
        match self {
            Period::Hour => t.format("%Y-%m-%dT%H").to_string(),
            Period::Day => t.format("%Y-%m-%d").to_string(),
            Period::Week => {
                let w = t.iso_week();
                format!("{}-W{:02}", w.year(), w.week())
            }
            Period::Month => t.format("%Y-%m").to_string(),
            Period::Year => t.format("%Y").to_string(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub pipeline: String,
    /// The file replayed (as given), when there was one.
    pub input_file: Option<String>,
    pub input_topic: String,
    /// Per input partition, `[first, end)` offsets read.
    pub offsets: BTreeMap<String, [i64; 2]>,
    /// The requested range of event times (RFC 3339): `from` inclusive, `to` exclusive.
    pub from: Option<String>,
    pub to: Option<String>,
    /// Records in the range, and records read but outside it (not scored).
    pub records_in_range: u64,
    pub records_before_range: u64,
    pub records_after_range: u64,
    /// Warm-up: its start (RFC 3339) and the records before `from` that models learned
    /// from without being scored.
    pub warmup_from: Option<String>,
    pub records_warmup: u64,
    pub period: Period,
    /// The first is the pipeline's own `[model]`.
    pub models: Vec<ModelReport>,
    /// Plot files written beside this report.
    pub plots: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    pub name: String,
    pub kind: String,
    /// Where its outputs went: shadow topics, or (file backtests) Parquet files
    /// beside this report.
    pub shadow_topic: String,
    pub shadow_dead_letter_topic: String,
    pub messages_in: u64,
    pub predictions_out: u64,
    pub labelled: u64,
    pub pending: u64,
    pub warmup: u64,
    pub dead_letters: u64,
    pub dead_letters_by_reason: BTreeMap<String, u64>,
    pub model_updates: u64,
    pub drift_events: u64,
    /// Model forecasts replaced by the baseline (divergence guard).
    pub model_fallbacks: u64,
    /// With aggregation: each expert's final weight, averaged over keys.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub weights: BTreeMap<String, f64>,
    /// Model, persistence and (with a season) seasonal naive, over every label.
    pub metrics: Metrics,
    pub per_key: BTreeMap<String, Metrics>,
    /// The walk-forward table: the same metrics per calendar period of the label time.
    pub periods: Vec<PeriodMetrics>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeriodMetrics {
    pub period: String,
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// The labels of a lane, merged over partitions and ordered by (time, partition, order).
pub struct Series<'a> {
    pub rows: Vec<(&'a str, LabelRow)>,
}

impl<'a> Series<'a> {
    pub fn of(lane: &'a LaneResult) -> Self {
        let mut rows: Vec<(i64, i32, usize, &'a str, LabelRow)> = Vec::new();
        for (p, log) in &lane.labels {
            for (i, r) in log.rows.iter().enumerate() {
                rows.push((r.time_ns, *p, i, log.keys[r.key as usize].as_str(), *r));
            }
        }
        rows.sort_by_key(|&(t, p, i, _, _)| (t, p, i));
        Series { rows: rows.into_iter().map(|(_, _, _, k, r)| (k, r)).collect() }
    }
}

/// Accumulates the three forecasters' errors.
#[derive(Default, Clone, Copy)]
pub struct Acc([ErrorStats; 3]);

impl Acc {
    pub fn add(&mut self, r: &LabelRow) {
        let s = r.scored;
        self.0[0].add(s.model, s.actual, s.persistence);
        self.0[1].add(s.persistence, s.actual, s.persistence);
        if let Some(sn) = s.seasonal {
            self.0[2].add(sn, s.actual, s.persistence);
        }
    }

    pub fn metrics(&self) -> Metrics {
        let [m, p, s] = &self.0;
        Metrics::new(m, p, (s.n > 0).then_some(s))
    }
}

/// Builds the report of a finished backtest.
pub fn build(pipeline: &str, input_file: Option<&Path>, from_ms: Option<i64>, to_ms: Option<i64>, period: Option<Period>, r: &BacktestResult) -> Report {
    let series: Vec<Series> = r.lanes.iter().map(Series::of).collect();
    let span = series
        .first()
        .and_then(|s| Some(s.rows.last()?.1.time_ns - s.rows.first()?.1.time_ns))
        .unwrap_or(0)
        / 1_000_000;
    let period = period.unwrap_or_else(|| Period::auto(span));
    let models = r
        .lanes
        .iter()
        .zip(&series)
        .map(|(lane, series)| {
            let mut buckets: BTreeMap<String, Acc> = BTreeMap::new();
            // Every period is whole UTC hours and the rows are in time order: the
            // label is worked out once per hour, not per row.
            let mut hour = (i64::MIN, String::new());
            for (_, row) in &series.rows {
                let h = row.time_ns.div_euclid(3_600_000_000_000);
                if h != hour.0 {
                    hour = (h, period.label(row.time_ns));
                }
                match buckets.get_mut(&hour.1) {
                    Some(a) => a.add(row),
                    None => buckets.entry(hour.1.clone()).or_default().add(row),
                }
            }
            let s = &lane.summary;
            ModelReport {
                name: lane.name.clone(),
                kind: lane.model_kind.clone(),
                shadow_topic: lane.shadow_topic.clone(),
                shadow_dead_letter_topic: lane.shadow_dead_letter_topic.clone(),
                messages_in: s.messages_in,
                predictions_out: s.predictions_out,
                labelled: s.labelled,
                pending: s.pending,
                warmup: s.warmup,
                dead_letters: s.dead_letters,
                dead_letters_by_reason: s.dead_letters_by_reason.clone(),
                model_updates: s.model_updates,
                drift_events: s.drift_events,
                model_fallbacks: s.model_fallbacks,
                weights: s.weights.clone(),
                metrics: s.metrics.clone(),
                per_key: s.per_key.clone(),
                periods: buckets.into_iter().map(|(period, a)| PeriodMetrics { period, metrics: a.metrics() }).collect(),
            }
        })
        .collect();
    Report {
        pipeline: pipeline.to_string(),
        input_file: input_file.map(|p| p.display().to_string()),
        input_topic: r.input_topic.clone(),
        offsets: r.offsets.iter().map(|(p, (a, b))| (p.to_string(), [*a, *b])).collect(),
        from: from_ms.map(rfc3339_ms),
        to: to_ms.map(rfc3339_ms),
        records_in_range: r.in_range,
        records_before_range: r.before_range,
        records_after_range: r.after_range,
        warmup_from: r.warmup_from_ms.map(rfc3339_ms),
        records_warmup: r.warmup,
        period,
        models,
        plots: Vec::new(),
    }
}

/// Writes `report.json`, the plots and `report.html` into `dir`.
pub fn write(dir: &Path, mut report: Report, r: &BacktestResult) -> crate::error::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    report.plots = plots::draw_all(dir, r).context("drawing the plots")?;
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(dir.join("report.json"), json + "\n").with_context(|| format!("writing {}", dir.join("report.json").display()))?;
    let page = html::page(&report, dir)?;
    std::fs::write(dir.join("report.html"), page).with_context(|| format!("writing {}", dir.join("report.html").display()))?;
    Ok(())
}

/// Writes `labels.csv`: every labelled prediction of every lane in time order (lane,
/// key, label time, input offset of the forecast, the published forecast, persistence,
/// seasonal naive, actual), so other tools can score exactly the same rows.
pub fn write_labels(dir: &Path, r: &BacktestResult) -> crate::error::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("labels.csv");
    let f = std::fs::File::create(&path).with_context(|| format!("writing {}", path.display()))?;
    let mut w = std::io::BufWriter::new(f);
    writeln!(w, "lane,key,time_ns,predicted_at_offset,predicted,persistence,seasonal_naive,actual")?;
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    for lane in &r.lanes {
        for (key, row) in Series::of(lane).rows {
            let s = row.scored;
            let key = if key.contains([',', '"', '\n']) { format!("\"{}\"", key.replace('"', "\"\"")) } else { key.to_string() };
            writeln!(
                w,
                "{},{key},{},{},{},{},{},{}",
                lane.name, row.time_ns, row.predicted_at, s.model, s.persistence, opt(s.seasonal), s.actual
            )?;
        }
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2017-02-01T00:00Z = 1485907200 s; ISO week of 2017-01-01 (a Sunday) is 2016-W52.
    #[test]
    fn period_labels() {
        let ns = 1_485_907_200_000_000_000;
        assert_eq!(Period::Month.label(ns), "2017-02");
        assert_eq!(Period::Day.label(ns), "2017-02-01");
        assert_eq!(Period::Year.label(ns), "2017");
        assert_eq!(Period::Hour.label(ns + 3_600_000_000_000), "2017-02-01T01");
        assert_eq!(Period::Week.label(1_483_228_800_000_000_000), "2016-W52");
        assert_eq!(Period::auto(365 * 86_400_000), Period::Month);
        assert_eq!(Period::auto(15 * 365 * 86_400_000), Period::Year);
    }
}

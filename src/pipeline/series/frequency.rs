//! The spacing of a series' rows: detected from its timestamps (a step below a
//! day snapped to a common one, daily, business-daily, weekly, monthly, …) and the
//! season that step implies.

use std::collections::BTreeMap;

use chrono::{Datelike, Weekday};
use serde::Serialize;

use super::{MAX_SEASON, SAMPLE_ROWS};
use crate::pipeline::config::parse_duration_ns;

pub(super) const SECOND_MS: i64 = 1000;
pub(super) const HOUR_MS: i64 = 3_600_000;
pub(super) const DAY_MS: i64 = 86_400_000;
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
pub(super) fn duration(ms: i64) -> String {
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
    pub(super) fn nominal_season(self) -> Option<u32> {
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

pub(super) fn weekday(ms: i64) -> Option<Weekday> {
    chrono::DateTime::from_timestamp_millis(ms).map(|d| d.weekday())
}

/// The most common number of rows per UTC calendar day, over the days strictly
/// between the first and the last (which may be partial); ties go to the larger.
pub(super) fn rows_per_day(t: &[i64]) -> Option<u32> {
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

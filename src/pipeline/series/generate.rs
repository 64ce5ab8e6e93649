//! The feature SQL, `model.features` and look-back generated for a frequency and
//! season: lags, differences to rolling means, calendar one-hots.

use std::collections::BTreeSet;

use super::frequency::{Frequency, HOUR_MS, SECOND_MS};
use super::TABLE;

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

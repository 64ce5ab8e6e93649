//! The aggregation-weights plot: each expert's weight over time (label time), the
//! mean over keys within each of ~600 time slices, for the first lane.

use std::path::Path;

use plotters::prelude::*;

use super::plots::{legend, pe, time_chart, LANE_COLOURS, PERSISTENCE, SEASONAL};
use crate::pipeline::backtest::LaneResult;

/// Draws `weights.png` when the lane aggregated experts; returns whether it did.
pub fn draw(path: &Path, lane: &LaneResult) -> crate::error::Result<bool> {
    let Some(names) = lane.labels.values().map(|l| &l.expert_names).find(|n| !n.is_empty()) else { return Ok(false) };
    let ne = names.len();
    let mut rows: Vec<(i64, &[f64])> = Vec::new();
    for log in lane.labels.values() {
        if log.weights.len() != log.rows.len() * ne {
            continue;
        }
        rows.extend(log.rows.iter().zip(log.weights.chunks(ne)).map(|(r, w)| (r.time_ns, w)));
    }
    if rows.len() < 2 {
        return Ok(false);
    }
    rows.sort_by_key(|r| r.0);
    let (t0, t1) = (rows[0].0 as f64 / 1e6, rows[rows.len() - 1].0 as f64 / 1e6);
    let bins = 600usize;
    let span = (t1 - t0).max(1.0);
    let mut sum = vec![vec![0.0; bins]; ne];
    let mut cnt = vec![0usize; bins];
    for (t, w) in &rows {
        let b = ((((*t as f64 / 1e6) - t0) / span * bins as f64) as usize).min(bins - 1);
        cnt[b] += 1;
        for (i, v) in w.iter().enumerate() {
            sum[i][b] += v;
        }
    }
    let root = BitMapBackend::new(path, (1200, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(pe)?;
    let caption = format!("Aggregation weights over time ({}, mean over keys)", lane.name);
    let mut chart = time_chart(&root, &caption, t0..t0 + span, 0.0..1.0, "weight", None)?;
    // The same colours as the other plots: the model as the first lane, persistence
    // and seasonal naive as the baselines; zero and forecast columns after them.
    let mut other = 0;
    for (i, name) in names.iter().enumerate() {
        let c = match name.as_str() {
            "learner" => LANE_COLOURS[0],
            "persistence" => PERSISTENCE,
            "seasonal" => SEASONAL,
            _ => {
                other += 1;
                LANE_COLOURS[1 + (other - 1) % (LANE_COLOURS.len() - 1)]
            }
        };
        let pts: Vec<(f64, f64)> = (0..bins)
            .filter(|&b| cnt[b] > 0)
            .map(|b| (t0 + (b as f64 + 0.5) / bins as f64 * span, sum[i][b] / cnt[b] as f64))
            .collect();
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(pe)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present().map_err(pe)?;
    Ok(true)
}

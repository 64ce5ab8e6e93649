//! The report's PNG plots (plotters, bitmap backend, a bundled DejaVu Sans so text
//! renders the same on every machine): predictions against actuals and persistence,
//! rolling error of every model and baseline; residual histograms and worst keys in
//! `plots/errors.rs`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

mod errors;

use super::Series;
use errors::{residuals, worst_keys};
use crate::pipeline::backtest::BacktestResult;

const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
pub(super) const W: u32 = 1200;

/// Registers the bundled font for every family plotters may ask for (once).
pub fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for family in ["sans-serif", "serif", "monospace"] {
            for style in [FontStyle::Normal, FontStyle::Bold, FontStyle::Italic, FontStyle::Oblique] {
                let _ = plotters::style::register_font(family, style, FONT);
            }
        }
    });
}

/// A plotting library's error (drawing our own data: a bug if it fails).
pub(crate) fn pe<E: std::fmt::Debug>(e: E) -> crate::error::Error {
    crate::error::Error::Internal(format!("plot: {e:?}"))
}

pub(crate) type Chart<'a, 'b> = ChartContext<'a, BitMapBackend<'b>, Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>>;

/// A chart whose x axis is time (epoch ms) with ticks and title that suit its span.
pub(crate) fn time_chart<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>,
    caption: &str,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
    y_desc: &str,
    y_fmt: Option<&dyn Fn(&f64) -> String>,
) -> crate::error::Result<Chart<'a, 'b>> {
    let (x0, span) = (x.start, x.end - x.start);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(90)
        .build_cartesian_2d(x, y)
        .map_err(pe)?;
    let xf = |v: &f64| time_label(*v, span);
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(time_desc(x0, span)).y_desc(y_desc).x_labels(8).x_label_formatter(&xf).label_style(("sans-serif", 13));
    if let Some(f) = y_fmt {
        mesh.y_label_formatter(f);
    }
    mesh.draw().map_err(pe)?;
    Ok(chart)
}

/// The series legend, in one style for every plot.
pub(crate) fn legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>, at: SeriesLabelPosition) -> crate::error::Result<()> {
    chart
        .configure_series_labels()
        .position(at)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(pe)
}

/// Line colours: model configurations in order, then the baselines.
pub(crate) const LANE_COLOURS: [RGBColor; 5] = [RGBColor(214, 39, 40), RGBColor(31, 119, 180), RGBColor(44, 160, 44), RGBColor(148, 103, 189), RGBColor(255, 127, 14)];
pub(crate) const PERSISTENCE: RGBColor = RGBColor(150, 150, 150);
pub(crate) const SEASONAL: RGBColor = RGBColor(140, 86, 75);

pub(super) fn lane_colour(i: usize) -> RGBColor {
    LANE_COLOURS[i % LANE_COLOURS.len()]
}

/// A date/time tick label whose precision suits the axis span (ms).
fn time_label(ms: f64, span_ms: f64) -> String {
    let Some(t) = chrono::DateTime::from_timestamp_millis(ms as i64) else { return String::new() };
    let day = 86_400_000.0;
    let f = if span_ms > 3.0 * 365.0 * day {
        "%Y"
    } else if span_ms > 400.0 * day {
        "%Y-%m"
    } else if span_ms > 3.0 * day {
        "%Y-%m-%d"
    } else if span_ms > 6.0 * 3_600_000.0 {
        "%m-%d %H:%M"
    } else if span_ms > 180_000.0 {
        "%H:%M:%S"
    } else {
        "%H:%M:%S%.3f"
    };
    t.format(f).to_string()
}

/// The time axis' title; names the day when the ticks show only times.
fn time_desc(x0_ms: f64, span_ms: f64) -> String {
    match chrono::DateTime::from_timestamp_millis(x0_ms as i64) {
        Some(t) if span_ms <= 6.0 * 3_600_000.0 => format!("label time (UTC), {}", t.format("%Y-%m-%d")),
        _ => "label time (UTC)".to_string(),
    }
}

/// A y range with 5 % headroom that never collapses.
fn y_range(vals: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in vals.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    let pad = ((hi - lo) * 0.05).max(hi.abs().max(1e-9) * 1e-6);
    (lo - pad)..(hi + pad)
}

/// Draws every plot into `dir`; returns the file names.
pub fn draw_all(dir: &Path, r: &BacktestResult) -> crate::error::Result<Vec<String>> {
    register_fonts();
    let series: Vec<Series> = r.lanes.iter().map(Series::of).collect();
    let names: Vec<&str> = r.lanes.iter().map(|l| l.name.as_str()).collect();
    let mut out = Vec::new();
    if series.first().is_none_or(|s| s.rows.is_empty()) {
        return Ok(out);
    }
    let seasonal = series[0].rows.iter().any(|(_, r)| r.scored.seasonal.is_some());
    predictions(&dir.join("predictions.png"), &series, &names)?;
    out.push("predictions.png".to_string());
    rolling(&dir.join("rolling_error.png"), &series, &names, seasonal)?;
    out.push("rolling_error.png".to_string());
    residuals(&dir.join("residuals.png"), &series[0], names[0])?;
    out.push("residuals.png".to_string());
    let keys: std::collections::BTreeSet<&str> = series[0].rows.iter().map(|(k, _)| *k).collect();
    if keys.len() > 1 {
        worst_keys(&dir.join("worst_keys.png"), &series[0], names[0])?;
        out.push("worst_keys.png".to_string());
    }
    if super::weights::draw(&dir.join("weights.png"), &r.lanes[0])? {
        out.push("weights.png".to_string());
    }
    Ok(out)
}

/// The key with the most labels (ties: the first by name).
fn main_key<'a>(s: &Series<'a>) -> &'a str {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (k, _) in &s.rows {
        *counts.entry(k).or_default() += 1;
    }
    counts.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).map(|(k, _)| *k).unwrap_or("")
}

/// Actual, persistence and every model over the whole range (top) and the last 200
/// labels (bottom), for the key with the most labels.
fn predictions(path: &Path, series: &[Series], names: &[&str]) -> crate::error::Result<()> {
    let key = main_key(&series[0]);
    let root = BitMapBackend::new(path, (W, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(pe)?;
    let (top, bottom) = root.split_vertically(450);
    let rows_of = |s: &Series, n: usize| -> Vec<(f64, f64, f64, f64)> {
        let all: Vec<_> = s
            .rows
            .iter()
            .filter(|(k, r)| *k == key && r.time_ns != i64::MIN)
            .map(|(_, r)| (r.time_ns as f64 / 1e6, r.scored.actual, r.scored.persistence, r.scored.model))
            .collect();
        all[all.len().saturating_sub(n)..].to_vec()
    };
    for (area, n, what) in [(&top, usize::MAX, "all labels"), (&bottom, 200, "last 200 labels")] {
        let base = rows_of(&series[0], n);
        if base.is_empty() {
            continue;
        }
        let (x0, x1) = (base[0].0, base[base.len() - 1].0.max(base[0].0 + 1.0));
        let lanes: Vec<Vec<(f64, f64, f64, f64)>> = series.iter().map(|s| rows_of(s, n)).collect();
        // The axis fits the actual values (with room); a forecast far outside them
        // (a model still warming up) leaves the frame rather than flatten the rest.
        let yr = y_range(base.iter().map(|r| r.1));
        let pad = (yr.end - yr.start) * 0.15;
        let yr = (yr.start - pad)..(yr.end + pad);
        let (yr_lo, yr_hi) = (yr.start, yr.end);
        // More points than pixel columns: each series becomes its per-column min–max
        // envelope, so a long range stays readable (and the file small).
        let cols = (W as usize).saturating_sub(130);
        let dense = base.len() > 2 * cols;
        let how = if dense { "min–max per pixel column" } else { "y axis fits the actual values" };
        let caption = format!("Predicted vs actual — key {key:?}, {what} ({how})");
        let trim = |y: &f64| format!("{y:.5}").trim_end_matches('0').trim_end_matches('.').to_string();
        let mut chart = time_chart(area, &caption, x0..x1, yr, "value", Some(&trim))?;
        if dense {
            let band = |pts: Vec<(f64, f64)>| envelope(&pts, x0, x1, cols, yr_lo, yr_hi);
            let actual = band(base.iter().map(|r| (r.0, r.1)).collect());
            chart
                .draw_series(std::iter::once(Polygon::new(actual, BLACK.mix(0.35).filled())))
                .map_err(pe)?
                .label("actual (min–max)")
                .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], BLACK.mix(0.35).filled()));
            for (i, rows) in lanes.iter().enumerate() {
                let c = lane_colour(i);
                let mut outline = band(rows.iter().map(|r| (r.0, r.3)).collect());
                if let Some(&p) = outline.first() {
                    outline.push(p);
                }
                chart
                    .draw_series(LineSeries::new(outline, &c))
                    .map_err(pe)?
                    .label(format!("model {} (min–max)", names[i]))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
            }
            legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
            continue;
        }
        chart
            .draw_series(LineSeries::new(base.iter().map(|r| (r.0, r.1)), BLACK.stroke_width(2)))
            .map_err(pe)?
            .label("actual")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
        chart
            .draw_series(LineSeries::new(base.iter().map(|r| (r.0, r.2)), &PERSISTENCE))
            .map_err(pe)?
            .label("persistence")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], PERSISTENCE));
        for (i, rows) in lanes.iter().enumerate() {
            let c = lane_colour(i);
            chart
                .draw_series(LineSeries::new(rows.iter().map(|r| (r.0, r.3.clamp(yr_lo, yr_hi))), &c))
                .map_err(pe)?
                .label(format!("model {}", names[i]))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    }
    root.present().map_err(pe)?;
    Ok(())
}

/// The min–max envelope of `pts` (in x order) over `cols` equal columns of
/// `[x0, x1]`, values clamped to `[lo, hi]`: a closed outline, the maxima left to
/// right then the minima right to left. Empty columns are skipped.
fn envelope(pts: &[(f64, f64)], x0: f64, x1: f64, cols: usize, lo: f64, hi: f64) -> Vec<(f64, f64)> {
    let w = (x1 - x0) / cols.max(1) as f64;
    let mut bins: Vec<(f64, f64, f64)> = Vec::with_capacity(cols);
    let mut cur: Option<(usize, f64, f64)> = None;
    for &(x, y) in pts {
        if !y.is_finite() {
            continue;
        }
        let c = (((x - x0) / w) as usize).min(cols.saturating_sub(1));
        let y = y.clamp(lo, hi);
        match &mut cur {
            Some((cc, mn, mx)) if *cc == c => {
                *mn = mn.min(y);
                *mx = mx.max(y);
            }
            _ => {
                if let Some((cc, mn, mx)) = cur {
                    bins.push((x0 + (cc as f64 + 0.5) * w, mn, mx));
                }
                cur = Some((c, y, y));
            }
        }
    }
    if let Some((cc, mn, mx)) = cur {
        bins.push((x0 + (cc as f64 + 0.5) * w, mn, mx));
    }
    let mut out: Vec<(f64, f64)> = bins.iter().map(|b| (b.0, b.2)).collect();
    out.extend(bins.iter().rev().map(|b| (b.0, b.1)));
    out
}

/// A named, coloured curve.
type Line = (String, RGBColor, Vec<(f64, f64)>);

/// Rolling MAE over a window of labels (all keys, in time order).
fn rolling(path: &Path, series: &[Series], names: &[&str], seasonal: bool) -> crate::error::Result<()> {
    let n = series[0].rows.len();
    let window = (n / 40).clamp(10, 500);
    // Rolling mean absolute error of one forecast, sampled at most ~1500 times.
    let curve = |s: &Series, f: &dyn Fn(&crate::state::score::Scored) -> Option<f64>| -> Vec<(f64, f64)> {
        let mut out = Vec::new();
        let mut buf: std::collections::VecDeque<f64> = Default::default();
        let mut sum = 0.0;
        let step = (s.rows.len() / 1500).max(1);
        for (i, (_, r)) in s.rows.iter().enumerate() {
            let Some(e) = f(&r.scored) else { continue };
            buf.push_back(e);
            sum += e;
            if buf.len() > window {
                sum -= buf.pop_front().unwrap_or(0.0);
            }
            if buf.len() == window && i % step == 0 && r.time_ns != i64::MIN {
                out.push((r.time_ns as f64 / 1e6, sum / window as f64));
            }
        }
        out
    };
    let mut lines: Vec<Line> = Vec::new();
    lines.push(("persistence".into(), PERSISTENCE, curve(&series[0], &|s| Some((s.persistence - s.actual).abs()))));
    if seasonal {
        lines.push(("seasonal naive".into(), SEASONAL, curve(&series[0], &|s| s.seasonal.map(|v| (v - s.actual).abs()))));
    }
    for (i, s) in series.iter().enumerate() {
        lines.push((format!("model {}", names[i]), lane_colour(i), curve(s, &|s| Some((s.model - s.actual).abs()))));
    }
    let pts = || lines.iter().flat_map(|l| l.2.iter());
    let (x0, x1) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let root = BitMapBackend::new(path, (W, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(pe)?;
    if !x0.is_finite() {
        root.titled(&format!("Rolling MAE: fewer than {window} labels"), ("sans-serif", 20)).map_err(pe)?;
        root.present().map_err(pe)?;
        return Ok(());
    }
    let x1 = x1.max(x0 + 1.0);
    let yr = y_range(pts().map(|p| p.1).chain([0.0]));
    let caption = format!("Rolling MAE over the last {window} labels (all keys)");
    let mut chart = time_chart(&root, &caption, x0..x1, yr, "mean |error|", None)?;
    for (name, c, pts) in &lines {
        let c = *c;
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
            .map_err(pe)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present().map_err(pe)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-worked: four columns over [0, 4); points fall in columns 0, 0, 1 and 3
    /// (column 2 empty); values clamped to [-5, 5].
    #[test]
    fn envelope_by_columns() {
        let pts = [(0.1, 1.0), (0.9, -2.0), (1.5, 3.0), (3.99, 9.0)];
        let e = envelope(&pts, 0.0, 4.0, 4, -5.0, 5.0);
        assert_eq!(e, vec![(0.5, 1.0), (1.5, 3.0), (3.5, 5.0), (3.5, 5.0), (1.5, 3.0), (0.5, -2.0)]);
    }
}

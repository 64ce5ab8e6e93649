//! The report's error plots: residual histograms of the model and persistence, and
//! the keys where the model did worst against persistence.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

use super::{lane_colour, legend, pe, PERSISTENCE, W};
use crate::report::{Acc, Series};

/// Histograms of actual − forecast for the model and persistence, over the 1st–99th
/// percentile of both; values beyond go into the end bins (counted in the title).
pub(super) fn residuals(path: &Path, s: &Series, name: &str) -> crate::error::Result<()> {
    let model: Vec<f64> = s.rows.iter().map(|(_, r)| r.scored.actual - r.scored.model).collect();
    let pers: Vec<f64> = s.rows.iter().map(|(_, r)| r.scored.actual - r.scored.persistence).collect();
    let mut all: Vec<f64> = model.iter().chain(&pers).copied().filter(|v| v.is_finite()).collect();
    all.sort_by(f64::total_cmp);
    let q = |f: f64| all[((all.len() - 1) as f64 * f) as usize];
    let (lo, hi) = (q(0.01), q(0.99));
    let (lo, hi) = if hi > lo { (lo, hi) } else { (lo - 1.0, hi + 1.0) };
    const BINS: usize = 50;
    let w = (hi - lo) / BINS as f64;
    let mut outside = 0;
    let hist = |v: &[f64], outside: &mut usize| -> Vec<u32> {
        let mut h = vec![0u32; BINS];
        for x in v.iter().filter(|x| x.is_finite()) {
            if *x < lo || *x > hi {
                *outside += 1;
            }
            let b = (((x - lo) / w).floor().max(0.0) as usize).min(BINS - 1);
            h[b] += 1;
        }
        h
    };
    let hm = hist(&model, &mut outside);
    let hp = hist(&pers, &mut outside);
    let ymax = hm.iter().chain(&hp).copied().max().unwrap_or(1) as f64 * 1.08;
    let root = BitMapBackend::new(path, (W, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(pe)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Residuals (actual − forecast), model {name} vs persistence; {outside} beyond the 1st–99th percentile in the end bins"),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(lo..hi, 0.0..ymax)
        .map_err(pe)?;
    chart
        .configure_mesh()
        .x_desc("residual")
        .y_desc("labels")
        .x_labels(10)
        .x_label_formatter(&|x| format!("{x:.3e}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(pe)?;
    let c0 = lane_colour(0);
    for (h, c, label) in [(&hp, PERSISTENCE, "persistence".to_string()), (&hm, c0, format!("model {name}"))] {
        chart
            .draw_series(h.iter().enumerate().map(|(i, n)| {
                let x = lo + i as f64 * w;
                Rectangle::new([(x, 0.0), (x + w, *n as f64)], c.mix(0.45).filled())
            }))
            .map_err(pe)?
            .label(label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 18, y + 5)], c.mix(0.45).filled()));
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present().map_err(pe)?;
    Ok(())
}

/// The ten keys where the model does worst relative to persistence (Theil's U).
pub(super) fn worst_keys(path: &Path, s: &Series, name: &str) -> crate::error::Result<()> {
    let mut per: BTreeMap<&str, Acc> = BTreeMap::new();
    for (k, r) in &s.rows {
        per.entry(k).or_default().add(r);
    }
    let mut us: Vec<(&str, f64)> = per.iter().filter_map(|(k, a)| a.metrics().model.theil_u.map(|u| (*k, u))).collect();
    us.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    us.truncate(10);
    let root = BitMapBackend::new(path, (W, 120 + 40 * us.len().max(1) as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(pe)?;
    let xmax = us.iter().map(|u| u.1).fold(1.0f64, f64::max) * 1.1;
    let n = us.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("Worst keys for model {name}: Theil's U (RMSE / persistence RMSE; < 1 beats persistence)"), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(160)
        .build_cartesian_2d(0.0..xmax, 0.0..n as f64)
        .map_err(pe)?;
    let labels: Vec<String> = us.iter().map(|u| u.0.to_string()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc("Theil's U")
        .y_desc("key")
        .y_labels(n * 2 + 1)
        .y_label_formatter(&|y| {
            let i = (*y - 0.5).round();
            if (y - 0.5 - i).abs() < 1e-6 && i >= 0.0 {
                labels.get(n - 1 - i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(pe)?;
    chart
        .draw_series(us.iter().enumerate().map(|(i, (_, u))| {
            let y = (n - 1 - i) as f64;
            Rectangle::new([(0.0, y + 0.15), (*u, y + 0.85)], lane_colour(0).mix(0.7).filled())
        }))
        .map_err(pe)?;
    chart
        .draw_series(std::iter::once(PathElement::new(vec![(1.0, 0.0), (1.0, n as f64)], BLACK.stroke_width(1))))
        .map_err(pe)?;
    root.present().map_err(pe)?;
    Ok(())
}


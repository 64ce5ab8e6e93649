//! Scoring tracks against known truth (synthetic sequences): IoU and centre error
//! (arcsec) of the tracker, rotation-only and static boxes on every frame between
//! labels, overall and by hours since the track's last label; and the report (JSON,
//! plots, a frame with the boxes drawn).

use std::collections::BTreeMap;
use std::path::Path;

use crate::report::plots::{legend, pe};
use plotters::prelude::*;
use serde::Serialize;

use super::frame::Frame;
use super::track::BoxPx;
use super::tracker::Tracker;

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Score {
    pub mean_iou: f64,
    pub center_err_arcsec: f64,
    pub n: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HoursRow {
    /// Hours since the track's last label: [hours, hours + 1).
    pub hours: u32,
    pub tracker: Score,
    pub rotation_only: Score,
    #[serde(rename = "static")]
    pub r#static: Score,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Evaluation {
    pub tracker: Score,
    pub rotation_only: Score,
    #[serde(rename = "static")]
    pub r#static: Score,
    pub by_hours_since_label: Vec<HoursRow>,
}

/// The three boxes of one track on one frame, with the truth.
#[derive(Debug, Clone)]
pub struct Boxes {
    pub event_id: String,
    pub hours_since_label: f64,
    pub truth: BoxPx,
    pub tracker: BoxPx,
    pub rotation: BoxPx,
    pub fixed: BoxPx,
}

#[derive(Default)]
struct Acc {
    iou: f64,
    err: f64,
    n: u64,
}

impl Acc {
    fn score(&self) -> Score {
        let n = self.n.max(1) as f64;
        Score { mean_iou: self.iou / n, center_err_arcsec: self.err / n, n: self.n }
    }
}

#[derive(Default)]
pub struct Evaluator {
    all: [Acc; 3],
    by_hours: BTreeMap<u32, [Acc; 3]>,
}

fn centre_err(fr: &Frame, a: &BoxPx, b: &BoxPx) -> f64 {
    let (ax, ay) = fr.wcs.pix_to_hpc(a.cx, a.cy);
    let (bx, by) = fr.wcs.pix_to_hpc(b.cx, b.cy);
    ((ax - bx).powi(2) + (ay - by).powi(2)).sqrt()
}

impl Evaluator {
    /// Scores every track whose event has a true box on this frame and whose last
    /// label is older than the frame (frames carrying a label are not scored: every
    /// method is re-anchored there). Call after `on_frame`, before the frame's labels.
    pub fn observe(&mut self, tr: &Tracker, fr: &Frame, truth: &BTreeMap<(i64, String), [f64; 4]>) -> Vec<Boxes> {
        let mut out = Vec::new();
        for t in &tr.tracks {
            if t.last_label_ms >= fr.time_ms {
                continue;
            }
            let Some(b) = truth.get(&(fr.time_ms, t.event_id.clone())) else { continue };
            let truth_box = BoxPx::from_corners(*b);
            let hours = (fr.time_ms - t.last_label_ms) as f64 / 3_600_000.0;
            let row = self.by_hours.entry(hours.floor() as u32).or_default();
            for (k, bx) in [t.tracker, t.rotation, t.fixed].iter().enumerate() {
                let (iou, err) = (bx.iou(&truth_box), centre_err(fr, bx, &truth_box));
                for acc in [&mut self.all[k], &mut row[k]] {
                    acc.iou += iou;
                    acc.err += err;
                    acc.n += 1;
                }
            }
            out.push(Boxes { event_id: t.event_id.clone(), hours_since_label: hours, truth: truth_box, tracker: t.tracker, rotation: t.rotation, fixed: t.fixed });
        }
        out
    }

    pub fn summary(&self) -> Evaluation {
        Evaluation {
            tracker: self.all[0].score(),
            rotation_only: self.all[1].score(),
            r#static: self.all[2].score(),
            by_hours_since_label: self
                .by_hours
                .iter()
                .map(|(h, a)| HoursRow { hours: *h, tracker: a[0].score(), rotation_only: a[1].score(), r#static: a[2].score() })
                .collect(),
        }
    }
}


/// Writes `tracking.json`, `iou_by_hours.png`, `center_error_by_hours.png` and
/// `frame.png` (the frame furthest from its labels, with the boxes) into `dir`.
pub fn write_report(dir: &Path, e: &Evaluation, frame: Option<(&Frame, &[Boxes])>) -> crate::error::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("tracking.json"), serde_json::to_string_pretty(e)? + "\n")?;
    crate::report::plots::register_fonts();
    let colours = [RGBColor(214, 39, 40), RGBColor(31, 119, 180), RGBColor(120, 120, 120)];
    for (file, title, ylabel, pick) in [
        ("iou_by_hours.png", "Mean IoU with the true box, by hours since the last label", "mean IoU", 0),
        ("center_error_by_hours.png", "Centre error (arcsec), by hours since the last label", "centre error (arcsec)", 1),
    ] {
        let v = |s: &Score| if pick == 0 { s.mean_iou } else { s.center_err_arcsec };
        let rows = &e.by_hours_since_label;
        let xmax = rows.iter().map(|r| r.hours as f64 + 1.0).fold(1.0, f64::max);
        let ymax = rows.iter().flat_map(|r| [v(&r.tracker), v(&r.rotation_only), v(&r.r#static)]).fold(1.0, f64::max) * 1.05;
        let path = dir.join(file);
        let root = BitMapBackend::new(&path, (1000, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(pe)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..xmax, 0.0..ymax)
            .map_err(pe)?;
        chart.configure_mesh().x_desc("hours since the track's last label").y_desc(ylabel).label_style(("sans-serif", 13)).draw().map_err(pe)?;
        for (k, name) in ["tracker", "rotation only", "static"].iter().enumerate() {
            let c = colours[k];
            let pts: Vec<(f64, f64)> = rows
                .iter()
                .map(|r| (r.hours as f64 + 0.5, v([&r.tracker, &r.rotation_only, &r.r#static][k])))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(pe)?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
            chart.draw_series(pts.iter().map(|p| Circle::new(*p, 3, c.filled()))).map_err(pe)?;
        }
        legend(&mut chart, if pick == 0 { SeriesLabelPosition::LowerLeft } else { SeriesLabelPosition::UpperLeft })?;
        root.present().map_err(pe)?;
    }
    if let Some((fr, boxes)) = frame {
        draw_frame(&dir.join("frame.png"), fr, boxes)?;
    }
    Ok(())
}

/// The frame (log scale, north up) with true (green), tracker (red), rotation-only
/// (blue) and static (grey) boxes.
fn draw_frame(path: &Path, fr: &Frame, boxes: &[Boxes]) -> crate::error::Result<()> {
    let scale = (768 / fr.width.max(1)).max(1) as u32;
    let (w, h) = (fr.width as u32 * scale, fr.height as u32 * scale);
    let root = BitMapBackend::new(path, (w, h + 40)).into_drawing_area();
    root.fill(&BLACK).map_err(pe)?;
    let (title, img) = root.split_vertically(40);
    let hours = boxes.iter().map(|b| b.hours_since_label).fold(0.0, f64::max);
    title
        .titled(
            &format!("{}  ({:.1} h after the last label)  green: truth, red: tracker, blue: rotation only, grey: static", crate::source::file::rfc3339_ms(fr.time_ms), hours),
            ("sans-serif", 14).into_font().color(&WHITE),
        )
        .map_err(pe)?;
    let logs: Vec<f32> = fr.pixels.iter().map(|v| v.max(0.0).ln_1p()).collect();
    let mut sorted = logs.clone();
    sorted.sort_by(f32::total_cmp);
    let (lo, hi) = (sorted[sorted.len() / 100], sorted[sorted.len() * 999 / 1000].max(sorted[sorted.len() / 100] + 1e-3));
    for y in 0..fr.height {
        for x in 0..fr.width {
            let v = ((logs[y * fr.width + x] - lo) / (hi - lo)).clamp(0.0, 1.0);
            let c = RGBColor((255.0 * v) as u8, (220.0 * v * v) as u8, (120.0 * v * v * v) as u8);
            // Row 0 is south: draw it at the bottom.
            let (px, py) = (x as i32 * scale as i32, (fr.height - 1 - y) as i32 * scale as i32);
            img.draw(&Rectangle::new([(px, py), (px + scale as i32, py + scale as i32)], c.filled())).map_err(pe)?;
        }
    }
    let rect = |b: &BoxPx, c: RGBColor| {
        let k = b.corners();
        let s = scale as f64;
        let (x0, x1) = ((k[0] + 0.5) * s, (k[2] + 0.5) * s);
        let (y0, y1) = ((fr.height as f64 - 0.5 - k[3]) * s, (fr.height as f64 - 0.5 - k[1]) * s);
        Rectangle::new([(x0 as i32, y0 as i32), (x1 as i32, y1 as i32)], c.stroke_width(2))
    };
    for b in boxes {
        img.draw(&rect(&b.fixed, RGBColor(150, 150, 150))).map_err(pe)?;
        img.draw(&rect(&b.rotation, RGBColor(60, 140, 255))).map_err(pe)?;
        img.draw(&rect(&b.tracker, RGBColor(255, 40, 40))).map_err(pe)?;
        img.draw(&rect(&b.truth, RGBColor(40, 255, 60))).map_err(pe)?;
    }
    root.present().map_err(pe)?;
    Ok(())
}

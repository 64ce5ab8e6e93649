//! Boxes, event types, overlap (IoU) and the crops a tracker looks at: a square
//! patch of `context` × the box around it, resampled to S × S and normalised.

use serde::{Deserialize, Serialize};

use super::frame::{bilinear, Frame};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum EventType {
    #[serde(rename = "AR")]
    Ar,
    #[serde(rename = "CH")]
    Ch,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Ar => "AR",
            EventType::Ch => "CH",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "AR" => Some(EventType::Ar),
            "CH" => Some(EventType::Ch),
            _ => None,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A box by centre and size, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BoxPx {
    pub cx: f64,
    pub cy: f64,
    pub w: f64,
    pub h: f64,
}

impl BoxPx {
    pub fn corners(&self) -> [f64; 4] {
        [self.cx - self.w / 2.0, self.cy - self.h / 2.0, self.cx + self.w / 2.0, self.cy + self.h / 2.0]
    }

    /// Corners [x0, y0, x1, y1] → box.
    pub fn from_corners(b: [f64; 4]) -> Self {
        BoxPx { cx: (b[0] + b[2]) / 2.0, cy: (b[1] + b[3]) / 2.0, w: b[2] - b[0], h: b[3] - b[1] }
    }

    /// The box moved by Laplace(0, `shift`) × its size on each axis and its sides
    /// scaled by exp(Laplace(0, `size`)) (GOTURN's motion model).
    pub fn perturbed(&self, rng: &mut crate::model::rand::Draws, shift: f64, size: f64) -> BoxPx {
        BoxPx {
            cx: self.cx + rng.laplace(shift) * self.w,
            cy: self.cy + rng.laplace(shift) * self.h,
            w: self.w * rng.laplace(size).exp(),
            h: self.h * rng.laplace(size).exp(),
        }
    }

    /// Intersection over union.
    pub fn iou(&self, o: &BoxPx) -> f64 {
        let (a, b) = (self.corners(), o.corners());
        let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
        let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
        let inter = iw * ih;
        let union = self.w * self.h + o.w * o.h - inter;
        if union > 0.0 {
            inter / union
        } else {
            0.0
        }
    }

    /// The correction that turns `self` into `target`, in `self`'s units:
    /// (Δx/w, Δy/h, ln(w'/w), ln(h'/h)).
    pub fn delta_to(&self, target: &BoxPx) -> [f32; 4] {
        [
            ((target.cx - self.cx) / self.w) as f32,
            ((target.cy - self.cy) / self.h) as f32,
            (target.w / self.w).ln() as f32,
            (target.h / self.h).ln() as f32,
        ]
    }

    /// Applies a correction from [`BoxPx::delta_to`] (size changes bounded to ×/÷ 2).
    pub fn apply(&self, d: [f32; 4]) -> BoxPx {
        let c = |v: f32| (v as f64).clamp(-0.7, 0.7);
        BoxPx {
            cx: self.cx + d[0].clamp(-1.0, 1.0) as f64 * self.w,
            cy: self.cy + d[1].clamp(-1.0, 1.0) as f64 * self.h,
            w: self.w * c(d[2]).exp(),
            h: self.h * c(d[3]).exp(),
        }
    }
}

/// The S × S crop of `frame` covering `context` times the box about its centre,
/// as log intensities standardised by `norm` (mean, std) — pass `None` to use the
/// crop's own.
pub fn crop(frame: &Frame, b: &BoxPx, s: usize, context: f64, norm: Option<(f32, f32)>) -> (Vec<f32>, (f32, f32)) {
    let (cw, ch) = (b.w.max(2.0) * context, b.h.max(2.0) * context);
    let mut out = Vec::with_capacity(s * s);
    for j in 0..s {
        for i in 0..s {
            // Integer coordinates are pixel centres.
            let x = b.cx - cw / 2.0 + (i as f64 + 0.5) * cw / s as f64;
            let y = b.cy - ch / 2.0 + (j as f64 + 0.5) * ch / s as f64;
            let v = bilinear(&frame.pixels, frame.width, frame.height, x, y);
            out.push(v.max(0.0).ln_1p());
        }
    }
    let (m, sd) = norm.unwrap_or_else(|| {
        let m = out.iter().sum::<f32>() / out.len() as f32;
        let var = out.iter().map(|v| (v - m) * (v - m)).sum::<f32>() / out.len() as f32;
        (m, var.sqrt().max(1e-3))
    });
    for v in &mut out {
        *v = (*v - m) / sd;
    }
    (out, (m, sd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::solar::wcs::SolarWcs;

    /// By hand: two 2×2 boxes overlapping in a 1×2 strip: IoU = 2 / (4 + 4 − 2) = 1/3.
    #[test]
    fn iou_and_deltas() {
        let a = BoxPx { cx: 1.0, cy: 1.0, w: 2.0, h: 2.0 };
        let b = BoxPx { cx: 2.0, cy: 1.0, w: 2.0, h: 2.0 };
        assert!((a.iou(&b) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(a.iou(&a), 1.0);
        assert_eq!(a.iou(&BoxPx { cx: 10.0, ..a }), 0.0);
        let t = BoxPx { cx: 2.0, cy: 0.5, w: 3.0, h: 1.0 };
        let d = a.delta_to(&t);
        assert_eq!(d[0], 0.5);
        assert_eq!(d[1], -0.25);
        let back = a.apply(d);
        assert!((back.cx - t.cx).abs() < 1e-6 && (back.w - t.w).abs() < 1e-6 && (back.h - t.h).abs() < 1e-6);
    }

    /// A crop of a linear ramp image, by hand: a 4×4 crop with context 1 of the box
    /// centred at (5, 5) with size 4 samples pixel centres 3.5, 4.5, 5.5, 6.5 → the
    /// ramp value v = x there, i.e. ln(1 + x) before standardising.
    #[test]
    fn crop_of_a_ramp() {
        let w = 10;
        let px: Vec<f32> = (0..w * w).map(|i| (i % w) as f32).collect();
        let fr = Frame {
            time_ms: 0,
            instrument: String::new(),
            wavelength: 0.0,
            width: w,
            height: w,
            wcs: SolarWcs { crpix1: 5.0, crpix2: 5.0, cdelt1: 1.0, cdelt2: 1.0, crval1: 0.0, crval2: 0.0, crota2: 0.0, rsun_arcsec: 4.0, b0_deg: 0.0, l0_deg: 0.0, dsun_m: 1.0 },
            pixels: px,
        };
        let (c, _) = crop(&fr, &BoxPx { cx: 5.0, cy: 5.0, w: 4.0, h: 4.0 }, 4, 1.0, Some((0.0, 1.0)));
        let row: Vec<f32> = c[..4].to_vec();
        let want: Vec<f32> = [3.5f32, 4.5, 5.5, 6.5].iter().map(|x| x.ln_1p()).collect();
        for (a, b) in row.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6, "{row:?} vs {want:?}");
        }
    }
}

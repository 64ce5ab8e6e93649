//! A solar image's world coordinates: pixel ↔ helioprojective (arcsec) through the
//! FITS WCS keywords (CRPIX, CDELT, CRVAL, CROTA2), and helioprojective ↔ Stonyhurst
//! heliographic (lat, lon in degrees) for an observer at distance D and latitude B0
//! (Thompson 2006, "Coordinate systems for solar image data", A&A 449, 791).
//!
//! Pixels are 0-based (column x, row y, row 0 = the first FITS row); FITS pixel
//! (1, 1) is our (0, 0).

use serde::{Deserialize, Serialize};

/// Mean solar radius in metres (IAU 2015 nominal).
pub const RSUN_M: f64 = 695_700_000.0;
const ARCSEC: f64 = std::f64::consts::PI / 180.0 / 3600.0;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SolarWcs {
    /// FITS reference pixel (1-based).
    pub crpix1: f64,
    pub crpix2: f64,
    /// Plate scale, arcsec per pixel.
    pub cdelt1: f64,
    pub cdelt2: f64,
    /// Helioprojective coordinates of the reference pixel, arcsec.
    pub crval1: f64,
    pub crval2: f64,
    /// Image rotation (degrees), CROTA2.
    pub crota2: f64,
    /// Apparent solar radius, arcsec.
    pub rsun_arcsec: f64,
    /// Observer heliographic latitude B0 and Stonyhurst longitude, degrees.
    pub b0_deg: f64,
    pub l0_deg: f64,
    /// Observer–Sun distance, metres.
    pub dsun_m: f64,
}

impl SolarWcs {
    /// A WCS with the observer distance implied by the apparent radius.
    pub fn with_distance_from_radius(mut self) -> Self {
        if self.dsun_m.is_nan() || self.dsun_m <= 0.0 {
            self.dsun_m = RSUN_M / (self.rsun_arcsec * ARCSEC).sin();
        }
        self
    }

    /// Solar radius in pixels (x scale).
    pub fn rsun_px(&self) -> f64 {
        self.rsun_arcsec / self.cdelt1.abs()
    }

    /// Pixel (0-based) → helioprojective (Tx, Ty) in arcsec.
    pub fn pix_to_hpc(&self, x: f64, y: f64) -> (f64, f64) {
        let dx = (x + 1.0 - self.crpix1) * self.cdelt1;
        let dy = (y + 1.0 - self.crpix2) * self.cdelt2;
        let (s, c) = self.crota2.to_radians().sin_cos();
        (self.crval1 + c * dx - s * dy, self.crval2 + s * dx + c * dy)
    }

    /// Helioprojective (arcsec) → pixel (0-based).
    pub fn hpc_to_pix(&self, tx: f64, ty: f64) -> (f64, f64) {
        let (dx, dy) = (tx - self.crval1, ty - self.crval2);
        let (s, c) = self.crota2.to_radians().sin_cos();
        let (ux, uy) = (c * dx + s * dy, -s * dx + c * dy);
        (ux / self.cdelt1 + self.crpix1 - 1.0, uy / self.cdelt2 + self.crpix2 - 1.0)
    }

    /// Helioprojective (arcsec) → Stonyhurst (lat, lon) in degrees; `None` off the disk.
    pub fn hpc_to_hg(&self, tx: f64, ty: f64) -> Option<(f64, f64)> {
        let (ax, ay) = (tx * ARCSEC, ty * ARCSEC);
        let d0 = self.dsun_m;
        let q = d0 * ay.cos() * ax.cos();
        let disc = q * q - d0 * d0 + RSUN_M * RSUN_M;
        if disc < 0.0 {
            return None;
        }
        let d = q - disc.sqrt();
        let x = d * ay.cos() * ax.sin();
        let y = d * ay.sin();
        let z = d0 - d * ay.cos() * ax.cos();
        let (sb, cb) = self.b0_deg.to_radians().sin_cos();
        let r = (x * x + y * y + z * z).sqrt();
        let lat = ((y * cb + z * sb) / r).asin().to_degrees();
        let lon = self.l0_deg + x.atan2(z * cb - y * sb).to_degrees();
        Some((lat, lon))
    }

    /// Stonyhurst (lat, lon) → helioprojective (arcsec); `None` on the far side.
    pub fn hg_to_hpc(&self, lat: f64, lon: f64) -> Option<(f64, f64)> {
        let (sl, cl) = lat.to_radians().sin_cos();
        let (sp, cp) = (lon - self.l0_deg).to_radians().sin_cos();
        let (sb, cb) = self.b0_deg.to_radians().sin_cos();
        let x = RSUN_M * cl * sp;
        let y = RSUN_M * (sl * cb - cl * cp * sb);
        let z = RSUN_M * (sl * sb + cl * cp * cb);
        // Visible when the point faces the observer: z > R²/D.
        if z <= RSUN_M * RSUN_M / self.dsun_m {
            return None;
        }
        let zz = self.dsun_m - z;
        let dist = (x * x + y * y + zz * zz).sqrt();
        Some((x.atan2(zz) / ARCSEC, (y / dist).asin() / ARCSEC))
    }

    /// Pixel → Stonyhurst (lat, lon); `None` off the disk.
    pub fn pix_to_hg(&self, x: f64, y: f64) -> Option<(f64, f64)> {
        let (tx, ty) = self.pix_to_hpc(x, y);
        self.hpc_to_hg(tx, ty)
    }

    /// Stonyhurst → pixel; `None` on the far side.
    pub fn hg_to_pix(&self, lat: f64, lon: f64) -> Option<(f64, f64)> {
        let (tx, ty) = self.hg_to_hpc(lat, lon)?;
        Some(self.hpc_to_pix(tx, ty))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header of ../shared/data/solar/aia_171_level1.fits (AIA 171, 2011-02-15).
    pub fn aia() -> SolarWcs {
        SolarWcs {
            crpix1: 64.5,
            crpix2: 64.5,
            cdelt1: 19.183648,
            cdelt2: 19.183648,
            crval1: -4.532172209851069,
            crval2: 2.865574805180813,
            crota2: 0.0,
            rsun_arcsec: 971.812597,
            b0_deg: -6.820544,
            l0_deg: 0.0,
            dsun_m: 147_724_815_128.0,
        }
    }

    #[test]
    fn disk_centre_and_limb() {
        let w = aia();
        // The Sun's centre is at Tx = Ty = 0: heliographic latitude B0, longitude L0.
        let (lat, lon) = w.hpc_to_hg(0.0, 0.0).unwrap();
        assert!((lat - w.b0_deg).abs() < 1e-9 && lon.abs() < 1e-9, "{lat} {lon}");
        // … and back to Tx = Ty = 0.
        let (tx, ty) = w.hg_to_hpc(w.b0_deg, 0.0).unwrap();
        assert!(tx.abs() < 1e-6 && ty.abs() < 1e-6);
        // The apparent radius follows from the distance: asin(R/D) = 971.38″, within
        // 0.5″ of the header's RSUN_OBS (971.81″; AIA's radius differs by 0.05 %).
        let limb = (RSUN_M / w.dsun_m).asin() / ARCSEC;
        assert!((limb - w.rsun_arcsec).abs() < 0.5, "{limb}");
        // Just inside the west limb on the equator-ish line: longitude near 90°;
        // just outside: off disk.
        let (_, lon) = w.hpc_to_hg(limb * 0.99999, 0.0).unwrap();
        assert!((lon - 90.0).abs() < 1.0, "{lon}");
        assert!(w.hpc_to_hg(limb * 1.001, 0.0).is_none());
        // The far side is not visible.
        assert!(w.hg_to_hpc(0.0, 120.0).is_none());
        // Reference pixel (64.5, 64.5) 1-based = (63.5, 63.5) 0-based ↔ CRVAL.
        let (tx, ty) = w.pix_to_hpc(63.5, 63.5);
        assert!((tx - w.crval1).abs() < 1e-9 && (ty - w.crval2).abs() < 1e-9);
    }

    #[test]
    fn round_trips() {
        let w = SolarWcs { crota2: 0.3, ..aia() };
        for (lat, lon) in [(0.0, 0.0), (20.0, -35.0), (-45.0, 60.0), (70.0, 10.0)] {
            let (x, y) = w.hg_to_pix(lat, lon).unwrap();
            let (la, lo) = w.pix_to_hg(x, y).unwrap();
            assert!((la - lat).abs() < 1e-7 && (lo - lon).abs() < 1e-7, "{lat},{lon} → {la},{lo}");
        }
    }

    /// By hand, B0 = 0: a point at longitude 30° on the equator lies R·sin 30° = R/2
    /// west of the Sun's centre and R·cos 30° nearer the observer, so
    /// Tx = atan(0.5 R / (D − 0.8660254 R)) = 487.68″ for D = 147,724,815,128 m
    /// (python: math.atan), a little over half the apparent radius.
    #[test]
    fn thirty_degrees_west() {
        let w = SolarWcs { b0_deg: 0.0, ..aia() };
        let (tx, ty) = w.hg_to_hpc(0.0, 30.0).unwrap();
        let expected = (0.5 * RSUN_M / (w.dsun_m - 0.866_025_4 * RSUN_M)).atan() / ARCSEC;
        assert!((tx - expected).abs() < 0.01, "{tx} vs {expected}");
        assert!((tx - 487.683).abs() < 0.01, "{tx}");
        assert!(ty.abs() < 1e-9);
    }
}

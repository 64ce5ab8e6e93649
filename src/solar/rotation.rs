//! Solar differential rotation (Snodgrass): how far a feature at latitude φ turns in
//! Δt, sidereal and as seen from Earth (synodic), and moving a heliographic position.

/// Snodgrass & Ulrich (1990) sidereal rate in degrees per day:
/// ω(φ) = 14.713 − 2.396 sin²φ − 1.787 sin⁴φ.
pub fn snodgrass_deg_per_day(lat_deg: f64) -> f64 {
    let s2 = lat_deg.to_radians().sin().powi(2);
    14.713 - 2.396 * s2 - 1.787 * s2 * s2
}

/// Earth's mean orbital rate (deg/day): a sidereal rate minus this is the rate seen
/// from Earth, i.e. in Stonyhurst longitude.
pub const EARTH_ORBIT_DEG_PER_DAY: f64 = 360.0 / 365.256_363;

/// Change of Stonyhurst longitude (degrees) of a feature at `lat_deg` over `dt_days`.
pub fn synodic_shift_deg(lat_deg: f64, dt_days: f64) -> f64 {
    (snodgrass_deg_per_day(lat_deg) - EARTH_ORBIT_DEG_PER_DAY) * dt_days
}

/// Moves a Stonyhurst (lat, lon) by the differential rotation over `dt_days`.
pub fn rotate(lat_deg: f64, lon_deg: f64, dt_days: f64) -> (f64, f64) {
    (lat_deg, lon_deg + synodic_shift_deg(lat_deg, dt_days))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// By hand: at the equator sin φ = 0, so ω = 14.713 deg/day; one day from Earth
    /// 14.713 − 0.985609 = 13.727391 deg. At 30°: sin² = 0.25, sin⁴ = 0.0625,
    /// ω = 14.713 − 0.599 − 0.1116875 = 14.0023125.
    #[test]
    fn rates_by_hand() {
        assert!((snodgrass_deg_per_day(0.0) - 14.713).abs() < 1e-12);
        assert!((snodgrass_deg_per_day(30.0) - 14.002_312_5).abs() < 1e-9);
        assert!((snodgrass_deg_per_day(-30.0) - 14.002_312_5).abs() < 1e-9);
        assert!((synodic_shift_deg(0.0, 1.0) - 13.727_391).abs() < 1e-5);
        let (lat, lon) = rotate(30.0, -10.0, 0.5);
        assert_eq!(lat, 30.0);
        assert!((lon - (-10.0 + 0.5 * (14.002_312_5 - 0.985_609))).abs() < 1e-5);
    }
}

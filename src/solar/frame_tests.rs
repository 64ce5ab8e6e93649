//! Tests of frame decoding (FITS, Arrow IPC) and its refusals.

use super::*;

fn read(p: &str) -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(p)).unwrap()
}

/// Values written down from astropy 8.0.2 (`fits.open(f)[0].data`, indexed
/// [row, column]): aia_171_level1.fits min −1.75, max 4212.75, mean
/// 250.32318115234375, [0,0] = −1.25, [64,64] = 243.5, [10,100] = 9.5.
#[test]
fn aia_level1_against_astropy() {
    let bytes = read("data/solar/aia_171_level1.fits");
    let f = decode(&bytes, 1 << 24).unwrap();
    assert_eq!((f.width, f.height), (128, 128));
    let px = |row: usize, col: usize| f.pixels[row * f.width + col];
    assert_eq!(px(0, 0), -1.25);
    assert_eq!(px(64, 64), 243.5);
    assert_eq!(px(10, 100), 9.5);
    let (mn, mx) = f.pixels.iter().fold((f32::MAX, f32::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
    assert_eq!((mn, mx), (-1.75, 4212.75));
    let mean = f.pixels.iter().map(|v| *v as f64).sum::<f64>() / f.pixels.len() as f64;
    assert!((mean - 250.323_181_152_343_75).abs() < 1e-9, "{mean}");
    // 2011-02-15T00:00:00.34 = 1297728000340 ms.
    assert_eq!(f.time_ms, 1_297_728_000_340);
    assert_eq!(f.wcs.rsun_arcsec, 971.812597);
    assert_eq!(f.wcs.b0_deg, -6.820544);
    assert_eq!(f.wavelength, 171.0);
}

/// EIT: astropy gives min 0, max 1991, mean 911.5362854003906, [0,0] = 853.5;
/// its SOLAR_R (372.27 px) describes the unbinned 1024² image: rescaled ×8.
#[test]
#[cfg_attr(not(shared_data), ignore = "needs ../shared/data (the workplace's real data files)")]
fn eit_against_astropy() {
    let bytes = read("../shared/data/solar/EIT/efz20040301.000010_s.fits");
    let f = decode(&bytes, 1 << 24).unwrap();
    assert_eq!(f.pixels[0], 853.5);
    let mean = f.pixels.iter().map(|v| *v as f64).sum::<f64>() / f.pixels.len() as f64;
    assert!((mean - 911.536_285_400_390_6).abs() < 1e-9, "{mean}");
    assert!((f.wcs.cdelt1 - 2.63 * 8.0).abs() < 1e-12);
    assert!((f.wcs.rsun_px() - 372.27 / 8.0).abs() < 1e-9);
    assert!((f.wcs.b0_deg + 7.22).abs() < 1e-12);
}

/// Hand-made FITS files of each BITPIX with BZERO/BSCALE: 2×1 images.
#[test]
fn bitpix_and_scaling() {
    fn card(s: &str) -> String {
        format!("{s:<80}")
    }
    fn file(bitpix: i32, data: &[u8], extra: &[&str]) -> Vec<u8> {
        let mut h = String::new();
        for c in ["SIMPLE  =                    T", &format!("BITPIX  = {bitpix:>20}"), "NAXIS   =                    2", "NAXIS1  =                    2", "NAXIS2  =                    1"] {
            h += &card(c);
        }
        for c in extra {
            h += &card(c);
        }
        for c in ["DATE-OBS= '2011-02-15T00:00:00'", "CRPIX1  =                  1.5", "CRPIX2  =                  1.0", "CDELT1  =                  0.6", "RSUN_OBS=                970.0", "END"] {
            h += &card(c);
        }
        let mut out = h.into_bytes();
        out.resize(2880, b' ');
        out.extend_from_slice(data);
        out.resize(5760, 0);
        out
    }
    let i16s: Vec<u8> = [-2i16, 300].iter().flat_map(|v| v.to_be_bytes()).collect();
    let f = decode(&file(16, &i16s, &["BZERO   =                 10.0", "BSCALE  =                  0.5"]), 100).unwrap();
    assert_eq!(f.pixels, vec![9.0, 160.0]);
    let f32s: Vec<u8> = [1.5f32, -2.25].iter().flat_map(|v| v.to_be_bytes()).collect();
    assert_eq!(decode(&file(-32, &f32s, &[]), 100).unwrap().pixels, vec![1.5, -2.25]);
    let f64s: Vec<u8> = [1e3f64, -0.5].iter().flat_map(|v| v.to_be_bytes()).collect();
    assert_eq!(decode(&file(-64, &f64s, &[]), 100).unwrap().pixels, vec![1000.0, -0.5]);
    // Too many pixels, truncated, garbage.
    assert_eq!(decode(&file(-64, &f64s, &[]), 1).unwrap_err().reason, "frame_too_large");
    let mut cut = file(-64, &f64s, &[]);
    cut.truncate(2880 + 4);
    assert_eq!(decode(&cut, 100).unwrap_err().reason, "frame_unreadable");
    assert_eq!(decode(b"hello", 100).unwrap_err().reason, "frame_unreadable");
}

#[test]
fn ipc_round_trip() {
    let fr = Frame {
        time_ms: 1_297_728_000_000,
        instrument: "AIA".into(),
        wavelength: 171.0,
        width: 3,
        height: 2,
        wcs: SolarWcs { crpix1: 2.0, crpix2: 1.5, cdelt1: 10.0, cdelt2: 10.0, crval1: 0.0, crval2: 0.0, crota2: 0.0, rsun_arcsec: 960.0, b0_deg: 1.0, l0_deg: 0.0, dsun_m: 0.0 }
            .with_distance_from_radius(),
        pixels: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.5],
    };
    let bytes = encode_ipc(&fr).unwrap();
    assert_eq!(decode(&bytes, 100).unwrap(), fr);
    assert_eq!(decode(&bytes, 5).unwrap_err().reason, "frame_too_large");
}

//! One solar image and its WCS, decoded from a frames-topic message: either the
//! bytes of an uncompressed FITS file (read with the `fitsrs` crate; BITPIX 8, 16,
//! 32, −32, −64; BZERO/BSCALE applied) or an Arrow IPC stream holding one row (see
//! `schemas/solar-frame.json`). Also encodes frames as Arrow IPC.

use std::io::Cursor;
use std::sync::Arc;

use arrow::array::{Array, AsArray, BinaryArray, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, TimeUnit, TimestampMillisecondType};
use fitsrs::card::Value;
use fitsrs::{Fits, HDU, Pixels};

use super::wcs::SolarWcs;

/// A decoded frame. Pixels are row-major, row 0 = the first FITS row (south when
/// the image is north-up).
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub time_ms: i64,
    pub instrument: String,
    pub wavelength: f64,
    pub width: usize,
    pub height: usize,
    pub wcs: SolarWcs,
    pub pixels: Vec<f32>,
}

/// Why a frame could not be used.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameError {
    /// Dead-letter reason: `frame_unreadable`, `frame_too_large`, `frame_no_wcs`.
    pub reason: &'static str,
    pub detail: String,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

fn bad(reason: &'static str, detail: impl Into<String>) -> FrameError {
    FrameError { reason, detail: detail.into() }
}

fn unreadable(detail: String) -> FrameError {
    bad("frame_unreadable", detail)
}

impl Frame {
    /// Pixel value at (x, y) with bilinear interpolation; 0 outside.
    pub fn sample(&self, x: f64, y: f64) -> f32 {
        bilinear(&self.pixels, self.width, self.height, x, y)
    }
}

/// Bilinear sample of a row-major image; 0 outside.
pub fn bilinear(px: &[f32], w: usize, h: usize, x: f64, y: f64) -> f32 {
    if !(x >= 0.0 && y >= 0.0 && x <= (w - 1) as f64 && y <= (h - 1) as f64) {
        return 0.0;
    }
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = ((x - x0 as f64) as f32, (y - y0 as f64) as f32);
    let a = px[y0 * w + x0] * (1.0 - fx) + px[y0 * w + x1] * fx;
    let b = px[y1 * w + x0] * (1.0 - fx) + px[y1 * w + x1] * fx;
    a * (1.0 - fy) + b * fy
}

/// Decodes a frames-topic message (FITS or Arrow IPC), refusing more than
/// `max_pixels` pixels.
///
/// The FITS and Arrow IPC readers are third-party code that can panic on hostile
/// bytes (arrow's IPC reader slices buffers past their end on some corrupt headers,
/// found by the fuzz tests): a panic is caught and becomes `frame_unreadable`, so a
/// bad frame is a dead letter, never a crashed daemon.
pub fn decode(bytes: &[u8], max_pixels: usize) -> Result<Frame, FrameError> {
    let read = || {
        if bytes.starts_with(b"SIMPLE  =") {
            decode_fits(bytes, max_pixels)
        } else if bytes.starts_with(&[0xff, 0xff, 0xff, 0xff]) {
            decode_ipc(bytes, max_pixels)
        } else {
            Err(bad("frame_unreadable", "neither a FITS file (SIMPLE card) nor an Arrow IPC stream"))
        }
    };
    std::panic::catch_unwind(read).unwrap_or_else(|p| {
        let what = p.downcast_ref::<String>().map(String::as_str).or_else(|| p.downcast_ref::<&str>().copied()).unwrap_or("a panic");
        Err(unreadable(format!("the reader failed on corrupt data: {what}")))
    })
}

fn num(h: &fitsrs::hdu::header::Header<fitsrs::hdu::header::extension::image::Image>, keys: &[&str]) -> Option<f64> {
    keys.iter().find_map(|k| match h.get(k)? {
        Value::Integer { value, .. } => Some(*value as f64),
        Value::Float { value, .. } => Some(*value),
        Value::String { value, .. } => value.trim().parse().ok(),
        _ => None,
    })
}

fn text(h: &fitsrs::hdu::header::Header<fitsrs::hdu::header::extension::image::Image>, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| match h.get(k)? {
        Value::String { value, .. } => Some(value.trim().to_string()),
        _ => None,
    })
}

/// FITS time strings (`2011-02-15T00:00:00.34`, with or without `Z`) → ms.
fn fits_time_ms(s: &str) -> Option<i64> {
    let s = s.trim().trim_end_matches('Z');
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok().map(|t| t.and_utc().timestamp_millis())
}

fn decode_fits(bytes: &[u8], max_pixels: usize) -> Result<Frame, FrameError> {
    let mut fits = Fits::from_reader(Cursor::new(bytes));
    let hdu = match fits.next() {
        Some(Ok(HDU::Primary(h))) => h,
        Some(Ok(_)) => return Err(bad("frame_unreadable", "the first HDU is not a primary image")),
        Some(Err(e)) => return Err(bad("frame_unreadable", format!("FITS: {e}"))),
        None => return Err(bad("frame_unreadable", "no HDU")),
    };
    let header = hdu.get_header();
    let x = header.get_xtension();
    let naxis = x.get_naxis();
    if naxis != 2 {
        return Err(bad("frame_unreadable", format!("NAXIS = {naxis}, expected a 2-d image (tile-compressed images are not supported)")));
    }
    let (w, h) = (*x.get_naxisn(1).unwrap_or(&0) as usize, *x.get_naxisn(2).unwrap_or(&0) as usize);
    if w == 0 || h == 0 {
        return Err(bad("frame_unreadable", "empty image"));
    }
    if w.saturating_mul(h) > max_pixels {
        return Err(bad("frame_too_large", format!("{w}×{h} pixels, more than the configured {max_pixels}")));
    }
    let need = w * h * (x.get_bitpix() as i32).unsigned_abs() as usize / 8;
    let have = bytes.len().saturating_sub(hdu.get_data_unit_byte_offset() as usize);
    if have < need {
        return Err(bad("frame_unreadable", format!("truncated: the data unit needs {need} bytes, {have} present")));
    }
    let bzero = num(header, &["BZERO"]).unwrap_or(0.0);
    let bscale = num(header, &["BSCALE"]).unwrap_or(1.0);
    let time_ms = text(header, &["DATE-OBS", "DATE_OBS", "T_OBS"])
        .and_then(|s| fits_time_ms(&s))
        .ok_or_else(|| bad("frame_no_wcs", "no readable DATE-OBS"))?;
    let cdelt1 = num(header, &["CDELT1"]).ok_or_else(|| bad("frame_no_wcs", "no CDELT1"))?;
    let cdelt2 = num(header, &["CDELT2"]).unwrap_or(cdelt1);
    let crpix1 = num(header, &["CRPIX1"]).ok_or_else(|| bad("frame_no_wcs", "no CRPIX1"))?;
    let crpix2 = num(header, &["CRPIX2"]).ok_or_else(|| bad("frame_no_wcs", "no CRPIX2"))?;
    let mut wcs = SolarWcs {
        crpix1,
        crpix2,
        cdelt1,
        cdelt2,
        crval1: num(header, &["CRVAL1"]).unwrap_or(0.0),
        crval2: num(header, &["CRVAL2"]).unwrap_or(0.0),
        crota2: num(header, &["CROTA2", "CROTA"]).unwrap_or(0.0),
        rsun_arcsec: 0.0,
        b0_deg: num(header, &["CRLT_OBS", "HGLT_OBS", "SOLAR_B0"]).unwrap_or(0.0),
        l0_deg: num(header, &["HGLN_OBS"]).unwrap_or(0.0),
        dsun_m: num(header, &["DSUN_OBS"]).unwrap_or(0.0),
    };
    wcs.rsun_arcsec = match (num(header, &["RSUN_OBS", "RSUN"]), num(header, &["SOLAR_R"])) {
        (Some(r), _) => r,
        (None, Some(px)) => {
            // SOLAR_R is in pixels. A radius larger than the frame means the header
            // still describes the image before it was binned (as in SOHO/EIT "_s"
            // files): rescale the plate scale by the power of two that fits the disk.
            let mut f = 1.0;
            while px / f > 0.5 * w.max(h) as f64 {
                f *= 2.0;
            }
            wcs.cdelt1 *= f;
            wcs.cdelt2 *= f;
            px * cdelt1
        }
        (None, None) => return Err(bad("frame_no_wcs", "no RSUN_OBS or SOLAR_R")),
    };
    let wcs = wcs.with_distance_from_radius();
    let data = fits.get_data(&hdu);
    let raw: Vec<f64> = match data.pixels() {
        Pixels::U8(it) => it.map(f64::from).collect(),
        Pixels::I16(it) => it.map(f64::from).collect(),
        Pixels::I32(it) => it.map(f64::from).collect(),
        Pixels::I64(it) => it.map(|v| v as f64).collect(),
        Pixels::F32(it) => it.map(f64::from).collect(),
        Pixels::F64(it) => it.collect(),
    };
    if raw.len() != w * h {
        return Err(bad("frame_unreadable", format!("{} pixels read, {} expected", raw.len(), w * h)));
    }
    let pixels = raw.into_iter().map(|v| (bzero + bscale * v) as f32).map(|v| if v.is_finite() { v } else { 0.0 }).collect();
    Ok(Frame {
        time_ms,
        instrument: text(header, &["INSTRUME", "TELESCOP"]).unwrap_or_default(),
        wavelength: num(header, &["WAVELNTH"]).unwrap_or(0.0),
        width: w,
        height: h,
        wcs,
        pixels,
    })
}

fn ipc_schema() -> Arc<Schema> {
    let f = |n: &str, t: DataType, null: bool| Field::new(n, t, null);
    Arc::new(Schema::new(vec![
        f("time", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        f("instrument", DataType::Utf8, true),
        f("wavelength", DataType::Float64, true),
        f("width", DataType::Int64, false),
        f("height", DataType::Int64, false),
        f("crpix1", DataType::Float64, false),
        f("crpix2", DataType::Float64, false),
        f("cdelt1", DataType::Float64, false),
        f("cdelt2", DataType::Float64, false),
        f("crval1", DataType::Float64, false),
        f("crval2", DataType::Float64, false),
        f("crota2", DataType::Float64, true),
        f("rsun_arcsec", DataType::Float64, false),
        f("b0_deg", DataType::Float64, true),
        f("l0_deg", DataType::Float64, true),
        f("dsun_m", DataType::Float64, true),
        f("dtype", DataType::Utf8, false),
        f("pixels", DataType::Binary, false),
    ]))
}

/// Encodes a frame as an Arrow IPC stream of one row (pixels as little-endian f32).
pub fn encode_ipc(fr: &Frame) -> crate::error::Result<Vec<u8>> {
    let w = &fr.wcs;
    let f64a = |v: f64| Arc::new(Float64Array::from(vec![v])) as Arc<dyn Array>;
    let bytes: Vec<u8> = fr.pixels.iter().flat_map(|v| v.to_le_bytes()).collect();
    let batch = RecordBatch::try_new(
        ipc_schema(),
        vec![
            Arc::new(TimestampMillisecondArray::from(vec![fr.time_ms]).with_timezone("UTC")),
            Arc::new(StringArray::from(vec![fr.instrument.as_str()])),
            f64a(fr.wavelength),
            Arc::new(Int64Array::from(vec![fr.width as i64])),
            Arc::new(Int64Array::from(vec![fr.height as i64])),
            f64a(w.crpix1),
            f64a(w.crpix2),
            f64a(w.cdelt1),
            f64a(w.cdelt2),
            f64a(w.crval1),
            f64a(w.crval2),
            f64a(w.crota2),
            f64a(w.rsun_arcsec),
            f64a(w.b0_deg),
            f64a(w.l0_deg),
            f64a(w.dsun_m),
            Arc::new(StringArray::from(vec!["f32"])),
            Arc::new(BinaryArray::from(vec![bytes.as_slice()])),
        ],
    )?;
    let mut out = Vec::new();
    {
        let mut wr = arrow::ipc::writer::StreamWriter::try_new(&mut out, &batch.schema())?;
        wr.write(&batch)?;
        wr.finish()?;
    }
    Ok(out)
}

/// Walks the IPC stream's message framing before arrow reads it: arrow's reader
/// allocates each message body at the length its header declares, so a corrupt
/// length (found by the fuzz tests: ~860 PB) would abort the process — here any
/// message whose metadata or body runs past the frame's bytes is refused.
fn check_ipc_framing(bytes: &[u8]) -> Result<(), FrameError> {
    let word = |at: usize| bytes.get(at..at + 4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let mut pos = 0usize;
    while pos < bytes.len() {
        let short = || unreadable(format!("Arrow IPC: truncated message header at byte {pos}"));
        let (mut len, mut header) = (word(pos).ok_or_else(short)?, 4);
        if len == -1 {
            // The continuation marker, then the metadata length.
            len = word(pos + 4).ok_or_else(short)?;
            header = 8;
        }
        if len == 0 {
            return Ok(()); // end of stream
        }
        let meta_end = usize::try_from(len).ok().and_then(|l| (pos + header).checked_add(l)).filter(|&e| e <= bytes.len());
        let meta_end = meta_end.ok_or_else(|| unreadable(format!("Arrow IPC: message metadata of {len} bytes at byte {pos} runs past the frame")))?;
        let msg = arrow::ipc::root_as_message(&bytes[pos + header..meta_end]).map_err(|e| unreadable(format!("Arrow IPC: {e}")))?;
        let body = msg.bodyLength();
        let end = usize::try_from(body).ok().and_then(|b| meta_end.checked_add(b)).filter(|&e| e <= bytes.len());
        pos = end.ok_or_else(|| unreadable(format!("Arrow IPC: a message declares a body of {body} bytes; {} remain", bytes.len() - meta_end)))?;
    }
    Ok(())
}

fn decode_ipc(bytes: &[u8], max_pixels: usize) -> Result<Frame, FrameError> {
    check_ipc_framing(bytes)?;
    let mut r = arrow::ipc::reader::StreamReader::try_new(Cursor::new(bytes), None).map_err(|e| unreadable(format!("Arrow IPC: {e}")))?;
    let b = match r.next() {
        Some(Ok(b)) if b.num_rows() == 1 => b,
        Some(Ok(b)) => return Err(unreadable(format!("{} rows, expected 1", b.num_rows()))),
        Some(Err(e)) => return Err(unreadable(format!("Arrow IPC: {e}"))),
        None => return Err(unreadable("no record batch".into())),
    };
    let col = |n: &str| b.column_by_name(n).ok_or_else(|| bad("frame_no_wcs", format!("no column {n:?}")));
    let f = |n: &str, default: Option<f64>| -> Result<f64, FrameError> {
        let c = col(n);
        match c {
            Ok(c) if c.is_valid(0) => {
                let c = arrow::compute::cast(c, &DataType::Float64).map_err(|e| unreadable(e.to_string()))?;
                Ok(c.as_primitive::<Float64Type>().value(0))
            }
            _ => default.ok_or_else(|| bad("frame_no_wcs", format!("no value for {n:?}"))),
        }
    };
    let i = |n: &str| -> Result<i64, FrameError> {
        let c = arrow::compute::cast(col(n)?, &DataType::Int64).map_err(|e| unreadable(e.to_string()))?;
        Ok(c.as_primitive::<Int64Type>().value(0))
    };
    let (w, h) = (i("width")?.max(0) as usize, i("height")?.max(0) as usize);
    if w.saturating_mul(h) > max_pixels {
        return Err(bad("frame_too_large", format!("{w}×{h} pixels, more than the configured {max_pixels}")));
    }
    let t = arrow::compute::cast(col("time")?, &DataType::Timestamp(TimeUnit::Millisecond, None)).map_err(|e| unreadable(e.to_string()))?;
    let time_ms = t.as_primitive::<TimestampMillisecondType>().value(0);
    let dtype = col("dtype")?.as_string_opt::<i32>().map(|s| s.value(0).to_string()).unwrap_or_default();
    let raw = col("pixels")?.as_binary_opt::<i32>().ok_or_else(|| unreadable("pixels is not Binary".into()))?.value(0);
    let pixels: Vec<f32> = match dtype.as_str() {
        "f32" => raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
        "f64" => raw.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
        "i16" => raw.chunks_exact(2).map(|c| i16::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
        "u16" => raw.chunks_exact(2).map(|c| u16::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
        "u8" => raw.iter().map(|v| *v as f32).collect(),
        other => return Err(unreadable(format!("dtype {other:?} (supported: f32, f64, i16, u16, u8)"))),
    };
    if pixels.len() != w * h {
        return Err(unreadable(format!("{} pixels for {w}×{h}", pixels.len())));
    }
    let wcs = SolarWcs {
        crpix1: f("crpix1", None)?,
        crpix2: f("crpix2", None)?,
        cdelt1: f("cdelt1", None)?,
        cdelt2: f("cdelt2", None)?,
        crval1: f("crval1", Some(0.0))?,
        crval2: f("crval2", Some(0.0))?,
        crota2: f("crota2", Some(0.0))?,
        rsun_arcsec: f("rsun_arcsec", None)?,
        b0_deg: f("b0_deg", Some(0.0))?,
        l0_deg: f("l0_deg", Some(0.0))?,
        dsun_m: f("dsun_m", Some(0.0))?,
    }
    .with_distance_from_radius();
    let instrument = col("instrument").ok().and_then(|c| c.as_string_opt::<i32>().filter(|s| s.is_valid(0)).map(|s| s.value(0).to_string())).unwrap_or_default();
    Ok(Frame { time_ms, instrument, wavelength: f("wavelength", Some(0.0))?, width: w, height: h, wcs, pixels })
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;

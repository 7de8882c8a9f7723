//! Native (uncompressed) pixel data: byte order, 1-bit packing, planar configuration,
//! uncompressed YBR_FULL_422, and float pixel data.

use std::borrow::Cow;

use dicom_core::value::{PrimitiveValue, Value};
use dicom_object::DefaultDicomObject;

use super::attributes::{DOUBLE_FLOAT_PIXEL_DATA, FLOAT_PIXEL_DATA};
use super::colour::ybr_full_from_422;
use crate::imaging::layout::{
    bytes_per_sample, unpack_samples, DecodedColour, PixelLayout, StoredSamples,
};

/// Decode one frame of native pixel data (after the caller checked the frame number).
pub fn decode_native_frame(
    primitive: &PrimitiveValue,
    layout: &PixelLayout,
    frame: u32,
    big_endian: bool,
) -> Result<(StoredSamples, DecodedColour), String> {
    let samples = layout.samples_per_pixel as usize;
    let pixels = layout.pixels_per_frame();
    let photometric = layout.photometric.as_str();
    let bytes = native_le_bytes(primitive, layout, big_endian);
    let ybr422 = photometric == "YBR_FULL_422" && samples == 3 && layout.bits_allocated == 8;
    let frame_samples = if ybr422 { pixels * 2 } else { pixels * samples };
    let values = if layout.bits_allocated == 1 {
        let first_bit = frame as usize * frame_samples;
        let needed_bytes = (first_bit + frame_samples).div_ceil(8);
        if bytes.len() < needed_bytes {
            return Err(format!(
                "pixel data is truncated ({} bytes, {needed_bytes} needed)",
                bytes.len()
            ));
        }
        (0..frame_samples)
            .map(|i| {
                let bit = first_bit + i;
                ((bytes[bit / 8] >> (bit % 8)) & 1) as i64
            })
            .collect()
    } else {
        let frame_bytes = frame_samples * bytes_per_sample(layout);
        let start = frame as usize * frame_bytes;
        let Some(frame_slice) = bytes.get(start..start + frame_bytes) else {
            return Err(format!(
                "pixel data is truncated ({} bytes, {} needed for {} frame(s))",
                bytes.len(),
                frame_bytes * layout.frames as usize,
                layout.frames
            ));
        };
        unpack_samples(frame_slice, layout)
    };
    if ybr422 {
        return Ok((
            StoredSamples::Int(ybr_full_from_422(&values, layout)),
            DecodedColour::YbrFull,
        ));
    }
    let values = if samples == 3 && layout.planar_configuration == 1 {
        interleave_planes(&values, pixels)
    } else {
        values
    };
    Ok((StoredSamples::Int(values), DecodedColour::of_native(layout)))
}

/// The pixel data bytes in little-endian sample order.
fn native_le_bytes<'a>(
    primitive: &'a PrimitiveValue,
    layout: &PixelLayout,
    big_endian: bool,
) -> Cow<'a, [u8]> {
    let bytes = primitive.to_bytes();
    if !big_endian {
        return bytes;
    }
    match (primitive, layout.bits_allocated) {
        // The parser already swapped 16-bit words into native order. For 32-bit samples
        // read as OW the two halves are still in big-endian order.
        (PrimitiveValue::U16(_) | PrimitiveValue::I16(_), 32) => {
            let mut swapped = bytes.into_owned();
            for word in swapped.chunks_exact_mut(4) {
                word.swap(0, 2);
                word.swap(1, 3);
            }
            Cow::Owned(swapped)
        }
        // 16-bit samples stored as OB bytes keep the file's byte order.
        (PrimitiveValue::U8(_), 16) => {
            let mut swapped = bytes.into_owned();
            for word in swapped.chunks_exact_mut(2) {
                word.swap(0, 1);
            }
            Cow::Owned(swapped)
        }
        _ => bytes,
    }
}

fn interleave_planes(values: &[i64], pixels: usize) -> Vec<i64> {
    let mut out = vec![0; pixels * 3];
    for plane in 0..3 {
        for pixel in 0..pixels {
            out[pixel * 3 + plane] = values[plane * pixels + pixel];
        }
    }
    out
}

pub fn decode_float_frame(
    obj: &DefaultDicomObject,
    layout: &PixelLayout,
    frame: u32,
) -> Result<(StoredSamples, DecodedColour), String> {
    let element = obj
        .get(FLOAT_PIXEL_DATA)
        .or_else(|| obj.get(DOUBLE_FLOAT_PIXEL_DATA))
        .ok_or("no float pixel data")?;
    let frame_samples = layout.pixels_per_frame() * layout.samples_per_pixel as usize;
    let values: Vec<f64> = match element.value() {
        Value::Primitive(PrimitiveValue::F32(v)) => v.iter().map(|&x| x as f64).collect(),
        Value::Primitive(PrimitiveValue::F64(v)) => v.to_vec(),
        Value::Primitive(other) => {
            let bytes = other.to_bytes();
            if layout.bits_allocated == 64 {
                bytes
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                    .collect()
            } else {
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                    .collect()
            }
        }
        _ => return Err("float pixel data is not a plain value".into()),
    };
    let start = frame as usize * frame_samples;
    let slice = values
        .get(start..start + frame_samples)
        .ok_or_else(|| format!("float pixel data is truncated ({} samples)", values.len()))?;
    let colour = if layout.samples_per_pixel == 3 {
        DecodedColour::Rgb
    } else {
        DecodedColour::Grey
    };
    Ok((StoredSamples::Float(slice.to_vec()), colour))
}

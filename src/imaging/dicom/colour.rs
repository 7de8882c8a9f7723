//! Colour: YCbCr to RGB with pydicom's exact arithmetic, uncompressed YBR_FULL_422, and
//! PALETTE COLOR images (plain and segmented palettes).

use std::path::Path;

use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;

use super::lut::{read_lut, Lut};
use crate::imaging::error::ImagingError;
use crate::imaging::layout::PixelLayout;

/// YCbCr (full range, ITU-R BT.601) to RGB, computed exactly as pydicom does it: float32
/// matrix, subtract 128 from the chroma, add 0.5, floor, clip to the sample range.
pub fn ybr_full_to_rgb(values: &mut [i64], bits_allocated: u32) {
    let max = ((1i64 << bits_allocated.clamp(8, 16)) - 1) as f32;
    let half = (1i64 << (bits_allocated.clamp(8, 16) - 1)) as f32;
    let cb_to_g = (-0.114f64 * 1.772 / 0.587) as f32;
    let cr_to_g = (-0.299f64 * 1.402 / 0.587) as f32;
    for pixel in values.chunks_exact_mut(3) {
        let y = pixel[0] as f32;
        let cb = pixel[1] as f32 - half;
        let cr = pixel[2] as f32 - half;
        let r = y + cb * 0.0 + cr * 1.402f32;
        let g = y + cb * cb_to_g + cr * cr_to_g;
        let b = y + cb * 1.772f32 + cr * 0.0;
        let round = |v: f32| (v + 0.5).floor().clamp(0.0, max) as i64;
        pixel[0] = round(r);
        pixel[1] = round(g);
        pixel[2] = round(b);
    }
}

/// Uncompressed YBR_FULL_422 stores Y1 Y2 Cb Cr for each pair of pixels along a row;
/// repeat the chroma for both pixels (as pydicom does).
pub fn ybr_full_from_422(values: &[i64], layout: &PixelLayout) -> Vec<i64> {
    let pixels = layout.pixels_per_frame();
    let mut out = Vec::with_capacity(pixels * 3);
    for group in values.chunks_exact(4) {
        let (y1, y2, cb, cr) = (group[0], group[1], group[2], group[3]);
        out.extend_from_slice(&[y1, cb, cr, y2, cb, cr]);
    }
    out.truncate(pixels * 3);
    out
}

/// The red, green and blue palette LUTs of a PALETTE COLOR image.
pub struct Palette {
    pub channels: [Lut; 3],
    pub bits: u32,
}

impl Palette {
    pub fn from_object(obj: &DefaultDicomObject, path: &Path) -> Result<Self, ImagingError> {
        let read = |descriptor: Tag, data: Tag, segmented: Tag, name: &str| {
            if obj.get(data).is_none() && obj.get(segmented).is_some() {
                return read_segmented_lut(obj, descriptor, segmented).ok_or_else(|| {
                    ImagingError::dicom(path, format!("cannot read segmented {name} palette"))
                });
            }
            read_lut(obj, descriptor, data, false).ok_or_else(|| {
                ImagingError::dicom(
                    path,
                    format!("PALETTE COLOR image lacks a readable {name} palette"),
                )
            })
        };
        let (red, bits) = read(
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            tags::SEGMENTED_RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            "red",
        )?;
        let (green, _) = read(
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            tags::SEGMENTED_GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            "green",
        )?;
        let (blue, _) = read(
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            tags::SEGMENTED_BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            "blue",
        )?;
        Ok(Palette {
            channels: [red, green, blue],
            bits,
        })
    }

    pub fn apply(&self, indices: &[i64]) -> Vec<i64> {
        let mut out = Vec::with_capacity(indices.len() * 3);
        for &index in indices {
            for channel in &self.channels {
                out.push(channel.lookup(index) as i64);
            }
        }
        out
    }
}

/// Segmented palette LUTs (PS3.3 C.7.9.2): discrete, linear and indirect segments.
fn read_segmented_lut(obj: &DefaultDicomObject, descriptor: Tag, data: Tag) -> Option<(Lut, u32)> {
    let descriptor: Vec<i64> = obj.get(descriptor)?.to_multi_int::<i64>().ok()?;
    let [count, first, bits] = descriptor.get(0..3)?.try_into().ok()?;
    let count = if count == 0 { 65536 } else { count as usize };
    let words: Vec<u16> = match obj.get(data)?.value() {
        Value::Primitive(PrimitiveValue::U16(v)) => v.to_vec(),
        Value::Primitive(other) => other
            .to_bytes()
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect(),
        _ => return None,
    };
    let mut entries: Vec<u32> = Vec::with_capacity(count);
    let mut position = 0;
    let mut segment_starts = Vec::new();
    while position + 1 < words.len() {
        segment_starts.push(entries.len());
        let opcode = words[position];
        let length = words[position + 1] as usize;
        position += 2;
        match opcode {
            0 => {
                entries.extend(
                    words
                        .get(position..position + length)?
                        .iter()
                        .map(|&w| w as u32),
                );
                position += length;
            }
            1 => {
                let end = *words.get(position)? as f64;
                position += 1;
                let start = *entries.last()? as f64;
                for step in 1..=length {
                    let value = start + (end - start) * step as f64 / length as f64;
                    entries.push(value.round() as u32);
                }
            }
            2 => {
                let offset =
                    *words.get(position)? as usize | (*words.get(position + 1)? as usize) << 16;
                position += 2;
                // Copy `length` earlier segments starting at the segment at byte offset.
                let copy_from = segment_starts
                    .iter()
                    .position(|&s| s >= offset / 2)
                    .unwrap_or(0);
                let from = segment_starts.get(copy_from).copied().unwrap_or(0);
                let to = segment_starts
                    .get(copy_from + length)
                    .copied()
                    .unwrap_or(entries.len());
                let copied: Vec<u32> = entries[from..to].to_vec();
                entries.extend(copied);
            }
            _ => return None,
        }
    }
    entries.truncate(count);
    (!entries.is_empty()).then_some((
        Lut {
            first_mapped: first,
            entries,
        },
        bits as u32,
    ))
}

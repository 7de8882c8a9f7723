//! Lookup tables: the Modality LUT Sequence and rescale (stored values -> modality values), and
//! the LUT reader palettes share.

use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject};

use super::attributes::floats_of;
use crate::imaging::layout::PixelLayout;

/// A lookup table from the Modality LUT Sequence or a palette: descriptor + data.
#[derive(Clone, Debug)]
pub struct Lut {
    pub first_mapped: i64,
    pub entries: Vec<u32>,
}

impl Lut {
    pub fn lookup(&self, value: i64) -> u32 {
        let index = (value - self.first_mapped).clamp(0, self.entries.len() as i64 - 1);
        self.entries[index as usize]
    }
}

pub fn read_lut(
    item: &InMemDicomObject,
    descriptor_tag: Tag,
    data_tag: Tag,
    signed_first: bool,
) -> Option<(Lut, u32)> {
    let descriptor_element = item.get(descriptor_tag)?;
    let descriptor: Vec<i64> = descriptor_element.to_multi_int::<i64>().ok()?;
    let [count, first, bits] = descriptor.get(0..3)?.try_into().ok()?;
    let count = if count == 0 {
        65536
    } else {
        (count as u64 & 0xFFFF) as usize
    };
    let count = if count == 0 { 65536 } else { count };
    let first_mapped = if signed_first && first > 0x7FFF {
        first - 0x10000
    } else {
        first
    };
    let data_element = item.get(data_tag)?;
    let entries: Vec<u32> = match data_element.value() {
        Value::Primitive(PrimitiveValue::U16(v)) => v.iter().map(|&x| x as u32).collect(),
        Value::Primitive(PrimitiveValue::I16(v)) => v.iter().map(|&x| x as u16 as u32).collect(),
        Value::Primitive(PrimitiveValue::U8(v)) if bits <= 8 && v.len() >= count => {
            v.iter().map(|&x| x as u32).collect()
        }
        Value::Primitive(PrimitiveValue::U8(v)) => v
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
            .collect(),
        Value::Primitive(other) => other.to_multi_int::<u32>().ok()?,
        _ => return None,
    };
    if entries.is_empty() {
        return None;
    }
    let mut entries = entries;
    entries.truncate(count.max(1));
    Some((
        Lut {
            first_mapped,
            entries,
        },
        bits as u32,
    ))
}

/// The modality transform of a file: rescale slope/intercept, or a Modality LUT Sequence.
#[derive(Clone, Debug)]
pub enum ModalityTransform {
    Identity,
    Rescale { slope: f64, intercept: f64 },
    Lut(Lut),
}

impl ModalityTransform {
    pub fn from_object(obj: &DefaultDicomObject, layout: &PixelLayout) -> Self {
        if let Some(sequence) = obj.get(tags::MODALITY_LUT_SEQUENCE) {
            if let Some(item) = sequence.items().and_then(|items| items.first()) {
                if let Some((lut, _bits)) =
                    read_lut(item, tags::LUT_DESCRIPTOR, tags::LUT_DATA, layout.signed)
                {
                    return ModalityTransform::Lut(lut);
                }
            }
        }
        let root: &InMemDicomObject = obj;
        let slope = floats_of(root, tags::RESCALE_SLOPE).map(|v| v[0]);
        let intercept = floats_of(root, tags::RESCALE_INTERCEPT).map(|v| v[0]);
        match (slope, intercept) {
            (Some(slope), intercept) => ModalityTransform::Rescale {
                slope,
                intercept: intercept.unwrap_or(0.0),
            },
            (None, Some(intercept)) => ModalityTransform::Rescale {
                slope: 1.0,
                intercept,
            },
            (None, None) => ModalityTransform::Identity,
        }
    }

    pub fn apply(&self, stored: f64) -> f64 {
        match self {
            ModalityTransform::Identity => stored,
            ModalityTransform::Rescale { slope, intercept } => stored * slope + intercept,
            ModalityTransform::Lut(lut) => lut.lookup(stored as i64) as f64,
        }
    }
}

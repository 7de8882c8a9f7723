//! DICOM Segmentation (binary SEG) out and in.
//!
//! Out: one frame per segment on the source image's frame, bit-packed, with the references a
//! PACS or 3D Slicer / OHIF needs to place it: the source's SOP Instance (and frame) in each
//! frame's Derivation Image macro (where highdicom and dcmqi look for it), its series in the
//! Common Instance Reference module, and, when the source has a patient geometry, its Frame
//! of Reference, Image Position and Orientation (Patient) and Pixel Spacing in the functional
//! groups. Drawn regions are MANUAL segments; fovea's maps (the
//! triage mask, a thresholded attention map) are AUTOMATIC, with the algorithm named.
//! A segment drawn in fovea also carries its shape as JSON in Segment Description, so an
//! import can restore the exact box or polygon (checked against the pixels, else the pixels
//! win).
//!
//! In: seg_read.rs.

use std::path::Path;

use anyhow::{bail, Result};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::deid::Exporter;
use super::elements::{code_item, ds, one_item, part10_bytes, put, put_us, sequence, text};
use super::source::SourceImage;
use crate::grounding::region::Region;

pub const SEGMENTATION_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.66.4";

/// How a segment was made (Segment Algorithm Type).
#[derive(Clone, Debug, PartialEq)]
pub enum Algorithm {
    /// Drawn by a person.
    Manual,
    /// Computed by fovea; the algorithm's name.
    Automatic(String),
}

/// What a segment marks, for its property codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Property {
    /// A finding the answer is about (a drawn target region).
    Lesion,
    /// Something the model should not look at (a drawn distractor: marker, wire, label).
    Object,
    /// Where the model's attention is (fovea's maps).
    Attention,
}

/// One segment to write: a label, a display colour, how it was made, and its pixels on the
/// source frame (raster order, `rows x columns`).
#[derive(Clone, Debug)]
pub struct Segment {
    pub label: String,
    pub colour: [u8; 3],
    pub algorithm: Algorithm,
    pub property: Property,
    pub pixels: Vec<bool>,
    /// The fovea shape the pixels came from, restored on import when it still matches.
    pub shape: Option<Region>,
}

/// sRGB (0..255) to DICOM's CIELab encoding (L 0..100 -> 0..65535, a/b -128..127 -> 0..65535),
/// D65 white, as PS3.3 C.10.7.1.1 defines Recommended Display CIELab Value.
pub fn srgb_to_dicom_lab(rgb: [u8; 3]) -> [u16; 3] {
    let linear = |c: u8| {
        let c = c as f64 / 255.0;
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let (r, g, b) = (linear(rgb[0]), linear(rgb[1]), linear(rgb[2]));
    let x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047;
    let y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
    let z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883;
    let f = |t: f64| {
        if t > (6.0f64 / 29.0).powi(3) {
            t.cbrt()
        } else {
            t / (3.0 * (6.0f64 / 29.0).powi(2)) + 4.0 / 29.0
        }
    };
    let (fx, fy, fz) = (f(x), f(y), f(z));
    let (l, a, bb) = (116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz));
    [
        (l / 100.0 * 65535.0).round().clamp(0.0, 65535.0) as u16,
        ((a + 128.0) / 255.0 * 65535.0).round().clamp(0.0, 65535.0) as u16,
        ((bb + 128.0) / 255.0 * 65535.0).round().clamp(0.0, 65535.0) as u16,
    ]
}

/// Pack pixels 1 bit each, first pixel in the lowest bit, padded to an even length.
pub fn pack_bits(pixels: &[bool]) -> Vec<u8> {
    let mut bytes = vec![0u8; pixels.len().div_ceil(8)];
    for (i, &p) in pixels.iter().enumerate() {
        if p {
            bytes[i / 8] |= 1 << (i % 8);
        }
    }
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    bytes
}

fn segment_item(number: u16, segment: &Segment) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    put_us(&mut item, tags::SEGMENT_NUMBER, &[number]);
    put(
        &mut item,
        tags::SEGMENT_LABEL,
        VR::LO,
        &clip(&segment.label, 64),
    );
    if let Some(shape) = &segment.shape {
        if let Ok(json) = serde_json::to_string(shape) {
            if json.len() < 1024 {
                put(
                    &mut item,
                    tags::SEGMENT_DESCRIPTION,
                    VR::ST,
                    &format!("fovea:{json}"),
                );
            }
        }
    }
    match &segment.algorithm {
        Algorithm::Manual => put(&mut item, tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "MANUAL"),
        Algorithm::Automatic(name) => {
            put(&mut item, tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC");
            put(
                &mut item,
                tags::SEGMENT_ALGORITHM_NAME,
                VR::LO,
                &clip(name, 64),
            );
        }
    }
    let (category, kind) = match segment.property {
        Property::Lesion => (
            code_item("49755003", "SCT", "Morphologically Abnormal Structure"),
            code_item("52988006", "SCT", "Lesion"),
        ),
        Property::Object => (
            code_item("260787004", "SCT", "Physical object"),
            code_item("260787004", "SCT", "Physical object"),
        ),
        Property::Attention => (
            code_item("309825002", "SCT", "Spatial and Relational Concept"),
            code_item("309825002", "SCT", "Spatial and Relational Concept"),
        ),
    };
    item.put(sequence(
        tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE,
        vec![category],
    ));
    item.put(sequence(
        tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE,
        vec![kind],
    ));
    put_us(
        &mut item,
        tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE,
        &srgb_to_dicom_lab(segment.colour),
    );
    item
}

fn clip(text: &str, chars: usize) -> String {
    text.replace('\\', "/").chars().take(chars).collect()
}

/// Build the SEG data set. `series_number` is the new series' number.
pub fn build(
    source: &SourceImage,
    segments: &[Segment],
    exporter: &mut Exporter,
    series_number: u32,
) -> Result<(InMemDicomObject, String)> {
    if segments.is_empty() {
        bail!("nothing to write into a SEG: no regions and no map segments");
    }
    let n = source.rows as usize * source.columns as usize;
    for segment in segments {
        if segment.pixels.len() != n {
            bail!(
                "segment {:?} has {} pixels, the image {} x {}",
                segment.label,
                segment.pixels.len(),
                source.columns,
                source.rows
            );
        }
    }
    let (mut obj, instance_uid, (date, time)) = exporter.start_object(
        &source.header,
        SEGMENTATION_STORAGE,
        "SEG",
        series_number,
        "fovea regions and attention",
    );
    // Enhanced General Equipment (Manufacturer and Software Versions come with the series).
    put(&mut obj, tags::MANUFACTURER_MODEL_NAME, VR::LO, "fovea");
    put(&mut obj, tags::DEVICE_SERIAL_NUMBER, VR::LO, "fovea");
    let geometry = source.has_geometry();
    if geometry {
        let frame_of_reference = source.frame_of_reference_uid.clone().unwrap_or_default();
        put(
            &mut obj,
            tags::FRAME_OF_REFERENCE_UID,
            VR::UI,
            &exporter.uid(&frame_of_reference),
        );
        put(&mut obj, tags::POSITION_REFERENCE_INDICATOR, VR::LO, "");
    } else {
        // Without a patient geometry, the orientation is unknown (Type 2C: empty).
        put(&mut obj, tags::PATIENT_ORIENTATION, VR::CS, "");
    }
    // Segmentation Image module.
    put(&mut obj, tags::IMAGE_TYPE, VR::CS, "DERIVED\\PRIMARY");
    put(&mut obj, tags::INSTANCE_NUMBER, VR::IS, "1");
    put(&mut obj, tags::CONTENT_LABEL, VR::CS, "FOVEA");
    put(
        &mut obj,
        tags::CONTENT_DESCRIPTION,
        VR::LO,
        "Regions and attention from fovea",
    );
    put(&mut obj, tags::CONTENT_CREATOR_NAME, VR::PN, "fovea^");
    put(&mut obj, tags::CONTENT_DATE, VR::DA, &date);
    put(&mut obj, tags::CONTENT_TIME, VR::TM, &time);
    put_us(&mut obj, tags::SAMPLES_PER_PIXEL, &[1]);
    put(
        &mut obj,
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2",
    );
    put_us(&mut obj, tags::ROWS, &[source.rows as u16]);
    put_us(&mut obj, tags::COLUMNS, &[source.columns as u16]);
    put_us(&mut obj, tags::BITS_ALLOCATED, &[1]);
    put_us(&mut obj, tags::BITS_STORED, &[1]);
    put_us(&mut obj, tags::HIGH_BIT, &[0]);
    put_us(&mut obj, tags::PIXEL_REPRESENTATION, &[0]);
    put(&mut obj, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
    put(&mut obj, tags::SEGMENTATION_TYPE, VR::CS, "BINARY");
    obj.put(sequence(
        tags::SEGMENT_SEQUENCE,
        segments
            .iter()
            .enumerate()
            .map(|(i, s)| segment_item(i as u16 + 1, s))
            .collect(),
    ));
    // Multi-frame Functional Groups.
    put(
        &mut obj,
        tags::NUMBER_OF_FRAMES,
        VR::IS,
        &segments.len().to_string(),
    );
    let source_sop_uid = exporter.uid(&source.sop_instance_uid);
    let mut source_ref = source.reference(
        exporter,
        ("121322", "Source image for image processing operation"),
    );
    // highdicom refuses to index by source frame unless the reference says the pixels keep
    // their places (they do: one SEG pixel per source pixel).
    source_ref.push(text(tags::SPATIAL_LOCATIONS_PRESERVED, VR::CS, "YES"));
    // Per frame, as highdicom and dcmqi write it and read it: a reader that indexes a SEG by
    // source image looks for the Derivation Image macro in each frame's functional groups,
    // never in the shared ones.
    let derivation = one_item(
        tags::DERIVATION_IMAGE_SEQUENCE,
        vec![
            one_item(tags::SOURCE_IMAGE_SEQUENCE, source_ref),
            sequence(
                tags::DERIVATION_CODE_SEQUENCE,
                vec![code_item("113076", "DCM", "Segmentation")],
            ),
        ],
    );
    let mut shared = Vec::new();
    if geometry {
        let [row, col] = source.pixel_spacing.unwrap_or([1.0, 1.0]);
        let mut measures = vec![text(tags::PIXEL_SPACING, VR::DS, &ds(&[row, col]))];
        measures.push(text(
            tags::SLICE_THICKNESS,
            VR::DS,
            &ds(&[source.slice_thickness.unwrap_or(1.0)]),
        ));
        shared.push(one_item(tags::PIXEL_MEASURES_SEQUENCE, measures));
        shared.push(one_item(
            tags::PLANE_ORIENTATION_SEQUENCE,
            vec![text(
                tags::IMAGE_ORIENTATION_PATIENT,
                VR::DS,
                &ds(&source.orientation.unwrap_or_default()),
            )],
        ));
    }
    // Without a geometry no macro is common to all frames: one empty item (the SEG IOD makes
    // the sequence Type 1; highdicom writes the same).
    obj.put(one_item(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, shared));
    let dimension_uid = exporter.new_uid();
    let per_frame: Vec<InMemDicomObject> = (0..segments.len())
        .map(|i| {
            let number = i as u32 + 1;
            let mut index = vec![number];
            if geometry {
                index.push(1);
            }
            let mut elements = vec![
                derivation.clone(),
                one_item(
                    tags::FRAME_CONTENT_SEQUENCE,
                    vec![DataElement::new(
                        tags::DIMENSION_INDEX_VALUES,
                        VR::UL,
                        PrimitiveValue::U32(index.into_iter().collect()),
                    )],
                ),
                one_item(
                    tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                    vec![DataElement::new(
                        tags::REFERENCED_SEGMENT_NUMBER,
                        VR::US,
                        PrimitiveValue::from(number as u16),
                    )],
                ),
            ];
            if geometry {
                elements.push(one_item(
                    tags::PLANE_POSITION_SEQUENCE,
                    vec![text(
                        tags::IMAGE_POSITION_PATIENT,
                        VR::DS,
                        &ds(&source.position.unwrap_or_default()),
                    )],
                ));
            }
            InMemDicomObject::from_element_iter(elements)
        })
        .collect();
    obj.put(sequence(
        tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
        per_frame,
    ));
    // Multi-frame Dimension module: segment number, then position when there is one.
    obj.put(one_item(
        tags::DIMENSION_ORGANIZATION_SEQUENCE,
        vec![text(
            tags::DIMENSION_ORGANIZATION_UID,
            VR::UI,
            &dimension_uid,
        )],
    ));
    let dimension = |pointer: Tag, group: Tag, label: &str| {
        InMemDicomObject::from_element_iter([
            text(tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dimension_uid),
            DataElement::new(
                tags::DIMENSION_INDEX_POINTER,
                VR::AT,
                PrimitiveValue::Tags(vec![pointer].into()),
            ),
            DataElement::new(
                tags::FUNCTIONAL_GROUP_POINTER,
                VR::AT,
                PrimitiveValue::Tags(vec![group].into()),
            ),
            text(tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label),
        ])
    };
    let mut dimensions = vec![dimension(
        tags::REFERENCED_SEGMENT_NUMBER,
        tags::SEGMENT_IDENTIFICATION_SEQUENCE,
        "Segment Number",
    )];
    if geometry {
        dimensions.push(dimension(
            tags::IMAGE_POSITION_PATIENT,
            tags::PLANE_POSITION_SEQUENCE,
            "Image Position Patient",
        ));
    }
    obj.put(sequence(tags::DIMENSION_INDEX_SEQUENCE, dimensions));
    // Common Instance Reference module.
    obj.put(one_item(
        tags::REFERENCED_SERIES_SEQUENCE,
        vec![
            text(
                tags::SERIES_INSTANCE_UID,
                VR::UI,
                &exporter.uid(&source.series_uid),
            ),
            one_item(
                tags::REFERENCED_INSTANCE_SEQUENCE,
                vec![
                    text(
                        tags::REFERENCED_SOP_CLASS_UID,
                        VR::UI,
                        &source.sop_class_uid,
                    ),
                    text(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &source_sop_uid),
                ],
            ),
        ],
    ));
    let pixels: Vec<bool> = segments
        .iter()
        .flat_map(|s| s.pixels.iter().copied())
        .collect();
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::from(pack_bits(&pixels)),
    ));
    Ok((obj, instance_uid))
}

/// Write a SEG for `segments` on `source` to `out` (atomically).
pub fn write(
    out: &Path,
    source: &SourceImage,
    segments: &[Segment],
    exporter: &mut Exporter,
) -> Result<()> {
    let (obj, instance_uid) = build(source, segments, exporter, 901)?;
    let bytes = part10_bytes(obj, SEGMENTATION_STORAGE, &instance_uid)?;
    crate::io::write_bytes(out, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DICOM CIELab by hand: white is L 100, a = b = 0 -> (65535, 32896, 32896) within a few
    /// units (the D65 matrix rows sum to within 1e-4 of the white point); sRGB red is the
    /// textbook L 53.24, a 80.09, b 67.20 -> (34891, 53478, 50166).
    #[test]
    fn cielab_encoding_by_hand() {
        let white = srgb_to_dicom_lab([255, 255, 255]);
        assert_eq!(white[0], 65535);
        assert!(
            white[1].abs_diff(32896) <= 3 && white[2].abs_diff(32896) <= 3,
            "{white:?}"
        );
        let red = srgb_to_dicom_lab([255, 0, 0]);
        for (got, want) in red.iter().zip([34891u16, 53478, 50166]) {
            assert!(got.abs_diff(want) <= 20, "{red:?}");
        }
        assert_eq!(srgb_to_dicom_lab([0, 0, 0])[0], 0);
    }

    /// Pixels go 1 bit each, the first in the lowest bit, padded to an even length.
    #[test]
    fn bits_are_packed_low_first_and_padded() {
        let mut pixels = vec![false; 9];
        pixels[0] = true;
        pixels[8] = true;
        assert_eq!(pack_bits(&pixels), vec![0x01, 0x01]);
        assert_eq!(pack_bits(&[true, true, true]), vec![0x07, 0x00]);
        assert_eq!(pack_bits(&[false, true]), vec![0x02, 0x00]);
    }
}

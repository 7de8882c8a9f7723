//! The attention view as a DICOM object a PACS can show: a Secondary Capture (RGB, 8 bits) of
//! the composited picture fovea exports as PNG (image, heatmap, regions, colour bar and scale
//! bar burned in), in the source's study (or its de-identified stand-in) as a new series, with
//! a reference to the source image.
//!
//! Why a Secondary Capture and not a Parametric Map: every PACS viewer shows a Secondary
//! Capture as it is, colour bar included; a Parametric Map carries the float values but
//! needs a viewer that applies a palette to it (few PACS do), and fovea's maps live on the
//! model's token grid, not on the image's pixels. The numbers themselves go out in the
//! INSPECT-JSON record and, thresholded, as SEG segments.

use std::path::Path;

use anyhow::Result;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::deid::Exporter;
use super::elements::{one_item, part10_bytes, put, put_us};
use super::source::SourceImage;

pub const SECONDARY_CAPTURE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.7";

/// Build the Secondary Capture data set of `picture` for `source`.
pub fn build(
    source: &SourceImage,
    picture: &image::RgbImage,
    description: &str,
    exporter: &mut Exporter,
) -> Result<(InMemDicomObject, String)> {
    let (mut obj, instance_uid, (date, time)) = exporter.start_object(
        &source.header,
        SECONDARY_CAPTURE_STORAGE,
        "OT",
        902,
        "fovea attention view",
    );
    // Body part and laterality as the source says (dciodvfy asks for Laterality when it cannot
    // tell whether the part is paired).
    match (
        super::elements::text_of(&source.header, tags::BODY_PART_EXAMINED),
        super::elements::text_of(&source.header, tags::LATERALITY),
    ) {
        (body, Some(side)) => {
            if let Some(body) = body {
                put(&mut obj, tags::BODY_PART_EXAMINED, VR::CS, &body);
            }
            put(&mut obj, tags::LATERALITY, VR::CS, &side);
        }
        (Some(body), None) => put(&mut obj, tags::BODY_PART_EXAMINED, VR::CS, &body),
        (None, None) => put(&mut obj, tags::LATERALITY, VR::CS, ""),
    }
    put(&mut obj, tags::CONVERSION_TYPE, VR::CS, "WSD");
    put(&mut obj, tags::DATE_OF_SECONDARY_CAPTURE, VR::DA, &date);
    put(&mut obj, tags::TIME_OF_SECONDARY_CAPTURE, VR::TM, &time);
    put(&mut obj, tags::INSTANCE_NUMBER, VR::IS, "1");
    put(&mut obj, tags::PATIENT_ORIENTATION, VR::CS, "");
    put(&mut obj, tags::CONTENT_DATE, VR::DA, &date);
    put(&mut obj, tags::CONTENT_TIME, VR::TM, &time);
    put(&mut obj, tags::IMAGE_TYPE, VR::CS, "DERIVED\\SECONDARY");
    put(&mut obj, tags::DERIVATION_DESCRIPTION, VR::ST, description);
    put(&mut obj, tags::BURNED_IN_ANNOTATION, VR::CS, "NO");
    put(&mut obj, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
    let reference = source.reference(exporter, ("121320", "Uncompressed predecessor"));
    obj.put(one_item(tags::SOURCE_IMAGE_SEQUENCE, reference));
    put_us(&mut obj, tags::SAMPLES_PER_PIXEL, &[3]);
    put(&mut obj, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB");
    put_us(&mut obj, tags::PLANAR_CONFIGURATION, &[0]);
    put_us(&mut obj, tags::ROWS, &[picture.height() as u16]);
    put_us(&mut obj, tags::COLUMNS, &[picture.width() as u16]);
    put_us(&mut obj, tags::BITS_ALLOCATED, &[8]);
    put_us(&mut obj, tags::BITS_STORED, &[8]);
    put_us(&mut obj, tags::HIGH_BIT, &[7]);
    put_us(&mut obj, tags::PIXEL_REPRESENTATION, &[0]);
    let mut bytes = picture.as_raw().clone();
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::from(bytes),
    ));
    Ok((obj, instance_uid))
}

/// Write the Secondary Capture to `out` (atomically).
pub fn write(
    out: &Path,
    source: &SourceImage,
    picture: &image::RgbImage,
    description: &str,
    exporter: &mut Exporter,
) -> Result<()> {
    if picture.width() > u16::MAX as u32 || picture.height() > u16::MAX as u32 {
        anyhow::bail!(
            "the picture is too large for DICOM ({} x {})",
            picture.width(),
            picture.height()
        );
    }
    let (obj, uid) = build(source, picture, description, exporter)?;
    crate::io::write_bytes(out, &part10_bytes(obj, SECONDARY_CAPTURE_STORAGE, &uid)?)
}

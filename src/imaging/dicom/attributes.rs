//! The attributes fovea reads from a data set: the pixel layout, the window, the summary that is
//! safe to show, and the patient-identifying fields (PHI) that are shown only when asked for.

use std::path::Path;

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject};

use crate::imaging::error::ImagingError;
use crate::imaging::layout::PixelLayout;
use crate::imaging::study::{Identity, MAX_DECODED_BYTES, MAX_SIDE_PX};
use crate::imaging::window::WindowLevel;

pub const DOUBLE_FLOAT_PIXEL_DATA: Tag = Tag(0x7FE0, 0x0009);
pub const FLOAT_PIXEL_DATA: Tag = Tag(0x7FE0, 0x0008);

pub fn string_of(obj: &DefaultDicomObject, tag: Tag) -> Option<String> {
    let element = obj.get(tag)?;
    let text = element.to_str().ok()?;
    let text = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!text.is_empty()).then(|| text.to_string())
}

pub fn uint_of(obj: &DefaultDicomObject, tag: Tag) -> Option<u32> {
    obj.get(tag).and_then(|e| e.to_int::<u32>().ok())
}

pub fn floats_of(obj: &InMemDicomObject, tag: Tag) -> Option<Vec<f64>> {
    obj.get(tag)
        .and_then(|e| e.to_multi_float64().ok())
        .filter(|v| !v.is_empty())
}

/// Read the pixel layout, with a clear message for each missing or impossible attribute.
pub fn pixel_layout(obj: &DefaultDicomObject, path: &Path) -> Result<PixelLayout, ImagingError> {
    let float_data =
        obj.get(FLOAT_PIXEL_DATA).is_some() || obj.get(DOUBLE_FLOAT_PIXEL_DATA).is_some();
    if obj.get(tags::PIXEL_DATA).is_none() && !float_data {
        return Err(ImagingError::dicom(
            path,
            "DICOM file has no pixel data (7FE0,0010)",
        ));
    }
    let required = |tag: Tag, name: &str| {
        uint_of(obj, tag)
            .ok_or_else(|| ImagingError::dicom(path, format!("DICOM pixel data lacks {name}")))
    };
    let rows = required(tags::ROWS, "Rows (0028,0010)")?;
    let cols = required(tags::COLUMNS, "Columns (0028,0011)")?;
    let bits_allocated = required(tags::BITS_ALLOCATED, "Bits Allocated (0028,0100)")?;
    let bits_stored = uint_of(obj, tags::BITS_STORED).unwrap_or(bits_allocated);
    let samples_per_pixel = uint_of(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    let frames = string_of(obj, tags::NUMBER_OF_FRAMES)
        .and_then(|s| s.parse::<f64>().ok())
        .map(|n| n.max(1.0) as u32)
        .unwrap_or(1);
    let photometric = string_of(obj, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_else(|| {
        if samples_per_pixel == 3 {
            "RGB"
        } else {
            "MONOCHROME2"
        }
        .to_string()
    });
    let layout = PixelLayout {
        rows,
        cols,
        frames,
        samples_per_pixel,
        bits_allocated,
        bits_stored,
        signed: uint_of(obj, tags::PIXEL_REPRESENTATION) == Some(1),
        planar_configuration: uint_of(obj, tags::PLANAR_CONFIGURATION).unwrap_or(0),
        photometric,
        float_data,
    };
    if rows == 0 || cols == 0 {
        return Err(ImagingError::dicom(
            path,
            format!("DICOM image has zero size {cols}x{rows}"),
        ));
    }
    if rows > MAX_SIDE_PX || cols > MAX_SIDE_PX {
        return Err(ImagingError::dicom(
            path,
            format!(
                "DICOM image is {cols}x{rows} px, larger than fovea's limit of {} px a side",
                MAX_SIDE_PX
            ),
        ));
    }
    if !matches!(bits_allocated, 1 | 8 | 16 | 32 | 64) {
        return Err(ImagingError::dicom(
            path,
            format!("unsupported Bits Allocated {bits_allocated}"),
        ));
    }
    if bits_stored == 0 || bits_stored > bits_allocated {
        return Err(ImagingError::dicom(
            path,
            format!("Bits Stored {bits_stored} does not fit in Bits Allocated {bits_allocated}"),
        ));
    }
    if !matches!(samples_per_pixel, 1 | 3) {
        return Err(ImagingError::dicom(
            path,
            format!("unsupported Samples per Pixel {samples_per_pixel}"),
        ));
    }
    let decoded_bytes =
        layout.pixels_per_frame() as u64 * samples_per_pixel as u64 * frames as u64 * 4;
    if decoded_bytes > MAX_DECODED_BYTES {
        return Err(ImagingError::dicom(
            path,
            format!(
                "DICOM image would need {} MiB decoded, over fovea's limit",
                decoded_bytes >> 20
            ),
        ));
    }
    Ok(layout)
}

pub fn window_of(obj: &DefaultDicomObject) -> Option<WindowLevel> {
    let root: &InMemDicomObject = obj;
    let from = |item: &InMemDicomObject| {
        let center = floats_of(item, tags::WINDOW_CENTER)?[0];
        let width = floats_of(item, tags::WINDOW_WIDTH)?[0];
        (width > 0.0 && center.is_finite()).then_some(WindowLevel { center, width })
    };
    if let Some(window) = from(root) {
        return Some(window);
    }
    // Enhanced multi-frame objects keep the window in the functional groups.
    for group in [
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
    ] {
        let Some(item) = obj
            .get(group)
            .and_then(|e| e.items())
            .and_then(|items| items.first())
        else {
            continue;
        };
        let Some(voi) = item
            .get(tags::FRAME_VOILUT_SEQUENCE)
            .and_then(|e| e.items())
            .and_then(|i| i.first())
        else {
            continue;
        };
        if let Some(window) = from(voi) {
            return Some(window);
        }
    }
    None
}

/// Fields that identify a patient, study or institution: never shown unless asked.
const PHI_TAGS: &[(Tag, &str)] = &[
    (tags::PATIENT_NAME, "Patient's Name"),
    (tags::PATIENT_ID, "Patient ID"),
    (tags::PATIENT_BIRTH_DATE, "Patient's Birth Date"),
    (tags::PATIENT_SEX, "Patient's Sex"),
    (tags::PATIENT_AGE, "Patient's Age"),
    (Tag(0x0010, 0x1000), "Other Patient IDs"),
    (tags::PATIENT_ADDRESS, "Patient's Address"),
    (tags::ACCESSION_NUMBER, "Accession Number"),
    (tags::INSTITUTION_NAME, "Institution Name"),
    (tags::INSTITUTION_ADDRESS, "Institution Address"),
    (tags::REFERRING_PHYSICIAN_NAME, "Referring Physician's Name"),
    (
        tags::PERFORMING_PHYSICIAN_NAME,
        "Performing Physician's Name",
    ),
    (tags::OPERATORS_NAME, "Operators' Name"),
    (tags::STUDY_DATE, "Study Date"),
    (tags::STUDY_TIME, "Study Time"),
    (tags::STUDY_ID, "Study ID"),
    (tags::STUDY_DESCRIPTION, "Study Description"),
    (tags::SERIES_DESCRIPTION, "Series Description"),
    (tags::STATION_NAME, "Station Name"),
    (tags::DEVICE_SERIAL_NUMBER, "Device Serial Number"),
    (tags::STUDY_INSTANCE_UID, "Study Instance UID"),
    (tags::SERIES_INSTANCE_UID, "Series Instance UID"),
    (tags::SOP_INSTANCE_UID, "SOP Instance UID"),
];

pub fn identity_of(obj: &DefaultDicomObject) -> Identity {
    let fields = PHI_TAGS
        .iter()
        .filter_map(|&(tag, name)| string_of(obj, tag).map(|value| (name.to_string(), value)))
        .collect();
    Identity { fields }
}

pub fn is_lossy(ts_uid: &str, obj: &DefaultDicomObject) -> bool {
    let lossy_syntax = matches!(
        ts_uid,
        "1.2.840.10008.1.2.4.50"
            | "1.2.840.10008.1.2.4.51"
            | "1.2.840.10008.1.2.4.81"
            | "1.2.840.10008.1.2.4.91"
            | "1.2.840.10008.1.2.4.93"
            | "1.2.840.10008.1.2.4.100"
            | "1.2.840.10008.1.2.4.101"
            | "1.2.840.10008.1.2.4.102"
            | "1.2.840.10008.1.2.4.103"
            | "1.2.840.10008.1.2.4.104"
            | "1.2.840.10008.1.2.4.105"
            | "1.2.840.10008.1.2.4.106"
            | "1.2.840.10008.1.2.4.111"
            | "1.2.840.10008.1.2.4.112"
    );
    lossy_syntax || string_of(obj, tags::LOSSY_IMAGE_COMPRESSION).as_deref() == Some("01")
}

pub fn sop_class_name(uid: &str) -> String {
    let name = match uid {
        "1.2.840.10008.5.1.4.1.1.2" => "CT Image Storage",
        "1.2.840.10008.5.1.4.1.1.2.1" => "Enhanced CT Image Storage",
        "1.2.840.10008.5.1.4.1.1.4" => "MR Image Storage",
        "1.2.840.10008.5.1.4.1.1.4.1" => "Enhanced MR Image Storage",
        "1.2.840.10008.5.1.4.1.1.7" => "Secondary Capture Image Storage",
        "1.2.840.10008.5.1.4.1.1.1" => "Computed Radiography Image Storage",
        "1.2.840.10008.5.1.4.1.1.1.1" => "Digital X-Ray Image Storage - For Presentation",
        "1.2.840.10008.5.1.4.1.1.1.2" => {
            "Digital Mammography X-Ray Image Storage - For Presentation"
        }
        "1.2.840.10008.5.1.4.1.1.6.1" => "Ultrasound Image Storage",
        "1.2.840.10008.5.1.4.1.1.3.1" => "Ultrasound Multi-frame Image Storage",
        "1.2.840.10008.5.1.4.1.1.481.2" => "RT Dose Storage",
        "1.2.840.10008.5.1.4.1.1.20" => "Nuclear Medicine Image Storage",
        "1.2.840.10008.5.1.4.1.1.128" => "Positron Emission Tomography Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.6" => "VL Whole Slide Microscopy Image Storage",
        _ => return uid.to_string(),
    };
    format!("{name} ({uid})")
}

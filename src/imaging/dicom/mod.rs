//! DICOM files: frames of modality values, display defaults and a PHI-free summary.
//!
//! dicom-object parses the data set; fovea interprets the samples itself, because the meaning
//! of the bits is where viewers disagree: bits stored vs. allocated, sign extension, planar
//! configuration, subsampled YBR, palette colour, 1-bit and 32-bit data, big-endian files and
//! files without a meta header. The rules follow pydicom (`pixel_array` then
//! `apply_modality_lut`), and the tests compare against it.
//!
//! This file only orchestrates; each concern has its own file: [`open`] (reading the data
//! set), [`attributes`] (layout, window, summary, PHI), [`native`] and [`compressed`] (pixel
//! decoding), [`colour`] (YBR, palettes), [`lut`] (modality transform).

pub mod attributes;
pub mod colour;
pub mod compressed;
pub mod lut;
pub mod native;
pub mod open;

use std::path::Path;

use dicom_core::value::Value;
use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::{DefaultDicomObject, InMemDicomObject};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

pub use crate::imaging::layout::{DecodedColour, PixelLayout, StoredSamples};
pub use attributes::pixel_layout;
pub use colour::{ybr_full_to_rgb, Palette};
pub use lut::{Lut, ModalityTransform};
pub use open::open;

use crate::imaging::error::ImagingError;
use crate::imaging::sniff::{has_dicm_magic, read_head};
use crate::imaging::study::{Frame, Photometric, SourceFormat, Study, Summary};
use crate::imaging::window::VoiFunction;
use attributes::{floats_of, identity_of, is_lossy, sop_class_name, string_of, window_of};

/// Decode the stored values of one frame (before any LUT). Colour images come back as RGB
/// (YBR converted, planes interleaved); palette images come back as indices.
pub fn decode_stored_frame(
    obj: &DefaultDicomObject,
    layout: &PixelLayout,
    frame: u32,
    path: &Path,
) -> Result<(StoredSamples, DecodedColour), ImagingError> {
    if frame >= layout.frames {
        return Err(ImagingError::NoSuchFrame {
            path: path.to_path_buf(),
            frame: frame as usize,
            frames: layout.frames as usize,
        });
    }
    let in_frame = |problem: String| ImagingError::dicom(path, format!("frame {frame}: {problem}"));
    let ts_uid = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    let ts = TransferSyntaxRegistry
        .get(&ts_uid)
        .ok_or_else(|| ImagingError::dicom(path, format!("unknown transfer syntax {ts_uid}")))?;
    if layout.float_data {
        return native::decode_float_frame(obj, layout, frame).map_err(in_frame);
    }
    let Some(pixel_element) = obj.get(tags::PIXEL_DATA) else {
        return Err(ImagingError::dicom(
            path,
            "DICOM file has no pixel data (7FE0,0010)",
        ));
    };
    match pixel_element.value() {
        Value::PixelSequence(_) => {
            compressed::decode_encapsulated_frame(obj, layout, frame, ts).map_err(in_frame)
        }
        Value::Primitive(primitive) => {
            let big_endian = ts_uid == "1.2.840.10008.1.2.2";
            native::decode_native_frame(primitive, layout, frame, big_endian).map_err(in_frame)
        }
        Value::Sequence(_) => Err(in_frame(
            "pixel data is a sequence, not pixel values".into(),
        )),
    }
}

/// Load a DICOM file into a [`Study`] of modality values.
pub fn load(path: &Path) -> Result<Study, ImagingError> {
    let obj = open(path)?;
    study_from_object(&obj, path)
}

/// Decode every frame of an opened data set into a [`Study`].
pub fn study_from_object(obj: &DefaultDicomObject, path: &Path) -> Result<Study, ImagingError> {
    let layout = pixel_layout(obj, path)?;
    let ts_uid = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    let ts_name = TransferSyntaxRegistry
        .get(&ts_uid)
        .map(|ts| ts.name().to_string())
        .unwrap_or_else(|| "unknown transfer syntax".to_string());
    let transform = ModalityTransform::from_object(obj, &layout);
    let palette = if layout.photometric == "PALETTE COLOR" && layout.samples_per_pixel == 1 {
        Some(Palette::from_object(obj, path)?)
    } else {
        None
    };
    // RT Dose stores integers that become Gy only through Dose Grid Scaling, which pydicom's
    // modality LUT leaves out; a viewer must apply it.
    let root: &InMemDicomObject = obj;
    let dose_grid_scaling = (string_of(obj, tags::MODALITY).as_deref() == Some("RTDOSE"))
        .then(|| floats_of(root, tags::DOSE_GRID_SCALING).map(|v| v[0]))
        .flatten()
        .filter(|scale| scale.is_finite() && *scale > 0.0);
    let transform = match (dose_grid_scaling, transform) {
        (Some(scale), ModalityTransform::Identity) => ModalityTransform::Rescale {
            slope: scale,
            intercept: 0.0,
        },
        (Some(scale), ModalityTransform::Rescale { slope, intercept }) => {
            ModalityTransform::Rescale {
                slope: slope * scale,
                intercept: intercept * scale,
            }
        }
        (_, transform) => transform,
    };
    let mut frames = Vec::with_capacity(layout.frames as usize);
    let mut photometric = Photometric::Monochrome2;
    for frame in 0..layout.frames {
        let (stored, colour) = decode_stored_frame(obj, &layout, frame, path)?;
        let values: Vec<f32> = match (colour, stored) {
            (DecodedColour::Palette, StoredSamples::Int(indices)) => {
                photometric = Photometric::Rgb;
                let Some(palette) = &palette else {
                    return Err(ImagingError::dicom(
                        path,
                        "PALETTE COLOR image without palette",
                    ));
                };
                palette
                    .apply(&indices)
                    .into_iter()
                    .map(|v| v as f32)
                    .collect()
            }
            (DecodedColour::YbrFull, StoredSamples::Int(mut ybr)) => {
                photometric = Photometric::Rgb;
                ybr_full_to_rgb(&mut ybr, layout.bits_allocated);
                ybr.into_iter()
                    .map(|v| transform.apply(v as f64) as f32)
                    .collect()
            }
            (DecodedColour::Rgb, stored)
            | (DecodedColour::Palette, stored)
            | (DecodedColour::YbrFull, stored) => {
                photometric = Photometric::Rgb;
                (0..stored.len())
                    .map(|i| transform.apply(stored.get_f64(i)) as f32)
                    .collect()
            }
            (DecodedColour::Grey, stored) => {
                photometric = if layout.photometric == "MONOCHROME1" {
                    Photometric::Monochrome1
                } else {
                    Photometric::Monochrome2
                };
                (0..stored.len())
                    .map(|i| transform.apply(stored.get_f64(i)) as f32)
                    .collect()
            }
        };
        frames.push(Frame { values });
    }
    let sample_max = match (&palette, photometric) {
        (Some(palette), _) => {
            let max_entry = palette
                .channels
                .iter()
                .flat_map(|c| c.entries.iter())
                .copied()
                .max()
                .unwrap_or(255);
            if max_entry > 255 || palette.bits > 8 {
                65535.0
            } else {
                255.0
            }
        }
        (None, Photometric::Rgb) => ((1u64 << layout.bits_stored.min(32)) - 1) as f32,
        _ => frames
            .iter()
            .filter_map(Frame::min_max)
            .map(|(_, hi)| hi)
            .fold(f32::MIN, f32::max)
            .max(1.0),
    };
    let (pixel_spacing_mm, pixel_spacing_note) = spacing(root);
    let (rescale_slope, rescale_intercept) = match &transform {
        ModalityTransform::Rescale { slope, intercept } => (Some(*slope), Some(*intercept)),
        _ => (None, None),
    };
    let voi_function = string_of(obj, tags::VOILUT_FUNCTION)
        .and_then(|s| VoiFunction::from_dicom(&s))
        .unwrap_or_default();
    Ok(Study {
        path: path.to_path_buf(),
        format: SourceFormat::Dicom {
            transfer_syntax_uid: ts_uid.clone(),
            transfer_syntax_name: ts_name,
            has_file_meta: has_dicm_magic(&read_head(path, 132).unwrap_or_default()),
        },
        width: layout.cols,
        height: layout.rows,
        photometric,
        stored_photometric: layout.photometric.clone(),
        frames,
        sample_max,
        pixel_spacing_mm,
        pixel_spacing_note,
        file_window: if photometric == Photometric::Rgb {
            None
        } else {
            window_of(obj)
        },
        voi_function,
        summary: Summary {
            modality: string_of(obj, tags::MODALITY),
            body_part: string_of(obj, tags::BODY_PART_EXAMINED),
            manufacturer: string_of(obj, tags::MANUFACTURER),
            sop_class: string_of(obj, tags::SOP_CLASS_UID).map(|uid| sop_class_name(&uid)),
            bits_allocated: Some(layout.bits_allocated as u16),
            bits_stored: Some(layout.bits_stored as u16),
            signed: Some(layout.signed),
            rescale_slope,
            rescale_intercept,
            rescale_type: string_of(obj, tags::RESCALE_TYPE)
                .or_else(|| dose_grid_scaling.and(string_of(obj, tags::DOSE_UNITS))),
            slice_thickness_mm: floats_of(root, tags::SLICE_THICKNESS).map(|v| v[0]),
            lossy: is_lossy(&ts_uid, obj),
        },
        identity: identity_of(obj),
    })
}

/// Pixel Spacing, else Imager Pixel Spacing (which is measured at the detector, not in the
/// patient), with a note saying which; a spacing that is missing a value, zero, negative or not
/// finite is unknown, and the note says what the file gave.
fn spacing(root: &InMemDicomObject) -> (Option<[f64; 2]>, Option<String>) {
    for (tag, name) in [
        (tags::PIXEL_SPACING, "Pixel Spacing"),
        (
            tags::IMAGER_PIXEL_SPACING,
            "Imager Pixel Spacing (at the detector)",
        ),
    ] {
        let Some(values) = floats_of(root, tag) else {
            continue;
        };
        return match values.as_slice() {
            [row, col, ..] if [*row, *col].iter().all(|v| v.is_finite() && *v > 0.0) => {
                (Some([*row, *col]), Some(name.to_string()))
            }
            [row, col, ..] => (None, Some(format!("{name} is {row} x {col} mm"))),
            _ => (None, Some(format!("{name} has {} value(s)", values.len()))),
        };
    }
    (None, None)
}

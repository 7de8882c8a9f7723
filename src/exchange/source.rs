//! What an export needs of the image it refers to: its UIDs, geometry and the Patient and
//! Study modules, read again from the source file's header (never from the decoded study,
//! which keeps no identifiers).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use dicom_dictionary_std::tags;
use dicom_object::{InMemDicomObject, OpenFileOptions};

use super::elements::{first_item, floats, text_of};

/// A DICOM image (one frame of it) that an export references.
pub struct SourceImage {
    pub path: PathBuf,
    /// 0-based frame of the source.
    pub frame: usize,
    pub frames: usize,
    pub rows: u32,
    pub columns: u32,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub series_uid: String,
    pub frame_of_reference_uid: Option<String>,
    pub position: Option<[f64; 3]>,
    pub orientation: Option<[f64; 6]>,
    pub pixel_spacing: Option<[f64; 2]>,
    pub slice_thickness: Option<f64>,
    /// The header (everything before the pixel data), for the Patient and Study modules.
    pub header: InMemDicomObject,
}

/// A functional-group item of `frame`: per-frame first, then shared.
fn functional(
    root: &InMemDicomObject,
    frame: usize,
    group: dicom_core::Tag,
) -> Option<&InMemDicomObject> {
    root.get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|e| e.items())
        .and_then(|items| items.get(frame))
        .and_then(|item| first_item(item, group))
        .or_else(|| {
            first_item(root, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)
                .and_then(|shared| first_item(shared, group))
        })
}

impl SourceImage {
    /// Read `path`'s header; `frame` is the frame the export is about.
    pub fn read(path: &Path, frame: usize) -> Result<SourceImage> {
        let head = std::fs::read(path)
            .map(|b| b.get(128..132) == Some(b"DICM"))
            .with_context(|| format!("cannot read {}", path.display()))?;
        if !head {
            bail!(
                "a DICOM export refers to a DICOM image; this is not a DICOM file with a meta header: {}",
                path.display()
            );
        }
        let obj = OpenFileOptions::new()
            .read_until(tags::PIXEL_DATA)
            .open_file(path)
            .with_context(|| format!("cannot parse DICOM: {}", path.display()))?;
        let header: InMemDicomObject = obj.into_inner();
        let need = |tag, name: &str| {
            text_of(&header, tag).with_context(|| {
                format!(
                    "the source image has no {name}, which the export must refer to: {}",
                    path.display()
                )
            })
        };
        let sop_class_uid = need(tags::SOP_CLASS_UID, "SOP Class UID")?;
        let sop_instance_uid = need(tags::SOP_INSTANCE_UID, "SOP Instance UID")?;
        let series_uid = need(tags::SERIES_INSTANCE_UID, "Series Instance UID")?;
        let int = |tag| header.get(tag).and_then(|e| e.to_int::<u32>().ok());
        let rows = int(tags::ROWS).with_context(|| format!("no Rows: {}", path.display()))?;
        let columns =
            int(tags::COLUMNS).with_context(|| format!("no Columns: {}", path.display()))?;
        let frames = int(tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1) as usize;
        if frame >= frames {
            bail!(
                "frame {frame} does not exist, the image has {frames} frame(s): {}",
                path.display()
            );
        }
        let enhanced = header
            .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
            .is_some();
        let (position, orientation, pixel_spacing, slice_thickness) = if enhanced {
            let measures = functional(&header, frame, tags::PIXEL_MEASURES_SEQUENCE);
            (
                functional(&header, frame, tags::PLANE_POSITION_SEQUENCE)
                    .and_then(|g| floats::<3>(g, tags::IMAGE_POSITION_PATIENT)),
                functional(&header, frame, tags::PLANE_ORIENTATION_SEQUENCE)
                    .and_then(|g| floats::<6>(g, tags::IMAGE_ORIENTATION_PATIENT)),
                measures.and_then(|g| floats::<2>(g, tags::PIXEL_SPACING)),
                measures
                    .and_then(|g| floats::<1>(g, tags::SLICE_THICKNESS))
                    .map(|v| v[0]),
            )
        } else {
            (
                floats::<3>(&header, tags::IMAGE_POSITION_PATIENT),
                floats::<6>(&header, tags::IMAGE_ORIENTATION_PATIENT),
                floats::<2>(&header, tags::PIXEL_SPACING),
                floats::<1>(&header, tags::SLICE_THICKNESS).map(|v| v[0]),
            )
        };
        Ok(SourceImage {
            path: path.to_path_buf(),
            frame,
            frames,
            rows,
            columns,
            sop_class_uid,
            sop_instance_uid,
            series_uid,
            frame_of_reference_uid: text_of(&header, tags::FRAME_OF_REFERENCE_UID),
            position,
            orientation,
            pixel_spacing: pixel_spacing.filter(|s| s.iter().all(|v| *v > 0.0)),
            slice_thickness: slice_thickness.filter(|v| *v > 0.0),
            header,
        })
    }

    /// A Source Image Sequence item's elements for this image (frame): Referenced SOP Class
    /// and Instance (the instance UID as `exporter` writes it), the frame number for a
    /// multi-frame source, and the purpose of the reference (a DCM code and its meaning).
    pub fn reference(
        &self,
        exporter: &mut super::deid::Exporter,
        purpose: (&str, &str),
    ) -> Vec<dicom_core::DataElement<InMemDicomObject>> {
        use super::elements::{code_item, sequence, text};
        use dicom_core::VR;
        let mut elements = vec![
            text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, &self.sop_class_uid),
            text(
                tags::REFERENCED_SOP_INSTANCE_UID,
                VR::UI,
                &exporter.uid(&self.sop_instance_uid),
            ),
        ];
        if self.frames > 1 {
            elements.push(text(
                tags::REFERENCED_FRAME_NUMBER,
                VR::IS,
                &(self.frame + 1).to_string(),
            ));
        }
        elements.push(sequence(
            tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
            vec![code_item(purpose.0, "DCM", purpose.1)],
        ));
        elements
    }

    /// Whether the image has a patient geometry a SEG can carry (Frame of Reference,
    /// position, orientation and spacing).
    pub fn has_geometry(&self) -> bool {
        self.frame_of_reference_uid.is_some()
            && self.position.is_some()
            && self.orientation.is_some()
            && self.pixel_spacing.is_some()
    }
}

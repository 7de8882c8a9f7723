//! DICOM SEG in: the frames of a SEG that belong to the open image: by referenced SOP Instance
//! UID and frame (per frame, as highdicom and dcmqi write them, or shared); else by where the
//! frames lie (seg_place.rs: orientation, within half a slice spacing, same pixel grid), which
//! also places a de-identified export, whose UIDs no longer name its source but whose geometry
//! is still the patient's; a SEG of another slice is refused with its distance. Only a SEG
//! with no geometry at all that names one other image is placed with a note. A segment
//! carrying a fovea shape that still matches its pixels comes back as that shape; others
//! become mask regions; fovea's own attention segments are skipped.

use std::path::Path;

use anyhow::{bail, Context, Result};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::elements::{first_item, floats, text_of};
use super::seg::SEGMENTATION_STORAGE;
use super::seg_place::{describe_references, OpenSlice, Placement, Plane};
use super::source::SourceImage;
use crate::grounding::region::Region;

/// What the Segment Sequence says of one segment.
struct SegmentInfo {
    number: u32,
    label: String,
    manual: bool,
    /// Category "Physical object": fovea's distractors.
    object: bool,
    /// A fovea shape carried in Segment Description.
    shape: Option<Region>,
    /// One of fovea's own attention segments (algorithm name "fovea ...").
    own_map: bool,
}

impl SegmentInfo {
    fn of(
        item: &InMemDicomObject,
        int: &dyn Fn(&InMemDicomObject, dicom_core::Tag) -> Option<u32>,
    ) -> SegmentInfo {
        let number = int(item, tags::SEGMENT_NUMBER).unwrap_or(0);
        SegmentInfo {
            number,
            label: text_of(item, tags::SEGMENT_LABEL)
                .unwrap_or_else(|| format!("segment {number}")),
            manual: text_of(item, tags::SEGMENT_ALGORITHM_TYPE).as_deref() == Some("MANUAL"),
            object: first_item(item, tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE)
                .and_then(|c| text_of(c, tags::CODE_VALUE))
                .as_deref()
                == Some("260787004"),
            shape: text_of(item, tags::SEGMENT_DESCRIPTION)
                .and_then(|d| d.strip_prefix("fovea:").map(str::to_string))
                .and_then(|json| serde_json::from_str::<Region>(&json).ok()),
            own_map: text_of(item, tags::SEGMENT_ALGORITHM_NAME)
                .is_some_and(|name| name.starts_with("fovea ")),
        }
    }
}

/// A segment read from a SEG, on the open image.
#[derive(Clone, Debug)]
pub struct ImportedSegment {
    pub label: String,
    pub manual: bool,
    /// The segment's category was "Physical object" (fovea's distractor regions).
    pub object: bool,
    pub region: Region,
}

/// What an import found, with what the user should know about how it matched.
#[derive(Clone, Debug, Default)]
pub struct Imported {
    pub segments: Vec<ImportedSegment>,
    pub notes: Vec<String>,
}

/// Read the segments of the SEG at `path` that lie on the open image: `image` is the open
/// DICOM (its header is read), `frame` its frame; `width x height` its size.
pub fn import(
    path: &Path,
    image: &Path,
    frame: usize,
    series_spacing_mm: Option<f64>,
) -> Result<Imported> {
    let seg = dicom_object::OpenFileOptions::new()
        .open_file(path)
        .with_context(|| format!("cannot parse DICOM: {}", path.display()))?;
    let seg: &InMemDicomObject = &seg;
    if text_of(seg, tags::SOP_CLASS_UID).as_deref() != Some(SEGMENTATION_STORAGE) {
        bail!(
            "not a DICOM Segmentation (SOP Class UID is not 1.2.840.10008.5.1.4.1.1.66.4): {}",
            path.display()
        );
    }
    let source = SourceImage::read(image, frame)?;
    let int = |obj: &InMemDicomObject, tag| obj.get(tag).and_then(|e| e.to_int::<u32>().ok());
    let rows = int(seg, tags::ROWS).context("SEG without Rows")?;
    let columns = int(seg, tags::COLUMNS).context("SEG without Columns")?;
    if (rows, columns) != (source.rows, source.columns) {
        bail!(
            "the SEG is {columns} x {rows} px, the open image {} x {} px: {}",
            source.columns,
            source.rows,
            path.display()
        );
    }
    let frames = int(seg, tags::NUMBER_OF_FRAMES).unwrap_or(1) as usize;
    let kind = text_of(seg, tags::SEGMENTATION_TYPE).unwrap_or_default();
    let bits = int(seg, tags::BITS_ALLOCATED).unwrap_or(1);
    let max_fraction = int(seg, tags::MAXIMUM_FRACTIONAL_VALUE).unwrap_or(255);
    let data = seg
        .get(tags::PIXEL_DATA)
        .context("SEG without Pixel Data")?
        .to_bytes()
        .map_err(|e| anyhow::anyhow!("SEG pixel data unreadable ({e}): {}", path.display()))?;
    let n = rows as usize * columns as usize;
    let bits_per_pixel = if kind == "BINARY" || bits == 1 { 1 } else { 8 };
    if n == 0 || frames as u64 * n as u64 * bits_per_pixel > data.len() as u64 * 8 {
        bail!(
            "the SEG's pixel data holds fewer than the {frames} frame(s) of {columns} x {rows} it declares: {}",
            path.display()
        );
    }
    let pixel = |f: usize, i: usize| -> bool {
        let k = f * n + i;
        match (kind.as_str(), bits) {
            ("BINARY", _) | (_, 1) => data.get(k / 8).is_some_and(|b| b >> (k % 8) & 1 == 1),
            _ => data
                .get(k)
                .is_some_and(|&v| v as u32 * 2 >= max_fraction.max(1)),
        }
    };
    let segments_info: Vec<SegmentInfo> = seg
        .get(tags::SEGMENT_SEQUENCE)
        .and_then(|e| e.items())
        .map(|items| {
            items
                .iter()
                .map(|item| SegmentInfo::of(item, &int))
                .collect()
        })
        .unwrap_or_default();
    let per_frame = seg
        .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|e| e.items())
        .map(|items| items.to_vec())
        .unwrap_or_default();
    let shared = first_item(seg, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    let same_frame_of_reference = text_of(seg, tags::FRAME_OF_REFERENCE_UID).is_some()
        && text_of(seg, tags::FRAME_OF_REFERENCE_UID) == source.frame_of_reference_uid;
    let same_series = first_item(seg, tags::REFERENCED_SERIES_SEQUENCE)
        .and_then(|s| text_of(s, tags::SERIES_INSTANCE_UID))
        .is_some_and(|uid| uid == source.series_uid);
    // Which frames reference the open image, and where each frame lies.
    let mut on_image = vec![false; frames];
    let mut referenced: Vec<Option<(String, u32)>> = vec![None; frames];
    let mut planes: Vec<Option<Plane>> = Vec::with_capacity(frames);
    for f in 0..frames {
        let group = |tag| {
            per_frame
                .get(f)
                .and_then(|item| first_item(item, tag))
                .or_else(|| shared.and_then(|s| first_item(s, tag)))
        };
        let source_item = group(tags::DERIVATION_IMAGE_SEQUENCE)
            .and_then(|d| first_item(d, tags::SOURCE_IMAGE_SEQUENCE));
        if let Some(item) = source_item {
            let uid = text_of(item, tags::REFERENCED_SOP_INSTANCE_UID).unwrap_or_default();
            let number = int(item, tags::REFERENCED_FRAME_NUMBER).unwrap_or(1);
            on_image[f] = uid == source.sop_instance_uid && number as usize == source.frame + 1;
            referenced[f] = Some((uid, number));
        }
        planes.push(
            group(tags::PLANE_POSITION_SEQUENCE)
                .and_then(|p| floats::<3>(p, tags::IMAGE_POSITION_PATIENT))
                .map(|position| Plane {
                    position,
                    orientation: group(tags::PLANE_ORIENTATION_SEQUENCE)
                        .and_then(|o| floats::<6>(o, tags::IMAGE_ORIENTATION_PATIENT)),
                }),
        );
    }
    let by_reference = on_image.iter().filter(|&&on| on).count();
    let seg_has_geometry = planes.iter().any(Option::is_some);
    let slice = OpenSlice::of(&source, seg, shared, series_spacing_mm);
    let names_this_series = same_series || same_frame_of_reference;
    let mut notes = Vec::new();
    if by_reference == 0 && seg_has_geometry {
        // No frame names the open image: where its frames lie decides. In the same Frame of
        // Reference that is the scanner's geometry; otherwise (a de-identified export, whose
        // UIDs were all remapped) positions and orientations are still the patient's, not
        // identifying, and still say which slice a frame was drawn on.
        let Some(slice) = &slice else {
            bail!(
                "the SEG's frames carry a patient position, the open image none, so fovea cannot tell whether the SEG lies on it: {}",
                path.display()
            );
        };
        let placements: Vec<Option<Placement>> = planes
            .iter()
            .map(|plane| plane.as_ref().map(|p| slice.place(p)))
            .collect();
        for (f, placement) in placements.iter().enumerate() {
            on_image[f] = placement.as_ref().is_some_and(Placement::on_slice);
        }
        let placed = on_image.iter().filter(|&&on| on).count();
        if placed == 0 {
            let why = slice.why_not(&placements, &planes);
            if names_this_series {
                bail!(
                    "the SEG lies on another image of this {} (it refers to {}), {why}: {}",
                    if same_series {
                        "series"
                    } else {
                        "Frame of Reference"
                    },
                    describe_references(&referenced),
                    path.display()
                );
            }
            bail!(
                "the SEG names no image of this series (a de-identified export no longer names its source); by its Image Position (Patient) it lies {why}: {}",
                path.display()
            );
        }
        notes.push(format!(
            "{placed} frame(s) placed by Image Position (Patient): {}",
            if names_this_series {
                "in the open slice's plane, in the same Frame of Reference".to_string()
            } else {
                "the SEG names no image of this series (a de-identified export no longer names its source), and its frames lie in the open slice's plane (within half the slice spacing)".to_string()
            }
        ));
    } else if by_reference == 0 {
        let distinct: std::collections::BTreeSet<_> = referenced.iter().flatten().collect();
        if names_this_series {
            bail!(
                "the SEG lies on another image of this {} (it refers to {}), not on the open one: {}",
                if same_series { "series" } else { "Frame of Reference" },
                describe_references(&referenced),
                path.display()
            );
        }
        if distinct.len() > 1 {
            bail!(
                "the SEG refers to {} other images, none of them the open one: {}",
                distinct.len(),
                path.display()
            );
        }
        on_image = vec![true; frames];
        notes.push(
            "the SEG refers to another image (de-identified exports no longer name their source) and carries no patient geometry to check; placed on the open image because it is one image of the same size".into(),
        );
    }
    let mut segments = Vec::new();
    for f in (0..frames).filter(|&f| on_image[f]) {
        let number = per_frame
            .get(f)
            .and_then(|item| first_item(item, tags::SEGMENT_IDENTIFICATION_SEQUENCE))
            .and_then(|s| int(s, tags::REFERENCED_SEGMENT_NUMBER))
            .unwrap_or(f as u32 + 1);
        let pixels: Vec<bool> = (0..n).map(|i| pixel(f, i)).collect();
        let (label, manual, object, shape) = match segments_info.iter().find(|s| s.number == number)
        {
            Some(info) if info.own_map => {
                // fovea's own maps (triage mask, thresholded map) are the model's, not regions.
                notes.push(format!(
                    "skipped {:?}: fovea's own attention segment",
                    info.label
                ));
                continue;
            }
            Some(info) => (
                info.label.clone(),
                info.manual,
                info.object,
                info.shape.clone(),
            ),
            None => (format!("segment {number}"), false, false, None),
        };
        let region = match shape {
            Some(shape) if shape.pixel_mask(columns, rows) == pixels => shape,
            _ => match Region::from_mask(columns, rows, &pixels) {
                Some(region) => region,
                None => {
                    notes.push(format!("segment {label:?} is empty on this image"));
                    continue;
                }
            },
        };
        segments.push(ImportedSegment {
            label,
            manual,
            object,
            region,
        });
    }
    Ok(Imported { segments, notes })
}

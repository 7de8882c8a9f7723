//! The embedded default: synthetic phantom cases with known lesions (the demo model is
//! trained on them by `tools/train_demo_model.py`), and writers for datasets in the VGMED
//! field layout.

pub mod assets;
pub mod ct_series;
pub mod phantom;

use std::path::Path;

use anyhow::{Context, Result};

pub use assets::{
    assets_dir, demo_cases_file, demo_model_dir, load_demo_cases, CaseOverlay, CaseView, DemoCase,
};
pub use phantom::{generate, Case, Family, Recipe};

/// One VGMED-style JSONL row.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct VgmedRow {
    pub image: String,
    pub question: String,
    pub answer: String,
    pub modality: String,
    pub label: String,
    pub original_bboxes: Vec<[f64; 4]>,
    pub family: Family,
    pub seed: u64,
    pub distractor: Option<phantom::Distractor>,
    /// Boxes of the case's distractors (xyxy px), when it has any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distractor_bboxes: Vec<[f64; 4]>,
    /// The case's side marker contradicts its lesion (`fovea phantom --conflict`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub conflict: bool,
    /// The case's side marker agrees with its lesion (`fovea phantom --shortcut`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shortcut: bool,
}

/// The rows of a case (one per question), with `image` as given.
pub fn rows(case: &Case, image: &str) -> Vec<VgmedRow> {
    case.questions()
        .into_iter()
        .map(|qa| VgmedRow {
            image: image.to_string(),
            original_bboxes: case.boxes_for(&qa.question),
            question: qa.question,
            answer: qa.answer,
            modality: case.family.modality().to_string(),
            label: qa.label,
            family: case.family,
            seed: case.seed,
            distractor: case.distractors.first().copied(),
            distractor_bboxes: case.distractor_boxes.clone(),
            conflict: case.conflict,
            shortcut: case.shortcut,
        })
        .collect()
}

/// A greyscale phantom as a DICOM Secondary Capture (no patient data beyond placeholders).
pub fn dicom_bytes(case: &Case) -> Result<Vec<u8>> {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::{tags, uids};
    use dicom_object::InMemDicomObject;
    let instance_uid = format!(
        "2.25.{}",
        case.seed.wrapping_mul(2654435761).wrapping_add(1)
    );
    let mut obj = InMemDicomObject::new_empty();
    let text = |tag, vr, value: &str| DataElement::new(tag, vr, PrimitiveValue::from(value));
    obj.put(text(
        tags::SOP_CLASS_UID,
        VR::UI,
        uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
    ));
    obj.put(text(tags::SOP_INSTANCE_UID, VR::UI, &instance_uid));
    // Each phantom is its own study and series, as a PACS needs to file it (and a SEG or a
    // Secondary Capture exported from it to refer to it).
    obj.put(text(
        tags::STUDY_INSTANCE_UID,
        VR::UI,
        &format!("{instance_uid}.1"),
    ));
    obj.put(text(
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        &format!("{instance_uid}.2"),
    ));
    obj.put(text(tags::CONVERSION_TYPE, VR::CS, "WSD"));
    obj.put(text(
        tags::MODALITY,
        VR::CS,
        if case.family == Family::ChestXray {
            "DX"
        } else {
            "MR"
        },
    ));
    obj.put(text(tags::PATIENT_NAME, VR::PN, "Phantom^Demo"));
    obj.put(text(
        tags::PATIENT_ID,
        VR::LO,
        &format!("PHANTOM-{}", case.seed),
    ));
    obj.put(text(
        tags::STUDY_DESCRIPTION,
        VR::LO,
        "fovea synthetic phantom",
    ));
    obj.put(text(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2",
    ));
    let (width, height) = case.image.dimensions();
    let us = |tag, value: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(value));
    obj.put(us(tags::SAMPLES_PER_PIXEL, 1));
    obj.put(us(tags::ROWS, height as u16));
    obj.put(us(tags::COLUMNS, width as u16));
    obj.put(us(tags::BITS_ALLOCATED, 8));
    obj.put(us(tags::BITS_STORED, 8));
    obj.put(us(tags::HIGH_BIT, 7));
    obj.put(us(tags::PIXEL_REPRESENTATION, 0));
    obj.put(text(tags::WINDOW_CENTER, VR::DS, "128"));
    obj.put(text(tags::WINDOW_WIDTH, VR::DS, "256"));
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::from(case.image.as_raw().clone()),
    ));
    part10_bytes(obj, uids::SECONDARY_CAPTURE_IMAGE_STORAGE, &instance_uid)
}

/// A data set as Part 10 bytes (Explicit VR Little Endian), for the phantom writers.
fn part10_bytes(
    obj: dicom_object::InMemDicomObject,
    sop_class: &str,
    sop_instance: &str,
) -> Result<Vec<u8>> {
    use dicom_dictionary_std::uids;
    let file = obj
        .with_meta(
            dicom_object::FileMetaTableBuilder::new()
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .media_storage_sop_class_uid(sop_class)
                .media_storage_sop_instance_uid(sop_instance),
        )
        .context("cannot build the DICOM meta header")?;
    let mut bytes = Vec::new();
    file.write_all(&mut bytes).context("cannot encode DICOM")?;
    Ok(bytes)
}

/// Write `n` cases from `seed` into `out`: images plus `cases.jsonl`.
pub fn write_dataset(
    out: &Path,
    n: usize,
    seed: u64,
    recipe: &Recipe,
    dicom: bool,
    mut progress: impl FnMut(usize),
) -> Result<usize> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut jsonl = String::new();
    let mut count = 0;
    for index in 0..n {
        let case = generate(seed.wrapping_add(index as u64), recipe);
        let name = if dicom {
            format!("case-{index:05}.dcm")
        } else {
            format!("case-{index:05}.png")
        };
        let bytes = if dicom {
            dicom_bytes(&case)?
        } else {
            let mut png = Vec::new();
            case.image
                .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                .context("cannot encode PNG")?;
            png
        };
        crate::io::write_bytes(&out.join(&name), &bytes)?;
        for row in rows(&case, &name) {
            jsonl.push_str(&serde_json::to_string(&row)?);
            jsonl.push('\n');
            count += 1;
        }
        progress(index + 1);
    }
    crate::io::write_bytes(&out.join("cases.jsonl"), jsonl.as_bytes())?;
    Ok(count)
}

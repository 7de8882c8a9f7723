//! A synthetic axial CT series for teaching and for the series tests: an elliptic body of soft
//! tissue, two lungs, a spine and one round lesion, in Hounsfield units, stored as a folder of
//! single-frame CT Image Storage files the way a scanner's export looks. File names are
//! shuffled and Instance Numbers disagree with the positions, so a viewer that orders by
//! either shows the slices out of order; only Image Position (Patient) along the normal is
//! right.

use std::path::Path;

use anyhow::{Context, Result};

/// The series' geometry, also what a test needs to know where each slice is.
#[derive(Clone, Copy, Debug)]
pub struct CtSeries {
    pub slices: usize,
    pub side_px: u16,
    pub pixel_spacing_mm: f64,
    pub slice_spacing_mm: f64,
    pub seed: u64,
}

impl Default for CtSeries {
    fn default() -> Self {
        CtSeries {
            slices: 200,
            side_px: 128,
            pixel_spacing_mm: 3.0,
            slice_spacing_mm: 2.5,
            seed: 0,
        }
    }
}

/// Where the lesion is: centre in patient mm (LPS) and radius.
pub const LESION_CENTRE_MM: [f64; 3] = [60.0, -20.0, 0.0];
pub const LESION_RADIUS_MM: f64 = 25.0;

impl CtSeries {
    /// Image Position (Patient) of slice `k` in anatomical order (feet to head).
    pub fn position(&self, k: usize) -> [f64; 3] {
        let half = self.side_px as f64 * self.pixel_spacing_mm / 2.0;
        let z0 = -(self.slices as f64 - 1.0) * self.slice_spacing_mm / 2.0;
        [-half, -half, z0 + k as f64 * self.slice_spacing_mm]
    }

    /// The file name of slice `k`: a fixed permutation of the indices.
    pub fn file_name(&self, k: usize) -> String {
        format!("IM{:05}", shuffled(k, self.slices, self.seed ^ 0x5eed))
    }

    /// Instance Number of slice `k`: another permutation (scanners renumber after reformats).
    pub fn instance_number(&self, k: usize) -> i64 {
        shuffled(k, self.slices, self.seed ^ 0x1257) as i64 + 1
    }

    /// Hounsfield units at pixel centre (col, row) of slice `k`.
    pub fn hu(&self, k: usize, col: usize, row: usize) -> f64 {
        let p0 = self.position(k);
        let x = p0[0] + col as f64 * self.pixel_spacing_mm;
        let y = p0[1] + row as f64 * self.pixel_spacing_mm;
        let z = p0[2];
        let inside = |cx: f64, cy: f64, rx: f64, ry: f64| {
            ((x - cx) / rx).powi(2) + ((y - cy) / ry).powi(2) <= 1.0
        };
        let lesion = (x - LESION_CENTRE_MM[0]).powi(2)
            + (y - LESION_CENTRE_MM[1]).powi(2)
            + (z - LESION_CENTRE_MM[2]).powi(2)
            <= LESION_RADIUS_MM.powi(2);
        let texture = ((x * 0.37).sin() * (y * 0.29).cos() + (z * 0.11).sin()) * 8.0;
        if !inside(0.0, 0.0, 170.0, 120.0) {
            return -1000.0;
        }
        if lesion {
            return 130.0 + texture;
        }
        if inside(0.0, 75.0, 18.0, 18.0) {
            return 700.0 + texture * 4.0;
        }
        let lungs = z > -150.0;
        if lungs && (inside(-75.0, -10.0, 55.0, 80.0) || inside(75.0, -10.0, 55.0, 80.0)) {
            return -850.0 + texture;
        }
        40.0 + texture
    }
}

/// A seeded permutation of 0..n (multiplicative step coprime with n, then an offset).
fn shuffled(k: usize, n: usize, seed: u64) -> usize {
    let mut step = (seed as usize % n.max(1)) | 1;
    while gcd(step, n) != 1 {
        step += 2;
    }
    (k * step + seed as usize / 7) % n.max(1)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Write the series into `out` (created if missing); returns the number of files.
pub fn write(out: &Path, series: &CtSeries) -> Result<usize> {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::{tags, uids};
    use dicom_object::InMemDicomObject;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let root = format!("2.25.{}", 0xF0_7EA0_0000_u64 + series.seed * 1000);
    let study_uid = format!("{root}.1");
    let series_uid = format!("{root}.2");
    let frame_uid = format!("{root}.3");
    let side = series.side_px as usize;
    for k in 0..series.slices {
        let mut obj = InMemDicomObject::new_empty();
        let text = |tag, vr, value: &str| DataElement::new(tag, vr, PrimitiveValue::from(value));
        let instance_uid = format!("{root}.4.{}", k + 1);
        let position = series.position(k);
        let ds = |v: f64| format!("{v:.4}");
        for (tag, vr, value) in [
            (
                tags::SPECIFIC_CHARACTER_SET,
                VR::CS,
                "ISO_IR 100".to_string(),
            ),
            (tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY\\AXIAL".into()),
            (tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE.into()),
            (tags::SOP_INSTANCE_UID, VR::UI, instance_uid.clone()),
            (tags::STUDY_DATE, VR::DA, "20260315".into()),
            (tags::STUDY_TIME, VR::TM, "101500".into()),
            (tags::ACCESSION_NUMBER, VR::SH, "PHANTOM-ACC".into()),
            (tags::MODALITY, VR::CS, "CT".into()),
            (tags::MANUFACTURER, VR::LO, "fovea phantom".into()),
            (tags::REFERRING_PHYSICIAN_NAME, VR::PN, "".into()),
            (tags::STUDY_DESCRIPTION, VR::LO, "fovea synthetic CT".into()),
            (
                tags::SERIES_DESCRIPTION,
                VR::LO,
                "AXIAL 2.5 mm phantom".into(),
            ),
            (tags::PATIENT_NAME, VR::PN, "Phantom^CT".into()),
            (
                tags::PATIENT_ID,
                VR::LO,
                format!("PHANTOM-CT-{}", series.seed),
            ),
            (tags::PATIENT_BIRTH_DATE, VR::DA, "".into()),
            (tags::PATIENT_SEX, VR::CS, "O".into()),
            (tags::BODY_PART_EXAMINED, VR::CS, "CHEST".into()),
            (tags::SLICE_THICKNESS, VR::DS, ds(series.slice_spacing_mm)),
            (tags::KVP, VR::DS, "120".into()),
            (tags::PATIENT_POSITION, VR::CS, "HFS".into()),
            (tags::STUDY_INSTANCE_UID, VR::UI, study_uid.clone()),
            (tags::SERIES_INSTANCE_UID, VR::UI, series_uid.clone()),
            (tags::STUDY_ID, VR::SH, "1".into()),
            (tags::SERIES_NUMBER, VR::IS, "3".into()),
            (
                tags::INSTANCE_NUMBER,
                VR::IS,
                series.instance_number(k).to_string(),
            ),
            (
                tags::IMAGE_POSITION_PATIENT,
                VR::DS,
                format!(
                    "{}\\{}\\{}",
                    ds(position[0]),
                    ds(position[1]),
                    ds(position[2])
                ),
            ),
            (
                tags::IMAGE_ORIENTATION_PATIENT,
                VR::DS,
                "1\\0\\0\\0\\1\\0".into(),
            ),
            (tags::FRAME_OF_REFERENCE_UID, VR::UI, frame_uid.clone()),
            (tags::POSITION_REFERENCE_INDICATOR, VR::LO, "".into()),
            (
                tags::PHOTOMETRIC_INTERPRETATION,
                VR::CS,
                "MONOCHROME2".into(),
            ),
            (
                tags::PIXEL_SPACING,
                VR::DS,
                format!(
                    "{}\\{}",
                    ds(series.pixel_spacing_mm),
                    ds(series.pixel_spacing_mm)
                ),
            ),
            (tags::WINDOW_CENTER, VR::DS, "40".into()),
            (tags::WINDOW_WIDTH, VR::DS, "400".into()),
            (tags::RESCALE_INTERCEPT, VR::DS, "-1024".into()),
            (tags::RESCALE_SLOPE, VR::DS, "1".into()),
            (tags::RESCALE_TYPE, VR::LO, "HU".into()),
        ] {
            obj.put(text(tag, vr, &value));
        }
        let us = |tag, value: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(value));
        obj.put(us(tags::SAMPLES_PER_PIXEL, 1));
        obj.put(us(tags::ROWS, series.side_px));
        obj.put(us(tags::COLUMNS, series.side_px));
        obj.put(us(tags::BITS_ALLOCATED, 16));
        obj.put(us(tags::BITS_STORED, 12));
        obj.put(us(tags::HIGH_BIT, 11));
        obj.put(us(tags::PIXEL_REPRESENTATION, 0));
        let mut pixels = Vec::with_capacity(side * side);
        for row in 0..side {
            for col in 0..side {
                let stored = (series.hu(k, col, row) + 1024.0).round().clamp(0.0, 4095.0);
                pixels.push(stored as u16);
            }
        }
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(pixels.into()),
        ));
        let bytes = super::part10_bytes(obj, uids::CT_IMAGE_STORAGE, &instance_uid)?;
        crate::io::write_bytes(&out.join(series.file_name(k)), &bytes)?;
    }
    Ok(series.slices)
}

//! Who the exported DICOM objects say the patient is. By default fovea's SEG and Secondary
//! Capture exports are de-identified after the DICOM PS3.15 Annex E Basic Application Level
//! Confidentiality Profile; the user may instead keep the source's identity so that a PACS
//! files the export beside its image.
//!
//! fovea never copies a source data set wholesale: an export is built from scratch, and only
//! the Patient and General Study modules (plus the references a SEG needs) come from the
//! source. De-identified, those become:
//! - Patient's Name and Patient ID: one pseudonym per source patient, `ANON-` and ten hex
//!   digits of a keyed hash (the key is random per export run, so pseudonyms cannot be
//!   recomputed from the patient ID by anyone else);
//! - Patient's Birth Date, Sex, Study Date and Time, Referring Physician, Study ID, Accession
//!   Number: present and empty (the profile's Z for these Type 2 attributes); every other
//!   patient, study and institution attribute (the profile's X) is simply not written;
//! - every UID from the source (Study and Series Instance UID, Frame of Reference, the
//!   referenced SOP Instance UIDs): remapped to `2.25.` UIDs from the same keyed hash, so
//!   references inside one export run (a SEG and a Secondary Capture of the same image)
//!   stay consistent with each other and no source UID appears;
//! - Patient Identity Removed = YES, De-identification Method and its code (113100, Basic
//!   Application Confidentiality Profile), Longitudinal Temporal Information Modified =
//!   REMOVED.
//!
//! The export's own Content Date and Time are when it was written.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::elements::{code_item, put, sequence};

/// The Type 2 attributes of the Patient and General Study modules: written even when empty.
/// The first two (name, ID) get the pseudonym when de-identified; the rest are emptied (Z).
const TYPE2: [(Tag, VR); 9] = [
    (tags::PATIENT_NAME, VR::PN),
    (tags::PATIENT_ID, VR::LO),
    (tags::PATIENT_BIRTH_DATE, VR::DA),
    (tags::PATIENT_SEX, VR::CS),
    (tags::STUDY_DATE, VR::DA),
    (tags::STUDY_TIME, VR::TM),
    (tags::REFERRING_PHYSICIAN_NAME, VR::PN),
    (tags::STUDY_ID, VR::SH),
    (tags::ACCESSION_NUMBER, VR::SH),
];

/// Whether an export keeps the patient's identity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IdentityChoice {
    /// PS3.15 Basic Profile: pseudonym, no dates, remapped UIDs (the default).
    #[default]
    Deidentify,
    /// "Keep patient identity for PACS": the source's Patient and Study modules and UIDs.
    Keep,
}

/// One export run's identity policy: the keyed hash, and the UIDs it has handed out.
pub struct Exporter {
    pub choice: IdentityChoice,
    key: std::collections::hash_map::RandomState,
    uids: HashMap<String, String>,
    counter: u64,
}

/// The De-identification Method (0012,0063) text fovea writes.
/// (LO: at most 64 characters.)
pub const METHOD: &str = "PS3.15 E.1 Basic Profile (fovea): pseudonym, no dates, new UIDs";

impl Exporter {
    pub fn new(choice: IdentityChoice) -> Exporter {
        Exporter {
            choice,
            key: std::collections::hash_map::RandomState::new(),
            uids: HashMap::new(),
            counter: 0,
        }
    }

    fn keyed(&self, text: &str, salt: u64) -> u128 {
        let mut high = self.key.build_hasher();
        high.write_u64(salt);
        high.write(text.as_bytes());
        let mut low = self.key.build_hasher();
        low.write_u64(salt ^ 0x9e37_79b9_7f4a_7c15);
        low.write(text.as_bytes());
        ((high.finish() as u128) << 64) | low.finish() as u128
    }

    /// A UID for a new object of this export (SOP Instance, Series, Dimension Organization).
    pub fn new_uid(&mut self) -> String {
        self.counter += 1;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        format!(
            "2.25.{}",
            self.keyed(&format!("new {} {stamp}", self.counter), 1) >> 1
        )
    }

    /// The UID an export writes for a source UID: itself when identity is kept, else a
    /// remapped one, the same every time within this export run.
    pub fn uid(&mut self, source: &str) -> String {
        if self.choice == IdentityChoice::Keep {
            return source.to_string();
        }
        if let Some(uid) = self.uids.get(source) {
            return uid.clone();
        }
        let uid = format!("2.25.{}", self.keyed(source, 2) >> 1);
        self.uids.insert(source.to_string(), uid.clone());
        uid
    }

    /// The pseudonym for a source patient (its ID, else its name).
    pub fn pseudonym(&self, patient: &str) -> String {
        format!("ANON-{:010X}", self.keyed(patient, 3) >> 88)
    }

    /// A new object of this export: SOP Common (UTF-8, class, a new instance UID, creation
    /// date and time), the Patient and General Study modules of `source`, and a new series of
    /// `modality` numbered `series_number`. Returns the object, its instance UID and the
    /// date and time it was made (DA, TM).
    pub fn start_object(
        &mut self,
        source: &InMemDicomObject,
        sop_class: &str,
        modality: &str,
        series_number: u32,
        series_description: &str,
    ) -> (InMemDicomObject, String, (String, String)) {
        let mut obj = InMemDicomObject::new_empty();
        let instance_uid = self.new_uid();
        let (date, time) = super::elements::now_da_tm();
        put(&mut obj, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
        put(&mut obj, tags::SOP_CLASS_UID, VR::UI, sop_class);
        put(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, &instance_uid);
        put(&mut obj, tags::INSTANCE_CREATION_DATE, VR::DA, &date);
        put(&mut obj, tags::INSTANCE_CREATION_TIME, VR::TM, &time);
        self.patient_and_study(source, &mut obj);
        put(&mut obj, tags::MODALITY, VR::CS, modality);
        let series_uid = self.new_uid();
        put(&mut obj, tags::SERIES_INSTANCE_UID, VR::UI, &series_uid);
        put(
            &mut obj,
            tags::SERIES_NUMBER,
            VR::IS,
            &series_number.to_string(),
        );
        put(
            &mut obj,
            tags::SERIES_DESCRIPTION,
            VR::LO,
            series_description,
        );
        put(&mut obj, tags::MANUFACTURER, VR::LO, "fovea");
        put(
            &mut obj,
            tags::SOFTWARE_VERSIONS,
            VR::LO,
            env!("CARGO_PKG_VERSION"),
        );
        (obj, instance_uid, (date, time))
    }

    /// Write the Patient and General Study modules of `source` into `target`, as this
    /// export's choice says.
    pub fn patient_and_study(&mut self, source: &InMemDicomObject, target: &mut InMemDicomObject) {
        let text = |tag: Tag| -> String {
            source
                .get(tag)
                .and_then(|e| e.to_str().ok())
                .map(|s| {
                    s.trim_matches(|c: char| c == '\0' || c.is_whitespace())
                        .to_string()
                })
                .unwrap_or_default()
        };
        let study_uid = text(tags::STUDY_INSTANCE_UID);
        let study_uid = if study_uid.is_empty() {
            self.new_uid()
        } else {
            self.uid(&study_uid)
        };
        put(target, tags::STUDY_INSTANCE_UID, VR::UI, &study_uid);
        match self.choice {
            IdentityChoice::Keep => {
                // Type 2 attributes are written even when the source lacks them.
                for (tag, vr) in TYPE2 {
                    put(target, tag, vr, &text(tag));
                }
                for (tag, vr) in [
                    (tags::ISSUER_OF_PATIENT_ID, VR::LO),
                    (tags::STUDY_DESCRIPTION, VR::LO),
                    (tags::PATIENT_AGE, VR::AS),
                ] {
                    let value = text(tag);
                    if !value.is_empty() {
                        put(target, tag, vr, &value);
                    }
                }
            }
            IdentityChoice::Deidentify => {
                let who = [text(tags::PATIENT_ID), text(tags::PATIENT_NAME)]
                    .into_iter()
                    .find(|s| !s.is_empty())
                    .unwrap_or_else(|| "unknown patient".into());
                let pseudonym = self.pseudonym(&who);
                // A family name and an empty given name: the PN form dciodvfy expects.
                put(target, tags::PATIENT_NAME, VR::PN, &format!("{pseudonym}^"));
                put(target, tags::PATIENT_ID, VR::LO, &pseudonym);
                for (tag, vr) in &TYPE2[2..] {
                    put(target, *tag, *vr, "");
                }
                put(target, tags::PATIENT_IDENTITY_REMOVED, VR::CS, "YES");
                put(target, tags::DEIDENTIFICATION_METHOD, VR::LO, METHOD);
                target.put(sequence(
                    tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE,
                    vec![code_item(
                        "113100",
                        "DCM",
                        "Basic Application Confidentiality Profile",
                    )],
                ));
                target.put(DataElement::new(
                    tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED,
                    VR::CS,
                    PrimitiveValue::from("REMOVED"),
                ));
            }
        }
    }
}

//! Reading a DICOM data set from disk: Part 10 files, files whose meta header says explicit VR
//! but which are implicit, and bare data sets without a meta header (old ACR-NEMA style).

use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};

use crate::imaging::error::{error_chain, ImagingError};
use crate::imaging::sniff::{check_lengths, has_dicm_magic, LengthCheck};

/// Read the data set of a file, with or without preamble and meta header.
pub fn open(path: &Path) -> Result<DefaultDicomObject, ImagingError> {
    let head = std::fs::read(path).map_err(|source| ImagingError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let check = check_lengths(&head, head.len() as u64);
    if let Some(problem) = check.problem() {
        return Err(ImagingError::dicom(path, problem));
    }
    // Straight to the implicit reading: parsing it as explicit first would take the first
    // element's bytes for a huge length.
    if check == LengthCheck::ImplicitUnderExplicitLabel {
        if let Some(obj) = reopen_as_implicit(&head) {
            return Ok(obj);
        }
    }
    if has_dicm_magic(&head) {
        let opened = OpenFileOptions::new()
            .read_preamble(dicom_object::file::ReadPreamble::Auto)
            .open_file(path)
            .map_err(|err| {
                ImagingError::dicom(path, format!("cannot parse DICOM ({})", error_chain(&err)))
            });
        return match opened {
            Ok(obj) => Ok(obj),
            // Some writers declare explicit VR but write implicit VR; pydicom reads those with
            // a warning, and so does fovea.
            Err(err) => reopen_as_implicit(&head).ok_or(err),
        };
    }
    open_bare(path, &head)
}

fn reopen_as_implicit(bytes: &[u8]) -> Option<DefaultDicomObject> {
    use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
    let start = if bytes.get(128..132) == Some(b"DICM") {
        128
    } else {
        0
    };
    let mut reader = bytes.get(start..)?;
    let mut meta = dicom_object::meta::FileMetaTable::from_reader(&mut reader).ok()?;
    let declared = meta.transfer_syntax().trim_end_matches('\0').to_string();
    if matches!(
        declared.as_str(),
        "1.2.840.10008.1.2" | "1.2.840.10008.1.2.2" | "1.2.840.10008.1.2.1.99"
    ) {
        return None;
    }
    let ts = IMPLICIT_VR_LITTLE_ENDIAN.erased();
    let dataset = InMemDicomObject::read_dataset_with_ts(reader, &ts).ok()?;
    dataset.get(tags::PIXEL_DATA)?;
    // The pixel data keeps the declared encoding (native or encapsulated).
    if declared == "1.2.840.10008.1.2.1" {
        meta.transfer_syntax = ts.uid().to_string();
    }
    Some(dataset.with_exact_meta(meta))
}

fn open_bare(path: &Path, bytes: &[u8]) -> Result<DefaultDicomObject, ImagingError> {
    use dicom_transfer_syntax_registry::entries::{
        EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
    };
    let explicit =
        bytes.len() > 6 && bytes[4].is_ascii_uppercase() && bytes[5].is_ascii_uppercase();
    let ts = if explicit {
        EXPLICIT_VR_LITTLE_ENDIAN.erased()
    } else {
        IMPLICIT_VR_LITTLE_ENDIAN.erased()
    };
    let dataset = InMemDicomObject::read_dataset_with_ts(bytes, &ts).map_err(|err| {
        ImagingError::dicom(
            path,
            format!(
                "cannot parse DICOM data set without meta header ({})",
                error_chain(&err)
            ),
        )
    })?;
    let uid = |tag| {
        dataset
            .get(tag)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
            .unwrap_or_else(|| "1.2.3.4".to_string())
    };
    let meta = dicom_object::meta::FileMetaTableBuilder::new()
        .transfer_syntax(ts.uid())
        .media_storage_sop_class_uid(uid(tags::SOP_CLASS_UID))
        .media_storage_sop_instance_uid(uid(tags::SOP_INSTANCE_UID))
        .implementation_class_uid("1.2.826.0.1.3680043.10.1483")
        .build()
        .map_err(|err| ImagingError::dicom(path, format!("cannot build a meta header ({err})")))?;
    Ok(dataset.with_exact_meta(meta))
}

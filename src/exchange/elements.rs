//! Small builders for DICOM data elements, so the writers read like the modules they fill.

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_object::InMemDicomObject;

/// Put a text element (numbers as DICOM strings for DS/IS; `\` separates values).
pub fn put(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: &str) {
    let value = if value.contains('\\') {
        PrimitiveValue::Strs(value.split('\\').map(str::to_string).collect())
    } else {
        PrimitiveValue::from(value)
    };
    obj.put(DataElement::new(tag, vr, value));
}

/// Put unsigned shorts.
pub fn put_us(obj: &mut InMemDicomObject, tag: Tag, values: &[u16]) {
    obj.put(DataElement::new(
        tag,
        VR::US,
        PrimitiveValue::U16(values.iter().copied().collect()),
    ));
}

/// A sequence element of the given items.
pub fn sequence(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

/// A sequence of one item holding `elements`.
pub fn one_item(
    tag: Tag,
    elements: Vec<DataElement<InMemDicomObject>>,
) -> DataElement<InMemDicomObject> {
    sequence(tag, vec![InMemDicomObject::from_element_iter(elements)])
}

/// A code sequence item: Code Value, Coding Scheme Designator, Code Meaning.
pub fn code_item(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        text(dicom_dictionary_std::tags::CODE_VALUE, VR::SH, value),
        text(
            dicom_dictionary_std::tags::CODING_SCHEME_DESIGNATOR,
            VR::SH,
            scheme,
        ),
        text(dicom_dictionary_std::tags::CODE_MEANING, VR::LO, meaning),
    ])
}

/// A text element on its own (for items).
pub fn text(tag: Tag, vr: VR, value: &str) -> DataElement<InMemDicomObject> {
    let value = if value.contains('\\') {
        PrimitiveValue::Strs(value.split('\\').map(str::to_string).collect())
    } else {
        PrimitiveValue::from(value)
    };
    DataElement::new(tag, vr, value)
}

/// A DS value list from numbers, each within DS's 16 characters.
pub fn ds(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| {
            let mut text = format!("{v}");
            if text.len() > 16 {
                text = format!("{v:.6e}");
            }
            text
        })
        .collect::<Vec<_>>()
        .join("\\")
}

/// Today's date and the time now (UTC) as DICOM DA and TM.
pub fn now_da_tm() -> (String, String) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        format!("{year:04}{month:02}{day:02}"),
        format!("{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60),
    )
}

/// A text element's value, trimmed of padding; `None` when absent or empty.
pub fn text_of(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let value = obj.get(tag)?.to_str().ok()?;
    let value = value.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!value.is_empty()).then(|| value.to_string())
}

/// The first item of sequence `tag`.
pub fn first_item(obj: &InMemDicomObject, tag: Tag) -> Option<&InMemDicomObject> {
    obj.get(tag)?.items()?.first()
}

/// `N` finite numbers of a multi-valued numeric element.
pub fn floats<const N: usize>(obj: &InMemDicomObject, tag: Tag) -> Option<[f64; N]> {
    let values = obj.get(tag)?.to_multi_float64().ok()?;
    let array: [f64; N] = values.get(..N)?.try_into().ok()?;
    array.iter().all(|v| v.is_finite()).then_some(array)
}

/// fovea's Implementation Class UID (a 2.25 UUID-derived UID, fixed for the project).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.211563468137516786426934011345467321611";

/// Encode a data set as a Part 10 file (Explicit VR Little Endian) into bytes.
pub fn part10_bytes(
    obj: InMemDicomObject,
    sop_class: &str,
    sop_instance: &str,
) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context;
    let file = obj
        .with_meta(
            dicom_object::FileMetaTableBuilder::new()
                .transfer_syntax(dicom_dictionary_std::uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .media_storage_sop_class_uid(sop_class)
                .media_storage_sop_instance_uid(sop_instance)
                .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
                .implementation_version_name("FOVEA"),
        )
        .context("cannot build the DICOM meta header")?;
    let mut bytes = Vec::new();
    file.write_all(&mut bytes).context("cannot encode DICOM")?;
    Ok(bytes)
}

//! A study's summary for people: what `fovea info` prints (text or JSON). Patient-identifying
//! fields appear only when the caller asks for them.

use super::study::{Photometric, SourceFormat, Study};

/// The human-readable description printed by `fovea info`.
pub fn describe(study: &Study, show_phi: bool) -> String {
    use std::fmt::Write;
    let mut text = String::new();
    let summary = &study.summary;
    let line = |text: &mut String, key: &str, value: &dyn std::fmt::Display| {
        let _ = writeln!(text, "{key:<18}{value}");
    };
    line(&mut text, "file", &study.path.display());
    match &study.format {
        SourceFormat::Dicom {
            transfer_syntax_uid,
            transfer_syntax_name,
            has_file_meta,
        } => {
            line(&mut text, "format", &"DICOM");
            line(
                &mut text,
                "transfer syntax",
                &format!("{transfer_syntax_name} ({transfer_syntax_uid})"),
            );
            if !has_file_meta {
                line(
                    &mut text,
                    "meta header",
                    &"absent (read as a bare data set)",
                );
            }
        }
        SourceFormat::Raster { format } => line(&mut text, "format", format),
    }
    if let Some(sop_class) = &summary.sop_class {
        line(&mut text, "SOP class", sop_class);
    }
    line(
        &mut text,
        "modality",
        &summary.modality.as_deref().unwrap_or("-"),
    );
    if let Some(body_part) = &summary.body_part {
        line(&mut text, "body part", body_part);
    }
    if let Some(manufacturer) = &summary.manufacturer {
        line(&mut text, "manufacturer", manufacturer);
    }
    line(
        &mut text,
        "size",
        &format!("{} x {} px", study.width, study.height),
    );
    line(&mut text, "frames", &study.frame_count());
    let photometric = match study.photometric {
        Photometric::Monochrome1 => "MONOCHROME1 (shown inverted)",
        Photometric::Monochrome2 => "MONOCHROME2",
        Photometric::Rgb => "RGB",
    };
    if study.stored_photometric != photometric {
        line(
            &mut text,
            "photometric",
            &format!("{} -> {photometric}", study.stored_photometric),
        );
    } else {
        line(&mut text, "photometric", &photometric);
    }
    if let (Some(allocated), Some(stored)) = (summary.bits_allocated, summary.bits_stored) {
        let sign = if summary.signed == Some(true) {
            "signed"
        } else {
            "unsigned"
        };
        line(
            &mut text,
            "bits",
            &format!("{stored} stored / {allocated} allocated, {sign}"),
        );
    }
    if let (Some(slope), Some(intercept)) = (summary.rescale_slope, summary.rescale_intercept) {
        let unit = summary.rescale_type.as_deref().unwrap_or("");
        line(
            &mut text,
            "rescale",
            &format!(
                "stored x {slope} {} {} {unit}",
                if intercept < 0.0 { '-' } else { '+' },
                intercept.abs()
            )
            .trim_end()
            .to_string(),
        );
    }
    match (study.pixel_spacing_mm, &study.pixel_spacing_note) {
        (Some([row, col]), note) => line(
            &mut text,
            "pixel spacing",
            &format!(
                "{row} x {col} mm{}",
                note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
            ),
        ),
        (None, Some(note)) => line(
            &mut text,
            "pixel spacing",
            &format!("unknown ({note}): sizes in pixels"),
        ),
        (None, None) => {}
    }
    if let Some(thickness) = summary.slice_thickness_mm {
        line(&mut text, "slice thickness", &format!("{thickness} mm"));
    }
    if let Some((lo, hi)) = study.frames.first().and_then(|f| f.min_max()) {
        line(&mut text, "value range", &format!("{lo} .. {hi} (frame 0)"));
    }
    match study.file_window {
        Some(window) => line(&mut text, "window", &format!("{window} (from file)")),
        None if study.photometric != Photometric::Rgb => line(
            &mut text,
            "window",
            &format!("{} (min-max, none in file)", study.default_window(0)),
        ),
        None => {}
    }
    if summary.lossy {
        line(&mut text, "compression", &"lossy");
    }
    if show_phi {
        if study.identity.fields.is_empty() {
            line(&mut text, "patient data", &"none in file");
        }
        for (name, value) in &study.identity.fields {
            line(&mut text, name, value);
        }
    } else if !study.identity.fields.is_empty() {
        line(
            &mut text,
            "patient data",
            &format!(
                "{} identifying field(s) hidden (--show-phi to print)",
                study.identity.fields.len()
            ),
        );
    }
    text
}

/// The JSON printed by `fovea info --json`: the same facts as [`describe`], patient fields
/// only when asked for.
pub fn summary_json(study: &Study, show_phi: bool) -> serde_json::Value {
    let mut value = serde_json::json!({
        "path": study.path,
        "format": study.format,
        "width": study.width,
        "height": study.height,
        "frames": study.frame_count(),
        "photometric": study.photometric,
        "stored_photometric": study.stored_photometric,
        "pixel_spacing_mm": study.pixel_spacing_mm,
        "pixel_spacing_note": study.pixel_spacing_note,
        "window": study.file_window,
        "summary": study.summary,
    });
    if show_phi {
        let fields: serde_json::Map<String, serde_json::Value> = study
            .identity
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        value["identity"] = serde_json::Value::Object(fields);
    }
    value
}

//! DICOM exchange from the app: the regions and the triage mask as a DICOM SEG, the composited
//! view as a Secondary Capture (de-identified unless "keep patient identity for PACS" is on),
//! and regions imported from a SEG, NIfTI, COCO or VGMED file.

use std::path::Path;

use crate::app::state::{FoveaApp, NamedRegion, RegionRole};
use crate::exchange::{self, segments};

/// The app's exporter: one per run and identity choice, so a SEG and a Secondary Capture
/// exported one after the other share their pseudonym and remapped UIDs (a PACS files them as
/// one de-identified study). Taken out of the app for the export and put back after it.
fn take_exporter(app: &mut FoveaApp) -> exchange::Exporter {
    let choice = if app.keep_identity {
        exchange::IdentityChoice::Keep
    } else {
        exchange::IdentityChoice::Deidentify
    };
    match app.exporter.take() {
        Some(exporter) if exporter.choice == choice => exporter,
        _ => exchange::Exporter::new(choice),
    }
}

/// Write the SEG: drawn regions (MANUAL), and with an answer the triage mask and (when a
/// threshold is set) the thresholded triage map (AUTOMATIC).
pub fn write_seg(app: &mut FoveaApp, path: &Path) -> anyhow::Result<()> {
    let mut exporter = take_exporter(app);
    let written = seg_with(app, path, &mut exporter);
    app.exporter = Some(exporter);
    written
}

fn seg_with(app: &FoveaApp, path: &Path, exporter: &mut exchange::Exporter) -> anyhow::Result<()> {
    let image = app
        .image
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no image"))?;
    let source = exchange::SourceImage::read(&image.study.path, image.frame)?;
    let drawn: Vec<segments::DrawnRegion> = app
        .regions
        .iter()
        .map(|r| segments::DrawnRegion {
            name: &r.name,
            distractor: r.role == RegionRole::Distractor,
            region: &r.region,
        })
        .collect();
    let maps = app.result.as_ref().map(|result| {
        segments::CaseMaps::of(
            &result.grid,
            &result.outcome,
            &result.settings.heads,
            &result.settings.masked_layers,
        )
    });
    let list = segments::case_segments(
        source.columns,
        source.rows,
        &drawn,
        maps.as_ref(),
        app.seg_map_threshold,
    );
    exchange::seg::write(path, &source, &list, exporter)
}

/// Write the composited picture as a Secondary Capture.
pub fn write_capture(
    app: &mut FoveaApp,
    path: &Path,
    picture: &image::RgbImage,
) -> anyhow::Result<()> {
    let mut exporter = take_exporter(app);
    let written = capture_with(app, path, picture, &mut exporter);
    app.exporter = Some(exporter);
    written
}

fn capture_with(
    app: &FoveaApp,
    path: &Path,
    picture: &image::RgbImage,
    exporter: &mut exchange::Exporter,
) -> anyhow::Result<()> {
    let image = app
        .image
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no image"))?;
    let source = exchange::SourceImage::read(&image.study.path, image.frame)?;
    let description = match &app.result {
        Some(result) => format!(
            "fovea attention view ({}): answer {:?}, VGRefine answer {:?}",
            app.layer.label(),
            result.outcome.original.text,
            result.outcome.refined.text
        ),
        None => "fovea view".to_string(),
    };
    exchange::capture::write(path, &source, picture, &description, exporter)
}

/// Add the regions of `file` to the open image (the status says how many and how placed).
pub fn import_regions(app: &mut FoveaApp, file: &Path) {
    let Some(image) = &app.image else {
        app.status = "open an image first".into();
        return;
    };
    let target = exchange::regions::Target {
        path: &image.study.path,
        frame: image.frame,
        width: image.study.width,
        height: image.study.height,
        dicom: matches!(
            image.study.format,
            crate::imaging::SourceFormat::Dicom { .. }
        ),
        slice_spacing_mm: app
            .browser
            .as_ref()
            .and_then(|b| b.slice_spacing_mm(&image.study.path, image.frame)),
    };
    match exchange::regions::import(file, &target) {
        Ok(imported) => {
            let count = imported.regions.len();
            app.regions
                .extend(imported.regions.into_iter().map(|r| NamedRegion {
                    name: r.name,
                    region: r.region,
                    role: if r.distractor {
                        RegionRole::Distractor
                    } else {
                        RegionRole::Target
                    },
                }));
            app.mark_dirty();
            app.status = format!(
                "imported {count} region(s) from {}{}",
                file.display(),
                if imported.notes.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", imported.notes.join("; "))
                }
            );
        }
        Err(err) => app.status = format!("{err:#}"),
    }
}

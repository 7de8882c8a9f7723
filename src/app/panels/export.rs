//! Exports: the composited view as PNG, the case record as INSPECT-JSON, the regions as COCO
//! JSON, and (through exchange.rs) DICOM SEG and Secondary Capture. Patient-identifying fields
//! are never written unless "keep patient identity for PACS" is on. Files are written
//! atomically.

use serde_json::json;

use crate::app::state::{ExportKind, FoveaApp, OverlayLayer};
use crate::grounding::region::Region;

pub fn export(app: &mut FoveaApp, kind: ExportKind) {
    let Some(image) = &app.image else {
        app.status = "open an image first".into();
        return;
    };
    let stem = image
        .study
        .path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("case")
        .to_string();
    let suggested = match kind {
        ExportKind::Png => format!("{stem}-fovea.png"),
        ExportKind::Record => format!("{stem}-fovea.json"),
        ExportKind::Regions => format!("{stem}-regions.coco.json"),
        ExportKind::Seg => format!("{stem}-fovea.seg.dcm"),
        ExportKind::Capture => format!("{stem}-fovea.sc.dcm"),
    };
    if matches!(kind, ExportKind::Seg | ExportKind::Capture)
        && !matches!(
            image.study.format,
            crate::imaging::SourceFormat::Dicom { .. }
        )
    {
        app.status = "DICOM SEG and Secondary Capture refer to a DICOM source image; this image is not DICOM (export PNG or COCO instead)".into();
        return;
    }
    let Some(path) = app.dialog.save_file(&suggested) else {
        return;
    };
    let written = match kind {
        ExportKind::Png => composite(app).and_then(|img| crate::io::write_png(&path, &img)),
        ExportKind::Record => record(app).and_then(|value| crate::io::write_json(&path, &value)),
        ExportKind::Regions => crate::io::write_json(&path, &coco(app)),
        ExportKind::Seg => super::exchange::write_seg(app, &path),
        ExportKind::Capture => {
            composite(app).and_then(|picture| super::exchange::write_capture(app, &path, &picture))
        }
    };
    match written {
        Ok(()) => {
            app.status = format!("wrote {}", path.display());
            app.last_export = Some(path);
        }
        Err(err) => app.status = format!("{err:#}"),
    }
}

/// The image at the current window with the current overlay, regions outlined, full size, and
/// (with a map shown) a colour bar with the map's value range at its right.
pub fn composite(app: &FoveaApp) -> anyhow::Result<image::RgbImage> {
    let image = app
        .image
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no image"))?;
    let voi = crate::imaging::VoiOption::Custom(image.window);
    let mut picture = crate::imaging::render_rgb8(&image.study, image.frame, &voi)?;
    // The shown map's value range, for the colour bar beside the picture.
    let mut bar = None;
    if let Some(result) = &app.result {
        let grid = result.grid;
        let values = super::heads::layer_values(app, app.layer);
        let knocked = &result.outcome.knocked_out;
        let colormap = app.persisted.colormap;
        bar = values.as_ref().map(|v| {
            let lo = v.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let what = if app.persisted.relative_maps
                && matches!(
                    app.layer,
                    OverlayLayer::Head { .. } | OverlayLayer::LayerMean { .. }
                ) {
                "RELATIVE"
            } else if app.layer == OverlayLayer::Triage {
                "RELATIVE (TRIAGE)"
            } else {
                "ATTENTION"
            };
            (lo, hi, what)
        });
        let levels = values.map(|v| crate::grounding::triage::min_max_normalise(&v));
        let (width, height) = picture.dimensions();
        for y in 0..height {
            for x in 0..width {
                let (ix, iy) = grid.mapping.to_input(x as f64 + 0.5, y as f64 + 0.5);
                let (width, height) = (grid.mapping.input[0] as f64, grid.mapping.input[1] as f64);
                if ix < 0.0 || iy < 0.0 || ix >= width || iy >= height {
                    continue;
                }
                let token = (iy / height * grid.rows as f64) as usize * grid.cols
                    + (ix / width * grid.cols as f64) as usize;
                let pixel = picture.get_pixel_mut(x, y);
                if let Some(levels) = &levels {
                    let colour = colormap.color(levels[token]);
                    for c in 0..3 {
                        let mixed = pixel[c] as f32 * (1.0 - app.persisted.opacity)
                            + colour[c] * 255.0 * app.persisted.opacity;
                        pixel[c] = mixed.round().clamp(0.0, 255.0) as u8;
                    }
                }
                if app.layer == OverlayLayer::KnockedOut && knocked.contains(&token) {
                    for c in 0..3 {
                        pixel[c] /= 3;
                    }
                }
            }
        }
    }
    for region in &app.regions {
        if let Region::Box {
            xyxy_px: [x0, y0, x1, y1],
        }
        | Region::Ellipse {
            xyxy_px: [x0, y0, x1, y1],
        } = region.region
        {
            crate::case::compose::draw_rect(
                &mut picture,
                x0,
                y0,
                x1,
                y1,
                image::Rgb(region.role.colour()),
            );
        }
    }
    // With a known pixel spacing, a scale bar in the lower left (its length in mm above it).
    if let Some([_, column_mm]) = image.study.pixel_spacing_mm {
        crate::case::compose::scale_bar(&mut picture, column_mm);
    }
    let Some((lo, hi, what)) = bar else {
        return Ok(picture);
    };
    use crate::case::compose;
    let legend = compose::colour_bar(
        app.persisted.colormap,
        picture.height(),
        &compose::label_value(lo),
        &compose::label_value(hi),
        what,
    );
    let mut out = image::RgbImage::from_pixel(
        picture.width() + 8 + legend.width(),
        picture.height().max(legend.height()),
        image::Rgb([24, 24, 24]),
    );
    image::imageops::replace(&mut out, &picture, 0, 0);
    image::imageops::replace(&mut out, &legend, (picture.width() + 8) as i64, 0);
    Ok(out)
}

/// The INSPECT-JSON record of the current case.
pub fn record(app: &FoveaApp) -> anyhow::Result<serde_json::Value> {
    let (Some(image), Some(result), Some(model)) = (&app.image, &app.result, &app.model) else {
        anyhow::bail!("ask a question first: there is no result to export");
    };
    let grid = result.grid;
    let region_tokens = app.region_tokens().unwrap_or_default();
    let regions: Vec<serde_json::Value> = app
        .regions
        .iter()
        .map(|r| {
            let mut value = serde_json::to_value(&r.region).unwrap_or_default();
            value["name"] = json!(r.name);
            value["tokens"] = json!(r.region.tokens(&grid));
            value
        })
        .collect();
    let mut record = crate::case::case_record(crate::case::CaseParts {
        model: json!({
            "path": model.dir, "arch": model.arch, "layers": model.layers, "heads": model.heads,
            "grid": [grid.rows, grid.cols],
        }),
        image: json!({
            "path": image.study.path, "width": image.study.width, "height": image.study.height, "frame": image.frame,
        }),
        question: &result.question,
        outcome: &result.outcome,
        settings: &result.settings,
        heads_source: if app.heads_text.trim().is_empty() {
            "model defaults".into()
        } else {
            "app".into()
        },
        regions,
        region_tokens: &region_tokens,
        dump_logits: false,
    });
    record["timings_ms"] = json!({ "total": result.total_ms });
    Ok(record)
}

/// Regions as COCO-style annotations (bbox xywh, segmentation polygons, area).
pub fn coco(app: &FoveaApp) -> serde_json::Value {
    let Some(image) = &app.image else {
        return json!({});
    };
    let file_name = image
        .study
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("image");
    let annotations: Vec<serde_json::Value> = app
        .regions
        .iter()
        .enumerate()
        .map(|(index, named)| {
            let [x0, y0, x1, y1] = named.region.bounds_px();
            let area = named.region.area_px();
            if let Region::Mask { width, height, .. } = &named.region {
                // COCO's uncompressed RLE: column-major run lengths, unset first.
                let pixels = named.region.pixel_mask(*width, *height);
                let (w, h) = (*width as usize, *height as usize);
                let column_major: Vec<bool> =
                    (0..w * h).map(|i| pixels[(i % h) * w + i / h]).collect();
                let counts = crate::grounding::mask::encode_runs(&column_major);
                return json!({
                    "id": index + 1, "image_id": 1, "category_id": 1, "iscrowd": 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": area,
                    "segmentation": { "counts": counts, "size": [h, w] },
                    "fovea": { "name": named.name, "kind": "mask" },
                });
            }
            let polygon: Vec<[f64; 2]> = match &named.region {
                Region::Box {
                    xyxy_px: [x0, y0, x1, y1],
                } => vec![[*x0, *y0], [*x1, *y0], [*x1, *y1], [*x0, *y1]],
                Region::Ellipse {
                    xyxy_px: [x0, y0, x1, y1],
                } => (0..32)
                    .map(|k| {
                        let t = k as f64 / 32.0 * std::f64::consts::TAU;
                        [
                            (x0 + x1) / 2.0 + (x1 - x0) / 2.0 * t.cos(),
                            (y0 + y1) / 2.0 + (y1 - y0) / 2.0 * t.sin(),
                        ]
                    })
                    .collect(),
                Region::Polygon { points_px } => points_px.clone(),
                // A stroke has no outline of its own: COCO gets its bounding box.
                Region::Brush { .. } | Region::Mask { .. } => {
                    vec![[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
                }
            };
            // The bounding box and the area of the shape itself (exact for boxes, ellipses and
            // polygons; a brush counts its pixels), not of the outline sampled above.
            json!({
                "id": index + 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": area,
                "segmentation": [polygon.iter().flat_map(|p| [p[0], p[1]]).collect::<Vec<_>>()],
                "fovea": { "name": named.name, "kind": named.region.kind(), "shape": named.region },
            })
        })
        .collect();
    json!({
        "images": [{ "id": 1, "file_name": file_name, "width": image.study.width, "height": image.study.height }],
        "categories": [{ "id": 1, "name": "region" }],
        "annotations": annotations,
    })
}

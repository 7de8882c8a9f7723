//! The `--overlay` picture of a case, drawn on the CPU from the same maps the app shows.

use super::compose::{self, Colormap};
use super::pipeline::Inspection;
use crate::grounding::region::Region;

/// The overlay picture: [image + triage map + kept-token outline + regions] | [attention
/// before knockout] | [attention after knockout], each on the image the model saw, each titled
/// with what it shows and its value range, and a colour bar (each panel is coloured from its
/// own minimum to its own maximum). `token`: the before/after panels show the query that
/// produced answer token K instead of the first (`--overlay-token K`).
pub fn overlay_picture(
    inspection: &Inspection,
    colormap: Colormap,
    token: Option<usize>,
) -> anyhow::Result<image::RgbImage> {
    let grid = (inspection.grid.rows, inspection.grid.cols);
    let base = compose::upscale_to(&inspection.prepared, 336);
    let scale = base.width() as f64 / inspection.prepared.width() as f64;
    let outcome = &inspection.outcome;
    let heads = &inspection.triage_heads;
    let head_mean = |maps: &crate::grounding::LayerHeadMaps| -> Vec<f32> {
        if heads.is_empty() {
            let all: Vec<&Vec<f32>> = maps.iter().flatten().collect();
            return crate::grounding::mean_map(all);
        }
        crate::grounding::mean_map(heads.iter().map(|&(l, h)| &maps[l][h]))
    };
    let triage_map = outcome
        .triage
        .as_ref()
        .map(|t| t.score_map.clone())
        .unwrap_or_else(|| head_mean(&outcome.question_maps));
    let mut first = compose::blend_heatmap(&base, grid, &triage_map, colormap, 0.55);
    let total = grid.0 * grid.1;
    let kept: Vec<usize> = (0..total)
        .filter(|t| !outcome.knocked_out.contains(t))
        .collect();
    compose::outline_tokens(&mut first, grid, &kept, image::Rgb([0, 220, 255]));
    let layer_heads = outcome.question_maps.first().map_or(1, Vec::len);
    let token_maps = |answer: &crate::model::Answer, k: usize| -> anyhow::Result<_> {
        let maps = answer.token_attention.get(k).ok_or_else(|| {
            anyhow::anyhow!(
                "--overlay-token {k}: the answer has {} tokens",
                answer.token_attention.len()
            )
        })?;
        Ok(crate::grounding::split_heads(maps, layer_heads))
    };
    let (before_map, after_map, which) = match token {
        None => (
            head_mean(&outcome.question_maps),
            head_mean(&outcome.refined_maps),
            String::new(),
        ),
        Some(k) => (
            head_mean(&token_maps(&outcome.original, k)?),
            head_mean(&token_maps(&outcome.refined, k)?),
            format!(", TOKEN {k}"),
        ),
    };
    let before = compose::blend_heatmap(&base, grid, &before_map, colormap, 0.55);
    let after = compose::blend_heatmap(&base, grid, &after_map, colormap, 0.55);
    let mut panels = [first, before, after];
    let mapping = inspection.grid.mapping;
    for panel in &mut panels {
        compose::outline_tokens(
            panel,
            grid,
            &inspection.region_tokens,
            image::Rgb([60, 255, 60]),
        );
        for region in &inspection.regions {
            if let Region::Box {
                xyxy_px: [x0, y0, x1, y1],
            }
            | Region::Ellipse {
                xyxy_px: [x0, y0, x1, y1],
            } = region
            {
                let (ix0, iy0) = mapping.to_input(*x0, *y0);
                let (ix1, iy1) = mapping.to_input(*x1, *y1);
                compose::draw_rect(
                    panel,
                    ix0 * scale,
                    iy0 * scale,
                    ix1 * scale,
                    iy1 * scale,
                    image::Rgb([255, 255, 255]),
                );
            }
        }
    }
    // A scale bar on the first panel: one panel pixel is 1 / (model scale x upscale) image
    // pixels.
    if let Some([_, column_mm]) = inspection.pixel_spacing_mm {
        compose::scale_bar(&mut panels[0], column_mm / (mapping.scale[0] * scale));
    }
    let range = |map: &[f32]| {
        let lo = map.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = map.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        format!(
            "{} TO {}",
            compose::label_value(lo),
            compose::label_value(hi)
        )
    };
    let titles = [
        (
            "TRIAGE MAP (RELATIVE)".to_string(),
            format!("QUESTION/GENERAL {}", range(&triage_map)),
        ),
        (
            format!("BEFORE KNOCKOUT{which}"),
            format!("ATTENTION {}", range(&before_map)),
        ),
        (
            format!("AFTER KNOCKOUT{which}"),
            format!("ATTENTION {}", range(&after_map)),
        ),
    ];
    let mut titled: Vec<image::RgbImage> = panels
        .iter()
        .zip(&titles)
        .map(|(panel, (title, subtitle))| compose::titled(panel, title, subtitle))
        .collect();
    let height = titled.iter().map(|p| p.height()).max().unwrap_or(1);
    titled.push(compose::colour_bar(
        colormap,
        height,
        "MIN",
        "MAX",
        "EACH PANEL",
    ));
    Ok(compose::side_by_side(&titled, 8))
}

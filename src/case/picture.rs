//! The `--overlay` picture of a case, drawn on the CPU from the same maps the app shows.

use super::compose::{self, Colormap};
use super::pipeline::Inspection;
use crate::grounding::region::Region;

/// The overlay picture: [image + triage map + kept-token outline + regions] | [attention
/// before knockout] | [attention after knockout], each on the image the model saw.
pub fn overlay_picture(inspection: &Inspection, colormap: Colormap) -> image::RgbImage {
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
    let before = compose::blend_heatmap(
        &base,
        grid,
        &head_mean(&outcome.question_maps),
        colormap,
        0.55,
    );
    let after = compose::blend_heatmap(
        &base,
        grid,
        &head_mean(&outcome.refined_maps),
        colormap,
        0.55,
    );
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
    compose::side_by_side(&panels, 8)
}

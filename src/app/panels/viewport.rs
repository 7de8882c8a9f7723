//! The image viewport: zoom (wheel), pan (middle drag, or left drag in Navigate), window/level
//! (right drag), fit / 1:1, the value and token cell under the cursor, and region drawing.
//! In before/after mode two panes share one view.

use std::sync::Arc;

use eframe::egui_wgpu;
use egui::{Color32, Pos2, Rect, Sense, Stroke, Vec2};

use super::heads::{before_after_panes, layer_values_of};
use crate::app::overlay::{GridValues, OverlayUniforms, PaneCallback};
use crate::app::state::{
    hash, FoveaApp, MaskMode, NamedRegion, OverlayLayer, RegionRole, Tool, View,
};
use crate::case::compose::Colormap;
use crate::grounding::region::Region;

pub fn viewport_ui(app: &mut FoveaApp, ui: &mut egui::Ui) {
    ui.horizontal(|ui| {
        if ui.button("Fit").clicked() {
            app.view.fit = true;
        }
        if ui.button("1:1").clicked() {
            app.view.fit = false;
            app.view.zoom = 1.0;
        }
        super::series::slice_bar_ui(app, ui);
    });
    super::series::slice_keys(app, ui);
    let Some(image) = &app.image else {
        ui.centered_and_justified(|ui| {
            ui.label("Open an image: Open…, drag and drop, or pick a case on the left.")
        });
        return;
    };
    if !app.gpu {
        ui.colored_label(
            Color32::LIGHT_RED,
            "No wgpu renderer is available, so the image cannot be drawn.",
        );
        return;
    }
    let (width, height) = (image.study.width as f32, image.study.height as f32);
    let available = ui.available_size();
    let panes: Vec<(u32, OverlayLayer, bool, String)> = if app.side_by_side {
        let [(a, ra, ta), (b, rb, tb)] = before_after_panes(app);
        vec![(0, a, ra, ta), (1, b, rb, tb)]
    } else {
        vec![(0, app.layer, false, String::new())]
    };
    let pane_width = (available.x - 8.0 * (panes.len() - 1) as f32) / panes.len() as f32;
    let pane_size = Vec2::new(pane_width.max(50.0), (available.y - 24.0).max(50.0));
    if app.view.fit {
        app.view.zoom = (pane_size.x / width).min(pane_size.y / height);
        app.view.centre_px = [width / 2.0, height / 2.0];
    }
    let mut hover_text = String::new();
    ui.horizontal(|ui| {
        for (pane, layer, refined, title) in panes {
            ui.vertical(|ui| {
                if !title.is_empty() {
                    ui.label(title);
                }
                let (rect, response) = ui.allocate_exact_size(pane_size, Sense::click_and_drag());
                let shown = (layer, refined);
                pane_ui(app, ui, pane, shown, rect, &response, &mut hover_text);
            });
        }
    });
    ui.label(hover_text);
}

/// screen = rect.centre + (image - centre) * zoom
fn to_screen(view: &View, rect: Rect, image_px: [f64; 2]) -> Pos2 {
    rect.center()
        + Vec2::new(
            (image_px[0] as f32 - view.centre_px[0]) * view.zoom,
            (image_px[1] as f32 - view.centre_px[1]) * view.zoom,
        )
}

fn to_image(view: &View, rect: Rect, screen: Pos2) -> [f64; 2] {
    let offset = (screen - rect.center()) / view.zoom;
    [
        (view.centre_px[0] + offset.x) as f64,
        (view.centre_px[1] + offset.y) as f64,
    ]
}

fn pane_ui(
    app: &mut FoveaApp,
    ui: &mut egui::Ui,
    pane: u32,
    (layer, refined): (OverlayLayer, bool),
    rect: Rect,
    response: &egui::Response,
    hover_text: &mut String,
) {
    interact(app, ui, rect, response);
    let Some(image) = &app.image else { return };
    let view = app.view;
    let view_min = to_image(&view, rect, rect.min);
    let view_max = to_image(&view, rect, rect.max);
    let (grid, mapping) = match &app.result {
        Some(result) => (
            (result.grid.rows, result.grid.cols),
            Some(result.grid.mapping),
        ),
        None => ((1, 1), None),
    };
    let raw_heat = layer_values_of(app, layer, refined);
    let causal = layer == OverlayLayer::Causal;
    let heat = raw_heat.as_ref().map(|v| {
        if causal {
            crate::case::compose::diverging_levels(v)
        } else {
            crate::grounding::triage::min_max_normalise(v)
        }
    });
    let knocked: Vec<f32> = match &app.result {
        Some(result) => {
            let mut mask = vec![0.0; grid.0 * grid.1];
            for &token in &result.outcome.knocked_out {
                if let Some(cell) = mask.get_mut(token) {
                    *cell = 1.0;
                }
            }
            mask
        }
        None => vec![0.0],
    };
    let result_key = app
        .result
        .as_ref()
        .map(|r| {
            hash(&format!(
                "{}{}{:?}",
                r.image_key, r.question, r.outcome.knocked_out
            ))
        })
        .unwrap_or(0);
    let heat_key = hash(&format!(
        "{result_key}{layer:?}{refined}{:?}{}",
        app.answer_view, app.persisted.relative_maps
    ));
    let study = &image.study;
    let is_colour = study.photometric == crate::imaging::Photometric::Rgb;
    let mask_mode = match (layer, app.persisted.mask_mode) {
        (OverlayLayer::KnockedOut, MaskMode::None) => 2.0,
        (_, MaskMode::None) => 0.0,
        (_, MaskMode::Outline) => 1.0,
        (_, MaskMode::Fill) => 2.0,
    };
    let uniforms = OverlayUniforms {
        image_size: [study.width as f32, study.height as f32],
        grid_size: [grid.1 as f32, grid.0 as f32],
        view_min: [view_min[0] as f32, view_min[1] as f32],
        view_max: [view_max[0] as f32, view_max[1] as f32],
        input_origin: mapping
            .map(|m| [m.offset_px[0] as f32, m.offset_px[1] as f32])
            .unwrap_or([0.0, 0.0]),
        input_scale: mapping
            .map(|m| [m.scale[0] as f32, m.scale[1] as f32])
            .unwrap_or([1.0, 1.0]),
        input_size: mapping
            .map(|m| [m.input[0] as f32, m.input[1] as f32])
            .unwrap_or([1.0, 1.0]),
        window_center: image.window.center as f32,
        window_width: image.window.width as f32,
        invert: f32::from(u8::from(study.inverted())),
        is_colour: f32::from(u8::from(is_colour)),
        colour_scale: 1.0 / study.sample_max.max(1.0),
        heat_opacity: app.persisted.opacity,
        heat_smooth: f32::from(u8::from(app.persisted.smooth)),
        colormap: if causal {
            Colormap::Diverging as u8 as f32
        } else {
            app.persisted.colormap as u8 as f32
        },
        mask_mode: if app.result.is_some() { mask_mode } else { 0.0 },
        show_heat: f32::from(u8::from(heat.is_some())),
    };
    let callback = PaneCallback {
        pane,
        uniforms,
        image: image.gpu_pixels.clone(),
        heat: Arc::new(GridValues {
            key: heat_key,
            cols: grid.1 as u32,
            rows: grid.0 as u32,
            values: heat.unwrap_or_else(|| vec![0.0; grid.0 * grid.1]),
        }),
        mask: Arc::new(GridValues {
            key: result_key,
            cols: grid.1 as u32,
            rows: grid.0 as u32,
            values: knocked,
        }),
    };
    ui.painter()
        .add(egui_wgpu::Callback::new_paint_callback(rect, callback));

    // Regions as vector shapes on top.
    let painter = ui.painter_at(rect);
    for region in &app.regions {
        let [r, g, b] = region.role.colour();
        draw_region(
            &painter,
            &view,
            rect,
            &region.region,
            Color32::from_rgb(r, g, b),
        );
    }
    draw_in_progress(app, &painter, rect);
    if let Some(values) = &raw_heat {
        draw_colour_bar(app, &painter, rect, values, layer);
    }
    if let Some([_, col]) = study.pixel_spacing_mm {
        draw_scale_bar(&painter, rect, col / view.zoom as f64);
    }

    if let Some(pointer) = response.hover_pos() {
        let [x, y] = to_image(&view, rect, pointer);
        if x >= 0.0 && y >= 0.0 && (x as u32) < study.width && (y as u32) < study.height {
            let index = y as usize * study.width as usize + x as usize;
            let samples = study.photometric.samples_per_pixel();
            let values = &study.frames[image.frame].values;
            let value = if samples == 1 {
                format!("{}", values.get(index).copied().unwrap_or(f32::NAN))
            } else {
                let v = &values[index * 3..index * 3 + 3];
                format!("({}, {}, {})", v[0], v[1], v[2])
            };
            *hover_text = match study.pixel_spacing_mm {
                Some([row, col]) => format!(
                    "x {} y {} ({:.1}, {:.1} mm)  value {value}",
                    x as u32,
                    y as u32,
                    x * col,
                    y * row
                ),
                None => format!("x {} y {}  value {value}", x as u32, y as u32),
            };
            if let Some(mapping) = mapping {
                let (ix, iy) = mapping.to_input(x, y);
                let (width, height) = (mapping.input[0] as f64, mapping.input[1] as f64);
                if ix >= 0.0 && iy >= 0.0 && ix < width && iy < height {
                    let col = (ix / width * grid.1 as f64) as usize;
                    let row = (iy / height * grid.0 as f64) as usize;
                    let token = row * grid.1 + col;
                    let heat_value = raw_heat.as_ref().and_then(|v| v.get(token).copied());
                    hover_text.push_str(&format!("  token {token} (row {row}, col {col})"));
                    if let Some(v) = heat_value {
                        hover_text.push_str(&format!("  {} {v:.4}", layer.label()));
                    }
                }
            }
        }
    }
}

/// The shown map's colour bar at the viewport's right edge: the colormap from the map's minimum
/// (bottom) to its maximum (top), both values, and what the values are (relative or raw).
fn draw_colour_bar(
    app: &FoveaApp,
    painter: &egui::Painter,
    rect: Rect,
    values: &[f32],
    layer: OverlayLayer,
) {
    let mut lo = values.iter().copied().fold(f32::INFINITY, f32::min);
    let mut hi = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !lo.is_finite() || !hi.is_finite() {
        return;
    }
    // A causal map runs from -max|drop| (blue) through 0 (white) to +max|drop| (red).
    let causal = layer == OverlayLayer::Causal;
    let colormap = if causal {
        let reach = lo.abs().max(hi.abs());
        (lo, hi) = (-reach, reach);
        Colormap::Diverging
    } else {
        app.persisted.colormap
    };
    let bar = Rect::from_min_max(
        egui::pos2(rect.max.x - 22.0, rect.min.y + 28.0),
        egui::pos2(rect.max.x - 10.0, rect.max.y - 28.0),
    );
    let steps = 64;
    for i in 0..steps {
        let t = 1.0 - (i as f32 + 0.5) / steps as f32;
        let [r, g, b] = colormap
            .color(t)
            .map(|c| (c * 255.0).round().clamp(0.0, 255.0) as u8);
        let y0 = bar.min.y + bar.height() * i as f32 / steps as f32;
        let y1 = bar.min.y + bar.height() * (i + 1) as f32 / steps as f32 + 0.5;
        painter.rect_filled(
            Rect::from_min_max(egui::pos2(bar.min.x, y0), egui::pos2(bar.max.x, y1)),
            0.0,
            Color32::from_rgb(r, g, b),
        );
    }
    painter.rect_stroke(
        bar,
        0.0,
        Stroke::new(1.0, Color32::from_gray(200)),
        egui::StrokeKind::Outside,
    );
    let relative = app.persisted.relative_maps
        && matches!(
            layer,
            OverlayLayer::Head { .. } | OverlayLayer::LayerMean { .. }
        );
    let what = if causal {
        "log p drop"
    } else if relative || layer == OverlayLayer::Triage {
        "relative"
    } else {
        "attention"
    };
    let font = egui::FontId::proportional(12.0);
    let text = Color32::from_gray(230);
    painter.text(
        egui::pos2(bar.max.x, bar.min.y - 4.0),
        egui::Align2::RIGHT_BOTTOM,
        format!("{} {}", crate::case::compose::label_value(hi), what),
        font.clone(),
        text,
    );
    painter.text(
        egui::pos2(bar.max.x, bar.max.y + 4.0),
        egui::Align2::RIGHT_TOP,
        crate::case::compose::label_value(lo),
        font,
        text,
    );
}

/// A white bar of a round length in millimetres at the pane's bottom left (as in exports).
fn draw_scale_bar(painter: &egui::Painter, rect: Rect, mm_per_screen_px: f64) {
    let Some(mm) = crate::case::compose::scale_bar_mm(rect.width() as f64 / 4.0, mm_per_screen_px)
    else {
        return;
    };
    let length = (mm / mm_per_screen_px) as f32;
    let start = egui::pos2(rect.min.x + 12.0, rect.max.y - 12.0);
    let end = start + Vec2::new(length, 0.0);
    painter.line_segment([start, end], Stroke::new(5.0, Color32::BLACK));
    painter.line_segment([start, end], Stroke::new(3.0, Color32::WHITE));
    painter.text(
        start + Vec2::new(0.0, -6.0),
        egui::Align2::LEFT_BOTTOM,
        format!("{mm} mm"),
        egui::FontId::proportional(12.0),
        Color32::WHITE,
    );
}

fn draw_region(painter: &egui::Painter, view: &View, rect: Rect, region: &Region, colour: Color32) {
    let stroke = Stroke::new(2.0, colour);
    match region {
        Region::Box {
            xyxy_px: [x0, y0, x1, y1],
        } => {
            let r = Rect::from_two_pos(
                to_screen(view, rect, [*x0, *y0]),
                to_screen(view, rect, [*x1, *y1]),
            );
            painter.rect_stroke(r, 0.0, stroke, egui::StrokeKind::Middle);
        }
        Region::Ellipse {
            xyxy_px: [x0, y0, x1, y1],
        } => {
            let points: Vec<Pos2> = (0..=48)
                .map(|k| {
                    let t = k as f64 / 48.0 * std::f64::consts::TAU;
                    let (cx, cy, rx, ry) = (
                        (x0 + x1) / 2.0,
                        (y0 + y1) / 2.0,
                        (x1 - x0) / 2.0,
                        (y1 - y0) / 2.0,
                    );
                    to_screen(view, rect, [cx + rx * t.cos(), cy + ry * t.sin()])
                })
                .collect();
            painter.add(egui::Shape::line(points, stroke));
        }
        Region::Polygon { points_px } => {
            let points: Vec<Pos2> = points_px
                .iter()
                .map(|p| to_screen(view, rect, *p))
                .collect();
            painter.add(egui::Shape::closed_line(points, stroke));
        }
        Region::Brush {
            points_px,
            radius_px,
        } => {
            for p in points_px {
                painter.circle_stroke(
                    to_screen(view, rect, *p),
                    *radius_px as f32 * view.zoom,
                    Stroke::new(1.0, colour),
                );
            }
        }
        Region::Mask { .. } => {
            for [a, b] in region.mask_edges() {
                painter.line_segment([to_screen(view, rect, a), to_screen(view, rect, b)], stroke);
            }
        }
    }
}

fn draw_in_progress(app: &FoveaApp, painter: &egui::Painter, rect: Rect) {
    if app.drawing.is_empty() {
        return;
    }
    let colour = Color32::YELLOW;
    let view = &app.view;
    match app.tool {
        Tool::Box | Tool::Ellipse if app.drawing.len() >= 2 => {
            let (a, b) = (app.drawing[0], app.drawing[app.drawing.len() - 1]);
            let region = shape_from_drag(app.tool, a, b);
            draw_region(painter, view, rect, &region, colour);
        }
        Tool::Polygon | Tool::Brush => {
            let points: Vec<Pos2> = app
                .drawing
                .iter()
                .map(|p| to_screen(view, rect, *p))
                .collect();
            painter.add(egui::Shape::line(points, Stroke::new(2.0, colour)));
        }
        _ => {}
    }
}

fn shape_from_drag(tool: Tool, a: [f64; 2], b: [f64; 2]) -> Region {
    let xyxy_px = [
        a[0].min(b[0]),
        a[1].min(b[1]),
        a[0].max(b[0]),
        a[1].max(b[1]),
    ];
    if tool == Tool::Ellipse {
        Region::Ellipse { xyxy_px }
    } else {
        Region::Box { xyxy_px }
    }
}

fn add_region(app: &mut FoveaApp, region: Region) {
    if region.validate().is_err() {
        return;
    }
    let name = format!("{} {}", region.kind(), app.regions.len() + 1);
    app.regions.push(NamedRegion {
        name,
        region,
        role: RegionRole::Target,
    });
    app.mark_dirty();
}

fn interact(app: &mut FoveaApp, ui: &egui::Ui, rect: Rect, response: &egui::Response) {
    // Wheel with Ctrl or Shift held: the next or previous slice of a series.
    if response.hovered() && app.browser.is_some() {
        let step: f32 = ui.input(|i| {
            i.events
                .iter()
                .filter_map(|e| match e {
                    egui::Event::MouseWheel {
                        delta, modifiers, ..
                    } if modifiers.ctrl || modifiers.shift || modifiers.command => {
                        Some(if delta.y != 0.0 { delta.y } else { delta.x })
                    }
                    _ => None,
                })
                .sum()
        });
        if step != 0.0 {
            super::series::step_slice(app, if step < 0.0 { 1 } else { -1 });
            return;
        }
    }
    let Some(image) = &mut app.image else { return };
    // Zoom about the cursor (a plain wheel).
    let modified = ui.input(|i| i.modifiers.ctrl || i.modifiers.shift || i.modifiers.command);
    if response.hovered() && !modified {
        let scroll = ui.input(|i| i.smooth_scroll_delta.y);
        if scroll != 0.0 {
            if let Some(pointer) = response.hover_pos() {
                let before = to_image(&app.view, rect, pointer);
                app.view.fit = false;
                app.view.zoom = (app.view.zoom * (scroll / 200.0).exp()).clamp(0.05, 64.0);
                let after = to_image(&app.view, rect, pointer);
                app.view.centre_px[0] -= (after[0] - before[0]) as f32;
                app.view.centre_px[1] -= (after[1] - before[1]) as f32;
            }
        }
    }
    let pan = response.dragged_by(egui::PointerButton::Middle)
        || (app.tool == Tool::Navigate && response.dragged_by(egui::PointerButton::Primary));
    if pan {
        let delta = response.drag_delta() / app.view.zoom;
        app.view.fit = false;
        app.view.centre_px[0] -= delta.x;
        app.view.centre_px[1] -= delta.y;
    }
    if response.dragged_by(egui::PointerButton::Secondary) {
        // Window/level: right and left change the width, up and down the centre.
        let delta = response.drag_delta();
        let scale = (image.window.width.abs().max(1.0) / 256.0) as f32;
        image.window.width = (image.window.width + (delta.x * scale) as f64).max(1.0);
        image.window.center += (delta.y * scale) as f64;
    }
    let pointer_image = response
        .interact_pointer_pos()
        .map(|p| to_image(&app.view, rect, p));
    match app.tool {
        Tool::Navigate => {}
        Tool::Box | Tool::Ellipse | Tool::Brush => {
            if response.drag_started_by(egui::PointerButton::Primary) {
                // The shape starts where the button went down, not where egui recognised the
                // drag (a few pixels, or a whole quick move, later).
                app.drawing.clear();
                if let Some(origin) = ui.input(|i| i.pointer.press_origin()) {
                    app.drawing.push(to_image(&app.view, rect, origin));
                }
            }
            if response.dragged_by(egui::PointerButton::Primary) {
                if let Some(p) = pointer_image {
                    app.drawing.push(p);
                }
            }
            if response.drag_stopped() && app.drawing.len() >= 2 {
                let points = std::mem::take(&mut app.drawing);
                let region = if app.tool == Tool::Brush {
                    let radius_px = (image_side(app) * 0.02).max(2.0);
                    Region::Brush {
                        points_px: points,
                        radius_px,
                    }
                } else {
                    shape_from_drag(app.tool, points[0], points[points.len() - 1])
                };
                add_region(app, region);
            }
        }
        Tool::Polygon => {
            if response.double_clicked()
                || (ui.input(|i| i.key_pressed(egui::Key::Enter)) && app.drawing.len() >= 3)
            {
                let points = std::mem::take(&mut app.drawing);
                if points.len() >= 3 {
                    add_region(app, Region::Polygon { points_px: points });
                }
            } else if response.clicked() {
                if let Some(p) = pointer_image {
                    app.drawing.push(p);
                }
            }
        }
        Tool::Erase => {
            if response.clicked() {
                if let Some([x, y]) = pointer_image {
                    if let Some(index) = app.regions.iter().rposition(|r| r.region.contains(x, y)) {
                        app.regions.remove(index);
                        app.mark_dirty();
                    }
                }
            }
        }
    }
}

fn image_side(app: &FoveaApp) -> f64 {
    app.image
        .as_ref()
        .map(|i| i.study.width.max(i.study.height) as f64)
        .unwrap_or(100.0)
}

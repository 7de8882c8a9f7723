//! The app's panels, one file each; `show` lays them out.

pub mod answers;
pub mod exchange;
pub mod export;
pub mod heads;
pub mod menu;
pub mod series;
pub mod story;
pub mod viewport;

use egui::{Color32, RichText};

use crate::app::state::{Command, FoveaApp, MaskMode, OverlayLayer, RegionRole, Tool};
use crate::case::compose::Colormap;
use crate::imaging::Preset;

pub fn show(app: &mut FoveaApp, ui: &mut egui::Ui) {
    egui::Panel::top("menu").show(ui, |ui| menu::menu_ui(app, ui));
    egui::Panel::bottom("status").show(ui, |ui| status_ui(app, ui));
    egui::Panel::left("case")
        .default_size(330.0)
        .resizable(true)
        .show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| {
                if app.browser.is_some() {
                    series::series_ui(app, ui);
                    ui.separator();
                }
                cases_ui(app, ui);
                ui.separator();
                question_ui(app, ui);
                ui.separator();
                answers::answers_ui(app, ui);
                ui.separator();
                image_info_ui(app, ui);
            });
        });
    egui::Panel::right("analysis")
        .default_size(360.0)
        .resizable(true)
        .show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| {
                overlay_controls_ui(app, ui);
                ui.separator();
                regions_ui(app, ui);
                ui.separator();
                heads::head_explorer_ui(app, ui);
            });
        });
    // Added after the side panels, so it spans the image's width only: the caption and the
    // answers right above the panes.
    egui::Panel::top("story").show(ui, |ui| story::story_ui(app, ui));
    egui::CentralPanel::default().show(ui, |ui| viewport::viewport_ui(app, ui));
}

fn status_ui(app: &mut FoveaApp, ui: &mut egui::Ui) {
    ui.horizontal(|ui| {
        if let Some(loading) = &app.loading {
            let fraction = if loading.total > 0 {
                loading.done as f32 / loading.total as f32
            } else {
                0.0
            };
            ui.add(
                egui::ProgressBar::new(fraction)
                    .text(format!(
                        "loading {}: {} ({}/{}, {:.0} s)",
                        loading
                            .dir
                            .file_name()
                            .map(|n| n.to_string_lossy().to_string())
                            .unwrap_or_default(),
                        loading.what,
                        loading.done,
                        loading.total,
                        loading.started.elapsed().as_secs_f32()
                    ))
                    .desired_width(420.0),
            );
            if ui.button("Cancel").clicked() {
                app.commands.push(Command::Cancel);
            }
            ui.label(&app.status);
            return;
        }
        if let Some(stage) = app.stage {
            let stages = [
                "queued",
                "vision",
                "prefix",
                "question",
                "general",
                "knockout",
                "look here",
            ];
            let index = stages.iter().position(|s| *s == stage).unwrap_or(0);
            ui.add(
                egui::ProgressBar::new(index as f32 / (stages.len() - 1) as f32)
                    .text(format!("running: {stage}"))
                    .desired_width(260.0),
            );
            if ui.button("Cancel").clicked() {
                app.commands.push(Command::Cancel);
            }
        }
        ui.label(&app.status);
    });
}

fn cases_ui(app: &mut FoveaApp, ui: &mut egui::Ui) {
    ui.heading("Cases");
    if app.cases.is_empty() {
        ui.label("No demo cases found.");
    }
    let current = app.image.as_ref().map(|i| i.study.path.clone());
    for (index, case) in app.cases.clone().into_iter().enumerate() {
        let file = |p: &std::path::Path| {
            p.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("?")
                .to_string()
        };
        let mut name = file(&case.path);
        if let Some(kind) = &case.kind {
            name.push_str(&format!(" - {kind}"));
        }
        if let Some(model) = &case.model {
            name.push_str(&format!(" ({})", file(model)));
        }
        let selected = current.as_ref() == Some(&case.path);
        if ui
            .selectable_label(selected, &name)
            .on_hover_text(format!(
                "{}{}",
                case.question,
                match &case.model {
                    Some(model) => format!("\nfor the model in {}", model.display()),
                    None => String::new(),
                }
            ))
            .clicked()
        {
            app.commands.push(Command::OpenCase(index));
        }
    }
}

/// For models whose grid follows the image (Qwen-VL): the pixel budget, and what the open
/// image becomes under it, before anything runs.
fn image_tokens_ui(app: &mut FoveaApp, ui: &mut egui::Ui) {
    let Some(model) = &app.model else { return };
    let Some((min_pixels, default_max)) = model.pixel_limits else {
        return;
    };
    let side = model.token_side_px;
    let mut max_pixels = app.max_pixels.unwrap_or(default_max);
    ui.horizontal(|ui| {
        let label = ui.label("max pixels");
        let response = ui
            .add(
                egui::DragValue::new(&mut max_pixels)
                    .range(u64::from(side * side).max(min_pixels)..=64 * 1024 * 1024)
                    .speed(1024.0),
            )
            .labelled_by(label.id)
            .on_hover_text("Qwen-VL resizes each image to at most this many pixels: more pixels, more image tokens, more time");
        if response.changed() {
            app.max_pixels = (max_pixels != default_max).then_some(max_pixels);
        }
        if app.max_pixels.is_some() && ui.small_button("checkpoint's").clicked() {
            app.max_pixels = None;
        }
    });
    if let Some(image) = &app.image {
        let (width, height) = image.model_input.dimensions();
        let text = match crate::model::qwen_vl::smart_resize(
            height,
            width,
            side,
            min_pixels,
            app.max_pixels.unwrap_or(default_max),
        ) {
            Ok((h, w)) => {
                let (rows, cols) = (h / side, w / side);
                format!(
                    "{width}×{height} px -> {w}×{h} px -> {rows} × {cols} = {} image tokens",
                    rows * cols
                )
            }
            Err(err) => format!("{err:#}"),
        };
        ui.label(egui::RichText::new(text).small());
    }
}

fn question_ui(app: &mut FoveaApp, ui: &mut egui::Ui) {
    let label = ui.heading("Question");
    let response = ui
        .add(
            egui::TextEdit::singleline(&mut app.question)
                .hint_text("Is there a nodule in the left lung?")
                .desired_width(f32::INFINITY),
        )
        .labelled_by(label.id);
    let enter = response.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
    ui.horizontal(|ui| {
        let ready = app.model.is_some() && app.image.is_some() && !app.worker.busy;
        if ui.add_enabled(ready, egui::Button::new("Ask")).clicked() || (enter && ready) {
            app.commands.push(Command::Ask);
        }
        let has_region = !app.regions.is_empty() && app.result.is_some();
        if ui
            .add_enabled(
                ready && has_region,
                egui::Button::new("What if it looked here?"),
            )
            .on_hover_text("Answer again with every token outside the drawn regions knocked out")
            .clicked()
        {
            app.commands.push(Command::LookHere);
        }
    });
    ui.horizontal(|ui| {
        let label = ui.label("answer tokens");
        ui.add(egui::DragValue::new(&mut app.max_new_tokens).range(1..=512))
            .labelled_by(label.id);
        ui.checkbox(&mut app.stop_at_eos, "stop at end of answer")
            .on_hover_text("Off: always generate the given number of tokens");
    });
    ui.checkbox(&mut app.faithfulness, "faithfulness curve").on_hover_text(
        "With each answer, knock out image tokens in the triage map's order (and in random orders) \
         and follow the first answer token's probability",
    );
    image_tokens_ui(app, ui);
    let family_questions: &[&str] = match app
        .image
        .as_ref()
        .and_then(|i| i.study.summary.modality.clone())
        .as_deref()
    {
        Some("MR") => &[
            "Is there a lesion in the left hemisphere?",
            "Which side is the lesion on?",
            "Is the lesion large?",
        ],
        _ => &[
            "Is there a nodule in the left lung?",
            "Is there a nodule in the right lung?",
            "Which side is the nodule on?",
        ],
    };
    ui.horizontal_wrapped(|ui| {
        for suggestion in family_questions {
            if ui.small_button(*suggestion).clicked() {
                app.question = suggestion.to_string();
            }
        }
    });
}

fn image_info_ui(app: &mut FoveaApp, ui: &mut egui::Ui) {
    ui.heading("Image");
    let Some(image) = &app.image else {
        ui.label("Open a DICOM or PNG/JPEG image (menu, drag and drop, or a case above).");
        return;
    };
    let study = &image.study;
    ui.label(format!(
        "{} × {} px, {} frame(s)",
        study.width,
        study.height,
        study.frame_count()
    ));
    if let Some(modality) = &study.summary.modality {
        ui.label(format!("modality {modality}"));
    }
    match (study.pixel_spacing_mm, &study.pixel_spacing_note) {
        (Some([row, col]), note) => {
            let label = ui.label(format!("spacing {row} × {col} mm"));
            if let Some(note) = note {
                label.on_hover_text(note.as_str());
            }
        }
        (None, Some(note)) => {
            ui.label(format!("spacing unknown ({note}): pixels only"));
        }
        (None, None) => {}
    }
    let frames = study.frame_count();
    if frames > 1 {
        let mut frame = image.frame;
        if ui
            .add(egui::Slider::new(&mut frame, 0..=frames - 1).text("frame"))
            .changed()
        {
            app.commands.push(Command::SetFrame(frame));
        }
    }
    let mut window = image.window;
    ui.horizontal(|ui| {
        ui.label(format!(
            "window C {:.0} / W {:.0}",
            window.center, window.width
        ));
    });
    ui.horizontal_wrapped(|ui| {
        for preset in Preset::ALL {
            if ui.small_button(preset.name()).clicked() {
                window = preset.window();
            }
        }
        if ui.small_button("file/min-max").clicked() {
            window = study.default_window(image.frame);
        }
    });
    if let Some(image) = app.image.as_mut() {
        image.window = window;
    }
    let Some(image) = &app.image else { return };
    let hidden = image.study.identity.fields.len();
    if hidden > 0 {
        ui.checkbox(
            &mut app.show_phi,
            format!("show patient data ({hidden} fields, exported only into DICOM with “Keep patient identity”)"),
        );
        if app.show_phi {
            for (name, value) in &image.study.identity.fields {
                ui.label(format!("{name}: {value}"));
            }
        }
    }
}

fn overlay_controls_ui(app: &mut FoveaApp, ui: &mut egui::Ui) {
    ui.heading("Overlay");
    let (layers, heads) = app
        .model
        .as_ref()
        .map(|m| (m.layers, m.heads))
        .unwrap_or((1, 1));
    egui::ComboBox::from_label("Show")
        .selected_text(app.layer.label())
        .show_ui(ui, |ui| {
            let selected_head = match app.layer {
                OverlayLayer::Head { layer, head } => (layer, head),
                _ => (layers / 2, 0),
            };
            let has_causal = app.result.as_ref().is_some_and(|r| r.causal.is_some());
            if has_causal {
                ui.selectable_value(&mut app.layer, OverlayLayer::Causal, "causal map");
            }
            for option in [
                OverlayLayer::None,
                OverlayLayer::Triage,
                OverlayLayer::KnockedOut,
                OverlayLayer::Before,
                OverlayLayer::After,
                OverlayLayer::LayerMean {
                    layer: selected_head.0,
                },
                OverlayLayer::Head {
                    layer: selected_head.0,
                    head: selected_head.1,
                },
            ] {
                ui.selectable_value(&mut app.layer, option, option.label());
            }
        });
    // While a model loads its size is unknown, and a slider over 0..=0 would clamp the layer a
    // teaching case opens on to 0 before its model is there.
    let size_known = app.model.is_some();
    match &mut app.layer {
        OverlayLayer::Head { layer, head } if size_known => {
            ui.add(egui::Slider::new(layer, 0..=layers.saturating_sub(1)).text("layer"));
            ui.add(egui::Slider::new(head, 0..=heads.saturating_sub(1)).text("head"));
        }
        OverlayLayer::LayerMean { layer } if size_known => {
            ui.add(egui::Slider::new(layer, 0..=layers.saturating_sub(1)).text("layer"));
        }
        _ => {}
    }
    ui.checkbox(
        &mut app.persisted.relative_maps,
        "relative to the general prompt",
    );
    ui.horizontal(|ui| {
        ui.label("colormap");
        for (map, name) in [
            (Colormap::Inferno, "inferno"),
            (Colormap::Viridis, "viridis"),
            (Colormap::Jet, "jet"),
        ] {
            ui.selectable_value(&mut app.persisted.colormap, map, name);
        }
    });
    ui.add(egui::Slider::new(&mut app.persisted.opacity, 0.0..=1.0).text("opacity"));
    ui.checkbox(&mut app.persisted.smooth, "smooth");
    ui.horizontal(|ui| {
        ui.label("knocked-out tokens");
        for (mode, name) in [
            (MaskMode::None, "hide"),
            (MaskMode::Outline, "outline"),
            (MaskMode::Fill, "fill"),
        ] {
            ui.selectable_value(&mut app.persisted.mask_mode, mode, name);
        }
    });
}

fn regions_ui(app: &mut FoveaApp, ui: &mut egui::Ui) {
    ui.heading("Regions");
    ui.horizontal_wrapped(|ui| {
        for (tool, name) in [
            (Tool::Navigate, "Navigate"),
            (Tool::Box, "Box"),
            (Tool::Ellipse, "Ellipse"),
            (Tool::Polygon, "Polygon"),
            (Tool::Brush, "Brush"),
            (Tool::Erase, "Erase"),
        ] {
            ui.selectable_value(&mut app.tool, tool, name);
        }
    });
    if app.tool == Tool::Polygon {
        ui.label("Click points; double-click or Enter closes the polygon.");
    }
    if ui
        .button("Import regions…")
        .on_hover_text(
            "from a DICOM SEG on this image, a NIfTI mask or label map, COCO or VGMED JSON",
        )
        .clicked()
    {
        app.commands.push(Command::ImportRegionsDialog);
    }
    let mut remove = None;
    let mut edited = false;
    // Per region: the attention ratio of the two panes of the before | after view (the shown
    // head or layer map, else the triage heads' mean), so a distractor losing attention shows;
    // and its causal effect once a causal map ran (the drop when the region is knocked out).
    let [(a, ra, _), (b, rb, _)] = match app.layer {
        OverlayLayer::Causal => [
            (OverlayLayer::Before, false, String::new()),
            (OverlayLayer::After, false, String::new()),
        ],
        _ => heads::before_after_panes(app),
    };
    let causal: Vec<(String, f64)> = app
        .result
        .as_ref()
        .and_then(|r| r.causal.as_ref())
        .map(|c| c.regions.clone())
        .unwrap_or_default();
    let before = heads::layer_values_of(app, a, ra);
    let after = heads::layer_values_of(app, b, rb);
    let grid = app.result.as_ref().map(|r| r.grid);
    let spacing = app.image.as_ref().and_then(|i| i.study.pixel_spacing_mm);
    for (index, region) in app.regions.iter_mut().enumerate() {
        ui.horizontal(|ui| {
            edited |= ui
                .add(egui::TextEdit::singleline(&mut region.name).desired_width(120.0))
                .changed();
            ui.label(region.region.kind());
            let mut distractor = region.role == RegionRole::Distractor;
            if ui
                .checkbox(&mut distractor, "distractor")
                .on_hover_text(
                    "A distractor is measured on its own and left out of the region metrics",
                )
                .changed()
            {
                region.role = if distractor {
                    RegionRole::Distractor
                } else {
                    RegionRole::Target
                };
                edited = true;
            }
            if ui.small_button("Delete").clicked() {
                remove = Some(index);
            }
        });
        ui.label(
            RichText::new(format!("    {}", region.region.size_text(spacing))).color(Color32::GRAY),
        );
        if let (Some(grid), Some(before), Some(after)) = (grid, &before, &after) {
            let tokens = region.region.tokens(&grid);
            if !tokens.is_empty() {
                let ratio = |map: &[f32]| crate::grounding::metrics::attention_ratio(map, &tokens);
                let effect = causal
                    .iter()
                    .find(|(name, _)| name == &region.name)
                    .map_or(String::new(), |(_, drop)| {
                        format!("; knocked out, log p drops {drop:.3}")
                    });
                ui.label(
                    RichText::new(format!(
                        "    {}: attention ratio {:.2} before, {:.2} after knockout{effect}",
                        region.name,
                        ratio(before),
                        ratio(after)
                    ))
                    .color(Color32::GRAY),
                );
            }
        }
    }
    if let Some(index) = remove {
        app.regions.remove(index);
        app.mark_dirty();
    }
    if edited {
        app.mark_dirty();
    }
    if !app.regions.is_empty() && ui.button("Clear regions").clicked() {
        app.commands.push(Command::ClearRegions);
    }
    if let Some(metrics) = heads::current_metrics(app) {
        egui::Grid::new("metrics").num_columns(2).show(ui, |ui| {
            let row = |ui: &mut egui::Ui, name: &str, value: String| {
                ui.label(name);
                ui.label(value);
                ui.end_row();
            };
            row(ui, "attention ratio", format!("{:.3}", metrics.ratio));
            row(ui, "KL(g||p)", format!("{:.3}", metrics.kl));
            row(ui, "JS", format!("{:.3}", metrics.js));
            row(
                ui,
                "pointing game",
                if metrics.pointing {
                    "hit".into()
                } else {
                    "miss".into()
                },
            );
        });
        ui.label(
            RichText::new(format!(
                "of the {} against the regions",
                heads::metrics_layer(app).label()
            ))
            .color(Color32::GRAY),
        );
    }
}

//! The top bar: Open, Open folder, Recent, Export (PNG, JSON, COCO, DICOM SEG and Secondary
//! Capture, with the identity choice), Model, the before | after toggle and the model line.

use crate::app::state::{precision_label, Command, ExportKind, FoveaApp};
use crate::model::linear::Quantize;

pub fn menu_ui(app: &mut FoveaApp, ui: &mut egui::Ui) {
    ui.horizontal(|ui| {
        if ui.button("Open…").clicked() {
            app.commands.push(Command::OpenDialog);
        }
        if ui
            .button("Open folder…")
            .on_hover_text("a folder of DICOM files or a DICOMDIR: its studies and series")
            .clicked()
        {
            app.commands.push(Command::OpenFolderDialog);
        }
        ui.menu_button("Recent", |ui| {
            for path in app.persisted.recent.clone() {
                if ui.button(path.display().to_string()).clicked() {
                    app.commands.push(Command::Open(path));
                    ui.close();
                }
            }
        });
        ui.menu_button("Export", |ui| {
            if ui.button("Export PNG").clicked() {
                app.commands.push(Command::Export(ExportKind::Png));
                ui.close();
            }
            if ui.button("Export record (JSON)").clicked() {
                app.commands.push(Command::Export(ExportKind::Record));
                ui.close();
            }
            if ui.button("Export regions (COCO JSON)").clicked() {
                app.commands.push(Command::Export(ExportKind::Regions));
                ui.close();
            }
            ui.separator();
            if ui
                .button("Export DICOM SEG (regions + triage mask)")
                .on_hover_text("a binary DICOM Segmentation referencing the image: drawn regions MANUAL, fovea's maps AUTOMATIC")
                .clicked()
            {
                app.commands.push(Command::Export(ExportKind::Seg));
                ui.close();
            }
            if ui
                .button("Export DICOM Secondary Capture (view)")
                .on_hover_text("the composited view with its colour bar, as a DICOM image any PACS shows")
                .clicked()
            {
                app.commands.push(Command::Export(ExportKind::Capture));
                ui.close();
            }
            let mut with_map = app.seg_map_threshold.is_some();
            if ui
                .checkbox(&mut with_map, "SEG: add the triage map ≥ 50% of its range")
                .changed()
            {
                app.seg_map_threshold = with_map.then_some(0.5);
            }
            ui.checkbox(&mut app.keep_identity, "Keep patient identity for PACS")
                .on_hover_text("off (default): DICOM exports are de-identified (PS3.15 Basic Profile: pseudonym, no dates, new UIDs); on: they carry the source's patient and study, so a PACS files them with the image");
        });
        model_menu_ui(app, ui);
        ui.separator();
        ui.toggle_value(&mut app.side_by_side, "Before | after");
        ui.separator();
        match &app.model {
            Some(model) => ui.label(format!(
                "model: {} · {} layers × {} heads · {} · {}",
                model.arch,
                model.layers,
                model.heads,
                match model.grid {
                    Some((rows, cols)) => format!("{rows}×{cols} tokens"),
                    None => "tokens follow the image".to_string(),
                },
                precision_label(model.quantize)
            )),
            None if app.loading.is_some() => ui.label("model: loading…"),
            None => ui.label("model: none (Model, then Open model folder…)"),
        };
    });
}

/// Model: Open model folder…, recent models, the bundled demo, and the precision models are
/// loaded at (choosing another reloads the current model).
fn model_menu_ui(app: &mut FoveaApp, ui: &mut egui::Ui) {
    ui.menu_button("Model", |ui| {
        if ui.button("Open model folder…").clicked() {
            app.commands.push(Command::OpenModelDialog);
            ui.close();
        }
        if ui.button("Bundled demo model").clicked() {
            app.commands
                .push(Command::LoadModel(crate::demo::demo_model_dir()));
            ui.close();
        }
        ui.separator();
        ui.label("Recent models");
        if app.persisted.recent_models.is_empty() {
            ui.weak("(none yet)");
        }
        for dir in app.persisted.recent_models.clone() {
            let current = app.model.as_ref().is_some_and(|m| m.dir == dir);
            if ui
                .selectable_label(current, dir.display().to_string())
                .clicked()
            {
                app.commands.push(Command::LoadModel(dir));
                ui.close();
            }
        }
        ui.separator();
        ui.label("Precision of the language model");
        for quantize in [Quantize::None, Quantize::Q8_0, Quantize::Q4K] {
            let chosen = app.persisted.quantize == quantize;
            if ui
                .radio(chosen, precision_label(quantize))
                .on_hover_text(match quantize {
                    Quantize::None => "the checkpoint's bf16/f16/f32, as stored (7B: ~15 GiB)",
                    Quantize::Q8_0 => "8-bit in memory while loading (7B: ~9 GiB)",
                    Quantize::Q4K => "4-bit in memory while loading (7B: ~6 GiB)",
                })
                .clicked()
                && !chosen
            {
                app.commands.push(Command::SetQuantize(quantize));
                ui.close();
            }
        }
    });
}

//! The series browser (a folder or DICOMDIR): series with thumbnails, modality, number,
//! description and slice count, no patient data; the slice slider; Page Up / Page Down.

use egui::RichText;

use crate::app::state::{Command, FoveaApp};
use crate::imaging::series::Ordering;

/// The list of series (while scanning: the progress).
pub fn series_ui(app: &mut FoveaApp, ui: &mut egui::Ui) {
    let Some(browser) = app.browser.as_mut() else {
        return;
    };
    ui.heading("Series");
    ui.label(
        RichText::new(browser.root.display().to_string())
            .small()
            .weak(),
    );
    if let Some(err) = &browser.failed {
        ui.colored_label(egui::Color32::LIGHT_RED, err);
        return;
    }
    let Some(scan) = &browser.scan else {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label(browser.progress_text());
        });
        return;
    };
    if !scan.skipped.is_empty() {
        ui.weak(format!(
            "{} file(s) passed over (not DICOM images)",
            scan.skipped.len()
        ))
        .on_hover_text(
            scan.skipped
                .iter()
                .take(20)
                .map(|(p, why)| format!("{}: {why}", p.display()))
                .collect::<Vec<_>>()
                .join("\n"),
        );
    }
    let mut chosen = None;
    for (index, series) in scan.series.iter().enumerate() {
        if scan.starts_study(index) {
            ui.label(RichText::new(format!("Study {}", series.study + 1)).strong());
        }
        if browser
            .thumbnail_textures
            .get(index)
            .is_some_and(Option::is_none)
        {
            if let Some(Some(thumb)) = browser.thumbnails.get(index) {
                let size = [thumb.width() as usize, thumb.height() as usize];
                let pixels = egui::ColorImage::from_rgb(size, thumb.as_raw());
                browser.thumbnail_textures[index] = Some(ui.ctx().load_texture(
                    format!("series-thumb-{index}"),
                    pixels,
                    egui::TextureOptions::LINEAR,
                ));
            }
        }
        let selected = index == browser.series;
        let response = ui
            .horizontal(|ui| {
                if let Some(Some(texture)) = browser.thumbnail_textures.get(index) {
                    ui.image((texture.id(), egui::vec2(48.0, 48.0)));
                }
                let mut title = series.modality.clone().unwrap_or_else(|| "?".into());
                if let Some(number) = series.series_number {
                    title.push_str(&format!(" #{number}"));
                }
                ui.vertical(|ui| {
                    let label = ui.selectable_label(selected, RichText::new(title).strong());
                    if let Some(description) = &series.description {
                        ui.label(description);
                    }
                    ui.weak(format!(
                        "{} slice(s), {} × {}{}",
                        series.slices.len(),
                        series.columns,
                        series.rows,
                        match series.ordering {
                            Ordering::Position => "",
                            Ordering::InstanceNumber => ", by Instance Number",
                            Ordering::FileName => ", by file name",
                        }
                    ));
                    label
                })
                .inner
            })
            .inner;
        if response.clicked() && !selected {
            chosen = Some(index);
        }
    }
    if let Some(index) = chosen {
        app.commands.push(Command::SetSeries(index));
    }
}

/// Slice k of N with a slider and the slice's position along the normal.
pub fn slice_bar_ui(app: &mut FoveaApp, ui: &mut egui::Ui) {
    let Some(browser) = &app.browser else {
        return;
    };
    let Some(series) = browser.current() else {
        return;
    };
    let count = series.slices.len();
    if count < 2 {
        return;
    }
    ui.separator();
    let mut slice = browser.slice;
    if ui
        .button("<")
        .on_hover_text("previous slice (Page Up)")
        .clicked()
    {
        slice = slice.saturating_sub(1);
    }
    ui.add(
        egui::Slider::new(&mut slice, 0..=count - 1)
            .text(format!("slice of {count}"))
            .clamping(egui::SliderClamping::Always),
    )
    .on_hover_text(
        "Page Up / Page Down, or the wheel with Ctrl or Shift held, step through the slices",
    );
    if ui
        .button(">")
        .on_hover_text("next slice (Page Down)")
        .clicked()
    {
        slice = (slice + 1).min(count - 1);
    }
    if let Some(p) = series.slices.get(browser.slice).and_then(|s| s.position) {
        ui.weak(format!("({:.1}, {:.1}, {:.1}) mm", p[0], p[1], p[2]));
    }
    if slice != browser.slice {
        app.commands.push(Command::SetSlice(slice));
    }
}

/// Page Up / Page Down step through the slices (not while typing).
pub fn slice_keys(app: &mut FoveaApp, ui: &egui::Ui) {
    if app.browser.is_none() || ui.ctx().egui_wants_keyboard_input() {
        return;
    }
    let (up, down) = ui.input(|i| {
        (
            i.key_pressed(egui::Key::PageUp),
            i.key_pressed(egui::Key::PageDown),
        )
    });
    if up {
        step_slice(app, -1);
    }
    if down {
        step_slice(app, 1);
    }
}

/// Move `delta` slices (clamped to the series).
pub fn step_slice(app: &mut FoveaApp, delta: i64) {
    let Some(browser) = &app.browser else {
        return;
    };
    let count = browser.current().map_or(0, |s| s.slices.len()) as i64;
    let next = (browser.slice as i64 + delta).clamp(0, (count - 1).max(0)) as usize;
    if next != browser.slice {
        app.commands.push(Command::SetSlice(next));
    }
}

//! The Answers panel: each answer as clickable tokens whose maps the viewport and head explorer
//! then show, what was knocked out, the faithfulness curve and the causal map. The answers themselves, with
//! their first-token probability, are in the strip above the image (story.rs).

use egui::{Color32, RichText};

use crate::app::state::{AnswerView, FoveaApp};
use crate::app::worker::CaseResult;

pub fn answers_ui(app: &mut FoveaApp, ui: &mut egui::Ui) {
    ui.heading("Answers");
    let Some(result) = &app.result else {
        ui.label("The answers appear above the image once a question is asked.");
        return;
    };
    ui.label(format!(
        "{} of {} image tokens knocked out in layer(s) {:?}",
        result.outcome.knocked_out.len(),
        result.grid.rows * result.grid.cols,
        result.settings.masked_layers
    ));
    if !result.unknown_words.is_empty() {
        ui.colored_label(
            Color32::from_rgb(255, 160, 60),
            format!(
                "The model's vocabulary lacks {} (read as <unk>).",
                result.unknown_words.join(", ")
            ),
        );
    }
    if let Some(view) = answer_tokens_ui(app, ui) {
        app.answer_view = view;
    }
    faithfulness_ui(app, ui);
    causal_ui(app, ui);
}

/// Cells a side of the default causal map: as many as cost about one prefill (cells x the
/// question's suffix rows ~ the prefix rows), at most the token grid's side.
pub fn default_causal_side(result: &CaseResult) -> usize {
    let prompt = &result.outcome.prompt;
    let suffix = prompt.after_image().len().max(1);
    let cells = prompt.image_span.end / suffix;
    ((cells as f64).sqrt().floor() as usize).clamp(1, result.grid.rows.min(result.grid.cols))
}

/// "Causal map": the cells picker with the cost before running, then the map's summary and
/// each region's causal effect beside its attention ratio.
fn causal_ui(app: &mut FoveaApp, ui: &mut egui::Ui) {
    let Some(result) = &app.result else {
        return;
    };
    let most = result.grid.rows.min(result.grid.cols);
    if app.causal_side == 0 {
        app.causal_side = default_causal_side(result);
    }
    app.causal_side = app.causal_side.clamp(1, most);
    let side = app.causal_side;
    let prompt = &result.outcome.prompt;
    let suffix = prompt.after_image().len();
    // The original answer's cells, and VGRefine's answer's when it knocked anything out.
    let maps = if result.outcome.knocked_out.is_empty() {
        1
    } else {
        2
    };
    let rows = maps * side * side * suffix;
    // The question and general prompts' suffixes ran as one batch: time per suffix row.
    let per_row_ms = result.outcome.suffixes_ms / (2 * suffix).max(1) as f64;
    let estimate = format!(
        "{side}x{side} cells: {} knockout passes x {suffix} tokens = {rows} suffix tokens \
         ({:.1}x the prefix), about {:.1} s",
        maps * side * side,
        rows as f64 / prompt.image_span.end.max(1) as f64,
        per_row_ms * rows as f64 / 1e3
    );
    ui.horizontal(|ui| {
        let ready = !app.worker.busy;
        if ui
            .add_enabled(ready, egui::Button::new("Causal map"))
            .on_hover_text(
                "Knock each cell of the image out of the answer in every layer and show how much \
                 the first answer token's log-probability drops (red: the answer needs the cell; \
                 blue: it does better without it)",
            )
            .clicked()
        {
            app.commands.push(crate::app::state::Command::CausalMap);
        }
        ui.add(egui::DragValue::new(&mut app.causal_side).range(1..=most))
            .on_hover_text("cells per side");
    });
    ui.label(RichText::new(estimate).small());
    if let (Some((done, total)), Some("causal map")) = (app.progress, app.stage) {
        ui.add(
            egui::ProgressBar::new(done as f32 / total.max(1) as f32)
                .text(format!("{done} of {total} knockout passes")),
        );
    }
    let Some(result) = &app.result else {
        return;
    };
    let Some(view) = &result.causal else {
        return;
    };
    let map = &view.map;
    let cols = map.cells[1].max(1);
    if let Some((best, most)) = map.most_causal() {
        ui.label(format!(
            "causal map {}x{} ({:.1} s): knocking out row {} col {} drops log p({:?}) most, by {most:.3}",
            map.cells[0],
            map.cells[1],
            view.ms / 1e3,
            best / cols,
            best % cols,
            map.target.token
        ));
    }
    if let Some(refined) = &view.refined {
        if let Some((best, most)) = refined.most_causal() {
            ui.label(format!(
                "VGRefine answer: knocking out row {} col {} drops log p({:?}) most, by {most:.3} \
                 (Before | after shows both maps)",
                best / cols,
                best % cols,
                refined.target.token
            ));
        }
    }
    if let Some(agreement) = &map.agreement {
        ui.label(format!(
            "agreement with the {}: Spearman {}, hottest cell {} the most causal one",
            agreement.map.replace('_', " "),
            agreement
                .spearman
                .map_or("undefined".to_string(), |r| format!("{r:.2}")),
            if agreement.top_cell_hit {
                "is"
            } else {
                "is not"
            }
        ));
    }
    let triage = result.outcome.triage.as_ref().map(|t| &t.score_map);
    for (name, drop) in &view.regions {
        let ratio = app
            .regions
            .iter()
            .find(|r| &r.name == name)
            .zip(triage)
            .and_then(|(r, map)| {
                crate::grounding::metrics::compute(map, &r.region.tokens(&result.grid))
            })
            .map_or(String::new(), |m| {
                format!(", triage-map attention ratio {:.2}", m.ratio)
            });
        ui.label(format!(
            "{name}: knocked out, log p drops by {drop:.3}{ratio}"
        ));
    }
}

/// The faithfulness curve of the last answer, when it was asked for: the first answer token's
/// probability as image tokens are knocked out in the triage map's order, and in random orders
/// (mean, and the band from the lowest to the highest draw).
fn faithfulness_ui(app: &mut FoveaApp, ui: &mut egui::Ui) {
    use egui_plot::{Line, Plot, PlotPoints};
    ui.horizontal(|ui| {
        let ready = app.result.is_some() && !app.worker.busy;
        if ui
            .add_enabled(ready, egui::Button::new("Faithfulness of the shown map"))
            .on_hover_text(
                "Knock out image tokens most-attended first in the shown map's order (and in random \
                 orders), and follow the first answer token's probability",
            )
            .clicked()
        {
            app.commands.push(crate::app::state::Command::Faithfulness);
        }
        ui.checkbox(&mut app.faithfulness_all_layers, "all layers");
    });
    let Some(curve) = app.result.as_ref().and_then(|r| r.faithfulness.as_ref()) else {
        return;
    };
    ui.label(format!(
        "faithfulness: AUC {:.3} in the {} order, {:.3} in random orders (layers {:?})",
        curve.auc,
        curve.order.replace('_', " "),
        curve.random_auc,
        curve.layers
    ));
    let points = |values: &[f64]| -> PlotPoints {
        curve
            .fractions
            .iter()
            .zip(values)
            .map(|(&x, &y)| [x, y])
            .collect()
    };
    let low: Vec<f64> = curve.random_band.iter().map(|b| b[0]).collect();
    let high: Vec<f64> = curve.random_band.iter().map(|b| b[1]).collect();
    Plot::new("faithfulness")
        .height(150.0)
        .x_axis_label("fraction knocked out")
        .y_axis_label("probability")
        .allow_drag(false)
        .allow_zoom(false)
        .allow_scroll(false)
        .legend(egui_plot::Legend::default().position(egui_plot::Corner::LeftBottom))
        .show(ui, |plot_ui| {
            let band = Color32::from_rgba_unmultiplied(150, 150, 150, 120);
            plot_ui.line(Line::new("random (lowest)", points(&low)).color(band));
            plot_ui.line(Line::new("random (highest)", points(&high)).color(band));
            plot_ui.line(
                Line::new("random (mean)", points(&curve.random_mean))
                    .color(Color32::from_rgb(220, 50, 47)),
            );
            plot_ui.line(
                Line::new("map order", points(&curve.prob))
                    .color(Color32::from_rgb(0, 220, 255))
                    .width(2.0),
            );
        });
}

/// The answers as clickable tokens (original and VGRefine, tokens that differ between them in
/// orange): a click shows the map of the query that produced that token in the viewport and the
/// head explorer; "question" goes back to the first token's query, "whole answer" averages over
/// the answer's tokens (each weighted equally). Returns the view the user picked.
fn answer_tokens_ui(app: &FoveaApp, ui: &mut egui::Ui) -> Option<AnswerView> {
    let outcome = &app.result.as_ref()?.outcome;
    let mut picked = None;
    ui.horizontal(|ui| {
        ui.label("maps of:");
        if ui
            .selectable_label(app.answer_view == AnswerView::Question, "question")
            .clicked()
        {
            picked = Some(AnswerView::Question);
        }
    });
    for (refined, name, answer, other) in [
        (false, "original", &outcome.original, &outcome.refined),
        (true, "VGRefine", &outcome.refined, &outcome.original),
    ] {
        ui.horizontal_wrapped(|ui| {
            ui.label(format!("{name}:"));
            for (index, (text, id)) in answer.token_texts.iter().zip(&answer.ids).enumerate() {
                let differs = other.ids.get(index) != Some(id);
                let shown = text.trim().to_string();
                let label = if differs {
                    RichText::new(shown).color(Color32::from_rgb(255, 160, 60))
                } else {
                    RichText::new(shown)
                };
                let view = AnswerView::Token { refined, index };
                if ui
                    .selectable_label(app.answer_view == view, label)
                    .on_hover_text(format!("answer token {index} (id {id})"))
                    .clicked()
                {
                    picked = Some(view);
                }
            }
            let whole = AnswerView::Whole { refined };
            if ui
                .selectable_label(app.answer_view == whole, "whole answer")
                .on_hover_text(
                    "the mean of the maps of all the answer's tokens, each weighted equally",
                )
                .clicked()
            {
                picked = Some(whole);
            }
        });
    }
    picked
}

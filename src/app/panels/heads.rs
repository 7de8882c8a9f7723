//! Head explorer: a layer x head heatmap of attention mass on the image (or of attention ratio
//! against the drawn regions), a per-layer curve, the triage heads, and the head list to re-run.

use std::borrow::Cow;

use egui::Color32;
use egui_plot::{Heatmap, Line, Plot, PlotPoint, PlotPoints};

use crate::app::state::{AnswerView, Command, FoveaApp, OverlayLayer};
use crate::grounding::metrics::{self, Metrics};
use crate::grounding::{mean_map, split_heads, LayerHeadMaps, RelativeMaps};

/// The question-side maps the views read (`[l][h][i]`): the first answer token's query (the
/// question), one answer token's, or the mean over an answer's tokens.
pub fn viewed_maps(app: &FoveaApp) -> Option<Cow<'_, LayerHeadMaps>> {
    let outcome = &app.result.as_ref()?.outcome;
    let heads = outcome.question_maps.first().map_or(1, Vec::len);
    let answer = |refined: bool| {
        if refined {
            &outcome.refined
        } else {
            &outcome.original
        }
    };
    Some(match app.answer_view {
        AnswerView::Question => Cow::Borrowed(&outcome.question_maps),
        AnswerView::Token { refined, index } => {
            let tokens = &answer(refined).token_attention;
            Cow::Owned(split_heads(tokens.get(index).or(tokens.last())?, heads))
        }
        AnswerView::Whole { refined } => {
            let tokens = &answer(refined).token_attention;
            let first = tokens.first()?;
            let mean: Vec<Vec<f32>> = (0..first.len())
                .map(|l| mean_map(tokens.iter().map(|t| &t[l])))
                .collect();
            Cow::Owned(split_heads(&mean, heads))
        }
    })
}

/// The heat values of the current overlay layer over the token grid (unnormalised).
pub fn layer_values(app: &FoveaApp, layer: OverlayLayer) -> Option<Vec<f32>> {
    layer_values_of(app, layer, false)
}

/// The two panes of the before | after view: a head or layer-mean map is shown from the
/// question's pass and from the knocked-out pass; anything else gives the triage heads' mean
/// before and after (what VGRefine changed). `(layer, from the knocked-out pass, title)`.
pub fn before_after_panes(app: &FoveaApp) -> [(OverlayLayer, bool, String); 2] {
    match app.layer {
        OverlayLayer::Head { .. } | OverlayLayer::LayerMean { .. } => [
            (
                app.layer,
                false,
                format!("{}, before knockout", app.layer.label()),
            ),
            (
                app.layer,
                true,
                format!("{}, after knockout", app.layer.label()),
            ),
        ],
        // Where each answer depends; without VGRefine's map, where the triage heads looked |
        // where the answer depends.
        OverlayLayer::Causal
            if app
                .result
                .as_ref()
                .and_then(|r| r.causal.as_ref())
                .is_some_and(|c| c.refined.is_some()) =>
        {
            [
                (
                    OverlayLayer::Causal,
                    false,
                    "causal map, original answer".into(),
                ),
                (
                    OverlayLayer::Causal,
                    true,
                    "causal map, VGRefine answer".into(),
                ),
            ]
        }
        OverlayLayer::Causal => [
            (
                OverlayLayer::Before,
                false,
                "attention of the triage heads".into(),
            ),
            (
                OverlayLayer::Causal,
                false,
                "causal map (log p drop)".into(),
            ),
        ],
        _ => [
            (OverlayLayer::Before, false, "before knockout".into()),
            (OverlayLayer::After, false, "after knockout".into()),
        ],
    }
}

/// As `layer_values`; with `refined`, head and layer maps come from the knocked-out pass.
pub fn layer_values_of(app: &FoveaApp, layer: OverlayLayer, refined: bool) -> Option<Vec<f32>> {
    let result = app.result.as_ref()?;
    let outcome = &result.outcome;
    let question_maps = if refined {
        Cow::Borrowed(&outcome.refined_maps)
    } else {
        viewed_maps(app)?
    };
    let relative = RelativeMaps {
        question: &question_maps,
        general: &outcome.general_maps,
        normalize: true,
    };
    let heads = &result.settings.heads;
    let triage_heads_mean =
        |maps: &crate::grounding::LayerHeadMaps| mean_map(heads.iter().map(|&(l, h)| &maps[l][h]));
    let relative_on = app.persisted.relative_maps;
    Some(match layer {
        OverlayLayer::None | OverlayLayer::KnockedOut => return None,
        // Each token shows its cell's drop (with `refined`, in VGRefine's answer).
        OverlayLayer::Causal => {
            let view = result.causal.as_ref()?;
            let map = if refined {
                view.refined.as_ref()?
            } else {
                &view.map
            };
            let mut values = vec![0f32; result.grid.rows * result.grid.cols];
            for (tokens, &drop) in map.cell_tokens.iter().zip(&map.drop) {
                for &t in tokens {
                    if let Some(v) = values.get_mut(t) {
                        *v = drop as f32;
                    }
                }
            }
            values
        }
        OverlayLayer::Head { layer, head } => {
            let layer = layer.min(question_maps.len().checked_sub(1)?);
            let head = head.min(question_maps[layer].len().checked_sub(1)?);
            if relative_on {
                relative.head(layer, head)
            } else {
                question_maps[layer][head].clone()
            }
        }
        OverlayLayer::LayerMean { layer } => {
            let layer = layer.min(question_maps.len().checked_sub(1)?);
            if relative_on {
                relative.layer(layer)
            } else {
                mean_map(&question_maps[layer])
            }
        }
        // The triage map of the question (what VGRefine thresholded); for an answer token, the
        // same heads' relative maps of that token.
        OverlayLayer::Triage => match (&outcome.triage, app.answer_view) {
            (Some(t), AnswerView::Question) => t.score_map.clone(),
            _ => crate::grounding::triage::score_map(&relative, heads),
        },
        OverlayLayer::Before => triage_heads_mean(&question_maps),
        OverlayLayer::After => triage_heads_mean(&outcome.refined_maps),
    })
}

/// The map the region metrics are of: the shown one, or the triage map when the overlay shows
/// no attention map (nothing, the knocked-out mask, or a causal map's signed drops).
pub fn metrics_layer(app: &FoveaApp) -> OverlayLayer {
    match app.layer {
        OverlayLayer::None | OverlayLayer::KnockedOut | OverlayLayer::Causal => {
            OverlayLayer::Triage
        }
        other => other,
    }
}

/// Metrics of the current overlay map against the union of the regions.
pub fn current_metrics(app: &FoveaApp) -> Option<Metrics> {
    let tokens = app.region_tokens()?;
    metrics::compute(&layer_values(app, metrics_layer(app))?, &tokens)
}

pub fn head_explorer_ui(app: &mut FoveaApp, ui: &mut egui::Ui) {
    ui.heading("Heads");
    let Some(result) = &app.result else {
        ui.label("Per-head attention appears after a question.");
        return;
    };
    let outcome = &result.outcome;
    // The explorer follows the answer token chosen in the Answers panel.
    let question_maps = viewed_maps(app).unwrap_or(Cow::Borrowed(&outcome.question_maps));
    let layers = question_maps.len();
    let heads = question_maps.first().map(|l| l.len()).unwrap_or(0);
    let region = app.region_tokens().filter(|t| !t.is_empty());
    let relative = RelativeMaps {
        question: &question_maps,
        general: &outcome.general_maps,
        normalize: true,
    };
    let (what, values): (&str, Vec<f64>) = match &region {
        Some(tokens) => (
            "attention ratio in the regions (relative maps)",
            (0..layers)
                .flat_map(|l| (0..heads).map(move |h| (l, h)))
                .map(|(l, h)| metrics::attention_ratio(&relative.head(l, h), tokens))
                .collect(),
        ),
        None => (
            "attention mass on the image",
            question_maps
                .iter()
                .flatten()
                .map(|m| m.iter().map(|&v| v as f64).sum())
                .collect(),
        ),
    };
    ui.label(what);
    let triage_heads = result.settings.heads.clone();
    // Cells centred on their indices, so the axes label the cells (layer 0..L-1, head 0..H-1).
    let integer_ticks = |mark: egui_plot::GridMark, _: &std::ops::RangeInclusive<f64>| {
        if mark.value.fract() == 0.0 && mark.value >= 0.0 {
            format!("{}", mark.value)
        } else {
            String::new()
        }
    };
    let cell_at = |point: PlotPoint| -> Option<(usize, usize)> {
        let (head, layer) = (point.x.round(), point.y.round());
        (head >= 0.0 && layer >= 0.0 && (head as usize) < heads && (layer as usize) < layers)
            .then_some((layer as usize, head as usize))
    };
    let plot = Plot::new("head explorer")
        .height(220.0)
        .x_axis_label("head")
        .y_axis_label("layer")
        .x_axis_formatter(integer_ticks)
        .y_axis_formatter(integer_ticks)
        .allow_drag(false)
        .allow_zoom(false)
        .allow_scroll(false)
        .show(ui, |plot_ui| {
            plot_ui.heatmap(
                Heatmap::new(values.clone(), heads.max(1))
                    .show_labels(false)
                    .at(PlotPoint::new(-0.5, -0.5)),
            );
            for &(l, h) in &triage_heads {
                let (x, y) = (h as f64 - 0.5, l as f64 - 0.5);
                let square = vec![
                    [x, y],
                    [x + 1.0, y],
                    [x + 1.0, y + 1.0],
                    [x, y + 1.0],
                    [x, y],
                ];
                plot_ui.line(
                    Line::new("triage heads", PlotPoints::from(square))
                        .color(Color32::from_rgb(0, 220, 255)),
                );
            }
            let hovered = plot_ui.pointer_coordinate().and_then(cell_at);
            let clicked = plot_ui.response().clicked().then_some(hovered).flatten();
            (hovered, clicked)
        });
    let (hovered, clicked) = plot.inner;
    // The value under the cursor.
    match hovered {
        Some((l, h)) => ui.label(format!(
            "layer {l}, head {h}: {:.4}",
            values.get(l * heads + h).copied().unwrap_or(f64::NAN)
        )),
        None => ui.label("point at a cell for its value; click it to show that head"),
    };
    if let Some((layer, head)) = clicked {
        app.layer = OverlayLayer::Head { layer, head };
    }
    // Per-layer curve: the head-mean of the same quantity.
    let curve: Vec<[f64; 2]> = (0..layers)
        .map(|l| {
            let row = &values[l * heads..(l + 1) * heads];
            [l as f64, row.iter().sum::<f64>() / heads.max(1) as f64]
        })
        .collect();
    Plot::new("per layer")
        .height(140.0)
        .x_axis_label("layer")
        .show(ui, |plot_ui| {
            plot_ui.line(Line::new("head mean", PlotPoints::from(curve)));
        });
    ui.horizontal(|ui| {
        ui.label("heads");
        ui.add(
            egui::TextEdit::singleline(&mut app.heads_text)
                .hint_text("model defaults (l:h,l:h)")
                .desired_width(180.0),
        );
    });
    ui.horizontal(|ui| {
        ui.label("masked layers");
        ui.add(
            egui::TextEdit::singleline(&mut app.masked_text)
                .hint_text("model defaults")
                .desired_width(80.0),
        );
        ui.add(egui::Slider::new(&mut app.percentile, 0.0..=100.0).text("percentile"));
    });
    if ui.button("Re-run with these heads").clicked() {
        app.commands.push(Command::Ask);
    }
}

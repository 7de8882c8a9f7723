//! The strip above the image: the open teaching case's caption and the answers (original and
//! VGRefine, with their first token's probability). The answers are what the user asked for, so
//! they sit here, always in view, and not at the foot of a left column that a long case list can
//! push off the screen.

use egui::{Color32, RichText};

use crate::app::state::FoveaApp;
use crate::app::teaching::open_caption;

pub fn story_ui(app: &FoveaApp, ui: &mut egui::Ui) {
    if let Some(caption) = open_caption(app) {
        ui.label(RichText::new(caption).color(Color32::from_rgb(255, 215, 120)));
    }
    let Some(result) = &app.result else {
        ui.label(
            "Ask a question to see the model's answer, VGRefine's answer and where it looked.",
        );
        return;
    };
    let expected = app
        .cases
        .iter()
        .find(|c| {
            Some(&c.path) == app.image.as_ref().map(|i| &i.study.path)
                && c.question == result.question
        })
        .map(|c| c.answer.clone());
    let outcome = &result.outcome;
    egui::Grid::new("story answers")
        .num_columns(2)
        .show(ui, |ui| {
            let answer = |ui: &mut egui::Ui, name: &str, text: &str, logits: &[f32]| {
                ui.label(name);
                // One line per answer: a line break the model generated is shown as a space
                // here (the answer's tokens, line breaks and all, are in the Answers panel).
                let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
                ui.label(
                    RichText::new(format!(
                        "{one_line}   (p = {:.2})",
                        crate::grounding::faithfulness::top_probability(logits)
                    ))
                    .strong(),
                );
                ui.end_row();
            };
            answer(
                ui,
                "Original",
                &outcome.original.text,
                &outcome.original.first_token_logits,
            );
            answer(
                ui,
                "VGRefine",
                &outcome.refined.text,
                &outcome.refined.first_token_logits,
            );
            if let Some(looked) = &result.look_here {
                answer(ui, "Looked here", &looked.text, &looked.first_token_logits);
            }
            if let Some(expected) = expected {
                ui.label("Expected");
                ui.label(expected);
                ui.end_row();
            }
        });
}

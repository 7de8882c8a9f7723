//! The app's causal map request: the last answer's first token followed while each cell of
//! the image (and each drawn region) is knocked out in every layer, on the worker's cached
//! image prefix.

use super::panels;
use super::state::FoveaApp;
use super::worker::{CausalAsk, Request};
use crate::grounding::causal::{log_probability, Cells, Target};
use crate::grounding::refine::knockout_edges;

/// The request for the last answer at `causal_side` cells a side (0: the default, about one
/// prefill), or what is missing.
pub(super) fn request(app: &FoveaApp) -> Result<Request, String> {
    let Some(result) = &app.result else {
        return Err("ask a question first".into());
    };
    let original = &result.outcome.original;
    let logits = &original.first_token_logits;
    if logits.is_empty() {
        return Err("the answer has no first token to follow".into());
    }
    let side = match app.causal_side {
        0 => panels::answers::default_causal_side(result),
        n => n.min(result.grid.rows.min(result.grid.cols)),
    };
    let (target, base_logprob) = followed(original);
    // VGRefine's answer, when it knocked anything out: its own first token, under its knockout.
    let refined = &result.outcome.refined;
    let knocked = &result.outcome.knocked_out;
    let refined = (!knocked.is_empty() && !refined.first_token_logits.is_empty()).then(|| {
        let (target, base) = followed(refined);
        let edges = knockout_edges(&result.outcome.prompt, knocked, &result.settings);
        (target, base, edges)
    });
    let regions = app
        .regions
        .iter()
        .map(|r| (r.name.clone(), r.region.tokens(&result.grid)))
        .filter(|(_, tokens)| !tokens.is_empty())
        .collect();
    let shown = result
        .outcome
        .triage
        .as_ref()
        .map(|t| ("triage_map".to_string(), t.score_map.clone()));
    Ok(Request::Causal(Box::new(CausalAsk {
        prompt: result.outcome.prompt.clone(),
        target,
        base_logprob,
        cells: Cells::Grid(side, side),
        layers: (0..app.model.as_ref().map_or(0, |m| m.layers)).collect(),
        shown,
        regions,
        refined,
    })))
}

/// The answer's first token (the greedy one) and its log-probability.
fn followed(answer: &crate::model::Answer) -> (Target, f64) {
    let logits = &answer.first_token_logits;
    let id = crate::model::decoder::argmax(logits) as u32;
    let token = match (answer.ids.first(), answer.token_texts.first()) {
        (Some(&first), Some(text)) if first == id => text.clone(),
        _ => String::new(),
    };
    (Target { id, token }, log_probability(logits, id as usize))
}

//! The machine-readable record of one case, whose field names are the contract in
//! shared/design/INSPECT-JSON.md (shared by `fovea inspect` and the app's export).

use serde_json::{json, Value};

use crate::grounding::faithfulness;
use crate::grounding::metrics::{self, Metrics};
use crate::grounding::refine::{Outcome, Query, Settings};
use crate::grounding::split_heads;
use crate::model::Answer;

/// What a case record is made of (shared by `fovea inspect` and the app's export).
pub struct CaseParts<'a> {
    pub model: Value,
    pub image: Value,
    pub question: &'a str,
    pub outcome: &'a Outcome,
    pub settings: &'a Settings,
    pub heads_source: String,
    pub regions: Vec<Value>,
    pub region_tokens: &'a [usize],
    pub dump_logits: bool,
}

/// The INSPECT-JSON record of one case, without `timings_ms`.
pub fn case_record(parts: CaseParts) -> Value {
    let outcome = parts.outcome;
    let settings = parts.settings;
    let heads = outcome.question_maps.first().map_or(1, Vec::len);
    let mut record = json!({
        "fovea_version": env!("CARGO_PKG_VERSION"),
        "model": parts.model,
        "image": parts.image,
        "question": parts.question,
        "prompt_text": outcome.prompt.text,
        "input_ids": outcome.prompt.input_ids,
        "image_span": [outcome.prompt.image_span.start, outcome.prompt.image_span.end],
        "general_prompt_text": outcome.general_prompt.text,
        "general_input_ids": outcome.general_prompt.input_ids,
        "answer": outcome.original.text,
        "answer_ids": outcome.original.ids,
        "attention": {
            "query": match settings.query { Query::Last => "last", Query::Question => "question" },
            "question": outcome.question_maps,
            "general": outcome.general_maps,
            "refined": outcome.refined_maps,
            "tokens": tokens_record(&outcome.original, heads),
        },
        "knockout": {
            "layers": settings.masked_layers,
            "from": "post-image",
            "decode": settings.knockout_decode,
            "tokens": outcome.knocked_out,
        },
        "refined": {
            "answer": outcome.refined.text,
            "answer_ids": outcome.refined.ids,
            "tokens": tokens_record(&outcome.refined, heads),
        },
        "regions": parts.regions,
    });
    if parts.dump_logits {
        record["first_token_logits"] = json!(outcome.original.first_token_logits);
        record["refined"]["first_token_logits"] = json!(outcome.refined.first_token_logits);
    }
    record["first_token_probability"] = json!(faithfulness::top_probability(
        &outcome.original.first_token_logits
    ));
    record["refined"]["first_token_probability"] = json!(faithfulness::top_probability(
        &outcome.refined.first_token_logits
    ));
    record["triage"] = match &outcome.triage {
        Some(triage) => json!({
            "heads": settings.heads.iter().map(|&(l, h)| [l, h]).collect::<Vec<_>>(),
            "normalize": settings.normalize,
            "score_map": triage.score_map,
            "rule": settings.rule.to_json(),
            "threshold": triage.threshold,
            "knocked_out": triage.knocked_out,
            "heads_source": parts.heads_source,
        }),
        None => json!({
            "heads": [],
            "normalize": settings.normalize,
            "score_map": null,
            "rule": null,
            "knocked_out": outcome.knocked_out,
            "given": true,
        }),
    };
    if !parts.region_tokens.is_empty() {
        record["metrics"] = metrics_record(outcome, settings.normalize, parts.region_tokens);
    }
    record
}

/// One entry per generated token: its text, id and the L x H x N attention of the query that
/// produced it (`tokens[0]` is the last prompt token's: `attention.question` under the default
/// `--query last`).
fn tokens_record(answer: &Answer, heads: usize) -> Vec<Value> {
    answer
        .ids
        .iter()
        .zip(&answer.token_texts)
        .zip(&answer.token_attention)
        .map(|((&id, text), maps)| {
            json!({"token": text, "id": id, "question": split_heads(maps, heads)})
        })
        .collect()
}

/// Per-layer, per-head and triage-map metrics against the region tokens.
pub fn metrics_record(outcome: &Outcome, normalize: bool, region: &[usize]) -> Value {
    let maps = outcome.relative(normalize);
    let layers = outcome.question_maps.len();
    let per_layer: Vec<Metrics> = (0..layers)
        .filter_map(|l| metrics::compute(&maps.layer(l), region))
        .collect();
    let per_head: Vec<Vec<Metrics>> = (0..layers)
        .map(|l| {
            (0..outcome.question_maps[l].len())
                .filter_map(|h| metrics::compute(&maps.head(l, h), region))
                .collect()
        })
        .collect();
    let column = |pick: fn(&Metrics) -> f64| -> Vec<f64> { per_layer.iter().map(pick).collect() };
    let table = |pick: fn(&Metrics) -> f64| -> Vec<Vec<f64>> {
        per_head
            .iter()
            .map(|row| row.iter().map(pick).collect())
            .collect()
    };
    let mut record = json!({
        "per_layer": {
            "ratio": column(|m| m.ratio), "kl": column(|m| m.kl), "js": column(|m| m.js),
            "pointing": per_layer.iter().map(|m| m.pointing).collect::<Vec<_>>(),
        },
        "per_head": {
            "ratio": table(|m| m.ratio), "kl": table(|m| m.kl), "js": table(|m| m.js),
            "pointing": per_head.iter().map(|row| row.iter().map(|m| m.pointing).collect::<Vec<_>>()).collect::<Vec<_>>(),
        },
    });
    if let Some(triage) = &outcome.triage {
        if let Some(m) = metrics::compute(&triage.score_map, region) {
            record["triage_map"] = json!({
                "ratio": m.ratio, "kl": m.kl, "js": m.js, "pointing": m.pointing, "soft_iou": m.soft_iou,
            });
        }
    }
    record
}

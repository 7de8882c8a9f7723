//! VGRefine end to end against an independent numpy/torch implementation of the reference
//! method (`tools/make_vgrefine_fixtures.py`, transformers eager attention): attention maps,
//! triage score map, knocked-out tokens, refined logits and answers, and the metrics, for
//! four settings on two checkpoints. Also numpy's percentile on hand-made arrays with ties.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use fovea::grounding::refine::{self, Query, Settings};
use fovea::grounding::triage::{self, Rule};
use fovea::model::{ImageSession, Model, PixelMapping};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llava")
}

fn floats(value: &Value) -> Vec<f64> {
    match value {
        Value::Array(items) => items.iter().flat_map(floats).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap()],
        Value::Bool(b) => vec![f64::from(u8::from(*b))],
        _ => vec![],
    }
}

fn assert_close(ours: &[f64], theirs: &[f64], relative: f64, absolute: f64, what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: lengths differ");
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        let tolerance = absolute + relative * b.abs();
        assert!(
            (a - b).abs() <= tolerance,
            "{what}[{i}]: {a} vs reference {b}"
        );
    }
}

fn run_reference(name: &str, pixel_key: &str) {
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join(format!("{name}.vgrefine.json"))).unwrap(),
    )
    .unwrap();
    let pixels =
        candle_core::safetensors::load(fixtures().join("image.expected.safetensors"), &Device::Cpu)
            .unwrap();
    let pixel_values: Tensor = pixels[pixel_key].clone();
    let model = Model::load(&fixtures().join(name), None, &Device::Cpu).unwrap();
    let mapping = PixelMapping {
        scale: [1.0, 1.0],
        offset_px: [0.0, 0.0],
        input: [32, 32],
    };
    let question = reference["questions"]["question"].as_str().unwrap();
    let question = question.trim_end_matches(refine::ANSWER_SUFFIX).trim_end();
    let region: Vec<usize> = serde_json::from_value(reference["region"].clone()).unwrap();

    for case in reference["cases"].as_array().unwrap() {
        let id = case["id"].as_u64().unwrap();
        let what = format!("{name} case {id}");
        let heads: Vec<(usize, usize)> =
            serde_json::from_value::<Vec<[usize; 2]>>(case["heads"].clone())
                .unwrap()
                .into_iter()
                .map(|[l, h]| (l, h))
                .collect();
        let value = case["rule_value"].as_f64().unwrap();
        let settings = Settings {
            heads,
            masked_layers: serde_json::from_value(case["masked_layers"].clone()).unwrap(),
            rule: if case["rule"] == "percentile" {
                Rule::Percentile(value)
            } else {
                Rule::Magnitude(value)
            },
            query: if case["query"] == "last" {
                Query::Last
            } else {
                Query::Question
            },
            normalize: case["normalize"].as_bool().unwrap(),
            max_new_tokens: 5,
            stop_at_eos: false,
            ..Settings::default()
        };
        let mut session = ImageSession::from_pixel_values(&model, &pixel_values, mapping).unwrap();
        let outcome = refine::run(&mut session, question, &settings).unwrap();

        // Prompts as the reference tokenised them.
        assert_eq!(
            outcome.prompt.text,
            reference["prompts"]["question"]["text"].as_str().unwrap(),
            "{what}"
        );
        let ids: Vec<i64> =
            serde_json::from_value(reference["prompts"]["question"]["input_ids"].clone()).unwrap();
        assert_eq!(outcome.prompt.input_ids, ids, "{what}: question ids");
        let ids: Vec<i64> =
            serde_json::from_value(reference["prompts"]["general"]["input_ids"].clone()).unwrap();
        assert_eq!(outcome.general_prompt.input_ids, ids, "{what}: general ids");

        // Attention maps and the triage score map.
        let ours = |maps: &fovea::grounding::LayerHeadMaps| -> Vec<f64> {
            maps.iter().flatten().flatten().map(|&v| v as f64).collect()
        };
        assert_close(
            &ours(&outcome.question_maps),
            &floats(&case["A_q"]),
            0.0,
            1e-5,
            &format!("{what} A_q"),
        );
        assert_close(
            &ours(&outcome.general_maps),
            &floats(&case["A_g"]),
            0.0,
            1e-5,
            &format!("{what} A_g"),
        );
        let triage = outcome.triage.as_ref().unwrap();
        let score: Vec<f64> = triage.score_map.iter().map(|&v| v as f64).collect();
        assert_close(
            &score,
            &floats(&case["S"]),
            1e-4,
            1e-6,
            &format!("{what} S"),
        );
        let knocked: Vec<usize> = serde_json::from_value(case["knocked_out"].clone()).unwrap();
        assert_eq!(outcome.knocked_out, knocked, "{what}: knocked-out tokens");

        // Logits and answers, original and refined.
        for (label, answer) in [
            ("original", &outcome.original),
            ("refined", &outcome.refined),
        ] {
            let theirs = floats(&case[label]["first_token_logits"]);
            let max = theirs.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let logits: Vec<f64> = answer
                .first_token_logits
                .iter()
                .map(|&v| v as f64)
                .collect();
            assert_close(
                &logits,
                &theirs,
                0.0,
                1e-4 * max,
                &format!("{what} {label} first-token logits"),
            );
            // Greedy tokens, step by step while the reference's top-1/top-2 margin is well
            // above numerical noise (the fixture stores each step's margin).
            let expected_ids: Vec<u32> =
                serde_json::from_value(case[label]["generated_ids"].clone()).unwrap();
            let margins = floats(&case[label]["top1_top2_margins"]);
            for step in 0..expected_ids.len() {
                if margins[step] < 1e-2 {
                    break;
                }
                assert_eq!(
                    answer.ids[step], expected_ids[step],
                    "{what}: {label} token {step}"
                );
            }
        }

        // Metrics against the region, through the record builder `fovea inspect` uses.
        let metrics = fovea::case::metrics_record(&outcome, settings.normalize, &region);
        for key in ["ratio", "kl", "js"] {
            assert_close(
                &floats(&metrics["per_layer"][key]),
                &floats(&case["metrics"]["per_layer"][key]),
                1e-3,
                1e-6,
                &format!("{what} per_layer {key}"),
            );
            assert_close(
                &floats(&metrics["per_head"][key]),
                &floats(&case["metrics"]["per_head"][key]),
                1e-3,
                1e-6,
                &format!("{what} per_head {key}"),
            );
            assert_close(
                &floats(&metrics["triage_map"][key]),
                &floats(&case["metrics"]["triage_map"][key]),
                1e-3,
                1e-6,
                &format!("{what} triage_map {key}"),
            );
        }
        assert_eq!(
            metrics["per_layer"]["pointing"], case["metrics"]["per_layer"]["pointing"],
            "{what}: pointing"
        );
        assert_eq!(
            metrics["per_head"]["pointing"], case["metrics"]["per_head"]["pointing"],
            "{what}: pointing per head"
        );
        assert_eq!(
            metrics["triage_map"]["pointing"], case["metrics"]["triage_map"]["pointing"],
            "{what}: pointing triage"
        );
    }
}

#[test]
fn vgrefine_matches_reference_on_huatuo_layout() {
    run_reference("huatuo-qwen2-original", "pixel_values_pad");
}

#[test]
fn vgrefine_matches_reference_on_llava_hf_layout() {
    run_reference("llava-llama-hub", "pixel_values_crop");
}

#[test]
fn percentile_matches_numpy() {
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("huatuo-qwen2-original.vgrefine.json")).unwrap(),
    )
    .unwrap();
    for check in reference["percentile_checks"].as_array().unwrap() {
        let values: Vec<f32> = serde_json::from_value(check["values"].clone()).unwrap();
        for result in check["results"].as_array().unwrap() {
            let p = result["p"].as_f64().unwrap();
            let ours = triage::percentile(&values, p);
            let theirs = result["value"].as_f64().unwrap();
            // fovea's maps are f32: the inputs carry f32 rounding (~6e-8 relative); the
            // interpolation itself is numpy's formula in f64.
            assert!(
                (ours - theirs).abs() <= 1e-7 * theirs.abs().max(1.0),
                "{} p{p}: {ours} vs numpy {theirs}",
                check["name"]
            );
            let below: Vec<usize> = serde_json::from_value(result["below"].clone()).unwrap();
            let ours_below = triage::triage(values.clone(), Rule::Percentile(p)).knocked_out;
            assert_eq!(ours_below, below, "{} p{p}", check["name"]);
        }
    }
}

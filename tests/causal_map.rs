//! The causal knockout map (`fovea inspect --causal-map`) checked against independent
//! computations on the bundled demo model:
//!
//! - each cell's log-probability, computed in batches, equals one unbatched knockout run of that
//!   cell's tokens (what `--knockout-tokens` does), and the base log-probability is the plain
//!   answer's, from its logits by hand;
//! - a single cell covering the whole image, knocked out in every layer, equals a decoder pass
//!   over the text alone (the tokens before and after the image at their own positions, no
//!   image rows, no mask); an empty knockout changes nothing;
//! - the record's `causal` (CLI) holds the contract's fields, consistent with each other, and a
//!   bad `--causal-map` gets one line naming the option.

mod common;

use fovea::demo::{generate, Recipe};
use fovea::grounding::causal::{self, Cells, Target};
use fovea::grounding::refine;
use fovea::model::{image_key_positions, EdgeMask, ImageSession, RunOptions};

fn log_softmax_at(logits: &[f32], token: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let total: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    logits[token] as f64 - max - total.ln()
}

#[test]
fn batched_cells_equal_single_knockouts_and_the_whole_image_equals_the_text_alone() {
    let (model, settings) = common::demo_model();
    let case = generate(9_800_321, &Recipe::default());
    let rgb = image::DynamicImage::ImageLuma8(case.image.clone()).to_rgb8();
    let mut session = ImageSession::new(&model, &rgb).unwrap();
    let question = &case.questions()[0].question;
    let outcome = refine::run(&mut session, question, &settings).unwrap();
    let prompt = outcome.prompt.clone();
    let logits = &outcome.original.first_token_logits;
    let target = outcome.original.ids[0];
    let base = log_softmax_at(logits, target as usize);
    let all_layers: Vec<usize> = (0..model.decoder.num_layers()).collect();
    let (rows, cols) = session.grid;

    let map_of = |session: &mut ImageSession, cells| {
        let target = Target {
            id: target,
            token: String::new(),
        };
        causal::map(session, &prompt, cells, &all_layers, target, base).unwrap()
    };
    let map = map_of(&mut session, Cells::Grid(3, 4));
    assert_eq!(map.cells, [3, 4]);
    assert_eq!(map.cell_tokens.len(), 12);
    let mut covered: Vec<usize> = map.cell_tokens.concat();
    covered.sort_unstable();
    assert_eq!(covered, (0..rows * cols).collect::<Vec<_>>());
    // Token (r, c) in cell (floor(r * 3 / rows), floor(c * 4 / cols)).
    for (cell, tokens) in map.cell_tokens.iter().enumerate() {
        for &t in tokens {
            let (r, c) = (t / cols, t % cols);
            assert_eq!(cell, (r * 3 / rows) * 4 + c * 4 / cols);
        }
    }

    // Each cell against one unbatched knockout run.
    let mut largest = 0f64;
    for (cell, tokens) in map.cell_tokens.iter().enumerate() {
        let single = session
            .run(
                &prompt,
                &RunOptions {
                    max_new_tokens: 1,
                    stop_at_eos: false,
                    knockout: Some(EdgeMask {
                        layers: all_layers.clone(),
                        queries_from: prompt.image_span.end,
                        blocked_keys: image_key_positions(&prompt.image_span, tokens),
                        and: None,
                    }),
                    ..RunOptions::default()
                },
            )
            .unwrap();
        let want = log_softmax_at(&single.first_token_logits, target as usize);
        let error = (map.logprob[cell] - want).abs();
        largest = largest.max(error);
        assert!(
            error < 1e-5,
            "cell {cell}: batched {} vs single {want}",
            map.logprob[cell]
        );
        assert!((map.drop[cell] - (base - map.logprob[cell])).abs() < 1e-12);
    }
    eprintln!("3x4 map: largest |batched - single| log-probability {largest:.2e}");
    assert!(
        map.drop.iter().any(|d| d.abs() > 1e-3),
        "no cell moves the answer: {:?}",
        map.drop
    );

    // One cell that is the whole image, every layer: the text alone.
    let whole = map_of(&mut session, Cells::Grid(1, 1));
    let text_only = common::text_alone_logits(&model.decoder, &prompt);
    let no_image = log_softmax_at(&text_only, target as usize);
    eprintln!(
        "whole image knocked out: {} vs the text alone {no_image}",
        whole.logprob[0]
    );
    assert!((whole.logprob[0] - no_image).abs() < 1e-5);

    // Two chained edge sets block exactly their union: the same logits as one set of both.
    let run = |session: &mut ImageSession, edges: EdgeMask| {
        let options = RunOptions {
            max_new_tokens: 1,
            stop_at_eos: false,
            knockout: Some(edges),
            ..RunOptions::default()
        };
        session.run(&prompt, &options).unwrap().first_token_logits
    };
    let keys = |tokens: &[usize]| image_key_positions(&prompt.image_span, tokens);
    let (a, b) = (&map.cell_tokens[0], &map.cell_tokens[5]);
    let union: Vec<usize> = a.iter().chain(b).copied().collect();
    let one = EdgeMask {
        layers: all_layers.clone(),
        queries_from: prompt.image_span.end,
        blocked_keys: keys(&union),
        and: None,
    };
    let chained = EdgeMask {
        blocked_keys: keys(a),
        and: Some(Box::new(EdgeMask {
            blocked_keys: keys(b),
            ..one.clone()
        })),
        ..one.clone()
    };
    assert_eq!(run(&mut session, chained), run(&mut session, one));

    // An empty knockout changes nothing.
    let empty =
        causal::logprobs_with(&mut session, &prompt, &[Vec::new()], &all_layers, target).unwrap();
    assert!((empty[0] - base).abs() < 1e-5, "{} vs {base}", empty[0]);
}

fn fovea(args: &[&str]) -> std::process::Output {
    common::fovea_command()
        .args(args)
        .env("FOVEA_CACHE_DIR", "off")
        .output()
        .unwrap()
}

#[test]
fn inspect_records_the_causal_map() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("case.png");
    let case = generate(9_800_322, &Recipe::default());
    case.image.save(&image).unwrap();
    let json = dir.path().join("case.json");
    let question = case.questions()[0].question.clone();
    let inspect = |extra: &[&str]| {
        let mut args = vec![
            "inspect",
            "--image",
            image.to_str().unwrap(),
            "--question",
            &question,
        ];
        args.extend(extra);
        fovea(&args)
    };
    let out = inspect(&[
        "--causal-map",
        "2x3",
        "--max-new-tokens",
        "1",
        "--json",
        json.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("causal map 2x3: 6 knockout suffixes"),
        "{stderr}"
    );
    assert!(stdout.contains("causal map        2x3 cells"), "{stdout}");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let causal = &record["causal"];
    assert_eq!(causal["cells"], serde_json::json!([2, 3]));
    let layers = record["model"]["layers"].as_u64().unwrap() as usize;
    assert_eq!(
        causal["layers"],
        serde_json::json!((0..layers).collect::<Vec<_>>())
    );
    let cell_tokens: Vec<Vec<usize>> =
        serde_json::from_value(causal["cell_tokens"].clone()).unwrap();
    let n = record["image"]["image_tokens"].as_u64().unwrap() as usize;
    assert_eq!(cell_tokens.len(), 6);
    assert_eq!(cell_tokens.iter().map(Vec::len).sum::<usize>(), n);
    let base = causal["base_logprob"].as_f64().unwrap();
    let logprob: Vec<f64> = serde_json::from_value(causal["logprob"].clone()).unwrap();
    let drop: Vec<f64> = serde_json::from_value(causal["drop"].clone()).unwrap();
    for (l, d) in logprob.iter().zip(&drop) {
        assert!((base - l - d).abs() < 1e-12);
    }
    // The target is the answer's first token; its log-probability is the record's probability.
    let p = record["first_token_probability"].as_f64().unwrap();
    assert!((base.exp() - p).abs() < 1e-6, "{} vs {p}", base.exp());
    assert!(causal["target"]["id"].is_u64());
    assert!(causal["target"]["token"].is_string());
    let agreement = &causal["agreement"];
    assert_eq!(agreement["map"], "triage_map");
    assert!(agreement["top_cell_hit"].is_boolean());
    assert!(agreement["spearman"].is_f64() || agreement["spearman"].is_null());
    let heads = causal["agreement_heads"].as_array().unwrap();
    assert_eq!(heads.len(), layers);
    assert_eq!(
        heads[0].as_array().unwrap().len() as u64,
        record["model"]["heads"].as_u64().unwrap()
    );
    assert!(record["timings_ms"]["causal"].as_f64().unwrap() > 0.0);

    for (spec, needle) in [("0x3", "--causal-map"), ("99x2", "finer than this image's")] {
        let out = inspect(&["--causal-map", spec]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{spec}: {stderr}");
        assert!(stderr.contains(needle), "{spec}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{spec}: {stderr}");
    }
}

/// Every cell of a 2 x 3 map, batched, against transformers (eager, f32, one forward per cell,
/// knockout in every layer: tools/make_causal_fixtures.py) on the committed parity checkpoints
/// of each family (LLaVA in two layouts, Qwen2.5-VL, Gemma 3, Qwen3-VL): the same cells, target and log-probabilities within 1e-4; the whole image
/// and the empty knockout too.
#[test]
fn causal_maps_match_transformers_on_every_family() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, family_dir) in [
        ("llava-qwen2-nested", "tests/fixtures/llava"),
        ("llava-med-mistral-original", "tests/fixtures/llava"),
        ("qwen2_5_vl-flat", "tests/fixtures/qwen_vl"),
        ("gemma3-hub", "tests/fixtures/gemma3"),
        ("qwen3_vl", "tests/fixtures/qwen3_vl"),
    ] {
        let text = std::fs::read_to_string(
            root.join(format!("tests/fixtures/causal/{name}.expected.json")),
        )
        .unwrap();
        let want: serde_json::Value = serde_json::from_str(&text).unwrap();
        let (model, pixels, prompt) = common::fixture_case(name, family_dir);
        let mut session = ImageSession::from_pixels(&model, &pixels).unwrap();
        assert_eq!(
            [session.grid.0, session.grid.1],
            [
                want["grid"][0].as_u64().unwrap() as usize,
                want["grid"][1].as_u64().unwrap() as usize
            ],
            "{name}: grid"
        );
        let plain = session
            .run(
                &prompt,
                &RunOptions {
                    max_new_tokens: 1,
                    stop_at_eos: false,
                    ..RunOptions::default()
                },
            )
            .unwrap();
        let target = plain.ids[0];
        assert_eq!(
            target as u64,
            want["target"].as_u64().unwrap(),
            "{name}: target"
        );
        let base = log_softmax_at(&plain.first_token_logits, target as usize);
        let close = |ours: f64, theirs: &serde_json::Value, what: &str| {
            let theirs = theirs.as_f64().unwrap();
            assert!(
                (ours - theirs).abs() < 1e-4,
                "{name}: {what}: fovea {ours} vs transformers {theirs}"
            );
            (ours - theirs).abs()
        };
        let mut largest = close(base, &want["base_logprob"], "base log-probability");
        let layers: Vec<usize> = (0..model.decoder.num_layers()).collect();
        let target = Target {
            id: target,
            token: String::new(),
        };
        let map = causal::map(
            &mut session,
            &prompt,
            Cells::Grid(2, 3),
            &layers,
            target,
            base,
        )
        .unwrap();
        let cells: Vec<Vec<usize>> = serde_json::from_value(want["cell_tokens"].clone()).unwrap();
        assert_eq!(map.cell_tokens, cells, "{name}: cells");
        for (cell, ours) in map.logprob.iter().enumerate() {
            largest = largest.max(close(
                *ours,
                &want["logprob"][cell],
                &format!("cell {cell}"),
            ));
        }
        let all: Vec<usize> = (0..session.num_image_tokens()).collect();
        let edge = causal::logprobs_with(
            &mut session,
            &prompt,
            &[all, Vec::new()],
            &layers,
            map.target.id,
        )
        .unwrap();
        largest = largest.max(close(edge[0], &want["whole_image_logprob"], "whole image"));
        largest = largest.max(close(edge[1], &want["base_logprob"], "empty knockout"));
        eprintln!("{name}: largest |fovea - transformers| log-probability {largest:.2e}");
    }
}

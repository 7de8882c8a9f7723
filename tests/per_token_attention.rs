//! Per-generated-token attention against HF transformers: for each of 8 greedy tokens, the
//! attention over the image span of the query that produced it (the last prompt row for the
//! first, each decode step's single query after that), every layer and head, plain, with the
//! knockout in the prefill only, and with the knockout in every step (`--knockout-decode`).
//!
//! `tools/make_per_token_fixtures.py` ran transformers (eager, f32) on four committed parity
//! checkpoints (llava-hf nested Qwen2, original LLaVA-Med with its CLIP folder, Qwen2.5-VL,
//! Gemma 3), on the committed reference pixels and prompt ids, with a manual cached loop checked
//! against `generate(output_attentions=True)`. Bounds: attention 1e-5, ids exact.
//!
//! Each checkpoint runs twice: the three prompts one after another, then as one batch
//! (`ImageSession::run_batch`: one packed suffix pass, decode steps together, with a fourth
//! job that stops after 3 tokens and so leaves the batch early) against the same references.

use std::path::PathBuf;

use fovea::model::{EdgeMask, ImageSession, RunOptions};

mod common;
use common::{usizes, Expected};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn check(name: &str, family_dir: &str, batched: bool) {
    eprintln!("{name} (batched: {batched})");
    let reference = Expected::load(&root().join("tests/fixtures/per_token"), name);
    let (model, pixels, prompt) = common::fixture_case(name, family_dir);
    let mut session = ImageSession::from_pixels(&model, &pixels).unwrap();
    let span = usizes(&reference.json["image_span"]);
    assert_eq!(prompt.image_span, span[0]..span[1]);
    let knockout = EdgeMask {
        layers: usizes(&reference.json["knockout"]["layers"]),
        queries_from: span[1],
        blocked_keys: usizes(&reference.json["knockout"]["key_positions"]),
        and: None,
    };
    let plain = RunOptions {
        max_new_tokens: 8,
        stop_at_eos: false,
        ..RunOptions::default()
    };
    let prefill_knockout = RunOptions {
        knockout: Some(knockout),
        ..plain.clone()
    };
    let every_step = RunOptions {
        knockout_decode: true,
        ..prefill_knockout.clone()
    };
    let short = RunOptions {
        max_new_tokens: 3,
        ..prefill_knockout.clone()
    };
    let jobs = [
        ("", &plain),
        ("knockout_", &prefill_knockout),
        ("knockout_all_steps_", &every_step),
        ("knockout_", &short),
    ];
    let answers = if batched {
        let batch: Vec<_> = jobs
            .iter()
            .map(|(_, options)| (&prompt, *options))
            .collect();
        session.run_batch(&batch).unwrap()
    } else {
        jobs.iter()
            .map(|(_, options)| session.run(&prompt, options).unwrap())
            .collect()
    };
    for ((tag, options), answer) in jobs.iter().zip(answers) {
        let tokens = options.max_new_tokens;
        let ids: Vec<i64> = answer.ids.iter().map(|&id| id as i64).collect();
        assert_eq!(
            ids,
            reference.ids(&format!("{tag}token_ids"))[..tokens],
            "{name}: {tag}ids ({tokens} tokens)"
        );
        assert_eq!(answer.token_texts.len(), tokens);
        assert_eq!(
            answer.token_attention[0], answer.attention,
            "{name}: token 0 is the last prompt row"
        );
        // Every token's L maps of H x N, in order, against (8, L, H, N).
        let maps: Vec<Vec<f32>> = answer.token_attention.iter().flatten().cloned().collect();
        let expected = reference.f32(&format!("{tag}token_attn"));
        let expected = expected.narrow(0, 0, tokens).unwrap();
        common::assert_attention_close(
            &maps,
            &expected,
            &format!("{name}: {tag}token_attn ({tokens} tokens, batched: {batched})"),
        );
    }
}

#[test]
fn llava_per_token_attention_matches_transformers() {
    for batched in [false, true] {
        check("llava-qwen2-nested", "tests/fixtures/llava", batched);
        check(
            "llava-med-mistral-original",
            "tests/fixtures/llava",
            batched,
        );
    }
}

#[test]
fn qwen2_5_vl_per_token_attention_matches_transformers() {
    for batched in [false, true] {
        check("qwen2_5_vl-flat", "tests/fixtures/qwen_vl", batched);
    }
}

#[test]
fn gemma3_per_token_attention_matches_transformers() {
    for batched in [false, true] {
        check("gemma3-hub", "tests/fixtures/gemma3", batched);
    }
}

//! Qwen2.5-VL and Qwen3-VL against HF transformers (eager attention, f32) on tiny random
//! checkpoints, on a non-square 190x110 image.
//!
//! Qwen2.5-VL in both key layouts (transformers 5's flat save with an untied head; the nested
//! in-memory layout with a hub-style flat config.json and a tied head): a 4 x 7 token grid,
//! more than one vision window, ragged edge windows, two full-attention blocks.
//!
//! Qwen3-VL (nested layout, hub-style config.json): a 3 x 6 token grid, the 4 x 4 learned
//! position table interpolated to 6 x 12 patches, two DeepStack features added after decoder
//! layers 0 and 1, the Qwen3 decoder with q/k norms, head_dim 24 apart from hidden / heads,
//! interleaved M-RoPE.
//!
//! `tools/make_qwen_vl_fixtures.py` and `tools/make_qwen3_vl_fixtures.py` recorded what
//! transformers computes: pixel values from `Qwen2VLImageProcessorPil`, the merged image
//! features (and DeepStack features), M-RoPE position ids, logits, last-token and
//! question-mean attention over the image span, knockout logits (queries from
//! `<|vision_end|>` on), greedy generations. Bounds as for LLaVA: pixels 1e-5, vision 1e-4,
//! logits 1e-4 of max |logit|, attention 1e-5, ids exact.

use std::path::PathBuf;

use fovea::model::qwen_vl::smart_resize;
use fovea::model::{ImageEncoder, ImageSession, Model};

mod common;
use common::{check_session, device, max_abs_diff, Expected};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen_vl")
}

fn qwen3_fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen3_vl")
}

#[test]
fn smart_resize_grids_match_the_processor() {
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("smart_resize.expected.json")).unwrap(),
    )
    .unwrap();
    check_smart_resize(&json, 28);
}

#[test]
fn smart_resize_grids_match_the_processor_at_factor_32() {
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(qwen3_fixtures().join("qwen3_vl.expected.json")).unwrap(),
    )
    .unwrap();
    check_smart_resize(&json["smart_resize"], 32);
}

#[test]
fn bicubic_resize_matches_pillow_in_both_pass_orders() {
    let img = image::open(fixtures().join("test_image.png"))
        .unwrap()
        .to_rgb8();
    let dir = qwen3_fixtures().join("pillow_bicubic");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let theirs = image::open(&path).unwrap().to_rgb8();
        let (w, h) = theirs.dimensions();
        let ours = fovea::model::preprocess::pil_resize_bicubic(&img, w, h);
        let differing = ours
            .as_raw()
            .iter()
            .zip(theirs.as_raw())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            differing, 0,
            "190x110 -> {w}x{h}: {differing} values differ from Pillow"
        );
        checked += 1;
    }
    assert!(
        checked >= 10,
        "only {checked} reference images in {}",
        dir.display()
    );
}

fn check_smart_resize(json: &serde_json::Value, factor: u32) {
    let (min, max) = (
        json["min_pixels"].as_u64().unwrap(),
        json["max_pixels"].as_u64().unwrap(),
    );
    let sizes = json["sizes"].as_array().unwrap();
    assert!(sizes.len() >= 12);
    for size in sizes {
        let (h, w) = (
            size["height"].as_u64().unwrap() as u32,
            size["width"].as_u64().unwrap() as u32,
        );
        let resized: Vec<u32> = size["resized"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let ours = smart_resize(h, w, factor, min, max).unwrap();
        assert_eq!(
            [ours.0, ours.1],
            [resized[0], resized[1]],
            "{w}x{h} (width x height)"
        );
    }
}

/// What differs between the families' fixtures.
struct Family {
    dir: PathBuf,
    arch: &'static str,
    grid: (usize, usize),
}

fn qwen2_5() -> Family {
    Family {
        dir: fixtures(),
        arch: "qwen2.5-vl",
        grid: (4, 7),
    }
}

fn check(name: &str) {
    check_family(name, &qwen2_5());
}

fn check_family(name: &str, family: &Family) {
    eprintln!("{name}");
    let expected = Expected::load(&family.dir, name);
    let model = Model::load(&family.dir.join(name), None, &device())
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    assert_eq!(model.checkpoint.arch, family.arch);
    assert!(model.fixed_grid().is_none());

    let img = image::open(fixtures().join("test_image.png"))
        .unwrap()
        .to_rgb8();
    let pixels = model.pixel_values(&img).unwrap();
    let thw = expected.ids("image_grid_thw");
    assert_eq!(
        pixels.patch_grid,
        (thw[1] as usize, thw[2] as usize),
        "{name}: patch grid"
    );
    assert_eq!(
        pixels.grid, family.grid,
        "{name}: tokens of a 110x190 image"
    );
    assert_eq!(model.grid_for(190, 110).unwrap(), family.grid);
    let reference_pixels = common::assert_pixels_close(name, &pixels.values, &expected);

    // The ViT on the reference pixels.
    let pixels = fovea::model::PixelInput {
        values: reference_pixels,
        ..pixels
    };
    let features = model.image_features(&pixels).unwrap();
    let vision_error = max_abs_diff(&features.tokens, &expected.f32("image_features"));
    eprintln!("  image_features: max |diff| = {vision_error:.2e}");
    assert!(
        vision_error <= 1e-4,
        "{name}: vision differs by {vision_error}"
    );
    let stacked = expected
        .json
        .pointer("/architecture/vision/deepstack_visual_indexes")
        .and_then(|v| v.as_array())
        .map_or(0, |v| v.len());
    assert_eq!(
        features.deepstack.len(),
        stacked,
        "{name}: DeepStack features"
    );
    for (i, feature) in features.deepstack.iter().enumerate() {
        let error = max_abs_diff(feature, &expected.f32(&format!("deepstack_{i}")));
        eprintln!("  deepstack_{i}: max |diff| = {error:.2e}");
        assert!(
            error <= 1e-4,
            "{name}: DeepStack feature {i} differs by {error}"
        );
    }
    if let ImageEncoder::Qwen3(vision) = &model.image {
        let (h, w) = pixels.patch_grid;
        let positions = vision.positions(h, w, &device()).unwrap();
        let error = max_abs_diff(&positions, &expected.f32("position_embeddings"));
        eprintln!("  interpolated position embeddings: max |diff| = {error:.2e}");
        assert!(
            error <= 1e-6,
            "{name}: position embeddings differ by {error}"
        );
    }

    let mut session = ImageSession::from_pixels(&model, &pixels).unwrap();
    assert_eq!(session.grid, family.grid);

    // The prompt: the chat template rendered, <|image_pad|> expanded, ids and span.
    let question_text = expected.json["prompts"]["question"]["text"]
        .as_str()
        .unwrap();
    let question = "what abnormality is seen in the left lung ? Answer the question using a single word or phrase .";
    let prompt = session.prompt(question, false).unwrap();
    assert_eq!(
        prompt.text.replace("<|image_pad|>", ""),
        question_text.replace("<|image_pad|>", "")
    );
    assert_eq!(
        prompt.input_ids,
        expected.ids("input_ids"),
        "{name}: input ids"
    );
    let span = expected.ids("image_span");
    assert_eq!(prompt.image_span, span[0] as usize..span[1] as usize);

    // M-RoPE positions as get_rope_index builds them.
    let positions = session.prompt_positions(&prompt).unwrap();
    let reference = expected.f32("position_ids");
    let reference: Vec<Vec<f32>> = reference
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .to_vec2()
        .unwrap();
    for (i, position) in positions.iter().enumerate() {
        for axis in 0..3 {
            assert_eq!(
                position[axis] as f32, reference[axis][i],
                "{name}: position {i} axis {axis}"
            );
        }
    }

    // Forward, knockout from <|vision_end|> on, shared prefix, greedy, the general prompt.
    let general = session
        .prompt(
            "write a general description of the image . Answer the question using a single word or phrase .",
            false,
        )
        .unwrap();
    assert_eq!(general.input_ids, expected.ids("general_input_ids"));
    check_session(name, &mut session, &prompt, &general, &expected);
}

#[test]
fn qwen2_5_vl_flat_layout_matches_transformers() {
    check("qwen2_5_vl-flat");
}

#[test]
fn qwen2_5_vl_nested_layout_tied_head_matches_transformers() {
    check("qwen2_5_vl-nested");
}

fn qwen3() -> Family {
    Family {
        dir: qwen3_fixtures(),
        arch: "qwen3-vl",
        grid: (3, 6),
    }
}

#[test]
fn qwen3_vl_deepstack_matches_transformers() {
    check_family("qwen3_vl", &qwen3());
}

/// Long prefills and large images run attention a block of query rows at a time; with one
/// row per block (every ViT window, every full-attention block, the decoder's prefix, suffix,
/// knockout and probe rows split as far as they go) the parity still holds. Other tests of
/// this binary may run meanwhile in blocks of one row: their results must not change either.
#[test]
fn attention_one_query_row_at_a_time_matches_transformers() {
    fovea::model::decoder::set_score_block_elements(1);
    check("qwen2_5_vl-flat");
    check_family("qwen3_vl", &qwen3());
}

#[test]
fn qwen3_vl_reads_its_processor_and_decoder_from_the_hub_config() {
    let model = Model::load(&qwen3_fixtures().join("qwen3_vl"), None, &device()).unwrap();
    let checkpoint = &model.checkpoint;
    assert_eq!(checkpoint.model_type, "qwen3_vl");
    assert_eq!(model.token_side_px(), 32);
    // size {shortest_edge, longest_edge} of preprocessor_config.json.
    assert_eq!(model.pixel_limits(), Some((4096, 40960)));
    let text = &checkpoint.text;
    assert_eq!(text.head_dim, 24);
    assert_eq!(
        text.rope,
        fovea::model::rope::RopeAxes::InterleavedMrope([4, 4, 4])
    );
    assert!(!text.attention_bias);
    assert_eq!(
        checkpoint.layout.name,
        "qwen3-vl (nested model.language_model, model.visual)"
    );
}

#[test]
fn raw_template_frames_the_image_with_vision_tokens() {
    let model = Model::load(&fixtures().join("qwen2_5_vl-flat"), None, &device()).unwrap();
    common::assert_raw_frame(&model, 6, "<|vision_start|>", "<|vision_end|>");
}

//! Gemma 3 + SigLIP (MedGemma's family) against HF transformers (eager attention, f32) on tiny
//! random checkpoints, on the non-square 190x110 test image (resized to the square 112 px
//! input as Gemma 3's processor does).
//!
//! The checkpoints (`tools/make_gemma3_fixtures.py`): the hub's key layout with a hub-style
//! config.json and a tied head; what transformers 5 `save_pretrained` writes, with an untied
//! head; a bf16 copy for the embedding scale. What they exercise: SigLIP (8 x 8 patches,
//! learned positions, post-layernorm), the projector (average pooling to 4 x 4 tokens, `1 + w`
//! RMSNorm, the [in, out] projection matrix), the Gemma 3 decoder (four `1 + w` norms a layer,
//! q/k norms, head_dim 32 apart from hidden / heads, query_pre_attn_scalar 20 apart from
//! head_dim, embeddings scaled by sqrt(96), GELU-tanh), local layers (0 and 2: window 8,
//! rotary base 1e4) and global ones (1 and 3: base 1e6, linear scaling 8), and the
//! bidirectional attention among the 16 image tokens (`token_type_ids`), shortened by the
//! window in local layers. The fixture script asserts that each of these changes the logits.
//!
//! Bounds as for LLaVA and Qwen-VL: pixels 1e-5, vision 1e-4, logits 1e-4 of max |logit|,
//! attention 1e-5, ids exact; the bf16 embeddings exactly.

use std::path::PathBuf;

use fovea::model::{ImageSession, Model};

mod common;
use common::{check_session, device, max_abs_diff, Expected};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gemma3")
}

const QUESTION: &str =
    "what abnormality is seen in the left lung ? Answer the question using a single word or phrase .";
const GENERAL: &str =
    "write a general description of the image . Answer the question using a single word or phrase .";

fn check(name: &str) {
    eprintln!("{name}");
    let dir = fixtures();
    let expected = Expected::load(&dir, name);
    let model =
        Model::load(&dir.join(name), None, &device()).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    assert_eq!(model.checkpoint.arch, "gemma3");
    assert_eq!(model.fixed_grid(), Some((4, 4)));
    assert_eq!(model.token_side_px(), 28);

    let img = image::open(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen_vl/test_image.png"),
    )
    .unwrap()
    .to_rgb8();
    let pixels = model.pixel_values(&img).unwrap();
    assert_eq!(pixels.grid, (4, 4));
    assert_eq!(pixels.mapping.input, [112, 112]);
    let reference_pixels = common::assert_pixels_close(name, &pixels.values, &expected);

    // SigLIP and the projector on the reference pixels.
    let pixels = fovea::model::PixelInput {
        values: reference_pixels,
        ..pixels
    };
    let fovea::model::ImageEncoder::Gemma3(vision) = &model.image else {
        panic!("{name}: not a Gemma 3 image encoder");
    };
    let patches = vision.tower.forward(&pixels.values).unwrap();
    let tower_error = max_abs_diff(&patches, &expected.f32("vision_last_hidden"));
    eprintln!("  SigLIP last_hidden_state: max |diff| = {tower_error:.2e}");
    assert!(
        tower_error <= 1e-4,
        "{name}: SigLIP differs by {tower_error}"
    );
    let features = model.image_features(&pixels).unwrap();
    let vision_error = max_abs_diff(&features.tokens, &expected.f32("image_features"));
    eprintln!("  image_features: max |diff| = {vision_error:.2e}");
    assert!(
        vision_error <= 1e-4,
        "{name}: projected features differ by {vision_error}"
    );

    let mut session = ImageSession::from_pixels(&model, &pixels).unwrap();
    let prompt = session.prompt(QUESTION, false).unwrap();
    assert_eq!(
        prompt.input_ids,
        expected.ids("input_ids"),
        "{name}: input ids"
    );
    let span = expected.ids("image_span");
    assert_eq!(prompt.image_span, span[0] as usize..span[1] as usize);
    let general = session.prompt(GENERAL, false).unwrap();
    assert_eq!(general.input_ids, expected.ids("general_input_ids"));
    check_session(name, &mut session, &prompt, &general, &expected);
}

#[test]
fn gemma3_hub_layout_tied_head_matches_transformers() {
    check("gemma3-hub");
}

#[test]
fn gemma3_saved_layout_untied_head_matches_transformers() {
    check("gemma3-saved");
}

#[test]
fn gemma3_nested_layout_tied_head_matches_transformers() {
    check("gemma3-nested");
}

/// transformers multiplies a bf16 checkpoint's embeddings by sqrt(hidden) cast to bf16 (9.8125
/// for sqrt(96) = 9.798), in bf16: fovea's embeddings equal them exactly.
#[test]
fn bf16_embeddings_are_scaled_as_transformers_scales_them() {
    let dir = fixtures();
    let expected = Expected::load(&dir, "gemma3-bf16");
    let model = Model::load(&dir.join("gemma3-bf16"), None, &device()).unwrap();
    let ids: Vec<u32> = expected
        .ids("bf16_embedding_ids")
        .iter()
        .map(|&id| id as u32)
        .collect();
    let ours = model.decoder.embed(&ids).unwrap().squeeze(0).unwrap();
    let error = max_abs_diff(&ours, &expected.f32("bf16_embeddings"));
    eprintln!("  bf16 embeddings: max |diff| = {error:.2e}");
    assert_eq!(error, 0.0, "bf16 embeddings differ by {error}");
}

/// The hub's config.json (rope_scaling, rope_local_base_freq, sliding_window_pattern) and
/// transformers 5's (layer_types, rope_parameters per layer type) give the same decoder; each
/// key layout is named.
#[test]
fn both_config_styles_read_the_same_decoder() {
    let dir = fixtures();
    let hub = fovea::model::detect::detect(&dir.join("gemma3-hub"), None).unwrap();
    let saved = fovea::model::detect::detect(&dir.join("gemma3-saved"), None).unwrap();
    let nested = fovea::model::detect::detect(&dir.join("gemma3-nested"), None).unwrap();
    for checkpoint in [&hub, &saved, &nested] {
        let text = &checkpoint.text;
        let gemma = text.gemma.as_ref().unwrap();
        assert_eq!(text.head_dim, 32);
        assert_eq!(gemma.query_pre_attn_scalar, 20.0);
        assert_eq!(gemma.sliding_window, 8);
        assert_eq!(gemma.sliding, vec![true, false, true, false]);
        assert_eq!(gemma.local_rope_theta, 10_000.0);
        assert_eq!(gemma.global_rope_factor, 8.0);
        assert_eq!(text.rope_theta, 1_000_000.0);
    }
    assert!(hub.text.tie_word_embeddings && nested.text.tie_word_embeddings);
    assert!(!saved.text.tie_word_embeddings);
    assert_eq!(
        hub.layout.name,
        "gemma3 (hub: language_model.model, vision_tower.vision_model)"
    );
    assert_eq!(
        saved.layout.name,
        "gemma3 (transformers 5 save: language_model.model, vision_tower without vision_model)"
    );
    assert_eq!(
        nested.layout.name,
        "gemma3 (nested model.language_model, model.vision_tower)"
    );
    assert_eq!(saved.layout.lm_head, "language_model.lm_head.");
}

#[test]
fn raw_template_frames_the_image_with_image_tokens() {
    let model = Model::load(&fixtures().join("gemma3-hub"), None, &device()).unwrap();
    common::assert_raw_frame(&model, 16, "<start_of_image>", "<end_of_image>");
}

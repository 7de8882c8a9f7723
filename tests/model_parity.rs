//! The model runtime against HF transformers (eager attention, f32) on tiny random LLaVA
//! checkpoints of every supported backbone and key layout.
//!
//! `tools/make_llava_fixtures.py` built the checkpoints and recorded what transformers
//! computes: pixel values, vision features, projector output, logits, last-token and
//! question-mean attention over the image span per layer and head, logits with (query, key)
//! edges blocked in one or two layers, and greedy generations. Tolerances are the issue's:
//! logits within 1e-4 of max |logit|, attention within 1e-5, pixels within 1e-5.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use fovea::model::{AttentionProbe, EdgeMask, ImageEncoder, ImageSession, Model, QueryRows};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llava")
}

mod common;
use common::{check_session, device, max_abs, max_abs_diff};

struct Expected;

impl Expected {
    fn load(name: &str) -> common::Expected {
        common::Expected::load(&fixtures(), name)
    }
}

fn check_checkpoint(name: &str) {
    eprintln!("{name}");
    let expected = Expected::load(name);
    let model = Model::load(&fixtures().join(name), None, &device())
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));

    // Preprocessing: fovea's PIL-exact resize/pad against the image processor's output.
    let img = image::open(fixtures().join("test_image.png"))
        .unwrap()
        .to_rgb8();
    let pixels = model.pixel_values(&img).unwrap().values;
    let theirs_pixels = reference_pixels(&expected);
    let pixel_error = max_abs_diff(&pixels, &theirs_pixels);
    eprintln!("  pixel_values: max |diff| = {pixel_error:.2e}");
    assert!(
        pixel_error <= 1e-5,
        "{name}: pixel values differ by {pixel_error}"
    );

    // Vision tower and projector on the reference pixel values.
    let ImageEncoder::Clip { tower, projector } = &model.image else {
        panic!("{name}: not a CLIP tower")
    };
    let features = tower.forward(&theirs_pixels).unwrap();
    let vision_error = max_abs_diff(&features, &expected.f32("vision_features"));
    eprintln!("  vision_features: max |diff| = {vision_error:.2e}");
    assert!(vision_error <= 1e-4);
    let projected = projector.forward(&features).unwrap();
    let projector_error = max_abs_diff(&projected, &expected.f32("projector_output"));
    assert!(
        projector_error <= 1e-4,
        "projector differs by {projector_error}"
    );

    // Prompt text and ids.
    let question_text = expected.json["prompts"]["question"]["text"]
        .as_str()
        .unwrap();
    let question = question_text_of(name, question_text);
    let prompt = model
        .prompt(&question, false, image_tokens(&model))
        .unwrap();
    assert_eq!(prompt.text, question_text, "{name}: prompt text");
    let span = expected.ids("image_span");
    assert_eq!(
        prompt.image_span,
        span[0] as usize..span[1] as usize,
        "{name}: image span"
    );
    let reference_ids: Vec<i64> = expected
        .ids("input_ids")
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            if prompt.image_span.contains(&i) {
                -1
            } else {
                id
            }
        })
        .collect();
    assert_eq!(prompt.input_ids, reference_ids, "{name}: input ids");

    let mut session =
        ImageSession::from_pixel_values(&model, &theirs_pixels, dummy_mapping()).unwrap();

    // The general prompt reuses the same prefix cache.
    let general_text = expected.json["prompts"]["general"]["text"]
        .as_str()
        .unwrap();
    let general = model
        .prompt(
            &question_text_of(name, general_text),
            false,
            image_tokens(&model),
        )
        .unwrap();
    check_session(name, &mut session, &prompt, &general, &expected);
}

/// The bare question inside a rendered prompt (the fixtures store rendered text).
fn question_text_of(name: &str, rendered: &str) -> String {
    let inner = rendered.split("<image>").nth(1).unwrap();
    let inner = inner.trim_start_matches('\n');
    let end = match name {
        "llava-llama-hub" => inner.rfind(" ASSISTANT:").unwrap(),
        n if n.contains("mistral") => inner.rfind(" [/INST]").unwrap(),
        _ => inner.rfind("\n<|assistant|>").unwrap(),
    };
    inner[..end].to_string()
}

/// The fixture's pixel values (1, 3, S, S) on the test device.
fn reference_pixels(expected: &common::Expected) -> Tensor {
    expected
        .f32("pixel_values")
        .unsqueeze(0)
        .unwrap()
        .to_device(&device())
        .unwrap()
}

fn image_tokens(model: &Model) -> usize {
    let (rows, cols) = model.fixed_grid().expect("LLaVA grids are fixed");
    rows * cols
}

fn dummy_mapping() -> fovea::model::PixelMapping {
    fovea::model::PixelMapping {
        scale: [1.0, 1.0],
        offset_px: [0.0, 0.0],
        input: [32, 32],
    }
}

#[test]
fn llava_llama_hub_layout_matches_transformers() {
    check_checkpoint("llava-llama-hub");
}

#[test]
fn llava_qwen2_nested_layout_matches_transformers() {
    check_checkpoint("llava-qwen2-nested");
}

#[test]
fn llava_mistral_transformers5_layout_matches_transformers() {
    check_checkpoint("llava-mistral-v5");
}

#[test]
fn huatuo_qwen2_original_layout_matches_transformers() {
    check_checkpoint("huatuo-qwen2-original");
}

#[test]
fn llava_med_mistral_separate_clip_matches_transformers() {
    check_checkpoint("llava-med-mistral-original");
}

// q8_0 against transformers' f32 on the five fixtures, measured: logits within 2.8e-2 of max
// |logit| (knockout logits 3.0e-2), attention within 2.5e-2, mean JS 1.6e-4. Bounds about 3x.
const LOGIT_BOUND: f32 = 0.09;
const ATTENTION_BOUND: f32 = 0.075;
const JS_BOUND: f64 = 5e-4;

/// JS divergence (natural log) between two maps, each normalised to sum 1.
fn js(a: &[f32], b: &[f32]) -> f64 {
    let (sa, sb): (f64, f64) = (
        a.iter().map(|&v| v as f64).sum(),
        b.iter().map(|&v| v as f64).sum(),
    );
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let (p, q) = (x as f64 / sa, y as f64 / sb);
            let m = 0.5 * (p + q);
            let term = |v: f64| if v > 0.0 { 0.5 * v * (v / m).ln() } else { 0.0 };
            term(p) + term(q)
        })
        .sum()
}

/// q8_0 and q4k against transformers' f32 on every fixture: first-token logits, last-token
/// attention per head (max error, JS divergence), and logits with knocked-out edges. The
/// fixtures' 64-wide matrices do not divide q4k's block of 256, so q4k falls back to q8_0
/// (and says so). Bounds: about 3x the errors measured (quoted in the README).
#[test]
fn quantized_weights_stay_close_to_transformers() {
    use fovea::model::linear::Quantize;
    let (mut worst_logit, mut worst_attention, mut worst_js, mut worst_knocked) =
        (0f32, 0f32, 0f64, 0f32);
    for name in [
        "llava-llama-hub",
        "llava-qwen2-nested",
        "llava-mistral-v5",
        "huatuo-qwen2-original",
        "llava-med-mistral-original",
    ] {
        let expected = Expected::load(name);
        let pixels = reference_pixels(&expected);
        let question = question_text_of(
            name,
            expected.json["prompts"]["question"]["text"]
                .as_str()
                .unwrap(),
        );
        let keys = common::usizes(&expected.json["knockout"]["key_positions"]);
        for quantize in [Quantize::Q8_0, Quantize::Q4K] {
            let model = Model::load_with(&fixtures().join(name), None, &device(), quantize)
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert_eq!(model.quantize, quantize);
            if quantize == Quantize::Q4K {
                assert!(
                    model.load_notes.iter().any(|n| n.contains("kept as q8_0")),
                    "{name}: the q4k fallback is stated: {:?}",
                    model.load_notes
                );
            }
            let session =
                ImageSession::from_pixel_values(&model, &pixels, dummy_mapping()).unwrap();
            let prompt = model
                .prompt(&question, false, image_tokens(&model))
                .unwrap();
            let mut last = AttentionProbe::new(QueryRows::Last, prompt.image_span.clone());
            let logits = session
                .logits_unshared(&prompt, None, Some(&mut last))
                .unwrap();
            let reference = expected.f32("logits");
            let logit = max_abs_diff(&logits, &reference) / max_abs(&reference);
            let theirs = expected
                .f32("attn_last")
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let tokens = prompt.image_span.len();
            let ours: Vec<f32> = last.maps.iter().flatten().copied().collect();
            assert_eq!(ours.len(), theirs.len());
            let attention = ours
                .iter()
                .zip(&theirs)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            let maps = ours.len() / tokens;
            let js_mean = ours
                .chunks(tokens)
                .zip(theirs.chunks(tokens))
                .map(|(a, b)| js(a, b))
                .sum::<f64>()
                / maps as f64;
            let edges = EdgeMask {
                layers: vec![1],
                queries_from: prompt.image_span.end,
                blocked_keys: keys.clone(),
                and: None,
            };
            let knocked = session
                .logits_unshared(&prompt, Some(&edges), None)
                .unwrap();
            let knocked_reference = expected.f32("knockout_logits");
            let knocked_error =
                max_abs_diff(&knocked, &knocked_reference) / max_abs(&knocked_reference);
            eprintln!(
                "{name} {}: logits {logit:.2e} of max |logit|, attention {attention:.2e}, mean JS {js_mean:.2e}, knockout logits {knocked_error:.2e}",
                quantize.name()
            );
            worst_logit = worst_logit.max(logit);
            worst_attention = worst_attention.max(attention);
            worst_js = worst_js.max(js_mean);
            worst_knocked = worst_knocked.max(knocked_error);
        }
    }
    eprintln!(
        "worst: logits {worst_logit:.2e}, attention {worst_attention:.2e}, mean JS {worst_js:.2e}, knockout logits {worst_knocked:.2e}"
    );
    assert!(worst_logit > 0.0, "quantization should change something");
    assert!(worst_logit < LOGIT_BOUND, "logits {worst_logit:e}");
    assert!(
        worst_attention < ATTENTION_BOUND,
        "attention {worst_attention:e}"
    );
    assert!(worst_js < JS_BOUND, "JS {worst_js:e}");
    assert!(
        worst_knocked < LOGIT_BOUND,
        "knockout logits {worst_knocked:e}"
    );
}

/// bf16 checkpoints stay bf16 in memory (fovea's kernels widen them in registers) and give the
/// same answer within bf16 rounding.
#[test]
fn bf16_weights_stay_bf16() {
    let source = fixtures().join("llava-qwen2-nested");
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        let target = dir.path().join(path.file_name().unwrap());
        if path.extension().is_some_and(|e| e == "safetensors") {
            let tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
            let halved: HashMap<String, Tensor> = tensors
                .into_iter()
                .map(|(k, v)| (k, v.to_dtype(candle_core::DType::BF16).unwrap()))
                .collect();
            candle_core::safetensors::save(&halved, &target).unwrap();
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
    let expected = Expected::load("llava-qwen2-nested");
    let model = Model::load(dir.path(), None, &device()).unwrap();
    let f32_model = Model::load(&source, None, &device()).unwrap();
    let (bf16_bytes, f32_bytes) = (
        model.decoder.weight_bytes().0,
        f32_model.decoder.weight_bytes().0,
    );
    // Half, but for the packed layout's rows padded to groups of 16 (an 84-row head: 96).
    assert!(
        2 * bf16_bytes >= f32_bytes && (bf16_bytes as f64) < 0.52 * f32_bytes as f64,
        "bf16 weights take half the f32 bytes: {bf16_bytes} vs {f32_bytes}"
    );
    let pixels = reference_pixels(&expected);
    let session = ImageSession::from_pixel_values(&model, &pixels, dummy_mapping()).unwrap();
    let prompt = model
        .prompt(
            "what abnormality is seen in the left lung ?",
            false,
            image_tokens(&model),
        )
        .unwrap();
    let logits = session.logits_unshared(&prompt, None, None).unwrap();
    let reference = expected.f32("logits");
    let relative = max_abs_diff(&logits, &reference) / max_abs(&reference);
    assert!(relative > 0.0, "bf16 rounding should change something");
    assert!(
        relative < 0.05,
        "bf16 logits differ by {relative} of max |logit|"
    );
}

#[test]
fn unusable_model_folders_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let message = |path: &std::path::Path| match Model::load(path, None, &Device::Cpu) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(err) => format!("{err:#}"),
    };
    assert!(message(&dir.path().join("missing")).contains("does not exist"));
    assert!(message(dir.path()).contains("no config.json"));

    std::fs::write(
        dir.path().join("config.json"),
        r#"{"model_type": "bert", "architectures": ["BertModel"]}"#,
    )
    .unwrap();
    std::fs::copy(
        fixtures().join("llava-qwen2-nested/model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    std::fs::copy(
        fixtures().join("llava-qwen2-nested/tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    let text = message(dir.path());
    assert!(
        text.contains("unsupported architecture") && text.contains("BertModel"),
        "{text}"
    );

    // LLaVA-Med without its CLIP folder: the error says where fovea looked.
    let med = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures().join("llava-med-mistral-original")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, med.path().join(path.file_name().unwrap())).unwrap();
    }
    let text = message(med.path());
    assert!(
        text.contains("vision tower weights not found") && text.contains("--vision-tower"),
        "{text}"
    );
    // ... and pointing at it explicitly works.
    Model::load(
        med.path(),
        Some(&fixtures().join("clip-tiny")),
        &Device::Cpu,
    )
    .unwrap();
}

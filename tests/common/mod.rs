//! Helpers the parity tests share: reference tensors written by tools/make_*_fixtures.py and
//! the comparisons with their bounds.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, IndexOp, Tensor};
use fovea::model::{
    AttentionProbe, EdgeMask, ImageSession, QueryRows, RunOptions, TokenisedPrompt,
};
use serde_json::Value;

pub struct Expected {
    pub json: Value,
    pub tensors: HashMap<String, Tensor>,
}

impl Expected {
    pub fn load(dir: &Path, name: &str) -> Self {
        let json: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{name}.expected.json"))).unwrap(),
        )
        .unwrap();
        let tensors = candle_core::safetensors::load(
            dir.join(format!("{name}.expected.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        Expected { json, tensors }
    }
    pub fn f32(&self, key: &str) -> Tensor {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("fixture lacks {key}"))
            .clone()
    }
    pub fn ids(&self, key: &str) -> Vec<i64> {
        self.tensors[key].to_vec1::<i64>().unwrap()
    }
}

/// Where the models run: the CPU, or the GPU `FOVEA_DEVICE` names (tools/gpu_check.sh).
pub fn device() -> Device {
    fovea::model::device::from_env().expect("FOVEA_DEVICE names a device")
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), b.len(), "shapes differ");
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn max_abs(a: &Tensor) -> f32 {
    a.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.abs())
        .fold(0.0, f32::max)
}

pub fn assert_logits_close(ours: &Tensor, theirs: &Tensor, what: &str) {
    let relative = max_abs_diff(ours, theirs) / max_abs(theirs).max(1e-6);
    eprintln!("  {what}: max |diff| / max |logit| = {relative:.2e}");
    assert!(
        relative <= 1e-4,
        "{what}: relative logit error {relative:e} > 1e-4"
    );
}

pub fn assert_attention_close(maps: &[Vec<f32>], theirs: &Tensor, what: &str) {
    let ours: Vec<f32> = maps.iter().flatten().copied().collect();
    let theirs = theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(ours.len(), theirs.len(), "{what}: L x H x N differs");
    let worst = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    eprintln!("  {what}: max |diff| = {worst:.2e}");
    assert!(worst <= 1e-5, "{what}: attention error {worst:e} > 1e-5");
}

/// Generated ids equal the reference tensor `key`.
fn assert_ids(ids: &[u32], expected: &Expected, key: &str, what: &str) {
    let generated: Vec<i64> = ids.iter().map(|&id| id as i64).collect();
    assert_eq!(generated, expected.ids(key), "{what}");
}

/// A JSON list of non-negative integers.
pub fn usizes(value: &Value) -> Vec<usize> {
    value
        .as_array()
        .expect("a JSON list")
        .iter()
        .map(|v| v.as_u64().expect("a non-negative integer") as usize)
        .collect()
}

/// The session checks every fixture shares: the full forward (logits, last-token and
/// question-mean attention), knockout in one and two layers, the shared-prefix path (first
/// logits, attention, greedy tokens with and without knockout) and the general prompt.
pub fn check_session(
    name: &str,
    session: &mut ImageSession,
    prompt: &TokenisedPrompt,
    general: &TokenisedPrompt,
    expected: &Expected,
) {
    let prompt = prompt.clone();
    // Full forward without the cache: logits and attention.
    let mut last = AttentionProbe::new(QueryRows::Last, prompt.image_span.clone());
    let logits = session
        .logits_unshared(&prompt, None, Some(&mut last))
        .unwrap();
    assert_logits_close(&logits, &expected.f32("logits"), "logits");
    assert_attention_close(&last.maps, &expected.f32("attn_last"), "attn_last");
    let mut mean = AttentionProbe::new(
        QueryRows::MeanFrom(prompt.image_span.end),
        prompt.image_span.clone(),
    );
    session
        .logits_unshared(&prompt, None, Some(&mut mean))
        .unwrap();
    assert_attention_close(
        &mean.maps,
        &expected.f32("attn_question_mean"),
        "attn_question_mean",
    );

    // Knockout in layer 1, then layers 1 and 2.
    let keys = usizes(&expected.json["knockout"]["key_positions"]);
    let knockout = |layers: Vec<usize>| EdgeMask {
        layers,
        queries_from: prompt.image_span.end,
        blocked_keys: keys.clone(),
        and: None,
    };
    let mut knocked_probe = AttentionProbe::new(QueryRows::Last, prompt.image_span.clone());
    let knocked = session
        .logits_unshared(&prompt, Some(&knockout(vec![1])), Some(&mut knocked_probe))
        .unwrap();
    assert_logits_close(
        &knocked,
        &expected.f32("knockout_logits"),
        "knockout_logits (layer 1)",
    );
    assert_attention_close(
        &knocked_probe.maps,
        &expected.f32("knockout_attn_last"),
        "knockout_attn_last",
    );
    let knocked2 = session
        .logits_unshared(&prompt, Some(&knockout(vec![1, 2])), None)
        .unwrap();
    assert_logits_close(
        &knocked2,
        &expected.f32("knockout2_logits"),
        "knockout2_logits (layers 1, 2)",
    );

    // The shared-prefix path: same first-token logits, attention and greedy tokens.
    let options = RunOptions {
        max_new_tokens: 5,
        stop_at_eos: false,
        ..RunOptions::default()
    };
    let answer = session.run(&prompt, &options).unwrap();
    let t = prompt.input_ids.len();
    let reference_last = expected.f32("logits").i(t - 1).unwrap();
    let ours_last = Tensor::new(answer.first_token_logits.as_slice(), &Device::Cpu).unwrap();
    assert_logits_close(
        &ours_last,
        &reference_last,
        "first-token logits via shared prefix",
    );
    assert_attention_close(
        &answer.attention,
        &expected.f32("attn_last"),
        "attn_last via shared prefix",
    );
    assert_ids(
        &answer.ids,
        expected,
        "generated_ids",
        &format!("{name}: greedy tokens"),
    );

    let knocked_options = RunOptions {
        knockout: Some(knockout(vec![1])),
        ..options.clone()
    };
    let answer = session.run(&prompt, &knocked_options).unwrap();
    assert_ids(
        &answer.ids,
        expected,
        "knockout_generated_ids",
        &format!("{name}: greedy tokens with prefill knockout"),
    );
    let all_steps = RunOptions {
        knockout_decode: true,
        ..knocked_options
    };
    let answer = session.run(&prompt, &all_steps).unwrap();
    assert_ids(
        &answer.ids,
        expected,
        "knockout_all_steps_generated_ids",
        &format!("{name}: knockout in every step"),
    );

    let answer = session
        .run(
            general,
            &RunOptions {
                max_new_tokens: 1,
                ..options
            },
        )
        .unwrap();
    assert_attention_close(
        &answer.attention,
        &expected.f32("general_attn_last"),
        "general attn_last via shared prefix",
    );
}

/// A raw prompt "what is <image> the image ?" with `n` image positions: the image span sits
/// between `start` and `end` (the family's frame tokens), after "what is".
pub fn assert_raw_frame(model: &fovea::model::Model, n: usize, start: &str, end: &str) {
    let prompt = model
        .prompt("what is <image> the image ?", true, n)
        .unwrap();
    let tokenizer = &model.tokenizer;
    let id = |t: &str| tokenizer.token_to_id(t).unwrap() as i64;
    assert_eq!(prompt.image_span, 3..3 + n);
    assert_eq!(prompt.input_ids[2], id(start));
    assert!(prompt.input_ids[3..3 + n].iter().all(|&v| v == -1));
    assert_eq!(prompt.input_ids[3 + n], id(end));
    assert_eq!(prompt.input_ids[0], id("what"));
}

/// Our pixel values against the fixture's `pixel_values` (bound 1e-5); returns the reference,
/// on the test device, for the checks that follow.
pub fn assert_pixels_close(name: &str, ours: &Tensor, expected: &Expected) -> Tensor {
    let reference = expected.f32("pixel_values").to_device(&device()).unwrap();
    let error = max_abs_diff(ours, &reference);
    eprintln!("  pixel_values: max |diff| = {error:.2e}");
    assert!(error <= 1e-5, "{name}: pixel values differ by {error}");
    reference
}

/// `fovea inspect` on a demo case (its own image and question; `--model` when given), asserting
/// success: the INSPECT-JSON record, written to `json`.
pub fn inspect_case(model: Option<&Path>, case: &fovea::demo::DemoCase, json: &Path) -> Value {
    let mut command = fovea_command();
    command.arg("inspect");
    if let Some(model) = model {
        command.arg("--model").arg(model);
    }
    let output = command
        .arg("--image")
        .arg(&case.path)
        .args(["--question", &case.question, "--json"])
        .arg(json)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}: {}",
        case.path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

/// Copy a folder (a fixture checkpoint) recursively, to edit the copy.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Last-position logits of a decoder pass over the prompt's text alone: the tokens before and
/// after the image at their own positions, no image rows and no mask (what knocking out every
/// image token from the question in every layer must equal).
pub fn text_alone_logits(decoder: &fovea::model::Decoder, prompt: &TokenisedPrompt) -> Vec<f32> {
    let (before, after) = (prompt.before_image(), prompt.after_image());
    let embeds = Tensor::cat(
        &[
            decoder.embed(&before).unwrap(),
            decoder.embed(&after).unwrap(),
        ],
        1,
    )
    .unwrap();
    let positions: Vec<fovea::model::rope::Position> = (0..before.len())
        .chain(prompt.image_span.end..prompt.input_ids.len())
        .map(|p| [p as u32; 3])
        .collect();
    let mut cache = fovea::model::Cache::new(&decoder.cfg);
    let hidden = decoder
        .forward_at(
            &embeds,
            Some(&positions),
            None,
            &mut cache,
            &mut fovea::model::Hooks::default(),
        )
        .unwrap();
    decoder
        .last_logits(&hidden)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// The bundled demo model and its VGRefine defaults, answering one token.
pub fn demo_model() -> (fovea::model::Model, fovea::grounding::refine::Settings) {
    let device = fovea::model::device::from_env().expect("FOVEA_DEVICE names a device");
    let model = fovea::model::Model::load(&fovea::demo::demo_model_dir(), None, &device).unwrap();
    let defaults = fovea::case::model_defaults(&model).unwrap().unwrap();
    let settings = fovea::grounding::refine::Settings {
        heads: defaults.heads.iter().map(|&[l, h]| (l, h)).collect(),
        masked_layers: defaults.masked_layers.clone(),
        max_new_tokens: 1,
        ..Default::default()
    };
    (model, settings)
}

/// A committed parity checkpoint (`family_dir`/`name`, e.g. "tests/fixtures/llava") with the
/// fixture's own input: the model's pixel input for the test image carrying the committed
/// reference pixels, and the committed prompt ids and image span.
pub fn fixture_case(
    name: &str,
    family_dir: &str,
) -> (
    fovea::model::Model,
    fovea::model::PixelInput,
    TokenisedPrompt,
) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let committed = Expected::load(&root.join(family_dir), name);
    let model = fovea::model::Model::load(&root.join(family_dir).join(name), None, &device())
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let img = image::open(root.join("tests/fixtures/qwen_vl/test_image.png"))
        .unwrap()
        .to_rgb8();
    let input = model.pixel_values(&img).unwrap();
    let values = committed
        .f32("pixel_values")
        .reshape(input.values.shape())
        .unwrap()
        .to_device(&device())
        .unwrap();
    let span = committed.ids("image_span");
    let prompt = TokenisedPrompt {
        text: String::new(),
        input_ids: committed.ids("input_ids"),
        image_span: span[0] as usize..span[1] as usize,
    };
    (model, fovea::model::PixelInput { values, ..input }, prompt)
}

// fovea_command() and fovea_argv(): the binary under test, shared with common/exchange.rs.
include!("bin.rs");

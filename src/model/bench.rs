//! `fovea bench`: what prefix sharing buys VGRefine, measured on a generated checkpoint with
//! the geometry of real ones (CLIP ViT-L/14 at 336 px: 576 image tokens) and a small 4-layer,
//! 256-wide Qwen2-style decoder, through the same loader and session code as real models.
//!
//! Three figures, medians over `runs`:
//! - plain: one question answered from scratch (vision, prefill, greedy decode);
//! - VGRefine shared: question + general-description prompt + knockout pass on one image
//!   session (vision and the prefix once, each prompt runs only its suffix);
//! - VGRefine unshared: the same three prompts, each from scratch.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};

use super::decoder::{Decoder, EdgeMask, TextArch, TextConfig};
use super::linear::LoadPlan;
use super::vision::{Projector, VisionConfig, VisionTower};
use super::{ImageSession, Model, QueryRows, RunOptions};

/// The medians `fovea bench --json` writes (field names are read by other tools).
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchReport {
    pub plain_ms: f64,
    pub vgrefine_shared_ms: f64,
    pub vgrefine_unshared_ms: f64,
    pub prefill_gflops: f64,
    pub runs: usize,
    pub prompt_tokens: usize,
    pub image_tokens: usize,
    pub shared_over_plain: f64,
    pub unshared_over_plain: f64,
    pub vision_ms: f64,
    pub prefix_ms: f64,
}

fn vision_config() -> VisionConfig {
    VisionConfig {
        hidden_size: 1024,
        intermediate_size: 4096,
        num_hidden_layers: 24,
        num_attention_heads: 16,
        image_size: 336,
        patch_size: 14,
        num_channels: 3,
        layer_norm_eps: 1e-5,
        hidden_act: "quick_gelu".into(),
    }
}

fn text_config(vocab: usize) -> TextConfig {
    TextConfig {
        arch: TextArch::Qwen2,
        vocab_size: vocab,
        hidden_size: 256,
        intermediate_size: 1024,
        num_hidden_layers: 4,
        num_attention_heads: 8,
        num_key_value_heads: 2,
        head_dim: 32,
        rms_norm_eps: 1e-6,
        rope_theta: 10000.0,
        attention_bias: true,
        tie_word_embeddings: false,
        rope: crate::model::rope::RopeAxes::Sequential,
        gemma: None,
    }
}

const WORDS: usize = 64;

/// Write a random checkpoint in HuatuoGPT-Vision's original layout into `dir`.
pub fn write_synthetic_checkpoint(dir: &Path) -> Result<()> {
    let device = Device::Cpu;
    let specials = [
        "<unk>",
        "<|endoftext|>",
        "<image>",
        "<|user|>",
        "<|assistant|>",
    ];
    let vocab = specials.len() + WORDS;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let vision = vision_config();
    let text = text_config(vocab);
    VisionTower::new(
        &vision,
        vision.num_hidden_layers as i64,
        vb.pp("model.vision_tower.vision_tower.vision_model"),
        &LoadPlan::from_builder(),
    )?;
    Projector::new(
        vision.hidden_size,
        text.hidden_size,
        vb.pp("model.mm_projector.0"),
        vb.pp("model.mm_projector.2"),
        &LoadPlan::from_builder(),
    )?;
    Decoder::new(
        &text,
        vb.pp("model"),
        vb.pp("lm_head"),
        &LoadPlan::from_builder(),
    )?;
    std::fs::create_dir_all(dir)?;
    varmap.save(dir.join("model.safetensors"))?;
    let config = serde_json::json!({
        "architectures": ["LlavaQwen2ForCausalLM"], "model_type": "llava_qwen2",
        "vocab_size": vocab, "hidden_size": text.hidden_size, "intermediate_size": text.intermediate_size,
        "num_hidden_layers": text.num_hidden_layers, "num_attention_heads": text.num_attention_heads,
        "num_key_value_heads": text.num_key_value_heads, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
        "image_aspect_ratio": "pad", "mm_hidden_size": vision.hidden_size, "mm_vision_tower": "vit",
        "eos_token_id": 1,
    });
    crate::io::write_json(&dir.join("config.json"), &config)?;
    std::fs::create_dir_all(dir.join("vit"))?;
    crate::io::write_json(
        &dir.join("vit/config.json"),
        &serde_json::json!({
            "model_type": "clip_vision_model", "hidden_size": vision.hidden_size,
            "intermediate_size": vision.intermediate_size, "num_hidden_layers": vision.num_hidden_layers,
            "num_attention_heads": vision.num_attention_heads, "image_size": vision.image_size,
            "patch_size": vision.patch_size, "hidden_act": "quick_gelu"
        }),
    )?;
    let mut words = serde_json::Map::new();
    for (i, token) in specials.iter().enumerate() {
        words.insert(token.to_string(), i.into());
    }
    for i in 0..WORDS {
        words.insert(format!("w{i}"), (specials.len() + i).into());
    }
    let added: Vec<_> = specials
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::json!({"id": i, "content": t, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": words, "unk_token": "<unk>"}
    });
    crate::io::write_bytes(
        &dir.join("tokenizer.json"),
        serde_json::to_string(&tokenizer)?.as_bytes(),
    )?;
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// Run the benchmark `runs` times and report medians.
pub fn run(
    runs: usize,
    decode_tokens: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<BenchReport> {
    let dir = tempfile::tempdir()
        .context("cannot create a temporary folder for the generated checkpoint")?;
    progress("writing a generated CLIP-L/336 + 4-layer 256-wide checkpoint");
    write_synthetic_checkpoint(dir.path())?;
    let model = Model::load(dir.path(), None, &Device::Cpu)?;
    let img = image::RgbImage::from_fn(512, 400, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    });
    let question_words: Vec<String> = (0..18).map(|i| format!("w{}", i % WORDS)).collect();
    let (rows, cols) = model.grid_for(img.width(), img.height())?;
    let question = model.prompt(&question_words.join(" "), false, rows * cols)?;
    let general = model.prompt(
        &(0..12)
            .map(|i| format!("w{}", 20 + i))
            .collect::<Vec<_>>()
            .join(" "),
        false,
        rows * cols,
    )?;
    let answer_options = RunOptions {
        max_new_tokens: decode_tokens,
        stop_at_eos: false,
        ..RunOptions::default()
    };
    let attention_only = RunOptions {
        max_new_tokens: 1,
        ..answer_options.clone()
    };
    let span = question.image_span.clone();
    let knockout = EdgeMask {
        layers: vec![1],
        queries_from: span.end,
        blocked_keys: span.clone().step_by(5).collect(),
        and: None,
    };
    let knockout_options = RunOptions {
        knockout: Some(knockout),
        query: QueryRows::Last,
        ..answer_options.clone()
    };

    let (mut plain, mut shared, mut unshared, mut vision, mut prefix) =
        (vec![], vec![], vec![], vec![], vec![]);
    for run in 0..runs {
        progress(&format!("run {}/{runs}", run + 1));
        let started = Instant::now();
        let mut session = ImageSession::new(&model, &img)?;
        session.run(&question, &answer_options)?;
        plain.push(started.elapsed().as_secs_f64() * 1e3);
        vision.push(session.timings.vision_ms);
        prefix.push(session.timings.prefix_ms);

        let started = Instant::now();
        let mut session = ImageSession::new(&model, &img)?;
        session.run(&question, &answer_options)?;
        session.run(&general, &attention_only)?;
        session.run(&question, &knockout_options)?;
        shared.push(started.elapsed().as_secs_f64() * 1e3);

        let started = Instant::now();
        for (prompt, options) in [
            (&question, &answer_options),
            (&general, &attention_only),
            (&question, &knockout_options),
        ] {
            let mut session = ImageSession::new(&model, &img)?;
            session.run(prompt, options)?;
        }
        unshared.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let (plain_ms, shared_ms, unshared_ms) = (
        median(&mut plain),
        median(&mut shared),
        median(&mut unshared),
    );
    let (vision_ms, prefix_ms) = (median(&mut vision), median(&mut prefix));
    let prefill_flops = model.image_flops((rows, cols))
        + decoder_flops(
            &model.checkpoint.text,
            question.input_ids.len() - question.after_image().len(),
        );
    Ok(BenchReport {
        plain_ms,
        vgrefine_shared_ms: shared_ms,
        vgrefine_unshared_ms: unshared_ms,
        prefill_gflops: prefill_flops / ((vision_ms + prefix_ms) / 1e3) / 1e9,
        runs,
        prompt_tokens: question.input_ids.len(),
        image_tokens: span.len(),
        shared_over_plain: shared_ms / plain_ms,
        unshared_over_plain: unshared_ms / plain_ms,
        vision_ms,
        prefix_ms,
    })
}

/// Causal prefill of `tokens` positions (attention counted as full T x T / 2).
pub fn decoder_flops(cfg: &TextConfig, tokens: usize) -> f64 {
    let t = tokens as f64;
    let d = cfg.hidden_size as f64;
    let q = (cfg.num_attention_heads * cfg.head_dim) as f64;
    let kv = (cfg.num_key_value_heads * cfg.head_dim) as f64;
    let i = cfg.intermediate_size as f64;
    let projections = 2.0 * t * (d * q + 2.0 * d * kv + q * d + 3.0 * d * i);
    let attention = 2.0 * t * t * q; // QK^T and PV, each half of T x T on average
    (projections + attention) * cfg.num_hidden_layers as f64
}

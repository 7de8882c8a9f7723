//! Full-size checkpoints without the weights: the tensor names, shapes and configs of
//! published 7B medical MLLMs, written as *sparse* safetensors files (the header, then the file
//! length set: zero-valued bf16 tensors that take no disk and no time to write), or filled with
//! small random values. With them, memory and speed are measured at real scale on machines that
//! cannot download 15 GB. Measure memory on the random fill: on some kernels/VMs pages that
//! hold only zeros are not all counted as resident (seen here: a bf16 7B's peak read 1.9 GiB
//! low on zero weights).
//!
//! - HuatuoGPT-Vision-7B (`FreedomIntelligence/HuatuoGPT-Vision-7B`): `llava_qwen2`, Qwen2-7B
//!   (hidden 3584, 28 layers, 28 heads, 4 KV heads, MLP 18944, vocab 152064, q/k/v biases,
//!   untied head), the CLIP ViT-L/14-336 tower inside the checkpoint
//!   (`model.vision_tower.vision_tower.vision_model.*`, config in `vit/clip_vit_large_patch14_336`).
//! - LLaVA-Med v1.5 (`microsoft/llava-med-v1.5-mistral-7b`): `llava_mistral`, Mistral-7B
//!   (hidden 4096, 32 layers, 32 heads, 8 KV heads, MLP 14336, vocab 32000), the CLIP tower in
//!   the folder `mm_vision_tower` names (`openai/clip-vit-large-patch14-336`, `vision_model.*`).
//! - Qwen2.5-VL-7B (`Qwen/Qwen2.5-VL-7B-Instruct`; Lingshu-7B and HuatuoGPT-Vision-7B-Qwen2.5VL
//!   share it): `qwen2_5_vl`, the Qwen2-7B decoder with M-RoPE sections [16, 24, 24], the
//!   32-block ViT (1280 wide, 16 heads, MLP 3420, 112 px windows, full attention in blocks 7,
//!   15, 23, 31) and its merger to 3584, hub layout (`model.layers.*`, `visual.*`).
//! - Qwen3-VL-8B (`Qwen/Qwen3-VL-8B-Instruct`): `qwen3_vl`, the Qwen3-8B decoder (hidden 4096,
//!   36 layers, 32 heads of 128, 8 KV heads, MLP 12288, vocab 151936, q/k norms, no biases,
//!   untied head, interleaved M-RoPE [24, 20, 20]), the 27-block ViT (1152 wide, 16 heads,
//!   MLP 4304, patch 16, a 48 x 48 learned position table), its merger and three DeepStack
//!   mergers (blocks 8, 16, 24) to 4096; hub layout (`model.language_model.*`, `model.visual.*`).
//! - MedGemma-4B (`google/medgemma-4b-it`): `gemma3`, the Gemma 3 4B decoder (hidden 2560, 34
//!   layers, 8 heads of 256, 4 KV heads, MLP 10240, vocab 262208, q/k norms, four norms a
//!   layer, tied head, sliding window 1024 in five of every six layers), SigLIP-400M at 896 px
//!   (1152 wide, 27 layers, 16 heads, MLP 4304, patch 14: 64 x 64 patches) and the projector
//!   (pooled to 16 x 16 = 256 tokens); hub layout (`language_model.model.*`,
//!   `vision_tower.vision_model.*`, `multi_modal_projector.*`).
//!
//! Long because each published checkpoint's tensor names, shapes and config are written out in
//! full, as the loaders must meet them.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

/// A published checkpoint's shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishedShape {
    HuatuoGptVision7b,
    LlavaMed7b,
    Qwen25Vl7b,
    Qwen3Vl8b,
    MedGemma4b,
}

struct Text {
    vocab: usize,
    hidden: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    intermediate: usize,
    qkv_bias: bool,
    /// Where the decoder's tensors live (`model.` or `model.language_model.`).
    prefix: &'static str,
    /// Set apart from hidden / heads (Qwen3: 128).
    head_dim: Option<usize>,
    /// Qwen3: RMSNorm weights on each query and key head.
    qk_norm: bool,
}

/// Qwen2-7B, the decoder of HuatuoGPT-Vision-7B and of Qwen2.5-VL-7B.
const QWEN2_7B: Text = Text {
    vocab: 152064,
    hidden: 3584,
    layers: 28,
    heads: 28,
    kv_heads: 4,
    intermediate: 18944,
    qkv_bias: true,
    prefix: "model.",
    head_dim: None,
    qk_norm: false,
};

/// Qwen3-8B as Qwen3-VL-8B has it.
const QWEN3_8B: Text = Text {
    vocab: 151936,
    hidden: 4096,
    layers: 36,
    heads: 32,
    kv_heads: 8,
    intermediate: 12288,
    qkv_bias: false,
    prefix: "model.language_model.",
    head_dim: Some(128),
    qk_norm: true,
};

/// CLIP ViT-L/14 at 336 px, every layer (a real checkpoint keeps all 24 and the post-norm).
fn clip_tensors(prefix: &str, out: &mut Vec<(String, Vec<usize>)>) {
    let (d, inner, layers) = (1024, 4096, 24);
    let mut add = |name: String, shape: Vec<usize>| out.push((format!("{prefix}{name}"), shape));
    add("embeddings.class_embedding".into(), vec![d]);
    add(
        "embeddings.patch_embedding.weight".into(),
        vec![d, 3, 14, 14],
    );
    add("embeddings.position_embedding.weight".into(), vec![577, d]);
    for norm in ["pre_layrnorm", "post_layernorm"] {
        add(format!("{norm}.weight"), vec![d]);
        add(format!("{norm}.bias"), vec![d]);
    }
    encoder_layer_tensors(&mut add, d, inner, layers);
}

/// The encoder layers of a CLIP or SigLIP tower (same names): q/k/v/out projections with
/// biases, two LayerNorms, fc1/fc2.
fn encoder_layer_tensors(
    add: &mut impl FnMut(String, Vec<usize>),
    d: usize,
    inner: usize,
    layers: usize,
) {
    for i in 0..layers {
        let layer = format!("encoder.layers.{i}.");
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            add(format!("{layer}self_attn.{proj}.weight"), vec![d, d]);
            add(format!("{layer}self_attn.{proj}.bias"), vec![d]);
        }
        for norm in ["layer_norm1", "layer_norm2"] {
            add(format!("{layer}{norm}.weight"), vec![d]);
            add(format!("{layer}{norm}.bias"), vec![d]);
        }
        add(format!("{layer}mlp.fc1.weight"), vec![inner, d]);
        add(format!("{layer}mlp.fc1.bias"), vec![inner]);
        add(format!("{layer}mlp.fc2.weight"), vec![d, inner]);
        add(format!("{layer}mlp.fc2.bias"), vec![d]);
    }
}

fn text_tensors(t: &Text, out: &mut Vec<(String, Vec<usize>)>) {
    let head_dim = t.head_dim.unwrap_or(t.hidden / t.heads);
    let kv = t.kv_heads * head_dim;
    let q = t.heads * head_dim;
    let p = t.prefix;
    out.push((format!("{p}embed_tokens.weight"), vec![t.vocab, t.hidden]));
    for i in 0..t.layers {
        let layer = format!("{p}layers.{i}.");
        if t.qk_norm {
            for norm in ["q_norm", "k_norm"] {
                out.push((format!("{layer}self_attn.{norm}.weight"), vec![head_dim]));
            }
        }
        for (proj, rows) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
            out.push((
                format!("{layer}self_attn.{proj}.weight"),
                vec![rows, t.hidden],
            ));
            if t.qkv_bias {
                out.push((format!("{layer}self_attn.{proj}.bias"), vec![rows]));
            }
        }
        for (name, shape) in [
            ("self_attn.o_proj", [t.hidden, q]),
            ("mlp.gate_proj", [t.intermediate, t.hidden]),
            ("mlp.up_proj", [t.intermediate, t.hidden]),
            ("mlp.down_proj", [t.hidden, t.intermediate]),
        ] {
            out.push((format!("{layer}{name}.weight"), shape.to_vec()));
        }
        out.push((format!("{layer}input_layernorm.weight"), vec![t.hidden]));
        out.push((
            format!("{layer}post_attention_layernorm.weight"),
            vec![t.hidden],
        ));
    }
    out.push((format!("{p}norm.weight"), vec![t.hidden]));
    out.push(("lm_head.weight".into(), vec![t.vocab, t.hidden]));
}

/// LLaVA's mlp2x_gelu projector from CLIP-L's 1024 to the decoder.
fn projector_tensors(t: &Text, out: &mut Vec<(String, Vec<usize>)>) {
    out.push(("model.mm_projector.0.weight".into(), vec![t.hidden, 1024]));
    out.push(("model.mm_projector.0.bias".into(), vec![t.hidden]));
    out.push((
        "model.mm_projector.2.weight".into(),
        vec![t.hidden, t.hidden],
    ));
    out.push(("model.mm_projector.2.bias".into(), vec![t.hidden]));
}

/// Qwen2.5-VL-7B's ViT and merger (hub names under `visual.`).
fn qwen_vision_tensors(out: &mut Vec<(String, Vec<usize>)>) {
    let (d, inner, depth, text) = (1280, 3420, 32, 3584);
    let mut add = |name: String, shape: Vec<usize>| out.push((format!("visual.{name}"), shape));
    add("patch_embed.proj.weight".into(), vec![d, 3, 2, 14, 14]);
    for i in 0..depth {
        let block = format!("blocks.{i}.");
        add(format!("{block}norm1.weight"), vec![d]);
        add(format!("{block}norm2.weight"), vec![d]);
        add(format!("{block}attn.qkv.weight"), vec![3 * d, d]);
        add(format!("{block}attn.qkv.bias"), vec![3 * d]);
        add(format!("{block}attn.proj.weight"), vec![d, d]);
        add(format!("{block}attn.proj.bias"), vec![d]);
        for proj in ["gate_proj", "up_proj"] {
            add(format!("{block}mlp.{proj}.weight"), vec![inner, d]);
            add(format!("{block}mlp.{proj}.bias"), vec![inner]);
        }
        add(format!("{block}mlp.down_proj.weight"), vec![d, inner]);
        add(format!("{block}mlp.down_proj.bias"), vec![d]);
    }
    add("merger.ln_q.weight".into(), vec![d]);
    add("merger.mlp.0.weight".into(), vec![4 * d, 4 * d]);
    add("merger.mlp.0.bias".into(), vec![4 * d]);
    add("merger.mlp.2.weight".into(), vec![text, 4 * d]);
    add("merger.mlp.2.bias".into(), vec![text]);
}

/// Qwen3-VL-8B's ViT, merger and DeepStack mergers (hub names under `model.visual.`).
fn qwen3_vision_tensors(out: &mut Vec<(String, Vec<usize>)>) {
    let (d, inner, depth, text, stacked) = (1152, 4304, 27, 4096, 3);
    let mut add =
        |name: String, shape: Vec<usize>| out.push((format!("model.visual.{name}"), shape));
    add("patch_embed.proj.weight".into(), vec![d, 3, 2, 16, 16]);
    add("patch_embed.proj.bias".into(), vec![d]);
    add("pos_embed.weight".into(), vec![2304, d]);
    for i in 0..depth {
        let block = format!("blocks.{i}.");
        for norm in ["norm1", "norm2"] {
            add(format!("{block}{norm}.weight"), vec![d]);
            add(format!("{block}{norm}.bias"), vec![d]);
        }
        for (name, rows, cols) in [
            ("attn.qkv", 3 * d, d),
            ("attn.proj", d, d),
            ("mlp.linear_fc1", inner, d),
            ("mlp.linear_fc2", d, inner),
        ] {
            add(format!("{block}{name}.weight"), vec![rows, cols]);
            add(format!("{block}{name}.bias"), vec![rows]);
        }
    }
    let mergers = std::iter::once(("merger.".to_string(), d))
        .chain((0..stacked).map(|k| (format!("deepstack_merger_list.{k}."), 4 * d)));
    for (merger, norm) in mergers {
        add(format!("{merger}norm.weight"), vec![norm]);
        add(format!("{merger}norm.bias"), vec![norm]);
        add(format!("{merger}linear_fc1.weight"), vec![4 * d, 4 * d]);
        add(format!("{merger}linear_fc1.bias"), vec![4 * d]);
        add(format!("{merger}linear_fc2.weight"), vec![text, 4 * d]);
        add(format!("{merger}linear_fc2.bias"), vec![text]);
    }
}

/// Gemma 3 4B's decoder (hub names under `language_model.model.`, head tied), SigLIP-400M at
/// 896 px (`vision_tower.vision_model.`) and the projector.
fn medgemma_tensors(out: &mut Vec<(String, Vec<usize>)>) {
    let (vocab, hidden, layers, heads, kv, head_dim, inner) = (262208, 2560, 34, 8, 4, 256, 10240);
    let p = "language_model.model.";
    out.push((format!("{p}embed_tokens.weight"), vec![vocab, hidden]));
    for i in 0..layers {
        let layer = format!("{p}layers.{i}.");
        for norm in ["q_norm", "k_norm"] {
            out.push((format!("{layer}self_attn.{norm}.weight"), vec![head_dim]));
        }
        for (name, shape) in [
            ("self_attn.q_proj", [heads * head_dim, hidden]),
            ("self_attn.k_proj", [kv * head_dim, hidden]),
            ("self_attn.v_proj", [kv * head_dim, hidden]),
            ("self_attn.o_proj", [hidden, heads * head_dim]),
            ("mlp.gate_proj", [inner, hidden]),
            ("mlp.up_proj", [inner, hidden]),
            ("mlp.down_proj", [hidden, inner]),
        ] {
            out.push((format!("{layer}{name}.weight"), shape.to_vec()));
        }
        for norm in [
            "input_layernorm",
            "post_attention_layernorm",
            "pre_feedforward_layernorm",
            "post_feedforward_layernorm",
        ] {
            out.push((format!("{layer}{norm}.weight"), vec![hidden]));
        }
    }
    out.push((format!("{p}norm.weight"), vec![hidden]));
    let (d, vinner, depth, patches) = (1152, 4304, 27, 64 * 64);
    let mut add = |name: String, shape: Vec<usize>| {
        out.push((format!("vision_tower.vision_model.{name}"), shape))
    };
    add(
        "embeddings.patch_embedding.weight".into(),
        vec![d, 3, 14, 14],
    );
    add("embeddings.patch_embedding.bias".into(), vec![d]);
    add(
        "embeddings.position_embedding.weight".into(),
        vec![patches, d],
    );
    encoder_layer_tensors(&mut add, d, vinner, depth);
    add("post_layernorm.weight".into(), vec![d]);
    add("post_layernorm.bias".into(), vec![d]);
    out.push((
        "multi_modal_projector.mm_input_projection_weight".into(),
        vec![d, hidden],
    ));
    out.push((
        "multi_modal_projector.mm_soft_emb_norm.weight".into(),
        vec![d],
    ));
}

/// A chat template in Gemma 3's format (BOS, one user turn, the image first).
const GEMMA_CHAT_TEMPLATE: &str = "{{ bos_token }}{% for message in messages %}<start_of_turn>{{ message['role'] }}\n\
{% for content in message['content'] %}{% if content['type'] == 'image' %}<start_of_image>\
{% elif content['type'] == 'text' %}{{ content['text'] | trim }}{% endif %}{% endfor %}<end_of_turn>\n{% endfor %}\
{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}";

/// A Qwen-VL checkpoint's files: config, image processor, chat template, weights.
fn write_qwen_vl(
    dir: &Path,
    config: &serde_json::Value,
    preprocessor: &serde_json::Value,
    tensors: &[(String, Vec<usize>)],
    fill: Fill,
) -> Result<u64> {
    crate::io::write_json(&dir.join("config.json"), config)?;
    crate::io::write_json(&dir.join("preprocessor_config.json"), preprocessor)?;
    crate::io::write_json(
        &dir.join("chat_template.json"),
        &json!({"chat_template": QWEN_CHAT_TEMPLATE}),
    )?;
    write_safetensors(&dir.join("model.safetensors"), tensors, fill)
}

/// What the tensors hold: zeros in a sparse file (no disk, no time), or small random bf16
/// values written out (real pages, as a real checkpoint gives; ~16 GB of disk for a 7B).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    SparseZeros,
    Random,
}

/// Write a safetensors file of bf16 tensors: the header, then the data (or just the length, for
/// a sparse file of zeros). Returns the number of parameters.
pub fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>)], fill: Fill) -> Result<u64> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut offset = 0u64;
    let mut parameters = 0u64;
    for (name, shape) in tensors {
        let count: u64 = shape.iter().map(|&d| d as u64).product();
        header.insert(
            name.clone(),
            json!({"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + 2 * count]}),
        );
        offset += 2 * count;
        parameters += count;
    }
    let mut text = serde_json::to_vec(&header)?;
    while text.len() % 8 != 0 {
        text.push(b' ');
    }
    crate::io::write_with(path, ".safetensors", |writer| {
        writer.write_all(&(text.len() as u64).to_le_bytes())?;
        writer.write_all(&text)?;
        match fill {
            Fill::SparseZeros => {
                writer.flush()?;
                writer.get_ref().set_len(8 + text.len() as u64 + offset)?;
            }
            Fill::Random => {
                // Normal bf16 values of magnitude 2^-7..2^-3 (no NaN, no denormals), xorshift.
                let mut state = 0x9E37_79B9_7F4A_7C15u64;
                let mut chunk = vec![0u8; 1 << 20];
                let mut left = offset;
                while left > 0 {
                    for pair in chunk.chunks_exact_mut(2) {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        let sign = (state as u16 & 1) << 15;
                        let exponent = (120 + ((state >> 1) as u16 & 3)) << 7;
                        let mantissa = (state >> 3) as u16 & 0x7F;
                        pair.copy_from_slice(&(sign | exponent | mantissa).to_le_bytes());
                    }
                    let n = left.min(chunk.len() as u64) as usize;
                    writer.write_all(&chunk[..n])?;
                    left -= n as u64;
                }
            }
        }
        Ok(())
    })?;
    Ok(parameters)
}

/// A word-level tokenizer with the special tokens the prompt formats use (the real vocabulary
/// does not matter for memory and speed).
fn write_tokenizer(dir: &Path) -> Result<()> {
    let specials = [
        "<unk>",
        "<s>",
        "</s>",
        "<|endoftext|>",
        "<image>",
        "<|user|>",
        "<|assistant|>",
        "[INST]",
        "[/INST]",
        "<|im_start|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|image_pad|>",
        "<bos>",
        "<end_of_turn>",
        "<start_of_image>",
        "<end_of_image>",
        "<image_soft_token>",
        "<start_of_turn>",
        "<eos>",
    ];
    let mut words = serde_json::Map::new();
    for (i, token) in specials.iter().enumerate() {
        words.insert(token.to_string(), i.into());
    }
    for i in 0..200 {
        words.insert(format!("w{i}"), (specials.len() + i).into());
    }
    let added: Vec<_> = specials
        .iter()
        .enumerate()
        .map(|(i, t)| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null, "model": {"type": "WordLevel", "vocab": words, "unk_token": "<unk>"}
    });
    crate::io::write_json(&dir.join("tokenizer.json"), &tokenizer)
}

/// A short chat template in Qwen's format (one user turn, the image first).
const QWEN_CHAT_TEMPLATE: &str = "{% for message in messages %}<|im_start|>{{ message['role'] }}\n\
{% for content in message['content'] %}{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>\
{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}\
{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

fn clip_config() -> serde_json::Value {
    json!({
        "model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096,
        "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 336, "patch_size": 14,
        "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "projection_dim": 768
    })
}

/// Write the checkpoint folder for `shape` into `dir`; returns its parameter count.
pub fn write_published_shape(dir: &Path, shape: PublishedShape, fill: Fill) -> Result<u64> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tensors = Vec::new();
    let parameters = match shape {
        PublishedShape::HuatuoGptVision7b => {
            let text = QWEN2_7B;
            text_tensors(&text, &mut tensors);
            projector_tensors(&text, &mut tensors);
            clip_tensors(
                "model.vision_tower.vision_tower.vision_model.",
                &mut tensors,
            );
            let config = json!({
                "architectures": ["LlavaQwen2ForCausalLM"], "model_type": "llava_qwen2",
                "vocab_size": text.vocab, "hidden_size": text.hidden,
                "intermediate_size": text.intermediate, "num_hidden_layers": text.layers,
                "num_attention_heads": text.heads, "num_key_value_heads": text.kv_heads,
                "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 32768,
                "tie_word_embeddings": false, "torch_dtype": "bfloat16",
                "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2,
                "mm_vision_select_feature": "patch", "image_aspect_ratio": "pad",
                "mm_hidden_size": 1024, "mm_vision_tower": "vit/clip_vit_large_patch14_336",
                "bos_token_id": 151643, "eos_token_id": 151645,
            });
            crate::io::write_json(&dir.join("config.json"), &config)?;
            let vit = dir.join("vit/clip_vit_large_patch14_336");
            std::fs::create_dir_all(&vit)
                .with_context(|| format!("cannot create {}", vit.display()))?;
            crate::io::write_json(&vit.join("config.json"), &clip_config())?;
            write_safetensors(&dir.join("model.safetensors"), &tensors, fill)?
        }
        PublishedShape::LlavaMed7b => {
            let text = Text {
                vocab: 32000,
                hidden: 4096,
                layers: 32,
                heads: 32,
                kv_heads: 8,
                intermediate: 14336,
                qkv_bias: false,
                prefix: "model.",
                head_dim: None,
                qk_norm: false,
            };
            text_tensors(&text, &mut tensors);
            projector_tensors(&text, &mut tensors);
            let config = json!({
                "architectures": ["LlavaMistralForCausalLM"], "model_type": "llava_mistral",
                "vocab_size": text.vocab, "hidden_size": text.hidden,
                "intermediate_size": text.intermediate, "num_hidden_layers": text.layers,
                "num_attention_heads": text.heads, "num_key_value_heads": text.kv_heads,
                "rms_norm_eps": 1e-5, "rope_theta": 1000000.0, "max_position_embeddings": 32768,
                "sliding_window": null, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
                "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2,
                "mm_vision_select_feature": "patch", "image_aspect_ratio": "pad",
                "mm_hidden_size": 1024, "mm_vision_tower": "openai/clip-vit-large-patch14-336",
                "bos_token_id": 1, "eos_token_id": 2,
            });
            crate::io::write_json(&dir.join("config.json"), &config)?;
            let mut text_parameters =
                write_safetensors(&dir.join("model.safetensors"), &tensors, fill)?;
            let clip = dir.join("openai/clip-vit-large-patch14-336");
            std::fs::create_dir_all(&clip)
                .with_context(|| format!("cannot create {}", clip.display()))?;
            crate::io::write_json(&clip.join("config.json"), &clip_config())?;
            let mut clip_tensors_list = Vec::new();
            clip_tensors("vision_model.", &mut clip_tensors_list);
            text_parameters +=
                write_safetensors(&clip.join("model.safetensors"), &clip_tensors_list, fill)?;
            text_parameters
        }
        PublishedShape::Qwen25Vl7b => {
            let text = QWEN2_7B;
            text_tensors(&text, &mut tensors);
            qwen_vision_tensors(&mut tensors);
            // Token ids of write_tokenizer's specials.
            let config = json!({
                "architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
                "vocab_size": text.vocab, "hidden_size": text.hidden,
                "intermediate_size": text.intermediate, "num_hidden_layers": text.layers,
                "num_attention_heads": text.heads, "num_key_value_heads": text.kv_heads,
                "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 128000,
                "sliding_window": 32768, "use_sliding_window": false, "max_window_layers": 28,
                "tie_word_embeddings": false, "torch_dtype": "bfloat16", "hidden_act": "silu",
                "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
                "bos_token_id": 3, "eos_token_id": 10,
                "vision_start_token_id": 11, "vision_end_token_id": 12, "image_token_id": 13,
                "vision_config": {
                    "depth": 32, "hidden_act": "silu", "hidden_size": 1280,
                    "intermediate_size": 3420, "num_heads": 16, "in_chans": 3,
                    "out_hidden_size": text.hidden, "patch_size": 14, "spatial_merge_size": 2,
                    "spatial_patch_size": 14, "window_size": 112,
                    "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2,
                    "temporal_patch_size": 2
                },
            });
            let preprocessor = json!({
                    "min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14,
                    "temporal_patch_size": 2, "merge_size": 2,
                    "image_mean": [0.48145466, 0.4578275, 0.40821073],
                    "image_std": [0.26862954, 0.26130258, 0.27577711],
                    "image_processor_type": "Qwen2VLImageProcessor",
                    "processor_class": "Qwen2_5_VLProcessor"
            });
            write_qwen_vl(dir, &config, &preprocessor, &tensors, fill)?
        }
        PublishedShape::Qwen3Vl8b => {
            let text = QWEN3_8B;
            text_tensors(&text, &mut tensors);
            qwen3_vision_tensors(&mut tensors);
            // The hub's config.json (transformers 4.57); token ids of write_tokenizer's specials.
            let config = json!({
                "architectures": ["Qwen3VLForConditionalGeneration"], "model_type": "qwen3_vl",
                "image_token_id": 13, "video_token_id": 14,
                "vision_start_token_id": 11, "vision_end_token_id": 12,
                "tie_word_embeddings": false,
                "text_config": {
                    "model_type": "qwen3_vl_text", "vocab_size": text.vocab,
                    "hidden_size": text.hidden, "intermediate_size": text.intermediate,
                    "num_hidden_layers": text.layers, "num_attention_heads": text.heads,
                    "num_key_value_heads": text.kv_heads, "head_dim": 128,
                    "attention_bias": false, "rms_norm_eps": 1e-6, "hidden_act": "silu",
                    "max_position_embeddings": 262144, "rope_theta": 5000000,
                    "rope_scaling": {"mrope_interleaved": true, "mrope_section": [24, 20, 20],
                                     "rope_type": "default"},
                    "dtype": "bfloat16", "bos_token_id": 3, "eos_token_id": 10,
                    "tie_word_embeddings": false
                },
                "vision_config": {
                    "model_type": "qwen3_vl", "depth": 27, "hidden_act": "gelu_pytorch_tanh",
                    "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16,
                    "in_channels": 3, "out_hidden_size": text.hidden, "patch_size": 16,
                    "spatial_merge_size": 2, "temporal_patch_size": 2,
                    "num_position_embeddings": 2304, "deepstack_visual_indexes": [8, 16, 24]
                },
            });
            let preprocessor = json!({
                    "size": {"longest_edge": 16777216, "shortest_edge": 65536},
                    "patch_size": 16, "temporal_patch_size": 2, "merge_size": 2,
                    "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
                    "image_processor_type": "Qwen2VLImageProcessorFast",
                    "processor_class": "Qwen3VLProcessor"
            });
            write_qwen_vl(dir, &config, &preprocessor, &tensors, fill)?
        }
        PublishedShape::MedGemma4b => {
            medgemma_tensors(&mut tensors);
            // The hub's config.json (transformers 4.50); token ids of write_tokenizer's
            // specials.
            let config = json!({
                "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
                "boi_token_index": 16, "eoi_token_index": 17, "image_token_index": 18,
                "mm_tokens_per_image": 256, "eos_token_id": [15, 20],
                "initializer_range": 0.02, "torch_dtype": "bfloat16",
                "text_config": {
                    "model_type": "gemma3_text", "vocab_size": 262208, "hidden_size": 2560,
                    "intermediate_size": 10240, "num_hidden_layers": 34,
                    "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
                    "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-6,
                    "hidden_activation": "gelu_pytorch_tanh", "sliding_window": 1024,
                    "sliding_window_pattern": 6, "rope_theta": 1000000.0,
                    "rope_local_base_freq": 10000.0,
                    "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                    "attention_bias": false, "attn_logit_softcapping": null,
                    "final_logit_softcapping": null, "max_position_embeddings": 131072
                },
                "vision_config": {
                    "model_type": "siglip_vision_model", "hidden_size": 1152, "image_size": 896,
                    "intermediate_size": 4304, "num_attention_heads": 16,
                    "num_hidden_layers": 27, "patch_size": 14, "vision_use_head": false
                },
            });
            crate::io::write_json(&dir.join("config.json"), &config)?;
            crate::io::write_json(
                &dir.join("preprocessor_config.json"),
                &json!({
                    "image_processor_type": "Gemma3ImageProcessor",
                    "processor_class": "Gemma3Processor", "do_resize": true,
                    "size": {"height": 896, "width": 896}, "resample": 2, "do_rescale": true,
                    "rescale_factor": 1.0 / 255.0, "do_normalize": true,
                    "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
                    "do_pan_and_scan": false, "image_seq_length": 256
                }),
            )?;
            crate::io::write_json(
                &dir.join("chat_template.json"),
                &json!({"chat_template": GEMMA_CHAT_TEMPLATE}),
            )?;
            crate::io::write_json(
                &dir.join("tokenizer_config.json"),
                &json!({"bos_token": "<bos>", "eos_token": "<eos>"}),
            )?;
            write_safetensors(&dir.join("model.safetensors"), &tensors, fill)?
        }
    };
    write_tokenizer(dir)?;
    Ok(parameters)
}

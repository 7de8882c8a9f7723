//! Gemma 3's image side and configuration (MedGemma: `Gemma3ForConditionalGeneration`), as
//! transformers computes them:
//! - SigLIP vision tower (`SiglipVisionModel`): patch embedding with bias, learned positions,
//!   no CLS token, pre-norm encoder layers (LayerNorm, GELU-tanh), `post_layernorm`; its
//!   `last_hidden_state` is what Gemma 3 reads.
//! - `Gemma3MultiModalProjector`: the patches as a grid, average pooling down to
//!   `mm_tokens_per_image` tokens (MedGemma: 64 x 64 patches -> 16 x 16 tokens, kernel 4),
//!   Gemma's RMSNorm (`1 + w`) and a plain matrix product with `mm_input_projection_weight`
//!   (shape [vision hidden, text hidden], not a Linear).
//! - the text config: `query_pre_attn_scalar`, `head_dim`, the sliding window, which layers
//!   are local (`layer_types`, or `sliding_window_pattern` in the hub's files), the local and
//!   global rotary bases and the global layers' linear RoPE scaling, in both the hub's keys
//!   (`rope_scaling`, `rope_local_base_freq`) and transformers 5's (`rope_parameters` per
//!   layer type).
//!
//! The decoder itself is `decoder.rs` (`TextArch::Gemma3`), which also lets the image tokens
//! attend to each other both ways during the prefill.

use anyhow::{bail, Result};
use candle_core::{DType, Module, Tensor};
use candle_nn::{embedding, layer_norm, Embedding, LayerNorm, VarBuilder};
use serde_json::Value;

use super::decoder::GemmaText;
use super::linear::{Linear, LoadPlan};
use super::vision::{encoder_layers, patch_embedding, ClipLayer, VisionConfig};

fn get_usize(obj: &Value, key: &str) -> Option<usize> {
    obj.get(key).and_then(Value::as_u64).map(|v| v as usize)
}

fn get_f64(obj: &Value, key: &str) -> Option<f64> {
    obj.get(key).and_then(Value::as_f64)
}

/// Gemma 3's special tokens around an image (ids from `config.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmaTokens {
    /// `<start_of_image>` (`boi_token_index`).
    pub boi: u32,
    /// `<end_of_image>` (`eoi_token_index`).
    pub eoi: u32,
    /// `<image_soft_token>` (`image_token_index`): one per image token.
    pub image_soft: u32,
}

/// SigLIP's `vision_config`, with `SiglipVisionConfig`'s defaults for what a file leaves out
/// (MedGemma's config.json omits `layer_norm_eps` and `hidden_act`).
pub fn siglip_config(obj: &Value) -> Result<VisionConfig> {
    let mut merged = serde_json::json!({
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "num_channels": 3,
        "image_size": 224,
        "patch_size": 16,
        "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": 1e-6,
    });
    if let (Some(target), Some(given)) = (merged.as_object_mut(), obj.as_object()) {
        for (key, value) in given {
            if target.contains_key(key) && !value.is_null() {
                target.insert(key.clone(), value.clone());
            }
        }
    }
    let cfg: VisionConfig = serde_json::from_value(merged)
        .map_err(|e| anyhow::anyhow!("invalid SigLIP vision_config: {e}"))?;
    if cfg.patch_size == 0 || cfg.image_size % cfg.patch_size != 0 {
        bail!(
            "SigLIP image_size {} is not a multiple of patch_size {}",
            cfg.image_size,
            cfg.patch_size
        );
    }
    if cfg.num_attention_heads == 0 || cfg.hidden_size % cfg.num_attention_heads != 0 {
        bail!(
            "SigLIP hidden_size {} does not split into {} heads",
            cfg.hidden_size,
            cfg.num_attention_heads
        );
    }
    Ok(cfg)
}

/// Image tokens per side for `mm_tokens_per_image` over `patches` patches per side, and the
/// pooling kernel.
pub fn token_grid(mm_tokens_per_image: usize, patches: usize) -> Result<(usize, usize)> {
    let side = (mm_tokens_per_image as f64).sqrt().round() as usize;
    if side == 0 || side * side != mm_tokens_per_image {
        bail!("mm_tokens_per_image {mm_tokens_per_image} is not a square number of tokens");
    }
    if patches % side != 0 {
        bail!(
            "{patches} x {patches} patches do not pool evenly to {side} x {side} tokens (mm_tokens_per_image {mm_tokens_per_image})"
        );
    }
    Ok((side, patches / side))
}

/// Gemma 3's text settings beyond the LLaMA fields, from a text config object (the hub's keys
/// or transformers 5's), with `Gemma3TextConfig`'s defaults.
pub fn gemma_text(obj: &Value, layers: usize) -> Result<GemmaText> {
    let sliding_window = get_usize(obj, "sliding_window").unwrap_or(4096);
    if obj
        .get("use_bidirectional_attention")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        bail!("use_bidirectional_attention (Gemma as a text encoder) is not supported");
    }
    if let Some(act) = obj
        .get("hidden_activation")
        .or_else(|| obj.get("hidden_act"))
        .and_then(Value::as_str)
    {
        if !matches!(act, "gelu_pytorch_tanh" | "gelu_tanh") {
            bail!("Gemma 3 hidden_activation {act:?} is not supported (gelu_pytorch_tanh is)");
        }
    }
    let sliding = match obj.get("layer_types").and_then(Value::as_array) {
        Some(types) => {
            if types.len() != layers {
                bail!(
                    "layer_types lists {} layers for num_hidden_layers {layers}",
                    types.len()
                );
            }
            types
                .iter()
                .map(|t| match t.as_str() {
                    Some("sliding_attention") => Ok(true),
                    Some("full_attention") => Ok(false),
                    other => bail!("unknown layer type {other:?} in layer_types"),
                })
                .collect::<Result<Vec<_>>>()?
        }
        None => {
            let pattern = get_usize(obj, "sliding_window_pattern")
                .or_else(|| get_usize(obj, "_sliding_window_pattern"))
                .unwrap_or(6);
            if pattern == 0 {
                bail!("sliding_window_pattern must be at least 1");
            }
            (0..layers).map(|i| (i + 1) % pattern != 0).collect()
        }
    };
    // Rotary: transformers 5 keeps one entry per layer type; the hub's files have the local
    // base frequency and the global layers' scaling apart (the global theta: see
    // `global_rope_theta`).
    let (local_theta, factor) = match obj
        .get("rope_parameters")
        .filter(|p| p.get("full_attention").is_some() || p.get("sliding_attention").is_some())
    {
        Some(params) => {
            let full = params.get("full_attention").unwrap_or(&Value::Null);
            let local = params.get("sliding_attention").unwrap_or(&Value::Null);
            let local_key = "text_config.rope_parameters.sliding_attention";
            if rope_kind(local_key, local)? != RopeKind::Default {
                bail!(
                    "{local_key} = {local} is not implemented (RoPE scaling of the local layers; fovea implements it \
                     for the global layers)"
                );
            }
            (
                get_f64(local, "rope_theta").unwrap_or(10_000.0),
                rope_factor("text_config.rope_parameters.full_attention", full)?,
            )
        }
        None => (
            get_f64(obj, "rope_local_base_freq").unwrap_or(10_000.0),
            match obj.get("rope_scaling").filter(|v| !v.is_null()) {
                Some(scaling) => rope_factor("text_config.rope_scaling", scaling)?,
                None => 1.0,
            },
        ),
    };
    Ok(GemmaText {
        query_pre_attn_scalar: get_f64(obj, "query_pre_attn_scalar").unwrap_or(256.0),
        sliding_window,
        sliding,
        local_rope_theta: local_theta,
        global_rope_factor: factor,
    })
}

/// The global layers' rotary base (`rope_theta`), in either style.
pub fn global_rope_theta(obj: &Value) -> f64 {
    obj.get("rope_parameters")
        .and_then(|p| p.get("full_attention"))
        .and_then(|full| get_f64(full, "rope_theta"))
        .or_else(|| get_f64(obj, "rope_theta"))
        .unwrap_or(1_000_000.0)
}

#[derive(Debug, PartialEq, Eq)]
enum RopeKind {
    Default,
    Linear,
}

/// The kind of a rotary entry; `key` names it in the refusal.
fn rope_kind(key: &str, params: &Value) -> Result<RopeKind> {
    match params
        .get("rope_type")
        .or_else(|| params.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default")
    {
        "default" => Ok(RopeKind::Default),
        "linear" => Ok(RopeKind::Linear),
        other => bail!(
            "{key} = {params} is not implemented (RoPE scaling of type {other:?}; fovea implements Gemma 3's default \
             and linear)"
        ),
    }
}

/// The linear scaling factor of a rotary entry (1 for default).
fn rope_factor(key: &str, params: &Value) -> Result<f64> {
    Ok(match rope_kind(key, params)? {
        RopeKind::Default => 1.0,
        RopeKind::Linear => get_f64(params, "factor").unwrap_or(1.0),
    })
}

/// The SigLIP tower: embeddings, encoder, post-layernorm.
#[derive(Clone, Debug)]
pub struct SiglipTower {
    patch_embedding: candle_nn::Conv2d,
    position_embedding: Embedding,
    layers: Vec<ClipLayer>,
    post_layernorm: LayerNorm,
    pub cfg: VisionConfig,
}

impl SiglipTower {
    /// `vb` at the tower root (where `embeddings`, `encoder`, `post_layernorm` live). Kept at
    /// storage precision.
    pub fn new(cfg: &VisionConfig, vb: VarBuilder, plan: &LoadPlan) -> candle_core::Result<Self> {
        let plan = &plan.unquantized();
        let embeddings = vb.pp("embeddings");
        let patch_embedding = patch_embedding(cfg, &embeddings, true)?;
        let side = cfg.grid_side();
        let position_embedding = embedding(
            side * side,
            cfg.hidden_size,
            embeddings.pp("position_embedding"),
        )?;
        let layers = encoder_layers(cfg, &vb, plan, cfg.num_hidden_layers)?;
        let post_layernorm =
            layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("post_layernorm"))?;
        Ok(SiglipTower {
            patch_embedding,
            position_embedding,
            layers,
            post_layernorm,
            cfg: cfg.clone(),
        })
    }

    /// `pixel_values` (1, 3, S, S) -> `last_hidden_state` (P, D), patches row-major.
    pub fn forward(&self, pixel_values: &Tensor) -> candle_core::Result<Tensor> {
        let patches = self.patch_embedding.forward(pixel_values)?; // (1, D, g, g)
        let patches = patches.flatten_from(2)?.transpose(1, 2)?; // (1, P, D)
        let count = patches.dim(1)?;
        let positions = Tensor::arange(0u32, count as u32, patches.device())?;
        let mut x = patches.broadcast_add(&self.position_embedding.forward(&positions)?)?;
        for layer in &self.layers {
            x = layer.forward(&x)?;
        }
        self.post_layernorm.forward(&x)?.squeeze(0)
    }

    /// Multiply-adds x 2 of the tower.
    pub fn flops(cfg: &VisionConfig) -> f64 {
        let tokens = (cfg.grid_side() * cfg.grid_side()) as f64;
        let d = cfg.hidden_size as f64;
        let i = cfg.intermediate_size as f64;
        let patch = 2.0 * tokens * d * (cfg.num_channels * cfg.patch_size * cfg.patch_size) as f64;
        let per_layer = 2.0 * tokens * (4.0 * d * d + 2.0 * d * i) + 4.0 * tokens * tokens * d;
        patch + per_layer * cfg.num_hidden_layers as f64
    }
}

/// `Gemma3MultiModalProjector`: average pooling to the token grid, RMSNorm (`1 + w`), matrix
/// product with `mm_input_projection_weight`.
#[derive(Clone, Debug)]
pub struct GemmaProjector {
    norm: candle_nn::RmsNorm,
    /// (text hidden, vision hidden): the transpose of the stored [in, out] matrix.
    projection: Linear,
    patches: usize,
    tokens: usize,
    kernel: usize,
}

impl GemmaProjector {
    /// `vb` at the projector (where `mm_input_projection_weight` and `mm_soft_emb_norm` live).
    pub fn new(
        vision: &VisionConfig,
        text_hidden: usize,
        mm_tokens_per_image: usize,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let d = vision.hidden_size;
        let patches = vision.grid_side();
        let (tokens, kernel) = token_grid(mm_tokens_per_image, patches)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let weight = (vb
            .pp("mm_soft_emb_norm")
            .get(d, "weight")?
            .to_dtype(DType::F32)?
            + 1.0)?;
        let norm = candle_nn::RmsNorm::new(weight, vision.layer_norm_eps);
        let stored = vb.get((d, text_hidden), "mm_input_projection_weight")?;
        let projection = Linear::from_weight(stored.t()?.contiguous()?, None)?;
        Ok(GemmaProjector {
            norm,
            projection,
            patches,
            tokens,
            kernel,
        })
    }

    /// Image tokens per side.
    pub fn tokens_per_side(&self) -> usize {
        self.tokens
    }

    /// SigLIP's (P, D) patches -> (N, D_text) image token embeddings, row-major.
    pub fn forward(&self, patches: &Tensor) -> candle_core::Result<Tensor> {
        let (count, d) = patches.dims2()?;
        if count != self.patches * self.patches {
            candle_core::bail!("{count} patches for a {0} x {0} patch grid", self.patches);
        }
        let (t, k) = (self.tokens, self.kernel);
        // (t, k, t, k, D): token row, row in the window, token column, column in the window.
        let pooled = patches
            .to_dtype(DType::F32)?
            .reshape((t, k, t, k, d))?
            .sum(3)?
            .sum(1)?
            .affine(1.0 / (k * k) as f64, 0.0)?
            .reshape((t * t, d))?;
        let normed = self.norm.forward(&pooled)?;
        self.projection.forward(&normed)
    }
}

/// The vision side of a Gemma 3 checkpoint.
#[derive(Clone, Debug)]
pub struct GemmaVision {
    pub tower: SiglipTower,
    pub projector: GemmaProjector,
}

impl GemmaVision {
    /// Image token embeddings (N, D_text) for pixel values (1, 3, S, S).
    pub fn forward(&self, pixel_values: &Tensor) -> candle_core::Result<Tensor> {
        self.projector.forward(&self.tower.forward(pixel_values)?)
    }
}

//! The CLIP ViT vision tower (`CLIPVisionModel`, e.g. openai/clip-vit-large-patch14-336) up to
//! the feature layer LLaVA reads: pre-layernorm embeddings, encoder layers with quick_gelu,
//! hidden state `feature_layer` (-2 by default: the output of the second-to-last layer, with
//! `hidden_states[0]` being the embeddings after `pre_layrnorm` as in transformers), CLS
//! dropped. Layers after the feature layer and `post_layernorm` are never run.

use super::attention::query_blocks;
use super::linear::{Linear, LoadPlan};
use super::softmax::scaled_masked_softmax;
use candle_core::{IndexOp, Module, Result, Tensor};
use candle_nn::{
    conv2d, conv2d_no_bias, embedding, layer_norm, Conv2dConfig, Embedding, LayerNorm, VarBuilder,
};

/// `vision_config` of a LLaVA checkpoint or the `config.json` of a CLIP folder.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
pub struct VisionConfig {
    #[serde(default = "default_hidden")]
    pub hidden_size: usize,
    #[serde(default = "default_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "default_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "default_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "default_image_size")]
    pub image_size: usize,
    #[serde(default = "default_patch")]
    pub patch_size: usize,
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

fn default_hidden() -> usize {
    1024
}
fn default_intermediate() -> usize {
    4096
}
fn default_layers() -> usize {
    24
}
fn default_heads() -> usize {
    16
}
fn default_image_size() -> usize {
    336
}
fn default_patch() -> usize {
    14
}
fn default_channels() -> usize {
    3
}
fn default_eps() -> f64 {
    1e-5
}
fn default_act() -> String {
    "quick_gelu".into()
}

impl VisionConfig {
    /// Image tokens per side (24 for 336/14).
    pub fn grid_side(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Multiply-adds x 2 of the vision tower up to the feature layer.
    pub fn flops(&self, feature_layer: i64) -> f64 {
        let cfg = self;
        let tokens = (cfg.grid_side() * cfg.grid_side() + 1) as f64;
        let d = cfg.hidden_size as f64;
        let i = cfg.intermediate_size as f64;
        let patch = 2.0 * tokens * d * (cfg.num_channels * cfg.patch_size * cfg.patch_size) as f64;
        let per_layer = 2.0 * tokens * (4.0 * d * d + 2.0 * d * i) + 4.0 * tokens * tokens * d;
        patch + per_layer * cfg.layers_to_run(feature_layer) as f64
    }

    /// Number of hidden states (`feature_layer` resolved against L + 1 states) to compute.
    pub fn layers_to_run(&self, feature_layer: i64) -> usize {
        let states = self.num_hidden_layers as i64 + 1;
        let index = if feature_layer < 0 {
            states + feature_layer
        } else {
            feature_layer
        };
        index.clamp(0, self.num_hidden_layers as i64) as usize
    }
}

#[derive(Clone, Debug)]
struct ClipAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
    head_dim: usize,
}

impl ClipAttention {
    fn new(cfg: &VisionConfig, vb: VarBuilder, plan: &LoadPlan) -> Result<Self> {
        let d = cfg.hidden_size;
        Ok(ClipAttention {
            q_proj: Linear::load(d, d, true, vb.pp("q_proj"), plan)?,
            k_proj: Linear::load(d, d, true, vb.pp("k_proj"), plan)?,
            v_proj: Linear::load(d, d, true, vb.pp("v_proj"), plan)?,
            out_proj: Linear::load(d, d, true, vb.pp("out_proj"), plan)?,
            heads: cfg.num_attention_heads,
            head_dim: d / cfg.num_attention_heads,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (batch, len, dim) = x.dims3()?;
        let split = |t: Tensor| -> Result<Tensor> {
            t.reshape((batch, len, self.heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.q_proj.forward(x)?)?;
        let k = split(self.k_proj.forward(x)?)?;
        let v = split(self.v_proj.forward(x)?)?;
        let scale = (self.head_dim as f64).powf(-0.5);
        let k_t = k.t()?;
        // A block of query rows at a time: SigLIP at 896 px has 4096 patches.
        let mut outputs = Vec::new();
        for (row0, rows) in query_blocks(len, self.heads, len) {
            let scores = q.narrow(2, row0, rows)?.matmul(&k_t)?;
            let probs = scaled_masked_softmax(&scores, scale, None)?;
            outputs.push(probs.matmul(&v)?);
        }
        let out = Tensor::cat(&outputs, 2)?
            .transpose(1, 2)?
            .reshape((batch, len, dim))?;
        self.out_proj.forward(&out)
    }
}

/// Whether a CLIP / SigLIP `hidden_act` is one the encoder layers implement.
pub fn supports_activation(name: &str) -> bool {
    Activation::parse(name).is_ok()
}

/// The MLP activation of a CLIP / SigLIP encoder layer (`hidden_act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Activation {
    QuickGelu,
    GeluErf,
    GeluTanh,
}

impl Activation {
    fn parse(name: &str) -> Result<Activation> {
        match name {
            "quick_gelu" => Ok(Activation::QuickGelu),
            "gelu" => Ok(Activation::GeluErf),
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Ok(Activation::GeluTanh),
            other => candle_core::bail!("vision hidden_act {other:?} is not supported"),
        }
    }
}

/// One pre-norm encoder layer of CLIP and SigLIP (same names, same shape).
#[derive(Clone, Debug)]
pub(super) struct ClipLayer {
    self_attn: ClipAttention,
    layer_norm1: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    layer_norm2: LayerNorm,
    activation: Activation,
}

impl ClipLayer {
    pub(super) fn new(cfg: &VisionConfig, vb: VarBuilder, plan: &LoadPlan) -> Result<Self> {
        Ok(ClipLayer {
            self_attn: ClipAttention::new(cfg, vb.pp("self_attn"), plan)?,
            layer_norm1: layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("layer_norm1"))?,
            fc1: Linear::load(
                cfg.hidden_size,
                cfg.intermediate_size,
                true,
                vb.pp("mlp").pp("fc1"),
                plan,
            )?,
            fc2: Linear::load(
                cfg.intermediate_size,
                cfg.hidden_size,
                true,
                vb.pp("mlp").pp("fc2"),
                plan,
            )?,
            layer_norm2: layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("layer_norm2"))?,
            activation: Activation::parse(&cfg.hidden_act)?,
        })
    }

    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let attended = self.self_attn.forward(&self.layer_norm1.forward(x)?)?;
        let x = (x + attended)?;
        let hidden = self.fc1.forward(&self.layer_norm2.forward(&x)?)?;
        let hidden = match self.activation {
            Activation::QuickGelu => (&hidden * candle_nn::ops::sigmoid(&(&hidden * 1.702)?)?)?,
            Activation::GeluErf => hidden.gelu_erf()?,
            Activation::GeluTanh => hidden.gelu()?,
        };
        x + self.fc2.forward(&hidden)?
    }
}

/// The patch embedding (a Conv2d with kernel = stride = patch) under `embeddings`; SigLIP's has
/// a bias, CLIP's none.
pub(super) fn patch_embedding(
    cfg: &VisionConfig,
    embeddings: &VarBuilder,
    bias: bool,
) -> Result<candle_nn::Conv2d> {
    let conv = Conv2dConfig {
        stride: cfg.patch_size,
        ..Default::default()
    };
    let build = if bias { conv2d } else { conv2d_no_bias };
    build(
        cfg.num_channels,
        cfg.hidden_size,
        cfg.patch_size,
        conv,
        embeddings.pp("patch_embedding"),
    )
}

/// The first `total` encoder layers under `encoder.layers`, each reported to the plan.
pub(super) fn encoder_layers(
    cfg: &VisionConfig,
    vb: &VarBuilder,
    plan: &LoadPlan,
    total: usize,
) -> Result<Vec<ClipLayer>> {
    (0..total)
        .map(|i| {
            let layer = ClipLayer::new(cfg, vb.pp("encoder").pp("layers").pp(i), plan)?;
            plan.report("vision layers", i + 1, total)?;
            Ok(layer)
        })
        .collect()
}

/// CLIP vision tower truncated at the feature layer.
#[derive(Clone, Debug)]
pub struct VisionTower {
    patch_embedding: candle_nn::Conv2d,
    class_embedding: Tensor,
    position_embedding: Embedding,
    pre_layrnorm: LayerNorm,
    layers: Vec<ClipLayer>,
    pub cfg: VisionConfig,
}

impl VisionTower {
    /// `vb` points at the tower root (where `embeddings`, `pre_layrnorm`, `encoder` live). The
    /// tower is never quantized: its linear layers stay at storage precision.
    pub fn new(
        cfg: &VisionConfig,
        feature_layer: i64,
        vb: VarBuilder,
        plan: &LoadPlan,
    ) -> Result<Self> {
        let plan = &plan.unquantized();
        let embeddings = vb.pp("embeddings");
        let patch_embedding = patch_embedding(cfg, &embeddings, false)?;
        let class_embedding = embeddings.get(cfg.hidden_size, "class_embedding")?;
        let positions = cfg.grid_side() * cfg.grid_side() + 1;
        let position_embedding = embedding(
            positions,
            cfg.hidden_size,
            embeddings.pp("position_embedding"),
        )?;
        let pre_layrnorm = layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("pre_layrnorm"))?;
        let layers = encoder_layers(cfg, &vb, plan, cfg.layers_to_run(feature_layer))?;
        Ok(VisionTower {
            patch_embedding,
            class_embedding,
            position_embedding,
            pre_layrnorm,
            layers,
            cfg: cfg.clone(),
        })
    }

    /// `pixel_values` (1, 3, S, S) -> features of the patch tokens (N, D), CLS dropped.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let patches = self.patch_embedding.forward(pixel_values)?; // (1, D, g, g)
        let patches = patches.flatten_from(2)?.transpose(1, 2)?; // (1, N, D)
        let class = self.class_embedding.reshape((1, 1, self.cfg.hidden_size))?;
        let tokens = Tensor::cat(&[&class, &patches], 1)?;
        let positions = Tensor::arange(0u32, tokens.dim(1)? as u32, tokens.device())?;
        let mut x = tokens.broadcast_add(&self.position_embedding.forward(&positions)?)?;
        x = self.pre_layrnorm.forward(&x)?;
        for layer in &self.layers {
            x = layer.forward(&x)?;
        }
        x.i((0, 1..))
    }
}

/// LLaVA's `mlp2x_gelu` projector: linear, exact (erf) GELU, linear.
#[derive(Clone, Debug)]
pub struct Projector {
    linear_1: Linear,
    linear_2: Linear,
}

impl Projector {
    /// `first` and `second` point at the two linear layers (`linear_1`/`linear_2` in llava-hf,
    /// `mm_projector.0`/`mm_projector.2` in original LLaVA).
    pub fn new(
        vision_dim: usize,
        text_dim: usize,
        first: VarBuilder,
        second: VarBuilder,
        plan: &LoadPlan,
    ) -> Result<Self> {
        let plan = &plan.unquantized();
        Ok(Projector {
            linear_1: Linear::load(vision_dim, text_dim, true, first, plan)?,
            linear_2: Linear::load(text_dim, text_dim, true, second, plan)?,
        })
    }

    pub fn forward(&self, features: &Tensor) -> Result<Tensor> {
        self.linear_2
            .forward(&self.linear_1.forward(features)?.gelu_erf()?)
    }
}

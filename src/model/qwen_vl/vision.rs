//! The Qwen-VL vision config (both generations) and the Qwen2.5-VL vision transformer,
//! numerically transformers'
//! `Qwen2_5_VisionTransformerPretrainedModel` in eager f32:
//! - patch embedding: a Conv3d with kernel = stride = (temporal, patch, patch) and no bias,
//!   which on the processor's flattened patches is one linear map;
//! - 2-D rotary embedding over (row, col) of each patch (`head_dim / 4` frequencies per axis,
//!   rotate-half over the whole head);
//! - blocks of RMSNorm, attention (fused qkv with bias) and a SwiGLU MLP with bias. Blocks in
//!   `fullatt_block_indexes` attend over the whole image; the others inside windows of
//!   `window_size` pixels (`window_size / merge / patch` merged tokens a side; windows at the
//!   right and bottom edges are smaller);
//! - `PatchMerger`: RMSNorm, 2 x 2 neighbouring patches concatenated, linear, exact GELU,
//!   linear, to the decoder's width. Tokens come out row-major over the merged grid.
//!
//! transformers reorders the patches window by window before the blocks and undoes it after
//! the merger; fovea does the same, so every window is one contiguous range.
//!
//! Qwen3-VL's tower (`vision3.rs`) shares the config, the patch embedding, the 2-D rotary
//! tables and the attention of this file.

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::{rms_norm, RmsNorm, VarBuilder};
use serde_json::Value;

use crate::model::attention::query_blocks;
use crate::model::linear::{Linear, LoadPlan};
use crate::model::softmax::scaled_masked_softmax;

/// Which generation of the Qwen-VL vision tower.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum QwenVisionKind {
    /// Qwen2.5-VL: RMSNorm, SwiGLU, window attention, one merger.
    Qwen25,
    /// Qwen3-VL: LayerNorm, GELU MLP, learned position embedding interpolated to the grid,
    /// full attention everywhere, DeepStack mergers.
    Qwen3,
}

/// `vision_config` of a Qwen-VL checkpoint, with transformers' defaults for missing keys.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct QwenVisionConfig {
    pub kind: QwenVisionKind,
    pub depth: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_heads: usize,
    pub in_channels: usize,
    pub out_hidden_size: usize,
    pub patch_size: usize,
    pub spatial_merge_size: usize,
    pub temporal_patch_size: usize,
    pub window_size: usize,
    pub fullatt_block_indexes: Vec<usize>,
    pub hidden_act: String,
    pub rope_theta: f64,
    /// Qwen3-VL: entries of the learned square position table (48 x 48 = 2304).
    pub num_position_embeddings: usize,
    /// Qwen3-VL: blocks whose output feeds a DeepStack merger (one decoder layer each).
    pub deepstack_visual_indexes: Vec<usize>,
}

impl QwenVisionConfig {
    /// Parse `vision_config` (both the hub's `in_chans` and transformers 5's `in_channels`),
    /// with the defaults of `Qwen2_5_VLVisionConfig` or `Qwen3VLVisionConfig`.
    pub fn from_json(obj: &Value, kind: QwenVisionKind) -> std::result::Result<Self, String> {
        let get = |key: &str, default: usize| -> usize {
            obj.get(key)
                .and_then(Value::as_u64)
                .map_or(default, |v| v as usize)
        };
        let list = |key: &str, default: &[usize]| -> Vec<usize> {
            match obj.get(key) {
                Some(Value::Array(list)) => list
                    .iter()
                    .filter_map(Value::as_u64)
                    .map(|v| v as usize)
                    .collect(),
                _ => default.to_vec(),
            }
        };
        let v3 = kind == QwenVisionKind::Qwen3;
        let cfg = QwenVisionConfig {
            kind,
            depth: get("depth", if v3 { 27 } else { 32 }),
            hidden_size: get("hidden_size", if v3 { 1152 } else { 3584 }),
            intermediate_size: get("intermediate_size", if v3 { 4304 } else { 3420 }),
            num_heads: obj
                .get("num_heads")
                .or_else(|| obj.get("num_attention_heads"))
                .and_then(Value::as_u64)
                .map_or(16, |v| v as usize),
            in_channels: obj
                .get("in_channels")
                .or_else(|| obj.get("in_chans"))
                .and_then(Value::as_u64)
                .map_or(3, |v| v as usize),
            out_hidden_size: get("out_hidden_size", 3584),
            patch_size: get("patch_size", if v3 { 16 } else { 14 }),
            spatial_merge_size: get("spatial_merge_size", 2),
            temporal_patch_size: get("temporal_patch_size", 2),
            window_size: if v3 { 0 } else { get("window_size", 112) },
            fullatt_block_indexes: if v3 {
                Vec::new()
            } else {
                list("fullatt_block_indexes", &[7, 15, 23, 31])
            },
            hidden_act: obj
                .get("hidden_act")
                .and_then(Value::as_str)
                .unwrap_or(if v3 { "gelu_pytorch_tanh" } else { "silu" })
                .to_string(),
            rope_theta: obj
                .get("rope_parameters")
                .and_then(|p| p.get("rope_theta"))
                .or_else(|| obj.get("rope_theta"))
                .and_then(Value::as_f64)
                .unwrap_or(10000.0),
            num_position_embeddings: if v3 {
                get("num_position_embeddings", 2304)
            } else {
                0
            },
            deepstack_visual_indexes: if v3 {
                list("deepstack_visual_indexes", &[8, 16, 24])
            } else {
                Vec::new()
            },
        };
        if cfg.num_heads == 0 || cfg.hidden_size % cfg.num_heads != 0 {
            return Err(format!(
                "vision hidden_size {} does not split into {} heads",
                cfg.hidden_size, cfg.num_heads
            ));
        }
        if (cfg.hidden_size / cfg.num_heads) % 4 != 0 {
            return Err(format!(
                "vision head size {} must be a multiple of 4 for the 2-D rotary embedding",
                cfg.hidden_size / cfg.num_heads
            ));
        }
        match kind {
            QwenVisionKind::Qwen25 => {
                if cfg.window_size / cfg.spatial_merge_size / cfg.patch_size == 0 {
                    return Err(format!(
                        "window_size {} is smaller than one merged token ({} px)",
                        cfg.window_size,
                        cfg.spatial_merge_size * cfg.patch_size
                    ));
                }
                if cfg.hidden_act != "silu" {
                    return Err(format!(
                        "vision_config.hidden_act = {:?} is not implemented (the vision MLP's activation; fovea implements \"silu\" for Qwen2.5-VL)",
                        cfg.hidden_act
                    ));
                }
            }
            QwenVisionKind::Qwen3 => {
                let side = cfg.position_side();
                if side == 0 || side * side != cfg.num_position_embeddings {
                    return Err(format!(
                        "num_position_embeddings {} is not the square of a grid side",
                        cfg.num_position_embeddings
                    ));
                }
                if let Some(&bad) = cfg
                    .deepstack_visual_indexes
                    .iter()
                    .find(|&&i| i >= cfg.depth)
                {
                    return Err(format!(
                        "deepstack_visual_indexes names block {bad}, the tower has {} blocks",
                        cfg.depth
                    ));
                }
                if !matches!(cfg.hidden_act.as_str(), "gelu_pytorch_tanh" | "gelu") {
                    return Err(format!(
                        "vision_config.hidden_act = {:?} is not implemented (the vision MLP's activation; fovea implements \"gelu_pytorch_tanh\" and \"gelu\" for Qwen3-VL)",
                        cfg.hidden_act
                    ));
                }
            }
        }
        Ok(cfg)
    }

    /// Qwen3-VL: the side of the square learned position table.
    pub fn position_side(&self) -> usize {
        (self.num_position_embeddings as f64).sqrt().round() as usize
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    pub fn patch_dim(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }

    /// Multiply-adds x 2 for an image of `patches` patches (attention counted over windows
    /// in windowed blocks; Qwen3-VL's DeepStack mergers included).
    pub fn flops(&self, patches: usize) -> f64 {
        let (t, d, i) = (
            patches as f64,
            self.hidden_size as f64,
            self.intermediate_size as f64,
        );
        let attention = |keys: f64| 4.0 * t * keys * d;
        let merged = t / (self.spatial_merge_size.pow(2) as f64);
        let width = d * self.spatial_merge_size.pow(2) as f64;
        let merger = 2.0 * merged * width * (width + self.out_hidden_size as f64);
        let embed = 2.0 * t * d * self.patch_dim() as f64;
        match self.kind {
            QwenVisionKind::Qwen25 => {
                let window = ((self.window_size / self.patch_size).pow(2) as f64).min(t);
                let full = self.fullatt_block_indexes.len() as f64;
                let windowed = self.depth as f64 - full;
                let dense = 2.0 * t * (4.0 * d * d + 3.0 * d * i);
                embed
                    + self.depth as f64 * dense
                    + full * attention(t)
                    + windowed * attention(window)
                    + merger
            }
            QwenVisionKind::Qwen3 => {
                let dense = 2.0 * t * (4.0 * d * d + 2.0 * d * i);
                let mergers = 1.0 + self.deepstack_visual_indexes.len() as f64;
                embed + self.depth as f64 * (dense + attention(t)) + mergers * merger
            }
        }
    }
}

/// Window order of the merged tokens and each window's length in merged tokens, as
/// transformers' `get_vision_window_index` for one image (grid_t = 1).
pub fn window_index(rows: usize, cols: usize, side: usize) -> (Vec<usize>, Vec<usize>) {
    let mut order = Vec::with_capacity(rows * cols);
    let mut lengths = Vec::new();
    for window_row in 0..rows.div_ceil(side) {
        for window_col in 0..cols.div_ceil(side) {
            let before = order.len();
            for row in window_row * side..((window_row + 1) * side).min(rows) {
                for col in window_col * side..((window_col + 1) * side).min(cols) {
                    order.push(row * cols + col);
                }
            }
            lengths.push(order.len() - before);
        }
    }
    (order, lengths)
}

#[derive(Clone, Debug)]
struct Block {
    norm1: RmsNorm,
    norm2: RmsNorm,
    qkv: Linear,
    proj: Linear,
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Block {
    fn new(cfg: &QwenVisionConfig, vb: VarBuilder, plan: &LoadPlan) -> Result<Self> {
        let (d, i) = (cfg.hidden_size, cfg.intermediate_size);
        let attn = vb.pp("attn");
        let mlp = vb.pp("mlp");
        Ok(Block {
            norm1: rms_norm(d, 1e-6, vb.pp("norm1"))?,
            norm2: rms_norm(d, 1e-6, vb.pp("norm2"))?,
            qkv: Linear::load(d, 3 * d, true, attn.pp("qkv"), plan)?,
            proj: Linear::load(d, d, true, attn.pp("proj"), plan)?,
            gate_proj: Linear::load(d, i, true, mlp.pp("gate_proj"), plan)?,
            up_proj: Linear::load(d, i, true, mlp.pp("up_proj"), plan)?,
            down_proj: Linear::load(i, d, true, mlp.pp("down_proj"), plan)?,
        })
    }

    /// `x` (T, D) in window order; `segments` the contiguous ranges that attend together.
    fn forward(
        &self,
        x: &Tensor,
        heads: usize,
        rope: (&Tensor, &Tensor),
        segments: &[(usize, usize)],
    ) -> Result<Tensor> {
        let attended = attend(&self.qkv, &self.norm1.forward(x)?, heads, rope, segments)?;
        let x = (x + self.proj.forward(&attended)?)?;
        let normed = self.norm2.forward(&x)?;
        let gate = candle_nn::ops::silu(&self.gate_proj.forward(&normed)?)?;
        let hidden = (gate * self.up_proj.forward(&normed)?)?;
        x + self.down_proj.forward(&hidden)?
    }
}

/// Bidirectional attention of the ViT: fused `qkv` on `normed` (T, D), the 2-D rotation on
/// queries and keys, softmax inside each `(start, length)` segment; (T, D) before `proj`.
pub(super) fn attend(
    qkv: &Linear,
    normed: &Tensor,
    heads: usize,
    rope: (&Tensor, &Tensor),
    segments: &[(usize, usize)],
) -> Result<Tensor> {
    let (len, dim) = normed.dims2()?;
    let head_dim = dim / heads;
    let qkv = qkv
        .forward(normed)?
        .reshape((len, 3, heads, head_dim))?
        .permute((1, 2, 0, 3))?; // (3, H, T, hd)
    let part = |i: usize| -> Result<Tensor> { qkv.get(i)?.unsqueeze(0)?.contiguous() };
    let q = candle_nn::rotary_emb::rope(&part(0)?, rope.0, rope.1)?;
    let k = candle_nn::rotary_emb::rope(&part(1)?, rope.0, rope.1)?;
    let v = part(2)?;
    let scale = (head_dim as f64).powf(-0.5);
    let mut outputs = Vec::with_capacity(segments.len());
    for &(start, length) in segments {
        let k_t = k.narrow(2, start, length)?.t()?;
        let v = v.narrow(2, start, length)?;
        // A full-attention block over a large image (65k patches at 12.8 M pixels) is done a
        // block of query rows at a time.
        for (row0, rows) in query_blocks(length, heads, length) {
            let q = q.narrow(2, start + row0, rows)?;
            let scores = q.matmul(&k_t)?;
            let probs = scaled_masked_softmax(&scores, scale, None)?;
            outputs.push(probs.matmul(&v)?);
        }
    }
    Tensor::cat(&outputs, 2)?
        .squeeze(0)?
        .transpose(0, 1)?
        .reshape((len, dim))
}

/// The patch embedding (a Conv3d with kernel = stride) as the linear map it is on flattened
/// patches; `bias` for Qwen3-VL.
pub(super) fn load_patch_embed(
    cfg: &QwenVisionConfig,
    vb: &VarBuilder,
    plan: &LoadPlan,
    bias: bool,
) -> Result<Linear> {
    let d = cfg.hidden_size;
    let patch_vb = vb.pp("patch_embed").pp("proj");
    let shape = (
        d,
        cfg.in_channels,
        cfg.temporal_patch_size,
        cfg.patch_size,
        cfg.patch_size,
    );
    let weight = match &plan.files {
        Some(files) => {
            let name = format!("{}.weight", patch_vb.prefix());
            let weight = files.load(&name, vb.device())?;
            if weight.dims() != [shape.0, shape.1, shape.2, shape.3, shape.4] {
                candle_core::bail!(
                    "tensor {name} has shape {:?}, the config implies {shape:?}",
                    weight.dims()
                );
            }
            weight
        }
        None => patch_vb.get(shape, "weight")?,
    };
    let bias = if bias {
        Some(patch_vb.get(d, "bias")?)
    } else {
        None
    };
    Linear::from_weight(weight.reshape((d, cfg.patch_dim()))?, bias)
}

/// The 2-D rotary frequencies of a head of `head_dim`: `head_dim / 4` per axis.
pub(super) fn rope_inv_freq(cfg: &QwenVisionConfig) -> Vec<f32> {
    let spatial = cfg.head_dim() / 2;
    (0..spatial / 2)
        .map(|i| 1.0 / (cfg.rope_theta as f32).powf((2 * i) as f32 / spatial as f32))
        .collect()
}

/// cos and sin (patches, head_dim / 2) for a `grid_h x grid_w` patch grid in merge-block
/// order: each patch's row frequencies, then its column frequencies.
pub(super) fn rope_tables(
    inv_freq: &[f32],
    merge: usize,
    grid_h: usize,
    grid_w: usize,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let m = merge;
    let half = inv_freq.len() * 2;
    let mut cos = Vec::with_capacity(grid_h * grid_w * half);
    let mut sin = Vec::with_capacity(grid_h * grid_w * half);
    for block_row in 0..grid_h / m {
        for block_col in 0..grid_w / m {
            for i in 0..m {
                for j in 0..m {
                    let (row, col) = ((block_row * m + i) as f32, (block_col * m + j) as f32);
                    for position in [row, col] {
                        for &freq in inv_freq {
                            let angle = position * freq;
                            cos.push(angle.cos());
                            sin.push(angle.sin());
                        }
                    }
                }
            }
        }
    }
    let n = grid_h * grid_w;
    Ok((
        Tensor::from_vec(cos, (n, half), device)?,
        Tensor::from_vec(sin, (n, half), device)?,
    ))
}

/// Check that `patches` make a `grid_h x grid_w` grid of whole merge blocks.
pub(super) fn check_grid(patches: &Tensor, grid_h: usize, grid_w: usize, m: usize) -> Result<()> {
    if grid_h % m != 0 || grid_w % m != 0 || patches.dim(0)? != grid_h * grid_w {
        candle_core::bail!(
            "{} patches do not make a {grid_h} x {grid_w} grid of {m} x {m} blocks",
            patches.dim(0)?
        );
    }
    Ok(())
}

/// The ViT and its merger: patches in, one feature per merged token out (row-major).
#[derive(Clone, Debug)]
pub struct QwenVision {
    patch_embed: Linear,
    blocks: Vec<Block>,
    ln_q: RmsNorm,
    merger_fc1: Linear,
    merger_fc2: Linear,
    inv_freq: Vec<f32>,
    pub cfg: QwenVisionConfig,
}

impl QwenVision {
    /// `vb` points at the tower (`visual` or `model.visual`). Never quantized.
    pub fn new(cfg: &QwenVisionConfig, vb: VarBuilder, plan: &LoadPlan) -> Result<Self> {
        let plan = &plan.unquantized();
        let d = cfg.hidden_size;
        let patch_embed = load_patch_embed(cfg, &vb, plan, false)?;
        let blocks = (0..cfg.depth)
            .map(|i| {
                let block = Block::new(cfg, vb.pp("blocks").pp(i), plan)?;
                plan.report("vision blocks", i + 1, cfg.depth)?;
                Ok(block)
            })
            .collect::<Result<Vec<_>>>()?;
        let merger = vb.pp("merger");
        let width = d * cfg.spatial_merge_size * cfg.spatial_merge_size;
        let mlp = merger.pp("mlp");
        let inv_freq = rope_inv_freq(cfg);
        Ok(QwenVision {
            patch_embed,
            blocks,
            ln_q: rms_norm(d, 1e-6, merger.pp("ln_q"))?,
            merger_fc1: Linear::load(width, width, true, mlp.pp("0"), plan)?,
            merger_fc2: Linear::load(width, cfg.out_hidden_size, true, mlp.pp("2"), plan)?,
            inv_freq,
            cfg: cfg.clone(),
        })
    }

    /// `patches` (grid_h x grid_w, patch_dim) in merge-block order -> (rows x cols, out) with
    /// rows = grid_h / merge, cols = grid_w / merge, row-major.
    pub fn forward(&self, patches: &Tensor, grid_h: usize, grid_w: usize) -> Result<Tensor> {
        let cfg = &self.cfg;
        let m = cfg.spatial_merge_size;
        let unit = m * m;
        check_grid(patches, grid_h, grid_w, m)?;
        let (rows, cols) = (grid_h / m, grid_w / m);
        let side = cfg.window_size / m / cfg.patch_size;
        let (order, lengths) = window_index(rows, cols, side);
        let device = patches.device();
        let patch_order: Vec<u32> = order
            .iter()
            .flat_map(|&t| (0..unit).map(move |k| (t * unit + k) as u32))
            .collect();
        let patch_order = Tensor::from_vec(patch_order, grid_h * grid_w, device)?;

        let x = self.patch_embed.forward(patches)?;
        let mut x = x.index_select(&patch_order, 0)?;
        let (cos, sin) = rope_tables(&self.inv_freq, m, grid_h, grid_w, device)?;
        let (cos, sin) = (
            cos.index_select(&patch_order, 0)?,
            sin.index_select(&patch_order, 0)?,
        );
        let mut windows = Vec::with_capacity(lengths.len());
        let mut start = 0;
        for &length in &lengths {
            windows.push((start, length * unit));
            start += length * unit;
        }
        let whole = [(0, grid_h * grid_w)];
        for (index, block) in self.blocks.iter().enumerate() {
            let segments: &[(usize, usize)] = if cfg.fullatt_block_indexes.contains(&index) {
                &whole
            } else {
                &windows
            };
            x = block.forward(&x, cfg.num_heads, (&cos, &sin), segments)?;
        }
        let width = cfg.hidden_size * unit;
        let merged = self.ln_q.forward(&x)?.reshape((rows * cols, width))?;
        let merged = self
            .merger_fc2
            .forward(&self.merger_fc1.forward(&merged)?.gelu_erf()?)?;
        let mut inverse = vec![0u32; order.len()];
        for (position, &token) in order.iter().enumerate() {
            inverse[token] = position as u32;
        }
        let inverse = Tensor::from_vec(inverse, rows * cols, device)?;
        merged.index_select(&inverse, 0)?.contiguous()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_grid_row_major_inside_each_window() {
        // 4 x 7 merged tokens, windows of 2: 2 x 4 windows, the last column 1 wide.
        let (order, lengths) = window_index(4, 7, 2);
        assert_eq!(lengths, vec![4, 4, 4, 2, 4, 4, 4, 2]);
        assert_eq!(&order[..4], &[0, 1, 7, 8]);
        assert_eq!(&order[12..14], &[6, 13]);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..28).collect::<Vec<_>>());
    }
}

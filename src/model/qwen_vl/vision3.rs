//! The Qwen3-VL vision transformer, numerically transformers' `Qwen3VLVisionModel` in eager
//! f32:
//! - patch embedding: a Conv3d with kernel = stride = (temporal, patch, patch) and a bias (a
//!   linear map on the processor's flattened patches);
//! - a learned square table of position embeddings (`num_position_embeddings`, 48 x 48 in the
//!   published models) resampled to each image's patch grid by bilinear interpolation with
//!   aligned corners, and added to the patch embeddings;
//! - the same 2-D rotary embedding as Qwen2.5-VL;
//! - blocks of LayerNorm, full attention over the whole image (fused qkv with bias) and a
//!   GELU MLP (`linear_fc1`, tanh-approximated GELU, `linear_fc2`);
//! - `merger`: LayerNorm, 2 x 2 neighbouring patches concatenated, linear, exact GELU, linear;
//! - DeepStack: after each block in `deepstack_visual_indexes`, a merger of its own (the norm
//!   after the 2 x 2 concatenation) turns that block's output into one more feature per image
//!   token; the decoder adds feature i to the image positions' hidden states after layer i.
//!
//! Patches arrive in merge-block order, so the merged tokens come out row-major.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{layer_norm, LayerNorm, VarBuilder};

use super::vision::{
    attend, check_grid, load_patch_embed, rope_inv_freq, rope_tables, QwenVisionConfig,
};
use crate::model::linear::{Linear, LoadPlan};

/// Per patch (merge-block order), the four table entries and bilinear weights that resample
/// a `side x side` table to a `grid_h x grid_w` grid, as transformers'
/// `get_vision_interpolation_indices_and_weights(mode="bilinear", align_corners=True)`.
pub fn interpolation_taps(
    side: usize,
    merge: usize,
    grid_h: usize,
    grid_w: usize,
) -> (Vec<u32>, Vec<f32>) {
    // One axis: source coordinate index * (side - 1) / (size - 1) in f32, taps floor and
    // floor + 1 clamped to the table, hat-kernel weights.
    let axis = |index: usize, size: usize| -> [(u32, f32); 2] {
        let src = index as f32 * (side as f32 - 1.0) / ((size.max(2) - 1) as f32);
        let floor = src.floor();
        let mut taps = [(0u32, 0f32); 2];
        for (k, tap) in taps.iter_mut().enumerate() {
            let raw = floor + k as f32;
            let weight = (1.0 - (src - raw).abs()).max(0.0);
            let clamped = (raw as i64).clamp(0, side as i64 - 1) as u32;
            *tap = (clamped, weight);
        }
        taps
    };
    let mut indices = Vec::with_capacity(grid_h * grid_w * 4);
    let mut weights = Vec::with_capacity(grid_h * grid_w * 4);
    for block_row in 0..grid_h / merge {
        for block_col in 0..grid_w / merge {
            for i in 0..merge {
                for j in 0..merge {
                    let rows = axis(block_row * merge + i, grid_h);
                    let cols = axis(block_col * merge + j, grid_w);
                    for &(r, wr) in &rows {
                        for &(c, wc) in &cols {
                            indices.push(r * side as u32 + c);
                            weights.push(wr * wc);
                        }
                    }
                }
            }
        }
    }
    (indices, weights)
}

#[derive(Clone, Debug)]
struct Block {
    norm1: LayerNorm,
    norm2: LayerNorm,
    qkv: Linear,
    proj: Linear,
    fc1: Linear,
    fc2: Linear,
    tanh_gelu: bool,
}

impl Block {
    fn new(cfg: &QwenVisionConfig, vb: VarBuilder, plan: &LoadPlan) -> Result<Self> {
        let (d, i) = (cfg.hidden_size, cfg.intermediate_size);
        let attn = vb.pp("attn");
        let mlp = vb.pp("mlp");
        Ok(Block {
            norm1: layer_norm(d, 1e-6, vb.pp("norm1"))?,
            norm2: layer_norm(d, 1e-6, vb.pp("norm2"))?,
            qkv: Linear::load(d, 3 * d, true, attn.pp("qkv"), plan)?,
            proj: Linear::load(d, d, true, attn.pp("proj"), plan)?,
            fc1: Linear::load(d, i, true, mlp.pp("linear_fc1"), plan)?,
            fc2: Linear::load(i, d, true, mlp.pp("linear_fc2"), plan)?,
            tanh_gelu: cfg.hidden_act == "gelu_pytorch_tanh",
        })
    }

    fn forward(&self, x: &Tensor, heads: usize, rope: (&Tensor, &Tensor)) -> Result<Tensor> {
        let len = x.dim(0)?;
        let attended = attend(&self.qkv, &self.norm1.forward(x)?, heads, rope, &[(0, len)])?;
        let x = (x + self.proj.forward(&attended)?)?;
        let hidden = self.fc1.forward(&self.norm2.forward(&x)?)?;
        let hidden = if self.tanh_gelu {
            hidden.gelu()?
        } else {
            hidden.gelu_erf()?
        };
        x + self.fc2.forward(&hidden)?
    }
}

/// `Qwen3VLVisionPatchMerger`: the norm before (main merger) or after (DeepStack) the 2 x 2
/// concatenation, then linear, exact GELU, linear.
#[derive(Clone, Debug)]
struct Merger {
    norm: LayerNorm,
    postshuffle: bool,
    fc1: Linear,
    fc2: Linear,
    width: usize,
}

impl Merger {
    fn new(
        cfg: &QwenVisionConfig,
        postshuffle: bool,
        vb: VarBuilder,
        plan: &LoadPlan,
    ) -> Result<Self> {
        let width = cfg.hidden_size * cfg.spatial_merge_size * cfg.spatial_merge_size;
        let norm_width = if postshuffle { width } else { cfg.hidden_size };
        Ok(Merger {
            norm: layer_norm(norm_width, 1e-6, vb.pp("norm"))?,
            postshuffle,
            fc1: Linear::load(width, width, true, vb.pp("linear_fc1"), plan)?,
            fc2: Linear::load(width, cfg.out_hidden_size, true, vb.pp("linear_fc2"), plan)?,
            width,
        })
    }

    /// (patches, D) in merge-block order -> (tokens, out).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let tokens = x.dim(0)? * x.dim(1)? / self.width;
        let x = if self.postshuffle {
            self.norm.forward(&x.reshape((tokens, self.width))?)?
        } else {
            self.norm.forward(x)?.reshape((tokens, self.width))?
        };
        self.fc2.forward(&self.fc1.forward(&x)?.gelu_erf()?)
    }
}

/// What the Qwen3-VL tower gives for one image: the image tokens' input embeddings and the
/// DeepStack features, each (rows x cols, out), row-major.
#[derive(Clone, Debug)]
pub struct Qwen3VisionOutput {
    pub tokens: Tensor,
    pub deepstack: Vec<Tensor>,
}

/// The Qwen3-VL ViT with its mergers.
#[derive(Clone, Debug)]
pub struct Qwen3Vision {
    patch_embed: Linear,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    merger: Merger,
    deepstack: Vec<(usize, Merger)>,
    inv_freq: Vec<f32>,
    pub cfg: QwenVisionConfig,
}

impl Qwen3Vision {
    /// `vb` points at the tower (`model.visual` or `visual`). Never quantized.
    pub fn new(cfg: &QwenVisionConfig, vb: VarBuilder, plan: &LoadPlan) -> Result<Self> {
        let plan = &plan.unquantized();
        let patch_embed = load_patch_embed(cfg, &vb, plan, true)?;
        let pos_embed = vb
            .pp("pos_embed")
            .get((cfg.num_position_embeddings, cfg.hidden_size), "weight")?
            .to_dtype(DType::F32)?;
        let blocks = (0..cfg.depth)
            .map(|i| {
                let block = Block::new(cfg, vb.pp("blocks").pp(i), plan)?;
                plan.report("vision blocks", i + 1, cfg.depth)?;
                Ok(block)
            })
            .collect::<Result<Vec<_>>>()?;
        let merger = Merger::new(cfg, false, vb.pp("merger"), plan)?;
        let deepstack = cfg
            .deepstack_visual_indexes
            .iter()
            .enumerate()
            .map(|(k, &block)| {
                let vb = vb.pp("deepstack_merger_list").pp(k);
                Ok((block, Merger::new(cfg, true, vb, plan)?))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Qwen3Vision {
            patch_embed,
            pos_embed,
            blocks,
            merger,
            deepstack,
            inv_freq: rope_inv_freq(cfg),
            cfg: cfg.clone(),
        })
    }

    /// The learned position embeddings resampled to the grid, (patches, D) in merge-block
    /// order.
    pub fn positions(&self, grid_h: usize, grid_w: usize, device: &Device) -> Result<Tensor> {
        let side = self.cfg.position_side();
        let m = self.cfg.spatial_merge_size;
        let (indices, weights) = interpolation_taps(side, m, grid_h, grid_w);
        let patches = grid_h * grid_w;
        let indices = Tensor::from_vec(indices, patches * 4, device)?;
        let weights = Tensor::from_vec(weights, (patches, 4, 1), device)?;
        let table = self.pos_embed.to_device(device)?;
        table
            .index_select(&indices, 0)?
            .reshape((patches, 4, self.cfg.hidden_size))?
            .broadcast_mul(&weights)?
            .sum(1)
    }

    /// `patches` (grid_h x grid_w, patch_dim) in merge-block order -> the image tokens and
    /// their DeepStack features.
    pub fn forward(
        &self,
        patches: &Tensor,
        grid_h: usize,
        grid_w: usize,
    ) -> Result<Qwen3VisionOutput> {
        let cfg = &self.cfg;
        let m = cfg.spatial_merge_size;
        check_grid(patches, grid_h, grid_w, m)?;
        let device = patches.device();
        let x = self.patch_embed.forward(patches)?;
        let mut x = (x + self.positions(grid_h, grid_w, device)?)?;
        let (cos, sin) = rope_tables(&self.inv_freq, m, grid_h, grid_w, device)?;
        let mut deepstack = Vec::with_capacity(self.deepstack.len());
        for (index, block) in self.blocks.iter().enumerate() {
            x = block.forward(&x, cfg.num_heads, (&cos, &sin))?;
            for (at, merger) in &self.deepstack {
                if *at == index {
                    deepstack.push(merger.forward(&x)?);
                }
            }
        }
        Ok(Qwen3VisionOutput {
            tokens: self.merger.forward(&x)?,
            deepstack,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_reproduces_the_table_on_its_own_grid_and_keeps_weights_normalised() {
        // On a grid the size of the table, every patch reads exactly its own entry.
        let (indices, weights) = interpolation_taps(4, 2, 4, 4);
        for p in 0..16 {
            let taps: Vec<(u32, f32)> = (0..4)
                .map(|k| (indices[p * 4 + k], weights[p * 4 + k]))
                .filter(|&(_, w)| w > 0.0)
                .collect();
            assert_eq!(taps.len(), 1, "patch {p}: {taps:?}");
            assert_eq!(taps[0].1, 1.0);
        }
        // Merge-block order: the second patch is (row 0, col 1), the third (row 1, col 0).
        assert_eq!(indices[4], 1);
        assert_eq!(indices[8], 4);
        // Up-sampled to 6 x 10: the weights of each patch sum to 1, the corners are exact.
        let (indices, weights) = interpolation_taps(4, 2, 6, 10);
        for p in 0..60 {
            let sum: f32 = weights[p * 4..p * 4 + 4].iter().sum();
            assert!((sum - 1.0).abs() < 1e-6, "patch {p}: {sum}");
        }
        // The last patch (row 5, col 9) is the table's last entry: 15.
        let last: Vec<u32> = (0..4)
            .filter(|&k| weights[59 * 4 + k] > 0.0)
            .map(|k| indices[59 * 4 + k])
            .collect();
        assert_eq!(last, vec![15]);
    }
}

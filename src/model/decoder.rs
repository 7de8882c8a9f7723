//! The language model of an MLLM: a LLaMA, Mistral, Qwen2 or Qwen3 decoder that can report
//! where its heads look and can be told not to look somewhere.
//!
//! candle-transformers' llama and qwen2 keep their attention probabilities and masks
//! private, so fovea has its own decoder, numerically the eager attention of HF
//! transformers (`LlamaForCausalLM`, `MistralForCausalLM`, `Qwen2ForCausalLM`: rotate-half
//! RoPE, GQA with head j reading KV head j / (H / KV), RMSNorm, SwiGLU, Qwen2's q/k/v bias,
//! Qwen3's per-head q/k RMSNorm before the rotation). Qwen3-VL's DeepStack (vision features
//! added to the image positions' hidden states after the first layers) is an input of the
//! forward pass ([`Deepstack`]).
//!
//! Two hooks make it an instrument rather than a black box:
//! - [`AttentionProbe`] keeps, per layer and head, the attention of chosen query rows (the last
//!   prompt token, or the mean over the question tokens) over the image span only: L x H x N
//!   floats, never L x H x T x T.
//! - [`EdgeMask`] forbids chosen (query, key) edges in chosen layers by adding a large negative
//!   value to the scores before the softmax, as the VGRefine reference does.
//!
//! The KV cache lives outside the model ([`Cache`]), so the model stays immutable and shared,
//! and one image's prefix cache can be reused by every prompt about that image.
//!
//! Long because one decoder serves the LLaMA, Mistral, Qwen2, Qwen3 and Gemma 3 families: their
//! differences are a few branches in shared code (norms, scales, rotary per layer, masks),
//! not five copies of it.

use super::attention::{attention_mask, probe_row_range, probe_rows, query_blocks, Visibility};
pub use super::attention::{set_score_block_elements, AttentionProbe, EdgeMask, Hooks, QueryRows};
use super::cache::WeightCache;
use super::embedding::Embedding;
use super::linear::{Linear, LoadPlan};
use super::rope::{Position, RopeAxes, Rotary};
use super::softmax::scaled_masked_softmax;
use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};
use candle_nn::{rms_norm, RmsNorm, VarBuilder};

/// Which decoder family; decides biases and defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum TextArch {
    Llama,
    Mistral,
    Qwen2,
    /// Qwen3 (the decoder of Qwen3-VL): RMSNorm on each query and key head, no biases.
    Qwen3,
    /// Gemma 3 (MedGemma): `1 + w` RMSNorms (four a layer, and q/k norms), scaled
    /// embeddings, GELU-tanh MLP, local sliding-window and global layers ([`GemmaText`]).
    Gemma3,
}

impl TextArch {
    pub fn name(self) -> &'static str {
        match self {
            TextArch::Llama => "llama",
            TextArch::Mistral => "mistral",
            TextArch::Qwen2 => "qwen2",
            TextArch::Qwen3 => "qwen3",
            TextArch::Gemma3 => "gemma3",
        }
    }
}

/// The fields of a HF text `config.json` the decoder needs (see `config.rs` for parsing).
#[derive(Clone, Debug, PartialEq)]
pub struct TextConfig {
    pub arch: TextArch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub attention_bias: bool,
    pub tie_word_embeddings: bool,
    /// Which position axis each rotary frequency reads (M-RoPE for Qwen-VL).
    pub rope: RopeAxes,
    /// Gemma 3's own settings (`None` for the other families).
    pub gemma: Option<GemmaText>,
}

/// What a Gemma 3 decoder reads beyond the LLaMA fields (transformers' `Gemma3TextConfig`).
#[derive(Clone, Debug, PartialEq)]
pub struct GemmaText {
    /// Scores are scaled by `query_pre_attn_scalar^-0.5`, not `head_dim^-0.5`.
    pub query_pre_attn_scalar: f64,
    /// A local layer's query at position p sees keys k with `k > p - sliding_window`.
    pub sliding_window: usize,
    /// Per layer: `true` for a local sliding-window layer, `false` for a global one.
    pub sliding: Vec<bool>,
    /// The local layers' rotary base (`rope_local_base_freq`); global layers use `rope_theta`.
    pub local_rope_theta: f64,
    /// The global layers' linear RoPE scaling factor (positions / factor); 1 when none.
    pub global_rope_factor: f64,
}

/// Per-layer keys and values of everything run so far. Cloning is cheap (tensors are shared),
/// and extending a clone never changes the original: a prefix cache stays valid.
///
/// Each layer keeps at most two segments: the first pass's keys and values (the shared image
/// prefix, never copied again) and everything run after it (a prompt's suffix and its answer,
/// grown by concatenation). Dozens of suffixes on one prefix then cost their own rows only.
#[derive(Clone, Debug)]
pub struct Cache {
    layers: Vec<Vec<(Tensor, Tensor)>>,
    len: usize,
    /// Rotary position of the next text token: `len` for 1-D RoPE; with M-RoPE, one past the
    /// largest position used so far (an image of r x c tokens advances it by max(r, c)).
    next_position: usize,
}

impl Cache {
    pub fn new(cfg: &TextConfig) -> Self {
        Cache {
            layers: vec![Vec::new(); cfg.num_hidden_layers],
            len: 0,
            next_position: 0,
        }
    }

    /// Number of positions already in the cache (the position of the next token).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Rotary position the next text token gets.
    pub fn next_position(&self) -> usize {
        self.next_position
    }
}

/// Add this pass's keys and values (1, KV, n, d) to a layer's segments: the first pass makes
/// the frozen first segment, later passes grow the second.
fn extend_segments(segments: &mut Vec<(Tensor, Tensor)>, k: Tensor, v: Tensor) -> Result<()> {
    if segments.len() < 2 {
        segments.push((k, v));
        return Ok(());
    }
    let (past_k, past_v) = segments.pop().expect("two segments");
    segments.push((
        Tensor::cat(&[&past_k, &k], 2)?,
        Tensor::cat(&[&past_v, &v], 2)?,
    ));
    Ok(())
}

/// One sequence's rows in a forward pass that may pack several (the batched suffixes of one
/// image): its rows, its own cache (usually a clone of a shared prefix cache), explicit
/// rotary positions where the family needs them, and its own instruments (probes, knockout).
pub struct GroupPass<'c, 'h> {
    pub len: usize,
    pub positions: Option<&'c [Position]>,
    pub cache: &'c mut Cache,
    pub hooks: Hooks<'h>,
}

/// Where one image's `len` tokens sit in a forward pass (from row `start` of the pass), and what
/// the family does with them there: Qwen3-VL adds DeepStack feature i (len, D) to their hidden
/// states after layer i; Gemma 3 lets them attend to each other both ways (transformers'
/// `token_type_ids` block mask), in every layer, local ones within the window.
#[derive(Clone, Copy, Debug)]
pub struct ImageRows<'a> {
    pub start: usize,
    pub len: usize,
    /// Qwen3-VL's DeepStack features (empty for the other families).
    pub deepstack: &'a [Tensor],
}

#[derive(Clone, Debug)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    /// Qwen3: RMSNorm over each query / key head before the rotation.
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    /// Multiplies the scores: head_dim^-0.5, or Gemma's query_pre_attn_scalar^-0.5.
    scale: f64,
}

/// Gemma's RMSNorm: `x / rms(x) * (1 + w)`, all in f32.
fn gemma_rms_norm(size: usize, eps: f64, vb: VarBuilder) -> Result<RmsNorm> {
    let weight = (vb.get(size, "weight")?.to_dtype(DType::F32)? + 1.0)?;
    Ok(RmsNorm::new(weight, eps))
}

/// The family's RMSNorm (Gemma's `1 + w`, else `w`).
fn family_rms_norm(cfg: &TextConfig, size: usize, vb: VarBuilder) -> Result<RmsNorm> {
    match cfg.arch {
        TextArch::Gemma3 => gemma_rms_norm(size, cfg.rms_norm_eps, vb),
        _ => rms_norm(size, cfg.rms_norm_eps, vb),
    }
}

impl Attention {
    fn new(cfg: &TextConfig, vb: VarBuilder, plan: &LoadPlan) -> Result<Self> {
        let (h, kv, d) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let bias = cfg.attention_bias;
        // Qwen2 has q/k/v biases but none on o_proj; LLaMA, Mistral and Qwen3 put
        // `attention_bias` on all four.
        let out_bias = bias && cfg.arch != TextArch::Qwen2;
        let head_norm = |name: &str| -> Result<Option<RmsNorm>> {
            match cfg.arch {
                TextArch::Qwen3 | TextArch::Gemma3 => {
                    Ok(Some(family_rms_norm(cfg, d, vb.pp(name))?))
                }
                _ => Ok(None),
            }
        };
        let scale = match &cfg.gemma {
            Some(gemma) => gemma.query_pre_attn_scalar.powf(-0.5),
            None => 1.0 / (d as f64).sqrt(),
        };
        Ok(Attention {
            q_proj: Linear::load(cfg.hidden_size, h * d, bias, vb.pp("q_proj"), plan)?,
            k_proj: Linear::load(cfg.hidden_size, kv * d, bias, vb.pp("k_proj"), plan)?,
            v_proj: Linear::load(cfg.hidden_size, kv * d, bias, vb.pp("v_proj"), plan)?,
            o_proj: Linear::load(h * d, cfg.hidden_size, out_bias, vb.pp("o_proj"), plan)?,
            q_norm: head_norm("q_norm")?,
            k_norm: head_norm("k_norm")?,
            num_heads: h,
            num_kv_heads: kv,
            head_dim: d,
            scale,
        })
    }

    /// Attention of a pass of packed sequences (`groups`, rows in order): the projections, norms
    /// and rotary run on all rows at once; each group then attends over its own cache and rows.
    fn forward(
        &self,
        x: &Tensor,
        layer: usize,
        rope: (&Tensor, &Tensor),
        groups: &mut [GroupPass],
        visibility: &[Visibility],
    ) -> Result<Tensor> {
        let (batch, len, _) = x.dims3()?;
        let shape = |t: Tensor, heads: usize, norm: Option<&RmsNorm>| -> Result<Tensor> {
            let t = t.reshape((batch, len, heads, self.head_dim))?;
            let t = match norm {
                Some(norm) => norm.forward(&t)?,
                None => t,
            };
            t.transpose(1, 2)?.contiguous()
        };
        let q = shape(
            self.q_proj.forward(x)?,
            self.num_heads,
            self.q_norm.as_ref(),
        )?;
        let k = shape(
            self.k_proj.forward(x)?,
            self.num_kv_heads,
            self.k_norm.as_ref(),
        )?;
        let v = shape(self.v_proj.forward(x)?, self.num_kv_heads, None)?;
        let q = candle_nn::rotary_emb::rope(&q, rope.0, rope.1)?;
        let k = candle_nn::rotary_emb::rope(&k, rope.0, rope.1)?;
        let single = groups.len() == 1;
        let mut outputs = Vec::with_capacity(groups.len());
        let mut offset = 0;
        for (group, visibility) in groups.iter_mut().zip(visibility) {
            let rows = |t: &Tensor| -> Result<Tensor> {
                match single {
                    true => Ok(t.clone()),
                    false => t.narrow(2, offset, group.len)?.contiguous(),
                }
            };
            let start = group.cache.len;
            let segments = &mut group.cache.layers[layer];
            extend_segments(segments, rows(&k)?, rows(&v)?)?;
            outputs.push(self.attend(
                &rows(&q)?,
                segments,
                layer,
                start,
                visibility,
                &mut group.hooks,
            )?);
            offset += group.len;
        }
        let out = if single {
            outputs.pop().expect("one group")
        } else {
            Tensor::cat(&outputs, 2)?
        };
        let out = out
            .transpose(1, 2)?
            .reshape((batch, len, self.num_heads * self.head_dim))?;
        self.o_proj.forward(&out)
    }

    /// One sequence's attention: queries `q` (1, H, n, d) at positions `start..start + n` over
    /// the keys and values in `segments` (this pass's rows included), a block of query rows at
    /// a time, so the scores of a long prefill (16k image tokens) never exist whole; each row's
    /// softmax is the same whatever the block. Grouped-query heads read their KV head by a
    /// reshape of the queries (no copies of the keys and values).
    fn attend(
        &self,
        q: &Tensor,
        segments: &[(Tensor, Tensor)],
        layer: usize,
        start: usize,
        visibility: &Visibility,
        hooks: &mut Hooks,
    ) -> Result<Tensor> {
        let (batch, heads, len, dim) = q.dims4()?;
        let kv = self.num_kv_heads;
        let groups = heads / kv;
        let total: usize = segments
            .iter()
            .map(|(k, _)| k.dim(2))
            .sum::<Result<usize>>()?;
        let keys_t = segments
            .iter()
            .map(|(k, _)| k.t())
            .collect::<Result<Vec<_>>>()?;
        let scale = self.scale;
        let mut outputs = Vec::new();
        let mut probe_sums: [Option<Tensor>; 2] = [None, None];
        for (row0, rows) in query_blocks(len, heads, total) {
            // (1, H, rows, d) -> (1, KV, G * rows, d): the G heads of a KV head side by side.
            let q_block =
                q.narrow(2, row0, rows)?
                    .contiguous()?
                    .reshape((batch, kv, groups * rows, dim))?;
            let parts = keys_t
                .iter()
                .map(|k_t| q_block.matmul(k_t))
                .collect::<Result<Vec<_>>>()?;
            let scores = match parts.len() {
                1 => parts.into_iter().next().expect("one segment"),
                _ => Tensor::cat(&parts, 3)?,
            };
            let scores = scores.reshape((batch, heads, rows, total))?;
            let mask = attention_mask(
                row0..row0 + rows,
                start,
                total,
                visibility,
                layer,
                hooks.edges,
                q.device(),
            )?;
            let probs = scaled_masked_softmax(&scores, scale, Some(&mask))?;
            for (probe, sum) in hooks.probes().zip(probe_sums.iter_mut()) {
                if let Some(part) = probe_rows(probe, &probs, start, len, row0)? {
                    *sum = Some(match sum.take() {
                        Some(s) => (s + part)?,
                        None => part,
                    });
                }
            }
            let probs = probs.reshape((batch, kv, groups * rows, total))?;
            let mut out: Option<Tensor> = None;
            let mut key0 = 0;
            for (_, v) in segments {
                let n = v.dim(2)?;
                let p = match segments.len() {
                    1 => probs.clone(),
                    _ => probs.narrow(3, key0, n)?.contiguous()?,
                };
                let part = p.matmul(v)?;
                out = Some(match out {
                    Some(o) => (o + part)?,
                    None => part,
                });
                key0 += n;
            }
            let out = out.expect("at least one segment");
            outputs.push(out.reshape((batch, heads, rows, dim))?);
        }
        for (probe, sum) in hooks.probes_mut().zip(probe_sums) {
            if let Some(sum) = sum {
                let count = probe_row_range(probe, start, len).len();
                probe
                    .maps
                    .push((sum / count as f64)?.flatten_all()?.to_vec1::<f32>()?);
            }
        }
        match outputs.len() {
            1 => Ok(outputs.pop().expect("one block")),
            _ => Tensor::cat(&outputs, 2),
        }
    }
}

/// `x` (1, T, D) with `rows` (N, D) added to rows `start..start + N`.
fn add_rows(x: &Tensor, start: usize, rows: &Tensor) -> Result<Tensor> {
    let (_, len, _) = x.dims3()?;
    let n = rows.dim(0)?;
    let mut parts = Vec::with_capacity(3);
    if start > 0 {
        parts.push(x.narrow(1, 0, start)?);
    }
    let image = x.narrow(1, start, n)?;
    parts.push(image.broadcast_add(&rows.to_dtype(x.dtype())?.unsqueeze(0)?)?);
    if start + n < len {
        parts.push(x.narrow(1, start + n, len - start - n)?);
    }
    Tensor::cat(&parts, 1)
}

#[derive(Clone, Debug)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    /// Gemma: GELU with the tanh approximation on the gate; else SiLU.
    gelu_tanh: bool,
}

impl Mlp {
    fn new(cfg: &TextConfig, vb: VarBuilder, plan: &LoadPlan) -> Result<Self> {
        let (hidden, inner) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Mlp {
            gate_proj: Linear::load(hidden, inner, false, vb.pp("gate_proj"), plan)?,
            up_proj: Linear::load(hidden, inner, false, vb.pp("up_proj"), plan)?,
            down_proj: Linear::load(inner, hidden, false, vb.pp("down_proj"), plan)?,
            gelu_tanh: cfg.arch == TextArch::Gemma3,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate = self.gate_proj.forward(x)?;
        let gate = if self.gelu_tanh {
            gate.gelu()?
        } else {
            candle_nn::ops::silu(&gate)?
        };
        self.down_proj.forward(&(gate * self.up_proj.forward(x)?)?)
    }
}

#[derive(Clone, Debug)]
struct DecoderLayer {
    self_attn: Attention,
    mlp: Mlp,
    input_layernorm: RmsNorm,
    /// LLaMA / Qwen: the norm before the MLP. Gemma: the norm of the attention output.
    post_attention_layernorm: RmsNorm,
    /// Gemma: the norms before and after the MLP.
    feedforward_norms: Option<(RmsNorm, RmsNorm)>,
}

impl DecoderLayer {
    fn new(cfg: &TextConfig, vb: VarBuilder, plan: &LoadPlan) -> Result<Self> {
        let norm = |name: &str| family_rms_norm(cfg, cfg.hidden_size, vb.pp(name));
        let feedforward_norms = match cfg.arch {
            TextArch::Gemma3 => Some((
                norm("pre_feedforward_layernorm")?,
                norm("post_feedforward_layernorm")?,
            )),
            _ => None,
        };
        Ok(DecoderLayer {
            self_attn: Attention::new(cfg, vb.pp("self_attn"), plan)?,
            mlp: Mlp::new(cfg, vb.pp("mlp"), plan)?,
            input_layernorm: norm("input_layernorm")?,
            post_attention_layernorm: norm("post_attention_layernorm")?,
            feedforward_norms,
        })
    }

    /// The layer after its attention: LLaMA's `x + mlp(norm(x + attn))`, or Gemma's
    /// sandwich `h = x + norm(attn)`, `h + norm(mlp(norm(h)))`.
    fn finish(&self, residual: Tensor, attn: Tensor) -> Result<Tensor> {
        match &self.feedforward_norms {
            None => {
                let x = (residual + attn)?;
                let normed = self.post_attention_layernorm.forward(&x)?;
                x.clone() + self.mlp.forward(&normed)?
            }
            Some((pre, post)) => {
                let x = (residual + self.post_attention_layernorm.forward(&attn)?)?;
                let hidden = self.mlp.forward(&pre.forward(&x)?)?;
                x + post.forward(&hidden)?
            }
        }
    }
}

/// The decoder with its embedding and LM head.
#[derive(Clone, Debug)]
pub struct Decoder {
    /// (vocab, hidden): rows are looked up, then widened to f32.
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    rotary: Rotary,
    /// Gemma 3: the local layers' rotary (the global ones use `rotary`).
    local_rotary: Option<Rotary>,
    /// Gemma 3: token embeddings are multiplied by sqrt(hidden), rounded to the table's dtype
    /// as transformers does; `Some(dtype)` also rounds the product to it (bf16/f16 tables).
    embed_scale: Option<(f64, Option<DType>)>,
    /// The checkpoint's dtype of the decoder's weights (that of its embedding table).
    pub weights_dtype: DType,
    pub cfg: TextConfig,
}

impl Decoder {
    /// `vb` points at the decoder's root (where `embed_tokens`, `layers` and `norm` live);
    /// `lm_head_vb` at the LM head. The plan says how the linear layers and the head are kept.
    pub fn new(
        cfg: &TextConfig,
        vb: VarBuilder,
        lm_head_vb: VarBuilder,
        plan: &LoadPlan,
    ) -> Result<Self> {
        let embed_vb = vb.pp("embed_tokens");
        let embed_name = embed_vb.prefix();
        let shape = (cfg.vocab_size, cfg.hidden_size);
        let tied = cfg.tie_word_embeddings && !lm_head_vb.contains_tensor("weight");
        let tied_name = format!("{embed_name} (tied)");
        // A table the weight cache holds (with the tied head that shares it) is never read
        // from the checkpoint: 1.1 GB of a 7B's bf16 and its quantizing.
        let cached = match tied {
            true => WeightCache::cached_q8(plan.cache.as_deref(), &tied_name, shape),
            false => WeightCache::cached_q8(
                plan.cache.as_deref(),
                &Embedding::cache_name(&embed_name),
                shape,
            ),
        };
        let (embed_tokens, tied_head, table_dtype) = match cached {
            Some(packed) => (
                Embedding::from_q8(packed.clone(), vb.device()),
                tied.then(|| Linear::from_q8(packed)),
                plan.stored_dtype(&embed_vb, "weight").unwrap_or(DType::F32),
            ),
            None => {
                let stored = plan.stored_tensor(&embed_vb, shape, "weight")?;
                // A tied head is made from the stored table before the table itself is
                // (possibly) quantized; the stored copy is then dropped.
                let tied_head = if tied {
                    Some(Linear::tied(&stored, plan, &tied_name)?)
                } else {
                    None
                };
                let table_dtype = stored.dtype();
                let embed = Embedding::new(stored, plan, tied_head.as_ref(), &embed_name)?;
                (embed, tied_head, table_dtype)
            }
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let layer = DecoderLayer::new(cfg, vb.pp("layers").pp(i), plan)?;
                plan.report("decoder layers", i + 1, cfg.num_hidden_layers)?;
                Ok(layer)
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = family_rms_norm(cfg, cfg.hidden_size, vb.pp("norm"))?;
        let lm_head = match tied_head {
            Some(head) => head,
            None => Linear::load(cfg.hidden_size, cfg.vocab_size, false, lm_head_vb, plan)?,
        };
        Ok(Decoder {
            embed_tokens,
            layers,
            norm,
            lm_head,
            rotary: Rotary::new(cfg.head_dim, cfg.rope_theta, &cfg.rope)?
                .scaled(cfg.gemma.as_ref().map_or(1.0, |g| g.global_rope_factor)),
            local_rotary: match &cfg.gemma {
                Some(gemma) => Some(Rotary::new(
                    cfg.head_dim,
                    gemma.local_rope_theta,
                    &cfg.rope,
                )?),
                None => None,
            },
            embed_scale: (cfg.arch == TextArch::Gemma3).then(|| {
                let scale = (cfg.hidden_size as f64).sqrt();
                match table_dtype {
                    DType::BF16 | DType::F16 => (round_to(scale, table_dtype), Some(table_dtype)),
                    _ => (scale as f32 as f64, None),
                }
            }),
            weights_dtype: table_dtype,
            cfg: cfg.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        self.embed_tokens.device()
    }

    /// Token embeddings (1, T, D) for `ids`, in f32 (Gemma's scaled as transformers scales
    /// them: in the table's dtype).
    pub fn embed(&self, ids: &[u32]) -> Result<Tensor> {
        let rows = self.embed_tokens.lookup(ids)?;
        match self.embed_scale {
            None => Ok(rows),
            Some((scale, None)) => rows * scale,
            Some((scale, Some(dtype))) => (rows.to_dtype(dtype)? * scale)?.to_dtype(DType::F32),
        }
    }

    /// Bytes the weights of the linear layers and the head take in memory, and those of the
    /// embedding table.
    pub fn weight_bytes(&self) -> (usize, usize) {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                let a = &l.self_attn;
                let m = &l.mlp;
                [
                    &a.q_proj,
                    &a.k_proj,
                    &a.v_proj,
                    &a.o_proj,
                    &m.gate_proj,
                    &m.up_proj,
                    &m.down_proj,
                ]
                .iter()
                .map(|x| x.weight_bytes())
                .sum::<usize>()
            })
            .sum();
        (
            layers + self.lm_head.weight_bytes(),
            self.embed_tokens.bytes(),
        )
    }

    /// Run `embeds` (1, T, D) as one sequence, extend the cache and return the final hidden
    /// states (1, T, D) after the last norm. `positions`: explicit 3-D rotary positions (one per
    /// row) where the sequence holds an image under M-RoPE (`None`: text positions from
    /// `cache.next_position()`); `image`: where the image's rows are in this pass (Qwen3-VL
    /// adds its DeepStack features there; Gemma 3 lets them see each other).
    pub fn forward_at(
        &self,
        embeds: &Tensor,
        positions: Option<&[Position]>,
        image: Option<ImageRows>,
        cache: &mut Cache,
        hooks: &mut Hooks,
    ) -> Result<Tensor> {
        let (_, len, _) = embeds.dims3()?;
        let mut group = [GroupPass {
            len,
            positions,
            cache,
            hooks: Hooks {
                probe: hooks.probe.as_deref_mut(),
                token_probe: hooks.token_probe.as_deref_mut(),
                edges: hooks.edges,
            },
        }];
        self.forward_groups(embeds, &mut group, image)
    }

    /// Run several sequences packed in one pass: `embeds` (1, R, D) holds the rows of each
    /// group in order. The linear layers see all R rows at once (one read of the weights for
    /// every group); attention keeps the groups apart, each over its own cache, with its own
    /// probes and knockout. Each group's cache is extended by its rows; the hidden states
    /// (1, R, D) after the last norm come back in the same order. An image's rows
    /// (`image`) may only be in a pass of one group.
    pub fn forward_groups(
        &self,
        embeds: &Tensor,
        groups: &mut [GroupPass],
        image: Option<ImageRows>,
    ) -> Result<Tensor> {
        let (_, len, _) = embeds.dims3()?;
        let rows: usize = groups.iter().map(|g| g.len).sum();
        if rows != len || groups.is_empty() || groups.iter().any(|g| g.len == 0) {
            candle_core::bail!(
                "{len} rows for groups of {:?} rows",
                groups.iter().map(|g| g.len).collect::<Vec<_>>()
            );
        }
        if let Some(image) = &image {
            if groups.len() != 1 {
                candle_core::bail!("image rows in a pass of {} groups", groups.len());
            }
            if image.start + image.len > len {
                candle_core::bail!(
                    "image rows {}..{} outside a {len}-token pass",
                    image.start,
                    image.start + image.len
                );
            }
            if image.deepstack.len() > self.layers.len() {
                candle_core::bail!(
                    "{} DeepStack features for {} decoder layers",
                    image.deepstack.len(),
                    self.layers.len()
                );
            }
            for feature in image.deepstack {
                let (n, d) = feature.dims2()?;
                if n != image.len || d != self.cfg.hidden_size {
                    candle_core::bail!(
                        "a DeepStack feature of {n} x {d} for {} image rows of width {}",
                        image.len,
                        self.cfg.hidden_size
                    );
                }
            }
        }
        let device = embeds.device();
        // Each group's rotary rows, at its explicit positions or after its cache's last one.
        let rope = |rotary: &Rotary| -> Result<(Tensor, Tensor)> {
            let mut cos = Vec::with_capacity(groups.len());
            let mut sin = Vec::with_capacity(groups.len());
            for group in groups.iter() {
                let (c, s) = match group.positions {
                    Some(positions) => {
                        if positions.len() != group.len {
                            candle_core::bail!(
                                "{} rotary positions for {} tokens",
                                positions.len(),
                                group.len
                            );
                        }
                        rotary.at(positions, device)?
                    }
                    None => rotary.sequential(group.cache.next_position, group.len, device)?,
                };
                cos.push(c);
                sin.push(s);
            }
            match cos.len() {
                1 => Ok((cos.remove(0), sin.remove(0))),
                _ => Ok((Tensor::cat(&cos, 0)?, Tensor::cat(&sin, 0)?)),
            }
        };
        let global_rope = rope(&self.rotary)?;
        let local_rope = match &self.local_rotary {
            Some(rotary) => Some(rope(rotary)?),
            None => None,
        };
        // Per group: the global and the local layers' visibility (Gemma 3: the image block at
        // absolute positions, and the local window).
        let (global, local): (Vec<Visibility>, Vec<Visibility>) = groups
            .iter()
            .map(|group| {
                let start = group.cache.len;
                let image_block = match (&self.cfg.gemma, &image) {
                    (Some(_), Some(image)) => {
                        Some(start + image.start..start + image.start + image.len)
                    }
                    _ => None,
                };
                (
                    Visibility {
                        window: None,
                        image_block: image_block.clone(),
                    },
                    Visibility {
                        window: self.cfg.gemma.as_ref().map(|g| g.sliding_window),
                        image_block,
                    },
                )
            })
            .unzip();
        let next_positions: Vec<usize> = groups
            .iter()
            .map(|group| match group.positions {
                Some(positions) => positions
                    .iter()
                    .flat_map(|p| p.iter())
                    .max()
                    .map_or(group.cache.next_position, |&m| m as usize + 1)
                    .max(group.cache.next_position),
                None => group.cache.next_position + group.len,
            })
            .collect();
        let mut x = embeds.to_dtype(DType::F32)?;
        for (index, layer) in self.layers.iter().enumerate() {
            let sliding = self
                .cfg
                .gemma
                .as_ref()
                .is_some_and(|g| g.sliding.get(index).copied().unwrap_or(false));
            let (visibility, (cos, sin)) = match (&local_rope, sliding) {
                (Some(local_rope), true) => (&local, local_rope),
                _ => (&global, &global_rope),
            };
            let residual = x.clone();
            let normed = layer.input_layernorm.forward(&x)?;
            let attn = layer
                .self_attn
                .forward(&normed, index, (cos, sin), groups, visibility)?;
            x = layer.finish(residual, attn)?;
            if let Some(image) = &image {
                if let Some(feature) = image.deepstack.get(index) {
                    x = add_rows(&x, image.start, feature)?;
                }
            }
        }
        for (group, next) in groups.iter_mut().zip(next_positions) {
            group.cache.len += group.len;
            group.cache.next_position = next;
        }
        self.norm.forward(&x)
    }

    /// Logits (G, V) of chosen rows of hidden states (1, T, D): the last row of each group of
    /// a packed pass.
    pub fn rows_logits(&self, hidden: &Tensor, rows: &[usize]) -> Result<Tensor> {
        let index = Tensor::new(
            rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
            hidden.device(),
        )?;
        self.lm_head
            .forward(&hidden.squeeze(0)?.index_select(&index, 0)?)
    }

    /// Logits (T, V) for hidden states (1, T, D).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(&hidden.squeeze(0)?)
    }

    /// Logits (V) of the last position only.
    pub fn last_logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let len = hidden.dim(1)?;
        self.lm_head
            .forward(&hidden.i((0, len - 1..len))?)?
            .squeeze(0)
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }
}

/// `value` rounded to the nearest bf16 / f16 (as torch's `tensor.to(dtype)`).
fn round_to(value: f64, dtype: DType) -> f64 {
    match dtype {
        DType::BF16 => half::bf16::from_f64(value).to_f64(),
        DType::F16 => half::f16::from_f64(value).to_f64(),
        _ => value,
    }
}

/// Index of the largest value, first on ties (as torch.argmax).
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

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

use std::ops::Range;

use super::linear::{Linear, LoadPlan};
use super::rope::{Position, RopeAxes, Rotary};
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
}

impl TextArch {
    pub fn name(self) -> &'static str {
        match self {
            TextArch::Llama => "llama",
            TextArch::Mistral => "mistral",
            TextArch::Qwen2 => "qwen2",
            TextArch::Qwen3 => "qwen3",
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
}

/// Per-layer keys and values of everything run so far. Cloning is cheap (tensors are shared),
/// and extending a clone never changes the original: a prefix cache stays valid.
#[derive(Clone, Debug)]
pub struct Cache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
    /// Rotary position of the next text token: `len` for 1-D RoPE; with M-RoPE, one past the
    /// largest position used so far (an image of r x c tokens advances it by max(r, c)).
    next_position: usize,
}

impl Cache {
    pub fn new(cfg: &TextConfig) -> Self {
        Cache {
            layers: vec![None; cfg.num_hidden_layers],
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

/// Which query rows a probe keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryRows {
    /// The last position of the forward pass (the last prompt token in a prefill).
    Last,
    /// The mean over all positions from this absolute position to the end of the pass.
    MeanFrom(usize),
}

/// Records attention probabilities of chosen query rows over a key span, per layer and head.
#[derive(Clone, Debug)]
pub struct AttentionProbe {
    pub rows: QueryRows,
    pub key_span: Range<usize>,
    /// Per layer: H x N probabilities, head-major (`maps[layer][head * N + token]`).
    pub maps: Vec<Vec<f32>>,
}

impl AttentionProbe {
    pub fn new(rows: QueryRows, key_span: Range<usize>) -> Self {
        AttentionProbe {
            rows,
            key_span,
            maps: Vec::new(),
        }
    }
}

/// Attention edges to forbid: in `layers`, from every query at an absolute position
/// `>= queries_from` to each key position in `blocked_keys`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EdgeMask {
    pub layers: Vec<usize>,
    pub queries_from: usize,
    pub blocked_keys: Vec<usize>,
}

impl EdgeMask {
    fn applies_to(&self, layer: usize) -> bool {
        self.layers.contains(&layer) && !self.blocked_keys.is_empty()
    }
}

/// Qwen3-VL's DeepStack input for one forward pass: `features[i]` (N, D) is added to the
/// hidden states of the N image rows starting at row `start` of the pass, after layer i.
#[derive(Clone, Copy, Debug)]
pub struct Deepstack<'a> {
    pub start: usize,
    pub features: &'a [Tensor],
}

/// Optional instruments for one forward pass.
#[derive(Default)]
pub struct Hooks<'a> {
    pub probe: Option<&'a mut AttentionProbe>,
    pub edges: Option<&'a EdgeMask>,
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
                TextArch::Qwen3 => Ok(Some(rms_norm(d, cfg.rms_norm_eps, vb.pp(name))?)),
                _ => Ok(None),
            }
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
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        x: &Tensor,
        layer: usize,
        start: usize,
        rope: (&Tensor, &Tensor),
        cache: &mut Option<(Tensor, Tensor)>,
        hooks: &mut Hooks,
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
        let (k, v) = match cache.take() {
            Some((past_k, past_v)) => (
                Tensor::cat(&[&past_k, &k], 2)?,
                Tensor::cat(&[&past_v, &v], 2)?,
            ),
            None => (k, v),
        };
        *cache = Some((k.clone(), v.clone()));
        let total = k.dim(2)?;
        let groups = self.num_heads / self.num_kv_heads;
        let k = repeat_kv(k, groups)?;
        let v = repeat_kv(v, groups)?;

        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?;
        let mask = attention_mask(len, start, total, layer, hooks.edges, x.device())?;
        let scores = scores.broadcast_add(&mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;

        if let Some(probe) = hooks.probe.as_deref_mut() {
            record(probe, &probs, start, len)?;
        }
        let out = probs.matmul(&v)?;
        let out = out
            .transpose(1, 2)?
            .reshape((batch, len, self.num_heads * self.head_dim))?;
        self.o_proj.forward(&out)
    }
}

/// Keep the probe's rows of `probs` (1, H, T, S) over its key span, as (H, N).
fn record(probe: &mut AttentionProbe, probs: &Tensor, start: usize, len: usize) -> Result<()> {
    let span = probe.key_span.clone();
    let rows = match probe.rows {
        QueryRows::Last => (len - 1)..len,
        QueryRows::MeanFrom(from) => from.saturating_sub(start).min(len)..len,
    };
    let map = if rows.is_empty() || span.end > probs.dim(3)? {
        // Nothing to record in this pass (e.g. the span is not visible yet).
        return Ok(());
    } else {
        probs
            .i((0, .., rows.clone(), span.clone()))?
            .mean(1)?
            .flatten_all()?
            .to_vec1::<f32>()?
    };
    probe.maps.push(map);
    Ok(())
}

/// Additive mask (T, S): causal, plus `f32::MIN` on knocked-out edges in this layer.
fn attention_mask(
    len: usize,
    start: usize,
    total: usize,
    layer: usize,
    edges: Option<&EdgeMask>,
    device: &Device,
) -> Result<Tensor> {
    let mut mask = vec![0f32; len * total];
    for row in 0..len {
        let position = start + row;
        for key in position + 1..total {
            mask[row * total + key] = f32::NEG_INFINITY;
        }
    }
    if let Some(edges) = edges.filter(|e| e.applies_to(layer)) {
        for row in 0..len {
            if start + row < edges.queries_from {
                continue;
            }
            for &key in &edges.blocked_keys {
                if key < total && key <= start + row {
                    mask[row * total + key] = f32::MIN;
                }
            }
        }
    }
    Tensor::from_vec(mask, (len, total), device)
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

fn repeat_kv(x: Tensor, groups: usize) -> Result<Tensor> {
    if groups == 1 {
        return Ok(x);
    }
    let (batch, kv, len, dim) = x.dims4()?;
    x.unsqueeze(2)?
        .expand((batch, kv, groups, len, dim))?
        .reshape((batch, kv * groups, len, dim))
}

#[derive(Clone, Debug)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn new(cfg: &TextConfig, vb: VarBuilder, plan: &LoadPlan) -> Result<Self> {
        let (hidden, inner) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Mlp {
            gate_proj: Linear::load(hidden, inner, false, vb.pp("gate_proj"), plan)?,
            up_proj: Linear::load(hidden, inner, false, vb.pp("up_proj"), plan)?,
            down_proj: Linear::load(inner, hidden, false, vb.pp("down_proj"), plan)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate = candle_nn::ops::silu(&self.gate_proj.forward(x)?)?;
        self.down_proj.forward(&(gate * self.up_proj.forward(x)?)?)
    }
}

#[derive(Clone, Debug)]
struct DecoderLayer {
    self_attn: Attention,
    mlp: Mlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

impl DecoderLayer {
    fn new(cfg: &TextConfig, vb: VarBuilder, plan: &LoadPlan) -> Result<Self> {
        Ok(DecoderLayer {
            self_attn: Attention::new(cfg, vb.pp("self_attn"), plan)?,
            mlp: Mlp::new(cfg, vb.pp("mlp"), plan)?,
            input_layernorm: rms_norm(cfg.hidden_size, cfg.rms_norm_eps, vb.pp("input_layernorm"))?,
            post_attention_layernorm: rms_norm(
                cfg.hidden_size,
                cfg.rms_norm_eps,
                vb.pp("post_attention_layernorm"),
            )?,
        })
    }
}

/// The decoder with its embedding and LM head.
#[derive(Clone, Debug)]
pub struct Decoder {
    /// (vocab, hidden) in the checkpoint's dtype; rows are looked up, then widened to f32.
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    rotary: Rotary,
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
        let embed_tokens = plan.stored_tensor(
            &vb.pp("embed_tokens"),
            (cfg.vocab_size, cfg.hidden_size),
            "weight",
        )?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let layer = DecoderLayer::new(cfg, vb.pp("layers").pp(i), plan)?;
                plan.report("decoder layers", i + 1, cfg.num_hidden_layers)?;
                Ok(layer)
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = rms_norm(cfg.hidden_size, cfg.rms_norm_eps, vb.pp("norm"))?;
        let lm_head = if cfg.tie_word_embeddings && !lm_head_vb.contains_tensor("weight") {
            Linear::tied(
                &embed_tokens,
                plan,
                &format!("{} (tied)", vb.pp("embed_tokens").prefix()),
            )?
        } else {
            Linear::load(cfg.hidden_size, cfg.vocab_size, false, lm_head_vb, plan)?
        };
        Ok(Decoder {
            embed_tokens,
            layers,
            norm,
            lm_head,
            rotary: Rotary::new(cfg.head_dim, cfg.rope_theta, &cfg.rope)?,
            cfg: cfg.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        self.embed_tokens.device()
    }

    /// Token embeddings (1, T, D) for `ids`, in f32.
    pub fn embed(&self, ids: &[u32]) -> Result<Tensor> {
        let ids = Tensor::new(ids, self.device())?;
        self.embed_tokens
            .index_select(&ids, 0)?
            .to_dtype(DType::F32)?
            .unsqueeze(0)
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
        let embed = self.embed_tokens.elem_count() * self.embed_tokens.dtype().size_in_bytes();
        (layers + self.lm_head.weight_bytes(), embed)
    }

    /// Run `embeds` (1, T, D) as text at rotary positions `cache.next_position()..`, extend the
    /// cache and return the final hidden states (1, T, D) after the last norm.
    pub fn forward(&self, embeds: &Tensor, cache: &mut Cache, hooks: &mut Hooks) -> Result<Tensor> {
        self.forward_at(embeds, None, None, cache, hooks)
    }

    /// As [`Decoder::forward`], with explicit 3-D rotary positions (one per row of `embeds`)
    /// where the sequence holds an image under M-RoPE, and Qwen3-VL's DeepStack features for
    /// the image rows.
    pub fn forward_at(
        &self,
        embeds: &Tensor,
        positions: Option<&[Position]>,
        deepstack: Option<Deepstack>,
        cache: &mut Cache,
        hooks: &mut Hooks,
    ) -> Result<Tensor> {
        let (_, len, _) = embeds.dims3()?;
        if let Some(stack) = &deepstack {
            if stack.features.len() > self.layers.len() {
                candle_core::bail!(
                    "{} DeepStack features for {} decoder layers",
                    stack.features.len(),
                    self.layers.len()
                );
            }
            for feature in stack.features {
                let (n, d) = feature.dims2()?;
                if stack.start + n > len || d != self.cfg.hidden_size {
                    candle_core::bail!(
                        "a DeepStack feature of {n} x {d} does not fit rows {}.. of a {len}-token pass of width {}",
                        stack.start,
                        self.cfg.hidden_size
                    );
                }
            }
        }
        let start = cache.len;
        let (cos, sin) = match positions {
            Some(positions) => {
                if positions.len() != len {
                    candle_core::bail!("{} rotary positions for {len} tokens", positions.len());
                }
                self.rotary.at(positions, embeds.device())?
            }
            None => self
                .rotary
                .sequential(cache.next_position, len, embeds.device())?,
        };
        let next_position = match positions {
            Some(positions) => positions
                .iter()
                .flat_map(|p| p.iter())
                .max()
                .map_or(cache.next_position, |&m| m as usize + 1)
                .max(cache.next_position),
            None => cache.next_position + len,
        };
        let mut x = embeds.to_dtype(DType::F32)?;
        for (index, layer) in self.layers.iter().enumerate() {
            let residual = x.clone();
            let normed = layer.input_layernorm.forward(&x)?;
            let attn = layer.self_attn.forward(
                &normed,
                index,
                start,
                (&cos, &sin),
                &mut cache.layers[index],
                hooks,
            )?;
            x = (residual + attn)?;
            let residual = x.clone();
            let normed = layer.post_attention_layernorm.forward(&x)?;
            x = (residual + layer.mlp.forward(&normed)?)?;
            if let Some(feature) = deepstack.as_ref().and_then(|s| s.features.get(index)) {
                x = add_rows(&x, deepstack.map_or(0, |s| s.start), feature)?;
            }
        }
        cache.len += len;
        cache.next_position = next_position;
        self.norm.forward(&x)
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

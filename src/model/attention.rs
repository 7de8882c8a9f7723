//! The attention instruments and masks the decoder applies, one block of query rows at a
//! time: which rows a probe keeps ([`AttentionProbe`]), which edges a knockout blocks
//! ([`EdgeMask`]), which keys each layer's queries may see (causal, Gemma 3's local window and
//! bidirectional image block), and the blocking itself ([`query_blocks`]), so a long prefill's
//! scores (16k image tokens) never exist whole.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{Device, IndexOp, Result, Tensor};

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
/// `>= queries_from` to each key position in `blocked_keys`; and, with `and`, another such set
/// too (its own layers: a causal map's cell knocked out of an answer VGRefine already knocked
/// out in its masked layers).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EdgeMask {
    pub layers: Vec<usize>,
    pub queries_from: usize,
    pub blocked_keys: Vec<usize>,
    pub and: Option<Box<EdgeMask>>,
}

impl EdgeMask {
    /// This set and every set chained to it with `and`.
    fn chain(&self) -> impl Iterator<Item = &EdgeMask> {
        std::iter::successors(Some(self), |m| m.and.as_deref())
    }
}

/// Optional instruments for one forward pass.
#[derive(Default)]
pub struct Hooks<'a> {
    pub probe: Option<&'a mut AttentionProbe>,
    /// A second probe in the same pass (the answer's per-token maps read the last row while
    /// `probe` may average the question's rows).
    pub token_probe: Option<&'a mut AttentionProbe>,
    pub edges: Option<&'a EdgeMask>,
}

impl Hooks<'_> {
    /// The probes of this pass (at most two).
    pub(super) fn probes(&self) -> impl Iterator<Item = &AttentionProbe> {
        self.probe
            .as_deref()
            .into_iter()
            .chain(self.token_probe.as_deref())
    }

    pub(super) fn probes_mut(&mut self) -> impl Iterator<Item = &mut AttentionProbe> {
        self.probe
            .as_deref_mut()
            .into_iter()
            .chain(self.token_probe.as_deref_mut())
    }
}

/// Elements of f32 attention scores kept at once (4 Mi = 16 MiB by default): attention runs a
/// block of query rows at a time.
static SCORE_BLOCK: AtomicUsize = AtomicUsize::new(1 << 22);

/// Set how many attention scores are computed at once (at least one query row is). Results do
/// not depend on it; the tests set it small to run every attention in many blocks.
#[doc(hidden)]
pub fn set_score_block_elements(elements: usize) {
    SCORE_BLOCK.store(elements.max(1), Ordering::Relaxed);
}

/// `(first row, rows)` blocks covering `len` query rows, each with at most about
/// [`SCORE_BLOCK`] scores over `heads` heads and `keys` keys.
pub(crate) fn query_blocks(
    len: usize,
    heads: usize,
    keys: usize,
) -> impl Iterator<Item = (usize, usize)> {
    let budget = SCORE_BLOCK.load(Ordering::Relaxed);
    let step = (budget / (heads * keys).max(1)).max(1);
    (0..len)
        .step_by(step)
        .map(move |row0| (row0, step.min(len - row0)))
}

/// The rows of this pass (0-based within it) the probe averages.
pub(super) fn probe_row_range(probe: &AttentionProbe, start: usize, len: usize) -> Range<usize> {
    match probe.rows {
        QueryRows::Last => len.saturating_sub(1)..len,
        QueryRows::MeanFrom(from) => from.saturating_sub(start).min(len)..len,
    }
}

/// The sum over the probe's rows that fall in the block `probs` (1, H, rows, S) starting at
/// row `row0`, over its key span, as (H, N); `None` when none of them is in the block or the
/// span is not visible yet.
pub(super) fn probe_rows(
    probe: &AttentionProbe,
    probs: &Tensor,
    start: usize,
    len: usize,
    row0: usize,
) -> Result<Option<Tensor>> {
    let span = probe.key_span.clone();
    let wanted = probe_row_range(probe, start, len);
    let block = row0..row0 + probs.dim(2)?;
    let rows = wanted.start.max(block.start)..wanted.end.min(block.end);
    if rows.is_empty() || span.end > probs.dim(3)? {
        return Ok(None);
    }
    let local = (rows.start - row0)..(rows.end - row0);
    Ok(Some(probs.i((0, .., local, span))?.sum(1)?))
}

/// Which keys a layer's queries may see before any knockout, as transformers' masks say.
#[derive(Clone, Debug, Default)]
pub(super) struct Visibility {
    /// Gemma 3's local layers: keys with `k > p - window` only.
    pub(super) window: Option<usize>,
    /// Gemma 3: absolute positions of an image whose tokens see each other both ways.
    pub(super) image_block: Option<Range<usize>>,
}

impl Visibility {
    /// transformers' composition: global `causal OR block`; local `(causal OR block) AND
    /// window`.
    pub(super) fn sees(&self, query: usize, key: usize) -> bool {
        let causal = key <= query;
        let block = self
            .image_block
            .as_ref()
            .is_some_and(|b| b.contains(&query) && b.contains(&key));
        let window = self.window.is_none_or(|w| key + w > query);
        (causal || block) && window
    }
}

/// Additive mask (rows, S) for the pass's query `rows`: what the layer's queries may not see
/// (`-inf`: the future, outside a local window), plus `f32::MIN` on knocked-out edges in this
/// layer.
#[allow(clippy::too_many_arguments)]
pub(super) fn attention_mask(
    rows: Range<usize>,
    start: usize,
    total: usize,
    visibility: &Visibility,
    layer: usize,
    edges: Option<&EdgeMask>,
    device: &Device,
) -> Result<Tensor> {
    let n = rows.len();
    let mut mask = vec![0f32; n * total];
    for (i, row) in rows.clone().enumerate() {
        let position = start + row;
        for key in 0..total {
            if !visibility.sees(position, key) {
                mask[i * total + key] = f32::NEG_INFINITY;
            }
        }
    }
    for edges in edges.into_iter().flat_map(EdgeMask::chain) {
        if !(edges.layers.contains(&layer) && !edges.blocked_keys.is_empty()) {
            continue;
        }
        for (i, row) in rows.clone().enumerate() {
            if start + row < edges.queries_from {
                continue;
            }
            for &key in &edges.blocked_keys {
                if key < total && visibility.sees(start + row, key) {
                    mask[i * total + key] = f32::MIN;
                }
            }
        }
    }
    Tensor::from_vec(mask, (n, total), device)
}

//! The paper's method as plain math on attention grids: relative maps, attention triage, the
//! knockout edge set, and grounding metrics against regions. No candle types in the public
//! API: attention arrives as `L x H x N` floats, results leave as plain vectors.
//!
//! Conventions follow the VGRefine reference implementation (see README "Fidelity"):
//! - triage: head (l, h) question map / (head-mean general map of layer l + 1e-10);
//! - per-layer metrics: head-mean question map / (head-mean general map + 1e-10);
//! - per-head metrics and head ranking: head (l, h) question map / (same head's general + 1e-10).

pub mod causal;
pub mod faithfulness;
pub mod mask;
pub mod metrics;
pub mod refine;
pub mod region;
pub mod triage;

/// Attention of one query (row set) over N image tokens, per layer and head: `[l][h][i]`.
pub type LayerHeadMaps = Vec<Vec<Vec<f32>>>;

pub const EPSILON_RELATIVE: f32 = 1e-10;

/// Split per-layer `H x N` rows (as the model probe returns them) into `[l][h][i]`.
pub fn split_heads(per_layer: &[Vec<f32>], heads: usize) -> LayerHeadMaps {
    per_layer
        .iter()
        .map(|layer| {
            let n = layer.len() / heads.max(1);
            (0..heads)
                .map(|h| layer[h * n..(h + 1) * n].to_vec())
                .collect()
        })
        .collect()
}

/// Element-wise mean of equally long maps.
pub fn mean_map<'a>(maps: impl IntoIterator<Item = &'a Vec<f32>>) -> Vec<f32> {
    let mut sum: Vec<f64> = Vec::new();
    let mut count = 0usize;
    for map in maps {
        if sum.is_empty() {
            sum = vec![0.0; map.len()];
        }
        for (s, &v) in sum.iter_mut().zip(map) {
            *s += v as f64;
        }
        count += 1;
    }
    sum.into_iter()
        .map(|s| (s / count.max(1) as f64) as f32)
        .collect()
}

/// `numerator / (denominator + 1e-10)` element-wise.
pub fn relative(numerator: &[f32], denominator: &[f32]) -> Vec<f32> {
    numerator
        .iter()
        .zip(denominator)
        .map(|(q, g)| q / (g + EPSILON_RELATIVE))
        .collect()
}

/// The three relative-map conventions of the reference, or none (`normalize = false`).
pub struct RelativeMaps<'a> {
    pub question: &'a LayerHeadMaps,
    pub general: &'a LayerHeadMaps,
    pub normalize: bool,
}

impl RelativeMaps<'_> {
    /// Triage map of head (l, h): question / head-mean general of layer l.
    pub fn triage(&self, layer: usize, head: usize) -> Vec<f32> {
        let question = &self.question[layer][head];
        if !self.normalize {
            return question.clone();
        }
        relative(question, &mean_map(&self.general[layer]))
    }

    /// Per-layer map: head-mean question / head-mean general.
    pub fn layer(&self, layer: usize) -> Vec<f32> {
        let question = mean_map(&self.question[layer]);
        if !self.normalize {
            return question;
        }
        relative(&question, &mean_map(&self.general[layer]))
    }

    /// Per-head map: question / the same head's general map.
    pub fn head(&self, layer: usize, head: usize) -> Vec<f32> {
        let question = &self.question[layer][head];
        if !self.normalize {
            return question.clone();
        }
        relative(question, &self.general[layer][head])
    }
}

//! Where the answer depends, not only where it looked: the causal knockout map. The image-token
//! grid is cut into cells; for each cell, the edges from every token after the image to that
//! cell's image tokens are blocked in the chosen layers (prefill only, as `--knockout-tokens`
//! does), and the log-probability of the original answer's first token is read again. The
//! drop (base - knocked out) is how much the answer depends on the cell.
//!
//! All cells run as batches of masked suffixes on the image's shared prefix
//! (`ImageSession::run_batch`): a 6 x 6 map costs 36 suffixes, about one more prefill, never 36
//! prefills. The agreement with an attention map (pooled to the same cells: the attention mass
//! each cell's knockout removes) is Spearman's rank correlation and whether the hottest
//! attention cell is the most causal one.

use anyhow::{bail, Result};

use crate::model::{image_key_positions, EdgeMask, ImageSession, RunOptions, TokenisedPrompt};

/// Log-softmax of `token` under `logits` (in f64).
pub fn log_probability(logits: &[f32], token: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let total: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    logits[token] as f64 - max - total.ln()
}

/// How the grid is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cells {
    /// R x C cells: token (r, c) of a rows x cols grid lies in cell
    /// (floor(r * R / rows), floor(c * C / cols)).
    Grid(usize, usize),
    /// One cell per image token.
    Tokens,
}

impl Cells {
    /// `RxC` (e.g. `6x6`) or `tokens`.
    pub fn parse(spec: &str) -> Result<Cells> {
        let spec = spec.trim();
        if spec.eq_ignore_ascii_case("tokens") {
            return Ok(Cells::Tokens);
        }
        let parsed = spec
            .split_once(['x', 'X'])
            .and_then(|(r, c)| Some((r.trim().parse().ok()?, c.trim().parse().ok()?)));
        match parsed {
            Some((r, c)) if r > 0 && c > 0 => Ok(Cells::Grid(r, c)),
            _ => bail!(
                "--causal-map wants RxC (e.g. 6x6, both at least 1) or `tokens`, got {spec:?}"
            ),
        }
    }

    /// (R, C) on a rows x cols grid; a grid finer than the tokens is refused.
    pub fn shape(self, (rows, cols): (usize, usize)) -> Result<(usize, usize)> {
        match self {
            Cells::Tokens => Ok((rows, cols)),
            Cells::Grid(r, c) if r > rows || c > cols => bail!(
                "a {r}x{c} causal map is finer than this image's {rows}x{cols} image tokens: \
                 use at most {rows}x{cols} (or `tokens`)"
            ),
            Cells::Grid(r, c) => Ok((r, c)),
        }
    }
}

/// The image tokens of each cell, raster order (cell index = cell_row * C + cell_col).
pub fn cell_tokens(
    (rows, cols): (usize, usize),
    (r_cells, c_cells): (usize, usize),
) -> Vec<Vec<usize>> {
    let mut cells = vec![Vec::new(); r_cells * c_cells];
    for r in 0..rows {
        for c in 0..cols {
            let cell = (r * r_cells / rows) * c_cells + c * c_cells / cols;
            cells[cell].push(r * cols + c);
        }
    }
    cells
}

/// Which layers the knockout applies in: `all` or `l,l,...`.
pub fn parse_layers(spec: &str, num_layers: usize) -> Result<Vec<usize>> {
    if spec.trim().eq_ignore_ascii_case("all") {
        return Ok((0..num_layers).collect());
    }
    let mut layers = Vec::new();
    for part in spec.split(',') {
        let Ok(layer) = part.trim().parse::<usize>() else {
            bail!("--causal-layers wants `all` or layer numbers like 0,1,2, got {part:?}");
        };
        if layer >= num_layers {
            bail!("--causal-layers: layer {layer} is out of range (the model has {num_layers})");
        }
        layers.push(layer);
    }
    layers.sort_unstable();
    layers.dedup();
    Ok(layers)
}

/// The token whose log-probability the map follows.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Target {
    pub id: u32,
    pub token: String,
}

/// How well an attention map agrees with the causal map.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Agreement {
    /// Spearman's rank correlation between the pooled attention and the drop (null when either
    /// is constant).
    pub spearman: Option<f64>,
    /// The cell with the most attention is the cell whose knockout drops the answer most.
    pub top_cell_hit: bool,
    /// What the attention map was ("triage_map" or "mean_attention").
    pub map: String,
}

/// A causal knockout map (INSPECT-JSON's `causal`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CausalMap {
    pub cells: [usize; 2],
    pub cell_tokens: Vec<Vec<usize>>,
    pub layers: Vec<usize>,
    pub target: Target,
    pub base_logprob: f64,
    pub logprob: Vec<f64>,
    /// base_logprob - logprob, per cell.
    pub drop: Vec<f64>,
    pub agreement: Option<Agreement>,
    /// Suffix rows the map ran (cells x the question's suffix).
    pub suffix_tokens: usize,
}

impl CausalMap {
    /// The cell whose knockout drops the answer most (raster index) and that drop.
    pub fn most_causal(&self) -> Option<(usize, f64)> {
        self.drop
            .iter()
            .copied()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }
}

/// Suffix passes per `run_batch` call: enough to fill the matrix kernels, few enough that a
/// per-token map of a large grid never holds thousands of suffix caches at once.
const BATCH: usize = 64;

/// `score` of the first-token logits of `prompt` with each of `knockouts` (image-token
/// lists) knocked out of `layers` (edges from every token after the image, prefill only), in
/// batches of `batch` suffix passes on the shared prefix.
pub fn knockout_scores(
    session: &mut ImageSession,
    prompt: &TokenisedPrompt,
    knockouts: &[&[usize]],
    layers: &[usize],
    batch: usize,
    score: impl Fn(&[f32]) -> f64,
) -> Result<Vec<f64>> {
    let none = &mut |_, _| true;
    knockout_scores_with(session, prompt, knockouts, layers, None, batch, score, none)
}

/// As [`knockout_scores`], each knockout also blocking the edges of `with` (an answer's own
/// knockout: VGRefine's), telling `progress(done, total)` after each batch; it returns false to
/// cancel (the result is then an error saying so).
#[allow(clippy::too_many_arguments)]
pub fn knockout_scores_with(
    session: &mut ImageSession,
    prompt: &TokenisedPrompt,
    knockouts: &[&[usize]],
    layers: &[usize],
    with: Option<&EdgeMask>,
    batch: usize,
    score: impl Fn(&[f32]) -> f64,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Vec<f64>> {
    let options: Vec<RunOptions> = knockouts
        .iter()
        .map(|tokens| RunOptions {
            max_new_tokens: 1,
            stop_at_eos: false,
            knockout: Some(EdgeMask {
                layers: layers.to_vec(),
                queries_from: prompt.image_span.end,
                blocked_keys: image_key_positions(&prompt.image_span, tokens),
                and: with.cloned().map(Box::new),
            }),
            ..RunOptions::default()
        })
        .collect();
    let mut out = Vec::with_capacity(options.len());
    for chunk in options.chunks(batch.max(1)) {
        let jobs: Vec<_> = chunk.iter().map(|o| (prompt, o)).collect();
        for answer in session.run_batch(&jobs)? {
            out.push(score(&answer.first_token_logits));
        }
        if !progress(out.len(), options.len()) {
            bail!(
                "cancelled after {} of {} knockout passes",
                out.len(),
                options.len()
            );
        }
    }
    Ok(out)
}

/// The log-probability of `target` as the first answer token of `prompt` with each of
/// `knockouts` knocked out of `layers`.
pub fn logprobs_with(
    session: &mut ImageSession,
    prompt: &TokenisedPrompt,
    knockouts: &[Vec<usize>],
    layers: &[usize],
    target: u32,
) -> Result<Vec<f64>> {
    logprobs_with_progress(
        session,
        prompt,
        knockouts,
        layers,
        None,
        target,
        &mut |_, _| true,
    )
}

/// As [`logprobs_with`], each knockout also blocking `with`'s edges, telling
/// `progress(done, total)` (false cancels).
pub fn logprobs_with_progress(
    session: &mut ImageSession,
    prompt: &TokenisedPrompt,
    knockouts: &[Vec<usize>],
    layers: &[usize],
    with: Option<&EdgeMask>,
    target: u32,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Vec<f64>> {
    let knockouts: Vec<&[usize]> = knockouts.iter().map(Vec::as_slice).collect();
    let score = |logits: &[f32]| log_probability(logits, target as usize);
    knockout_scores_with(
        session, prompt, &knockouts, layers, with, BATCH, score, progress,
    )
}

/// The causal map of `prompt`, following `target` (the original answer's first token) from its
/// unknocked log-probability `base_logprob`.
pub fn map(
    session: &mut ImageSession,
    prompt: &TokenisedPrompt,
    cells: Cells,
    layers: &[usize],
    target: Target,
    base_logprob: f64,
) -> Result<CausalMap> {
    map_with(
        session,
        prompt,
        cells,
        layers,
        None,
        target,
        base_logprob,
        &mut |_, _| true,
    )
}

/// As [`map`], for an answer that already had `with` knocked out (VGRefine's answer: each cell's
/// knockout adds to it; `base_logprob` is then that answer's own), telling
/// `progress(done, total)` after each batch of cells (false cancels).
#[allow(clippy::too_many_arguments)]
pub fn map_with(
    session: &mut ImageSession,
    prompt: &TokenisedPrompt,
    cells: Cells,
    layers: &[usize],
    with: Option<&EdgeMask>,
    target: Target,
    base_logprob: f64,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<CausalMap> {
    if layers.is_empty() {
        bail!("the causal map needs at least one layer to knock out in");
    }
    let shape = cells.shape(session.grid)?;
    let cell_tokens = cell_tokens(session.grid, shape);
    let logprob = logprobs_with_progress(
        session,
        prompt,
        &cell_tokens,
        layers,
        with,
        target.id,
        progress,
    )?;
    let drop = logprob.iter().map(|&l| base_logprob - l).collect();
    Ok(CausalMap {
        cells: [shape.0, shape.1],
        suffix_tokens: cell_tokens.len() * prompt.after_image().len(),
        cell_tokens,
        layers: layers.to_vec(),
        target,
        base_logprob,
        logprob,
        drop,
        agreement: None,
    })
}

/// An image-token map summed over each cell's tokens (the attention mass a cell's knockout
/// removes).
pub fn pool(map: &[f32], cell_tokens: &[Vec<usize>]) -> Vec<f64> {
    cell_tokens
        .iter()
        .map(|tokens| tokens.iter().map(|&t| map[t] as f64).sum())
        .collect()
}

/// Ranks 1..=n, ties given the mean of the ranks they span.
pub fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let mean = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = mean;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman's rank correlation (Pearson's on the tie-averaged ranks); None when either side is
/// constant or there are fewer than two values.
pub fn spearman(a: &[f64], b: &[f64]) -> Option<f64> {
    assert_eq!(a.len(), b.len());
    if a.len() < 2 {
        return None;
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let n = a.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        cov += (x - ma) * (y - mb);
        va += (x - ma) * (x - ma);
        vb += (y - mb) * (y - mb);
    }
    if va == 0.0 || vb == 0.0 {
        return None;
    }
    Some(cov / (va * vb).sqrt())
}

/// Index of the largest value (the first of equals).
fn argmax(values: &[f64]) -> Option<usize> {
    values
        .iter()
        .enumerate()
        .fold(None, |best: Option<(usize, f64)>, (i, &v)| match best {
            Some((_, b)) if b >= v => best,
            _ => Some((i, v)),
        })
        .map(|(i, _)| i)
}

/// How `attention` (one value per image token) agrees with the map's drops.
pub fn agreement(
    attention: &[f32],
    cell_tokens: &[Vec<usize>],
    drop: &[f64],
    name: &str,
) -> Agreement {
    let pooled = pool(attention, cell_tokens);
    Agreement {
        spearman: spearman(&pooled, drop),
        top_cell_hit: argmax(&pooled).is_some() && argmax(&pooled) == argmax(drop),
        map: name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_follow_the_floor_rule() {
        // 5 x 4 tokens into 2 x 3 cells: row r in cell row floor(r * 2 / 5), col c in
        // floor(c * 3 / 4), written out by hand.
        let cells = cell_tokens((5, 4), (2, 3));
        assert_eq!(cells.len(), 6);
        // Rows 0-2 (0*2/5=0, 1*2/5=0, 2*2/5=0; 3*2/5=1, 4*2/5=1); cols 0 (0), 1 (0), 2 (1), 3 (2).
        assert_eq!(cells[0], vec![0, 1, 4, 5, 8, 9]);
        assert_eq!(cells[1], vec![2, 6, 10]);
        assert_eq!(cells[2], vec![3, 7, 11]);
        assert_eq!(cells[3], vec![12, 13, 16, 17]);
        assert_eq!(cells[4], vec![14, 18]);
        assert_eq!(cells[5], vec![15, 19]);
        // Every token in exactly one cell; `tokens` is one per token.
        let mut all: Vec<usize> = cells.concat();
        all.sort_unstable();
        assert_eq!(all, (0..20).collect::<Vec<_>>());
        let per_token = cell_tokens((5, 4), Cells::Tokens.shape((5, 4)).unwrap());
        assert!(per_token.iter().enumerate().all(|(i, c)| c == &vec![i]));
    }

    #[test]
    fn specs_are_parsed_and_bad_ones_refused() {
        assert_eq!(Cells::parse("6x6").unwrap(), Cells::Grid(6, 6));
        assert_eq!(Cells::parse(" 3X4 ").unwrap(), Cells::Grid(3, 4));
        assert_eq!(Cells::parse("tokens").unwrap(), Cells::Tokens);
        for bad in ["", "6", "0x3", "ax3", "3x", "-1x2"] {
            let message = Cells::parse(bad).unwrap_err().to_string();
            assert!(message.contains("--causal-map"), "{bad}: {message}");
        }
        let finer = Cells::Grid(30, 2).shape((24, 24)).unwrap_err().to_string();
        assert!(finer.contains("finer than this image's 24x24"), "{finer}");
        assert_eq!(parse_layers("all", 4).unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(parse_layers("3, 1,1", 4).unwrap(), vec![1, 3]);
        assert!(parse_layers("4", 4)
            .unwrap_err()
            .to_string()
            .contains("out of range"));
        assert!(parse_layers("x", 4)
            .unwrap_err()
            .to_string()
            .contains("--causal-layers"));
    }

    #[test]
    fn spearman_by_hand() {
        // No ties: d = rank differences (1,2,3,4,5) vs (2,1,4,3,5): d^2 sum = 4,
        // rho = 1 - 6 * 4 / (5 * 24) = 0.8.
        let rho = spearman(&[1.0, 2.0, 3.0, 4.0, 5.0], &[20.0, 10.0, 40.0, 30.0, 50.0]).unwrap();
        assert!((rho - 0.8).abs() < 1e-12, "{rho}");
        // Reversed order: -1. Monotone but not linear: 1.
        let rho = spearman(&[1.0, 2.0, 3.0], &[9.0, 4.0, 1.0]).unwrap();
        assert!((rho + 1.0).abs() < 1e-12);
        let rho = spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 8.0, 27.0, 1000.0]).unwrap();
        assert!((rho - 1.0).abs() < 1e-12);
        // Ties take the mean rank: (1, 2, 2, 3) -> ranks (1, 2.5, 2.5, 4); against (1, 2, 3, 4)
        // Pearson of ranks: mean 2.5 both; cov = (-1.5)(-1.5) + 0 + 0 + (1.5)(1.5) = 4.5;
        // var_a = 2.25 + 0 + 0 + 2.25 = 4.5; var_b = 2.25 + 0.25 + 0.25 + 2.25 = 5.
        assert_eq!(ranks(&[1.0, 2.0, 2.0, 3.0]), vec![1.0, 2.5, 2.5, 4.0]);
        let rho = spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert!((rho - 4.5 / (4.5f64 * 5.0).sqrt()).abs() < 1e-12, "{rho}");
        // Constant side: undefined.
        assert_eq!(spearman(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), None);
        assert_eq!(spearman(&[1.0], &[2.0]), None);
    }

    #[test]
    fn agreement_pools_attention_to_cells() {
        // 2 x 2 tokens, 1 x 2 cells: cell 0 = tokens {0, 2}, cell 1 = {1, 3}.
        let cells = cell_tokens((2, 2), (1, 2));
        assert_eq!(cells, vec![vec![0, 2], vec![1, 3]]);
        let attention = [0.1f32, 0.3, 0.2, 0.4];
        let pooled = pool(&attention, &cells);
        assert!((pooled[0] - 0.3).abs() < 1e-6 && (pooled[1] - 0.7).abs() < 1e-6);
        let hit = agreement(&attention, &cells, &[0.5, 2.0], "triage_map");
        assert!(hit.top_cell_hit);
        assert_eq!(hit.spearman, Some(1.0));
        let miss = agreement(&attention, &cells, &[2.0, 0.5], "triage_map");
        assert!(!miss.top_cell_hit);
        assert_eq!(miss.spearman, Some(-1.0));
    }
}

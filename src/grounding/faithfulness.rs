//! How much the answer depends on where the model looked: knock out image tokens in the order of
//! a map (most attended first), a growing fraction at a time, and follow the probability of the
//! original first answer token; the same in random orders as the baseline. A map that really
//! carries the answer makes the probability fall faster than random: a lower area under the
//! curve.
//!
//! Each step is one suffix pass on the shared image prefix (the knockout blocks edges from the
//! question to the image; the prefix is unchanged), so a curve of 21 fractions and 5 random
//! orders costs 126 suffix passes, not 126 prefills.

use anyhow::{bail, Result};

use crate::model::{ImageSession, RunOptions, TokenisedPrompt};

/// How a curve is measured.
#[derive(Clone, Debug, PartialEq)]
pub struct CurveSettings {
    /// Fraction of image tokens added per step (0.05: 21 points from 0 to 1).
    pub step: f64,
    /// Decoder layers the knockout applies in.
    pub layers: Vec<usize>,
    /// Random orders for the baseline.
    pub random_draws: usize,
    pub seed: u64,
}

impl Default for CurveSettings {
    fn default() -> Self {
        CurveSettings {
            step: 0.05,
            layers: Vec::new(),
            random_draws: 5,
            seed: 0,
        }
    }
}

/// A faithfulness curve (INSPECT-JSON's `faithfulness`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Curve {
    /// What ordered the tokens ("triage_map", ...).
    pub order: String,
    pub fractions: Vec<f64>,
    /// Probability of the original first answer token at each fraction, map order.
    pub prob: Vec<f64>,
    pub random_mean: Vec<f64>,
    /// Lowest and highest probability over the random orders at each fraction.
    pub random_band: Vec<[f64; 2]>,
    /// Trapezoidal areas under `prob` and `random_mean` over fractions 0..1.
    pub auc: f64,
    pub random_auc: f64,
    /// The token followed (the original answer's first), and the layers knocked out.
    pub token_id: u32,
    pub layers: Vec<usize>,
    pub random_draws: usize,
    pub seed: u64,
}

/// Token indices by decreasing `map` value (ties: lower index first).
pub fn attention_order(map: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..map.len()).collect();
    order.sort_by(|&a, &b| map[b].total_cmp(&map[a]).then(a.cmp(&b)));
    order
}

/// A random permutation of `0..n` (SplitMix64 + Fisher-Yates: the same for a seed everywhere).
pub fn random_order(n: usize, seed: u64) -> Vec<usize> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// Fractions 0, step, 2 step, ..., 1 (the last one exactly 1).
pub fn fractions(step: f64) -> Result<Vec<f64>> {
    if !(step > 0.0 && step <= 1.0) {
        bail!("the faithfulness step must be in (0, 1], got {step}");
    }
    let steps = (1.0 / step).round().max(1.0) as usize;
    Ok((0..=steps).map(|i| (i as f64 * step).min(1.0)).collect())
}

/// Trapezoidal area under `y` over `x`.
pub fn area(x: &[f64], y: &[f64]) -> f64 {
    x.windows(2)
        .zip(y.windows(2))
        .map(|(x, y)| (x[1] - x[0]) * (y[0] + y[1]) / 2.0)
        .sum()
}

/// Softmax probability of `token` under `logits` (in f64).
pub fn probability(logits: &[f32], token: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let total: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    (logits[token] as f64 - max).exp() / total
}

/// Softmax probability of the most probable token (the greedy answer's).
pub fn top_probability(logits: &[f32]) -> f64 {
    if logits.is_empty() {
        return f64::NAN;
    }
    probability(logits, crate::model::decoder::argmax(logits))
}

/// Knockout passes run together (`ImageSession::run_batch`): one read of the weights per
/// batch instead of per pass.
const BATCH: usize = 16;

/// The probability of `token` as the first answer token with, for each `(order, count)`, the
/// first `count` tokens of `order` knocked out of `layers`, in batches of [`BATCH`] passes.
fn probabilities_with(
    session: &mut ImageSession,
    prompt: &TokenisedPrompt,
    knockouts: &[(&[usize], usize)],
    layers: &[usize],
    token: usize,
) -> Result<Vec<f64>> {
    let knockouts: Vec<&[usize]> = knockouts.iter().map(|&(o, count)| &o[..count]).collect();
    super::causal::knockout_scores(session, prompt, &knockouts, layers, BATCH, |logits| {
        probability(logits, token)
    })
}

/// The curve of `prompt` for the tokens ordered by `map` (one value per image token).
pub fn curve(
    session: &mut ImageSession,
    prompt: &TokenisedPrompt,
    map: &[f32],
    order_name: &str,
    settings: &CurveSettings,
) -> Result<Curve> {
    let n = session.num_image_tokens();
    if map.len() != n {
        bail!("the map has {} values for {n} image tokens", map.len());
    }
    let layers_total = session.model.decoder.num_layers();
    if settings.layers.is_empty() {
        bail!("the faithfulness curve needs at least one layer to knock out in");
    }
    if let Some(&bad) = settings.layers.iter().find(|&&l| l >= layers_total) {
        bail!("layer {bad} is out of range (the model has {layers_total})");
    }
    let fractions = fractions(settings.step)?;
    let counts: Vec<usize> = fractions
        .iter()
        .map(|f| ((f * n as f64).round() as usize).min(n))
        .collect();
    // The token followed: the plain answer's first.
    let plain = session.run(
        prompt,
        &RunOptions {
            max_new_tokens: 1,
            stop_at_eos: false,
            ..RunOptions::default()
        },
    )?;
    let token = crate::model::decoder::argmax(&plain.first_token_logits);
    let by_map = attention_order(map);
    let randoms: Vec<Vec<usize>> = (0..settings.random_draws)
        .map(|draw| random_order(n, settings.seed.wrapping_add(draw as u64)))
        .collect();
    // Every pass of the curve: the map's order, then each random draw's, at every count.
    let knockouts: Vec<(&[usize], usize)> = std::iter::once(&by_map)
        .chain(&randoms)
        .flat_map(|order| counts.iter().map(move |&count| (order.as_slice(), count)))
        .collect();
    let all = probabilities_with(session, prompt, &knockouts, &settings.layers, token)?;
    let mut rows = all.chunks(counts.len()).map(<[f64]>::to_vec);
    let prob = rows.next().expect("the map's curve");
    let draws: Vec<Vec<f64>> = rows.collect();
    let random_mean: Vec<f64> = (0..counts.len())
        .map(|i| draws.iter().map(|d| d[i]).sum::<f64>() / draws.len().max(1) as f64)
        .collect();
    let random_band: Vec<[f64; 2]> = (0..counts.len())
        .map(|i| {
            let lo = draws.iter().map(|d| d[i]).fold(f64::INFINITY, f64::min);
            let hi = draws.iter().map(|d| d[i]).fold(f64::NEG_INFINITY, f64::max);
            [lo, hi]
        })
        .collect();
    Ok(Curve {
        order: order_name.to_string(),
        auc: area(&fractions, &prob),
        random_auc: area(&fractions, &random_mean),
        fractions,
        prob,
        random_mean,
        random_band,
        token_id: token as u32,
        layers: settings.layers.clone(),
        random_draws: settings.random_draws,
        seed: settings.seed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_and_areas_by_hand() {
        assert_eq!(attention_order(&[0.1, 0.5, 0.5, 0.2]), vec![1, 2, 3, 0]);
        let order = random_order(10, 3);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_eq!(order, random_order(10, 3));
        assert_ne!(order, random_order(10, 4));
        let f = fractions(0.25).unwrap();
        assert_eq!(f, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(fractions(0.05).unwrap().len(), 21);
        assert!(fractions(0.0).is_err() && fractions(1.5).is_err());
        // y = 1 - x: area 1/2; a step function 1, 1, 0, 0, 0: 0.25 * (1 + 0.5) = 0.375.
        let line: Vec<f64> = f.iter().map(|x| 1.0 - x).collect();
        assert!((area(&f, &line) - 0.5).abs() < 1e-12);
        assert!((area(&f, &[1.0, 1.0, 0.0, 0.0, 0.0]) - 0.375).abs() < 1e-12);
        // softmax of (0, ln 3): 1/4, 3/4.
        assert!((probability(&[0.0, 3f32.ln()], 1) - 0.75).abs() < 1e-7);
    }
}

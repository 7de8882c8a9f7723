//! Grounding metrics of an attention map against a region of image tokens G (of N):
//! attention ratio, KL(g || p), Jensen-Shannon divergence (as the reference computes them),
//! plus the pointing game and a soft IoU.

/// The metrics of one map against one region. `None` fields mean the region is empty.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Metrics {
    pub ratio: f64,
    pub kl: f64,
    pub js: f64,
    pub pointing: bool,
    pub soft_iou: f64,
}

/// Indicator of the region over N tokens.
fn inside(region: &[usize], n: usize) -> Vec<bool> {
    let mut mask = vec![false; n];
    for &token in region {
        if token < n {
            mask[token] = true;
        }
    }
    mask
}

/// Attention ratio: the share of attention inside G over the share a uniform map would put
/// there. `sum_G p / (sum p * |G| / N + 1e-8)`; 1 means no preference, larger is better.
pub fn attention_ratio(map: &[f32], region: &[usize]) -> f64 {
    let mask = inside(region, map.len());
    let count = mask.iter().filter(|&&m| m).count() as f64;
    let total: f64 = map.iter().map(|&v| v as f64).sum();
    let inner: f64 = map
        .iter()
        .zip(&mask)
        .filter(|(_, &m)| m)
        .map(|(&v, _)| v as f64)
        .sum();
    inner / (total * count / map.len() as f64 + 1e-8)
}

fn normalised(map: &[f32]) -> Vec<f64> {
    let total: f64 = map.iter().map(|&v| v as f64).sum();
    map.iter().map(|&v| v as f64 / (total + 1e-8)).collect()
}

fn uniform_over(region: &[usize], n: usize) -> Vec<f64> {
    let mask = inside(region, n);
    let count = mask.iter().filter(|&&m| m).count() as f64;
    mask.iter()
        .map(|&m| if m { 1.0 / count } else { 0.0 })
        .collect()
}

/// KL(g || p) with p the normalised map and g uniform over G, both clipped at 1e-12.
pub fn kl_divergence(map: &[f32], region: &[usize]) -> f64 {
    let p = normalised(map);
    let g = uniform_over(region, map.len());
    g.iter()
        .zip(&p)
        .map(|(&g, &p)| {
            let (g, p) = (g.max(1e-12), p.max(1e-12));
            g * (g / p).ln()
        })
        .sum()
}

/// Jensen-Shannon divergence between the normalised map and g, 1e-8 inside the logs.
pub fn js_divergence(map: &[f32], region: &[usize]) -> f64 {
    let p = normalised(map);
    let g = uniform_over(region, map.len());
    let mut p_to_m = 0.0;
    let mut g_to_m = 0.0;
    for (&p, &g) in p.iter().zip(&g) {
        let m = (p + g) / 2.0;
        p_to_m += p * ((p + 1e-8) / (m + 1e-8)).ln();
        g_to_m += g * ((g + 1e-8) / (m + 1e-8)).ln();
    }
    (p_to_m + g_to_m) / 2.0
}

/// Pointing game: is the map's maximum (first on ties) inside the region?
pub fn pointing_game(map: &[f32], region: &[usize]) -> bool {
    let mut best = 0;
    for (i, &v) in map.iter().enumerate() {
        if v > map[best] {
            best = i;
        }
    }
    region.contains(&best)
}

/// Soft IoU: sum min(p', g') / sum max(p', g') with p' the map scaled to max 1 and g' the
/// region indicator.
pub fn soft_iou(map: &[f32], region: &[usize]) -> f64 {
    let max = map.iter().copied().fold(0.0f32, f32::max) as f64;
    let mask = inside(region, map.len());
    let (mut intersection, mut union) = (0.0, 0.0);
    for (&v, &m) in map.iter().zip(&mask) {
        let p = if max > 0.0 { v as f64 / max } else { 0.0 };
        let g = if m { 1.0 } else { 0.0 };
        intersection += p.min(g);
        union += p.max(g);
    }
    if union > 0.0 {
        intersection / union
    } else {
        0.0
    }
}

/// All metrics of `map` against `region`; `None` when the region has no token.
pub fn compute(map: &[f32], region: &[usize]) -> Option<Metrics> {
    if region.iter().all(|&t| t >= map.len()) {
        return None;
    }
    Some(Metrics {
        ratio: attention_ratio(map, region),
        kl: kl_divergence(map, region),
        js: js_divergence(map, region),
        pointing: pointing_game(map, region),
        soft_iou: soft_iou(map, region),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOLERANCE: f64 = 1e-9;

    #[test]
    fn ratio_of_a_hand_grid() {
        // 2x2 grid, map [0.1, 0.2, 0.3, 0.4], region {3}: 0.4 / (1.0 * 1 / 4 + 1e-8) = 1.6.
        let map = [0.1, 0.2, 0.3, 0.4];
        let expected = 0.4f32 as f64
            / (((0.1f32 as f64 + 0.2f32 as f64) + 0.3f32 as f64 + 0.4f32 as f64) * 0.25 + 1e-8);
        assert!((attention_ratio(&map, &[3]) - expected).abs() < TOLERANCE);
        assert!((attention_ratio(&map, &[3]) - 1.6).abs() < 1e-6);
        // A region covering everything has ratio 1 (up to the 1e-8).
        assert!((attention_ratio(&map, &[0, 1, 2, 3]) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn kl_of_a_hand_grid() {
        // p = [0.1, 0.2, 0.3, 0.4], g uniform on {2, 3} = [0, 0, .5, .5]:
        // KL = .5 ln(.5/.3) + .5 ln(.5/.4) + 2 * 1e-12 ln(1e-12 / p_i).
        let map = [0.1, 0.2, 0.3, 0.4];
        let total: f64 = map.iter().map(|&v: &f32| v as f64).sum();
        let p: Vec<f64> = map
            .iter()
            .map(|&v: &f32| v as f64 / (total + 1e-8))
            .collect();
        let expected = 0.5 * (0.5 / p[2]).ln()
            + 0.5 * (0.5 / p[3]).ln()
            + 1e-12 * (1e-12 / p[0]).ln()
            + 1e-12 * (1e-12 / p[1]).ln();
        assert!((kl_divergence(&map, &[2, 3]) - expected).abs() < TOLERANCE);
        assert!(
            (kl_divergence(&map, &[2, 3])
                - (0.5 * (0.5f64 / 0.3).ln() + 0.5 * (0.5f64 / 0.4).ln()))
            .abs()
                < 1e-6
        );
    }

    #[test]
    fn js_of_a_hand_grid() {
        // p = [.5, .5], g = [1, 0]: m = [.75, .25];
        // JS = ( .5 ln(.5/.75) + .5 ln(.5/.25) + 1 ln(1/.75) ) / 2.
        let expected =
            (0.5 * (0.5f64 / 0.75).ln() + 0.5 * (0.5f64 / 0.25).ln() + (1.0f64 / 0.75).ln()) / 2.0;
        assert!((js_divergence(&[0.5, 0.5], &[0]) - expected).abs() < 1e-7);
        // Identical distributions: JS = 0.
        assert!(js_divergence(&[0.25; 4], &[0, 1, 2, 3]).abs() < 1e-7);
    }

    #[test]
    fn one_token_region_and_pointing() {
        let map = [0.0, 3.0, 1.0, 3.0];
        assert!(pointing_game(&map, &[1]), "first maximum is token 1");
        assert!(!pointing_game(&map, &[3]));
        let metrics = compute(&map, &[1]).unwrap();
        assert!((metrics.ratio - 3.0 / (7.0 * 0.25 + 1e-8)).abs() < TOLERANCE);
        assert!((metrics.soft_iou - 1.0 / (1.0 + 1.0 / 3.0 + 1.0)).abs() < TOLERANCE);
    }

    #[test]
    fn all_zero_map_and_empty_region() {
        let zeros = [0.0f32; 4];
        let metrics = compute(&zeros, &[0, 1]).unwrap();
        assert_eq!(metrics.ratio, 0.0);
        // p is all zeros, clipped to 1e-12: KL = 2 * .5 ln(.5 / 1e-12) (+ 2 * 1e-12 ln 1).
        assert!((metrics.kl - (0.5f64 / 1e-12).ln()).abs() < 1e-6);
        assert!(
            compute(&zeros, &[]).is_none(),
            "a region outside the image has no metrics"
        );
        assert!(compute(&zeros, &[7]).is_none());
    }
}

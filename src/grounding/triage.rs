//! Step I, attention triage: average the relative maps of the visually sensitive heads and
//! keep the high-attention image tokens; the rest are knocked out in step II.

use super::RelativeMaps;

/// Which tokens to knock out.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rule {
    /// Knock out tokens whose score is below the P-th percentile (numpy linear interpolation).
    Percentile(f64),
    /// Knock out tokens below T after min-max normalising the score map to 0..1.
    Magnitude(f64),
}

impl Rule {
    pub fn validate(self) -> Result<Self, String> {
        match self {
            Rule::Percentile(p) if !(0.0..=100.0).contains(&p) => {
                Err(format!("percentile must be within 0..100, got {p}"))
            }
            Rule::Magnitude(t) if !(0.0..=1.0).contains(&t) => {
                Err(format!("magnitude must be within 0..1, got {t}"))
            }
            rule => Ok(rule),
        }
    }

    pub fn to_json(self) -> serde_json::Value {
        match self {
            Rule::Percentile(p) => serde_json::json!({ "percentile": p }),
            Rule::Magnitude(t) => serde_json::json!({ "magnitude": t }),
        }
    }
}

/// numpy's `percentile(values, p)` with the default linear method.
pub fn percentile(values: &[f32], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted: Vec<f64> = values.iter().map(|&v| v as f64).collect();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let fraction = rank - lo as f64;
    // numpy's _lerp: a + (b - a) * t, switched to b - (b - a) * (1 - t) when t >= 0.5.
    let (a, b) = (sorted[lo], sorted[hi]);
    if fraction >= 0.5 {
        b - (b - a) * (1.0 - fraction)
    } else {
        a + (b - a) * fraction
    }
}

/// The triage result: the aggregated score map, the threshold and the tokens to knock out.
#[derive(Clone, Debug, PartialEq)]
pub struct Triage {
    pub score_map: Vec<f32>,
    pub threshold: f64,
    pub knocked_out: Vec<usize>,
}

/// Mean of the relative maps of `heads` (layer, head).
pub fn score_map(maps: &RelativeMaps, heads: &[(usize, usize)]) -> Vec<f32> {
    let per_head: Vec<Vec<f32>> = heads.iter().map(|&(l, h)| maps.triage(l, h)).collect();
    super::mean_map(&per_head)
}

/// Apply the rule to a score map.
pub fn triage(score_map: Vec<f32>, rule: Rule) -> Triage {
    let (threshold, knocked_out) = match rule {
        Rule::Percentile(p) => {
            let threshold = percentile(&score_map, p);
            let knocked = (0..score_map.len())
                .filter(|&i| (score_map[i] as f64) < threshold)
                .collect();
            (threshold, knocked)
        }
        Rule::Magnitude(t) => {
            let normalised = min_max_normalise(&score_map);
            let knocked = (0..normalised.len())
                .filter(|&i| (normalised[i] as f64) < t)
                .collect();
            (t, knocked)
        }
    };
    Triage {
        score_map,
        threshold,
        knocked_out,
    }
}

/// Map values to 0..1 by min-max; all zeros when the map is flat.
pub fn min_max_normalise(values: &[f32]) -> Vec<f32> {
    let min = values.iter().copied().fold(f32::INFINITY, f32::min);
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !(max > min) {
        return vec![0.0; values.len()];
    }
    values.iter().map(|v| (v - min) / (max - min)).collect()
}

/// Parse `l:h,l:h,...`.
pub fn parse_heads(text: &str) -> Result<Vec<(usize, usize)>, String> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|pair| {
            let (l, h) = pair
                .trim()
                .split_once(':')
                .ok_or_else(|| format!("head {pair:?} is not LAYER:HEAD"))?;
            let l = l
                .trim()
                .parse()
                .map_err(|_| format!("layer {l:?} in {pair:?} is not a number"))?;
            let h = h
                .trim()
                .parse()
                .map_err(|_| format!("head {h:?} in {pair:?} is not a number"))?;
            Ok((l, h))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_matches_numpy_on_hand_values() {
        // np.percentile([1, 2, 3, 4], 80) = 3.4; [5, 1, 3] at 50 -> 3; at 0/100 -> min/max.
        assert!((percentile(&[1.0, 2.0, 3.0, 4.0], 80.0) - 3.4).abs() < 1e-12);
        assert_eq!(percentile(&[5.0, 1.0, 3.0], 50.0), 3.0);
        assert_eq!(percentile(&[5.0, 1.0, 3.0], 0.0), 1.0);
        assert_eq!(percentile(&[5.0, 1.0, 3.0], 100.0), 5.0);
        assert_eq!(percentile(&[2.0], 80.0), 2.0);
    }

    #[test]
    fn ties_at_the_threshold_are_kept() {
        // Scores [1, 2, 2, 2, 3]: 20th percentile = 1 + (2 - 1) * 0.8 = 1.8 -> only token 0 below.
        let result = triage(vec![1.0, 2.0, 2.0, 2.0, 3.0], Rule::Percentile(20.0));
        assert!((result.threshold - 1.8).abs() < 1e-12);
        assert_eq!(result.knocked_out, vec![0]);
        // 50th percentile = 2: the three 2s are not strictly below, so they stay.
        let result = triage(vec![1.0, 2.0, 2.0, 2.0, 3.0], Rule::Percentile(50.0));
        assert_eq!(result.knocked_out, vec![0]);
    }

    #[test]
    fn all_zero_map_knocks_out_nothing() {
        let result = triage(vec![0.0; 9], Rule::Percentile(80.0));
        assert!(result.knocked_out.is_empty());
        let result = triage(vec![0.0; 9], Rule::Magnitude(0.5));
        assert_eq!(
            result.knocked_out.len(),
            9,
            "a flat map normalises to zeros, all below 0.5"
        );
    }

    #[test]
    fn magnitude_rule_uses_min_max() {
        // [0, 5, 10] -> [0, 0.5, 1]; below 0.5: token 0 only.
        let result = triage(vec![0.0, 5.0, 10.0], Rule::Magnitude(0.5));
        assert_eq!(result.knocked_out, vec![0]);
    }

    #[test]
    fn heads_parse_and_reject() {
        assert_eq!(parse_heads("15:4, 16:5").unwrap(), vec![(15, 4), (16, 5)]);
        assert!(parse_heads("15-4").is_err());
        assert!(parse_heads("a:1").is_err());
        assert!(Rule::Percentile(101.0).validate().is_err());
        assert!(Rule::Magnitude(-0.1).validate().is_err());
    }
}

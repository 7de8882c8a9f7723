//! The segments of one case, as fovea exports them into a SEG: the drawn regions (MANUAL;
//! lesion or physical object), the triage mask (AUTOMATIC: the image tokens VGRefine keeps,
//! those at or above the triage threshold), and optionally the triage map thresholded at a
//! fraction of its range (AUTOMATIC). Token cells become pixels through the same mapping the
//! model input went through (pad, resize, crop), so a segment covers exactly the pixels whose
//! centres fall in its tokens' cells.

use super::seg::{Algorithm, Property, Segment};
use crate::grounding::region::{Region, TokenGrid};

/// A drawn region to export.
pub struct DrawnRegion<'a> {
    pub name: &'a str,
    pub distractor: bool,
    pub region: &'a Region,
}

/// The model side of a case: its token grid, the knocked-out tokens, the triage map.
pub struct CaseMaps<'a> {
    pub grid: &'a TokenGrid,
    pub knocked_out: &'a [usize],
    pub score_map: Option<&'a [f32]>,
    /// Said in the algorithm name: model, heads, rule.
    pub description: String,
}

impl<'a> CaseMaps<'a> {
    /// The maps of a VGRefine outcome on `grid`, described by its heads and masked layers.
    pub fn of(
        grid: &'a TokenGrid,
        outcome: &'a crate::grounding::refine::Outcome,
        heads: &[(usize, usize)],
        masked_layers: &[usize],
    ) -> CaseMaps<'a> {
        let heads: Vec<String> = heads.iter().map(|(l, h)| format!("{l}:{h}")).collect();
        CaseMaps {
            grid,
            knocked_out: &outcome.knocked_out,
            score_map: outcome.triage.as_ref().map(|t| t.score_map.as_slice()),
            description: format!(
                "heads {}, knockout in layer(s) {masked_layers:?}",
                heads.join(",")
            ),
        }
    }
}

/// Colours: drawn regions as the app draws them; the triage mask cyan, the map magenta.
pub fn case_segments(
    width: u32,
    height: u32,
    regions: &[DrawnRegion],
    maps: Option<&CaseMaps>,
    map_threshold: Option<f64>,
) -> Vec<Segment> {
    let mut segments: Vec<Segment> = regions
        .iter()
        .map(|r| Segment {
            label: r.name.to_string(),
            colour: if r.distractor {
                [255, 150, 30]
            } else {
                [60, 255, 60]
            },
            algorithm: Algorithm::Manual,
            property: if r.distractor {
                Property::Object
            } else {
                Property::Lesion
            },
            pixels: r.region.pixel_mask(width, height),
            shape: Some(r.region.clone()),
        })
        .collect();
    if let Some(maps) = maps {
        let n = maps.grid.rows * maps.grid.cols;
        let mut kept = vec![true; n];
        for &t in maps.knocked_out {
            if t < n {
                kept[t] = false;
            }
        }
        segments.push(Segment {
            label: "triage mask (kept tokens)".into(),
            colour: [0, 200, 255],
            algorithm: Algorithm::Automatic(format!(
                "fovea VGRefine attention triage: {}",
                maps.description
            )),
            property: Property::Attention,
            pixels: maps.grid.tokens_to_pixels(width, height, &kept),
            shape: None,
        });
        if let (Some(score), Some(fraction)) = (maps.score_map, map_threshold) {
            let (lo, hi) = score
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v), hi.max(v))
                });
            let cut = lo as f64 + fraction * (hi - lo) as f64;
            let above: Vec<bool> = score.iter().map(|&v| v as f64 >= cut && hi > lo).collect();
            segments.push(Segment {
                label: format!("triage map >= {:.0}% of its range", fraction * 100.0),
                colour: [255, 0, 200],
                algorithm: Algorithm::Automatic(format!(
                    "fovea triage map thresholded: {}",
                    maps.description
                )),
                property: Property::Attention,
                pixels: maps.grid.tokens_to_pixels(width, height, &above),
                shape: None,
            });
        }
    }
    segments
}

//! Cases that teach: a bundled case opens with its boxes as named regions and on the view that
//! tells its story (cases.jsonl's `"view"`), with its caption above the image. Without this the
//! story of a teaching case (a layer looking at the side marker before the knockout and not
//! after) was only found by picking the right entry of the Show menu by hand.

use super::state::{FoveaApp, NamedRegion, OverlayLayer, RegionRole};
use crate::demo::{CaseOverlay, DemoCase};
use crate::grounding::region::Region;

impl From<CaseOverlay> for OverlayLayer {
    fn from(overlay: CaseOverlay) -> Self {
        match overlay {
            CaseOverlay::Image => OverlayLayer::None,
            CaseOverlay::Triage => OverlayLayer::Triage,
            CaseOverlay::KnockedOut => OverlayLayer::KnockedOut,
            CaseOverlay::Before => OverlayLayer::Before,
            CaseOverlay::After => OverlayLayer::After,
            CaseOverlay::LayerMean { layer } => OverlayLayer::LayerMean { layer },
            CaseOverlay::Head { layer, head } => OverlayLayer::Head { layer, head },
        }
    }
}

/// The case's boxes as regions: its lesions (the metrics' targets) and its distractors; in a
/// conflict case the last distractor box is the side marker that contradicts the lesion, and is
/// named so, because that is the region a teaching caption talks about.
pub fn case_regions(case: &DemoCase) -> Vec<NamedRegion> {
    let named = |name: &str, k: usize, count: usize| {
        if count > 1 {
            format!("{name} {}", k + 1)
        } else {
            name.to_string()
        }
    };
    let mut regions: Vec<NamedRegion> = case
        .boxes
        .iter()
        .enumerate()
        .map(|(k, &xyxy_px)| NamedRegion {
            name: named("lesion", k, case.boxes.len()),
            region: Region::Box { xyxy_px },
            role: RegionRole::Target,
        })
        .collect();
    let (others, marker) = match case.distractor_boxes.split_last() {
        Some((last, others)) if case.conflict => (others, Some(last)),
        _ => (case.distractor_boxes.as_slice(), None),
    };
    regions.extend(
        others
            .iter()
            .enumerate()
            .map(|(k, &xyxy_px)| NamedRegion {
                name: named("distractor", k, others.len()),
                region: Region::Box { xyxy_px },
                role: RegionRole::Distractor,
            })
            .chain(marker.map(|&xyxy_px| NamedRegion {
                name: "marker".into(),
                region: Region::Box { xyxy_px },
                role: RegionRole::Distractor,
            })),
    );
    regions
}

/// Show the case's view: its overlay, the before | after panes and raw or relative maps (its
/// caption's numbers are of exactly that view). A case without a view but with a distractor
/// opens in before | after, so its regions' ratios before and after the knockout show. The user
/// can change any of it afterwards.
pub fn apply_view(app: &mut FoveaApp, case: &DemoCase) {
    match case.view {
        Some(view) => {
            app.layer = view.overlay.into();
            app.side_by_side = view.before_after;
            app.persisted.relative_maps = view.relative;
        }
        None if !case.distractor_boxes.is_empty() => app.side_by_side = true,
        None => {}
    }
}

/// The caption of the case whose image is open, if it has one.
pub fn open_caption(app: &FoveaApp) -> Option<&str> {
    let open = &app.image.as_ref()?.study.path;
    app.cases
        .iter()
        .filter(|case| &case.path == open)
        .find_map(|case| case.caption.as_deref())
}

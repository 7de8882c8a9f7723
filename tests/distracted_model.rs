//! The shipped distracted demo model (assets/demo-model-distracted) against the targets of its
//! model card, on phantoms it never saw (seeds 9_800_000+ and 9_850_000+, outside every
//! training, validation, selection and test range of both cards): on conflict phantoms (a side
//! marker naming the side opposite the lesion) it follows the marker often, and VGRefine with the
//! heads and layer of its vgrefine.json gets many of those answers back; on ordinary phantoms it
//! stays accurate either way. Also the bundled teaching cases: each flips as its kind says, and
//! its caption's numbers are what its view shows.

mod common;

use candle_core::Device;
use fovea::demo::{generate, Recipe};
use fovea::grounding::refine::{self, Settings};
use fovea::grounding::triage::Rule;
use fovea::model::{ImageSession, Model};

fn answer_word(text: &str) -> String {
    text.split_whitespace().next().unwrap_or("").to_lowercase()
}

fn distracted_dir() -> std::path::PathBuf {
    fovea::demo::assets_dir().join("demo-model-distracted")
}

/// The model's VGRefine settings, as `fovea inspect` takes them from its vgrefine.json.
fn settings(model: &Model) -> Settings {
    let defaults = fovea::case::model_defaults(model)
        .unwrap()
        .expect("the distracted model ships a vgrefine.json");
    Settings {
        heads: defaults.heads.iter().map(|&[l, h]| (l, h)).collect(),
        masked_layers: defaults.masked_layers.clone(),
        rule: Rule::Percentile(defaults.percentile.unwrap_or(80.0)),
        max_new_tokens: 3,
        ..Settings::default()
    }
}

/// Accuracy before and after VGRefine over every question of `images` cases drawn from `seeds`
/// with `recipe` (only conflict cases when `conflicts_only`).
fn accuracy(
    model: &Model,
    settings: &Settings,
    recipe: &Recipe,
    seeds: std::ops::Range<u64>,
    images: usize,
    conflicts_only: bool,
) -> (f64, f64, usize) {
    let (mut before, mut after, mut total, mut used) = (0usize, 0usize, 0usize, 0usize);
    for seed in seeds {
        if used == images {
            break;
        }
        let case = generate(seed, recipe);
        if conflicts_only && !case.conflict {
            continue;
        }
        used += 1;
        let rgb = image::DynamicImage::ImageLuma8(case.image.clone()).to_rgb8();
        let mut session = ImageSession::new(model, &rgb).unwrap();
        for qa in case.questions() {
            let outcome = refine::run(&mut session, &qa.question, settings).unwrap();
            total += 1;
            before += usize::from(answer_word(&outcome.original.text) == qa.answer);
            after += usize::from(answer_word(&outcome.refined.text) == qa.answer);
        }
    }
    assert_eq!(used, images, "not enough cases in the seed range");
    (
        before as f64 / total as f64,
        after as f64 / total as f64,
        total,
    )
}

#[test]
fn the_marker_misleads_the_distracted_model_and_vgrefine_corrects_it() {
    let model = Model::load(&distracted_dir(), None, &Device::Cpu).expect("the model loads");
    let settings = settings(&model);
    let conflict = Recipe {
        conflict_probability: 1.0,
        ..Recipe::default()
    };
    let (alone, refined, n) =
        accuracy(&model, &settings, &conflict, 9_800_000..9_801_000, 60, true);
    eprintln!(
        "conflict phantoms ({n} questions): {:.1}% alone, {:.1}% with VGRefine",
        alone * 100.0,
        refined * 100.0
    );
    assert!(
        alone <= MAX_CONFLICT_ALONE,
        "the marker no longer misleads the model: {:.3} alone",
        alone
    );
    assert!(
        refined >= alone + MIN_VGREFINE_GAIN,
        "VGRefine gains {:.3} (from {alone:.3} to {refined:.3}), below {MIN_VGREFINE_GAIN}",
        refined - alone
    );
    let (clean, clean_refined, n) = accuracy(
        &model,
        &settings,
        &Recipe::default(),
        9_850_000..9_850_040,
        40,
        false,
    );
    eprintln!(
        "ordinary phantoms ({n} questions): {:.1}% alone, {:.1}% with VGRefine",
        clean * 100.0,
        clean_refined * 100.0
    );
    assert!(clean >= MIN_CLEAN && clean_refined >= MIN_CLEAN);
}

// Margins from the seeds above, measured on this checkout: 58.3% alone and 75.7% with VGRefine
// on the 300 conflict questions, 98.4% and 96.9% on the 128 ordinary ones (the model card's
// larger held-out sets: 59.2% -> 77.9%, and 96.3% / 96.4%). Loose enough for another BLAS's last
// bits, tight enough that a model that ignores the marker (the grounded demo model: 97.8% on
// conflicts) or a VGRefine that changes little fails.
const MAX_CONFLICT_ALONE: f64 = 0.70;
const MIN_VGREFINE_GAIN: f64 = 0.12;
const MIN_CLEAN: f64 = 0.93;

#[test]
fn teaching_cases_flip_as_labelled() {
    let dir = distracted_dir();
    let cases: Vec<_> = fovea::demo::load_demo_cases(&fovea::demo::demo_cases_file())
        .into_iter()
        .filter(|c| c.model.as_deref() == Some(dir.as_path()))
        .collect();
    let count = |prefix: &str| {
        cases
            .iter()
            .filter(|c| c.kind.as_deref().is_some_and(|k| k.starts_with(prefix)))
            .count()
    };
    assert!(
        count("misled by marker") >= 4,
        "at least 4 cases VGRefine fixes"
    );
    assert!(
        count("marker ignored") >= 2,
        "at least 2 cases right before and after"
    );
    assert!(
        count("VGRefine breaks") >= 1,
        "at least 1 case VGRefine breaks"
    );
    let out = tempfile::tempdir().unwrap();
    for (index, case) in cases.iter().enumerate() {
        assert!(
            !case.distractor_boxes.is_empty() && !case.boxes.is_empty(),
            "{}: a teaching case has its lesion and distractor boxes",
            case.path.display()
        );
        let json = out.path().join(format!("case{index}.json"));
        let record = common::inspect_case(Some(&dir), case, &json);
        let right = |key: &serde_json::Value| {
            answer_word(key.as_str().unwrap_or("")) == case.answer.to_lowercase()
        };
        let (before, after) = (
            right(&record["answer"]),
            right(&record["refined"]["answer"]),
        );
        let kind = case.kind.as_deref().unwrap_or("");
        let expected = if kind.starts_with("misled by marker") {
            (false, true)
        } else if kind.starts_with("marker ignored") {
            (true, true)
        } else if kind.starts_with("VGRefine breaks") {
            (true, false)
        } else {
            panic!("{}: unknown kind {kind:?}", case.path.display())
        };
        assert_eq!(
            (before, after),
            expected,
            "{} ({kind}): answered {:?}, then {:?} with VGRefine; the truth is {:?}",
            case.path.display(),
            record["answer"],
            record["refined"]["answer"],
            case.answer
        );
        caption_holds(case, &record);
    }
}

/// Image tokens of a box on the demo models' 12 x 12 grid of their 192 px square images, written
/// out by hand: every 16 px cell the box overlaps, clipped to the image.
fn box_tokens(xyxy_px: [f64; 4]) -> Vec<usize> {
    let cell = |v: f64, round: fn(f64) -> f64| (round(v / 16.0).max(0.0) as usize).min(12);
    let (cols, rows) = (
        cell(xyxy_px[0], f64::floor)..cell(xyxy_px[2], f64::ceil),
        cell(xyxy_px[1], f64::floor)..cell(xyxy_px[3], f64::ceil),
    );
    rows.flat_map(|r| cols.clone().map(move |c| r * 12 + c))
        .collect()
}

/// Attention ratio written out: the region's share of the map over its share of the tokens.
fn ratio_by_hand(map: &[f64], tokens: &[usize]) -> f64 {
    let total: f64 = map.iter().sum();
    let inside: f64 = tokens.iter().map(|&t| map[t]).sum();
    inside / (total * tokens.len() as f64 / map.len() as f64 + 1e-8)
}

/// A teaching case opens on a head or layer map with the before | after panes (the triage map's
/// two panes can be one picture), and its caption quotes that view's attention ratios on the
/// conflict marker (its last distractor box) and on the lesion, before and after the knockout,
/// as the Regions panel prints them, how many of their tokens were knocked out, and both
/// answers; in the "VGRefine fixes it" cases the view shows the attention on the marker falling.
fn caption_holds(case: &fovea::demo::DemoCase, record: &serde_json::Value) {
    use fovea::demo::CaseOverlay;
    let name = case.path.display();
    let view = case.view.unwrap_or_else(|| panic!("{name}: no view"));
    let caption = case
        .caption
        .as_deref()
        .unwrap_or_else(|| panic!("{name}: no caption"));
    assert!(view.before_after && !view.relative, "{name}: {view:?}");
    let (layer, head) = match view.overlay {
        CaseOverlay::LayerMean { layer } => (layer, None),
        CaseOverlay::Head { layer, head } => (layer, Some(head)),
        other => panic!("{name}: a teaching view shows a head or a layer, not {other:?}"),
    };
    // The view's map in one pass: that head, or the mean over the layer's heads (raw attention).
    let map = |pass: &serde_json::Value| -> Vec<f64> {
        let heads: Vec<Vec<f64>> = serde_json::from_value(pass[layer].clone()).unwrap();
        match head {
            Some(h) => heads[h].clone(),
            None => (0..heads[0].len())
                .map(|i| heads.iter().map(|m| m[i]).sum::<f64>() / heads.len() as f64)
                .collect(),
        }
    };
    let (before, after) = (
        map(&record["attention"]["question"]),
        map(&record["attention"]["refined"]),
    );
    let marker = box_tokens(*case.distractor_boxes.last().unwrap());
    let mut lesion: Vec<usize> = case.boxes.iter().flat_map(|&b| box_tokens(b)).collect();
    lesion.sort_unstable();
    lesion.dedup();
    let numbers = [
        ("marker before", ratio_by_hand(&before, &marker)),
        ("marker after", ratio_by_hand(&after, &marker)),
        ("lesion before", ratio_by_hand(&before, &lesion)),
        ("lesion after", ratio_by_hand(&after, &lesion)),
    ];
    for (what, value) in numbers {
        assert!(
            caption.contains(&format!("{value:.2}")),
            "{name}: the caption lacks the {what} ratio {value:.2}: {caption:?}"
        );
    }
    // What the knockout removed, in the masked layer: the caption counts the marker's and the
    // lesion's tokens among the knocked-out ones.
    let knocked_out: Vec<usize> =
        serde_json::from_value(record["knockout"]["tokens"].clone()).unwrap();
    let masked = record["knockout"]["layers"][0].as_u64().unwrap() as usize;
    let out = |tokens: &[usize]| tokens.iter().filter(|t| knocked_out.contains(t)).count();
    for told in [
        format!("{} of the marker's {} tokens", out(&marker), marker.len()),
        format!(
            "{} of the lesion's {} knocked out in layer {masked}",
            out(&lesion),
            lesion.len()
        ),
    ] {
        assert!(
            caption.contains(&told),
            "{name}: the caption lacks {told:?}: {caption:?}"
        );
    }
    // Layers before the masked one do not change with the knockout: their two panes are one
    // picture and tell nothing.
    assert!(
        layer >= masked && before != after,
        "{name}: layer {layer}'s panes are the same"
    );
    for answer in [&record["answer"], &record["refined"]["answer"]] {
        let answer = answer.as_str().unwrap_or("").trim();
        assert!(
            caption.contains(&format!("\"{answer}\"")),
            "{name}: the caption lacks the answer {answer:?}: {caption:?}"
        );
    }
    if case
        .kind
        .as_deref()
        .is_some_and(|k| k.starts_with("misled by marker"))
    {
        assert!(
            numbers[1].1 < numbers[0].1,
            "{name}: the attention on the marker does not fall: {numbers:?}"
        );
    }
}

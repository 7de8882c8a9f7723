//! The shipped distracted demo model (assets/demo-model-distracted) against the targets of its
//! model card, on phantoms it never saw (seeds 9_800_000+ and 9_850_000+, outside every
//! training, validation, selection and test range of both cards): on conflict phantoms (a side
//! marker naming the side opposite the lesion) it follows the marker often, and VGRefine with the
//! heads and layer of its vgrefine.json gets many of those answers back; on ordinary phantoms it
//! stays accurate either way. Also the bundled teaching cases: each flips as its kind says.

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
    }
}

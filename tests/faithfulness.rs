//! The faithfulness curve (knock out image tokens most-attended first, follow the first answer
//! token's probability) checked against independent computations, and what it says about the
//! bundled demo model on held-out phantoms.
//!
//! - At fraction 0 nothing is knocked out: the probability is the plain answer's, computed here
//!   from its logits by hand.
//! - At fraction 1 in every layer the question sees no image token: the probability equals that
//!   of a decoder pass over the text alone (the tokens before and after the image, at their own
//!   positions, no image rows at all), run here without any knockout mask.

mod common;

use fovea::demo::{generate, Recipe};
use fovea::grounding::faithfulness::{self, CurveSettings};
use fovea::grounding::refine;
use fovea::model::ImageSession;

fn softmax_at(logits: &[f32], token: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let total: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    (logits[token] as f64 - max).exp() / total
}

#[test]
fn the_curve_starts_at_the_plain_answer_and_ends_at_the_text_alone() {
    let (model, settings) = common::demo_model();
    let case = generate(9_800_123, &Recipe::default());
    let rgb = image::DynamicImage::ImageLuma8(case.image.clone()).to_rgb8();
    let mut session = ImageSession::new(&model, &rgb).unwrap();
    let question = &case.questions()[0].question;
    let outcome = refine::run(&mut session, question, &settings).unwrap();
    let map = outcome.triage.as_ref().unwrap().score_map.clone();
    let all_layers: Vec<usize> = (0..model.decoder.num_layers()).collect();
    let curve = faithfulness::curve(
        &mut session,
        &outcome.prompt,
        &map,
        "triage_map",
        &CurveSettings {
            step: 0.25,
            layers: all_layers,
            random_draws: 2,
            seed: 1,
        },
    )
    .unwrap();
    assert_eq!(curve.fractions, vec![0.0, 0.25, 0.5, 0.75, 1.0]);

    // Fraction 0: the plain answer's first-token probability.
    let logits = &outcome.original.first_token_logits;
    let token = outcome.original.ids[0] as usize;
    assert_eq!(curve.token_id as usize, token);
    let plain = softmax_at(logits, token);
    eprintln!("fraction 0: {} vs plain {plain}", curve.prob[0]);
    assert!((curve.prob[0] - plain).abs() < 1e-6);
    assert!((curve.random_mean[0] - plain).abs() < 1e-6);

    // Fraction 1, every layer: the text alone at its own positions.
    let text_only = common::text_alone_logits(&model.decoder, &outcome.prompt);
    let no_image = softmax_at(&text_only, token);
    let last = *curve.prob.last().unwrap();
    eprintln!("fraction 1, all layers: {last} vs the text alone {no_image}");
    assert!((last - no_image).abs() < 1e-5, "{last} vs {no_image}");
    assert!((curve.random_mean.last().unwrap() - no_image).abs() < 1e-5);
    // The areas are the trapezoids of the points.
    let by_hand: f64 = (0..4)
        .map(|i| 0.25 * (curve.prob[i] + curve.prob[i + 1]) / 2.0)
        .sum();
    assert!((curve.auc - by_hand).abs() < 1e-12);
}

/// On held-out phantoms the demo model's "yes" answers (a finding present where asked, brighter
/// than its surroundings) depend on the tokens its triage map ranks first: knocking them out in
/// the masked layers drops the answer's probability far faster than random orders do. Its "no"
/// answers barely move whatever is knocked out (absence is not evidence in a few tokens), so
/// over all questions the gap is smaller; both are asserted, with bounds above what was measured
/// (README and the issue note quote the figures).
#[test]
fn the_triage_map_is_faithful_on_held_out_phantoms() {
    let (model, settings) = common::demo_model();
    let curve_settings = CurveSettings {
        step: 0.05,
        layers: settings.masked_layers.clone(),
        random_draws: 3,
        seed: 7,
    };
    // (sum of AUC, sum of random AUC, curves below random, count) for "yes" answers and all.
    let mut yes = (0.0, 0.0, 0, 0);
    let mut all = (0.0, 0.0, 0, 0);
    for seed in 9_800_200..9_800_206 {
        let case = generate(seed, &Recipe::default());
        let rgb = image::DynamicImage::ImageLuma8(case.image.clone()).to_rgb8();
        let mut session = ImageSession::new(&model, &rgb).unwrap();
        for qa in case.questions() {
            let outcome = refine::run(&mut session, &qa.question, &settings).unwrap();
            let map = outcome.triage.as_ref().unwrap().score_map.clone();
            let curve = faithfulness::curve(
                &mut session,
                &outcome.prompt,
                &map,
                "triage_map",
                &curve_settings,
            )
            .unwrap();
            let answer = outcome.original.text.trim().to_lowercase();
            eprintln!(
                "  {seed} {:?} -> {answer:?}: AUC {:.3} vs random {:.3}",
                qa.question, curve.auc, curve.random_auc
            );
            let groups: &mut [&mut (f64, f64, usize, usize)] = if answer.starts_with("yes") {
                &mut [&mut yes, &mut all]
            } else {
                &mut [&mut all]
            };
            for group in groups.iter_mut() {
                group.0 += curve.auc;
                group.1 += curve.random_auc;
                group.2 += usize::from(curve.auc < curve.random_auc);
                group.3 += 1;
            }
        }
    }
    for (name, group) in [("yes", yes), ("all", all)] {
        let (auc, random, below, n) = group;
        eprintln!(
            "{name}: {n} held-out questions, mean AUC {:.3} in the triage map's order, {:.3} in random orders \
             (ratio {:.2}); the map's curve is lower on {below} of {n}",
            auc / n as f64,
            random / n as f64,
            auc / random
        );
    }
    assert!(yes.3 >= 6 && all.3 >= 20);
    assert!(
        yes.0 < 0.5 * yes.1,
        "yes answers: AUC {} vs random {}",
        yes.0,
        yes.1
    );
    assert!(
        all.0 < 0.85 * all.1,
        "all answers: AUC {} vs random {}",
        all.0,
        all.1
    );
}

//! `FOVEA_CPU` picks the kernel tier, so one machine measures what a laptop with fewer
//! instructions gets: every tier this CPU runs gives the same answer, and the record says which
//! tier ran; a tier the CPU lacks, or an unknown name, is refused in one line before anything
//! loads. fovea's int8 tiers agree to 1e-4 of the largest logit (the integer products are
//! exact; only the order of the f32 sums differs); `portable` is candle's q8_0 product (ggml's
//! own rounding of the activations), measured 9.7e-4 of the largest logit away, allowed 5e-3;
//! `amx` rounds prefill activations to bf16 and is allowed 2e-2 (no AMX CPU was at hand to
//! measure it).

use std::path::Path;
use std::process::Output;

use fovea::model::gemm::tier::{detected, Tier};

mod common;

fn inspect(tier: &str, json: &Path, cache: &Path) -> Output {
    let case = fovea::demo::assets_dir().join("cases/02-chest-9000489.png");
    common::fovea_command()
        .env("FOVEA_CPU", tier)
        .env("FOVEA_CACHE_DIR", cache)
        .args(["inspect", "--image"])
        .arg(case)
        .args([
            "--question",
            "Which side is the nodule on?",
            "--quantize",
            "q8_0",
            "--dump-logits",
            "--json",
        ])
        .arg(json)
        .output()
        .expect("fovea runs")
}

#[test]
fn every_tier_this_cpu_runs_gives_the_same_answer_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let here = detected();
    let mut reference: Option<(String, Vec<f64>)> = None;
    // The int8 tiers first: the first that runs is the reference.
    for tier in [Tier::Avx512Vnni, Tier::Avx2, Tier::Portable, Tier::Amx] {
        let json = dir.path().join(format!("{}.json", tier.name()));
        let run = inspect(tier.name(), &json, dir.path());
        let stderr = String::from_utf8_lossy(&run.stderr);
        if !here.contains(&tier) {
            assert_eq!(run.status.code(), Some(2), "{}: {stderr}", tier.name());
            assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
            assert!(stderr.contains("this CPU cannot run it"), "{stderr}");
            assert!(!json.exists());
            continue;
        }
        assert!(run.status.success(), "{}: {stderr}", tier.name());
        let record: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(record["model"]["cpu_tier"], tier.name());
        let answer = record["answer"].as_str().unwrap().to_string();
        let logits: Vec<f64> = record["first_token_logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        match &reference {
            None => reference = Some((answer, logits)),
            Some((first_answer, first_logits)) => {
                assert_eq!(&answer, first_answer, "{}", tier.name());
                let scale = first_logits.iter().fold(0f64, |m, v| m.max(v.abs()));
                let worst = logits
                    .iter()
                    .zip(first_logits)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f64, f64::max);
                let bound = match tier {
                    Tier::Portable => 5e-3,
                    // Prefills on the tiles round the activations to bf16 (as transformers
                    // does in bf16): a bf16-sized difference, not measured here (no AMX).
                    Tier::Amx => 2e-2,
                    _ => 1e-4,
                };
                assert!(
                    worst <= bound * scale,
                    "{}: logits differ by {worst:.2e} of {scale:.2}",
                    tier.name()
                );
            }
        }
    }
    assert!(reference.is_some(), "no tier ran");

    for (asked, expected) in [
        ("avx-vnni", "no AVX-VNNI kernel yet"),
        ("sse2", "is not a tier"),
    ] {
        let json = dir.path().join("never.json");
        let run = inspect(asked, &json, dir.path());
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!json.exists());
    }
}

//! The research commands end to end on generated phantom data: sharded runs merge into
//! exactly the single-process output, a run killed with SIGKILL resumes to the same result,
//! and eval scores with and without VGRefine.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;

fn model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llava/huatuo-qwen2-original")
}

fn fovea(args: &[&str]) -> std::process::Output {
    let output = common::fovea_command()
        .args(args)
        .output()
        .expect("fovea runs");
    assert!(
        output.status.success(),
        "fovea {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn dataset(dir: &Path, n: usize) -> PathBuf {
    let recipe = fovea::demo::Recipe {
        size_px: 96,
        ..Default::default()
    };
    fovea::demo::write_dataset(dir, n, 500, &recipe, false, |_| {}).unwrap();
    dir.join("cases.jsonl")
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn assert_same_files(a: &Path, b: &Path, names: &[&str]) {
    for name in names {
        let left = std::fs::read(a.join(name))
            .unwrap_or_else(|e| panic!("{}: {e}", a.join(name).display()));
        let right = std::fs::read(b.join(name))
            .unwrap_or_else(|e| panic!("{}: {e}", b.join(name).display()));
        assert!(
            left == right,
            "{name} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

#[test]
fn shards_merge_into_the_single_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(&dir.path().join("data"), 20);
    let single = dir.path().join("single");
    fovea(&[
        "grounding",
        "--data",
        s(&data),
        "--model",
        s(&model()),
        "--out",
        s(&single),
        "--limit",
        "30",
        "--seed",
        "7",
    ]);
    let mut shards = Vec::new();
    for i in 0..4 {
        let out = dir.path().join(format!("shard{i}"));
        let shard = format!("{i}/4");
        fovea(&[
            "grounding",
            "--data",
            s(&data),
            "--model",
            s(&model()),
            "--out",
            s(&out),
            "--limit",
            "30",
            "--seed",
            "7",
            "--shard",
            &shard,
        ]);
        shards.push(out);
    }
    let merged = dir.path().join("merged");
    let mut args = vec!["merge"];
    args.extend(shards.iter().map(|p| s(p)));
    args.extend(["--out", s(&merged)]);
    fovea(&args);
    assert_same_files(
        &single,
        &merged,
        &[
            "samples.jsonl",
            "per_layer.csv",
            "per_head.csv",
            "summary.json",
            "per_layer_ratio.png",
        ],
    );
    let lines = std::fs::read_to_string(single.join("samples.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(lines, 30);

    // Heads from the grounding run, then eval with and without VGRefine, sharded too.
    let heads = dir.path().join("heads.json");
    fovea(&[
        "heads",
        "--from",
        s(&single),
        "--top-k",
        "3",
        "--out",
        s(&heads),
    ]);
    let heads_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&heads).unwrap()).unwrap();
    assert_eq!(heads_json["heads"].as_array().unwrap().len(), 3);
    let eval_single = dir.path().join("eval");
    fovea(&[
        "eval",
        "--data",
        s(&data),
        "--model",
        s(&model()),
        "--out",
        s(&eval_single),
        "--limit",
        "12",
        "--vgrefine",
        s(&heads),
    ]);
    let mut eval_shards = Vec::new();
    for i in 0..2 {
        let out = dir.path().join(format!("eval{i}"));
        let shard = format!("{i}/2");
        fovea(&[
            "eval",
            "--data",
            s(&data),
            "--model",
            s(&model()),
            "--out",
            s(&out),
            "--limit",
            "12",
            "--vgrefine",
            s(&heads),
            "--shard",
            &shard,
        ]);
        eval_shards.push(out);
    }
    let eval_merged = dir.path().join("eval-merged");
    fovea(&[
        "merge",
        s(&eval_shards[0]),
        s(&eval_shards[1]),
        "--out",
        s(&eval_merged),
    ]);
    assert_same_files(
        &eval_single,
        &eval_merged,
        &["samples.jsonl", "summary.csv", "summary.json"],
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(eval_single.join("summary.json")).unwrap())
            .unwrap();
    let all = &summary["tables"][0];
    assert_eq!(all["n"], 12);
    assert!(all["accuracy"].is_number() && all["accuracy_vgrefine"].is_number());
}

#[test]
fn killed_run_resumes_to_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(&dir.path().join("data"), 150);
    let reference = dir.path().join("reference");
    fovea(&[
        "grounding",
        "--data",
        s(&data),
        "--model",
        s(&model()),
        "--out",
        s(&reference),
    ]);
    let total = std::fs::read_to_string(reference.join("samples.jsonl"))
        .unwrap()
        .lines()
        .count();

    let out = dir.path().join("killed");
    let mut child = common::fovea_command()
        .args([
            "grounding",
            "--data",
            s(&data),
            "--model",
            s(&model()),
            "--out",
            s(&out),
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let done = std::fs::read_to_string(out.join("samples.jsonl"))
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if done >= 20 || started.elapsed() > Duration::from_secs(60) {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let partial = std::fs::read_to_string(out.join("samples.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert!(
        partial < total,
        "the run finished before it could be killed ({partial} of {total})"
    );

    // Without --resume the folder is refused; with it the run completes.
    let refused = common::fovea_command()
        .args([
            "grounding",
            "--data",
            s(&data),
            "--model",
            s(&model()),
            "--out",
            s(&out),
        ])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--resume"));
    fovea(&[
        "grounding",
        "--data",
        s(&data),
        "--model",
        s(&model()),
        "--out",
        s(&out),
        "--resume",
    ]);
    assert_same_files(
        &reference,
        &out,
        &[
            "samples.jsonl",
            "per_layer.csv",
            "per_head.csv",
            "summary.json",
        ],
    );
    eprintln!("killed after {partial} of {total} samples; resumed to identical results");
}

/// `fovea faithfulness --causal-map 3x3` over phantoms with the bundled demo model (its own
/// heads): one record per sample with both areas and its causal map, the summary tables, the
/// per-head agreement ranking (each head's mean recomputed here from the records) and the plots;
/// two shards merge into the single run byte for byte.
#[test]
fn faithfulness_runs_over_a_dataset_and_merges() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(&dir.path().join("data"), 4);
    let demo = fovea::demo::demo_model_dir();
    let run = |out: &Path, shard: Option<&str>| {
        let mut args = vec![
            "faithfulness",
            "--data",
            s(&data),
            "--model",
            s(&demo),
            "--out",
            s(out),
            "--step",
            "0.25",
            "--draws",
            "2",
            "--causal-map",
            "3x3",
        ];
        if let Some(shard) = shard {
            args.extend(["--shard", shard]);
        }
        fovea(&args);
    };
    let single = dir.path().join("single");
    run(&single, None);
    let records: Vec<serde_json::Value> = std::fs::read_to_string(single.join("samples.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(records.len() >= 8, "{} questions", records.len());
    for record in &records {
        assert!(record.get("error").is_none(), "{record}");
        assert_eq!(record["fractions"].as_array().unwrap().len(), 5);
        assert!(record["auc"].as_f64().unwrap() >= 0.0);
        assert!(record["random_auc"].as_f64().unwrap() >= 0.0);
    }
    let summary = std::fs::read_to_string(single.join("summary.csv")).unwrap();
    assert!(summary.starts_with("group,name,n,auc,random_auc,ratio,below_random\nall,all,"));
    // Causal maps: 9 cells each; the ranking's means are the records' means, head by head.
    let (layers, heads) = {
        let first = records[0]["causal"]["agreement_heads"].as_array().unwrap();
        (first.len(), first[0].as_array().unwrap().len())
    };
    for record in &records {
        assert_eq!(
            record["causal"]["drop"].as_array().unwrap().len(),
            9,
            "{record}"
        );
    }
    let ranking = std::fs::read_to_string(single.join("causal_heads.csv")).unwrap();
    let mut lines = ranking.lines();
    assert_eq!(lines.next(), Some("rank,layer,head,n,mean_spearman"));
    let mut previous = f64::INFINITY;
    let mut rows = 0;
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        let (l, h): (usize, usize) = (f[1].parse().unwrap(), f[2].parse().unwrap());
        let values: Vec<f64> = records
            .iter()
            .filter_map(|r| r["causal"]["agreement_heads"][l][h].as_f64())
            .collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        assert_eq!(f[3].parse::<usize>().unwrap(), values.len(), "{line}");
        let listed: f64 = f[4].parse().unwrap();
        assert!((listed - mean).abs() < 1e-4, "{line}: mean {mean}");
        assert!(listed <= previous + 1e-12, "ranked by mean: {line}");
        previous = listed;
        rows += 1;
    }
    assert!(rows > 0 && rows <= layers * heads, "{rows} heads ranked");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(single.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(
        summary["causal"]["samples"].as_u64().unwrap() as usize,
        records.len()
    );
    assert!(!summary["causal"]["triage_heads"]
        .as_array()
        .unwrap()
        .is_empty());
    let shards: Vec<PathBuf> = (0..2)
        .map(|i| {
            let out = dir.path().join(format!("shard{i}"));
            run(&out, Some(&format!("{i}/2")));
            out
        })
        .collect();
    let merged = dir.path().join("merged");
    fovea(&["merge", s(&shards[0]), s(&shards[1]), "--out", s(&merged)]);
    assert_same_files(
        &single,
        &merged,
        &[
            "samples.jsonl",
            "summary.csv",
            "summary.json",
            "faithfulness.png",
            "causal_heads.csv",
            "causal_heads.png",
        ],
    );
}

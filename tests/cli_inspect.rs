//! `fovea inspect` as a user runs it: the JSON record carries every field of the contract in
//! shared/design/INSPECT-JSON.md, the overlay is written, and bad input gets one clear line.

use std::path::PathBuf;
use std::process::{Command, Output};

mod common;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llava")
}

fn fovea(args: &[String]) -> Output {
    common::fovea_command()
        .args(args)
        .output()
        .expect("fovea runs")
}

fn base_args() -> Vec<String> {
    let model = fixtures().join("huatuo-qwen2-original");
    let image = fixtures().join("test_image.png");
    [
        "inspect",
        "--model",
        model.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
        "--question",
        "what abnormality is seen in the left lung ?",
        "--heads",
        "1:0,2:3,0:1",
        "--masked-layers",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn record_has_every_contract_field() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("case.json");
    let overlay = dir.path().join("case.png");
    let mut args = base_args();
    args.extend(
        [
            "--region",
            "5,5,20,20",
            "--dump-logits",
            "--faithfulness",
            "--faithfulness-step",
            "0.25",
            "--json",
            json.to_str().unwrap(),
            "--overlay",
            overlay.to_str().unwrap(),
        ]
        .map(String::from),
    );
    let run = fovea(&args);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let paths = [
        "/fovea_version",
        "/model/path",
        "/model/arch",
        "/model/layers",
        "/model/heads",
        "/model/kv_heads",
        "/model/grid",
        "/image/path",
        "/image/width",
        "/image/height",
        "/image/frame",
        "/image/preprocess",
        "/question",
        "/prompt_text",
        "/input_ids",
        "/image_span",
        "/general_prompt_text",
        "/general_input_ids",
        "/answer",
        "/first_token_logits",
        "/attention/query",
        "/attention/question",
        "/attention/general",
        "/triage/heads",
        "/triage/normalize",
        "/triage/score_map",
        "/triage/rule/percentile",
        "/triage/knocked_out",
        "/knockout/layers",
        "/knockout/from",
        "/knockout/decode",
        "/refined/answer",
        "/refined/first_token_logits",
        "/regions/0/kind",
        "/regions/0/xyxy_px",
        "/regions/0/tokens",
        "/metrics/per_layer/ratio",
        "/metrics/per_layer/kl",
        "/metrics/per_layer/js",
        "/metrics/per_head/ratio",
        "/metrics/per_head/kl",
        "/metrics/per_head/js",
        "/metrics/triage_map/ratio",
        "/metrics/triage_map/kl",
        "/metrics/triage_map/js",
        "/timings_ms/load",
        "/timings_ms/vision",
        "/timings_ms/prefix",
        "/timings_ms/question",
        "/timings_ms/general",
        "/timings_ms/knockout",
        "/timings_ms/total",
    ];
    for path in paths {
        assert!(
            record.pointer(path).is_some_and(|v| !v.is_null()),
            "record lacks {path}"
        );
    }
    // Shapes: L x H x N attention, image span of rows * cols tokens, input ids with -1 there.
    assert_eq!(record["model"]["arch"], "llava-qwen2");
    assert_eq!(record["model"]["family"], "llava");
    assert_eq!(record["model"]["quantize"], serde_json::Value::Null);
    assert_eq!(record["model"]["grid"], serde_json::json!([4, 4]));
    let question = record["attention"]["question"].as_array().unwrap();
    assert_eq!(question.len(), 3);
    assert_eq!(question[0].as_array().unwrap().len(), 4);
    assert_eq!(question[0][0].as_array().unwrap().len(), 16);
    let span: Vec<usize> = serde_json::from_value(record["image_span"].clone()).unwrap();
    assert_eq!(span[1] - span[0], 16);
    let ids: Vec<i64> = serde_json::from_value(record["input_ids"].clone()).unwrap();
    assert!(ids[span[0]..span[1]].iter().all(|&id| id == -1));
    assert_eq!(record["first_token_logits"].as_array().unwrap().len(), 84);
    assert_eq!(
        record["metrics"]["per_head"]["ratio"][0]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    // One per-token entry per generated token, each L x H x N; the first is the last prompt
    // row's map, i.e. attention.question under --query last. The same for the refined answer.
    for (tokens, ids) in [
        (&record["attention"]["tokens"], &record["answer_ids"]),
        (
            &record["refined"]["tokens"],
            &record["refined"]["answer_ids"],
        ),
    ] {
        let tokens = tokens.as_array().unwrap();
        let ids = ids.as_array().unwrap();
        assert_eq!(tokens.len(), ids.len());
        assert!(!tokens.is_empty());
        for (entry, id) in tokens.iter().zip(ids) {
            assert_eq!(&entry["id"], id);
            assert!(entry["token"].is_string());
            assert_eq!(entry["question"].as_array().unwrap().len(), 3);
            assert_eq!(entry["question"][2][3].as_array().unwrap().len(), 16);
        }
    }
    assert_eq!(
        record["attention"]["tokens"][0]["question"],
        record["attention"]["question"]
    );
    // The faithfulness curve: 5 fractions, probabilities, the random band, both areas.
    let curve = &record["faithfulness"];
    assert_eq!(curve["order"], "triage_map");
    assert_eq!(
        curve["fractions"],
        serde_json::json!([0.0, 0.25, 0.5, 0.75, 1.0])
    );
    for key in ["prob", "random_mean", "random_band"] {
        assert_eq!(curve[key].as_array().unwrap().len(), 5, "{key}");
    }
    assert!(curve["auc"].as_f64().unwrap() >= 0.0 && curve["random_auc"].as_f64().unwrap() >= 0.0);
    // The overlay is three panels of the model input side by side.
    // The overlay: three square panels of the model input side by side under a title band,
    // then a colour bar whose top is the colormap's maximum and bottom its minimum.
    let picture = image::open(&overlay).unwrap().to_rgb8();
    let (width, height) = picture.dimensions();
    let band = 3 * 14 + 7; // three and a half lines of the 5 x 7 font at scale 2
    let side = height - band;
    assert!(width > 3 * side, "{width} x {height}");
    let title_pixels = (0..band)
        .flat_map(|y| (0..side).map(move |x| (x, y)))
        .filter(|&(x, y)| picture.get_pixel(x, y)[0] > 200)
        .count();
    assert!(title_pixels > 100, "the first panel has a title");
    let colour = |t: f32| {
        fovea::case::compose::Colormap::Inferno
            .color(t)
            .map(|c| (c * 255.0).round() as u8)
    };
    let bar_x = (3 * side..width)
        .find(|&x| picture.get_pixel(x, 0).0 == colour(1.0))
        .expect("a colour bar right of the panels");
    assert_eq!(picture.get_pixel(bar_x, height - 1).0, colour(0.0));
    // Halfway down, the colormap's middle (within a grey level of rounding).
    let middle = picture.get_pixel(bar_x, (height - 1) / 2).0;
    let expected = colour(1.0 - ((height - 1) / 2) as f32 / (height - 1) as f32);
    assert!(
        middle
            .iter()
            .zip(expected)
            .all(|(&a, b)| a.abs_diff(b) <= 1),
        "{middle:?} vs {expected:?}"
    );
}

#[test]
fn bad_input_gets_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("never.json");
    let cases: [(&[&str], &str); 6] = [
        (&["--heads", "7:0"], "out of range"),
        (&["--masked-layers", "9"], "out of range"),
        (&["--percentile", "101"], "percentile"),
        (&["--region", "5,5,5,20"], "zero area"),
        (&["--template", "raw"], "<image>"),
        (&["--region", "500,500,600,600"], "covers no image token"),
    ];
    for (extra, expected) in cases {
        let mut args = base_args();
        // An option given by the case replaces the base one.
        if let Some(at) = args.iter().position(|a| a == extra[0]) {
            args.drain(at..at + 2);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(["--json".to_string(), json.to_str().unwrap().to_string()]);
        let run = fovea(&args);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{extra:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{extra:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{extra:?}: expected {expected:?} in {stderr}"
        );
        assert!(!stderr.contains("panicked"));
        assert!(
            !json.exists(),
            "{extra:?}: wrote a record despite the error"
        );
    }
}

/// Outputs are made like a shell's `>` makes files: mode 0666 minus the umask (0644 under the
/// usual 022, 0600 under 077), not the 0600 of a temporary file, and no temporary is left.
#[cfg(unix)]
#[test]
fn outputs_follow_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let ct = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dicom/CT_small.dcm");
    for (umask, expected) in [("022", 0o644), ("077", 0o600), ("002", 0o664)] {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("case.json");
        let overlay = dir.path().join("case.png");
        let converted = dir.path().join("ct.png");
        let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
        let mut inspect: Vec<String> = common::fovea_argv();
        inspect.extend(base_args());
        inspect.extend(
            [
                "--json",
                json.to_str().unwrap(),
                "--overlay",
                overlay.to_str().unwrap(),
            ]
            .map(String::from),
        );
        let script = format!(
            "umask {umask} && {} && {} convert {} {}",
            inspect
                .iter()
                .map(|a| quote(a))
                .collect::<Vec<_>>()
                .join(" "),
            common::fovea_argv()
                .iter()
                .map(|a| quote(a))
                .collect::<Vec<_>>()
                .join(" "),
            quote(ct.to_str().unwrap()),
            quote(converted.to_str().unwrap()),
        );
        let run = Command::new("sh").arg("-c").arg(&script).output().unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        for file in [&json, &overlay, &converted] {
            let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
            assert_eq!(
                mode,
                expected,
                "{} under umask {umask}: {mode:o}",
                file.display()
            );
        }
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "only the three outputs: {names:?}");
    }
}

/// A 7B checkpoint that cannot fit is refused before any weight is read, with the memory it
/// needs at each precision; shown on sparse checkpoints with the published shapes of
/// HuatuoGPT-Vision-7B (CLIP inside) and LLaVA-Med v1.5 (CLIP folder named by mm_vision_tower).
#[test]
fn a_model_that_cannot_fit_is_refused_with_what_would() {
    let dir = tempfile::tempdir().unwrap();
    let image = fixtures().join("test_image.png");
    for (shape, params_text, q4k_fits) in [
        // Text decoder + head + projector as written out from the published configs:
        // Qwen2-7B: embed and head 152064 x 3584, 28 layers of q/k/v/o (+ q/k/v biases),
        // gate/up/down 18944, two norms; mm_projector 1024 -> 3584 -> 3584.
        (
            "huatuogpt-vision-7b",
            {
                let (v, h, i, kv) = (152064u64, 3584u64, 18944u64, 512u64);
                let layer = 2 * h * h + 2 * kv * h + (h + 2 * kv) + 3 * h * i + 2 * h;
                2 * v * h + 28 * layer + h + (1024 * h + h) + (h * h + h)
            },
            true,
        ),
        // Mistral-7B: 32000 x 4096, 32 layers, 8 KV heads of 128, MLP 14336.
        (
            "llava-med-7b",
            {
                let (v, h, i, kv) = (32000u64, 4096u64, 14336u64, 1024u64);
                let layer = 2 * h * h + 2 * kv * h + 3 * h * i + 2 * h;
                2 * v * h + 32 * layer + h + (1024 * h + h) + (h * h + h)
            },
            true,
        ),
    ] {
        let model = dir.path().join(shape);
        let wrote = common::fovea_command()
            .args([
                "bench",
                "--write-model",
                model.to_str().unwrap(),
                "--shape",
                shape,
            ])
            .output()
            .unwrap();
        assert!(
            wrote.status.success(),
            "{}",
            String::from_utf8_lossy(&wrote.stderr)
        );
        let run = common::fovea_command()
            .env("FOVEA_MEMORY_LIMIT", "7G")
            .args(["inspect", "--model", model.to_str().unwrap()])
            .args(["--image", image.to_str().unwrap(), "--question", "w1"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(model.to_str().unwrap()), "{stderr}");
        let gib = |key: &str| -> f64 {
            let at = stderr
                .find(key)
                .unwrap_or_else(|| panic!("{key} in {stderr}"));
            let rest = &stderr[at + key.len()..];
            rest.split_whitespace().next().unwrap().parse().unwrap()
        };
        let stored = gib("needs about ");
        let q8 = gib("--quantize q8_0: about ");
        let q4 = gib("--quantize q4k: about ");
        let weights_gib = (2 * params_text) as f64 / (1u64 << 30) as f64;
        assert!(
            stored > weights_gib,
            "{shape}: {stored} GiB vs {weights_gib:.2} GiB of bf16 text weights"
        );
        assert!(q4 < q8 && q8 < stored, "{shape}: {q4} < {q8} < {stored}");
        assert_eq!(
            stderr.contains("q4k: about") && stderr.contains(&format!("{q4:.1} GiB (fits)")),
            q4k_fits && q4 <= 7.0,
            "{stderr}"
        );
    }
}

/// `fovea bench --model` reports on any checkpoint (here the bundled demo model, plain and
/// q8_0): every field of its JSON is there and positive where it is a time or a rate.
#[test]
fn bench_reports_on_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    for quantize in ["none", "q8_0"] {
        let out = dir.path().join(format!("bench-{quantize}.json"));
        // The q8_0 run's weight cache goes to the test's folder, not the user's cache.
        let run = common::fovea_command()
            .env("FOVEA_CACHE_DIR", dir.path().join("weight-cache"))
            .args(["bench", "--model"])
            .arg(fovea::demo::demo_model_dir())
            .args(["--quantize", quantize, "--decode-tokens", "3", "--json"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(report["quantize"], quantize);
        for key in [
            "load_ms",
            "vision_ms",
            "prefill_ms",
            "prefill_tokens_per_s",
            "prefill_gflops",
            "decode_ms",
            "decode_tokens_per_s",
            "vgrefine_ms",
            "linear_bytes",
            "embedding_bytes",
        ] {
            let value = report[key].as_f64().unwrap_or(-1.0);
            assert!(value > 0.0, "{key} = {} in {report}", report[key]);
        }
        assert_eq!(
            report["prefill_tokens"], 145,
            "12 x 12 image tokens + the template"
        );
        assert_eq!(report["decode_tokens"], 3);
    }
}

#[test]
fn qwen3_vl_case_on_a_non_square_image() {
    // 190x110 -> smart_resize (factor 32) -> 192x96: 3 x 6 tokens of 32 px.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("tests/fixtures/qwen3_vl/qwen3_vl");
    let image = root.join("tests/fixtures/qwen_vl/test_image.png");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("case.json");
    let args = [
        "inspect",
        "--model",
        model.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
        "--question",
        "what abnormality is seen in the left lung ?",
        "--heads",
        "1:0,2:3",
        "--masked-layers",
        "1",
        // Input x 35.4..60.6, y 34.9..61.1: token (1, 1). Input x 161.7..187.0, y 65.5..91.6:
        // token (2, 5).
        "--region",
        "35,40,60,70",
        "--region",
        "160,75,185,105",
    ];
    let (stderr, record) = inspect_ok(&args, &json);
    assert!(
        stderr.contains("3 x 6 = 18 (190x110 px -> 192x96 px"),
        "the image plan is announced: {stderr}"
    );
    assert_eq!(record["model"]["arch"], "qwen3-vl");
    assert_eq!(record["model"]["family"], "qwen3_vl");
    assert_eq!(record["model"]["grid"], serde_json::json!([3, 6]));
    assert_eq!(record["regions"][0]["tokens"], serde_json::json!([7]));
    assert_eq!(record["regions"][1]["tokens"], serde_json::json!([17]));
    let span: Vec<usize> = serde_json::from_value(record["image_span"].clone()).unwrap();
    assert_eq!(span[1] - span[0], 18);
    let ids: Vec<i64> = serde_json::from_value(record["input_ids"].clone()).unwrap();
    assert_eq!(ids.iter().filter(|&&id| id == -1).count(), 18);
    let question = record["attention"]["question"].as_array().unwrap();
    assert_eq!(question.len(), 3, "layers");
    assert_eq!(question[0][0].as_array().unwrap().len(), 18);
}

#[test]
fn gemma3_case_on_a_non_square_image() {
    // 190x110 -> resized to the square 112x112 input (Gemma 3 ignores the aspect ratio):
    // 4 x 4 tokens of 28 px, x scaled by 112/190, y by 112/110.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("tests/fixtures/gemma3/gemma3-hub");
    let image = root.join("tests/fixtures/qwen_vl/test_image.png");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("case.json");
    let args = [
        "inspect",
        "--model",
        model.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
        "--question",
        "what abnormality is seen in the left lung ?",
        "--heads",
        "1:0,3:1",
        "--masked-layers",
        "1",
        // Input x 58.9..82.5, y 30.5..50.9: token (1, 2). Input x 2.9..23.6, y 86.5..110.0:
        // token (3, 0).
        "--region",
        "100,30,140,50",
        "--region",
        "5,85,40,108",
    ];
    let (stderr, record) = inspect_ok(&args, &json);
    assert!(
        stderr.contains("4 x 4 = 16 (190x110 px -> 112x112 px"),
        "the image plan is announced: {stderr}"
    );
    assert_eq!(record["model"]["arch"], "gemma3");
    assert_eq!(record["model"]["family"], "gemma3");
    assert_eq!(record["model"]["weights_dtype"], "f32");
    assert_eq!(record["model"]["grid"], serde_json::json!([4, 4]));
    assert_eq!(record["regions"][0]["tokens"], serde_json::json!([6]));
    assert_eq!(record["regions"][1]["tokens"], serde_json::json!([12]));
    let span: Vec<usize> = serde_json::from_value(record["image_span"].clone()).unwrap();
    assert_eq!(
        span,
        vec![5, 21],
        "after <bos>, the turn and <start_of_image>"
    );
    let ids: Vec<i64> = serde_json::from_value(record["input_ids"].clone()).unwrap();
    assert_eq!(ids.iter().filter(|&&id| id == -1).count(), 16);
    assert_eq!(ids[0], 2, "one <bos>, written by the chat template");
    assert_ne!(ids[1], 2, "no second <bos>");
    let question = record["attention"]["question"].as_array().unwrap();
    assert_eq!(question.len(), 4, "layers");
    assert_eq!(question[0][0].as_array().unwrap().len(), 16);
}

/// Words the model's vocabulary lacks are named before the run (the bundled demo model would
/// read them as <unk> silently) and kept in the record.
#[test]
fn words_the_vocabulary_lacks_are_named() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("case.json");
    let image = root.join("assets/cases/02-chest-9000489.png");
    let args = [
        "inspect",
        "--image",
        image.to_str().unwrap(),
        "--question",
        "Is there a zebra or a xylophone in the left lung?",
    ];
    let (stderr, record) = inspect_ok(&args, &json);
    assert!(
        stderr.contains("vocabulary lacks \"zebra\", \"xylophone\" (read as <unk>)"),
        "{stderr}"
    );
    assert_eq!(
        record["unknown_words"],
        serde_json::json!(["zebra", "xylophone"])
    );
}

/// Run `fovea` with `args` and `--json json`; it must succeed. Returns stderr and the record.
fn inspect_ok(args: &[&str], json: &std::path::Path) -> (String, serde_json::Value) {
    let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    args.extend(["--json".to_string(), json.to_str().unwrap().to_string()]);
    let run = fovea(&args);
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(run.status.success(), "{stderr}");
    let record = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    (stderr, record)
}

//! A checkpoint that asks for computation fovea does not implement is refused with one line
//! naming the key, its value and the file, for every family: the tests edit copies of the
//! committed tiny checkpoints (what transformers' `save_pretrained` and the original LLaVA
//! repository write) the way such checkpoints differ, and check that every unedited fixture
//! and every published checkpoint shape still loads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use fovea::model::detect::detect;
use serde_json::{json, Value};

mod common;
use common::copy_dir;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A copy of fixture `family/name` (with the CLIP folder the LLaVA-Med fixture names as
/// `../clip-tiny`) under a fresh temporary folder.
struct Copy {
    _root: tempfile::TempDir,
    dir: PathBuf,
}

impl Copy {
    fn of(family: &str, name: &str) -> Copy {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(name);
        copy_dir(&fixtures().join(family).join(name), &dir);
        if family == "llava" {
            copy_dir(
                &fixtures().join("llava/clip-tiny"),
                &root.path().join("clip-tiny"),
            );
        }
        Copy { _root: root, dir }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// Apply `edit` to the JSON file `file` (relative to the checkpoint).
    /// `file` ('/'-separated, as configs name folders) inside the copy, in this system's
    /// separators: on Windows `vit\clip-tiny\config.json`, the path an error must name.
    fn path(&self, file: &str) -> PathBuf {
        file.split('/')
            .fold(self.dir.clone(), |path, part| path.join(part))
    }

    fn edit_json(&self, file: &str, edit: impl FnOnce(&mut Value)) {
        let path = self.path(file);
        let mut value: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        edit(&mut value);
        std::fs::write(&path, serde_json::to_string_pretty(&value).unwrap()).unwrap();
    }

    fn edit(&self, edit: impl FnOnce(&mut Value)) {
        self.edit_json("config.json", edit)
    }

    /// Add a tensor (in a second shard, as sharded checkpoints have them).
    fn add_tensor(&self, name: &str, len: usize) {
        let tensors = HashMap::from([(
            name.to_string(),
            Tensor::zeros(len, candle_core::DType::F32, &Device::Cpu).unwrap(),
        )]);
        candle_core::safetensors::save(&tensors, self.dir.join("model-extra.safetensors")).unwrap();
    }

    /// The refusal: detection fails with one line that names `key`, `value` and `file`.
    fn refused(&self, key: &str, value: &str, file: &Path) -> String {
        let message = match detect(&self.dir, None) {
            Ok(checkpoint) => panic!(
                "{key} = {value} was accepted as {} ({})",
                checkpoint.arch, checkpoint.layout.name
            ),
            Err(e) => format!("{e:#}"),
        };
        assert_eq!(message.lines().count(), 1, "{message}");
        assert!(message.contains(key), "no {key:?} in: {message}");
        assert!(message.contains(value), "no {value:?} in: {message}");
        assert!(
            message.ends_with(&file.display().to_string()),
            "the file is not named last in: {message}"
        );
        message
    }

    fn loads(&self) {
        if let Err(e) = detect(&self.dir, None) {
            panic!("{}: {e:#}", self.dir.display());
        }
    }
}

/// The original LLaVA-v1.6 (LLaVA-NeXT) layout: what liuhaotian/llava-v1.6-mistral-7b's
/// config.json sets beyond a LLaVA-1.5 config, and its `model.image_newline`.
fn as_llava_v16(config: &mut Value) {
    config["image_aspect_ratio"] = json!("anyres");
    config["mm_patch_merge_type"] = json!("spatial_unpad");
    config["image_grid_pinpoints"] =
        json!([[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]);
}

#[test]
fn an_original_llava_v16_checkpoint_is_refused_not_run_as_llava_15() {
    let copy = Copy::of("llava", "llava-med-mistral-original");
    copy.edit(as_llava_v16);
    copy.add_tensor("model.image_newline", 64);
    let message = copy.refused("image_aspect_ratio", "\"anyres\"", &copy.config_path());
    // The refusal says what the setting is, with the rest of the tiling it comes with.
    assert!(message.contains("spatial_unpad"), "{message}");
    assert!(message.contains("[336,672]"), "{message}");

    // The same through the command line: exit 2, one line, nothing written.
    let out = tempfile::tempdir().unwrap();
    let record = out.path().join("case.json");
    let run = common::fovea_command()
        .args(["inspect", "--model"])
        .arg(&copy.dir)
        .arg("--image")
        .arg(fixtures().join("llava/test_image.png"))
        .args(["--question", "Is there a nodule?", "--json"])
        .arg(&record)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("fovea: error: image_aspect_ratio = \"anyres\""),
        "{stderr}"
    );
    assert!(!record.exists());
}

#[test]
fn an_image_newline_tensor_alone_is_refused() {
    // A LLaVA-1.5 config with LLaVA-NeXT's newline embedding: nothing would read it.
    let copy = Copy::of("llava", "llava-med-mistral-original");
    copy.add_tensor("model.image_newline", 64);
    let message = match detect(&copy.dir, None) {
        Ok(_) => panic!("a checkpoint with model.image_newline was accepted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(message.contains("model.image_newline"), "{message}");
    assert!(
        message.ends_with(&copy.dir.display().to_string()),
        "{message}"
    );

    let copy = Copy::of("llava", "llava-llama-hub");
    copy.add_tensor("model.image_newline", 64);
    assert!(detect(&copy.dir, None).is_err());
}

#[test]
fn original_llava_keys_that_change_the_computation_are_refused() {
    type Edit = fn(&mut Value);
    let cases: [(Edit, &str, &str); 10] = [
        (
            |c| c["mm_patch_merge_type"] = json!("spatial_unpad"),
            "mm_patch_merge_type",
            "\"spatial_unpad\"",
        ),
        (
            |c| c["image_aspect_ratio"] = json!("anyres_max_9"),
            "image_aspect_ratio",
            "\"anyres_max_9\"",
        ),
        (
            |c| c["image_aspect_ratio"] = json!("crop_split"),
            "image_aspect_ratio",
            "\"crop_split\"",
        ),
        (
            |c| c["mm_use_im_start_end"] = json!(true),
            "mm_use_im_start_end",
            "true",
        ),
        (|c| c["s2"] = json!(true), "s2", "true"),
        (
            |c| c["mm_vision_select_feature"] = json!("cls_patch"),
            "mm_vision_select_feature",
            "\"cls_patch\"",
        ),
        (
            |c| c["mm_projector_type"] = json!("mlp3x_gelu"),
            "mm_projector_type",
            "\"mlp3x_gelu\"",
        ),
        // LLaVA-OneVision's Qwen2 LLaVA: it names an mm_vision_tower but is not llava_qwen2.
        (
            |c| c["model_type"] = json!("llava_qwen"),
            "model_type",
            "\"llava_qwen\"",
        ),
        // Mistral-7B-v0.1's 4096-token window in a 32k context.
        (
            |c| {
                c["sliding_window"] = json!(4096);
                c["max_position_embeddings"] = json!(32768);
            },
            "sliding_window",
            "4096",
        ),
        (
            |c| c["rope_scaling"] = json!({"type": "linear", "factor": 2.0}),
            "rope_scaling",
            "\"linear\"",
        ),
    ];
    for (edit, key, value) in cases {
        let copy = Copy::of("llava", "llava-med-mistral-original");
        copy.edit(edit);
        copy.refused(key, value, &copy.config_path());
    }
    // A window no shorter than the context never applies: such a checkpoint loads.
    let copy = Copy::of("llava", "llava-med-mistral-original");
    copy.edit(|c| {
        c["sliding_window"] = json!(512);
        c["max_position_embeddings"] = json!(512);
    });
    copy.loads();

    // HuatuoGPT-Vision's Qwen2 decoder.
    let copy = Copy::of("llava", "huatuo-qwen2-original");
    copy.edit(|c| c["use_sliding_window"] = json!(true));
    copy.refused("use_sliding_window", "true", &copy.config_path());
    let copy = Copy::of("llava", "huatuo-qwen2-original");
    copy.edit(|c| c["hidden_act"] = json!("gelu"));
    copy.refused("hidden_act", "\"gelu\"", &copy.config_path());
    let copy = Copy::of("llava", "huatuo-qwen2-original");
    copy.edit(|c| c["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0}));
    copy.refused("rope_scaling", "\"llama3\"", &copy.config_path());

    // A SigLIP tower where a CLIP one belongs, in the folder mm_vision_tower names.
    let copy = Copy::of("llava", "huatuo-qwen2-original");
    copy.edit_json("vit/clip-tiny/config.json", |c| {
        c["model_type"] = json!("siglip_vision_model")
    });
    copy.refused(
        "model_type",
        "\"siglip_vision_model\"",
        &copy.path("vit/clip-tiny/config.json"),
    );
    let copy = Copy::of("llava", "huatuo-qwen2-original");
    copy.edit_json("vit/clip-tiny/config.json", |c| {
        c["hidden_act"] = json!("relu")
    });
    copy.refused(
        "hidden_act",
        "\"relu\"",
        &copy.path("vit/clip-tiny/config.json"),
    );
}

#[test]
fn llava_hf_keys_that_change_the_computation_are_refused() {
    type Edit = fn(&mut Value);
    let cases: [(Edit, &str, &str); 8] = [
        (
            |c| c["vision_feature_select_strategy"] = json!("full"),
            "vision_feature_select_strategy",
            "\"full\"",
        ),
        (
            |c| c["vision_feature_layer"] = json!([-2, -5, -8]),
            "vision_feature_layer",
            "[-2,-5,-8]",
        ),
        (
            |c| c["projector_hidden_act"] = json!("silu"),
            "projector_hidden_act",
            "\"silu\"",
        ),
        (
            |c| c["multimodal_projector_bias"] = json!(false),
            "multimodal_projector_bias",
            "false",
        ),
        (
            |c| c["vision_config"]["model_type"] = json!("siglip_vision_model"),
            "vision_config.model_type",
            "\"siglip_vision_model\"",
        ),
        (
            |c| c["text_config"]["mlp_bias"] = json!(true),
            "text_config.mlp_bias",
            "true",
        ),
        (
            |c| c["text_config"]["rope_scaling"] = json!({"rope_type": "dynamic", "factor": 2.0}),
            "rope_scaling",
            "\"dynamic\"",
        ),
        (
            |c| c["text_config"]["partial_rotary_factor"] = json!(0.5),
            "text_config.partial_rotary_factor",
            "0.5",
        ),
    ];
    for (edit, key, value) in cases {
        let copy = Copy::of("llava", "llava-llama-hub");
        copy.edit(edit);
        copy.refused(key, value, &copy.config_path());
    }
    // llava-hf's LLaVA-NeXT is another model_type, not a llava with extras.
    let copy = Copy::of("llava", "llava-llama-hub");
    copy.edit(|c| c["model_type"] = json!("llava_next"));
    copy.refused("model_type", "\"llava_next\"", &copy.config_path());
}

#[test]
fn qwen_vl_keys_that_change_the_computation_are_refused() {
    type Edit = fn(&mut Value);
    let cases: [(Edit, &str, &str); 5] = [
        (
            |c| c["text_config"]["use_sliding_window"] = json!(true),
            "text_config.use_sliding_window",
            "true",
        ),
        (
            |c| c["text_config"]["layer_types"][2] = json!("sliding_attention"),
            "text_config.layer_types",
            "\"sliding_attention\"",
        ),
        (
            |c| c["text_config"]["rope_parameters"]["rope_type"] = json!("yarn"),
            "rope_parameters",
            "\"yarn\"",
        ),
        (
            |c| c["vision_config"]["hidden_act"] = json!("gelu"),
            "vision_config.hidden_act",
            "\"gelu\"",
        ),
        // Qwen2-VL resembles Qwen2.5-VL but has no windows and another MLP in its ViT.
        (
            |c| c["model_type"] = json!("qwen2_vl"),
            "model_type",
            "\"qwen2_vl\"",
        ),
    ];
    for (edit, key, value) in cases {
        let copy = Copy::of("qwen_vl", "qwen2_5_vl-flat");
        copy.edit(edit);
        copy.refused(key, value, &copy.config_path());
    }
    let copy = Copy::of("qwen3_vl", "qwen3_vl");
    copy.edit(|c| c["vision_config"]["hidden_act"] = json!("silu"));
    copy.refused("vision_config.hidden_act", "\"silu\"", &copy.config_path());
    let copy = Copy::of("qwen3_vl", "qwen3_vl");
    copy.edit(|c| c["text_config"]["hidden_act"] = json!("gelu"));
    copy.refused("text_config.hidden_act", "\"gelu\"", &copy.config_path());
}

#[test]
fn gemma3_keys_that_change_the_computation_are_refused() {
    type Edit = fn(&mut Value);
    let cases: [(Edit, &str, &str); 5] = [
        (
            |c| c["text_config"]["final_logit_softcapping"] = json!(30.0),
            "text_config.final_logit_softcapping",
            "30.0",
        ),
        (
            |c| c["text_config"]["attn_logit_softcapping"] = json!(50.0),
            "text_config.attn_logit_softcapping",
            "50.0",
        ),
        (
            |c| c["text_config"]["rope_scaling"] = json!({"rope_type": "yarn", "factor": 8.0}),
            "text_config.rope_scaling",
            "\"yarn\"",
        ),
        (
            |c| c["vision_config"]["model_type"] = json!("clip_vision_model"),
            "vision_config.model_type",
            "\"clip_vision_model\"",
        ),
        (
            |c| c["text_config"]["hidden_activation"] = json!("relu"),
            "hidden_activation",
            "\"relu\"",
        ),
    ];
    for (edit, key, value) in cases {
        let copy = Copy::of("gemma3", "gemma3-hub");
        copy.edit(edit);
        copy.refused(key, value, &copy.config_path());
    }
    let copy = Copy::of("gemma3", "gemma3-hub");
    copy.edit_json("preprocessor_config.json", |c| {
        c["do_pan_and_scan"] = json!(true)
    });
    let message = match detect(&copy.dir, None) {
        Ok(_) => panic!("do_pan_and_scan was accepted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(message.contains("do_pan_and_scan"), "{message}");
}

#[test]
fn image_processor_steps_that_fovea_does_not_apply_are_refused() {
    // (family, fixture, processor file, key, value): a step turned off, or another filter.
    let cases = [
        (
            "llava",
            "llava-llama-hub",
            "preprocessor_config.json",
            "do_center_crop",
            json!(false),
        ),
        (
            "llava",
            "llava-llama-hub",
            "preprocessor_config.json",
            "resample",
            json!(2),
        ),
        (
            "llava",
            "llava-llama-hub",
            "preprocessor_config.json",
            "do_normalize",
            json!(false),
        ),
        // The original layout reads the processor of the CLIP folder mm_vision_tower names.
        (
            "llava",
            "huatuo-qwen2-original",
            "vit/clip-tiny/preprocessor_config.json",
            "do_rescale",
            json!(false),
        ),
        (
            "qwen_vl",
            "qwen2_5_vl-flat",
            "preprocessor_config.json",
            "do_resize",
            json!(false),
        ),
        (
            "qwen_vl",
            "qwen2_5_vl-flat",
            "preprocessor_config.json",
            "resample",
            json!(0),
        ),
        (
            "gemma3",
            "gemma3-hub",
            "preprocessor_config.json",
            "do_normalize",
            json!(false),
        ),
    ];
    for (family, name, file, key, value) in cases {
        let copy = Copy::of(family, name);
        copy.edit_json(file, |c| c[key] = value.clone());
        copy.refused(key, &value.to_string(), &copy.path(file));
    }
    // LLaVA's padding makes the image square first: its centre crop changes nothing.
    let copy = Copy::of("llava", "huatuo-qwen2-original");
    copy.edit_json("vit/clip-tiny/preprocessor_config.json", |c| {
        c["do_center_crop"] = json!(false)
    });
    copy.loads();
}

#[test]
fn every_fixture_and_published_shape_still_loads() {
    let mut checked = 0;
    for family in ["llava", "qwen_vl", "qwen3_vl", "gemma3"] {
        for entry in std::fs::read_dir(fixtures().join(family)).unwrap() {
            let dir = entry.unwrap().path();
            // Checkpoints (not the bare CLIP tower or image-processor fixtures).
            if !dir.join("config.json").exists() || !dir.join("tokenizer.json").exists() {
                continue;
            }
            if let Err(e) = detect(&dir, None) {
                panic!("{}: {e:#}", dir.display());
            }
            checked += 1;
        }
    }
    assert!(checked >= 11, "only {checked} fixtures found");
    for demo in ["demo-model", "demo-model-distracted"] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("assets")
            .join(demo);
        if let Err(e) = detect(&dir, None) {
            panic!("{}: {e:#}", dir.display());
        }
    }

    use fovea::model::shapes::{write_published_shape, Fill, PublishedShape};
    for shape in [
        PublishedShape::HuatuoGptVision7b,
        PublishedShape::LlavaMed7b,
        PublishedShape::Qwen25Vl7b,
        PublishedShape::Qwen3Vl8b,
        PublishedShape::MedGemma4b,
    ] {
        let dir = tempfile::tempdir().unwrap();
        write_published_shape(dir.path(), shape, Fill::SparseZeros).unwrap();
        if let Err(e) = detect(dir.path(), None) {
            panic!("{shape:?}: {e:#}");
        }
    }
}

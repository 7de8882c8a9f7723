//! Checkpoint detection: what a folder holds (which family, which key layout) and where each
//! tensor lives.
//!
//! Reads, without loading weights:
//! - llava-hf `LlavaForConditionalGeneration` (`model_type: "llava"`, `text_config` +
//!   `vision_config`) in the three key layouts seen in the wild: `language_model.model.*` +
//!   `vision_tower.vision_model.*` (hub), `model.language_model.*` + `model.vision_tower.*`
//!   (recent transformers), and `vision_tower.*` without `vision_model` (transformers 5 saves);
//!   `lm_head` or `language_model.lm_head`.
//! - original LLaVA layouts: HuatuoGPT-Vision (`llava_qwen2`, `llava_llama`) and LLaVA-Med v1.5
//!   (`llava_mistral`): text fields at the top level, `model.mm_projector.{0,2}`, the vision
//!   tower inside the checkpoint (`model.vision_tower.vision_tower.vision_model.*`) or in the
//!   CLIP folder named by `mm_vision_tower`.
//! - Qwen2.5-VL (`qwen2_5_vl`) and Qwen3-VL (`qwen3_vl`): config keys flat as on the
//!   Qwen2.5-VL hub or under `text_config` / `vision_config` (Qwen3-VL's hub, transformers 5);
//!   tensors flat (`model.layers.*`, `visual.*`) or nested (`model.language_model.*`,
//!   `model.visual.*`).
//! - Gemma 3 (`gemma3`, MedGemma): the hub's `language_model.model.*` +
//!   `vision_tower.vision_model.*` + `multi_modal_projector.*`, and the nested
//!   `model.language_model.*` + `model.vision_tower.(vision_model.)*` +
//!   `model.multi_modal_projector.*` of recent transformers; config keys in the hub's style
//!   (`rope_scaling`, `rope_local_base_freq`, `sliding_window_pattern`) or transformers 5's
//!   (`layer_types`, `rope_parameters` per layer type).
//!
//! Long because every family's detection reads the same files the same way (`Found`) and each
//! family is one function here, next to the others it must stay consistent with.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::config::{
    eos_ids, first_with, read_json, safetensors_files, tensor_names, text_arch, text_config,
    Checkpoint, ImageSpec, KeyLayout,
};
use super::decoder::TextArch;
use super::gemma3;
use super::preprocess::{read_normalisation, ImageProcessor, Preprocess, Resample};
use super::prompt::PromptFormat;
use super::qwen_vl::{self, QwenTokens, QwenVisionConfig, QwenVisionKind};
use super::rope::RopeAxes;
use super::unsupported::{self, ConfigKeys};
use super::vision::VisionConfig;

/// What every family's detection starts from.
struct Found<'a> {
    dir: &'a Path,
    config_path: &'a Path,
    config: &'a Value,
    weights: Vec<PathBuf>,
    names: &'a BTreeSet<String>,
    tokenizer_file: PathBuf,
    eos_token_ids: Vec<u32>,
}

/// Detect the checkpoint in `dir`. `vision_tower_override` replaces `mm_vision_tower`.
pub fn detect(dir: &Path, vision_tower_override: Option<&Path>) -> Result<Checkpoint> {
    if !dir.is_dir() {
        bail!("model folder does not exist: {}", dir.display());
    }
    let config_path = dir.join("config.json");
    if !config_path.exists() {
        bail!("no config.json in the model folder: {}", dir.display());
    }
    let config = read_json(&config_path)?;
    let model_type = config
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let weights = safetensors_files(dir)?;
    if weights.is_empty() {
        bail!(
            "no *.safetensors weights in the model folder (convert .bin checkpoints first): {}",
            dir.display()
        );
    }
    let names = tensor_names(&weights)?;
    let tokenizer_file = dir.join("tokenizer.json");
    if !tokenizer_file.exists() {
        bail!("no tokenizer.json in the model folder: {}", dir.display());
    }
    let eos_token_ids = eos_ids(dir, &config);
    let found = Found {
        dir,
        config_path: &config_path,
        config: &config,
        weights,
        names: &names,
        tokenizer_file,
        eos_token_ids,
    };

    let checkpoint = match model_type.as_str() {
        "qwen2_5_vl" => detect_qwen_vl(found, QwenVisionKind::Qwen25)?,
        "qwen3_vl" => detect_qwen_vl(found, QwenVisionKind::Qwen3)?,
        "gemma3" => detect_gemma3(found)?,
        "llava" if config.get("text_config").is_some() => detect_llava_hf(found)?,
        "llava_qwen2" | "llava_llama" | "llava_mistral" | "llava" => {
            detect_original(found, &model_type, vision_tower_override)?
        }
        // LLaVA-OneVision's llava_qwen, llava_mixtral, llava_gemma, ...: the LLaVA repository's
        // shape, another decoder or image policy. Run as one of the above they would answer.
        _ if config.get("mm_vision_tower").is_some() => {
            return Err(unsupported::refusal(
                "model_type",
                config.get("model_type").unwrap_or(&Value::Null),
                "a LLaVA-style checkpoint (it names an mm_vision_tower) of a variant fovea does not know, whose decoder \
                 or image handling may differ; fovea implements llava, llava_llama, llava_mistral and llava_qwen2",
                &config_path,
            ))
        }
        _ => bail!(
            "unsupported architecture {:?} (model_type {model_type:?}); fovea reads LLaVA checkpoints (llava-hf \
             LlavaForConditionalGeneration, llava_qwen2 (HuatuoGPT-Vision), llava_llama, llava_mistral (LLaVA-Med)) and \
             qwen2_5_vl (Qwen2.5-VL: Lingshu, HuatuoGPT-Vision-Qwen2.5VL), qwen3_vl (Qwen3-VL) and gemma3 \
             (Gemma3ForConditionalGeneration: MedGemma): {}",
            config.get("architectures").cloned().unwrap_or(Value::Null),
            config_path.display()
        ),
    };
    // After the config's own refusals, which name the setting behind such a tensor.
    unsupported::unread_tensors(&names, dir)?;
    Ok(checkpoint)
}

/// An error of a parser that does not know the file, with the file named last.
fn in_file(path: &Path) -> impl Fn(anyhow::Error) -> anyhow::Error + Copy + '_ {
    move |e| anyhow::anyhow!("{e:#}: {}", path.display())
}

/// A LLaVA family's CLIP image processor: fovea's resize (bicubic) and crop or pad, with the
/// normalisation of the first folder that has a processor config.
fn image_processor(dirs: &[&Path], size: usize, mode: Preprocess) -> Result<ImageProcessor> {
    let mut processor = ImageProcessor::clip(size as u32, mode);
    if let Some((path, config)) = dirs
        .iter()
        .find_map(|dir| super::preprocess::processor_file(dir))
    {
        let crop = mode == Preprocess::ResizeCenterCrop;
        unsupported::image_processor(&ConfigKeys::new(&config, "", &path), crop, Some(3))?;
        read_normalisation(
            &config,
            &mut processor.mean,
            &mut processor.std,
            &mut processor.rescale_factor,
        );
    }
    Ok(processor)
}

fn detect_llava_hf(found: Found) -> Result<Checkpoint> {
    let Found {
        dir,
        config_path,
        config,
        weights,
        names,
        tokenizer_file,
        eos_token_ids,
    } = found;
    let text_obj = &config["text_config"];
    let text_type = text_obj
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or("llama");
    let Some(arch) = text_arch(text_type) else {
        bail!(
            "unsupported text model {text_type:?} inside llava: {}",
            config_path.display()
        );
    };
    unsupported::llava_hf(&ConfigKeys::new(config, "", config_path))?;
    unsupported::text_decoder(
        &ConfigKeys::new(text_obj, "text_config.", config_path),
        arch,
    )?;
    let text = text_config(text_obj, arch).map_err(in_file(config_path))?;
    let vision_obj = config.get("vision_config").cloned().unwrap_or(Value::Null);
    let vision_keys = ConfigKeys::new(&vision_obj, "vision_config.", config_path);
    unsupported::vision_model_type(&vision_keys, &["clip_vision_model"], "CLIP")?;
    unsupported::vision_activation(&vision_keys)?;
    let vision: VisionConfig = serde_json::from_value(vision_obj.clone())
        .or_else(|_| serde_json::from_value(Value::Object(Default::default())))
        .context("invalid vision_config")?;
    let (text_prefix, lm_head, vision_prefix) = conditional_generation_prefixes(dir, names)?;
    let projector = first_with(
        names,
        &["multi_modal_projector.", "model.multi_modal_projector."],
        "linear_1.weight",
    )
    .with_context(|| {
        format!(
            "cannot find multi_modal_projector.linear_1 in {}",
            dir.display()
        )
    })?;
    let layout_name = match (text_prefix.as_str(), vision_prefix.as_str()) {
        (_, "vision_tower." | "model.vision_tower.") => {
            "llava-hf (transformers 5: vision_tower without vision_model)"
        }
        ("model.language_model.", _) => "llava-hf (nested model.language_model)",
        _ => "llava-hf (hub: language_model.model)",
    };
    let feature_layer = config
        .get("vision_feature_layer")
        .and_then(Value::as_i64)
        .unwrap_or(-2);
    let image_token_id = config
        .get("image_token_index")
        .or_else(|| config.get("image_token_id"))
        .and_then(Value::as_u64)
        .map(|v| v as u32);
    let processor = image_processor(&[dir], vision.image_size, Preprocess::ResizeCenterCrop)?;
    Ok(Checkpoint {
        dir: dir.to_path_buf(),
        arch: format!("llava-{}", arch.name()),
        model_type: "llava".into(),
        text,
        image: ImageSpec::Clip {
            vision,
            feature_layer,
            processor,
        },
        layout: KeyLayout {
            name: layout_name,
            text: text_prefix,
            lm_head,
            vision: vision_prefix,
            projector_first: format!("{projector}linear_1"),
            projector_second: format!("{projector}linear_2"),
        },
        weights,
        vision_weights: None,
        image_token_id,
        prompt_format: PromptFormat::ChatTemplate,
        tokenizer_file,
        eos_token_ids,
    })
}

/// Where llava-hf and Gemma 3 checkpoints (`*ForConditionalGeneration`) keep the decoder, the
/// LM head and the vision tower: the hub's `language_model.model.*` +
/// `vision_tower.vision_model.*`, the nested `model.language_model.*` + `model.vision_tower.*`,
/// and transformers 5's `vision_tower.*` without `vision_model`.
fn conditional_generation_prefixes(
    dir: &Path,
    names: &BTreeSet<String>,
) -> Result<(String, String, String)> {
    let text = first_with(
        names,
        &["language_model.model.", "model.language_model.", "model."],
        "embed_tokens.weight",
    )
    .with_context(|| {
        format!(
            "cannot find the text decoder's embed_tokens in {}",
            dir.display()
        )
    })?;
    let lm_head = first_with(names, &["language_model.lm_head.", "lm_head."], "weight")
        .unwrap_or_else(|| "lm_head.".into());
    let vision = first_with(
        names,
        &[
            "vision_tower.vision_model.",
            "model.vision_tower.vision_model.",
            "model.vision_tower.",
            "vision_tower.",
        ],
        "embeddings.patch_embedding.weight",
    )
    .with_context(|| {
        format!(
            "cannot find the vision tower's patch embedding (vision_tower.vision_model.embeddings.patch_embedding.weight) in {}",
            dir.display()
        )
    })?;
    Ok((text, lm_head, vision))
}

fn detect_original(
    found: Found,
    model_type: &str,
    vision_tower_override: Option<&Path>,
) -> Result<Checkpoint> {
    let Found {
        dir,
        config_path,
        config,
        weights,
        names,
        tokenizer_file,
        eos_token_ids,
    } = found;
    let Some(arch) = text_arch(model_type) else {
        bail!(
            "unsupported LLaVA model_type {model_type:?}: {}",
            config_path.display()
        );
    };
    let keys = ConfigKeys::new(config, "", config_path);
    unsupported::llava_original(&keys)?;
    unsupported::text_decoder(&keys, arch)?;
    let text = text_config(config, arch).map_err(in_file(config_path))?;
    let feature_layer = config
        .get("mm_vision_select_layer")
        .and_then(Value::as_i64)
        .unwrap_or(-2);
    let inside = first_with(
        names,
        &[
            "model.vision_tower.vision_tower.vision_model.",
            "model.vision_tower.vision_model.",
        ],
        "embeddings.patch_embedding.weight",
    );
    let tower_name = config
        .get("mm_vision_tower")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut looked = Vec::new();
    let tower_dir = match vision_tower_override {
        Some(path) => Some(path.to_path_buf()),
        None if !tower_name.is_empty() => {
            // A folder a config names with '/' (as published configs do), in this system's
            // separators, so that Windows messages name `vit\clip` rather than `vit/clip`.
            let tower = crate::platform::native_path(tower_name);
            let candidates = [dir.join(&tower), tower];
            let found = candidates
                .iter()
                .find(|c| c.join("config.json").exists())
                .cloned();
            looked.extend(candidates.iter().map(|c| c.display().to_string()));
            found
        }
        None => None,
    };
    let vision_obj = match &tower_dir {
        Some(tower) => {
            let tower_path = tower.join("config.json");
            let tower_config = read_json(&tower_path)?;
            let clip = ["clip", "clip_vision_model"];
            unsupported::vision_model_type(
                &ConfigKeys::new(&tower_config, "", &tower_path),
                &clip,
                "CLIP",
            )?;
            match tower_config.get("vision_config") {
                Some(vision) => {
                    let keys = ConfigKeys::new(vision, "vision_config.", &tower_path);
                    unsupported::vision_model_type(&keys, &clip, "CLIP")?;
                    unsupported::vision_activation(&keys)?;
                    vision.clone()
                }
                None => {
                    unsupported::vision_activation(&ConfigKeys::new(
                        &tower_config,
                        "",
                        &tower_path,
                    ))?;
                    tower_config
                }
            }
        }
        None => {
            let vision = config
                .get("vision_config")
                .cloned()
                .unwrap_or(Value::Object(Default::default()));
            let keys = ConfigKeys::new(&vision, "vision_config.", config_path);
            unsupported::vision_model_type(&keys, &["clip_vision_model"], "CLIP")?;
            unsupported::vision_activation(&keys)?;
            vision
        }
    };
    let vision: VisionConfig =
        serde_json::from_value(vision_obj).context("invalid CLIP vision config")?;
    let (vision_prefix, vision_weights) = match (inside, &tower_dir) {
        (Some(prefix), _) if vision_tower_override.is_none() => (prefix, None),
        (_, Some(tower)) => {
            let files = safetensors_files(tower)?;
            if files.is_empty() {
                bail!("no *.safetensors weights in the vision tower folder: {}", tower.display());
            }
            let tower_names = tensor_names(&files)?;
            let prefix = first_with(&tower_names, &["vision_model.", "vision_tower.vision_model.", ""], "embeddings.patch_embedding.weight")
                .with_context(|| format!("no CLIP vision weights (vision_model.embeddings.*) in {}", tower.display()))?;
            (prefix, Some(files))
        }
        _ => bail!(
            "vision tower weights not found: no model.vision_tower.vision_tower.vision_model.* tensors in {} and no CLIP \
             folder for mm_vision_tower {tower_name:?} (looked in {}); pass --vision-tower DIR",
            dir.display(),
            if looked.is_empty() { "nowhere".to_string() } else { looked.join(", ") }
        ),
    };
    if !names.contains("model.mm_projector.0.weight") {
        bail!("no model.mm_projector.0.weight in {}", dir.display());
    }
    let mode = match config.get("image_aspect_ratio").and_then(Value::as_str) {
        Some("pad") => Preprocess::PadMeanResize,
        _ => Preprocess::ResizeCenterCrop,
    };
    let mut processor_dirs: Vec<&Path> = Vec::new();
    if let Some(tower) = &tower_dir {
        processor_dirs.push(tower);
    }
    processor_dirs.push(dir);
    let processor = image_processor(&processor_dirs, vision.image_size, mode)?;
    let prompt_format = match arch {
        TextArch::Mistral => PromptFormat::MistralInstruct,
        _ => PromptFormat::Huatuo,
    };
    let lm_head = if names.contains("lm_head.weight") {
        "lm_head."
    } else {
        "model.lm_head."
    };
    Ok(Checkpoint {
        dir: dir.to_path_buf(),
        arch: format!("llava-{}", arch.name()),
        model_type: model_type.to_string(),
        text,
        image: ImageSpec::Clip {
            vision,
            feature_layer,
            processor,
        },
        layout: KeyLayout {
            name: if vision_weights.is_some() {
                "original LLaVA (separate CLIP folder)"
            } else {
                "original LLaVA"
            },
            text: "model.".into(),
            lm_head: lm_head.into(),
            vision: vision_prefix,
            projector_first: "model.mm_projector.0".into(),
            projector_second: "model.mm_projector.2".into(),
        },
        weights,
        vision_weights,
        image_token_id: None,
        prompt_format,
        tokenizer_file,
        eos_token_ids,
    })
}

/// Detect a Qwen2.5-VL or Qwen3-VL checkpoint (config keys flat as on the Qwen2.5-VL hub, or
/// under `text_config`; tensors flat `model.layers.*` + `visual.*`, or nested
/// `model.language_model.*` + `model.visual.*`).
fn detect_qwen_vl(found: Found, kind: QwenVisionKind) -> Result<Checkpoint> {
    let Found {
        dir,
        config_path,
        config,
        weights,
        names,
        tokenizer_file,
        eos_token_ids,
    } = found;
    let text_obj = match config.get("text_config") {
        Some(Value::Object(text)) => {
            // transformers 5 keeps text keys under text_config; older files repeat some at
            // the top level. Top-level keys fill what text_config lacks.
            let mut merged = config.as_object().cloned().unwrap_or_default();
            merged.remove("vision_config");
            for (key, value) in text {
                merged.insert(key.clone(), value.clone());
            }
            Value::Object(merged)
        }
        _ => config.clone(),
    };
    let (arch, family, model_type) = match kind {
        QwenVisionKind::Qwen25 => (TextArch::Qwen2, "qwen2.5-vl", "qwen2_5_vl"),
        QwenVisionKind::Qwen3 => (TextArch::Qwen3, "qwen3-vl", "qwen3_vl"),
    };
    let text_keys = if config.get("text_config").is_some() {
        "text_config."
    } else {
        ""
    };
    unsupported::text_decoder(&ConfigKeys::new(&text_obj, text_keys, config_path), arch)?;
    let mut text = text_config(&text_obj, arch).map_err(in_file(config_path))?;
    // transformers lays the M-RoPE sections out by family, whatever `mrope_interleaved` says:
    // contiguous for Qwen2.5-VL, interleaved for Qwen3-VL.
    text.rope = match (&text.rope, kind) {
        (RopeAxes::Sequential, _) => bail!(
            "no mrope_section in rope_scaling / rope_parameters: a {family} decoder needs M-RoPE: {}",
            config_path.display()
        ),
        (RopeAxes::Mrope(s) | RopeAxes::InterleavedMrope(s), QwenVisionKind::Qwen25) => {
            RopeAxes::Mrope(*s)
        }
        (RopeAxes::Mrope(s) | RopeAxes::InterleavedMrope(s), QwenVisionKind::Qwen3) => {
            RopeAxes::InterleavedMrope(*s)
        }
    };
    text.tie_word_embeddings = text_obj
        .get("tie_word_embeddings")
        .or_else(|| config.get("tie_word_embeddings"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let vision =
        QwenVisionConfig::from_json(config.get("vision_config").unwrap_or(&Value::Null), kind)
            .map_err(|e| anyhow::anyhow!("{e}: {}", config_path.display()))?;
    if let Some(&last) = vision.deepstack_visual_indexes.last() {
        let n = vision.deepstack_visual_indexes.len();
        if n > text.num_hidden_layers {
            bail!(
                "{n} DeepStack features (deepstack_visual_indexes up to {last}) for a decoder of {} layers: {}",
                text.num_hidden_layers,
                config_path.display()
            );
        }
    }
    if vision.out_hidden_size != text.hidden_size {
        bail!(
            "vision out_hidden_size {} differs from the decoder's hidden_size {}: {}",
            vision.out_hidden_size,
            text.hidden_size,
            config_path.display()
        );
    }
    let id = |key: &str, default: u32| -> u32 {
        config
            .get(key)
            .and_then(Value::as_u64)
            .map_or(default, |v| v as u32)
    };
    let tokens = QwenTokens {
        image_pad: id("image_token_id", 151655),
        vision_start: id("vision_start_token_id", 151652),
        vision_end: id("vision_end_token_id", 151653),
    };
    let text_prefix = first_with(
        names,
        &["model.language_model.", "model."],
        "embed_tokens.weight",
    )
    .with_context(|| {
        format!(
            "cannot find the decoder's embed_tokens in {}",
            dir.display()
        )
    })?;
    let vision_prefix = first_with(
        names,
        &["model.visual.", "visual."],
        "patch_embed.proj.weight",
    )
    .with_context(|| {
        format!(
            "cannot find the vision tower (visual.patch_embed.proj.weight) in {}",
            dir.display()
        )
    })?;
    let layout_name = match (kind, text_prefix == "model.language_model.") {
        (QwenVisionKind::Qwen25, true) => "qwen2.5-vl (nested model.language_model, model.visual)",
        (QwenVisionKind::Qwen25, false) => "qwen2.5-vl (flat model.layers, visual)",
        (QwenVisionKind::Qwen3, true) => "qwen3-vl (nested model.language_model, model.visual)",
        (QwenVisionKind::Qwen3, false) => "qwen3-vl (flat model.layers, visual)",
    };
    if let Some((path, config)) = super::preprocess::processor_file(dir) {
        // Qwen2VLImageProcessor resizes with bicubic (3) unless told otherwise.
        unsupported::image_processor(&ConfigKeys::new(&config, "", &path), false, Some(3))?;
    }
    let processor = qwen_vl::processor_config(dir, &vision);
    if processor.patch_size != vision.patch_size
        || processor.merge_size != vision.spatial_merge_size
        || processor.temporal_patch_size != vision.temporal_patch_size
    {
        bail!(
            "preprocessor_config.json (patch {}, merge {}, temporal {}) disagrees with vision_config (patch {}, merge {}, temporal {}): {}",
            processor.patch_size, processor.merge_size, processor.temporal_patch_size,
            vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size,
            dir.display()
        );
    }
    Ok(Checkpoint {
        dir: dir.to_path_buf(),
        arch: family.into(),
        model_type: model_type.into(),
        text,
        image: ImageSpec::Qwen {
            vision,
            processor,
            tokens,
        },
        layout: KeyLayout {
            name: layout_name,
            text: text_prefix,
            lm_head: "lm_head.".into(),
            vision: vision_prefix,
            projector_first: String::new(),
            projector_second: String::new(),
        },
        weights,
        vision_weights: None,
        image_token_id: Some(tokens.image_pad),
        prompt_format: PromptFormat::ChatTemplate,
        tokenizer_file,
        eos_token_ids,
    })
}

/// Detect a Gemma 3 checkpoint (`Gemma3ForConditionalGeneration`: MedGemma).
fn detect_gemma3(found: Found) -> Result<Checkpoint> {
    let Found {
        dir,
        config_path,
        config,
        weights,
        names,
        tokenizer_file,
        eos_token_ids,
    } = found;
    let in_config = in_file(config_path);
    let text_obj = config.get("text_config").cloned().unwrap_or(Value::Null);
    if !text_obj.is_object() {
        bail!(
            "a gemma3 config.json needs a text_config: {}",
            config_path.display()
        );
    }
    unsupported::text_decoder(
        &ConfigKeys::new(&text_obj, "text_config.", config_path),
        TextArch::Gemma3,
    )?;
    let vision_obj = config.get("vision_config").cloned().unwrap_or(Value::Null);
    let vision_keys = ConfigKeys::new(&vision_obj, "vision_config.", config_path);
    unsupported::vision_model_type(&vision_keys, &["siglip_vision_model"], "SigLIP")?;
    unsupported::vision_activation(&vision_keys)?;
    // The rotary settings are Gemma's own (per layer type): parse the rest without them.
    let mut plain = text_obj.clone();
    if let Some(obj) = plain.as_object_mut() {
        obj.remove("rope_scaling");
        obj.remove("rope_parameters");
        obj.remove("rope_theta");
    }
    let mut text = text_config(&plain, TextArch::Gemma3).map_err(in_config)?;
    text.rope_theta = gemma3::global_rope_theta(&text_obj);
    let gemma = gemma3::gemma_text(&text_obj, text.num_hidden_layers).map_err(in_config)?;
    text.gemma = Some(gemma);
    // Gemma 3 ties its head to the embeddings unless the config says otherwise.
    text.tie_word_embeddings = text_obj
        .get("tie_word_embeddings")
        .or_else(|| config.get("tie_word_embeddings"))
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let vision = gemma3::siglip_config(&vision_obj).map_err(in_config)?;
    let mm_tokens_per_image =
        super::config::get_usize(config, "mm_tokens_per_image").unwrap_or(256);
    gemma3::token_grid(mm_tokens_per_image, vision.grid_side()).map_err(in_config)?;
    let id = |keys: &[&str], default: u32| -> u32 {
        keys.iter()
            .find_map(|key| config.get(*key).and_then(Value::as_u64))
            .map_or(default, |v| v as u32)
    };
    let tokens = gemma3::GemmaTokens {
        boi: id(&["boi_token_index", "boi_token_id"], 255_999),
        eoi: id(&["eoi_token_index", "eoi_token_id"], 256_000),
        image_soft: id(&["image_token_index", "image_token_id"], 262_144),
    };
    let (text_prefix, lm_head, vision_prefix) = conditional_generation_prefixes(dir, names)?;
    if !text.tie_word_embeddings && !names.contains(&format!("{lm_head}weight")) {
        bail!(
            "tie_word_embeddings is false but there is no lm_head.weight in {}",
            dir.display()
        );
    }
    let projector = first_with(
        names,
        &["multi_modal_projector.", "model.multi_modal_projector."],
        "mm_input_projection_weight",
    )
    .with_context(|| {
        format!(
            "cannot find multi_modal_projector.mm_input_projection_weight in {}",
            dir.display()
        )
    })?;
    let layout_name = match (text_prefix.as_str(), vision_prefix.as_str()) {
        ("language_model.model.", "vision_tower.vision_model.") => {
            "gemma3 (hub: language_model.model, vision_tower.vision_model)"
        }
        ("language_model.model.", _) => {
            "gemma3 (transformers 5 save: language_model.model, vision_tower without vision_model)"
        }
        _ => "gemma3 (nested model.language_model, model.vision_tower)",
    };
    let processor = gemma3_processor(dir, &vision)?;
    Ok(Checkpoint {
        dir: dir.to_path_buf(),
        arch: "gemma3".into(),
        model_type: "gemma3".into(),
        text,
        image: ImageSpec::Gemma3 {
            vision,
            processor,
            tokens,
            mm_tokens_per_image,
        },
        layout: KeyLayout {
            name: layout_name,
            text: text_prefix,
            lm_head,
            vision: vision_prefix,
            projector_first: projector.trim_end_matches('.').to_string(),
            projector_second: String::new(),
        },
        weights,
        vision_weights: None,
        image_token_id: Some(tokens.image_soft),
        prompt_format: PromptFormat::ChatTemplate,
        tokenizer_file,
        eos_token_ids,
    })
}

/// Gemma 3's image processor: resize to the square input (Pillow, `resample`: bilinear in
/// MedGemma's files), rescale, normalise (mean/std 0.5 unless the file says otherwise).
fn gemma3_processor(dir: &Path, vision: &VisionConfig) -> Result<ImageProcessor> {
    let side = vision.image_size as u32;
    let mut processor = ImageProcessor {
        size: side,
        mean: [0.5; 3],
        std: [0.5; 3],
        rescale_factor: 1.0 / 255.0,
        mode: Preprocess::Resize,
        resample: Resample::Bilinear,
    };
    let Some((path, config)) = super::preprocess::processor_file(dir) else {
        return Ok(processor);
    };
    unsupported::image_processor(&ConfigKeys::new(&config, "", &path), false, None)?;
    read_normalisation(
        &config,
        &mut processor.mean,
        &mut processor.std,
        &mut processor.rescale_factor,
    );
    if let Some(value) = config.get("resample").and_then(Value::as_u64) {
        processor.resample = Resample::from_pil(value).with_context(|| {
            format!(
                "preprocessor resample {value} is not supported (2 bilinear, 3 bicubic are): {}",
                dir.display()
            )
        })?;
    }
    if config
        .get("do_pan_and_scan")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        bail!(
            "do_pan_and_scan is set: Gemma 3's pan-and-scan crops are not supported: {}",
            dir.display()
        );
    }
    if let Some(size) = config.get("size") {
        let height = size.get("height").and_then(Value::as_u64);
        let width = size.get("width").and_then(Value::as_u64);
        if let (Some(h), Some(w)) = (height, width) {
            if h != w || h as u32 != side {
                bail!(
                    "the image processor resizes to {w} x {h} but the SigLIP tower takes {side} x {side}: {}",
                    dir.display()
                );
            }
        }
    }
    Ok(processor)
}

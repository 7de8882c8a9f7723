//! Checkpoint detection: what kind of LLaVA a folder holds and where each tensor lives.
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

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::decoder::{TextArch, TextConfig};
use super::preprocess::{ImageProcessor, Preprocess};
use super::prompt::PromptFormat;
use super::vision::VisionConfig;

/// Where the tensors of each part live (prefixes end with a dot, or are empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLayout {
    pub name: &'static str,
    pub text: String,
    pub lm_head: String,
    pub vision: String,
    pub projector_first: String,
    pub projector_second: String,
}

/// Everything fovea knows about a checkpoint before loading it.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub dir: PathBuf,
    /// Short architecture name for reports: "llava-llama", "llava-qwen2", "llava-mistral".
    pub arch: String,
    pub model_type: String,
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub feature_layer: i64,
    pub processor: ImageProcessor,
    pub layout: KeyLayout,
    pub weights: Vec<PathBuf>,
    /// Weights of a separate CLIP folder, when the tower is not inside the checkpoint.
    pub vision_weights: Option<Vec<PathBuf>>,
    /// llava-hf: the token id that stands for one image position.
    pub image_token_id: Option<u32>,
    pub prompt_format: PromptFormat,
    pub tokenizer_file: PathBuf,
    pub eos_token_ids: Vec<u32>,
}

impl Checkpoint {
    pub fn num_image_tokens(&self) -> usize {
        self.vision.grid_side() * self.vision.grid_side()
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("invalid JSON in {}", path.display()))
}

fn get_usize(obj: &Value, key: &str) -> Option<usize> {
    obj.get(key).and_then(Value::as_u64).map(|v| v as usize)
}

fn get_f64(obj: &Value, key: &str) -> Option<f64> {
    obj.get(key).and_then(Value::as_f64)
}

/// Parse a text config with the defaults of the HF config class of its family.
pub fn text_config(obj: &Value, arch: TextArch) -> Result<TextConfig> {
    // (vocab, hidden, intermediate, layers, heads, kv heads, rms eps)
    let defaults = match arch {
        TextArch::Llama => (32000, 4096, 11008, 32, 32, None, 1e-6),
        TextArch::Mistral => (32000, 4096, 14336, 32, 32, Some(8), 1e-6),
        TextArch::Qwen2 => (151936, 4096, 22016, 32, 32, None, 1e-6),
    };
    let hidden_size = get_usize(obj, "hidden_size").unwrap_or(defaults.1);
    let num_attention_heads = get_usize(obj, "num_attention_heads").unwrap_or(defaults.4);
    let num_key_value_heads = get_usize(obj, "num_key_value_heads")
        .or(defaults.5)
        .unwrap_or(num_attention_heads);
    let head_dim = get_usize(obj, "head_dim").unwrap_or(hidden_size / num_attention_heads.max(1));
    let rope_theta = get_f64(obj, "rope_theta")
        .or_else(|| {
            obj.get("rope_parameters")
                .and_then(|p| get_f64(p, "rope_theta"))
        })
        .unwrap_or(10000.0);
    let scaling = obj
        .get("rope_scaling")
        .filter(|v| !v.is_null())
        .or_else(|| {
            obj.get("rope_parameters").filter(|p| {
                p.get("rope_type")
                    .and_then(Value::as_str)
                    .unwrap_or("default")
                    != "default"
            })
        });
    if let Some(scaling) = scaling {
        bail!("RoPE scaling {scaling} is not supported yet");
    }
    let cfg = TextConfig {
        arch,
        vocab_size: get_usize(obj, "vocab_size").unwrap_or(defaults.0),
        hidden_size,
        intermediate_size: get_usize(obj, "intermediate_size").unwrap_or(defaults.2),
        num_hidden_layers: get_usize(obj, "num_hidden_layers").unwrap_or(defaults.3),
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        rms_norm_eps: get_f64(obj, "rms_norm_eps").unwrap_or(defaults.6),
        rope_theta,
        attention_bias: arch == TextArch::Qwen2
            || obj
                .get("attention_bias")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        tie_word_embeddings: obj
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    };
    if cfg.num_attention_heads == 0
        || cfg.num_key_value_heads == 0
        || cfg.num_attention_heads % cfg.num_key_value_heads != 0
    {
        bail!(
            "{} attention heads cannot share {} key/value heads",
            cfg.num_attention_heads,
            cfg.num_key_value_heads
        );
    }
    Ok(cfg)
}

fn text_arch(model_type: &str) -> Option<TextArch> {
    match model_type {
        "llama" | "llava_llama" | "llava" => Some(TextArch::Llama),
        "mistral" | "llava_mistral" => Some(TextArch::Mistral),
        "qwen2" | "llava_qwen2" => Some(TextArch::Qwen2),
        _ => None,
    }
}

/// The safetensors files of a folder (sharded or single), sorted.
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    Ok(files)
}

/// Names of all tensors in the given safetensors files (headers only).
pub fn tensor_names(files: &[PathBuf]) -> Result<BTreeSet<String>> {
    let weights = super::weights::WeightFiles::open(files)?;
    Ok(weights.names().map(str::to_string).collect())
}

fn first_with(names: &BTreeSet<String>, candidates: &[&str], suffix: &str) -> Option<String> {
    candidates
        .iter()
        .find(|prefix| names.contains(&format!("{prefix}{suffix}")))
        .map(|p| p.to_string())
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

    if model_type == "llava" && config.get("text_config").is_some() {
        return detect_llava_hf(dir, &config, weights, &names, tokenizer_file, eos_token_ids);
    }
    if matches!(
        model_type.as_str(),
        "llava_qwen2" | "llava_llama" | "llava_mistral" | "llava"
    ) || config.get("mm_vision_tower").is_some()
    {
        return detect_original(
            dir,
            &config,
            &model_type,
            weights,
            &names,
            tokenizer_file,
            eos_token_ids,
            vision_tower_override,
        );
    }
    bail!(
        "unsupported architecture {:?} (model_type {model_type:?}); fovea reads LLaVA checkpoints: llava-hf \
         LlavaForConditionalGeneration, llava_qwen2 (HuatuoGPT-Vision), llava_llama, llava_mistral (LLaVA-Med): {}",
        config.get("architectures").cloned().unwrap_or(Value::Null),
        config_path.display()
    )
}

fn eos_ids(dir: &Path, config: &Value) -> Vec<u32> {
    let mut ids = Vec::new();
    let mut add = |value: Option<&Value>| match value {
        Some(Value::Number(n)) => ids.extend(n.as_u64().map(|v| v as u32)),
        Some(Value::Array(list)) => {
            ids.extend(list.iter().filter_map(Value::as_u64).map(|v| v as u32))
        }
        _ => {}
    };
    if let Ok(generation) = read_json(&dir.join("generation_config.json")) {
        add(generation.get("eos_token_id"));
    }
    add(config.get("eos_token_id"));
    add(config
        .get("text_config")
        .and_then(|t| t.get("eos_token_id")));
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn image_processor(dirs: &[&Path], size: usize, mode: Preprocess) -> ImageProcessor {
    let mut processor = ImageProcessor::clip(size as u32, mode);
    for dir in dirs {
        let config = read_json(&dir.join("preprocessor_config.json")).or_else(|_| {
            read_json(&dir.join("processor_config.json"))
                .map(|p| p.get("image_processor").cloned().unwrap_or(p))
        });
        let Ok(config) = config else { continue };
        let triple = |key: &str| -> Option<[f32; 3]> {
            let list = config.get(key)?.as_array()?;
            (list.len() == 3).then(|| [0, 1, 2].map(|i| list[i].as_f64().unwrap_or(0.0) as f32))
        };
        if let Some(mean) = triple("image_mean") {
            processor.mean = mean;
        }
        if let Some(std) = triple("image_std") {
            processor.std = std;
        }
        if let Some(factor) = get_f64(&config, "rescale_factor") {
            processor.rescale_factor = factor as f32;
        }
        break;
    }
    processor
}

fn detect_llava_hf(
    dir: &Path,
    config: &Value,
    weights: Vec<PathBuf>,
    names: &BTreeSet<String>,
    tokenizer_file: PathBuf,
    eos_token_ids: Vec<u32>,
) -> Result<Checkpoint> {
    let text_obj = &config["text_config"];
    let text_type = text_obj
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or("llama");
    let Some(arch) = text_arch(text_type) else {
        bail!(
            "unsupported text model {text_type:?} inside llava: {}",
            dir.join("config.json").display()
        );
    };
    let text = text_config(text_obj, arch)?;
    let vision: VisionConfig =
        serde_json::from_value(config.get("vision_config").cloned().unwrap_or(Value::Null))
            .or_else(|_| serde_json::from_value(Value::Object(Default::default())))
            .context("invalid vision_config")?;
    let text_prefix = first_with(
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
    let vision_prefix = first_with(
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
            "cannot find the vision tower's patch embedding in {}",
            dir.display()
        )
    })?;
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
    let strategy = config
        .get("vision_feature_select_strategy")
        .and_then(Value::as_str)
        .unwrap_or("default");
    if strategy != "default" {
        bail!("vision_feature_select_strategy {strategy:?} is not supported (only \"default\": CLS dropped)");
    }
    let feature_layer = match config.get("vision_feature_layer") {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(-2),
        None => -2,
        Some(other) => bail!("vision_feature_layer {other} is not supported (a single layer is)"),
    };
    let image_token_id = config
        .get("image_token_index")
        .or_else(|| config.get("image_token_id"))
        .and_then(Value::as_u64)
        .map(|v| v as u32);
    let processor = image_processor(&[dir], vision.image_size, Preprocess::ResizeCenterCrop);
    Ok(Checkpoint {
        dir: dir.to_path_buf(),
        arch: format!("llava-{}", arch.name()),
        model_type: "llava".into(),
        text,
        vision,
        feature_layer,
        processor,
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

#[allow(clippy::too_many_arguments)]
fn detect_original(
    dir: &Path,
    config: &Value,
    model_type: &str,
    weights: Vec<PathBuf>,
    names: &BTreeSet<String>,
    tokenizer_file: PathBuf,
    eos_token_ids: Vec<u32>,
    vision_tower_override: Option<&Path>,
) -> Result<Checkpoint> {
    let arch = text_arch(model_type).unwrap_or(TextArch::Llama);
    let text = text_config(config, arch)?;
    let projector_type = config
        .get("mm_projector_type")
        .and_then(Value::as_str)
        .unwrap_or("linear");
    if projector_type != "mlp2x_gelu" {
        bail!(
            "mm_projector_type {projector_type:?} is not supported (mlp2x_gelu is): {}",
            dir.join("config.json").display()
        );
    }
    let select = config
        .get("mm_vision_select_feature")
        .and_then(Value::as_str)
        .unwrap_or("patch");
    if select != "patch" {
        bail!("mm_vision_select_feature {select:?} is not supported (patch is)");
    }
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
            let candidates = [dir.join(tower_name), PathBuf::from(tower_name)];
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
            let tower_config = read_json(&tower.join("config.json"))?;
            tower_config
                .get("vision_config")
                .cloned()
                .unwrap_or(tower_config)
        }
        None => config
            .get("vision_config")
            .cloned()
            .unwrap_or(Value::Object(Default::default())),
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
    let processor = image_processor(&processor_dirs, vision.image_size, mode);
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
        vision,
        feature_layer,
        processor,
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

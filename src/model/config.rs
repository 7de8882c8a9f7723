//! What fovea knows about a checkpoint before loading it ([`Checkpoint`]: the text decoder's
//! config, how an image becomes tokens, where each tensor lives), and the parsers the
//! detection in `detect.rs` shares.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::decoder::{TextArch, TextConfig};
use super::gemma3::GemmaTokens;
use super::preprocess::ImageProcessor;
use super::prompt::PromptFormat;
use super::qwen_vl::{QwenProcessor, QwenTokens, QwenVisionConfig};
use super::rope::RopeAxes;
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
    /// How an image becomes tokens: the vision tower, its processor and the grid policy.
    pub image: ImageSpec,
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

/// The image side of a checkpoint.
#[derive(Clone, Debug)]
pub enum ImageSpec {
    /// LLaVA: a CLIP tower read at `feature_layer`, a fixed square grid.
    Clip {
        vision: VisionConfig,
        feature_layer: i64,
        processor: ImageProcessor,
    },
    /// Qwen2.5-VL and Qwen3-VL: a native-resolution ViT; the grid follows each image's shape.
    Qwen {
        vision: QwenVisionConfig,
        processor: QwenProcessor,
        tokens: QwenTokens,
    },
    /// Gemma 3 (MedGemma): SigLIP on a square input, pooled to a fixed square token grid.
    Gemma3 {
        vision: VisionConfig,
        processor: ImageProcessor,
        tokens: GemmaTokens,
        mm_tokens_per_image: usize,
    },
}

impl Checkpoint {
    /// The token grid when it is the same for every image (LLaVA), else `None`.
    pub fn fixed_grid(&self) -> Option<(usize, usize)> {
        match &self.image {
            ImageSpec::Clip { vision, .. } => Some((vision.grid_side(), vision.grid_side())),
            ImageSpec::Qwen { .. } => None,
            ImageSpec::Gemma3 {
                mm_tokens_per_image,
                ..
            } => {
                let side = (*mm_tokens_per_image as f64).sqrt().round() as usize;
                Some((side, side))
            }
        }
    }

    /// The token grid an image of `width` x `height` pixels becomes.
    pub fn grid_for(&self, width: u32, height: u32) -> Result<(usize, usize)> {
        match &self.image {
            ImageSpec::Qwen { processor, .. } => processor.token_grid(width, height),
            ImageSpec::Clip { .. } | ImageSpec::Gemma3 { .. } => {
                Ok(self.fixed_grid().unwrap_or((0, 0)))
            }
        }
    }

    /// The family, as the record names it: llava, qwen2_5_vl, qwen3_vl or gemma3.
    pub fn family(&self) -> &'static str {
        match &self.image {
            ImageSpec::Clip { .. } => "llava",
            ImageSpec::Qwen { vision, .. } => match vision.kind {
                super::qwen_vl::QwenVisionKind::Qwen25 => "qwen2_5_vl",
                super::qwen_vl::QwenVisionKind::Qwen3 => "qwen3_vl",
            },
            ImageSpec::Gemma3 { .. } => "gemma3",
        }
    }

    /// What the image processor does, for the record.
    pub fn preprocess_name(&self) -> String {
        match &self.image {
            ImageSpec::Clip { processor, .. } => processor.mode.name(processor.size),
            ImageSpec::Qwen { processor, .. } => processor.describe(),
            ImageSpec::Gemma3 { processor, .. } => format!(
                "{}-{}",
                processor.mode.name(processor.size),
                match processor.resample {
                    super::preprocess::Resample::Bilinear => "bilinear",
                    super::preprocess::Resample::Bicubic => "bicubic",
                }
            ),
        }
    }
}

pub fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("invalid JSON in {}", path.display()))
}

pub fn get_usize(obj: &Value, key: &str) -> Option<usize> {
    obj.get(key).and_then(Value::as_u64).map(|v| v as usize)
}

pub fn get_f64(obj: &Value, key: &str) -> Option<f64> {
    obj.get(key).and_then(Value::as_f64)
}

/// Parse a text config with the defaults of the HF config class of its family.
pub fn text_config(obj: &Value, arch: TextArch) -> Result<TextConfig> {
    // (vocab, hidden, intermediate, layers, heads, kv heads, rms eps)
    let defaults = match arch {
        TextArch::Llama => (32000, 4096, 11008, 32, 32, None, 1e-6),
        TextArch::Mistral => (32000, 4096, 14336, 32, 32, Some(8), 1e-6),
        TextArch::Qwen2 => (151936, 4096, 22016, 32, 32, None, 1e-6),
        TextArch::Qwen3 => (151936, 4096, 22016, 32, 32, None, 1e-6),
        TextArch::Gemma3 => (262208, 2304, 9216, 26, 8, Some(4), 1e-6),
    };
    let hidden_size = get_usize(obj, "hidden_size").unwrap_or(defaults.1);
    let num_attention_heads = get_usize(obj, "num_attention_heads").unwrap_or(defaults.4);
    let num_key_value_heads = get_usize(obj, "num_key_value_heads")
        .or(defaults.5)
        .unwrap_or(num_attention_heads);
    // Qwen3 sets head_dim apart from hidden / heads (128 in Qwen3VLTextConfig).
    let head_dim = get_usize(obj, "head_dim").unwrap_or(match arch {
        TextArch::Qwen3 => 128,
        TextArch::Gemma3 => 256,
        _ => hidden_size / num_attention_heads.max(1),
    });
    let rope_theta = get_f64(obj, "rope_theta")
        .or_else(|| {
            obj.get("rope_parameters")
                .and_then(|p| get_f64(p, "rope_theta"))
        })
        .unwrap_or(10000.0);
    let scaling = ["rope_scaling", "rope_parameters"]
        .into_iter()
        .find_map(|key| Some((key, obj.get(key).filter(|v| !v.is_null())?)));
    let rope = match scaling {
        None => RopeAxes::Sequential,
        Some((key, scaling)) => {
            let kind = scaling
                .get("rope_type")
                .or_else(|| scaling.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("default");
            let section = scaling
                .get("mrope_section")
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .filter_map(Value::as_u64)
                        .map(|v| v as usize)
                        .collect::<Vec<_>>()
                });
            match (kind, section) {
                ("default" | "mrope", Some(section)) => {
                    let Ok(section) = <[usize; 3]>::try_from(section.as_slice()) else {
                        bail!("mrope_section must have three entries (t, h, w), got {section:?}");
                    };
                    let interleaved = scaling
                        .get("mrope_interleaved")
                        .and_then(Value::as_bool)
                        .unwrap_or(false);
                    if interleaved {
                        RopeAxes::InterleavedMrope(section)
                    } else {
                        RopeAxes::Mrope(section)
                    }
                }
                ("default", None) => RopeAxes::Sequential,
                // Linear, dynamic NTK, YaRN, LongRoPE, Llama 3: positions or frequencies
                // rescaled, which only Gemma 3's global layers implement (gemma3.rs).
                _ => bail!(
                    "{key} = {scaling} is not implemented (RoPE scaling of type {kind:?}: rescaled rotary \
                     positions or frequencies; fovea implements plain RoPE and M-RoPE sections)"
                ),
            }
        }
    };
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
        rope,
        gemma: None,
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

/// The decoder family of a `model_type`.
pub fn text_arch(model_type: &str) -> Option<TextArch> {
    match model_type {
        "llama" | "llava_llama" | "llava" => Some(TextArch::Llama),
        "mistral" | "llava_mistral" => Some(TextArch::Mistral),
        "qwen2" | "llava_qwen2" => Some(TextArch::Qwen2),
        "qwen3" | "qwen3_vl_text" => Some(TextArch::Qwen3),
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

/// The first prefix in `candidates` under which `suffix` names a tensor.
pub fn first_with(names: &BTreeSet<String>, candidates: &[&str], suffix: &str) -> Option<String> {
    candidates
        .iter()
        .find(|prefix| names.contains(&format!("{prefix}{suffix}")))
        .map(|p| p.to_string())
}

/// End-of-sequence ids from `generation_config.json` and `config.json`.
pub fn eos_ids(dir: &Path, config: &Value) -> Vec<u32> {
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

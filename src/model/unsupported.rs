//! Refusals: the configuration keys (and tensors) that change what a checkpoint computes and
//! that fovea does not implement.
//!
//! A checkpoint that sets one is refused with one line naming the key, its value and the file;
//! it is never run with the setting ignored. A model run the wrong way still answers and still
//! draws maps that look as plausible as right ones: an original-layout LLaVA-v1.6 checkpoint
//! (`image_aspect_ratio: anyres`) read as LLaVA-1.5 got 64 image tokens where it expects 216,
//! and its first-token logits were off by 30% of their range, without a word.
//!
//! Each family's detection (`detect.rs`) calls the audit of its own keys; keys that only matter
//! for training (`tune_mm_mlp_adapter`, `mm_projector_lr`, ...) or that fovea implements are not
//! listed here.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{anyhow, Error, Result};
use serde_json::Value;

use super::decoder::TextArch;

/// One config object of a file, with its keys named as the file names them (`text_config.`
/// before a nested key).
pub struct ConfigKeys<'a> {
    pub obj: &'a Value,
    pub prefix: &'a str,
    pub file: &'a Path,
}

impl<'a> ConfigKeys<'a> {
    pub fn new(obj: &'a Value, prefix: &'a str, file: &'a Path) -> Self {
        ConfigKeys { obj, prefix, file }
    }

    /// The key's value; JSON `null` counts as absent (as in transformers' configs).
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    /// The refusal of `key`'s `value`, `why` saying what the setting does.
    pub fn refuse(&self, key: &str, value: &Value, why: &str) -> Error {
        refusal(&format!("{}{key}", self.prefix), value, why, self.file)
    }

    /// `key` absent, or one of `allowed` (strings).
    fn one_of(&self, key: &str, allowed: &[&str], why: &str) -> Result<()> {
        match self.get(key) {
            Some(value) if !value.as_str().is_some_and(|s| allowed.contains(&s)) => {
                let implemented = allowed
                    .iter()
                    .map(|s| format!("{s:?}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                Err(self.refuse(
                    key,
                    value,
                    &format!("{why}; fovea implements {implemented}"),
                ))
            }
            _ => Ok(()),
        }
    }

    /// `key` absent or `false`.
    fn not_true(&self, key: &str, why: &str) -> Result<()> {
        match self.get(key) {
            Some(value) if value.as_bool() != Some(false) => Err(self.refuse(key, value, why)),
            _ => Ok(()),
        }
    }

    /// `key` absent or `true` (a step that is on unless turned off).
    fn not_false(&self, key: &str, why: &str) -> Result<()> {
        match self.get(key) {
            Some(value) if value.as_bool() != Some(true) => Err(self.refuse(key, value, why)),
            _ => Ok(()),
        }
    }

    /// `key` absent (or `null`).
    fn unset(&self, key: &str, why: &str) -> Result<()> {
        match self.get(key) {
            Some(value) => Err(self.refuse(key, value, why)),
            None => Ok(()),
        }
    }
}

/// The one-line refusal: key, value, what it does, file.
pub fn refusal(key: &str, value: &Value, why: &str, file: &Path) -> Error {
    anyhow!(
        "{key} = {value} is not implemented ({why}); fovea refuses the checkpoint rather than run it without the setting: {}",
        file.display()
    )
}

/// The text decoder's keys (LLaMA, Mistral, Qwen2, Qwen3 and Gemma 3 configs). The RoPE types
/// are refused where they are parsed (`config::text_config`).
pub fn text_decoder(keys: &ConfigKeys, arch: TextArch) -> Result<()> {
    if arch != TextArch::Gemma3 {
        // Gemma's GELU-tanh is checked with the rest of its config (gemma3.rs).
        keys.one_of("hidden_act", &["silu"], "the decoder MLP's activation")?;
    }
    keys.not_true("mlp_bias", "biases on the decoder MLP's projections")?;
    if let Some(value) = keys.get("partial_rotary_factor") {
        if value.as_f64() != Some(1.0) {
            return Err(keys.refuse(
                "partial_rotary_factor",
                value,
                "rotary embedding on part of each head only",
            ));
        }
    }
    for key in ["attn_logit_softcapping", "final_logit_softcapping"] {
        keys.unset(key, "tanh soft-capping of attention scores or logits")?;
    }
    match arch {
        TextArch::Mistral => {
            // transformers windows every layer when sliding_window is set; a window as long as
            // the model's context never changes anything.
            if let Some(window) = keys.get("sliding_window") {
                let context = keys
                    .get("max_position_embeddings")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                if window.as_u64().is_none_or(|w| w < context) {
                    return Err(keys.refuse(
                        "sliding_window",
                        window,
                        "Mistral's sliding-window attention in every layer",
                    ));
                }
            }
        }
        TextArch::Qwen2 | TextArch::Qwen3 => keys.not_true(
            "use_sliding_window",
            "sliding-window attention in the layers from max_window_layers on",
        )?,
        TextArch::Llama | TextArch::Gemma3 => {}
    }
    if arch != TextArch::Gemma3 {
        if let Some(Value::Array(types)) = keys.get("layer_types") {
            if let Some(other) = types.iter().find(|t| t.as_str() != Some("full_attention")) {
                return Err(keys.refuse(
                    "layer_types",
                    other,
                    "a layer that is not full causal attention (a sliding window)",
                ));
            }
        }
    }
    Ok(())
}

/// A tensor whose name marks computation fovea does not implement (`image_newline`: LLaVA-NeXT's
/// row separator, which only its tiled image layout reads).
pub fn unread_tensors(names: &BTreeSet<String>, dir: &Path) -> Result<()> {
    if let Some(name) = names.iter().find(|n| n.ends_with("image_newline")) {
        return Err(anyhow!(
            "the checkpoint has a tensor {name} that nothing in fovea reads (LLaVA-NeXT's newline token after each row of \
             its tiled image layout, which fovea does not implement yet); fovea refuses the checkpoint rather than run it \
             without it: {}",
            dir.display()
        ));
    }
    Ok(())
}

/// The image keys of an original-layout LLaVA config (`llava_llama`, `llava_mistral`,
/// `llava_qwen2`): the LLaVA repository's `process_images`, `build_vision_projector` and
/// `prepare_inputs_labels_for_multimodal` read these.
pub fn llava_original(keys: &ConfigKeys) -> Result<()> {
    if let Some(value) = keys.get("image_aspect_ratio") {
        let aspect = value.as_str().unwrap_or("");
        if aspect.starts_with("anyres") {
            let pinpoints = keys
                .get("image_grid_pinpoints")
                .map_or("no pinpoints".to_string(), |p| {
                    format!("image_grid_pinpoints {p}")
                });
            let merge = keys
                .get("mm_patch_merge_type")
                .map_or("flat".to_string(), |m| m.to_string());
            return Err(keys.refuse(
                "image_aspect_ratio",
                value,
                &format!(
                    "LLaVA-NeXT tiling: a base view plus a mosaic of tiles at {pinpoints}, merged as {merge} with a newline \
                     token after each row; read as LLaVA-1.5 the model would get the wrong image tokens"
                ),
            ));
        }
        // LLaVA's "square" (and no setting) is the processor's resize and centre crop.
        keys.one_of(
            "image_aspect_ratio",
            &["pad", "square"],
            "how the image is fitted to the vision tower's square",
        )?;
    }
    keys.one_of(
        "mm_patch_merge_type",
        &["flat"],
        "how the image features are arranged (spatial merges, unpadding, newline tokens)",
    )?;
    keys.not_true(
        "mm_use_im_start_end",
        "<im_start> and <im_end> token embeddings around the image features",
    )?;
    keys.not_true(
        "s2",
        "multi-scale (S2) vision features concatenated from several image sizes",
    )?;
    keys.one_of(
        "mm_vision_select_feature",
        &["patch"],
        "which vision tokens reach the projector (cls_patch keeps the CLS token)",
    )?;
    // The LLaVA repository builds a single Linear when mm_projector_type is missing.
    let projector = keys
        .get("mm_projector_type")
        .cloned()
        .unwrap_or(Value::String("linear".into()));
    if projector.as_str() != Some("mlp2x_gelu") {
        return Err(keys.refuse(
            "mm_projector_type",
            &projector,
            "the projector from vision features to the decoder (missing means the LLaVA repository's single \
             \"linear\"); fovea implements \"mlp2x_gelu\"",
        ));
    }
    Ok(())
}

/// The image keys of a llava-hf `LlavaForConditionalGeneration` config.
pub fn llava_hf(keys: &ConfigKeys) -> Result<()> {
    keys.one_of(
        "vision_feature_select_strategy",
        &["default"],
        "which vision tokens reach the projector (\"full\" keeps the CLS token)",
    )?;
    if let Some(layer) = keys.get("vision_feature_layer") {
        if !layer.is_i64() {
            return Err(keys.refuse(
                "vision_feature_layer",
                layer,
                "vision features concatenated from several layers; fovea reads one layer",
            ));
        }
    }
    keys.one_of(
        "projector_hidden_act",
        &["gelu"],
        "the projector's activation",
    )?;
    keys.not_false(
        "multimodal_projector_bias",
        "a projector without biases; fovea's has them",
    )
}

/// The vision tower's `model_type`, where a config names it (`vision_config` or a CLIP folder's
/// config.json): a SigLIP tower under a LLaVA, or a CLIP under a Gemma, is a different network.
pub fn vision_model_type(keys: &ConfigKeys, allowed: &[&str], network: &str) -> Result<()> {
    keys.one_of(
        "model_type",
        allowed,
        &format!("the vision tower's network; this family's is {network}"),
    )
}

/// A CLIP / SigLIP tower's `hidden_act`.
pub fn vision_activation(keys: &ConfigKeys) -> Result<()> {
    if let Some(value) = keys.get("hidden_act") {
        let name = value.as_str().unwrap_or("");
        if !super::vision::supports_activation(name) {
            return Err(keys.refuse(
                "hidden_act",
                value,
                "the vision tower MLP's activation; fovea implements quick_gelu, gelu and gelu_pytorch_tanh",
            ));
        }
    }
    Ok(())
}

/// The image processor's switches (`preprocessor_config.json`): a step turned off, or a resampling
/// filter other than the one fovea applies, changes every pixel the tower sees. `crop` says
/// whether the family's processing centre-crops (LLaVA without padding); `resample` is the
/// Pillow filter fovea applies (3: bicubic), `None` where the family reads it (Gemma 3).
pub fn image_processor(keys: &ConfigKeys, crop: bool, resample: Option<u64>) -> Result<()> {
    keys.not_false("do_resize", "the resize to the tower's input turned off")?;
    keys.not_false("do_rescale", "the rescale of 0..255 to 0..1 turned off")?;
    keys.not_false(
        "do_normalize",
        "the normalisation by image_mean and image_std turned off",
    )?;
    if crop {
        keys.not_false(
            "do_center_crop",
            "the centre crop to the tower's square turned off",
        )?;
    }
    if let (Some(expected), Some(value)) = (resample, keys.get("resample")) {
        if value.as_u64() != Some(expected) {
            return Err(keys.refuse(
                "resample",
                value,
                &format!("Pillow resampling filter; fovea implements {expected} for this family"),
            ));
        }
    }
    Ok(())
}

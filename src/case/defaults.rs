//! Per-model VGRefine defaults: which heads triage and which layers are masked when the user
//! gives none (`vgrefine.json` beside a checkpoint, else fovea's table of published values).

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::model::Model;

/// Per-model VGRefine defaults, read from `vgrefine.json` beside a checkpoint.
#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize)]
pub struct ModelDefaults {
    #[serde(default)]
    pub heads: Vec<[usize; 2]>,
    #[serde(default)]
    pub masked_layers: Vec<usize>,
    #[serde(default)]
    pub percentile: Option<f64>,
    #[serde(default)]
    pub source: Option<String>,
}

/// The published triage heads of HuatuoGPT-Vision-7B (the paper's Table of visually
/// sensitive heads), with masked layer 16.
pub const HUATUOGPT_VISION_7B_HEADS: [[usize; 2]; 20] = [
    [15, 4],
    [16, 5],
    [15, 1],
    [10, 6],
    [4, 0],
    [15, 24],
    [19, 6],
    [8, 3],
    [19, 18],
    [18, 10],
    [4, 17],
    [16, 2],
    [16, 17],
    [16, 1],
    [14, 23],
    [6, 18],
    [18, 19],
    [6, 11],
    [0, 2],
    [17, 26],
];

/// Defaults for a loaded model: `vgrefine.json` beside it, else fovea's table of known
/// checkpoints, else none.
pub fn model_defaults(model: &Model) -> Result<Option<ModelDefaults>> {
    let path = model.checkpoint.dir.join("vgrefine.json");
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let defaults: ModelDefaults = serde_json::from_str(&text)
            .with_context(|| format!("invalid VGRefine defaults in {}", path.display()))?;
        return Ok(Some(ModelDefaults {
            source: Some(path.display().to_string()),
            ..defaults
        }));
    }
    let text = &model.checkpoint.text;
    let is_huatuo_7b = model.checkpoint.model_type == "llava_qwen2"
        && text.num_hidden_layers == 28
        && text.num_attention_heads == 28
        && text.hidden_size == 3584;
    if is_huatuo_7b {
        return Ok(Some(ModelDefaults {
            heads: HUATUOGPT_VISION_7B_HEADS.to_vec(),
            masked_layers: vec![16],
            percentile: Some(80.0),
            source: Some("fovea's table: HuatuoGPT-Vision-7B (published heads)".into()),
        }));
    }
    Ok(None)
}

/// Parse `--heads`: `l:h,l:h` or a JSON file (`[[l,h],..]` or `{"heads": [[l,h],..]}`).
pub fn parse_heads_arg(text: &str) -> Result<Vec<(usize, usize)>> {
    let path = Path::new(text);
    if text.ends_with(".json") || path.is_file() {
        let content = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the heads file {}", path.display()))?;
        let value: Value = serde_json::from_str(&content)
            .with_context(|| format!("invalid JSON in {}", path.display()))?;
        let list = value.get("heads").unwrap_or(&value);
        let heads: Vec<[usize; 2]> = serde_json::from_value(list.clone()).with_context(|| {
            format!(
                "heads must be a list of [layer, head] pairs: {}",
                path.display()
            )
        })?;
        return Ok(heads.into_iter().map(|[l, h]| (l, h)).collect());
    }
    crate::grounding::triage::parse_heads(text).map_err(anyhow::Error::msg)
}

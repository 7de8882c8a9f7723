//! `fovea inspect`: one case end to end (image, model, VGRefine, metrics) and its
//! machine-readable record, whose field names are the contract in shared/design/INSPECT-JSON.md.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use serde_json::{json, Value};

use crate::grounding::metrics::{self, Metrics};
use crate::grounding::refine::{self, Outcome, Query, Settings};
use crate::grounding::region::{Region, TokenGrid};
use crate::grounding::triage::Rule;
use crate::imaging::{self, VoiOption};
use crate::model::{ImageSession, Model};
use crate::render::{self, Colormap};

/// fovea's assets folder: `$FOVEA_ASSETS`, else an `assets/` beside or above the executable,
/// else the source tree's.
pub fn assets_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FOVEA_ASSETS") {
        return PathBuf::from(dir);
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(4) {
            if dir.join("assets/demo-model/config.json").exists() {
                return dir.join("assets");
            }
        }
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets")
}

/// Where the bundled demo model lives.
pub fn demo_model_dir() -> PathBuf {
    assets_dir().join("demo-model")
}

/// The bundled demo cases (VGMED JSONL).
pub fn demo_cases_file() -> PathBuf {
    assets_dir().join("cases/cases.jsonl")
}

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

/// Everything one `fovea inspect` run needs.
pub struct Request {
    pub model_dir: PathBuf,
    pub vision_tower: Option<PathBuf>,
    pub image: PathBuf,
    pub frame: usize,
    pub question: String,
    pub settings: Settings,
    /// Set when the user gave no heads and the model's defaults should fill them.
    pub heads_given: bool,
    pub masked_layers_given: bool,
    pub regions: Vec<Region>,
    pub dump_logits: bool,
}

/// A finished case: the record plus what the overlay needs.
pub struct Inspection {
    pub record: Value,
    pub outcome: Outcome,
    pub prepared: image::RgbImage,
    pub grid: TokenGrid,
    pub region_tokens: Vec<usize>,
    pub regions: Vec<Region>,
    pub triage_heads: Vec<(usize, usize)>,
}

pub fn inspect(request: Request) -> Result<Inspection> {
    let total_started = Instant::now();
    for region in &request.regions {
        region.validate().map_err(anyhow::Error::msg)?;
    }
    let study = imaging::load(&request.image)?;
    let rgb = imaging::render_rgb8(&study, request.frame, &VoiOption::Default)?;

    let load_started = Instant::now();
    let model = Model::load(
        &request.model_dir,
        request.vision_tower.as_deref(),
        &Device::Cpu,
    )?;
    let load_ms = load_started.elapsed().as_secs_f64() * 1e3;

    let mut settings = request.settings.clone();
    let defaults = model_defaults(&model)?;
    if !request.heads_given && settings.knockout_tokens.is_none() {
        let Some(defaults) = defaults.as_ref().filter(|d| !d.heads.is_empty()) else {
            bail!(
                "no triage heads known for {}: pass --heads l:h,... (or --heads FILE.json from `fovea heads`), or put \
                 vgrefine.json beside the checkpoint",
                request.model_dir.display()
            );
        };
        settings.heads = defaults.heads.iter().map(|&[l, h]| (l, h)).collect();
        if let (Some(p), Rule::Percentile(_)) = (defaults.percentile, settings.rule) {
            settings.rule = Rule::Percentile(p);
        }
    }
    if !request.masked_layers_given {
        match defaults.as_ref().filter(|d| !d.masked_layers.is_empty()) {
            Some(defaults) => settings.masked_layers = defaults.masked_layers.clone(),
            None => bail!(
                "no masked layers known for {}: pass --masked-layers L[,L]",
                request.model_dir.display()
            ),
        }
    }

    let mut session = ImageSession::new(&model, &rgb)?;
    let outcome = refine::run(&mut session, &request.question, &settings)?;
    let (prepared, mapping) = model.checkpoint.processor.prepare(&rgb);
    let (rows, cols) = model.grid();
    let grid = TokenGrid {
        rows,
        cols,
        mapping,
    };

    let mut region_records = Vec::new();
    let mut region_tokens: Vec<usize> = Vec::new();
    for region in &request.regions {
        let tokens = region.tokens(&grid);
        if tokens.is_empty() {
            bail!(
                "region {} covers no image token (it lies outside the {}x{} image)",
                serde_json::to_string(region).unwrap_or_default(),
                study.width,
                study.height
            );
        }
        region_tokens.extend(&tokens);
        let mut record = serde_json::to_value(region)?;
        record["tokens"] = json!(tokens);
        region_records.push(record);
    }
    region_tokens.sort_unstable();
    region_tokens.dedup();

    let cfg = &model.checkpoint.text;
    let model_info = json!({
        "path": model.checkpoint.dir,
        "arch": model.checkpoint.arch,
        "layers": cfg.num_hidden_layers,
        "heads": cfg.num_attention_heads,
        "kv_heads": cfg.num_key_value_heads,
        "grid": [rows, cols],
        "layout": model.checkpoint.layout.name,
    });
    let image_info = json!({
        "path": request.image,
        "width": study.width,
        "height": study.height,
        "frame": request.frame,
        "preprocess": model.checkpoint.processor.mode.name(model.checkpoint.processor.size),
    });
    let heads_source = if request.heads_given {
        "--heads".to_string()
    } else {
        defaults
            .as_ref()
            .and_then(|d| d.source.clone())
            .unwrap_or_default()
    };
    let mut record = case_record(CaseParts {
        model: model_info,
        image: image_info,
        question: &request.question,
        outcome: &outcome,
        settings: &settings,
        heads_source,
        regions: region_records,
        region_tokens: &region_tokens,
        dump_logits: request.dump_logits,
    });
    let vision_ms = session.timings.vision_ms;
    let prefix_ms = session.timings.prefix_ms;
    record["timings_ms"] = json!({
        "load": load_ms,
        "vision": vision_ms,
        "prefix": prefix_ms,
        "question": outcome.question_ms,
        "general": outcome.general_ms,
        "knockout": outcome.knockout_ms,
        "total": total_started.elapsed().as_secs_f64() * 1e3,
    });
    Ok(Inspection {
        record,
        outcome,
        prepared,
        grid,
        region_tokens,
        regions: request.regions,
        triage_heads: settings.heads,
    })
}

/// What a case record is made of (shared by `fovea inspect` and the app's export).
pub struct CaseParts<'a> {
    pub model: Value,
    pub image: Value,
    pub question: &'a str,
    pub outcome: &'a Outcome,
    pub settings: &'a Settings,
    pub heads_source: String,
    pub regions: Vec<Value>,
    pub region_tokens: &'a [usize],
    pub dump_logits: bool,
}

/// The INSPECT-JSON record of one case, without `timings_ms`.
pub fn case_record(parts: CaseParts) -> Value {
    let outcome = parts.outcome;
    let settings = parts.settings;
    let mut record = json!({
        "fovea_version": env!("CARGO_PKG_VERSION"),
        "model": parts.model,
        "image": parts.image,
        "question": parts.question,
        "prompt_text": outcome.prompt.text,
        "input_ids": outcome.prompt.input_ids,
        "image_span": [outcome.prompt.image_span.start, outcome.prompt.image_span.end],
        "general_prompt_text": outcome.general_prompt.text,
        "general_input_ids": outcome.general_prompt.input_ids,
        "answer": outcome.original.text,
        "answer_ids": outcome.original.ids,
        "attention": {
            "query": match settings.query { Query::Last => "last", Query::Question => "question" },
            "question": outcome.question_maps,
            "general": outcome.general_maps,
            "refined": outcome.refined_maps,
        },
        "knockout": {
            "layers": settings.masked_layers,
            "from": "post-image",
            "decode": settings.knockout_decode,
            "tokens": outcome.knocked_out,
        },
        "refined": {
            "answer": outcome.refined.text,
            "answer_ids": outcome.refined.ids,
        },
        "regions": parts.regions,
    });
    if parts.dump_logits {
        record["first_token_logits"] = json!(outcome.original.first_token_logits);
        record["refined"]["first_token_logits"] = json!(outcome.refined.first_token_logits);
    }
    record["first_token_probability"] =
        json!(top_probability(&outcome.original.first_token_logits));
    record["refined"]["first_token_probability"] =
        json!(top_probability(&outcome.refined.first_token_logits));
    record["triage"] = match &outcome.triage {
        Some(triage) => json!({
            "heads": settings.heads.iter().map(|&(l, h)| [l, h]).collect::<Vec<_>>(),
            "normalize": settings.normalize,
            "score_map": triage.score_map,
            "rule": settings.rule.to_json(),
            "threshold": triage.threshold,
            "knocked_out": triage.knocked_out,
            "heads_source": parts.heads_source,
        }),
        None => json!({
            "heads": [],
            "normalize": settings.normalize,
            "score_map": null,
            "rule": null,
            "knocked_out": outcome.knocked_out,
            "given": true,
        }),
    };
    if !parts.region_tokens.is_empty() {
        record["metrics"] = metrics_record(outcome, settings.normalize, parts.region_tokens);
    }
    record
}

fn top_probability(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let total: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    1.0 / total
}

/// Per-layer, per-head and triage-map metrics against the region tokens.
pub fn metrics_record(outcome: &Outcome, normalize: bool, region: &[usize]) -> Value {
    let maps = outcome.relative(normalize);
    let layers = outcome.question_maps.len();
    let per_layer: Vec<Metrics> = (0..layers)
        .filter_map(|l| metrics::compute(&maps.layer(l), region))
        .collect();
    let per_head: Vec<Vec<Metrics>> = (0..layers)
        .map(|l| {
            (0..outcome.question_maps[l].len())
                .filter_map(|h| metrics::compute(&maps.head(l, h), region))
                .collect()
        })
        .collect();
    let column = |pick: fn(&Metrics) -> f64| -> Vec<f64> { per_layer.iter().map(pick).collect() };
    let table = |pick: fn(&Metrics) -> f64| -> Vec<Vec<f64>> {
        per_head
            .iter()
            .map(|row| row.iter().map(pick).collect())
            .collect()
    };
    let mut record = json!({
        "per_layer": {
            "ratio": column(|m| m.ratio), "kl": column(|m| m.kl), "js": column(|m| m.js),
            "pointing": per_layer.iter().map(|m| m.pointing).collect::<Vec<_>>(),
        },
        "per_head": {
            "ratio": table(|m| m.ratio), "kl": table(|m| m.kl), "js": table(|m| m.js),
            "pointing": per_head.iter().map(|row| row.iter().map(|m| m.pointing).collect::<Vec<_>>()).collect::<Vec<_>>(),
        },
    });
    if let Some(triage) = &outcome.triage {
        if let Some(m) = metrics::compute(&triage.score_map, region) {
            record["triage_map"] = json!({
                "ratio": m.ratio, "kl": m.kl, "js": m.js, "pointing": m.pointing, "soft_iou": m.soft_iou,
            });
        }
    }
    record
}

/// The overlay picture: [image + triage map + kept-token outline + regions] | [attention
/// before knockout] | [attention after knockout], each on the image the model saw.
pub fn overlay_picture(inspection: &Inspection, colormap: Colormap) -> image::RgbImage {
    let grid = (inspection.grid.rows, inspection.grid.cols);
    let base = render::upscale_to(&inspection.prepared, 336);
    let scale = base.width() as f64 / inspection.prepared.width() as f64;
    let outcome = &inspection.outcome;
    let heads = &inspection.triage_heads;
    let head_mean = |maps: &crate::grounding::LayerHeadMaps| -> Vec<f32> {
        if heads.is_empty() {
            let all: Vec<&Vec<f32>> = maps.iter().flatten().collect();
            return crate::grounding::mean_map(all);
        }
        crate::grounding::mean_map(heads.iter().map(|&(l, h)| &maps[l][h]))
    };
    let triage_map = outcome
        .triage
        .as_ref()
        .map(|t| t.score_map.clone())
        .unwrap_or_else(|| head_mean(&outcome.question_maps));
    let mut first = render::blend_heatmap(&base, grid, &triage_map, colormap, 0.55);
    let total = grid.0 * grid.1;
    let kept: Vec<usize> = (0..total)
        .filter(|t| !outcome.knocked_out.contains(t))
        .collect();
    render::outline_tokens(&mut first, grid, &kept, image::Rgb([0, 220, 255]));
    let before = render::blend_heatmap(
        &base,
        grid,
        &head_mean(&outcome.question_maps),
        colormap,
        0.55,
    );
    let after = render::blend_heatmap(
        &base,
        grid,
        &head_mean(&outcome.refined_maps),
        colormap,
        0.55,
    );
    let mut panels = [first, before, after];
    let mapping = inspection.grid.mapping;
    for panel in &mut panels {
        render::outline_tokens(
            panel,
            grid,
            &inspection.region_tokens,
            image::Rgb([60, 255, 60]),
        );
        for region in &inspection.regions {
            if let Region::Box {
                xyxy_px: [x0, y0, x1, y1],
            }
            | Region::Ellipse {
                xyxy_px: [x0, y0, x1, y1],
            } = region
            {
                let (ix0, iy0) = mapping.to_input(*x0, *y0);
                let (ix1, iy1) = mapping.to_input(*x1, *y1);
                render::draw_rect(
                    panel,
                    ix0 * scale,
                    iy0 * scale,
                    ix1 * scale,
                    iy1 * scale,
                    image::Rgb([255, 255, 255]),
                );
            }
        }
    }
    render::side_by_side(&panels, 8)
}

//! One case end to end: image, model, VGRefine, metrics, and its record. `fovea inspect`
//! runs exactly this; the app's worker and `eval` call the same pieces.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::defaults::model_defaults;
use super::record::{case_record, CaseParts};
use crate::grounding::causal::{self, Cells};
use crate::grounding::faithfulness;
use crate::grounding::refine::{self, Outcome, Settings};
use crate::grounding::region::{Region, TokenGrid};
use crate::grounding::triage::Rule;
use crate::imaging::{self, VoiOption};
use crate::model::linear::{LoadProgress, Quantize};
use crate::model::{ImageSession, Model};

/// Told one line at a time what a run is about to do.
pub type Announce = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// Everything one `fovea inspect` run needs.
pub struct Request {
    pub model_dir: PathBuf,
    pub vision_tower: Option<PathBuf>,
    /// In-memory quantization of the language model (none: storage precision).
    pub quantize: Quantize,
    /// Told of each loaded layer (a progress bar); may cancel.
    pub load_progress: Option<LoadProgress>,
    pub image: PathBuf,
    pub frame: usize,
    pub question: String,
    pub settings: Settings,
    /// Set when the user gave no heads and the model's defaults should fill them.
    pub heads_given: bool,
    pub masked_layers_given: bool,
    pub regions: Vec<Region>,
    pub dump_logits: bool,
    /// Qwen-VL: (min_pixels, max_pixels) replacing the checkpoint's.
    pub pixel_limits: (Option<u64>, Option<u64>),
    /// Told, before the model runs, what the image becomes (tokens, pixels, cost).
    pub announce: Option<Announce>,
    /// Also measure the faithfulness curve of the triage map.
    pub faithfulness: Option<FaithfulnessRequest>,
    /// Also measure the causal knockout map of the original answer.
    pub causal: Option<CausalRequest>,
}

/// How `fovea inspect --causal-map` cuts the image and where it knocks out.
#[derive(Clone, Debug)]
pub struct CausalRequest {
    pub cells: Cells,
    /// `all` or `l,l,...` (`--causal-layers`).
    pub layers: String,
}

/// How `fovea inspect --faithfulness` measures its curve.
#[derive(Clone, Debug)]
pub struct FaithfulnessRequest {
    pub step: f64,
    /// Every decoder layer (else the masked layers).
    pub all_layers: bool,
    pub random_draws: usize,
    pub seed: u64,
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
    /// The image's pixel spacing (row, column mm), when known: the picture's scale bar.
    pub pixel_spacing_mm: Option<[f64; 2]>,
}

/// Run one case: load the image and the model, fill in the model's defaults, run VGRefine.
pub fn inspect(request: Request) -> Result<Inspection> {
    let total_started = Instant::now();
    for region in &request.regions {
        region.validate().map_err(anyhow::Error::msg)?;
    }
    let study = imaging::load(&request.image)?;
    let rgb = imaging::render_rgb8(&study, request.frame, &VoiOption::Default)?;

    let load_started = Instant::now();
    let model = Model::load_with_progress(
        &request.model_dir,
        request.vision_tower.as_deref(),
        &crate::model::device::from_env()?,
        request.quantize,
        request.load_progress.clone(),
    )?;
    let load_ms = load_started.elapsed().as_secs_f64() * 1e3;
    let mut model = model;
    if request.pixel_limits != (None, None) {
        model.set_pixel_limits(request.pixel_limits.0, request.pixel_limits.1)?;
    }
    // Where the grid follows the image (Qwen-VL), say what this image costs before running;
    // where the input is stretched to a square (Gemma 3), say so.
    if let Some(announce) = &request.announce {
        if model.fixed_grid().is_none() || model.stretches_image() {
            announce(&model.describe_image_plan(rgb.width(), rgb.height())?);
        }
    }

    let unknown = model.unknown_words(&request.question);
    if let (Some(announce), false) = (&request.announce, unknown.is_empty()) {
        announce(&format!(
            "warning: the model's vocabulary lacks {} (read as <unk>)",
            unknown
                .iter()
                .map(|w| format!("{w:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }

    let mut settings = request.settings.clone();
    let defaults = model_defaults(&model)?;
    if !request.heads_given && settings.knockout_tokens.is_none() {
        let Some(defaults) = defaults.as_ref().filter(|d| !d.heads.is_empty()) else {
            bail!(
                "no triage heads known for {} ({}: no heads are published for this family; `fovea heads` finds the \
                 visually sensitive ones on your data): pass --heads l:h,... (or --heads FILE.json from `fovea heads`), \
                 or put vgrefine.json beside the checkpoint",
                request.model_dir.display(),
                model.checkpoint.arch
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
    let (prepared, mapping) = model.prepare_image(&rgb)?;
    let (rows, cols) = session.grid;
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
        "family": model.checkpoint.family(),
        "quantize": match model.quantize {
            Quantize::None => serde_json::Value::Null,
            other => json!(other.name()),
        },
        "weights_dtype": model.weights_dtype_name(),
        "cpu_tier": model.cpu_tier(),
        "load_notes": model.load_notes,
    });
    let mut image_info = json!({
        "path": request.image,
        "width": study.width,
        "height": study.height,
        "frame": request.frame,
        "preprocess": model.checkpoint.preprocess_name(),
        "model_input": [mapping.input[0], mapping.input[1]],
        "image_tokens": rows * cols,
    });
    if let Some((min_pixels, max_pixels)) = model.pixel_limits() {
        image_info["pixel_limits"] = json!({"min_pixels": min_pixels, "max_pixels": max_pixels});
    }
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
    if !unknown.is_empty() {
        record["unknown_words"] = json!(unknown);
    }
    let mut faithfulness_ms = 0.0;
    if let Some(wanted) = &request.faithfulness {
        let Some(triage) = &outcome.triage else {
            bail!("--faithfulness orders the tokens by the triage map; it cannot run with --knockout-tokens");
        };
        let started = Instant::now();
        let layers = if wanted.all_layers {
            (0..model.decoder.num_layers()).collect()
        } else {
            settings.masked_layers.clone()
        };
        let curve = faithfulness::curve(
            &mut session,
            &outcome.prompt,
            &triage.score_map,
            "triage_map",
            &faithfulness::CurveSettings {
                step: wanted.step,
                layers,
                random_draws: wanted.random_draws,
                seed: wanted.seed,
            },
        )?;
        record["faithfulness"] = serde_json::to_value(&curve)?;
        faithfulness_ms = started.elapsed().as_secs_f64() * 1e3;
    }
    let mut causal_ms = 0.0;
    if let Some(wanted) = &request.causal {
        let started = Instant::now();
        let map = causal_map(&mut session, &outcome, wanted, request.announce.as_ref())?;
        record["causal"] = map;
        causal_ms = started.elapsed().as_secs_f64() * 1e3;
    }
    let vision_ms = session.timings.vision_ms;
    let prefix_ms = session.timings.prefix_ms;
    record["timings_ms"] = json!({
        "causal": causal_ms,
        "faithfulness": faithfulness_ms,
        "load": load_ms,
        "vision": vision_ms,
        "prefix": prefix_ms,
        // The question and the general prompt run as one batch: its time is "question" (the
        // answer's wait) and "suffixes"; "general" has no time of its own (0), nor has
        // "knockout" when given tokens let it join the batch.
        "question": outcome.suffixes_ms,
        "general": 0.0,
        "suffixes": outcome.suffixes_ms,
        "suffix_batch": if outcome.triage.is_none() {
            json!(["question", "general", "knockout"])
        } else {
            json!(["question", "general"])
        },
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
        pixel_spacing_mm: study.pixel_spacing_mm,
    })
}

/// The causal map of the case's original answer, with its agreement with the shown attention
/// (the triage map; the head-mean attention of all layers when the knockout was given) and with
/// each layer/head's attention, as the record's `causal`.
pub fn causal_map(
    session: &mut ImageSession,
    outcome: &Outcome,
    wanted: &CausalRequest,
    announce: Option<&Announce>,
) -> Result<Value> {
    let num_layers = session.model.decoder.num_layers();
    let layers = causal::parse_layers(&wanted.layers, num_layers)?;
    let shape = wanted.cells.shape(session.grid)?;
    let cells = shape.0 * shape.1;
    let prompt = &outcome.prompt;
    let suffix = prompt.after_image().len();
    if let Some(announce) = announce {
        // The suffix rows cost about what prefix rows do (the same weights per row).
        let prefix_rows = prompt.image_span.end.max(1);
        let estimate_s =
            session.timings.prefix_ms * (cells * suffix) as f64 / prefix_rows as f64 / 1e3;
        announce(&format!(
            "causal map {}x{}: {cells} knockout suffixes x {suffix} tokens = {} suffix tokens \
             ({:.2}x this prefix of {prefix_rows}); about {estimate_s:.0} s",
            shape.0,
            shape.1,
            cells * suffix,
            (cells * suffix) as f64 / prefix_rows as f64,
        ));
    }
    let logits = &outcome.original.first_token_logits;
    if logits.is_empty() {
        bail!("the causal map follows the answer's first token, but the answer has none");
    }
    let id = crate::model::decoder::argmax(logits) as u32;
    let token = match (
        outcome.original.ids.first(),
        outcome.original.token_texts.first(),
    ) {
        (Some(&first), Some(text)) if first == id => text.clone(),
        _ => String::new(),
    };
    let base = causal::log_probability(logits, id as usize);
    let mut map = causal::map(
        session,
        prompt,
        wanted.cells,
        &layers,
        causal::Target { id, token },
        base,
    )?;
    let (shown, name) = match &outcome.triage {
        Some(triage) => (triage.score_map.clone(), "triage_map"),
        None => (
            crate::grounding::mean_map(outcome.question_maps.iter().flatten()),
            "mean_attention",
        ),
    };
    map.agreement = Some(causal::agreement(&shown, &map.cell_tokens, &map.drop, name));
    let per_head: Vec<Vec<Option<f64>>> = outcome
        .question_maps
        .iter()
        .map(|heads| {
            heads
                .iter()
                .map(|attention| {
                    causal::spearman(&causal::pool(attention, &map.cell_tokens), &map.drop)
                })
                .collect()
        })
        .collect();
    let mut value = serde_json::to_value(&map)?;
    value["agreement_heads"] = json!(per_head);
    Ok(value)
}

//! The paper's experiments as commands: grounding analysis over a dataset, head discovery,
//! Med-VQA accuracy with and without VGRefine, and merging of sharded runs. Every command
//! appends one JSON line per sample (resumable), and derives its tables and plots from those
//! lines only, so a merged set of shards reproduces a single run exactly.

mod causal_report;
pub mod dataset;
pub mod progress;
pub mod report;
pub mod score;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::grounding::metrics;
use crate::grounding::refine::{self, Query, Settings};
use crate::grounding::region::{Region, TokenGrid};
use crate::grounding::RelativeMaps;
use crate::imaging::{self, VoiOption};
use crate::model::{ImageSession, Model};
use dataset::{Sample, Shard};
use progress::{Progress, ResultsFile};

/// What every research command shares.
#[derive(Clone, Debug)]
pub struct RunArgs {
    pub data: PathBuf,
    pub images: PathBuf,
    pub model: PathBuf,
    pub out: PathBuf,
    pub limit: Option<usize>,
    pub seed: u64,
    pub shard: Option<Shard>,
    pub resume: bool,
    pub quantize: crate::model::linear::Quantize,
    /// Qwen-VL: (min_pixels, max_pixels) replacing the checkpoint's.
    pub pixel_limits: (Option<u64>, Option<u64>),
}

fn write_run_info(out: &Path, command: &str, extra: Value) -> Result<()> {
    let info = json!({ "command": command, "fovea_version": env!("CARGO_PKG_VERSION"), "settings": extra });
    crate::io::write_json(&out.join("run.json"), &info)
}

/// Select the samples, load the model, and append `work`'s record for every sample not done
/// yet (a failed sample gets a record with its error, so the run goes on and says why).
fn for_each_sample(
    args: &RunArgs,
    command: &str,
    settings: Value,
    mut work: impl FnMut(&mut ImageSession, &Sample) -> Result<Value>,
) -> Result<()> {
    let samples = dataset::select(
        dataset::read(&args.data, &args.images)?,
        args.limit,
        args.seed,
        args.shard,
    );
    let device = crate::model::device::from_env()?;
    let mut model = Model::load_with_progress(&args.model, None, &device, args.quantize, None)?;
    if args.pixel_limits != (None, None) {
        model.set_pixel_limits(args.pixel_limits.0, args.pixel_limits.1)?;
    }
    let mut results = ResultsFile::open(&args.out, args.resume)?;
    let mut settings = settings;
    if let Some((min_pixels, max_pixels)) = model.pixel_limits() {
        settings["pixel_limits"] = json!({"min_pixels": min_pixels, "max_pixels": max_pixels});
    }
    write_run_info(&args.out, command, settings)?;
    let todo: Vec<&Sample> = samples
        .iter()
        .filter(|s| !results.done.contains(&s.index))
        .collect();
    let mut bar = Progress::new(command, samples.len(), samples.len() - todo.len());
    let model = model;
    // Consecutive questions about one image share its session: the vision tower and the
    // prefix run once for all of them (records are the same as with a session each).
    let mut current: Option<(PathBuf, ImageSession)> = None;
    for (fresh, sample) in todo.into_iter().enumerate() {
        let mut run = || -> Result<Value> {
            let session = match current.take() {
                Some((image, session)) if image == sample.image => {
                    &mut current.insert((image, session)).1
                }
                _ => {
                    let session = ImageSession::new(&model, &load_rgb(sample)?)?;
                    &mut current.insert((sample.image.clone(), session)).1
                }
            };
            work(session, sample)
        };
        let record = run().unwrap_or_else(|err| {
            json!({ "index": sample.index, "image": sample.image_name, "question": sample.question, "error": format!("{err:#}") })
        });
        results.append(&record)?;
        bar.tick(fresh + 1);
    }
    Ok(())
}

/// What every per-sample record starts with.
fn sample_fields(sample: &Sample) -> Value {
    json!({
        "index": sample.index,
        "image": sample.image_name,
        "question": sample.question,
        "dataset": sample.dataset,
        "modality": sample.modality,
        "expected": sample.answer,
    })
}

fn load_rgb(sample: &Sample) -> Result<image::RgbImage> {
    let study = imaging::load(&sample.image)?;
    Ok(imaging::render_rgb8(&study, 0, &VoiOption::Default)?)
}

/// `fovea grounding`: relative attention per layer and head against each sample's boxes.
pub fn grounding(args: &RunArgs, query: Query, normalize: bool) -> Result<()> {
    let settings = Settings {
        query,
        normalize,
        max_new_tokens: 8,
        ..Settings::default()
    };
    let info = json!({ "query": query, "normalize": normalize, "model": args.model });
    for_each_sample(args, "grounding", info, |session, sample| {
        grounding_sample(session, sample, &settings)
    })?;
    report::grounding_report(&args.out)
}

fn grounding_sample(
    session: &mut ImageSession,
    sample: &Sample,
    settings: &Settings,
) -> Result<Value> {
    if sample.boxes.is_empty() {
        bail!("no boxes");
    }
    let measured = refine::measure(session, &sample.question, settings)?;
    let (rows, cols) = session.grid;
    let grid = TokenGrid {
        rows,
        cols,
        mapping: session.mapping,
    };
    let mut tokens: Vec<usize> = sample
        .boxes
        .iter()
        .flat_map(|&xyxy_px| Region::Box { xyxy_px }.tokens(&grid))
        .collect();
    tokens.sort_unstable();
    tokens.dedup();
    if tokens.is_empty() {
        bail!("the boxes cover no image token");
    }
    let maps = RelativeMaps {
        question: &measured.question_maps,
        general: &measured.general_maps,
        normalize: settings.normalize,
    };
    let layers = measured.question_maps.len();
    let heads = measured.question_maps.first().map(|l| l.len()).unwrap_or(0);
    let nan = metrics::Metrics {
        ratio: f64::NAN,
        kl: f64::NAN,
        js: f64::NAN,
        pointing: false,
        soft_iou: f64::NAN,
    };
    let per_layer: Vec<metrics::Metrics> = (0..layers)
        .map(|l| metrics::compute(&maps.layer(l), &tokens).unwrap_or(nan))
        .collect();
    let per_head: Vec<Vec<metrics::Metrics>> = (0..layers)
        .map(|l| {
            (0..heads)
                .map(|h| metrics::compute(&maps.head(l, h), &tokens).unwrap_or(nan))
                .collect()
        })
        .collect();
    let column =
        |pick: fn(&metrics::Metrics) -> f64| per_layer.iter().map(pick).collect::<Vec<_>>();
    let table = |pick: fn(&metrics::Metrics) -> f64| {
        per_head
            .iter()
            .map(|row| row.iter().map(pick).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    };
    Ok(json!({
        "index": sample.index,
        "image": sample.image_name,
        "question": sample.question,
        "modality": sample.modality,
        "dataset": sample.dataset,
        "answer": measured.original.text,
        "expected": sample.answer,
        "region_tokens": tokens.len(),
        "per_layer": { "ratio": column(|m| m.ratio), "kl": column(|m| m.kl), "js": column(|m| m.js) },
        "per_head": { "ratio": table(|m| m.ratio), "kl": table(|m| m.kl), "js": table(|m| m.js) },
    }))
}

/// `fovea heads`: rank heads by mean attention ratio (ties: lower JS) over a grounding run.
pub fn heads(from: &Path, top_k: usize, out: &Path) -> Result<Value> {
    let records = progress::read_records(&from.join("samples.jsonl"))?;
    let summary = report::head_means(&records);
    if summary.layers == 0 {
        bail!(
            "no usable samples in {}",
            from.join("samples.jsonl").display()
        );
    }
    let mut ranking: Vec<(usize, usize, f64, f64)> = (0..summary.layers)
        .flat_map(|l| (0..summary.heads).map(move |h| (l, h)))
        .map(|(l, h)| (l, h, summary.ratio[l][h], summary.js[l][h]))
        .filter(|r| r.2.is_finite())
        .collect();
    ranking.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.3.total_cmp(&b.3)));
    let top: Vec<[usize; 2]> = ranking
        .iter()
        .take(top_k)
        .map(|&(l, h, _, _)| [l, h])
        .collect();
    // The masked layer: where the head-mean ratio peaks (the layer that reads the region).
    let layer_means: Vec<f64> = (0..summary.layers)
        .map(|l| {
            summary.ratio[l]
                .iter()
                .copied()
                .filter(|v| v.is_finite())
                .sum::<f64>()
                / summary.heads.max(1) as f64
        })
        .collect();
    let masked = (0..summary.layers)
        .max_by(|&a, &b| layer_means[a].total_cmp(&layer_means[b]))
        .unwrap_or(0);
    let value = json!({
        "heads": top,
        "masked_layers": [masked],
        "percentile": 80,
        "source": format!("fovea heads --from {} --top-k {top_k} ({} samples)", from.display(), summary.samples),
        "layer_mean_ratio": layer_means,
        "ranking": ranking.iter().take(top_k.max(20)).map(|&(l, h, r, j)| json!({"layer": l, "head": h, "ratio": r, "js": j})).collect::<Vec<_>>(),
    });
    crate::io::write_json(out, &value)?;
    Ok(value)
}

/// `fovea eval`: accuracy with and without VGRefine.
/// Triage heads, masked layers and percentile from a heads file (`fovea heads`, vgrefine.json).
type HeadsFile = (Vec<(usize, usize)>, Vec<usize>, f64);

fn read_heads_file(path: &Path) -> Result<HeadsFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let defaults: crate::case::ModelDefaults = serde_json::from_str(&text)
        .with_context(|| format!("invalid heads file {}", path.display()))?;
    if defaults.heads.is_empty() || defaults.masked_layers.is_empty() {
        bail!(
            "the heads file names no heads or no masked layers: {}",
            path.display()
        );
    }
    Ok((
        defaults.heads.iter().map(|&[l, h]| (l, h)).collect(),
        defaults.masked_layers,
        defaults.percentile.unwrap_or(80.0),
    ))
}

/// How `fovea faithfulness` measures each curve.
#[derive(Clone, Debug)]
pub struct FaithfulnessArgs {
    pub step: f64,
    pub all_layers: bool,
    pub random_draws: usize,
    pub seed: u64,
    /// Also each sample's causal knockout map (the record's `causal`).
    pub causal: Option<crate::case::CausalRequest>,
}

/// `fovea faithfulness`: per sample, the faithfulness curve of the triage map (heads from the
/// heads file, else the model's defaults), and with `causal` its causal knockout map;
/// `summary.csv` and `faithfulness.png` (and `causal_heads.csv`, `causal_heads.png`).
pub fn faithfulness(
    args: &RunArgs,
    vgrefine: Option<&Path>,
    curve: &FaithfulnessArgs,
) -> Result<()> {
    let from_file = vgrefine.map(read_heads_file).transpose()?;
    let causal = curve
        .causal
        .as_ref()
        .map(|c| json!({"cells": format!("{:?}", c.cells), "layers": c.layers}));
    let info = json!({ "vgrefine": vgrefine, "model": args.model, "step": curve.step,
        "all_layers": curve.all_layers, "random_draws": curve.random_draws, "seed": curve.seed,
        "causal": causal });
    for_each_sample(args, "faithfulness", info, |session, sample| {
        let model = session.model;
        let (heads, masked_layers, percentile) = match &from_file {
            Some(file) => file.clone(),
            None => {
                let defaults = crate::case::model_defaults(model)?
                    .filter(|d| !d.heads.is_empty() && !d.masked_layers.is_empty())
                    .with_context(|| {
                        format!(
                            "no triage heads known for {}: pass --vgrefine HEADS.json (from `fovea heads`)",
                            model.checkpoint.dir.display()
                        )
                    })?;
                (
                    defaults.heads.iter().map(|&[l, h]| (l, h)).collect(),
                    defaults.masked_layers,
                    defaults.percentile.unwrap_or(80.0),
                )
            }
        };
        let settings = Settings {
            heads,
            masked_layers: masked_layers.clone(),
            rule: crate::grounding::triage::Rule::Percentile(percentile),
            max_new_tokens: 1,
            ..Settings::default()
        };
        let outcome = refine::run(session, &sample.question, &settings)?;
        let Some(triage) = &outcome.triage else {
            bail!("no triage map");
        };
        let layers = if curve.all_layers {
            (0..model.decoder.num_layers()).collect()
        } else {
            masked_layers
        };
        let result = crate::grounding::faithfulness::curve(
            session,
            &outcome.prompt,
            &triage.score_map,
            "triage_map",
            &crate::grounding::faithfulness::CurveSettings {
                step: curve.step,
                layers,
                random_draws: curve.random_draws,
                seed: curve.seed,
            },
        )?;
        let mut record = sample_fields(sample);
        record["answer"] = json!(outcome.original.text);
        if let (Value::Object(record), Value::Object(curve)) =
            (&mut record, serde_json::to_value(&result)?)
        {
            record.extend(curve);
        }
        if let Some(wanted) = &curve.causal {
            record["causal"] = crate::case::causal_map(session, &outcome, wanted, None)?;
            record["triage_heads"] = json!(settings.heads);
        }
        Ok(record)
    })?;
    report::faithfulness_report(&args.out)?;
    causal_report::add_causal_report(&args.out)
}

pub fn eval(args: &RunArgs, vgrefine: Option<&Path>) -> Result<()> {
    let (heads, masked_layers, percentile) = match vgrefine {
        Some(path) => read_heads_file(path)?,
        None => (Vec::new(), Vec::new(), 80.0),
    };
    let info = json!({ "vgrefine": vgrefine, "model": args.model, "heads": heads, "masked_layers": masked_layers });
    for_each_sample(args, "eval", info, |session, sample| {
        let settings = Settings {
            heads: heads.clone(),
            masked_layers: masked_layers.clone(),
            rule: crate::grounding::triage::Rule::Percentile(percentile),
            max_new_tokens: 16,
            answer_suffix: score::suffix_for(sample).to_string(),
            ..Settings::default()
        };
        eval_sample(session, sample, &settings, vgrefine.is_some())
    })?;
    report::eval_report(&args.out)
}

fn eval_sample(
    session: &mut ImageSession,
    sample: &Sample,
    settings: &Settings,
    vgrefine: bool,
) -> Result<Value> {
    let question = score::question_text(sample);
    let (plain, refined) = if vgrefine {
        let outcome = refine::run(session, &question, settings)?;
        (outcome.original.text, Some(outcome.refined.text))
    } else {
        (
            refine::measure(session, &question, settings)?.original.text,
            None,
        )
    };
    let mut record = sample_fields(sample);
    record["kind"] = json!(score::kind(sample));
    record["plain"] = json!({ "answer": plain, "correct": score::correct(sample, &plain) });
    if let Some(refined) = refined {
        record["vgrefine"] =
            json!({ "answer": refined, "correct": score::correct(sample, &refined) });
    }
    Ok(record)
}

/// `fovea merge`: shard outputs into exactly what one process would have written.
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<()> {
    let mut command: Option<Value> = None;
    let mut records: std::collections::BTreeMap<u64, Value> = Default::default();
    for dir in dirs {
        let info_path = dir.join("run.json");
        let text = std::fs::read_to_string(&info_path).with_context(|| {
            format!(
                "not a fovea results folder (no run.json): {}",
                dir.display()
            )
        })?;
        let info: Value = serde_json::from_str(&text)
            .with_context(|| format!("invalid {}", info_path.display()))?;
        match &command {
            None => command = Some(info),
            Some(first)
                if first["command"] != info["command"] || first["settings"] != info["settings"] =>
            {
                bail!(
                    "{} was made by a different command or settings than {}",
                    dir.display(),
                    dirs[0].display()
                )
            }
            Some(_) => {}
        }
        for record in progress::read_records(&dir.join("samples.jsonl"))? {
            let index = record["index"].as_u64().context("record without index")?;
            if let Some(existing) = records.get(&index) {
                if existing != &record {
                    bail!(
                        "sample {index} differs between shards (found again in {})",
                        dir.display()
                    );
                }
            }
            records.insert(index, record);
        }
    }
    let Some(info) = command else {
        bail!("no folders to merge")
    };
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut lines = String::new();
    for record in records.values() {
        lines.push_str(&serde_json::to_string(record)?);
        lines.push('\n');
    }
    crate::io::write_bytes(&out.join("samples.jsonl"), lines.as_bytes())?;
    crate::io::write_json(&out.join("run.json"), &info)?;
    match info["command"].as_str() {
        Some("grounding") => report::grounding_report(out),
        Some("eval") => report::eval_report(out),
        Some("faithfulness") => {
            report::faithfulness_report(out)?;
            causal_report::add_causal_report(out)
        }
        other => bail!("unknown command {other:?} in run.json"),
    }
}

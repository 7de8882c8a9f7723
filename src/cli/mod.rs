//! Command-line interface: the top of the house. Parses (args.rs), dispatches to the layers
//! below, prints. `main.rs` only calls [`run`]; nothing else imports this module.

mod args;
mod series;

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::imaging::{self, Photometric};
pub use args::*;

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Info(args)) => info(&args),
        Some(Command::Convert(args)) => convert(&args),
        Some(Command::Bench(args)) => bench(&args),
        Some(Command::Inspect(args)) => inspect(&args),
        Some(Command::Phantom(args)) => phantom(&args),
        Some(Command::Grounding(args)) => {
            let query = match args.query {
                QueryArg::Last => crate::grounding::refine::Query::Last,
                QueryArg::Question => crate::grounding::refine::Query::Question,
            };
            crate::eval::grounding(&args.data.run_args()?, query, !args.no_norm)
        }
        Some(Command::Heads(args)) => {
            if args.top_k == 0 {
                bail!("--top-k must be at least 1");
            }
            let value = crate::eval::heads(&args.from, args.top_k, &args.out)?;
            println!("heads {}", value["heads"]);
            println!("masked layer(s) {}", value["masked_layers"]);
            eprintln!("wrote {}", args.out.display());
            Ok(())
        }
        Some(Command::Eval(args)) => {
            crate::eval::eval(&args.data.run_args()?, args.vgrefine.as_deref())
        }
        Some(Command::Faithfulness(args)) => crate::eval::faithfulness(
            &args.data.run_args()?,
            args.vgrefine.as_deref(),
            &crate::eval::FaithfulnessArgs {
                step: args.step,
                all_layers: args.all_layers,
                random_draws: args.draws,
                seed: args.draw_seed,
                causal: args.causal.request()?,
            },
        ),
        Some(Command::Merge(args)) => crate::eval::merge(&args.dirs, &args.out),
        Some(Command::Quantize(args)) => quantize(&args),
        None => {
            let model = match cli.model {
                Some(dir) if !dir.join("config.json").exists() => bail!(
                    "not a checkpoint folder (no config.json): {}",
                    dir.display()
                ),
                Some(dir) => dir,
                None => {
                    let demo = crate::demo::demo_model_dir();
                    if !demo.join("config.json").exists() {
                        bail!(
                            "no model to load: pass --model DIR (the bundled demo model is \
                             missing: {}; set FOVEA_ASSETS to the folder that holds demo-model)",
                            demo.display()
                        );
                    }
                    demo
                }
            };
            if let Some(file) = &cli.file {
                if !file.exists() {
                    bail!("no such file: {}", file.display());
                }
            }
            crate::app::window::run(
                model,
                cli.quantize.map(QuantizeArg::to_quantize),
                cli.file,
                cli.ask,
                cli.screenshot,
            )
        }
    }
}

fn info(args: &InfoArgs) -> Result<()> {
    if imaging::scan::is_series_source(&args.file) && args.series.slice.is_none() {
        return series::info_folder(args);
    }
    let (file, _, _) = series::resolve_image(&args.file, 0, &args.series)?;
    let study = imaging::load(&file)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&imaging::describe::summary_json(&study, args.show_phi))?
        );
    } else {
        print!("{}", imaging::describe::describe(&study, args.show_phi));
    }
    Ok(())
}

fn convert(args: &ConvertArgs) -> Result<()> {
    let voi = args.window.voi_option()?;
    check_png_path(&args.out)?;
    let (file, frame, _) = series::resolve_image(&args.file, args.frame, &args.series)?;
    let study = imaging::load(&file)?;
    let image = imaging::render_rgb8(&study, frame, &voi)?;
    crate::io::write_png(&args.out, &image)?;
    let (window, _) = study.resolve_window(frame, &voi);
    if study.photometric == Photometric::Rgb {
        eprintln!(
            "wrote {} ({}x{}, colour)",
            args.out.display(),
            study.width,
            study.height
        );
    } else {
        eprintln!(
            "wrote {} ({}x{}, window {window})",
            args.out.display(),
            study.width,
            study.height
        );
    }
    Ok(())
}

fn check_png_path(out: &Path) -> Result<()> {
    let is_png = out
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !is_png {
        bail!("output must be a .png file: {}", out.display());
    }
    if out.is_dir() {
        bail!("output is a directory: {}", out.display());
    }
    Ok(())
}

fn bench_model(dir: &Path, args: &BenchArgs) -> Result<()> {
    let report = crate::case::measure::run(
        dir,
        args.vision_tower.as_deref(),
        args.quantize.to_quantize(),
        (args.min_pixels, args.max_pixels),
        args.decode_tokens,
        &mut |step| eprintln!("bench: {step}"),
    )?;
    print!("{}", report.summary());
    if let Some(out) = &args.json {
        crate::io::write_json(out, &report)?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

/// Load `args.model` quantized through the weight cache (writing it when it is missing or
/// stale) and report the load: what `inspect`, the app and the research commands then read.
fn quantize(args: &QuantizeArgs) -> Result<()> {
    let quantize = args.quantize.to_quantize();
    if quantize == crate::model::linear::Quantize::None {
        bail!("--quantize none has nothing to cache: choose q8_0 or q4k");
    }
    let Some(cache_dir) = args
        .cache_dir
        .clone()
        .or_else(crate::model::cache::default_dir)
    else {
        bail!("no cache folder: pass --cache-dir DIR (FOVEA_CACHE_DIR is off, or HOME is unset)");
    };
    let device = crate::model::device::from_env()?;
    if device.is_cpu() && !crate::model::gemm::from_tensors::own_kernels(&device) {
        bail!(
            "{} (CPU tier {}); fovea quantize has nothing to write",
            crate::model::loaded::NO_CACHE_HERE,
            crate::model::gemm::tier::chosen()
                .map(|t| t.name())
                .unwrap_or("unknown")
        );
    }
    let started = std::time::Instant::now();
    let model = crate::model::Model::load_with_cache(
        &args.model,
        args.vision_tower.as_deref(),
        &device,
        quantize,
        None,
        Some(&cache_dir),
    )?;
    for note in &model.load_notes {
        eprintln!("{note}");
    }
    let (layers, embeddings) = model.decoder.weight_bytes();
    println!(
        "loaded {} at {} in {:.1} s ({:.2} GB of decoder weights)",
        args.model.display(),
        quantize.name(),
        started.elapsed().as_secs_f64(),
        (layers + embeddings) as f64 / 1e9
    );
    Ok(())
}

fn bench(args: &BenchArgs) -> Result<()> {
    if let Some(dir) = &args.write_model {
        use crate::model::shapes::{write_published_shape, Fill, PublishedShape};
        let fill = if args.random_weights {
            Fill::Random
        } else {
            Fill::SparseZeros
        };
        use clap::ValueEnum;
        let written = match args.shape {
            ShapeArg::Bench => crate::model::bench::write_synthetic_checkpoint(dir).map(|()| None),
            ShapeArg::HuatuogptVision7b => {
                write_published_shape(dir, PublishedShape::HuatuoGptVision7b, fill).map(Some)
            }
            ShapeArg::LlavaMed7b => {
                write_published_shape(dir, PublishedShape::LlavaMed7b, fill).map(Some)
            }
            ShapeArg::Qwen25Vl7b => {
                write_published_shape(dir, PublishedShape::Qwen25Vl7b, fill).map(Some)
            }
            ShapeArg::Qwen3Vl8b => {
                write_published_shape(dir, PublishedShape::Qwen3Vl8b, fill).map(Some)
            }
            ShapeArg::Medgemma4b => {
                write_published_shape(dir, PublishedShape::MedGemma4b, fill).map(Some)
            }
        };
        let parameters =
            written.with_context(|| format!("cannot write the checkpoint to {}", dir.display()))?;
        match parameters {
            Some(n) => eprintln!(
                "wrote {} ({:.2} B parameters, {}) to {}",
                args.shape
                    .to_possible_value()
                    .map(|v| v.get_name().to_string())
                    .unwrap_or_default(),
                n as f64 / 1e9,
                if args.random_weights {
                    "random bf16"
                } else {
                    "zero bf16, sparse"
                },
                dir.display()
            ),
            None => eprintln!("wrote the bench checkpoint to {}", dir.display()),
        }
        return Ok(());
    }
    if args.runs == 0 || args.decode_tokens == 0 {
        bail!("--runs and --decode-tokens must be at least 1");
    }
    if let Some(dir) = &args.model {
        return bench_model(dir, args);
    }
    if args.quantize != QuantizeArg::None {
        bail!("--quantize applies to a checkpoint: pass --model DIR");
    }
    let report = crate::model::bench::run(args.runs, args.decode_tokens, &mut |step| {
        eprintln!("bench: {step}")
    })?;
    println!(
        "prompt: {} tokens ({} image tokens), {} decoded tokens per answer, medians of {} runs",
        report.prompt_tokens, report.image_tokens, args.decode_tokens, report.runs
    );
    println!(
        "plain answer                         {:>9.1} ms",
        report.plain_ms
    );
    println!(
        "VGRefine, 3 prompts, shared prefix   {:>9.1} ms  ({:.2}x plain)",
        report.vgrefine_shared_ms, report.shared_over_plain
    );
    println!(
        "VGRefine, 3 prompts, no sharing      {:>9.1} ms  ({:.2}x plain)",
        report.vgrefine_unshared_ms, report.unshared_over_plain
    );
    println!(
        "prefill (vision + prefix)            {:>9.1} ms  {:.1} GFLOP/s",
        report.vision_ms + report.prefix_ms,
        report.prefill_gflops
    );
    if let Some(out) = &args.json {
        crate::io::write_json(out, &serde_json::to_value(&report)?)?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

fn inspect(args: &InspectArgs) -> Result<()> {
    use crate::grounding::refine::{Query, Settings};
    use crate::grounding::triage::Rule;
    let rule = match (args.percentile, args.magnitude) {
        (_, Some(t)) => Rule::Magnitude(t),
        (Some(p), None) => Rule::Percentile(p),
        (None, None) => Rule::Percentile(80.0),
    };
    rule.validate().map_err(anyhow::Error::msg)?;
    let mut named: Vec<(String, bool, crate::grounding::region::Region)> = args
        .region
        .iter()
        .enumerate()
        .map(|(k, text)| {
            crate::grounding::region::Region::parse_box(text)
                .map(|r| (format!("region {}", k + 1), false, r))
                .map_err(anyhow::Error::msg)
        })
        .collect::<Result<Vec<_>>>()?;
    for path in [&args.json, &args.overlay, &args.seg, &args.capture]
        .into_iter()
        .flatten()
    {
        if path.is_dir() {
            bail!("output is a directory: {}", path.display());
        }
    }
    if let Some(overlay) = &args.overlay {
        check_png_path(overlay)?;
    }
    let (image_file, frame, slice_spacing_mm) =
        series::resolve_image(&args.image, args.frame, &args.series)?;
    if let Some(t) = args.seg_map_threshold {
        if !(0.0..=1.0).contains(&t) || args.seg.is_none() {
            bail!("--seg-map-threshold needs --seg and a fraction within 0..1, got {t}");
        }
    }
    if args.seg.is_some() || args.capture.is_some() {
        // Refuse before the model runs: a DICOM export needs a DICOM source to refer to.
        crate::exchange::SourceImage::read(&image_file, frame)?;
    }
    if !args.regions_from.is_empty() {
        let study = imaging::load(&image_file)?;
        let target = crate::exchange::regions::Target {
            path: &image_file,
            frame,
            width: study.width,
            height: study.height,
            dicom: matches!(study.format, imaging::SourceFormat::Dicom { .. }),
            slice_spacing_mm,
        };
        for file in &args.regions_from {
            let imported = crate::exchange::regions::import(file, &target)?;
            for note in &imported.notes {
                eprintln!("{}: {note}", file.display());
            }
            eprintln!(
                "{}: {} region(s) imported",
                file.display(),
                imported.regions.len()
            );
            named.extend(
                imported
                    .regions
                    .into_iter()
                    .map(|r| (r.name, r.distractor, r.region)),
            );
        }
    }
    let regions: Vec<crate::grounding::region::Region> = named
        .iter()
        .filter(|(_, distractor, _)| !distractor)
        .map(|(_, _, r)| r.clone())
        .collect();
    let model_dir = match &args.model {
        Some(dir) => dir.clone(),
        None => {
            let demo = crate::demo::demo_model_dir();
            if !demo.join("config.json").exists() {
                bail!(
                    "no --model given and the bundled demo model is missing: {}",
                    demo.display()
                );
            }
            demo
        }
    };
    let heads = args
        .heads
        .as_deref()
        .map(crate::case::parse_heads_arg)
        .transpose()?;
    let settings = Settings {
        raw_template: matches!(args.template, TemplateArg::Raw),
        general_prompt: args.general_prompt.clone(),
        heads: heads.clone().unwrap_or_default(),
        masked_layers: args.masked_layers.clone().unwrap_or_default(),
        rule,
        query: match args.query {
            QueryArg::Last => Query::Last,
            QueryArg::Question => Query::Question,
        },
        normalize: !args.no_norm,
        knockout_tokens: args.knockout_tokens.clone(),
        max_new_tokens: args.max_new_tokens,
        knockout_decode: args.knockout_decode,
        ..Settings::default()
    };
    let request = crate::case::Request {
        model_dir,
        vision_tower: args.vision_tower.clone(),
        quantize: args.quantize.to_quantize(),
        load_progress: terminal_load_progress(),
        image: image_file.clone(),
        frame,
        question: args.question.clone(),
        settings,
        heads_given: heads.is_some(),
        masked_layers_given: args.masked_layers.is_some(),
        regions,
        dump_logits: args.dump_logits,
        pixel_limits: (args.min_pixels, args.max_pixels),
        announce: Some(std::sync::Arc::new(|line: &str| eprintln!("{line}"))),
        faithfulness: args.faithfulness.then(|| crate::case::FaithfulnessRequest {
            step: args.faithfulness_step,
            all_layers: args.faithfulness_all_layers,
            random_draws: args.faithfulness_draws,
            seed: args.faithfulness_seed,
        }),
        causal: args.causal.request()?,
    };
    let inspection = crate::case::inspect(request)?;
    let record = &inspection.record;
    println!(
        "answer            {}",
        record["answer"].as_str().unwrap_or("")
    );
    println!(
        "VGRefine answer   {}",
        record["refined"]["answer"].as_str().unwrap_or("")
    );
    println!(
        "knocked out       {} of {} image tokens in layer(s) {}",
        inspection.outcome.knocked_out.len(),
        inspection.grid.rows * inspection.grid.cols,
        record["knockout"]["layers"]
    );
    if let Some(auc) = record["faithfulness"]["auc"].as_f64() {
        println!(
            "faithfulness      AUC {auc:.3} in the triage map's order, {:.3} in random orders (lower: the answer depends more on those tokens)",
            record["faithfulness"]["random_auc"].as_f64().unwrap_or(f64::NAN)
        );
    }
    if let Some(summary) = causal_summary(&record["causal"]) {
        println!("causal map        {summary}");
    }
    if let Some(ratio) = record["metrics"]["triage_map"]["ratio"].as_f64() {
        println!("triage map ratio  {ratio:.3} (attention ratio against the region; 1 = uniform)");
    }
    println!(
        "time              {:.0} ms",
        record["timings_ms"]["total"].as_f64().unwrap_or(0.0)
    );
    if let Some(out) = &args.json {
        crate::io::write_json(out, record)?;
        eprintln!("wrote {}", out.display());
    }
    if let Some(out) = &args.overlay {
        let picture = crate::case::overlay_picture(
            &inspection,
            crate::case::compose::Colormap::Inferno,
            args.overlay_token,
        )?;
        crate::io::write_png(out, &picture)?;
        eprintln!("wrote {}", out.display());
    }
    if args.seg.is_some() || args.capture.is_some() {
        series::dicom_exports(args, &inspection, &named, &image_file, frame)?;
    }
    Ok(())
}

/// One line on a record's `causal`: the most causal cell and the agreement with attention.
fn causal_summary(causal: &serde_json::Value) -> Option<String> {
    let drop: Vec<f64> = serde_json::from_value(causal["drop"].clone()).ok()?;
    let cols = causal["cells"][1].as_u64()? as usize;
    let (best, most) = drop.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1))?;
    let agreement = &causal["agreement"];
    Some(format!(
        "{}x{cols} cells: knocking out cell (row {}, col {}) drops log p({:?}) most, by {most:.3}; \
         Spearman vs the {} {}, top cell {}",
        causal["cells"][0],
        best / cols,
        best % cols,
        causal["target"]["token"].as_str().unwrap_or(""),
        agreement["map"].as_str().unwrap_or("map"),
        agreement["spearman"]
            .as_f64()
            .map_or("undefined".to_string(), |r| format!("{r:.3}")),
        if agreement["top_cell_hit"].as_bool() == Some(true) {
            "agrees"
        } else {
            "differs"
        }
    ))
}

fn phantom(args: &PhantomArgs) -> Result<()> {
    use crate::demo::{Family, Recipe};
    if [
        args.difficulty,
        args.distractors,
        args.conflict,
        args.shortcut,
    ]
    .iter()
    .any(|p| !(0.0..=1.0).contains(p))
    {
        bail!("--difficulty, --distractors, --conflict and --shortcut must be within 0..1");
    }
    if args.conflict + args.shortcut > 1.0 {
        bail!(
            "--conflict {} and --shortcut {} add up to more than 1 (a case gets at most one side marker)",
            args.conflict,
            args.shortcut
        );
    }
    if !(64..=2048).contains(&args.size) {
        bail!("--size must be within 64..2048 px, got {}", args.size);
    }
    if args.out.is_file() {
        bail!("output is a file, not a folder: {}", args.out.display());
    }
    if let Some(slices) = args.ct_slices {
        if !(1..=2000).contains(&slices) {
            bail!("--ct-slices must be within 1..2000, got {slices}");
        }
        let series = crate::demo::ct_series::CtSeries {
            slices,
            seed: args.seed,
            ..Default::default()
        };
        crate::demo::ct_series::write(&args.out, &series)?;
        eprintln!(
            "wrote a {slices}-slice CT series to {} (open the folder: fovea {})",
            args.out.display(),
            args.out.display()
        );
        return Ok(());
    }
    let recipe = Recipe {
        size_px: args.size,
        family: args.family.map(|f| match f {
            FamilyArg::ChestXray => Family::ChestXray,
            FamilyArg::HeadMr => Family::HeadMr,
        }),
        distractor_probability: args.distractors,
        difficulty: args.difficulty,
        conflict_probability: args.conflict,
        shortcut_probability: args.shortcut,
        ..Recipe::default()
    };
    let rows =
        crate::demo::write_dataset(&args.out, args.n, args.seed, &recipe, args.dicom, |_| {})?;
    eprintln!(
        "wrote {} images and {rows} questions to {}",
        args.n,
        args.out.display()
    );
    Ok(())
}

/// A one-line progress bar for loading a model, on stderr when it is a terminal (logs and CI
/// get nothing, not hundreds of lines).
fn terminal_load_progress() -> Option<crate::model::linear::LoadProgress> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    Some(crate::model::linear::LoadProgress(std::sync::Arc::new(
        |what: &str, done: usize, total: usize| {
            let width = 30;
            let filled = done * width / total.max(1);
            eprint!(
                "\rloading {what:<15} [{}{}] {done}/{total}",
                "#".repeat(filled),
                " ".repeat(width - filled)
            );
            if done == total {
                eprintln!();
            }
            true
        },
    )))
}

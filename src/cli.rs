//! Command-line interface: subcommands and their dispatch. `main.rs` only calls [`run`].

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::imaging::{self, window, Photometric, Preset, SourceFormat, Study, VoiOption};

/// fovea: see where a medical multimodal LLM looks when it answers a question about an
/// image, and fix the answer when it looks in the wrong place (VGRefine).
#[derive(Debug, Parser)]
#[command(name = "fovea", version, about, long_about = None, max_term_width = 100, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Image to open in the app (DICOM, PNG, JPEG, TIFF, BMP); without one, a demo case
    pub file: Option<PathBuf>,
    /// Checkpoint folder for the app (default: the bundled demo model)
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Ask this question as soon as the model and image are ready
    #[arg(long, value_name = "TEXT")]
    pub ask: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Describe an image: modality, size, frames, transfer syntax, window (no patient data
    /// unless --show-phi)
    Info(InfoArgs),
    /// Render one frame of a DICOM or raster image to an 8-bit PNG with a window/level
    Convert(ConvertArgs),
    /// Ask a question about an image, capture per-head attention, run VGRefine, and write
    /// the JSON record (and an overlay picture)
    Inspect(Box<InspectArgs>),
    /// Measure what prefix sharing buys VGRefine on a generated CLIP-L/336 checkpoint
    Bench(BenchArgs),
    /// Generate synthetic chest-radiograph and head-MR phantoms with known lesions
    /// (images + cases.jsonl in the VGMED field layout)
    Phantom(PhantomArgs),
    /// Grounding analysis over a dataset: relative attention per layer and head against the
    /// annotated boxes (per-sample JSONL, CSV tables, plots)
    Grounding(GroundingArgs),
    /// Rank heads by attention ratio over a grounding run and write the heads file
    Heads(HeadsArgs),
    /// Med-VQA accuracy with and without VGRefine
    Eval(EvalArgs),
    /// Combine the outputs of sharded runs into exactly what one run would have written
    Merge(MergeArgs),
}

#[derive(Debug, Args)]
pub struct DataArgs {
    /// Data file: VGMED/COCO JSONL, closed/open JSONL, or HuatuoGPT-Vision evaluation JSON
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Folder the image paths in the data file are relative to (default: the data file's folder)
    #[arg(long, value_name = "ROOT")]
    pub images: Option<PathBuf>,
    /// Checkpoint folder (default: the bundled demo model)
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Output folder
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Process at most this many samples
    #[arg(long)]
    pub limit: Option<usize>,
    /// Shuffle with this seed before --limit (0 keeps the file order)
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Process the deterministic slice I of N (0-based), e.g. 2/8
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Continue a killed run in the same --out
    #[arg(long)]
    pub resume: bool,
}

impl DataArgs {
    fn run_args(&self) -> Result<crate::eval::RunArgs> {
        let images = match &self.images {
            Some(dir) => dir.clone(),
            None => self
                .data
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        };
        let model = match &self.model {
            Some(dir) => dir.clone(),
            None => crate::inspect::demo_model_dir(),
        };
        let shard = self
            .shard
            .as_deref()
            .map(crate::eval::dataset::Shard::parse)
            .transpose()
            .map_err(anyhow::Error::msg)?;
        Ok(crate::eval::RunArgs {
            data: self.data.clone(),
            images,
            model,
            out: self.out.clone(),
            limit: self.limit,
            seed: self.seed,
            shard,
            resume: self.resume,
        })
    }
}

#[derive(Debug, Args)]
pub struct GroundingArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Query rows: the last prompt token, or the mean over the question tokens
    #[arg(long, value_enum, default_value_t = QueryArg::Last)]
    pub query: QueryArg,
    /// Use raw attention instead of attention relative to the general prompt
    #[arg(long)]
    pub no_norm: bool,
}

#[derive(Debug, Args)]
pub struct HeadsArgs {
    /// Output folder of `fovea grounding`
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// How many heads to keep
    #[arg(long, default_value_t = 20)]
    pub top_k: usize,
    /// Heads file to write (read by `fovea inspect/eval --heads/--vgrefine`)
    #[arg(long, value_name = "FILE.json")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Also answer with VGRefine using this heads file (from `fovea heads` or a model's vgrefine.json)
    #[arg(long, value_name = "HEADS.json")]
    pub vgrefine: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Output folders of the shards
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Merged output folder
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct PhantomArgs {
    /// Output folder (created if missing)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Number of cases (images); each gives 2 to 5 questions
    #[arg(long, default_value_t = 100)]
    pub n: usize,
    /// Seed of the first case (case i uses seed + i)
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Image side in pixels
    #[arg(long, default_value_t = 192)]
    pub size: u32,
    /// Difficulty 0 (large bright lesions, little noise) .. 1 (full)
    #[arg(long, default_value_t = 1.0)]
    pub difficulty: f64,
    /// Probability of a distractor (marker letter, wire, border label)
    #[arg(long, default_value_t = 0.3)]
    pub distractors: f64,
    /// Only this family: chest-xray or head-mr
    #[arg(long, value_enum)]
    pub family: Option<FamilyArg>,
    /// Write DICOM (Secondary Capture) instead of PNG
    #[arg(long)]
    pub dicom: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FamilyArg {
    ChestXray,
    HeadMr,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Checkpoint folder (default: the bundled demo model, assets/demo-model)
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// CLIP folder for checkpoints whose vision tower is separate (LLaVA-Med's mm_vision_tower)
    #[arg(long, value_name = "DIR")]
    pub vision_tower: Option<PathBuf>,
    /// DICOM, PNG, JPEG, TIFF or BMP image
    #[arg(long, value_name = "FILE")]
    pub image: PathBuf,
    /// Frame of a multi-frame image (0-based)
    #[arg(long, default_value_t = 0)]
    pub frame: usize,
    /// The question (with --template raw: the whole prompt, <image> marking the image)
    #[arg(long)]
    pub question: String,
    /// Write the INSPECT-JSON record here
    #[arg(long, value_name = "OUT")]
    pub json: Option<PathBuf>,
    /// Write a picture: triage map + kept tokens + regions | attention before | after knockout
    #[arg(long, value_name = "OUT.png")]
    pub overlay: Option<PathBuf>,
    /// Include first-token logits (vocabulary-sized) in the record
    #[arg(long)]
    pub dump_logits: bool,
    /// Prompt format: the checkpoint's own (auto) or the text verbatim (raw)
    #[arg(long, value_enum, default_value_t = TemplateArg::Auto)]
    pub template: TemplateArg,
    /// General-description prompt (default: the paper's)
    #[arg(long, value_name = "TEXT")]
    pub general_prompt: Option<String>,
    /// Triage heads as l:h,l:h,... or a JSON file (default: the model's vgrefine.json / known table)
    #[arg(long, value_name = "SPEC|FILE.json")]
    pub heads: Option<String>,
    /// Layers where the knockout applies, e.g. 16 or 16,17 (default: the model's)
    #[arg(long, value_name = "L[,L]", value_delimiter = ',')]
    pub masked_layers: Option<Vec<usize>>,
    /// Knock out tokens below this percentile of the triage map (default 80)
    #[arg(long, value_name = "P", conflicts_with = "magnitude")]
    pub percentile: Option<f64>,
    /// Knock out tokens below T after min-max normalising the triage map
    #[arg(long, value_name = "T")]
    pub magnitude: Option<f64>,
    /// Query rows: the last prompt token, or the mean over the question tokens
    #[arg(long, value_enum, default_value_t = QueryArg::Last)]
    pub query: QueryArg,
    /// Use raw attention instead of attention relative to the general prompt
    #[arg(long)]
    pub no_norm: bool,
    /// Knock out exactly these image tokens (skips triage)
    #[arg(long, value_name = "I,J,...", value_delimiter = ',')]
    pub knockout_tokens: Option<Vec<usize>>,
    /// Keep the knockout during decoding too (the reference blocks the prefill only)
    #[arg(long)]
    pub knockout_decode: bool,
    /// Region to score against, x0,y0,x1,y1 in original image pixels (repeatable)
    #[arg(long, value_name = "X0,Y0,X1,Y1", allow_hyphen_values = true)]
    pub region: Vec<String>,
    /// Longest answer, in tokens
    #[arg(long, default_value_t = 16)]
    pub max_new_tokens: usize,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TemplateArg {
    Auto,
    Raw,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum QueryArg {
    Last,
    Question,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Repetitions; medians are reported
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Tokens decoded for each answer
    #[arg(long, default_value_t = 8)]
    pub decode_tokens: usize,
    /// Also write the medians as JSON
    #[arg(long, value_name = "OUT")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// DICOM, PNG, JPEG, TIFF or BMP file (detected from the content)
    pub file: PathBuf,
    /// Also print patient-identifying fields (name, ID, birth date, institution, dates, UIDs)
    #[arg(long)]
    pub show_phi: bool,
    /// Print the description as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// DICOM, PNG, JPEG, TIFF or BMP file (detected from the content)
    pub file: PathBuf,
    /// Output PNG (written to a temporary file, then renamed: never left half-written)
    pub out: PathBuf,
    /// Frame to render (0-based)
    #[arg(long, default_value_t = 0)]
    pub frame: usize,
    #[command(flatten)]
    pub window: WindowArgs,
}

/// How to map modality values to grey levels. Default: the file's window, else min-max.
#[derive(Debug, Args, Default)]
#[group(multiple = false)]
pub struct WindowArgs {
    /// Explicit window as CENTER,WIDTH in modality units (e.g. HU: 40,400)
    #[arg(long, value_name = "C,W", allow_hyphen_values = true)]
    pub window: Option<String>,
    /// Named CT window: soft-tissue (40/400), lung (-600/1500), liver (90/150),
    /// bone (480/2500), brain (40/80)
    #[arg(long, value_name = "NAME")]
    pub preset: Option<String>,
    /// Stretch the frame's own minimum..maximum over the grey range
    #[arg(long)]
    pub minmax: bool,
}

impl WindowArgs {
    pub fn voi_option(&self) -> Result<VoiOption> {
        if let Some(text) = &self.window {
            let window = window::parse_window(text)
                .map_err(anyhow::Error::msg)
                .context("bad --window")?;
            return Ok(VoiOption::Custom(window));
        }
        if let Some(name) = &self.preset {
            let Some(preset) = Preset::from_name(name) else {
                bail!(
                    "unknown --preset {name:?}; choose one of {}",
                    Preset::names()
                );
            };
            return Ok(VoiOption::Preset(preset));
        }
        if self.minmax {
            return Ok(VoiOption::MinMax);
        }
        Ok(VoiOption::Default)
    }
}

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
        Some(Command::Merge(args)) => crate::eval::merge(&args.dirs, &args.out),
        None => {
            let model = cli.model.unwrap_or_else(crate::inspect::demo_model_dir);
            if !model.join("config.json").exists() {
                bail!(
                    "no model to load: pass --model DIR (the bundled demo model is missing: {})",
                    model.display()
                );
            }
            if let Some(file) = &cli.file {
                if !file.exists() {
                    bail!("no such file: {}", file.display());
                }
            }
            crate::app::run(model, cli.file, cli.ask)
        }
    }
}

fn info(args: &InfoArgs) -> Result<()> {
    let study = imaging::load(&args.file)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&info_json(&study, args.show_phi))?
        );
    } else {
        print!("{}", describe(&study, args.show_phi));
    }
    Ok(())
}

/// The human-readable description printed by `fovea info`.
pub fn describe(study: &Study, show_phi: bool) -> String {
    use std::fmt::Write;
    let mut text = String::new();
    let summary = &study.summary;
    let line = |text: &mut String, key: &str, value: &dyn std::fmt::Display| {
        let _ = writeln!(text, "{key:<18}{value}");
    };
    line(&mut text, "file", &study.path.display());
    match &study.format {
        SourceFormat::Dicom {
            transfer_syntax_uid,
            transfer_syntax_name,
            has_file_meta,
        } => {
            line(&mut text, "format", &"DICOM");
            line(
                &mut text,
                "transfer syntax",
                &format!("{transfer_syntax_name} ({transfer_syntax_uid})"),
            );
            if !has_file_meta {
                line(
                    &mut text,
                    "meta header",
                    &"absent (read as a bare data set)",
                );
            }
        }
        SourceFormat::Raster { format } => line(&mut text, "format", format),
    }
    if let Some(sop_class) = &summary.sop_class {
        line(&mut text, "SOP class", sop_class);
    }
    line(
        &mut text,
        "modality",
        &summary.modality.as_deref().unwrap_or("-"),
    );
    if let Some(body_part) = &summary.body_part {
        line(&mut text, "body part", body_part);
    }
    if let Some(manufacturer) = &summary.manufacturer {
        line(&mut text, "manufacturer", manufacturer);
    }
    line(
        &mut text,
        "size",
        &format!("{} x {} px", study.width, study.height),
    );
    line(&mut text, "frames", &study.frame_count());
    let photometric = match study.photometric {
        Photometric::Monochrome1 => "MONOCHROME1 (shown inverted)",
        Photometric::Monochrome2 => "MONOCHROME2",
        Photometric::Rgb => "RGB",
    };
    if study.stored_photometric != photometric {
        line(
            &mut text,
            "photometric",
            &format!("{} -> {photometric}", study.stored_photometric),
        );
    } else {
        line(&mut text, "photometric", &photometric);
    }
    if let (Some(allocated), Some(stored)) = (summary.bits_allocated, summary.bits_stored) {
        let sign = if summary.signed == Some(true) {
            "signed"
        } else {
            "unsigned"
        };
        line(
            &mut text,
            "bits",
            &format!("{stored} stored / {allocated} allocated, {sign}"),
        );
    }
    if let (Some(slope), Some(intercept)) = (summary.rescale_slope, summary.rescale_intercept) {
        let unit = summary.rescale_type.as_deref().unwrap_or("");
        line(
            &mut text,
            "rescale",
            &format!(
                "stored x {slope} {} {} {unit}",
                if intercept < 0.0 { '-' } else { '+' },
                intercept.abs()
            )
            .trim_end()
            .to_string(),
        );
    }
    if let Some([row, col]) = study.pixel_spacing_mm {
        line(&mut text, "pixel spacing", &format!("{row} x {col} mm"));
    }
    if let Some(thickness) = summary.slice_thickness_mm {
        line(&mut text, "slice thickness", &format!("{thickness} mm"));
    }
    if let Some((lo, hi)) = study.frames.first().and_then(|f| f.min_max()) {
        line(&mut text, "value range", &format!("{lo} .. {hi} (frame 0)"));
    }
    match study.file_window {
        Some(window) => line(&mut text, "window", &format!("{window} (from file)")),
        None if study.photometric != Photometric::Rgb => line(
            &mut text,
            "window",
            &format!("{} (min-max, none in file)", study.default_window(0)),
        ),
        None => {}
    }
    if summary.lossy {
        line(&mut text, "compression", &"lossy");
    }
    if show_phi {
        if study.identity.fields.is_empty() {
            line(&mut text, "patient data", &"none in file");
        }
        for (name, value) in &study.identity.fields {
            line(&mut text, name, value);
        }
    } else if !study.identity.fields.is_empty() {
        line(
            &mut text,
            "patient data",
            &format!(
                "{} identifying field(s) hidden (--show-phi to print)",
                study.identity.fields.len()
            ),
        );
    }
    text
}

fn info_json(study: &Study, show_phi: bool) -> serde_json::Value {
    let mut value = serde_json::json!({
        "path": study.path,
        "format": study.format,
        "width": study.width,
        "height": study.height,
        "frames": study.frame_count(),
        "photometric": study.photometric,
        "stored_photometric": study.stored_photometric,
        "pixel_spacing_mm": study.pixel_spacing_mm,
        "window": study.file_window,
        "summary": study.summary,
    });
    if show_phi {
        let fields: serde_json::Map<String, serde_json::Value> = study
            .identity
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        value["identity"] = serde_json::Value::Object(fields);
    }
    value
}

fn convert(args: &ConvertArgs) -> Result<()> {
    let voi = args.window.voi_option()?;
    check_png_path(&args.out)?;
    let study = imaging::load(&args.file)?;
    let image = imaging::render_rgb8(&study, args.frame, &voi)?;
    imaging::write_png_atomically(&image, &args.out)?;
    let (window, _) = study.resolve_window(args.frame, &voi);
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

fn bench(args: &BenchArgs) -> Result<()> {
    if args.runs == 0 || args.decode_tokens == 0 {
        bail!("--runs and --decode-tokens must be at least 1");
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
        write_json_atomically(&serde_json::to_value(&report)?, out)?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

/// Write JSON beside its destination, then rename: readers never see half a file.
pub fn write_json_atomically(value: &serde_json::Value, out: &Path) -> Result<()> {
    let dir = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".fovea-")
        .suffix(".json.partial")
        .tempfile_in(&dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    serde_json::to_writer_pretty(temp.as_file_mut(), value)
        .with_context(|| format!("cannot write {}", out.display()))?;
    temp.persist(out)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", out.display()))?;
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
    let regions = args
        .region
        .iter()
        .map(|text| crate::grounding::region::Region::parse_box(text).map_err(anyhow::Error::msg))
        .collect::<Result<Vec<_>>>()?;
    for path in [&args.json, &args.overlay].into_iter().flatten() {
        if path.is_dir() {
            bail!("output is a directory: {}", path.display());
        }
    }
    if let Some(overlay) = &args.overlay {
        check_png_path(overlay)?;
    }
    let model_dir = match &args.model {
        Some(dir) => dir.clone(),
        None => {
            let demo = crate::inspect::demo_model_dir();
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
        .map(crate::inspect::parse_heads_arg)
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
    let request = crate::inspect::Request {
        model_dir,
        vision_tower: args.vision_tower.clone(),
        image: args.image.clone(),
        frame: args.frame,
        question: args.question.clone(),
        settings,
        heads_given: heads.is_some(),
        masked_layers_given: args.masked_layers.is_some(),
        regions,
        dump_logits: args.dump_logits,
    };
    let inspection = crate::inspect::inspect(request)?;
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
    if let Some(ratio) = record["metrics"]["triage_map"]["ratio"].as_f64() {
        println!("triage map ratio  {ratio:.3} (attention ratio against the region; 1 = uniform)");
    }
    println!(
        "time              {:.0} ms",
        record["timings_ms"]["total"].as_f64().unwrap_or(0.0)
    );
    if let Some(out) = &args.json {
        write_json_atomically(record, out)?;
        eprintln!("wrote {}", out.display());
    }
    if let Some(out) = &args.overlay {
        let picture =
            crate::inspect::overlay_picture(&inspection, crate::render::Colormap::Inferno);
        crate::imaging::write_png_atomically(&picture, out)?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

fn phantom(args: &PhantomArgs) -> Result<()> {
    use crate::demo::{Family, Recipe};
    if !(0.0..=1.0).contains(&args.difficulty) || !(0.0..=1.0).contains(&args.distractors) {
        bail!("--difficulty and --distractors must be within 0..1");
    }
    if !(64..=2048).contains(&args.size) {
        bail!("--size must be within 64..2048 px, got {}", args.size);
    }
    if args.out.is_file() {
        bail!("output is a file, not a folder: {}", args.out.display());
    }
    let recipe = Recipe {
        size_px: args.size,
        family: args.family.map(|f| match f {
            FamilyArg::ChestXray => Family::ChestXray,
            FamilyArg::HeadMr => Family::HeadMr,
        }),
        distractor_probability: args.distractors,
        difficulty: args.difficulty,
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

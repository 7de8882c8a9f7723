//! The command line's words: every subcommand's arguments (clap derive) and their conversion
//! into the settings the layers below take. Long because every subcommand's options live here
//! with their help text, which is the command line's documentation.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::imaging::{window, Preset, VoiOption};

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
    /// Precision the app loads models at (default: the one chosen last time in the Model menu)
    #[arg(long, value_enum)]
    pub quantize: Option<QuantizeArg>,
    /// Save the window as a PNG once the opened case has its answer, then quit (exit status 2
    /// when the case failed)
    #[arg(long, value_name = "PNG")]
    pub screenshot: Option<PathBuf>,
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
    /// Faithfulness curves over a dataset: how fast the first answer token's probability falls
    /// as image tokens are knocked out in the triage map's order vs random orders
    Faithfulness(FaithfulnessArgs),
    /// Combine the outputs of sharded runs into exactly what one run would have written
    Merge(MergeArgs),
    /// Quantize a checkpoint once into the weight cache (later loads read it in seconds) and
    /// say how long loading took and where the cache is
    Quantize(QuantizeArgs),
}

#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// Checkpoint folder
    #[arg(value_name = "DIR")]
    pub model: PathBuf,
    /// Quantization to cache
    #[arg(long, value_enum, default_value_t = QuantizeArg::Q8_0)]
    pub quantize: QuantizeArg,
    /// The cache folder (default: $FOVEA_CACHE_DIR, else $XDG_CACHE_HOME/fovea, else
    /// ~/.cache/fovea)
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Separate CLIP folder (overrides mm_vision_tower)
    #[arg(long, value_name = "DIR")]
    pub vision_tower: Option<PathBuf>,
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
    /// Quantize the language model's linear layers and LM head in memory while loading
    /// (none keeps the checkpoint's bf16/f16/f32; the vision tower is never quantized)
    #[arg(long, value_enum, default_value_t = QuantizeArg::None)]
    pub quantize: QuantizeArg,
    /// Qwen-VL: fewest pixels each image is resized to (default: the checkpoint's)
    #[arg(long, value_name = "N")]
    pub min_pixels: Option<u64>,
    /// Qwen-VL: most pixels each image is resized to (default: the checkpoint's)
    #[arg(long, value_name = "N")]
    pub max_pixels: Option<u64>,
}

impl DataArgs {
    pub fn run_args(&self) -> Result<crate::eval::RunArgs> {
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
            None => crate::demo::demo_model_dir(),
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
            quantize: self.quantize.to_quantize(),
            pixel_limits: (self.min_pixels, self.max_pixels),
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
pub struct FaithfulnessArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Triage heads and masked layers (from `fovea heads` or a vgrefine.json; default: the
    /// model's)
    #[arg(long, value_name = "HEADS.json")]
    pub vgrefine: Option<PathBuf>,
    /// Fraction of image tokens added per step
    #[arg(long, default_value_t = 0.05, value_name = "F")]
    pub step: f64,
    /// Knock out in every decoder layer (default: the masked layers)
    #[arg(long)]
    pub all_layers: bool,
    /// Random orders for the baseline
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub draws: usize,
    /// Seed of the random orders
    #[arg(long, default_value_t = 0, value_name = "SEED")]
    pub draw_seed: u64,
    /// Also each sample's causal knockout map, and which layers' and heads' attention agrees
    /// with it (`causal_heads.csv`, `causal_heads.png`)
    #[command(flatten)]
    pub causal: CausalArgs,
}

/// The causal knockout map (`inspect`, `faithfulness`).
#[derive(Debug, Args)]
pub struct CausalArgs {
    /// Also measure the causal knockout map: cut the image tokens into R x C cells (`tokens`:
    /// one per token), knock each cell out of the tokens after the image in --causal-layers,
    /// and record how much the answer's first-token log-probability drops; the record gains
    /// `causal`
    #[arg(long, value_name = "RxC|tokens")]
    pub causal_map: Option<String>,
    /// Layers the causal map's knockouts apply in: `all` or l,l,...
    #[arg(
        long,
        value_name = "all|L,L,...",
        default_value = "all",
        requires = "causal_map"
    )]
    pub causal_layers: String,
}

impl CausalArgs {
    /// What to measure, when --causal-map was given (a bad spec is refused here).
    pub fn request(&self) -> anyhow::Result<Option<crate::case::CausalRequest>> {
        let Some(spec) = &self.causal_map else {
            return Ok(None);
        };
        Ok(Some(crate::case::CausalRequest {
            cells: crate::grounding::causal::Cells::parse(spec)?,
            layers: self.causal_layers.clone(),
        }))
    }
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
    /// Probability that a one-lesion case gets a side marker naming the side opposite its lesion
    /// (a conflict case: the marker contradicts the finding; rows get "conflict": true and the
    /// marker's box in distractor_bboxes)
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub conflict: f64,
    /// Probability that a one-lesion case gets a side marker naming its lesion's own side (a
    /// shortcut: the marker agrees with the finding; rows get "shortcut": true). With --conflict,
    /// a case gets at most one marker; the two probabilities add up to at most 1
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub shortcut: f64,
    /// Only this family: chest-xray or head-mr
    #[arg(long, value_enum)]
    pub family: Option<FamilyArg>,
    /// Write DICOM (Secondary Capture) instead of PNG
    #[arg(long)]
    pub dicom: bool,
    /// Instead of cases, write one synthetic axial CT series of this many slices (single-frame
    /// CT files, 3 mm pixels, 2.5 mm apart, a 25 mm lesion; shuffled file names and Instance
    /// Numbers that disagree with the positions, as the series tests need)
    #[arg(long, value_name = "N")]
    pub ct_slices: Option<usize>,
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
    /// DICOM, PNG, JPEG, TIFF or BMP image, or a folder / DICOMDIR with --series and --slice
    #[arg(long, value_name = "FILE|DIR")]
    pub image: PathBuf,
    /// Frame of a multi-frame image (0-based)
    #[arg(long, default_value_t = 0)]
    pub frame: usize,
    #[command(flatten)]
    pub series: SeriesArgs,
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
    /// In the --overlay picture, show the attention of the query that produced answer token K
    /// (0: the first) before and after the knockout
    #[arg(long, value_name = "K")]
    pub overlay_token: Option<usize>,
    /// Also measure the faithfulness curve: knock out image tokens in the triage map's order,
    /// a growing fraction at a time, and follow the first answer token's probability (random
    /// orders as the baseline); the record gains `faithfulness`
    #[arg(long)]
    pub faithfulness: bool,
    /// Fraction of image tokens added per step of the faithfulness curve
    #[arg(long, default_value_t = 0.05, value_name = "F")]
    pub faithfulness_step: f64,
    /// Knock out in every decoder layer for the curve (default: the masked layers)
    #[arg(long)]
    pub faithfulness_all_layers: bool,
    /// Random orders for the curve's baseline (seeded: --faithfulness-seed)
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub faithfulness_draws: usize,
    #[arg(long, default_value_t = 0, value_name = "SEED")]
    pub faithfulness_seed: u64,
    #[command(flatten)]
    pub causal: CausalArgs,
    /// Region to score against, x0,y0,x1,y1 in original image pixels (repeatable)
    #[arg(long, value_name = "X0,Y0,X1,Y1", allow_hyphen_values = true)]
    pub region: Vec<String>,
    /// Also score against the regions in FILE: a DICOM SEG on this image, a NIfTI mask or
    /// label map (.nii, .nii.gz), COCO JSON or VGMED JSON/JSONL boxes (repeatable)
    #[arg(long, value_name = "FILE")]
    pub regions_from: Vec<PathBuf>,
    /// Write a DICOM Segmentation: the regions (MANUAL) and the triage mask (AUTOMATIC),
    /// referencing the source image; de-identified unless --keep-identity
    #[arg(long, value_name = "OUT.dcm")]
    pub seg: Option<PathBuf>,
    /// With --seg, also a segment of the triage map at or above this fraction of its range
    #[arg(long, value_name = "F")]
    pub seg_map_threshold: Option<f64>,
    /// Write the --overlay picture as a DICOM Secondary Capture a PACS shows (colour bars
    /// burned in); de-identified unless --keep-identity
    #[arg(long, value_name = "OUT.dcm")]
    pub capture: Option<PathBuf>,
    /// Keep patient identity for PACS: DICOM exports carry the source's patient and study
    /// modules and UIDs (default: PS3.15 Basic Profile de-identification)
    #[arg(long)]
    pub keep_identity: bool,
    /// Longest answer, in tokens
    #[arg(long, default_value_t = 16)]
    pub max_new_tokens: usize,
    /// Quantize the language model's linear layers and LM head in memory while loading
    /// (none keeps the checkpoint's bf16/f16/f32; the vision tower is never quantized)
    #[arg(long, value_enum, default_value_t = QuantizeArg::None)]
    pub quantize: QuantizeArg,
    /// Qwen-VL: fewest pixels an image is resized to (default: the checkpoint's
    /// preprocessor_config.json); more pixels, more image tokens
    #[arg(long, value_name = "N")]
    pub min_pixels: Option<u64>,
    /// Qwen-VL: most pixels an image is resized to (default: the checkpoint's; published
    /// checkpoints allow 12,845,056 = 16,384 tokens)
    #[arg(long, value_name = "N")]
    pub max_pixels: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QuantizeArg {
    None,
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4k")]
    Q4k,
}

impl QuantizeArg {
    pub fn to_quantize(self) -> crate::model::linear::Quantize {
        use crate::model::linear::Quantize;
        match self {
            QuantizeArg::None => Quantize::None,
            QuantizeArg::Q8_0 => Quantize::Q8_0,
            QuantizeArg::Q4k => Quantize::Q4K,
        }
    }
}

/// Checkpoint shapes `fovea bench --write-model` can generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ShapeArg {
    /// The small bench checkpoint (CLIP-L/336 + a 4-layer 256-wide Qwen2), random f32 weights
    Bench,
    /// HuatuoGPT-Vision-7B's shapes (llava_qwen2, Qwen2-7B, CLIP inside), zero bf16, sparse file
    #[value(name = "huatuogpt-vision-7b")]
    HuatuogptVision7b,
    /// LLaVA-Med v1.5's shapes (llava_mistral, Mistral-7B, separate CLIP folder), zero bf16, sparse
    #[value(name = "llava-med-7b")]
    LlavaMed7b,
    /// Qwen2.5-VL-7B's shapes (Lingshu-7B, HuatuoGPT-Vision-7B-Qwen2.5VL), zero bf16, sparse
    #[value(name = "qwen2.5-vl-7b")]
    Qwen25Vl7b,
    /// Qwen3-VL-8B's shapes (DeepStack, Qwen3 decoder), zero bf16, sparse
    #[value(name = "qwen3-vl-8b")]
    Qwen3Vl8b,
    /// MedGemma-4B's shapes (Gemma 3 4B + SigLIP-400M at 896 px, hub layout), zero bf16, sparse
    #[value(name = "medgemma-4b")]
    Medgemma4b,
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
    /// Only write a generated checkpoint to DIR (to time other commands on it), then exit
    #[arg(long, value_name = "DIR")]
    pub write_model: Option<PathBuf>,
    /// Which checkpoint --write-model writes
    #[arg(long, value_enum, default_value_t = ShapeArg::Bench, requires = "write_model")]
    pub shape: ShapeArg,
    /// With --shape of a 7B: write small random bf16 values (real disk) instead of a sparse
    /// file of zeros; measure memory on these
    #[arg(long, requires = "write_model")]
    pub random_weights: bool,
    /// Measure this checkpoint instead (load, memory, vision, prefill, decode, one VGRefine case)
    #[arg(long, value_name = "DIR", conflicts_with = "write_model")]
    pub model: Option<PathBuf>,
    /// CLIP folder for --model checkpoints whose vision tower is separate
    #[arg(long, value_name = "DIR", requires = "model")]
    pub vision_tower: Option<PathBuf>,
    /// With --model: quantize the language model in memory while loading
    #[arg(long, value_enum, default_value_t = QuantizeArg::None)]
    pub quantize: QuantizeArg,
    /// With --model, Qwen-VL: fewest pixels the 512x448 bench image is resized to (default:
    /// the checkpoint's)
    #[arg(long, value_name = "N", requires = "model")]
    pub min_pixels: Option<u64>,
    /// With --model, Qwen-VL: most pixels the bench image is resized to (default: the
    /// checkpoint's); fewer pixels, fewer image tokens
    #[arg(long, value_name = "N", requires = "model")]
    pub max_pixels: Option<u64>,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// DICOM, PNG, JPEG, TIFF or BMP file (detected from the content), or a folder / DICOMDIR:
    /// its series are listed (with --series N: that series' slices)
    pub file: PathBuf,
    #[command(flatten)]
    pub series: SeriesArgs,
    /// Also print patient-identifying fields (name, ID, birth date, institution, dates, UIDs)
    #[arg(long)]
    pub show_phi: bool,
    /// Print the description as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// DICOM, PNG, JPEG, TIFF or BMP file (detected from the content), or a folder / DICOMDIR
    /// with --series and --slice
    pub file: PathBuf,
    #[command(flatten)]
    pub series: SeriesArgs,
    /// Output PNG (written to a temporary file, then renamed: never left half-written)
    pub out: PathBuf,
    /// Frame to render (0-based)
    #[arg(long, default_value_t = 0)]
    pub frame: usize,
    #[command(flatten)]
    pub window: WindowArgs,
}

/// Which slice of which series, when the image is a folder or a DICOMDIR.
#[derive(Debug, Args, Default, Clone)]
pub struct SeriesArgs {
    /// Series of a folder or DICOMDIR: its index as `fovea info FOLDER` lists them (0-based), or
    /// its Series Instance UID (may be left out when there is one series)
    #[arg(long, value_name = "N|UID")]
    pub series: Option<String>,
    /// Slice of the series, 0-based along the slice normal (Image Position / Orientation
    /// (Patient); Instance Number when the geometry is missing)
    #[arg(long, value_name = "K")]
    pub slice: Option<usize>,
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

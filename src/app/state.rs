//! The app's state: what is open, what the user set, what the worker returned. Panels read
//! and edit it and push [`Command`]s; `app/mod.rs` applies the commands and drains the
//! worker's events. Nothing here draws.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::overlay::ImagePixels;
use super::worker::{CaseResult, ModelSummary, Worker};
use crate::case::compose::Colormap;
use crate::demo::DemoCase;
use crate::grounding::region::Region;
use crate::grounding::triage::Rule;
use crate::imaging::{Study, WindowLevel};
use crate::model::linear::Quantize;

/// Opens files; tests replace the native dialog (rfd returns nothing when headless).
pub trait FileDialog {
    fn open_image(&mut self) -> Option<PathBuf>;
    fn save_file(&mut self, suggested_name: &str) -> Option<PathBuf>;
    /// A checkpoint folder (Open model…).
    fn open_folder(&mut self) -> Option<PathBuf>;
    /// A folder of DICOM files, or a DICOMDIR (Open folder…).
    fn open_study_folder(&mut self) -> Option<PathBuf> {
        self.open_folder()
    }
    /// A file of regions: DICOM SEG, NIfTI, COCO or VGMED JSON (Import regions…).
    fn open_regions_file(&mut self) -> Option<PathBuf> {
        self.open_image()
    }
}

/// Settings kept between runs (serde, `#[serde(default)]`), apart from runtime state.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Persisted {
    pub colormap: Colormap,
    pub opacity: f32,
    pub smooth: bool,
    pub mask_mode: MaskMode,
    pub recent: Vec<PathBuf>,
    pub model_dir: Option<PathBuf>,
    pub relative_maps: bool,
    /// Checkpoint folders opened before, newest first.
    pub recent_models: Vec<PathBuf>,
    /// How models are loaded: stored precision, q8_0 or q4k.
    pub quantize: Quantize,
}

impl Default for Persisted {
    fn default() -> Self {
        Persisted {
            colormap: Colormap::Inferno,
            opacity: 0.55,
            smooth: false,
            mask_mode: MaskMode::Outline,
            recent: Vec::new(),
            model_dir: None,
            relative_maps: false,
            recent_models: Vec::new(),
            quantize: Quantize::None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MaskMode {
    None,
    Outline,
    Fill,
}

/// Which map the overlay shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverlayLayer {
    None,
    Head {
        layer: usize,
        head: usize,
    },
    LayerMean {
        layer: usize,
    },
    Triage,
    KnockedOut,
    Before,
    After,
    /// The causal knockout map of the answer (each token shows its cell's drop).
    Causal,
}

impl OverlayLayer {
    pub fn label(self) -> String {
        match self {
            OverlayLayer::None => "image only".into(),
            OverlayLayer::Head { layer, head } => format!("head {layer}:{head}"),
            OverlayLayer::LayerMean { layer } => format!("layer {layer} head-mean"),
            OverlayLayer::Triage => "triage map".into(),
            OverlayLayer::KnockedOut => "knocked-out mask".into(),
            OverlayLayer::Before => "before knockout".into(),
            OverlayLayer::After => "after knockout".into(),
            OverlayLayer::Causal => "causal map".into(),
        }
    }
}

/// Region drawing tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    Navigate,
    Box,
    Ellipse,
    Polygon,
    Brush,
    Erase,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct NamedRegion {
    pub name: String,
    pub region: Region,
    /// What the region marks: where the answer is (the metrics' ground truth) or a distractor
    /// the model should not look at (drawn orange, measured on its own, never in the metrics).
    #[serde(default)]
    pub role: RegionRole,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegionRole {
    #[default]
    Target,
    Distractor,
}

impl RegionRole {
    pub fn colour(self) -> [u8; 3] {
        match self {
            RegionRole::Target => [60, 255, 60],
            RegionRole::Distractor => [255, 150, 30],
        }
    }
}

/// An open image: the study, the chosen frame, and its pixels for the GPU and the model.
pub struct OpenImage {
    pub study: std::sync::Arc<Study>,
    pub frame: usize,
    pub window: WindowLevel,
    pub gpu_pixels: Arc<ImagePixels>,
    pub model_input: Arc<image::RgbImage>,
    pub key: String,
}

/// Pan/zoom of the viewport: which image pixel is at the centre, and screen px per image px.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct View {
    pub centre_px: [f32; 2],
    pub zoom: f32,
    pub fit: bool,
}

/// Things the UI asked for, applied in `logic()`.
pub enum Command {
    Open(PathBuf),
    OpenDialog,
    Ask,
    Cancel,
    LookHere,
    SetFrame(usize),
    /// Open a folder or DICOMDIR as series (Open folder…).
    OpenFolderDialog,
    /// Show series `i` of the open folder (its middle slice).
    SetSeries(usize),
    /// Show slice `k` of the current series (0-based along the slice normal).
    SetSlice(usize),
    /// Import regions from a file chosen in a dialog.
    ImportRegionsDialog,
    /// Import regions from this file onto the open image.
    ImportRegions(PathBuf),
    Export(ExportKind),
    ClearRegions,
    /// Choose a checkpoint folder and load it.
    OpenModelDialog,
    /// Load this checkpoint folder (replacing the current model).
    LoadModel(PathBuf),
    /// Reload the current model at this precision.
    SetQuantize(Quantize),
    /// Measure the faithfulness curve of the shown map on the last question.
    Faithfulness,
    /// Measure the causal knockout map of the last answer.
    CausalMap,
    /// Open demo case `i`: its model (when it names one and another is loaded), its image, and
    /// ask its question.
    OpenCase(usize),
}

/// A model load in progress.
#[derive(Clone, Debug)]
pub struct Loading {
    pub dir: PathBuf,
    pub what: String,
    pub done: usize,
    pub total: usize,
    pub started: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportKind {
    Png,
    Record,
    Regions,
    /// DICOM Segmentation: the regions and the triage mask (and the thresholded map).
    Seg,
    /// DICOM Secondary Capture of the composited view.
    Capture,
}

/// Whose attention the maps and the head explorer show.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AnswerView {
    /// The query that produced the first answer token (the record's `attention.question`).
    #[default]
    Question,
    /// The query that produced answer token `index` (of the original or the VGRefine answer).
    Token { refined: bool, index: usize },
    /// The mean over all of an answer's tokens' maps, each token weighted equally.
    Whole { refined: bool },
}

pub struct FoveaApp {
    pub persisted: Persisted,
    pub worker: Worker,
    pub model: Option<ModelSummary>,
    /// The model being loaded, while it is.
    pub loading: Option<Loading>,
    pub image: Option<OpenImage>,
    pub question: String,
    pub result: Option<CaseResult>,
    pub stage: Option<&'static str>,
    pub stage_started: Option<Instant>,
    /// Knockout passes done of a running causal map.
    pub progress: Option<(usize, usize)>,
    pub status: String,
    pub view: View,
    pub layer: OverlayLayer,
    pub regions: Vec<NamedRegion>,
    pub tool: Tool,
    pub drawing: Vec<[f64; 2]>,
    pub side_by_side: bool,
    pub heads_text: String,
    pub masked_text: String,
    pub percentile: f64,
    /// Answer tokens to generate, and whether to stop at the end-of-answer token.
    pub max_new_tokens: usize,
    pub stop_at_eos: bool,
    /// Measure the faithfulness curve (triage map order) with each answer.
    pub faithfulness: bool,
    /// Faithfulness curves knock out in every layer (else the masked layers).
    pub faithfulness_all_layers: bool,
    /// Cells per side of the next causal map (0: the default, about one prefill's cost).
    pub causal_side: usize,
    pub answer_view: AnswerView,
    /// Qwen-VL: the user's max_pixels (None: the checkpoint's).
    pub max_pixels: Option<u64>,
    pub show_phi: bool,
    pub dialog: Box<dyn FileDialog>,
    pub gpu: bool,
    pub cases: Vec<DemoCase>,
    pub commands: Vec<Command>,
    pub last_export: Option<PathBuf>,
    pub session_dirty: Option<Instant>,
    pub sessions_dir: PathBuf,
    /// Ask the current question once the model has loaded (`fovea FILE --ask TEXT`).
    pub ask_when_ready: bool,
    /// The open folder or DICOMDIR, while one is.
    pub browser: Option<crate::app::series::SeriesBrowser>,
    /// "Keep patient identity for PACS" for DICOM exports (default: de-identified).
    pub keep_identity: bool,
    /// DICOM SEG exports add the triage map thresholded at this fraction of its range.
    pub seg_map_threshold: Option<f64>,
    /// The identity policy of DICOM exports (pseudonyms and remapped UIDs), kept for the run.
    pub exporter: Option<crate::exchange::Exporter>,
    /// The last model load or case that failed, with the message (cleared by the next success).
    pub last_error: Option<String>,
    /// `fovea --screenshot`: the window to save once the case is answered.
    pub shot: Option<Shot>,
}

impl FoveaApp {
    /// The settings the next question runs with (heads and layers from the text fields, or
    /// the model's defaults).
    pub fn settings(&self) -> Result<crate::grounding::refine::Settings, String> {
        let model = self.model.as_ref().ok_or("the model is still loading")?;
        let heads = if self.heads_text.trim().is_empty() {
            model.default_heads.clone()
        } else {
            crate::grounding::triage::parse_heads(&self.heads_text)?
        };
        let masked_layers = if self.masked_text.trim().is_empty() {
            model.default_masked_layers.clone()
        } else {
            self.masked_text
                .split(',')
                .map(|s| {
                    s.trim()
                        .parse::<usize>()
                        .map_err(|_| format!("masked layer {s:?} is not a number"))
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        if heads.is_empty() {
            return Err("no triage heads: type some as l:h,l:h".into());
        }
        if masked_layers.is_empty() {
            return Err("no masked layer: type one, e.g. 1".into());
        }
        Ok(crate::grounding::refine::Settings {
            heads,
            masked_layers,
            rule: Rule::Percentile(self.percentile),
            max_new_tokens: self.max_new_tokens.max(1),
            stop_at_eos: self.stop_at_eos,
            ..Default::default()
        })
    }

    /// Image tokens covered by all regions (union), on the current result's grid.
    pub fn region_tokens(&self) -> Option<Vec<usize>> {
        let grid = self.result.as_ref().map(|r| r.grid)?;
        let mut tokens: Vec<usize> = self
            .regions
            .iter()
            .filter(|r| r.role == RegionRole::Target)
            .flat_map(|r| r.region.tokens(&grid))
            .collect();
        tokens.sort_unstable();
        tokens.dedup();
        Some(tokens)
    }

    pub fn mark_dirty(&mut self) {
        self.session_dirty = Some(Instant::now());
    }
}

/// A stable key for texture caches and session files.
pub fn hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// How the menu names a precision.
pub fn precision_label(quantize: Quantize) -> &'static str {
    match quantize {
        Quantize::None => "stored precision",
        Quantize::Q8_0 => "q8_0",
        Quantize::Q4K => "q4k",
    }
}

/// What the shot ended with: a line saying what was saved, or why the case failed.
pub type ShotOutcome = Arc<Mutex<Option<Result<String, String>>>>;

/// `fovea --screenshot`: the window to save once the case is answered (app/window.rs).
pub struct Shot {
    pub path: PathBuf,
    pub requested: bool,
    /// The captured frame, put here by egui's screenshot callback.
    pub captured: Arc<Mutex<Option<Arc<egui::ColorImage>>>>,
    /// The app's message when the case failed (the shot is still saved: it shows the error).
    pub failure: Option<String>,
    pub outcome: ShotOutcome,
}

impl Shot {
    pub fn new(path: PathBuf) -> Shot {
        Shot {
            path,
            requested: false,
            captured: Arc::new(Mutex::new(None)),
            failure: None,
            outcome: Arc::new(Mutex::new(None)),
        }
    }
}

//! The desktop app: case review with GPU attention overlays, hand-drawn regions and
//! before/after knockout. The only layer that knows egui or wgpu.
//!
//! `logic()` drains worker events and applies commands; `ui()` only draws and records what
//! the user asked for. Inference runs on the `fovea-inference` thread (worker.rs); the image
//! and overlays are drawn by fovea's WGSL pipeline (overlay.rs, shaders/overlay.wgsl).

pub mod overlay;
pub mod panels;
pub mod session;
pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::grounding::region::Region;
use crate::grounding::triage::Rule;
use crate::imaging::{self, Study, WindowLevel};
use crate::render::Colormap;
use worker::{CaseResult, Event, ModelSummary, Request, Worker};

/// Opens files; tests replace the native dialog (rfd returns nothing when headless).
pub trait FileDialog {
    fn open_image(&mut self) -> Option<PathBuf>;
    fn save_file(&mut self, suggested_name: &str) -> Option<PathBuf>;
}

/// The native dialog, through rfd.
pub struct NativeDialog;

impl FileDialog for NativeDialog {
    fn open_image(&mut self) -> Option<PathBuf> {
        rfd::FileDialog::new()
            .add_filter(
                "Images",
                &["dcm", "dicom", "png", "jpg", "jpeg", "tif", "tiff", "bmp"],
            )
            .add_filter("All files", &["*"])
            .pick_file()
    }
    fn save_file(&mut self, suggested_name: &str) -> Option<PathBuf> {
        rfd::FileDialog::new()
            .set_file_name(suggested_name)
            .save_file()
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
    Head { layer: usize, head: usize },
    LayerMean { layer: usize },
    Triage,
    KnockedOut,
    Before,
    After,
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
}

/// An open image: the study, the chosen frame, and its pixels for the GPU and the model.
pub struct OpenImage {
    pub study: Study,
    pub frame: usize,
    pub window: WindowLevel,
    pub gpu_pixels: Arc<overlay::ImagePixels>,
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

/// A demo case from assets/cases/cases.jsonl.
#[derive(Clone, Debug)]
pub struct DemoCase {
    pub path: PathBuf,
    pub question: String,
    pub answer: String,
    pub boxes: Vec<[f64; 4]>,
}

/// Things the UI asked for, applied in `logic()`.
pub enum Command {
    Open(PathBuf),
    OpenDialog,
    Ask,
    Cancel,
    LookHere,
    SetFrame(usize),
    Export(ExportKind),
    ClearRegions,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportKind {
    Png,
    Record,
    Regions,
}

pub struct FoveaApp {
    pub persisted: Persisted,
    pub worker: Worker,
    pub model: Option<ModelSummary>,
    pub image: Option<OpenImage>,
    pub question: String,
    pub result: Option<CaseResult>,
    pub stage: Option<&'static str>,
    pub stage_started: Option<Instant>,
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
}

impl FoveaApp {
    /// Build the app: start the worker, load the model, open the first file.
    pub fn new(
        cc: &eframe::CreationContext<'_>,
        model_dir: PathBuf,
        open: Option<PathBuf>,
        dialog: Box<dyn FileDialog>,
    ) -> Self {
        let gpu = match cc.wgpu_render_state.as_ref() {
            Some(render_state) => {
                overlay::OverlayRenderer::install(render_state);
                true
            }
            None => false,
        };
        let persisted: Persisted = cc
            .storage
            .and_then(|storage| eframe::get_value(storage, eframe::APP_KEY))
            .unwrap_or_default();
        let ctx = cc.egui_ctx.clone();
        let worker = Worker::spawn(move || ctx.request_repaint())
            .unwrap_or_else(|err| panic!("cannot start the inference thread: {err}"));
        let mut app = FoveaApp {
            persisted,
            worker,
            model: None,
            image: None,
            question: String::new(),
            result: None,
            stage: None,
            stage_started: None,
            status: String::new(),
            view: View {
                centre_px: [0.0, 0.0],
                zoom: 1.0,
                fit: true,
            },
            layer: OverlayLayer::Triage,
            regions: Vec::new(),
            tool: Tool::Navigate,
            drawing: Vec::new(),
            side_by_side: false,
            heads_text: String::new(),
            masked_text: String::new(),
            percentile: 80.0,
            show_phi: false,
            dialog,
            gpu,
            cases: load_demo_cases(&crate::inspect::demo_cases_file()),
            commands: Vec::new(),
            last_export: None,
            session_dirty: None,
            sessions_dir: session::default_sessions_dir(),
            ask_when_ready: false,
        };
        app.worker.send(Request::LoadModel {
            dir: model_dir,
            vision_tower: None,
        });
        let first = open.or_else(|| app.cases.first().map(|c| c.path.clone()));
        if let Some(path) = first {
            app.commands.push(Command::Open(path));
        }
        app
    }

    /// Open a file: decode it, prepare GPU pixels and the model input, restore its session.
    pub fn open(&mut self, path: &Path) {
        match imaging::load(path) {
            Ok(study) => {
                self.result = None;
                self.regions.clear();
                self.set_image(study, 0);
                if let Some(case) = self.cases.iter().find(|c| c.path == path) {
                    self.question = case.question.clone();
                }
                if let Some(saved) = session::load(&self.sessions_dir, path) {
                    saved.apply(self);
                }
                self.persisted.recent.retain(|p| p != path);
                self.persisted.recent.insert(0, path.to_path_buf());
                self.persisted.recent.truncate(10);
                self.status = format!("opened {}", path.display());
            }
            Err(err) => self.status = format!("{err}"),
        }
    }

    fn set_image(&mut self, study: Study, frame: usize) {
        let frame = frame.min(study.frame_count().saturating_sub(1));
        let window = study.default_window(frame);
        let Ok(model_input) = imaging::render_rgb8(&study, frame, &imaging::VoiOption::Default)
        else {
            self.status = "cannot render the frame".into();
            return;
        };
        let key = format!("{}#{frame}", study.path.display());
        let gpu_pixels = Arc::new(gpu_pixels(&study, frame, hash(&key)));
        self.view = View {
            centre_px: [study.width as f32 / 2.0, study.height as f32 / 2.0],
            zoom: 1.0,
            fit: true,
        };
        self.image = Some(OpenImage {
            study,
            frame,
            window,
            gpu_pixels,
            model_input: Arc::new(model_input),
            key,
        });
    }

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
            max_new_tokens: 8,
            ..Default::default()
        })
    }

    fn ask(&mut self, look_here: bool) {
        let Some(image) = &self.image else {
            self.status = "open an image first".into();
            return;
        };
        let settings = match self.settings() {
            Ok(settings) => settings,
            Err(err) => {
                self.status = err;
                return;
            }
        };
        let look_here = if look_here {
            let Some(tokens) = self.region_tokens().filter(|t| !t.is_empty()) else {
                self.status = "draw a region first".into();
                return;
            };
            Some(tokens)
        } else {
            None
        };
        if self.question.trim().is_empty() {
            self.status = "type a question".into();
            return;
        }
        let request = Request::Ask(Box::new(worker::Ask {
            image_key: image.key.clone(),
            image: image.model_input.clone(),
            question: self.question.trim().to_string(),
            settings,
            look_here,
        }));
        if self.worker.send(request) {
            self.stage = Some("queued");
            self.stage_started = Some(Instant::now());
            self.status.clear();
        } else {
            self.status = "the model is busy".into();
        }
    }

    /// Image tokens covered by all regions (union), on the current result's grid.
    pub fn region_tokens(&self) -> Option<Vec<usize>> {
        let grid = self.result.as_ref().map(|r| r.grid)?;
        let mut tokens: Vec<usize> = self
            .regions
            .iter()
            .flat_map(|r| r.region.tokens(&grid))
            .collect();
        tokens.sort_unstable();
        tokens.dedup();
        Some(tokens)
    }

    pub fn mark_dirty(&mut self) {
        self.session_dirty = Some(Instant::now());
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::Open(path) => self.open(&path),
            Command::OpenDialog => {
                if let Some(path) = self.dialog.open_image() {
                    self.open(&path);
                }
            }
            Command::Ask => self.ask(false),
            Command::LookHere => self.ask(true),
            Command::Cancel => {
                self.worker.cancel();
                self.status = "cancelling after the current stage".into();
            }
            Command::SetFrame(frame) => {
                if let Some(image) = self.image.take() {
                    let view = self.view;
                    self.set_image(image.study, frame);
                    self.view = view;
                    self.result = None;
                }
            }
            Command::Export(kind) => panels::export::export(self, kind),
            Command::ClearRegions => {
                self.regions.clear();
                self.mark_dirty();
            }
        }
    }

    fn drain_events(&mut self) {
        while let Ok(event) = self.worker.events.try_recv() {
            match event {
                Event::ModelLoaded(summary) => {
                    self.status = format!(
                        "model loaded: {} ({} layers x {} heads) in {:.0} ms",
                        summary.arch, summary.layers, summary.heads, summary.load_ms
                    );
                    self.persisted.model_dir = Some(summary.dir.clone());
                    self.model = Some(summary);
                    self.worker.busy = false;
                    if std::mem::take(&mut self.ask_when_ready) {
                        self.commands.push(Command::Ask);
                    }
                }
                Event::Stage(stage) => {
                    self.stage = Some(stage);
                }
                Event::Finished(result) => {
                    self.stage = None;
                    self.worker.busy = false;
                    if self.layer == OverlayLayer::None {
                        self.layer = OverlayLayer::Triage;
                    }
                    self.status = format!(
                        "answered in {:.0} ms{}",
                        result.total_ms,
                        if result.reused_session {
                            " (cached image prefix)"
                        } else {
                            ""
                        }
                    );
                    self.result = Some(*result);
                    self.mark_dirty();
                }
                Event::Failed(message) => {
                    self.stage = None;
                    self.worker.busy = false;
                    self.status = message;
                }
            }
        }
    }

    /// The app's per-frame work outside drawing (also what tests call between frames).
    pub fn tick(&mut self) {
        self.drain_events();
        for command in std::mem::take(&mut self.commands) {
            self.apply(command);
        }
        if self
            .session_dirty
            .is_some_and(|t| t.elapsed().as_secs_f32() > 0.5)
        {
            self.session_dirty = None;
            if let Some(image) = &self.image {
                if let Err(err) = session::save(
                    &self.sessions_dir,
                    &image.study.path,
                    &session::Saved::from_app(self),
                ) {
                    self.status = format!("cannot save the session: {err:#}");
                }
            }
        }
    }
}

impl eframe::App for FoveaApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        // Dropped files open like menu choices.
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        });
        for path in dropped {
            self.commands.push(Command::Open(path));
        }
        self.tick();
        if self.worker.busy || self.session_dirty.is_some() {
            ctx.request_repaint_after(std::time::Duration::from_millis(100));
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        panels::show(self, ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, eframe::APP_KEY, &self.persisted);
    }
}

/// RGBA f32 pixels of a frame for the GPU: modality values in r for greyscale.
pub fn gpu_pixels(study: &Study, frame: usize, key: u64) -> overlay::ImagePixels {
    let values = study
        .frames
        .get(frame)
        .map(|f| f.values.as_slice())
        .unwrap_or(&[]);
    let rgba: Vec<f32> = match study.photometric {
        imaging::Photometric::Rgb => values
            .chunks_exact(3)
            .flat_map(|c| [c[0], c[1], c[2], 1.0])
            .collect(),
        _ => values.iter().flat_map(|&v| [v, v, v, 1.0]).collect(),
    };
    overlay::ImagePixels {
        key,
        width: study.width,
        height: study.height,
        rgba,
    }
}

pub fn hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// Demo cases listed in a VGMED JSONL file (image paths relative to it).
pub fn load_demo_cases(file: &Path) -> Vec<DemoCase> {
    let Ok(text) = std::fs::read_to_string(file) else {
        return Vec::new();
    };
    let dir = file.parent().unwrap_or(Path::new("."));
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|row| {
            Some(DemoCase {
                path: dir.join(row.get("image")?.as_str()?),
                question: row.get("question")?.as_str()?.to_string(),
                answer: row
                    .get("answer")
                    .and_then(|a| a.as_str())
                    .unwrap_or("")
                    .to_string(),
                boxes: serde_json::from_value(
                    row.get("original_bboxes").cloned().unwrap_or_default(),
                )
                .unwrap_or_default(),
            })
        })
        .collect()
}

/// Run the desktop app.
pub fn run(model_dir: PathBuf, open: Option<PathBuf>, ask: Option<String>) -> anyhow::Result<()> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_inner_size([1400.0, 900.0])
            .with_title("fovea"),
        renderer: eframe::Renderer::Wgpu,
        ..Default::default()
    };
    eframe::run_native(
        "fovea",
        options,
        Box::new(move |cc| {
            let mut app = FoveaApp::new(cc, model_dir, open, Box::new(NativeDialog));
            if let Some(question) = ask {
                app.question = question;
                app.ask_when_ready = true;
            }
            Ok(Box::new(app))
        }),
    )
    .map_err(|err| anyhow::anyhow!("cannot open the window: {err}"))
}

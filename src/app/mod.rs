//! The desktop app: case review with GPU attention overlays, hand-drawn regions and
//! before/after knockout. The only layer that knows egui or wgpu.
//!
//! `logic()` drains worker events and applies commands; `ui()` only draws and records what
//! the user asked for. Inference runs on the `fovea-inference` thread (worker.rs); the image
//! and overlays are drawn by fovea's WGSL pipeline (overlay.rs, shaders/overlay.wgsl).

pub mod browse;
mod causal;
pub mod dialog;
pub mod overlay;
pub mod panels;
pub mod series;
pub mod session;
pub mod state;
pub mod teaching;
pub mod window;
pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::demo::load_demo_cases;
use crate::imaging::{self, Study};
pub use dialog::NativeDialog;
use overlay::gpu_pixels;
use state::hash;
pub use state::{
    AnswerView, Command, ExportKind, FileDialog, FoveaApp, Loading, MaskMode, NamedRegion,
    OpenImage, OverlayLayer, Persisted, RegionRole, Tool, View,
};
use worker::{Event, Request, Worker};

impl FoveaApp {
    /// Build the app: start the worker, load the model, open the first file.
    pub fn new(
        cc: &eframe::CreationContext<'_>,
        model_dir: PathBuf,
        open: Option<PathBuf>,
        dialog: Box<dyn FileDialog>,
    ) -> Self {
        FoveaApp::with_precision(cc, model_dir, None, open, dialog)
    }

    /// The same, loading the model at `quantize` (default: the precision chosen last time).
    pub fn with_precision(
        cc: &eframe::CreationContext<'_>,
        model_dir: PathBuf,
        quantize: Option<crate::model::linear::Quantize>,
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
        let mut persisted: Persisted = cc
            .storage
            .and_then(|storage| eframe::get_value(storage, eframe::APP_KEY))
            .unwrap_or_default();
        if let Some(quantize) = quantize {
            persisted.quantize = quantize;
        }
        let ctx = cc.egui_ctx.clone();
        let worker = Worker::spawn(move || ctx.request_repaint())
            .unwrap_or_else(|err| panic!("cannot start the inference thread: {err}"));
        let mut app = FoveaApp {
            persisted,
            worker,
            model: None,
            loading: None,
            image: None,
            question: String::new(),
            result: None,
            stage: None,
            stage_started: None,
            progress: None,
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
            max_new_tokens: 8,
            stop_at_eos: true,
            faithfulness: false,
            faithfulness_all_layers: false,
            causal_side: 0,
            answer_view: AnswerView::Question,
            max_pixels: None,
            show_phi: false,
            dialog,
            gpu,
            cases: load_demo_cases(&crate::demo::demo_cases_file()),
            commands: Vec::new(),
            last_export: None,
            session_dirty: None,
            sessions_dir: session::default_sessions_dir(),
            ask_when_ready: false,
            browser: None,
            keep_identity: false,
            seg_map_threshold: None,
            exporter: None,
            last_error: None,
            shot: None,
        };
        app.load_model(model_dir);
        let first = open.or_else(|| app.cases.first().map(|c| c.path.clone()));
        if let Some(path) = first {
            app.commands.push(Command::Open(path));
        }
        app
    }

    /// Load a checkpoint folder at the chosen precision; the current model is dropped first.
    pub fn load_model(&mut self, dir: PathBuf) {
        // A CLIP folder beside a LLaVA-Med checkpoint is found by the loader (mm_vision_tower).
        let request = Request::LoadModel {
            dir: dir.clone(),
            vision_tower: None,
            quantize: self.persisted.quantize,
        };
        // A load queued behind a running question starts when it ends (Cancel ends it sooner).
        if self.worker.send(request) {
            self.model = None;
            self.result = None;
            self.loading = Some(Loading {
                dir: dir.clone(),
                what: "reading the checkpoint".into(),
                done: 0,
                total: 0,
                started: Instant::now(),
            });
            self.stage = Some("loading model");
            self.stage_started = Some(Instant::now());
            self.status = format!(
                "loading {} ({})",
                dir.display(),
                state::precision_label(self.persisted.quantize)
            );
        } else {
            self.status = "the model is busy: try again in a moment".into();
        }
    }

    /// Open a file: decode it, prepare GPU pixels and the model input, restore its session.
    /// A folder or a DICOMDIR opens as series: its headers are read in the background.
    pub fn open(&mut self, path: &Path) {
        if imaging::scan::is_series_source(path) {
            self.open_series(path, Arc::default());
            return;
        }
        self.browser = None;
        match imaging::load(path) {
            Ok(study) => {
                self.show_study(Arc::new(study), 0);
                self.persisted.recent.retain(|p| p != path);
                self.persisted.recent.insert(0, path.to_path_buf());
                self.persisted.recent.truncate(10);
                self.status = format!("opened {}", path.display());
            }
            Err(err) => self.status = format!("{err}"),
        }
    }

    /// Show a decoded study (a file, or a slice of a series) with its saved session.
    fn show_study(&mut self, study: Arc<Study>, frame: usize) {
        let path = study.path.clone();
        self.result = None;
        self.regions.clear();
        self.set_image(study, frame);
        if let Some(case) = self.cases.iter().find(|c| c.path == path) {
            self.question = case.question.clone();
        }
        if let Some(saved) = session::load(&self.sessions_dir, &path) {
            saved.apply(self);
        }
    }

    fn set_image(&mut self, study: Arc<Study>, frame: usize) {
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
            pixel_limits: self
                .model
                .as_ref()
                .and_then(|m| m.pixel_limits)
                .map(|(min, max)| (min, self.max_pixels.unwrap_or(max))),
            faithfulness: self.faithfulness,
        }));
        self.send_work(request);
    }

    /// Open demo case `index`: load the model it is for if another one is loaded (the question
    /// is asked once it has loaded), open its image with its lesion and distractor boxes as
    /// regions, show the view that tells its story (teaching.rs), and ask its question.
    fn open_case(&mut self, index: usize) {
        let Some(case) = self.cases.get(index).cloned() else {
            return;
        };
        self.open(&case.path);
        if self.regions.is_empty() {
            self.regions = teaching::case_regions(&case);
        }
        teaching::apply_view(self, &case);
        let current = self
            .loading
            .as_ref()
            .map(|l| &l.dir)
            .or(self.model.as_ref().map(|m| &m.dir));
        match case.model {
            Some(dir) if current != Some(&dir) => {
                self.load_model(dir);
                self.ask_when_ready = true;
            }
            _ if self.model.is_some() => self.commands.push(Command::Ask),
            _ => self.ask_when_ready = true,
        }
    }

    /// Queue work for the inference thread (the status says when it is busy).
    fn send_work(&mut self, request: Request) {
        if self.worker.send(request) {
            self.stage = Some("queued");
            self.stage_started = Some(Instant::now());
            self.status.clear();
        } else {
            self.status = "the model is busy".into();
        }
    }

    /// The faithfulness curve of the shown map (or the triage map when none is shown) on the
    /// last question, in the masked layers or every layer.
    fn ask_faithfulness(&mut self) {
        let Some(result) = &self.result else {
            self.status = "ask a question first".into();
            return;
        };
        let layer = match self.layer {
            OverlayLayer::None | OverlayLayer::KnockedOut => OverlayLayer::Triage,
            other => other,
        };
        let Some(map) = panels::heads::layer_values(self, layer) else {
            self.status = "no map to order the tokens by".into();
            return;
        };
        let layers = if self.faithfulness_all_layers {
            (0..self.model.as_ref().map_or(0, |m| m.layers)).collect()
        } else {
            result.settings.masked_layers.clone()
        };
        let request = Request::Faithfulness(Box::new(worker::FaithfulnessAsk {
            prompt: result.outcome.prompt.clone(),
            map,
            order: layer.label(),
            layers,
        }));
        self.send_work(request);
    }

    /// The causal map of the last answer (see `causal::request`).
    fn ask_causal(&mut self) {
        match causal::request(self) {
            Ok(request) => self.send_work(request),
            Err(message) => self.status = message,
        }
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
            Command::Faithfulness => self.ask_faithfulness(),
            Command::CausalMap => self.ask_causal(),
            Command::OpenCase(index) => self.open_case(index),
            Command::LookHere => self.ask(true),
            Command::Cancel => {
                self.worker.cancel();
                self.status = "cancelling after the current stage".into();
            }
            Command::OpenFolderDialog => {
                if let Some(path) = self.dialog.open_study_folder() {
                    self.open(&path);
                }
            }
            Command::SetSeries(index) => self.set_series(index),
            Command::SetSlice(slice) => {
                let current = self.browser.as_ref().map_or(0, |b| b.slice);
                self.set_slice(slice, slice as i64 - current as i64);
            }
            Command::ImportRegionsDialog => {
                if let Some(path) = self.dialog.open_regions_file() {
                    panels::exchange::import_regions(self, &path);
                }
            }
            Command::ImportRegions(path) => panels::exchange::import_regions(self, &path),
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
            Command::OpenModelDialog => {
                if let Some(dir) = self.dialog.open_folder() {
                    self.load_model(dir);
                }
            }
            Command::LoadModel(dir) => self.load_model(dir),
            Command::SetQuantize(quantize) => {
                self.persisted.quantize = quantize;
                let current = self
                    .model
                    .as_ref()
                    .map(|m| m.dir.clone())
                    .or_else(|| self.loading.as_ref().map(|l| l.dir.clone()));
                if let Some(dir) = current {
                    self.load_model(dir);
                }
            }
        }
    }

    fn drain_events(&mut self) {
        while let Ok(event) = self.worker.events.try_recv() {
            match event {
                Event::Loading {
                    dir,
                    what,
                    done,
                    total,
                } => {
                    if let Some(loading) = self.loading.as_mut().filter(|l| l.dir == dir) {
                        loading.what = what;
                        loading.done = done;
                        loading.total = total;
                    }
                }
                Event::LoadFailed(message) => {
                    self.loading = None;
                    self.stage = None;
                    self.worker.busy = false;
                    self.status = format!("no model loaded: {message}");
                    self.last_error = Some(self.status.clone());
                }
                Event::ModelLoaded(summary) => {
                    self.status = format!(
                        "model loaded: {} ({} layers x {} heads, {}, {:.2} GiB of weights) in {:.1} s{}",
                        summary.arch,
                        summary.layers,
                        summary.heads,
                        state::precision_label(summary.quantize),
                        summary.weight_bytes as f64 / (1u64 << 30) as f64,
                        summary.load_ms / 1e3,
                        if summary.load_notes.is_empty() {
                            String::new()
                        } else {
                            format!("; {}", summary.load_notes.join("; "))
                        }
                    );
                    self.persisted.model_dir = Some(summary.dir.clone());
                    let dir = summary.dir.clone();
                    self.persisted.recent_models.retain(|p| *p != dir);
                    self.persisted.recent_models.insert(0, dir);
                    self.persisted.recent_models.truncate(10);
                    self.model = Some(summary);
                    self.loading = None;
                    self.stage = None;
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
                    // Scrolled to another slice (or frame) while the model ran: the answer
                    // belongs to the image it was asked about, not to the one shown now.
                    if self.image.as_ref().map(|i| &i.key) != Some(&result.image_key) {
                        self.status = format!(
                            "the answer about {} arrived after it was left; ask again here",
                            result.image_key
                        );
                        continue;
                    }
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
                    self.last_error = None;
                    self.answer_view = AnswerView::Question;
                    self.mark_dirty();
                }
                Event::Faithfulness(curve) => {
                    self.stage = None;
                    self.worker.busy = false;
                    if let Some(result) = &mut self.result {
                        result.faithfulness = Some(*curve);
                    }
                }
                Event::Progress { done, total } => self.progress = Some((done, total)),
                Event::Causal(view) => {
                    self.stage = None;
                    self.progress = None;
                    self.worker.busy = false;
                    if let Some(result) = &mut self.result {
                        result.causal = Some(*view);
                        self.layer = OverlayLayer::Causal;
                    }
                }
                Event::Failed(message) => {
                    self.stage = None;
                    self.progress = None;
                    self.worker.busy = false;
                    self.last_error = Some(message.clone());
                    self.status = message;
                }
            }
        }
    }

    /// The app's per-frame work outside drawing (also what tests call between frames).
    pub fn tick(&mut self) {
        self.drain_events();
        self.poll_browser();
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
        window::shot_step(self, ctx);
        let scanning = self
            .browser
            .as_ref()
            .is_some_and(|b| b.scan.is_none() && b.failed.is_none());
        if self.worker.busy || self.session_dirty.is_some() || scanning {
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

//! The inference thread: loads the model (with progress, cancellable, at the precision asked
//! for; a new model replaces the old one, which is dropped first so two 7B models never share
//! the memory), keeps one image session (vision embedding and prefix cache) so a second
//! question about the same image is fast, and reports each stage. The UI thread talks to it
//! through bounded channels and never waits on it; a cancel flag is checked between stages
//! and between the layers of a load.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Instant;

use crate::grounding::causal::{self, CausalMap, Cells, Target};
use crate::grounding::faithfulness::{self, Curve, CurveSettings};
use crate::grounding::refine::{self, Outcome, Settings, Stage};
use crate::grounding::region::TokenGrid;
use crate::model::linear::{LoadProgress, Quantize};
use crate::model::{Answer, EdgeMask, ImageSession, Model, RunOptions};

/// What the UI asks for.
pub enum Request {
    LoadModel {
        dir: PathBuf,
        vision_tower: Option<PathBuf>,
        quantize: Quantize,
    },
    Ask(Box<Ask>),
    /// The faithfulness curve of a map on the last asked image and prompt.
    Faithfulness(Box<FaithfulnessAsk>),
    /// The causal knockout map of the last answer.
    Causal(Box<CausalAsk>),
}

/// Knock each cell of the last question's image out (and each region), following the answer's
/// first token.
pub struct CausalAsk {
    pub prompt: crate::model::TokenisedPrompt,
    pub target: Target,
    pub base_logprob: f64,
    pub cells: Cells,
    pub layers: Vec<usize>,
    /// The shown attention map (its name and one value per image token), for the agreement.
    pub shown: Option<(String, Vec<f32>)>,
    /// Regions by name, each knocked out whole.
    pub regions: Vec<(String, Vec<usize>)>,
    /// The VGRefine answer's map too: its first token and log-probability under its own
    /// knockout, and that knockout (which every cell's then adds to).
    pub refined: Option<(Target, f64, EdgeMask)>,
}

/// A finished causal map, with each region's drop (log-probability, base - knocked out).
#[derive(Clone, Debug)]
pub struct CausalView {
    pub map: CausalMap,
    pub regions: Vec<(String, f64)>,
    /// The VGRefine answer's causal map (cells knocked out on top of its knockout).
    pub refined: Option<CausalMap>,
    pub ms: f64,
}

/// Knock out the last question's image tokens in the order of `map` (most attended first).
pub struct FaithfulnessAsk {
    pub prompt: crate::model::TokenisedPrompt,
    pub map: Vec<f32>,
    /// What the map is (the shown overlay's label).
    pub order: String,
    pub layers: Vec<usize>,
}

/// One question about one image.
pub struct Ask {
    /// Identifies the pixels (path, frame, window): the session is reused while it is equal.
    pub image_key: String,
    pub image: Arc<image::RgbImage>,
    pub question: String,
    pub settings: Settings,
    /// "What if it looked here": also answer with every token outside these knocked out.
    pub look_here: Option<Vec<usize>>,
    /// Qwen-VL: (min_pixels, max_pixels) for this image, replacing the checkpoint's.
    pub pixel_limits: Option<(u64, u64)>,
    /// Also measure the faithfulness curve of the triage map (masked layers, 5% steps, 5
    /// random orders).
    pub faithfulness: bool,
}

/// Model facts the UI shows.
#[derive(Clone, Debug)]
pub struct ModelSummary {
    pub dir: PathBuf,
    pub arch: String,
    pub layers: usize,
    pub heads: usize,
    /// The token grid when fixed (LLaVA); `None` when it follows each image (Qwen-VL).
    pub grid: Option<(usize, usize)>,
    /// Qwen-VL: the checkpoint's (min_pixels, max_pixels) and the pixels per token side.
    pub pixel_limits: Option<(u64, u64)>,
    pub token_side_px: u32,
    pub default_heads: Vec<(usize, usize)>,
    pub default_masked_layers: Vec<usize>,
    pub load_ms: f64,
    pub quantize: Quantize,
    /// What fell back to another precision while loading.
    pub load_notes: Vec<String>,
    /// Bytes of the language model's weights as kept (linear layers and head, embeddings).
    pub weight_bytes: usize,
}

/// A finished question.
pub struct CaseResult {
    pub question: String,
    pub image_key: String,
    pub outcome: Outcome,
    pub grid: TokenGrid,
    pub settings: Settings,
    pub look_here: Option<Answer>,
    pub reused_session: bool,
    pub total_ms: f64,
    /// Words of the question the model's vocabulary lacks (read as `<unk>`).
    pub unknown_words: Vec<String>,
    pub faithfulness: Option<Curve>,
    /// The causal map, when asked for after the answer.
    pub causal: Option<CausalView>,
}

/// What the worker reports.
pub enum Event {
    /// Loading `what`: `done` of `total` parts.
    Loading {
        dir: PathBuf,
        what: String,
        done: usize,
        total: usize,
    },
    ModelLoaded(ModelSummary),
    /// The load failed or was cancelled: no model is loaded now.
    LoadFailed(String),
    /// The stage about to run (`vision` first when the image is new).
    Stage(&'static str),
    Finished(Box<CaseResult>),
    /// A faithfulness curve asked for after the answer.
    Faithfulness(Box<Curve>),
    /// Knockout passes of a causal map done so far.
    Progress {
        done: usize,
        total: usize,
    },
    /// A causal map asked for after the answer.
    Causal(Box<CausalView>),
    Failed(String),
}

/// The UI's handle on the worker thread.
pub struct Worker {
    requests: SyncSender<Request>,
    pub events: Receiver<Event>,
    pub cancel: Arc<AtomicBool>,
    pub busy: bool,
    wake: Arc<dyn Fn() + Send + Sync>,
}

impl Worker {
    /// Start the thread; `wake` is called after each event (the app passes a repaint request).
    pub fn spawn(wake: impl Fn() + Send + Sync + 'static) -> std::io::Result<Self> {
        let (request_tx, request_rx) = std::sync::mpsc::sync_channel::<Request>(4);
        let (event_tx, event_rx) = std::sync::mpsc::sync_channel::<Event>(64);
        let cancel = Arc::new(AtomicBool::new(false));
        let thread_cancel = cancel.clone();
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(wake);
        let thread_wake = wake.clone();
        std::thread::Builder::new()
            .name("fovea-inference".into())
            .spawn(move || {
                run(request_rx, event_tx, thread_cancel, move || thread_wake());
            })?;
        Ok(Worker {
            requests: request_tx,
            events: event_rx,
            cancel,
            busy: false,
            wake,
        })
    }

    /// What wakes the UI (a repaint request), for other background threads to call.
    pub fn repaint_handle(&self) -> Arc<dyn Fn() + Send + Sync> {
        self.wake.clone()
    }

    /// Queue a request; refused (returns false) when the queue is full.
    pub fn send(&mut self, request: Request) -> bool {
        self.cancel.store(false, Ordering::SeqCst);
        match self.requests.try_send(request) {
            Ok(()) => {
                self.busy = true;
                true
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }
}

fn run(
    requests: Receiver<Request>,
    events: SyncSender<Event>,
    cancel: Arc<AtomicBool>,
    wake: impl Fn() + Send + Sync + 'static,
) {
    let wake = Arc::new(wake);
    let emit = |event: Event| {
        // The UI drains events every frame; a full queue only drops stage updates.
        let _ = events.send(event);
        wake();
    };
    let mut next = requests.recv().ok();
    while let Some(request) = next.take() {
        let Request::LoadModel {
            dir,
            vision_tower,
            quantize,
        } = request
        else {
            emit(Event::Failed("no model is loaded".into()));
            next = requests.recv().ok();
            continue;
        };
        let started = Instant::now();
        emit(Event::Stage("loading model"));
        let progress = {
            let (cancel, events, wake, dir) =
                (cancel.clone(), events.clone(), wake.clone(), dir.clone());
            LoadProgress(Arc::new(move |what: &str, done, total| {
                // Never block a load on a busy UI: a full queue drops a progress update.
                let _ = events.try_send(Event::Loading {
                    dir: dir.clone(),
                    what: what.to_string(),
                    done,
                    total,
                });
                wake();
                !cancel.load(Ordering::SeqCst)
            }))
        };
        let loaded = crate::model::device::from_env().and_then(|device| {
            Model::load_with_progress(
                &dir,
                vision_tower.as_deref(),
                &device,
                quantize,
                Some(progress),
            )
        });
        let model = match loaded {
            Ok(model) => model,
            Err(err) => {
                emit(Event::LoadFailed(format!("{err:#}")));
                next = requests.recv().ok();
                continue;
            }
        };
        let defaults = crate::case::model_defaults(&model)
            .ok()
            .flatten()
            .unwrap_or_default();
        let cfg = &model.checkpoint.text;
        emit(Event::ModelLoaded(ModelSummary {
            dir: dir.clone(),
            arch: model.checkpoint.arch.clone(),
            layers: cfg.num_hidden_layers,
            heads: cfg.num_attention_heads,
            grid: model.fixed_grid(),
            pixel_limits: model.pixel_limits(),
            token_side_px: model.token_side_px(),
            default_heads: defaults.heads.iter().map(|&[l, h]| (l, h)).collect(),
            default_masked_layers: defaults.masked_layers.clone(),
            load_ms: started.elapsed().as_secs_f64() * 1e3,
            quantize: model.quantize,
            load_notes: model.load_notes.clone(),
            weight_bytes: {
                let (linear, embeddings) = model.decoder.weight_bytes();
                linear + embeddings
            },
        }));
        let mut session: Option<(String, ImageSession)> = None;
        // Serve questions until another model is requested or the UI goes away.
        loop {
            let Ok(request) = requests.recv() else { return };
            let ask = match request {
                Request::LoadModel { .. } => {
                    next = Some(request);
                    break;
                }
                Request::Ask(ask) => ask,
                Request::Faithfulness(wanted) => {
                    let Some((_, current)) = session.as_mut() else {
                        emit(Event::Failed("ask a question first".into()));
                        continue;
                    };
                    emit(Event::Stage("faithfulness"));
                    let settings = CurveSettings {
                        layers: wanted.layers.clone(),
                        ..CurveSettings::default()
                    };
                    match faithfulness::curve(
                        current,
                        &wanted.prompt,
                        &wanted.map,
                        &wanted.order,
                        &settings,
                    ) {
                        Ok(curve) => emit(Event::Faithfulness(Box::new(curve))),
                        Err(err) => emit(Event::Failed(format!("{err:#}"))),
                    }
                    continue;
                }
                Request::Causal(wanted) => {
                    let Some((_, current)) = session.as_mut() else {
                        emit(Event::Failed("ask a question first".into()));
                        continue;
                    };
                    emit(Event::Stage("causal map"));
                    let (events, wake, cancel) = (events.clone(), wake.clone(), cancel.clone());
                    let mut progress = move |done: usize, total: usize| {
                        let _ = events.try_send(Event::Progress { done, total });
                        wake();
                        !cancel.load(Ordering::SeqCst)
                    };
                    match causal_view(current, &wanted, &mut progress) {
                        Ok(view) => emit(Event::Causal(Box::new(view))),
                        Err(err) => emit(Event::Failed(format!("{err:#}"))),
                    }
                    continue;
                }
            };
            let started = Instant::now();
            let key = format!("{} {:?}", ask.image_key, ask.pixel_limits);
            let reused = session.as_ref().is_some_and(|(k, _)| *k == key);
            if !reused {
                emit(Event::Stage("vision"));
                match ImageSession::new_with(&model, &ask.image, ask.pixel_limits) {
                    Ok(new_session) => session = Some((key, new_session)),
                    Err(err) => {
                        emit(Event::Failed(format!("{err:#}")));
                        continue;
                    }
                }
            }
            let Some((_, current)) = session.as_mut() else {
                continue;
            };
            let outcome = refine::run_with_progress(
                current,
                &ask.question,
                &ask.settings,
                &mut |stage: Stage| {
                    emit(Event::Stage(stage.name()));
                    !cancel.load(Ordering::SeqCst)
                },
            );
            let outcome = match outcome {
                Ok(outcome) => outcome,
                Err(err) => {
                    emit(Event::Failed(format!("{err:#}")));
                    continue;
                }
            };
            let look_here = match &ask.look_here {
                Some(inside) if !cancel.load(Ordering::SeqCst) => {
                    emit(Event::Stage("look here"));
                    let tokens = current.num_image_tokens();
                    let outside: Vec<usize> = (0..tokens).filter(|t| !inside.contains(t)).collect();
                    let edges = EdgeMask {
                        layers: ask.settings.masked_layers.clone(),
                        queries_from: outcome.prompt.image_span.end,
                        blocked_keys: crate::model::image_key_positions(
                            &outcome.prompt.image_span,
                            &outside,
                        ),
                        and: None,
                    };
                    let options = RunOptions {
                        max_new_tokens: ask.settings.max_new_tokens,
                        knockout: Some(edges),
                        ..RunOptions::default()
                    };
                    current.run(&outcome.prompt, &options).ok()
                }
                _ => None,
            };
            let faithfulness = match (&outcome.triage, ask.faithfulness) {
                (Some(triage), true) if !cancel.load(Ordering::SeqCst) => {
                    emit(Event::Stage("faithfulness"));
                    let settings = CurveSettings {
                        layers: ask.settings.masked_layers.clone(),
                        ..CurveSettings::default()
                    };
                    faithfulness::curve(
                        current,
                        &outcome.prompt,
                        &triage.score_map,
                        "triage_map",
                        &settings,
                    )
                    .ok()
                }
                _ => None,
            };
            let (rows, cols) = current.grid;
            let mapping = current.mapping;
            emit(Event::Finished(Box::new(CaseResult {
                question: ask.question.clone(),
                image_key: ask.image_key.clone(),
                outcome,
                grid: TokenGrid {
                    rows,
                    cols,
                    mapping,
                },
                settings: ask.settings.clone(),
                look_here,
                reused_session: reused,
                total_ms: started.elapsed().as_secs_f64() * 1e3,
                unknown_words: current.model.unknown_words(&ask.question),
                faithfulness,
                causal: None,
            })));
        }
    }
}

/// The causal map of `wanted` and its regions' drops, on the session's cached prefix.
fn causal_view(
    session: &mut ImageSession,
    wanted: &CausalAsk,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> anyhow::Result<CausalView> {
    let started = Instant::now();
    let mut map = causal::map_with(
        session,
        &wanted.prompt,
        wanted.cells,
        &wanted.layers,
        None,
        wanted.target.clone(),
        wanted.base_logprob,
        progress,
    )?;
    if let Some((name, shown)) = &wanted.shown {
        map.agreement = Some(causal::agreement(shown, &map.cell_tokens, &map.drop, name));
    }
    let tokens: Vec<Vec<usize>> = wanted.regions.iter().map(|(_, t)| t.clone()).collect();
    let logprobs = causal::logprobs_with_progress(
        session,
        &wanted.prompt,
        &tokens,
        &wanted.layers,
        None,
        map.target.id,
        progress,
    )?;
    let regions = wanted
        .regions
        .iter()
        .zip(logprobs)
        .map(|((name, _), logprob)| (name.clone(), wanted.base_logprob - logprob))
        .collect();
    let refined = match &wanted.refined {
        Some((target, base, edges)) => Some(causal::map_with(
            session,
            &wanted.prompt,
            wanted.cells,
            &wanted.layers,
            Some(edges),
            target.clone(),
            *base,
            progress,
        )?),
        None => None,
    };
    Ok(CausalView {
        map,
        regions,
        refined,
        ms: started.elapsed().as_secs_f64() * 1e3,
    })
}

//! The desktop app driven as a user would, headless: egui_kittest runs the real `FoveaApp`
//! (worker thread, wgpu overlay pipeline on Mesa's lavapipe) and presses its buttons through
//! accesskit. Asserts on state and on the files the exports write.

use std::path::PathBuf;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use fovea::app::{FileDialog, FoveaApp, OverlayLayer, Tool};
use fovea::demo::ct_series::{self, CtSeries};
use fovea::imaging::scan::ScanProgress;
use fovea::model::linear::Quantize;

/// The app tests draw with lavapipe on every core: run them one at a time, so the frame-time
/// test measures the app and not its neighbours (two cores shared by four rendering tests
/// stalled a frame for 362 ms).
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llava")
}

/// Hands out prepared paths instead of showing a native dialog.
struct TestDialog {
    saves: Arc<Mutex<Vec<PathBuf>>>,
    out_dir: PathBuf,
}

impl FileDialog for TestDialog {
    fn open_image(&mut self) -> Option<PathBuf> {
        Some(fixtures().join("test_image.png"))
    }
    fn save_file(&mut self, suggested_name: &str) -> Option<PathBuf> {
        let path = self.out_dir.join(suggested_name);
        self.saves.lock().unwrap().push(path.clone());
        Some(path)
    }
    fn open_folder(&mut self) -> Option<PathBuf> {
        Some(fixtures().join("llava-qwen2-nested"))
    }
}

fn harness(
    out_dir: &std::path::Path,
    saves: Arc<Mutex<Vec<PathBuf>>>,
) -> Harness<'static, FoveaApp> {
    harness_with(out_dir, saves, fixtures().join("huatuo-qwen2-original"))
}

fn harness_with(
    out_dir: &std::path::Path,
    saves: Arc<Mutex<Vec<PathBuf>>>,
    model: PathBuf,
) -> Harness<'static, FoveaApp> {
    let out = out_dir.to_path_buf();
    Harness::builder()
        .with_size(egui::Vec2::new(1400.0, 900.0))
        .wgpu()
        .build_eframe(move |cc| {
            let dialog = TestDialog {
                saves,
                out_dir: out.clone(),
            };
            let mut app = FoveaApp::new(cc, model.clone(), None, Box::new(dialog));
            // Start empty: no bundled demo case is listed or opened, the test opens its own
            // image (the snapshots must not depend on assets/).
            app.commands.clear();
            app.cases.clear();
            app.sessions_dir = out.join("sessions");
            app
        })
}

/// Step frames until `done` holds (the worker runs on its own thread).
fn run_until(harness: &mut Harness<FoveaApp>, what: &str, done: impl Fn(&FoveaApp) -> bool) {
    let started = Instant::now();
    while !done(harness.state()) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}: {}",
            harness.state().status
        );
        std::thread::sleep(Duration::from_millis(20));
        harness.step();
    }
    harness.step();
}

/// The bundled demo model with `case` open and `question` asked (`set` adjusts the app first),
/// stepped until the answer is in.
fn ask_demo_case(
    dir: &std::path::Path,
    case: &fovea::demo::Case,
    question: &str,
    set: impl FnOnce(&mut FoveaApp),
) -> Harness<'static, FoveaApp> {
    let path = dir.join("phantom.png");
    case.image.save(&path).unwrap();
    let mut harness = harness_with(
        dir,
        Arc::new(Mutex::new(Vec::new())),
        fovea::demo::demo_model_dir(),
    );
    run_until(&mut harness, "the model", |app| app.model.is_some());
    {
        let app = harness.state_mut();
        app.commands.push(fovea::app::Command::Open(path));
        app.question = question.to_string();
        set(app);
    }
    run_until(&mut harness, "the image", |app| app.image.is_some());
    harness.get_by_label("Ask").click();
    run_until(&mut harness, "the answer", |app| {
        app.result.is_some() && !app.worker.busy
    });
    harness
}

#[test]
fn ask_draw_and_export_like_a_user() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let saves = Arc::new(Mutex::new(Vec::new()));
    let mut harness = harness(dir.path(), saves.clone());
    run_until(&mut harness, "the model", |app| app.model.is_some());

    // Open through the menu (the test dialog picks the fixture image).
    harness.get_by_label("Open…").click();
    run_until(&mut harness, "the image", |app| app.image.is_some());
    assert_eq!(harness.state().image.as_ref().unwrap().study.width, 40);

    // The tiny fixture model has no published heads: type them as a user would.
    harness.state_mut().heads_text = "1:0,2:3,0:1".into();
    harness.state_mut().masked_text = "1".into();
    harness.get_by_label("Question").click();
    harness.step();
    harness
        .get_by_label("Question")
        .type_text("what abnormality is seen in the left lung ?");
    harness.step();
    assert_eq!(
        harness.state().question,
        "what abnormality is seen in the left lung ?"
    );
    harness.get_by_label("Ask").click();
    run_until(&mut harness, "the answer", |app| app.result.is_some());
    let first_ms = harness.state().result.as_ref().unwrap().total_ms;
    assert!(!harness.state().result.as_ref().unwrap().reused_session);
    harness.get_by_label("VGRefine");

    // A second question on the same image reuses the cached prefix.
    harness.get_by_label("Ask").click();
    run_until(&mut harness, "the second question to start", |app| {
        app.worker.busy
    });
    run_until(&mut harness, "the second answer", |app| !app.worker.busy);
    let second = harness.state().result.as_ref().unwrap();
    assert!(
        second.reused_session,
        "the second question should reuse the image session"
    );
    eprintln!(
        "first question {first_ms:.1} ms, second {:.1} ms",
        second.total_ms
    );

    // Switch overlays through the state the combo box sets.
    for layer in [
        OverlayLayer::Before,
        OverlayLayer::After,
        OverlayLayer::Head { layer: 1, head: 2 },
        OverlayLayer::Triage,
    ] {
        harness.state_mut().layer = layer;
        harness.step();
    }

    // Draw a box: pick the tool, drag across the viewport.
    harness.get_by_label("Box").click();
    harness.step();
    assert_eq!(harness.state().tool, Tool::Box);
    let start = egui::pos2(600.0, 350.0);
    let end = egui::pos2(720.0, 470.0);
    let events = [
        egui::Event::PointerMoved(start),
        egui::Event::PointerButton {
            pos: start,
            button: egui::PointerButton::Primary,
            pressed: true,
            modifiers: Default::default(),
        },
        // Along the top edge first: egui recognises the drag there, far from the press.
        egui::Event::PointerMoved(egui::pos2(700.0, 350.0)),
        egui::Event::PointerMoved(end),
        egui::Event::PointerButton {
            pos: end,
            button: egui::PointerButton::Primary,
            pressed: false,
            modifiers: Default::default(),
        },
    ];
    for event in events {
        harness.input_mut().events.push(event);
        harness.step();
    }
    harness.step();
    assert_eq!(
        harness.state().regions.len(),
        1,
        "the drag should have drawn one box"
    );
    // The box spans the whole 120 x 120 px drag from the press (square pixels on screen):
    // had it started where the drag was recognised, it would be 20 x 120.
    let fovea::grounding::region::Region::Box { xyxy_px } = harness.state().regions[0].region
    else {
        panic!("a box");
    };
    let aspect = (xyxy_px[2] - xyxy_px[0]) / (xyxy_px[3] - xyxy_px[1]);
    assert!((aspect - 1.0).abs() < 0.05, "box {xyxy_px:?}");
    let tokens = harness.state().region_tokens().unwrap();
    assert!(!tokens.is_empty(), "the box covers image tokens");
    harness.get_by_label("attention ratio");

    // Exports: record, PNG, regions.
    for item in [
        "Export record (JSON)",
        "Export PNG",
        "Export regions (COCO JSON)",
    ] {
        harness.get_by_label("Export").click();
        for _ in 0..3 {
            harness.step();
        }
        harness.get_by_label(item).click();
        harness.step();
        harness.step();
    }
    let saved = saves.lock().unwrap().clone();
    assert_eq!(saved.len(), 3, "{saved:?}");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&saved[0]).unwrap()).unwrap();
    for field in [
        "answer",
        "refined",
        "attention",
        "triage",
        "knockout",
        "regions",
        "metrics",
        "input_ids",
        "image_span",
    ] {
        assert!(record.get(field).is_some(), "exported record lacks {field}");
    }
    assert!(record["metrics"]["per_layer"]["ratio"]
        .as_array()
        .is_some_and(|a| a.len() == 3));
    // The 40 x 28 image with the overlay, then (8 px on) the colour bar of the shown map: the
    // colormap's maximum at its top, its minimum at its bottom.
    let png = image::open(&saved[1]).unwrap().to_rgb8();
    assert_eq!(png.height(), 28);
    assert!(png.width() > 48 + 10, "{}", png.width());
    let colour = |t: f32| {
        harness
            .state()
            .persisted
            .colormap
            .color(t)
            .map(|c| (c * 255.0).round() as u8)
    };
    assert_eq!(png.get_pixel(49, 0).0, colour(1.0));
    assert_eq!(png.get_pixel(49, 27).0, colour(0.0));
    let coco: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&saved[2]).unwrap()).unwrap();
    assert_eq!(coco["annotations"].as_array().unwrap().len(), 1);

    // The session was saved and comes back when the image is reopened.
    std::thread::sleep(Duration::from_millis(600));
    harness.step();
    harness.state_mut().regions.clear();
    harness.get_by_label("Open…").click();
    run_until(&mut harness, "the reopened image", |app| {
        !app.regions.is_empty()
    });

    // The wgpu overlay renders (lavapipe in CI).
    let rendered = harness.render().expect("wgpu renders the app");
    assert_eq!(rendered.width(), 1400);
    if std::env::var_os("FOVEA_WRITE_SCREENSHOTS").is_some() {
        rendered.save(dir.path().join("app.png")).unwrap();
    }
}

/// The viewport with overlays, rendered through fovea's wgpu pipeline on lavapipe and compared
/// with committed snapshots (tests/snapshots; `UPDATE_SNAPSHOTS=1` rewrites them).
/// Choose a Model menu item as a user would.
fn model_menu(harness: &mut Harness<FoveaApp>, item: &str) {
    harness.get_by_label("Model").click();
    for _ in 0..3 {
        harness.step();
    }
    harness.get_by_label(item).click();
    // One frame records the click, the next applies it.
    harness.step();
    harness.step();
}

/// Model, Open model folder… loads another checkpoint without restarting, a precision change
/// reloads it quantized, the recent list remembers both, and a question runs on each.
#[test]
fn open_another_model_switch_precision_and_go_back() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut harness = harness(dir.path(), Arc::new(Mutex::new(Vec::new())));
    run_until(&mut harness, "the first model", |app| app.model.is_some());
    let first = fixtures().join("huatuo-qwen2-original");
    assert_eq!(harness.state().model.as_ref().unwrap().dir, first);
    harness.get_by_label("Open…").click();
    run_until(&mut harness, "the image", |app| app.image.is_some());

    // Another checkpoint through the folder dialog (the test dialog picks llava-qwen2-nested).
    model_menu(&mut harness, "Open model folder…");
    assert!(
        harness.state().model.is_none(),
        "the old model is let go while loading"
    );
    run_until(&mut harness, "the second model", |app| app.model.is_some());
    let second = fixtures().join("llava-qwen2-nested");
    let model = harness.state().model.clone().unwrap();
    assert_eq!(model.dir, second);
    assert_eq!(model.quantize, Quantize::None);
    assert_eq!(
        harness.state().persisted.recent_models,
        vec![second.clone(), first.clone()]
    );

    // q8_0: the same model reloaded quantized; its weights take less memory.
    model_menu(&mut harness, "q8_0");
    run_until(&mut harness, "the q8_0 model", |app| {
        app.model
            .as_ref()
            .is_some_and(|m| m.quantize == Quantize::Q8_0)
    });
    let quantized = harness.state().model.clone().unwrap();
    assert_eq!(quantized.dir, second);
    assert!(
        quantized.weight_bytes < model.weight_bytes,
        "q8_0 {} bytes vs f32 {}",
        quantized.weight_bytes,
        model.weight_bytes
    );
    harness.state_mut().heads_text = "1:0,2:3".into();
    harness.state_mut().masked_text = "1".into();
    harness.state_mut().question = "what abnormality is seen in the left lung ?".into();
    harness.get_by_label("Ask").click();
    run_until(&mut harness, "the q8_0 answer", |app| {
        app.result.is_some() && !app.worker.busy
    });

    // Back to the first through Recent models, at stored precision again.
    model_menu(&mut harness, "stored precision");
    run_until(&mut harness, "the stored-precision reload", |app| {
        app.model
            .as_ref()
            .is_some_and(|m| m.quantize == Quantize::None)
    });
    model_menu(&mut harness, &first.display().to_string());
    run_until(&mut harness, "the first model again", |app| {
        app.model.as_ref().is_some_and(|m| m.dir == first)
    });
    assert!(
        harness.state().result.is_none(),
        "answers of another model are cleared"
    );
}

/// A folder that is not a checkpoint: one clear message, no model, and the app still works.
#[test]
fn a_folder_that_is_not_a_model_is_refused_clearly() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut harness = harness(dir.path(), Arc::new(Mutex::new(Vec::new())));
    run_until(&mut harness, "the first model", |app| app.model.is_some());
    let not_a_model = dir.path().join("empty");
    std::fs::create_dir_all(&not_a_model).unwrap();
    harness
        .state_mut()
        .commands
        .push(fovea::app::Command::LoadModel(not_a_model.clone()));
    harness.step();
    assert!(harness.state().loading.is_some());
    run_until(&mut harness, "the refusal", |app| app.loading.is_none());
    let status = harness.state().status.clone();
    assert!(status.starts_with("no model loaded:"), "{status}");
    assert!(status.contains("empty"), "names the folder: {status}");
    assert!(harness.state().model.is_none());
    // The demo-free recent list does not gain the failed folder.
    assert!(!harness
        .state()
        .persisted
        .recent_models
        .contains(&not_a_model));
}

#[test]
fn overlay_snapshots() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut harness = harness(dir.path(), Arc::new(Mutex::new(Vec::new())));
    run_until(&mut harness, "the model", |app| app.model.is_some());
    {
        let app = harness.state_mut();
        app.commands
            .push(fovea::app::Command::Open(fixtures().join("test_image.png")));
        app.heads_text = "1:0,2:3,0:1".into();
        app.masked_text = "1".into();
        app.question = "what abnormality is seen in the left lung ?".into();
    }
    run_until(&mut harness, "the image", |app| app.image.is_some());
    harness.state_mut().commands.push(fovea::app::Command::Ask);
    run_until(&mut harness, "the answer", |app| {
        app.result.is_some() && !app.worker.busy
    });
    {
        let app = harness.state_mut();
        app.regions.push(fovea::app::NamedRegion {
            name: "lesion".into(),
            region: fovea::grounding::region::Region::Box {
                xyxy_px: [5.0, 5.0, 20.0, 20.0],
            },
            role: fovea::app::RegionRole::Target,
        });
        app.session_dirty = None;
    }
    let options = egui_kittest::SnapshotOptions::new()
        .threshold(1.0)
        .max_failed_pixels(40);
    for (name, layer, side_by_side) in [
        ("overlay_triage", OverlayLayer::Triage, false),
        (
            "overlay_head",
            OverlayLayer::Head { layer: 2, head: 3 },
            false,
        ),
        ("overlay_before_after", OverlayLayer::Triage, true),
    ] {
        {
            let app = harness.state_mut();
            app.layer = layer;
            app.side_by_side = side_by_side;
            app.status.clear();
        }
        for _ in 0..3 {
            harness.step();
        }
        harness.snapshot_options(name, &options);
    }
}

/// The app on `model` (a Qwen-VL fixture): open the 800 x 350 palette DICOM, ask, wait for
/// the answer.
fn qwen_case_on_the_palette_dicom(
    dir: &std::path::Path,
    model: &str,
    heads: &str,
) -> Harness<'static, FoveaApp> {
    case_on_the_palette_dicom(dir, model, heads, None)
}

/// The 800 x 350 palette DICOM asked about with `model` (whose fixed grid, if any, is `grid`).
fn case_on_the_palette_dicom(
    dir: &std::path::Path,
    model: &str,
    heads: &str,
    grid: Option<(usize, usize)>,
) -> Harness<'static, FoveaApp> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut harness = harness_with(dir, Arc::new(Mutex::new(Vec::new())), root.join(model));
    run_until(&mut harness, "the model", |app| app.model.is_some());
    assert_eq!(harness.state().model.as_ref().unwrap().grid, grid);
    {
        let app = harness.state_mut();
        app.commands.push(fovea::app::Command::Open(
            root.join("tests/fixtures/dicom/examples_palette.dcm"),
        ));
        app.heads_text = heads.into();
        app.masked_text = "1".into();
        app.question = "what abnormality is seen in the left lung ?".into();
    }
    run_until(&mut harness, "the image", |app| app.image.is_some());
    let study = &harness.state().image.as_ref().unwrap().study;
    assert_eq!((study.width, study.height), (800, 350));
    harness.state_mut().commands.push(fovea::app::Command::Ask);
    run_until(&mut harness, "the answer", |app| {
        app.result.is_some() && !app.worker.busy
    });
    harness
}

/// Tokens a box in original pixels covers, by hand: input = original x (input / original), cells
/// of `cell` px, floor of the min .. ceil of the max; also the (cols, rows) ranges.
fn box_tokens_by_hand(
    xyxy_px: [f64; 4],
    scale: (f64, f64),
    cell: f64,
    grid_cols: usize,
) -> (std::ops::Range<usize>, std::ops::Range<usize>, Vec<usize>) {
    let (sx, sy) = scale;
    let cols = ((xyxy_px[0] * sx / cell) as usize)..((xyxy_px[2] * sx / cell).ceil() as usize);
    let rows = ((xyxy_px[1] * sy / cell) as usize)..((xyxy_px[3] * sy / cell).ceil() as usize);
    let tokens = rows
        .clone()
        .flat_map(|r| cols.clone().map(move |c| r * grid_cols + c))
        .collect();
    (cols, rows, tokens)
}

/// A Qwen2.5-VL checkpoint on a non-square DICOM (800 x 350 ultrasound): the token grid follows
/// the image (smart_resize to 252 x 112 px: 4 x 9 tokens), the overlay lies on the image (a
/// committed snapshot), and a hand-drawn region covers the tokens its pixels map to.
#[test]
fn qwen_overlay_on_a_non_square_dicom() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut harness = qwen_case_on_the_palette_dicom(
        dir.path(),
        "tests/fixtures/qwen_vl/qwen2_5_vl-flat",
        "1:0,2:3,0:1",
    );
    let grid = harness.state().result.as_ref().unwrap().grid;
    assert_eq!((grid.rows, grid.cols), (4, 9));
    assert_eq!(grid.mapping.input, [252, 112]);
    // A box over the upper left of the image, in original pixels; by hand: input = original x
    // (252 / 800, 112 / 350); cells of 28 px; floor .. ceil.
    let (cols, rows) = box_region_then_snapshot(
        &mut harness,
        (252.0 / 800.0, 112.0 / 350.0),
        28.0,
        9,
        "overlay_qwen_non_square",
    );
    assert_eq!((cols, rows), (0..4, 0..2));
}

/// Draw a box over the upper left of the 800 x 350 image, check the tokens it covers against
/// the by-hand computation (`scale` original -> input, `cell` px tokens, `grid_cols`), show the
/// triage map and compare the window with the committed snapshot `name`; returns the box's
/// (cols, rows).
fn box_region_then_snapshot(
    harness: &mut Harness<'static, FoveaApp>,
    scale: (f64, f64),
    cell: f64,
    grid_cols: usize,
    name: &str,
) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
    let xyxy_px = [40.0, 30.0, 300.0, 150.0];
    {
        let app = harness.state_mut();
        app.regions.push(fovea::app::NamedRegion {
            name: "lesion".into(),
            region: fovea::grounding::region::Region::Box { xyxy_px },
            role: fovea::app::RegionRole::Target,
        });
        app.session_dirty = None;
    }
    let (cols, rows, expected) = box_tokens_by_hand(xyxy_px, scale, cell, grid_cols);
    assert_eq!(harness.state().region_tokens().unwrap(), expected);
    {
        let app = harness.state_mut();
        app.layer = OverlayLayer::Triage;
        app.status.clear();
    }
    for _ in 0..3 {
        harness.step();
    }
    let options = egui_kittest::SnapshotOptions::new()
        .threshold(1.0)
        .max_failed_pixels(40);
    harness.snapshot_options(name, &options);
    (cols, rows)
}

/// A Qwen3-VL checkpoint (DeepStack) in the app on the same 800 x 350 DICOM: 32 px tokens,
/// smart_resize under the fixture's 40,960-pixel budget to 288 x 128 px (4 x 9 tokens), a
/// region's tokens through that resize.
#[test]
fn qwen3_vl_case_in_the_app() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut harness =
        qwen_case_on_the_palette_dicom(dir.path(), "tests/fixtures/qwen3_vl/qwen3_vl", "1:0,2:3");
    let grid = harness.state().result.as_ref().unwrap().grid;
    assert_eq!((grid.rows, grid.cols), (4, 9));
    assert_eq!(grid.mapping.input, [288, 128]);
    let xyxy_px = [40.0, 30.0, 300.0, 150.0];
    harness.state_mut().regions.push(fovea::app::NamedRegion {
        name: "lesion".into(),
        region: fovea::grounding::region::Region::Box { xyxy_px },
        role: fovea::app::RegionRole::Target,
    });
    // By hand: input = original x (288 / 800, 128 / 350); cells of 32 px; floor .. ceil.
    let (cols, rows, expected) =
        box_tokens_by_hand(xyxy_px, (288.0 / 800.0, 128.0 / 350.0), 32.0, 9);
    assert_eq!((cols, rows), (0..4, 0..2));
    assert_eq!(harness.state().region_tokens().unwrap(), expected);
}

/// A Gemma 3 checkpoint (MedGemma's family) on the same 800 x 350 DICOM: the image is resized
/// to the square 112 x 112 px input whatever its aspect ratio (as Gemma 3's processor does), so
/// each of the 4 x 4 tokens covers 28 x 28 input px = 200 x 87.5 original px; the overlay
/// stretches back over the whole image (a committed snapshot), and a region's tokens follow.
#[test]
fn gemma3_overlay_on_a_non_square_dicom() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut harness = case_on_the_palette_dicom(
        dir.path(),
        "tests/fixtures/gemma3/gemma3-hub",
        "1:0,2:3,3:1",
        Some((4, 4)),
    );
    let grid = harness.state().result.as_ref().unwrap().grid;
    assert_eq!((grid.rows, grid.cols), (4, 4));
    assert_eq!(grid.mapping.input, [112, 112]);
    // By hand: input = original x (112 / 800, 112 / 350); cells of 28 px; floor .. ceil.
    let (cols, rows) = box_region_then_snapshot(
        &mut harness,
        (112.0 / 800.0, 112.0 / 350.0),
        28.0,
        4,
        "overlay_gemma3_non_square",
    );
    assert_eq!((cols, rows), (0..2, 0..2));
}

/// A 12-token answer on the bundled demo model: the Answers panel lists 12 clickable tokens
/// per answer; each token's map is the attention of the query that produced it (they differ
/// from token to token); clicking one shows it in the viewport and the head explorer (a
/// committed snapshot with token 6 chosen, and the faithfulness curve asked for with the
/// answer); "whole answer" averages them.
#[test]
fn answer_tokens_are_clickable_and_show_their_maps() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let case = fovea::demo::generate(9_800_300, &fovea::demo::Recipe::default());
    let question = case.questions()[0].question.clone();
    let mut harness = ask_demo_case(dir.path(), &case, &question, |app| {
        app.max_new_tokens = 12;
        app.stop_at_eos = false;
        app.faithfulness = true;
    });
    let result = harness.state().result.as_ref().unwrap();
    // The faithfulness curve came with the answer: 21 fractions, starting at the first answer
    // token's plain probability.
    let curve = result.faithfulness.as_ref().expect("a faithfulness curve");
    assert_eq!(curve.fractions.len(), 21);
    let logits = &result.outcome.original.first_token_logits;
    let plain = fovea::grounding::faithfulness::probability(logits, curve.token_id as usize);
    // The curve's passes run 16 to a batch, the answer with the general prompt: the same sums
    // over other rows, so equal up to f32 rounding (as tests/faithfulness.rs bounds it).
    eprintln!("fraction 0: {} vs plain {plain}", curve.prob[0]);
    assert!((curve.prob[0] - plain).abs() < 1e-6);
    let outcome = &result.outcome;
    assert_eq!(outcome.original.ids.len(), 12);
    assert_eq!(outcome.original.token_texts.len(), 12);
    assert_eq!(outcome.original.token_attention.len(), 12);
    // Each token's map is a distribution over the image per head (mass <= 1), and the maps
    // of the first token and of token 6 are not the same map.
    let maps = &outcome.original.token_attention;
    let n = 144;
    for token in maps {
        for layer in token {
            for head in layer.chunks(n) {
                let mass: f32 = head.iter().sum();
                assert!((0.0..=1.0 + 1e-4).contains(&mass), "mass {mass}");
            }
        }
    }
    let difference = maps[0]
        .iter()
        .flatten()
        .zip(maps[6].iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(
        difference > 1e-3,
        "token 0 and 6 maps differ by {difference}"
    );
    // The faithfulness of another map on the same question: head 1:2, every layer.
    {
        let app = harness.state_mut();
        app.layer = OverlayLayer::Head { layer: 1, head: 2 };
        app.faithfulness_all_layers = true;
    }
    harness
        .get_by_label("Faithfulness of the shown map")
        .click();
    run_until(&mut harness, "the curve of head 1:2", |app| {
        app.result
            .as_ref()
            .and_then(|r| r.faithfulness.as_ref())
            .is_some_and(|c| c.order == "head 1:2")
    });
    let result = harness.state().result.as_ref().unwrap();
    let curve = result.faithfulness.as_ref().unwrap();
    assert_eq!(curve.layers, vec![0, 1, 2, 3]);
    assert!((curve.prob[0] - plain).abs() < 1e-6);
    // Two answers, each with its "whole answer" view; click the original's.
    harness
        .get_all_by_label("whole answer")
        .next()
        .unwrap()
        .click();
    harness.step();
    assert_eq!(
        harness.state().answer_view,
        fovea::app::AnswerView::Whole { refined: false }
    );
    {
        let app = harness.state_mut();
        app.answer_view = fovea::app::AnswerView::Token {
            refined: false,
            index: 6,
        };
        app.layer = OverlayLayer::LayerMean { layer: 1 };
        app.status.clear();
    }
    let token6 = fovea::app::panels::heads::layer_values(
        harness.state(),
        OverlayLayer::LayerMean { layer: 1 },
    )
    .unwrap();
    harness.state_mut().answer_view = fovea::app::AnswerView::Question;
    let question = fovea::app::panels::heads::layer_values(
        harness.state(),
        OverlayLayer::LayerMean { layer: 1 },
    )
    .unwrap();
    assert_ne!(token6, question, "the viewport follows the chosen token");
    harness.state_mut().answer_view = fovea::app::AnswerView::Token {
        refined: false,
        index: 6,
    };
    for _ in 0..3 {
        harness.step();
    }
    let options = egui_kittest::SnapshotOptions::new()
        .threshold(1.0)
        .max_failed_pixels(40);
    harness.snapshot_options("answer_tokens_demo", &options);
}

/// A case that names its model: clicking it in the case list loads that model (replacing the one
/// loaded), opens the image and asks its question; the list shows its kind and model.
#[test]
fn a_case_loads_its_model_and_asks() {
    let _serial = one_at_a_time();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("cases");
    std::fs::create_dir_all(&cases).unwrap();
    std::fs::copy(
        root.join("tests/fixtures/qwen_vl/test_image.png"),
        cases.join("case.png"),
    )
    .unwrap();
    let gemma = root.join("tests/fixtures/gemma3/gemma3-hub");
    let row = serde_json::json!({
        "image": "case.png",
        "question": "what abnormality is seen in the left lung ?",
        "answer": "edema",
        "original_bboxes": [],
        "model": gemma,
        "kind": "teaching test",
    });
    std::fs::write(cases.join("cases.jsonl"), format!("{row}\n")).unwrap();
    let mut harness = harness(dir.path(), Arc::new(Mutex::new(Vec::new())));
    run_until(&mut harness, "the first model", |app| app.model.is_some());
    {
        let app = harness.state_mut();
        app.cases = fovea::demo::load_demo_cases(&cases.join("cases.jsonl"));
        app.heads_text = "1:0,3:1".into();
        app.masked_text = "1".into();
    }
    harness.step();
    harness
        .get_by_label("case.png - teaching test (gemma3-hub)")
        .click();
    run_until(&mut harness, "the case's answer", |app| {
        app.result.is_some() && !app.worker.busy
    });
    let app = harness.state();
    assert_eq!(app.model.as_ref().unwrap().arch, "gemma3");
    assert_eq!(
        app.result.as_ref().unwrap().question,
        "what abnormality is seen in the left lung ?"
    );
}

/// The app with the grounded demo model, after clicking the first bundled teaching case VGRefine
/// fixes and waiting for its answer (the case names the distracted model).
fn open_teaching_case(
    out_dir: &std::path::Path,
) -> (Harness<'static, FoveaApp>, fovea::demo::DemoCase) {
    let mut harness = harness_with(
        out_dir,
        Arc::new(Mutex::new(Vec::new())),
        fovea::demo::demo_model_dir(),
    );
    run_until(&mut harness, "the demo model", |app| app.model.is_some());
    let cases = fovea::demo::load_demo_cases(&fovea::demo::demo_cases_file());
    let index = cases
        .iter()
        .position(|c| {
            c.kind
                .as_deref()
                .is_some_and(|k| k.starts_with("misled by marker"))
        })
        .expect("a bundled teaching case");
    let case = cases[index].clone();
    harness.state_mut().cases = cases;
    harness
        .state_mut()
        .commands
        .push(fovea::app::Command::OpenCase(index));
    run_until(&mut harness, "the teaching case's answer", |app| {
        app.result.is_some() && !app.worker.busy && app.loading.is_none()
    });
    (harness, case)
}

/// Teaching case 13 clicked in the case list at the app's default size (1400 x 900), as a user
/// would: it loads the distracted demo model, opens the image with its lesion and marker boxes as
/// regions (the marker a distractor, left out of the metrics) and opens on the view its row names
/// (layer 1's head-mean, before | after) without the Show menu being touched, with its caption
/// above the panes. The Regions panel shows the attention on the marker falling from above 5 to
/// below 1, the model answers wrong and VGRefine right, and both answers are in view.
#[test]
fn a_teaching_case_opens_on_its_story_with_both_answers_in_view() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut harness = harness_with(
        dir.path(),
        Arc::new(Mutex::new(Vec::new())),
        fovea::demo::demo_model_dir(),
    );
    run_until(&mut harness, "the demo model", |app| app.model.is_some());
    let cases = fovea::demo::load_demo_cases(&fovea::demo::demo_cases_file());
    let case = cases
        .iter()
        .find(|c| {
            c.path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("13-"))
        })
        .expect("bundled teaching case 13")
        .clone();
    harness.state_mut().cases = cases;
    harness.step();
    let file = |p: &std::path::Path| p.file_name().unwrap().to_string_lossy().to_string();
    let listed = format!(
        "{} - {} ({})",
        file(&case.path),
        case.kind.as_deref().unwrap(),
        file(case.model.as_deref().unwrap())
    );
    harness.get_by_label(&listed).click();
    run_until(&mut harness, "the teaching case's answer", |app| {
        app.result.is_some() && !app.worker.busy && app.loading.is_none()
    });
    for _ in 0..3 {
        harness.step();
    }
    let app = harness.state();
    assert_eq!(
        app.model.as_ref().unwrap().dir,
        *case.model.as_ref().unwrap()
    );
    // The view case 13's row names, written out: layer 1's head-mean, before | after, raw maps.
    assert_eq!(app.layer, OverlayLayer::LayerMean { layer: 1 });
    assert!(app.side_by_side && !app.persisted.relative_maps);
    let roles: Vec<_> = app
        .regions
        .iter()
        .map(|r| (r.name.as_str(), r.role))
        .collect();
    assert_eq!(
        roles,
        [
            ("lesion", fovea::app::RegionRole::Target),
            ("marker", fovea::app::RegionRole::Distractor)
        ]
    );
    let result = app.result.as_ref().unwrap();
    let word = |t: &str| t.split_whitespace().next().unwrap_or("").to_lowercase();
    assert_ne!(word(&result.outcome.original.text), case.answer);
    assert_eq!(word(&result.outcome.refined.text), case.answer);
    // The Regions panel's line for the marker: "marker: attention ratio B before, A after knockout".
    let marker_line = harness
        .get_by_label_contains("marker: attention ratio")
        .value()
        .unwrap();
    let numbers: Vec<f64> = marker_line
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|w| w.parse().ok())
        .collect();
    let [before, after] = numbers[..] else {
        panic!("two ratios in {marker_line:?}")
    };
    assert!(
        before > 5.0 && after < 1.0,
        "the marker's attention ratio goes {before} -> {after}: {marker_line:?}"
    );
    // Both by hand from the layer's maps: the mean over its heads, the marker box's 16 px cells.
    let (_, _, marker) =
        box_tokens_by_hand(*case.distractor_boxes.last().unwrap(), (1.0, 1.0), 16.0, 12);
    let ratio = |maps: &fovea::grounding::LayerHeadMaps| {
        let heads = &maps[1];
        let map: Vec<f64> = (0..heads[0].len())
            .map(|i| heads.iter().map(|h| f64::from(h[i])).sum::<f64>() / heads.len() as f64)
            .collect();
        let total: f64 = map.iter().sum();
        let inside: f64 = marker.iter().map(|&t| map[t]).sum();
        inside / (total * marker.len() as f64 / map.len() as f64 + 1e-8)
    };
    let by_hand = (
        ratio(&result.outcome.question_maps),
        ratio(&result.outcome.refined_maps),
    );
    assert!(
        (before - by_hand.0).abs() <= 0.006 && (after - by_hand.1).abs() <= 0.006,
        "the panel shows {before} -> {after}, by hand {by_hand:?}"
    );
    // The caption above the panes, and both answers, inside the window without scrolling.
    let window = egui::Rect::from_min_size(egui::Pos2::ZERO, egui::Vec2::new(1400.0, 900.0));
    let caption = case.caption.as_deref().expect("case 13 has a caption");
    let caption_rect = harness.get_by_label(caption).rect();
    let panes_title = harness
        .get_by_label("layer 1 head-mean, before knockout")
        .rect();
    assert!(window.contains_rect(caption_rect) && caption_rect.max.y <= panes_title.min.y);
    for name in ["Original", "VGRefine"] {
        assert!(
            window.contains_rect(harness.get_by_label(name).rect()),
            "{name}"
        );
    }
    let answers = harness
        .get_all_by_label_contains("(p = ")
        .collect::<Vec<_>>();
    assert_eq!(answers.len(), 2, "the two answers with their probability");
    for answer in answers {
        assert!(
            window.contains_rect(answer.rect()),
            "{answer:?} out of view"
        );
    }
    // The status line says how long the answer took: not part of the picture compared.
    harness.state_mut().status.clear();
    harness.step();
    let options = egui_kittest::SnapshotOptions::new()
        .threshold(1.0)
        .max_failed_pixels(40);
    harness.snapshot_options("teaching_case_story", &options);
}

/// Writes the README's screenshots (screenshots/*.png) from the real app with the bundled demo
/// model on a bundled case: `cargo test --test app_ui -- --ignored write_screenshots`.
#[test]
#[ignore = "writes screenshots/; run by hand when the UI changes"]
fn write_screenshots() {
    let _serial = one_at_a_time();
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("screenshots");
    std::fs::create_dir_all(&out).unwrap();
    let cases = fovea::demo::load_demo_cases(&fovea::demo::demo_cases_file());
    let case = cases.first().expect("bundled demo cases").clone();
    let dir = tempfile::tempdir().unwrap();
    let sessions = dir.path().join("sessions");
    let mut harness = Harness::builder()
        .with_size(egui::Vec2::new(1500.0, 900.0))
        .wgpu()
        .build_eframe(move |cc| {
            let dialog = TestDialog {
                saves: Arc::new(Mutex::new(Vec::new())),
                out_dir: PathBuf::from("/tmp"),
            };
            let mut app = FoveaApp::new(
                cc,
                fovea::demo::demo_model_dir(),
                Some(case.path.clone()),
                Box::new(dialog),
            );
            app.sessions_dir = sessions;
            app
        });
    run_until(&mut harness, "the model", |app| {
        app.model.is_some() && app.image.is_some()
    });
    harness.state_mut().commands.push(fovea::app::Command::Ask);
    run_until(&mut harness, "the answer", |app| {
        app.result.is_some() && !app.worker.busy
    });
    let boxes = cases[0].boxes.clone();
    for (index, xyxy_px) in boxes.into_iter().enumerate() {
        harness.state_mut().regions.push(fovea::app::NamedRegion {
            name: format!("lesion {}", index + 1),
            region: fovea::grounding::region::Region::Box { xyxy_px },
            role: fovea::app::RegionRole::Target,
        });
    }
    let views = [
        ("app-triage.png", OverlayLayer::Triage, false),
        ("app-before-after.png", OverlayLayer::Triage, true),
        (
            "app-best-head.png",
            OverlayLayer::Head { layer: 1, head: 2 },
            false,
        ),
    ];
    for (name, layer, side_by_side) in views {
        {
            let app = harness.state_mut();
            app.layer = layer;
            app.side_by_side = side_by_side;
            app.status = format!(
                "{} (demo model)",
                app.status.split(" (").next().unwrap_or("")
            );
        }
        for _ in 0..3 {
            harness.step();
        }
        let image = harness.render().unwrap();
        image.save(out.join(name)).unwrap();
    }
}

/// Writes the README's teaching screenshot (screenshots/teaching-before-after.png): a bundled
/// teaching case with the distracted demo model, opened on its view (the masked layer's mean
/// attention before and after VGRefine's knockout) with its caption and answers above the panes:
/// `cargo test --test app_ui -- --ignored write_teaching_screenshot`.
#[test]
#[ignore = "writes screenshots/; run by hand when the UI changes"]
fn write_teaching_screenshot() {
    let _serial = one_at_a_time();
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("screenshots");
    let dir = tempfile::tempdir().unwrap();
    // The case opens on its own view (its row's "view"), at the app's default size.
    let (mut harness, _) = open_teaching_case(dir.path());
    for _ in 0..4 {
        harness.step();
    }
    let image = harness.render().unwrap();
    image.save(out.join("teaching-before-after.png")).unwrap();
}

/// One frame, timed (ms).
fn step_timed(harness: &mut Harness<FoveaApp>, times: &mut Vec<f64>) {
    let started = Instant::now();
    harness.step();
    times.push(started.elapsed().as_secs_f64() * 1e3);
}

fn slice_z(app: &FoveaApp) -> f64 {
    let browser = app.browser.as_ref().unwrap();
    browser.current().unwrap().slices[browser.slice]
        .position
        .unwrap()[2]
}

/// A 200-slice CT series: the folder's headers are read on a background thread while the UI
/// keeps drawing (frame times measured during a scan slowed to a network share's pace), the
/// middle slice opens, Page Up / Page Down, the wheel with Ctrl and the slider move through
/// the slices in position order, the decoded-slice cache stays within its bound, and each
/// slice gets its own answer.
#[test]
fn a_200_slice_series_scans_in_the_background_scrolls_and_answers_per_slice() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("ct");
    let series = CtSeries::default();
    assert_eq!(series.slices, 200);
    ct_series::write(&folder, &series).unwrap();
    let saves = Arc::new(Mutex::new(Vec::new()));
    let mut harness = harness_with(dir.path(), saves.clone(), fovea::demo::demo_model_dir());
    run_until(&mut harness, "the demo model", |app| app.model.is_some());

    // A scan slowed to 4 ms a file (a network share): 200 files take at least 0.8 s, during
    // which every frame must still be drawn promptly.
    let progress = Arc::new(ScanProgress {
        throttle: Some(Duration::from_millis(4)),
        ..Default::default()
    });
    let opened = Instant::now();
    harness.state_mut().open_series(&folder, progress.clone());
    let open_ms = opened.elapsed().as_secs_f64() * 1e3;
    let mut during = Vec::new();
    let mut saw_progress = false;
    while harness.state().browser.as_ref().unwrap().scan.is_none() {
        assert!(opened.elapsed() < Duration::from_secs(60), "scan timed out");
        step_timed(&mut harness, &mut during);
        let read = progress.read.load(AtomicOrdering::Relaxed);
        if (1..200).contains(&read) {
            saw_progress |= harness.query_by_label_contains("reading headers").is_some();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let scan_ms = opened.elapsed().as_secs_f64() * 1e3;
    harness.step();
    let worst = during.iter().copied().fold(0.0, f64::max);
    let mut sorted = during.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    eprintln!(
        "open_series returned in {open_ms:.1} ms; scan {scan_ms:.0} ms; {} frames during it, median {median:.1} ms, worst {worst:.1} ms",
        during.len()
    );
    assert!(
        open_ms < 50.0,
        "opening a folder blocked for {open_ms:.0} ms"
    );
    assert!(saw_progress, "the scan's progress was never shown");
    assert!(
        during.len() >= 10,
        "only {} frames drawn during an {scan_ms:.0} ms scan",
        during.len()
    );
    assert!(
        worst < 250.0,
        "a frame took {worst:.0} ms during the scan (median {median:.1} ms)"
    );

    // The scan found one series in position order; its middle slice is shown.
    run_until(&mut harness, "the middle slice", |app| app.image.is_some());
    {
        let app = harness.state();
        let browser = app.browser.as_ref().unwrap();
        let s = browser.current().unwrap();
        assert_eq!(s.slices.len(), 200);
        assert_eq!(browser.slice, 100);
        assert_eq!(app.image.as_ref().unwrap().study.path, s.slices[100].path);
        assert!((slice_z(app) - series.position(100)[2]).abs() < 1e-3);
    }
    harness.get_by_label_contains("AXIAL 2.5 mm phantom");
    // Keep only a few decoded slices, to see the bound hold.
    let one_slice = 128 * 128 * 4;
    harness.state_mut().browser.as_mut().unwrap().cache.limit = 6 * one_slice;

    // Page Down / Page Up step along the normal: z grows by 2.5 mm a slice.
    let mut scrolling = Vec::new();
    let z0 = slice_z(harness.state());
    for _ in 0..3 {
        harness.key_press(egui::Key::PageDown);
        step_timed(&mut harness, &mut scrolling);
        step_timed(&mut harness, &mut scrolling);
    }
    assert_eq!(harness.state().browser.as_ref().unwrap().slice, 103);
    assert!((slice_z(harness.state()) - z0 - 7.5).abs() < 1e-3);
    harness.key_press(egui::Key::PageUp);
    step_timed(&mut harness, &mut scrolling);
    step_timed(&mut harness, &mut scrolling);
    assert_eq!(harness.state().browser.as_ref().unwrap().slice, 102);

    // The wheel with Ctrl held over the image: one slice a notch (down = next).
    let centre = egui::pos2(700.0, 450.0);
    harness.hover_at(centre);
    harness.step();
    for _ in 0..4 {
        harness.event(egui::Event::MouseWheel {
            unit: egui::MouseWheelUnit::Line,
            delta: egui::vec2(0.0, -1.0),
            phase: egui::TouchPhase::Move,
            source: egui::MouseWheelSource::Unknown,
            modifiers: egui::Modifiers::CTRL,
        });
        step_timed(&mut harness, &mut scrolling);
        step_timed(&mut harness, &mut scrolling);
    }
    assert_eq!(harness.state().browser.as_ref().unwrap().slice, 106);
    let zoom = harness.state().view.zoom;
    // Through 20 more slices: the cache keeps at most its bound.
    for _ in 0..20 {
        harness.key_press(egui::Key::PageDown);
        step_timed(&mut harness, &mut scrolling);
    }
    harness.step();
    {
        let browser = harness.state().browser.as_ref().unwrap();
        assert_eq!(browser.slice, 126);
        assert!(
            browser.cache.bytes() <= 6 * one_slice && browser.cache.len() <= 6,
            "cache holds {} slices, {} bytes",
            browser.cache.len(),
            browser.cache.bytes()
        );
    }
    assert_eq!(harness.state().view.zoom, zoom, "scrolling kept the zoom");
    let worst_scroll = scrolling.iter().copied().fold(0.0, f64::max);
    eprintln!(
        "{} frames while scrolling, worst {worst_scroll:.1} ms",
        scrolling.len()
    );
    assert!(
        worst_scroll < 500.0,
        "a scrolling frame took {worst_scroll:.0} ms"
    );

    // The slider (what dragging it sets): the lesion's slice, 100, then ask there.
    harness
        .state_mut()
        .commands
        .push(fovea::app::Command::SetSlice(100));
    harness.step();
    harness.state_mut().question = "Is there a lesion?".into();
    harness.get_by_label("Ask").click();
    run_until(&mut harness, "the answer on slice 100", |app| {
        app.result.is_some() && !app.worker.busy
    });
    let first_key = harness.state().result.as_ref().unwrap().image_key.clone();
    let first_path = harness.state().image.as_ref().unwrap().study.path.clone();
    assert!(first_key.contains(&first_path.display().to_string()));
    // The next slice clears the answer; asking again answers about that slice's pixels.
    harness.key_press(egui::Key::PageDown);
    harness.step();
    harness.step();
    assert!(harness.state().result.is_none());
    harness.get_by_label("Ask").click();
    run_until(&mut harness, "the answer on slice 101", |app| {
        app.result.is_some() && !app.worker.busy
    });
    let second = harness.state().result.as_ref().unwrap();
    assert_ne!(second.image_key, first_key);
    assert!(second.image_key.contains(
        &harness
            .state()
            .image
            .as_ref()
            .unwrap()
            .study
            .path
            .display()
            .to_string()
    ));

    // Export > DICOM SEG with a drawn box (de-identified by default) and the Secondary
    // Capture; dciodvfy finds no error in either (when installed); Import regions… brings the
    // box back (fovea's own triage-mask segment is not a region).
    let lesion = fovea::grounding::region::Region::Box {
        xyxy_px: [70.0, 45.0, 100.0, 70.0],
    };
    harness.state_mut().regions = vec![fovea::app::NamedRegion {
        name: "lesion".into(),
        region: lesion.clone(),
        role: fovea::app::RegionRole::Target,
    }];
    for kind in [fovea::app::ExportKind::Seg, fovea::app::ExportKind::Capture] {
        harness
            .state_mut()
            .commands
            .push(fovea::app::Command::Export(kind));
        harness.step();
        let written = saves.lock().unwrap().last().cloned().unwrap();
        assert!(written.exists(), "{}", harness.state().status);
        if let Ok(out) = std::process::Command::new("dciodvfy")
            .arg(&written)
            .output()
        {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!text.contains("Error"), "{}: {text}", written.display());
        }
    }
    let seg = saves.lock().unwrap()[0].clone();
    assert!(seg.to_string_lossy().ends_with(".seg.dcm"));
    // Exported one after the other, the two share the de-identified study and patient.
    let study = |path: &std::path::Path, tag| {
        dicom_object::open_file(path)
            .unwrap()
            .element(tag)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    };
    let capture = saves.lock().unwrap()[1].clone();
    for tag in [
        dicom_dictionary_std::tags::STUDY_INSTANCE_UID,
        dicom_dictionary_std::tags::PATIENT_ID,
    ] {
        assert_eq!(study(&seg, tag), study(&capture, tag));
    }
    assert!(study(&seg, dicom_dictionary_std::tags::PATIENT_ID).starts_with("ANON-"));
    harness.state_mut().regions.clear();
    harness
        .state_mut()
        .commands
        .push(fovea::app::Command::ImportRegions(seg));
    harness.step();
    let regions = &harness.state().regions;
    assert_eq!(regions.len(), 1, "{}", harness.state().status);
    assert_eq!(
        (regions[0].name.as_str(), &regions[0].region),
        ("lesion", &lesion)
    );
    // A mask region (a disk) goes out as COCO RLE and comes back as the same mask.
    let disk: Vec<bool> = (0..128 * 128)
        .map(|i| ((i % 128) as f64 - 80.0).powi(2) + ((i / 128) as f64 - 40.0).powi(2) <= 90.0)
        .collect();
    let mask = fovea::grounding::region::Region::from_mask(128, 128, &disk).unwrap();
    harness.state_mut().regions = vec![fovea::app::NamedRegion {
        name: "disk".into(),
        region: mask.clone(),
        role: fovea::app::RegionRole::Target,
    }];
    harness
        .state_mut()
        .commands
        .push(fovea::app::Command::Export(fovea::app::ExportKind::Regions));
    harness.step();
    let coco = saves.lock().unwrap().last().cloned().unwrap();
    assert!(coco.to_string_lossy().ends_with(".coco.json"));
    harness.state_mut().regions.clear();
    harness
        .state_mut()
        .commands
        .push(fovea::app::Command::ImportRegions(coco));
    harness.step();
    let regions = &harness.state().regions;
    assert_eq!(regions.len(), 1, "{}", harness.state().status);
    assert_eq!(regions[0].region, mask);
}

/// screenshots/series-browser.png: a 200-slice CT series open at the lesion's slice, asked.
#[test]
#[ignore = "writes screenshots/; run by hand when the UI changes"]
fn write_series_screenshot() {
    let _serial = one_at_a_time();
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("screenshots");
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("ct");
    ct_series::write(&folder, &CtSeries::default()).unwrap();
    let mut harness = harness_with(
        dir.path(),
        Arc::new(Mutex::new(Vec::new())),
        fovea::demo::demo_model_dir(),
    );
    run_until(&mut harness, "the demo model", |app| app.model.is_some());
    harness.state_mut().open_series(&folder, Arc::default());
    run_until(&mut harness, "the middle slice", |app| app.image.is_some());
    harness.state_mut().regions = vec![fovea::app::NamedRegion {
        name: "lesion".into(),
        region: fovea::grounding::region::Region::Ellipse {
            xyxy_px: [75.0, 48.0, 93.0, 66.0],
        },
        role: fovea::app::RegionRole::Target,
    }];
    harness.state_mut().question = "Is there a lesion?".into();
    harness.get_by_label("Ask").click();
    run_until(&mut harness, "the answer", |app| {
        app.result.is_some() && !app.worker.busy
    });
    for _ in 0..4 {
        harness.step();
    }
    let image = harness.render().unwrap();
    image.save(out.join("series-browser.png")).unwrap();
}

/// Hands out one prepared regions file for Import regions… (and saves into a folder).
struct RegionsDialog {
    regions_file: Arc<Mutex<PathBuf>>,
    saves: Arc<Mutex<Vec<PathBuf>>>,
    out_dir: PathBuf,
}

impl FileDialog for RegionsDialog {
    fn open_image(&mut self) -> Option<PathBuf> {
        None
    }
    fn save_file(&mut self, suggested_name: &str) -> Option<PathBuf> {
        let path = self.out_dir.join(suggested_name);
        self.saves.lock().unwrap().push(path.clone());
        Some(path)
    }
    fn open_folder(&mut self) -> Option<PathBuf> {
        None
    }
    fn open_regions_file(&mut self) -> Option<PathBuf> {
        Some(self.regions_file.lock().unwrap().clone())
    }
}

/// Regions > Import regions… with the app's own default (de-identified) SEG of slice 12 of a
/// 16-slice series: refused on slice 3, the status saying it lies 22.5 mm away (9 slices of
/// 2.5 mm), and nothing added; a SEG without any geometry is placed with the note.
#[test]
fn import_regions_refuses_a_seg_of_another_slice_and_places_one_without_geometry() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("ct");
    let series = CtSeries {
        slices: 16,
        ..CtSeries::default()
    };
    ct_series::write(&folder, &series).unwrap();
    let saves = Arc::new(Mutex::new(Vec::new()));
    let regions_file = Arc::new(Mutex::new(PathBuf::new()));
    let out = dir.path().to_path_buf();
    let (file, saved) = (regions_file.clone(), saves.clone());
    let mut harness = Harness::builder()
        .with_size(egui::Vec2::new(1400.0, 900.0))
        .wgpu()
        .build_eframe(move |cc| {
            let dialog = RegionsDialog {
                regions_file: file,
                saves: saved,
                out_dir: out.clone(),
            };
            let mut app = FoveaApp::new(cc, fovea::demo::demo_model_dir(), None, Box::new(dialog));
            app.commands.clear();
            app.cases.clear();
            app.sessions_dir = out.join("sessions");
            app
        });
    harness.state_mut().open_series(&folder, Arc::default());
    run_until(&mut harness, "the middle slice", |app| app.image.is_some());
    let go_to = |harness: &mut Harness<FoveaApp>, k: usize| {
        harness
            .state_mut()
            .commands
            .push(fovea::app::Command::SetSlice(k));
        run_until(harness, "the slice", |app| {
            app.browser.as_ref().is_some_and(|b| b.slice == k)
                && app.image.as_ref().is_some_and(|image| {
                    image.study.path
                        == app.browser.as_ref().unwrap().current().unwrap().slices[k].path
                })
        });
    };
    go_to(&mut harness, 12);
    harness.state_mut().regions = vec![fovea::app::NamedRegion {
        name: "lesion".into(),
        region: fovea::grounding::region::Region::Box {
            xyxy_px: [60.0, 40.0, 110.0, 80.0],
        },
        role: fovea::app::RegionRole::Target,
    }];
    harness
        .state_mut()
        .commands
        .push(fovea::app::Command::Export(fovea::app::ExportKind::Seg));
    harness.step();
    let seg = saves.lock().unwrap().last().cloned().unwrap();
    assert!(seg.exists(), "{}", harness.state().status);

    go_to(&mut harness, 3);
    harness.state_mut().regions.clear();
    *regions_file.lock().unwrap() = seg.clone();
    harness.get_by_label("Import regions…").click();
    harness.step();
    harness.step();
    let distance = (series.position(12)[2] - series.position(3)[2]).abs();
    assert_eq!(distance, 22.5);
    let status = harness.state().status.clone();
    assert!(
        harness.state().regions.is_empty()
            && status.contains(&format!("{distance:.1} mm from the open slice")),
        "{status}"
    );
    // Back on slice 12 the same SEG is placed by its position.
    go_to(&mut harness, 12);
    harness.state_mut().regions.clear();
    harness.get_by_label("Import regions…").click();
    harness.step();
    harness.step();
    assert_eq!(
        harness.state().regions.len(),
        1,
        "{}",
        harness.state().status
    );

    // A SEG of a source without geometry carries none: placed on slice 3 with the note.
    let mut bare = dicom_object::open_file(
        &harness
            .state()
            .browser
            .as_ref()
            .unwrap()
            .current()
            .unwrap()
            .slices[12]
            .path,
    )
    .unwrap();
    for tag in [
        dicom_dictionary_std::tags::IMAGE_POSITION_PATIENT,
        dicom_dictionary_std::tags::IMAGE_ORIENTATION_PATIENT,
        dicom_dictionary_std::tags::PIXEL_SPACING,
        dicom_dictionary_std::tags::FRAME_OF_REFERENCE_UID,
    ] {
        bare.remove_element(tag);
    }
    let bare_path = dir.path().join("bare.dcm");
    bare.write_to_file(&bare_path).unwrap();
    let source = fovea::exchange::SourceImage::read(&bare_path, 0).unwrap();
    let box_region = fovea::grounding::region::Region::Box {
        xyxy_px: [60.0, 40.0, 110.0, 80.0],
    };
    let bare_seg = dir.path().join("bare.seg.dcm");
    fovea::exchange::seg::write(
        &bare_seg,
        &source,
        &[fovea::exchange::seg::Segment {
            label: "lesion".into(),
            colour: [255, 0, 0],
            algorithm: fovea::exchange::seg::Algorithm::Manual,
            property: fovea::exchange::seg::Property::Lesion,
            pixels: box_region.pixel_mask(128, 128),
            shape: Some(box_region.clone()),
        }],
        &mut fovea::exchange::Exporter::new(fovea::exchange::IdentityChoice::Deidentify),
    )
    .unwrap();
    go_to(&mut harness, 3);
    harness.state_mut().regions.clear();
    *regions_file.lock().unwrap() = bare_seg;
    harness.get_by_label("Import regions…").click();
    harness.step();
    harness.step();
    let status = harness.state().status.clone();
    let regions = &harness.state().regions;
    assert_eq!(regions.len(), 1, "{status}");
    assert_eq!(regions[0].region, box_region);
    assert!(status.contains("carries no patient geometry"), "{status}");
}

/// The causal map of an answer on the bundled demo model: "Causal map" says its cost before
/// running (the default resolution costs about one prefill), shows progress, then switches the
/// overlay to the causal map (diverging colours around zero; a committed snapshot). Each cell's
/// log-probability and the region's drop equal knockouts run here one at a time through the
/// library on a fresh session, and each token shows its cell's drop.
#[test]
fn the_causal_map_shows_where_the_answer_depends() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    // The first phantom from seed 9_800_300 with a "yes" question: a finding the answer
    // depends on.
    let (case, question) = (9_800_300..9_800_400)
        .find_map(|seed| {
            let case = fovea::demo::generate(seed, &fovea::demo::Recipe::default());
            let yes = case.questions().into_iter().find(|q| q.answer == "yes")?;
            Some((case, yes.question))
        })
        .unwrap();
    let mut harness = ask_demo_case(dir.path(), &case, &question, |app| app.max_new_tokens = 1);
    let default =
        fovea::app::panels::answers::default_causal_side(harness.state().result.as_ref().unwrap());
    assert_eq!(harness.state().causal_side, default);
    // Prefix 145 rows (144 image tokens), a 20-row suffix: 2 x 2 cells cost ~0.55 prefixes.
    assert_eq!(default, 2);
    {
        let app = harness.state_mut();
        app.causal_side = 4;
        app.regions.push(fovea::app::NamedRegion {
            name: "upper left".into(),
            region: fovea::grounding::region::Region::Box {
                xyxy_px: [0.0, 0.0, 96.0, 96.0],
            },
            role: fovea::app::RegionRole::Target,
        });
    }
    harness.step();
    assert!(harness
        .query_by_label_contains("4x4 cells: 32 knockout passes")
        .is_some());
    harness.get_by_label("Causal map").click();
    run_until(&mut harness, "the causal map", |app| {
        app.result.as_ref().is_some_and(|r| r.causal.is_some())
    });
    assert_eq!(harness.state().layer, OverlayLayer::Causal);
    let result = harness.state().result.as_ref().unwrap();
    let view = result.causal.clone().unwrap();
    assert_eq!(view.map.cells, [4, 4]);
    assert_eq!(view.map.layers, vec![0, 1, 2, 3]);
    let target = view.map.target.id as usize;
    assert_eq!(result.outcome.original.ids[0] as usize, target);

    // The same knockouts one at a time, on a fresh session of the same model input.
    let device = fovea::model::device::from_env().unwrap();
    let model = fovea::model::Model::load(&fovea::demo::demo_model_dir(), None, &device).unwrap();
    let rgb = harness.state().image.as_ref().unwrap().model_input.clone();
    let mut session = fovea::model::ImageSession::new(&model, &rgb).unwrap();
    let prompt = result.outcome.prompt.clone();
    let key = |tokens: &[usize]| fovea::model::image_key_positions(&prompt.image_span, tokens);
    // log p(token) of the first answer token with `edges` knocked out.
    let mut logp = |edges: fovea::model::EdgeMask, token: usize| -> f64 {
        let options = fovea::model::RunOptions {
            max_new_tokens: 1,
            stop_at_eos: false,
            knockout: Some(edges),
            ..fovea::model::RunOptions::default()
        };
        let answer = session.run(&prompt, &options).unwrap();
        fovea::grounding::causal::log_probability(&answer.first_token_logits, token)
    };
    let all_layers = |tokens: &[usize]| fovea::model::EdgeMask {
        layers: vec![0, 1, 2, 3],
        queries_from: prompt.image_span.end,
        blocked_keys: key(tokens),
        and: None,
    };
    let mut single = |tokens: &[usize]| logp(all_layers(tokens), target);
    for cell in 0..16 {
        let want = single(&view.map.cell_tokens[cell]);
        assert!(
            (view.map.logprob[cell] - want).abs() < 1e-5,
            "cell {cell}: {} vs {want}",
            view.map.logprob[cell]
        );
    }
    let region_tokens = harness.state().regions[0].region.tokens(&result.grid);
    assert_eq!(region_tokens.len(), 36, "96 px of 192 on a 12 x 12 grid");
    let region_drop = view.map.base_logprob - single(&region_tokens);
    drop(single);
    assert_eq!(view.regions.len(), 1);
    assert!((view.regions[0].1 - region_drop).abs() < 1e-5);
    // VGRefine's answer's map: each cell knocked out on top of VGRefine's own knockout. Checked
    // with the same edges split differently: the masked layers block the triage tokens and the
    // cell together, the other layers the cell alone.
    let knocked = result.outcome.knocked_out.clone();
    assert!(!knocked.is_empty());
    let refined = view.refined.as_ref().expect("the VGRefine answer's map");
    let masked = result.settings.masked_layers.clone();
    let others: Vec<usize> = (0..4).filter(|l| !masked.contains(l)).collect();
    let refined_target = refined.target.id as usize;
    for cell in [0, 9] {
        let cell_tokens = &refined.cell_tokens[cell];
        let mut both: Vec<usize> = knocked.iter().chain(cell_tokens).copied().collect();
        both.sort_unstable();
        both.dedup();
        let edges = fovea::model::EdgeMask {
            layers: masked.clone(),
            queries_from: prompt.image_span.end,
            blocked_keys: key(&both),
            and: Some(Box::new(fovea::model::EdgeMask {
                layers: others.clone(),
                ..all_layers(cell_tokens)
            })),
        };
        let want = logp(edges, refined_target);
        assert!(
            (refined.logprob[cell] - want).abs() < 1e-5,
            "refined cell {cell}: {} vs {want}",
            refined.logprob[cell]
        );
    }
    // The overlay: each token shows its cell's drop.
    let shown =
        fovea::app::panels::heads::layer_values(harness.state(), OverlayLayer::Causal).unwrap();
    for (tokens, &drop) in view.map.cell_tokens.iter().zip(&view.map.drop) {
        for &t in tokens {
            assert_eq!(shown[t], drop as f32);
        }
    }
    eprintln!(
        "causal map drops {:?}, region {:.4}",
        view.map
            .drop
            .iter()
            .map(|d| (d * 1e3).round() / 1e3)
            .collect::<Vec<_>>(),
        view.regions[0].1
    );
    for _ in 0..3 {
        harness.step();
    }
    let options = egui_kittest::SnapshotOptions::new()
        .threshold(1.0)
        .max_failed_pixels(40);
    harness.snapshot_options("causal_map_demo", &options);
    // Before | after: the original answer's causal map beside VGRefine's answer's.
    harness.state_mut().side_by_side = true;
    for _ in 0..3 {
        harness.step();
    }
    harness.snapshot_options("causal_map_before_after", &options);
}

//! fovea's native window: `run()` opens it (size, title, icon from assets/icon/fovea.png) and
//! carries out `fovea --screenshot OUT.png`: save the window as a PNG once the opened case has
//! its answer, then quit. For figures and teaching slides made the same way every time, and
//! for checking an installed fovea from a script (tools/package.sh does, under Xvfb): the PNG is
//! what the window showed, rendered by the same wgpu path, and the exit status says whether the
//! case was answered (0) or failed (2, the app's message on stderr).

use std::path::PathBuf;

use crate::app::dialog::NativeDialog;
use crate::app::state::{FoveaApp, Shot};

/// fovea's icon (assets/icon/fovea.png, made by tools/make_icon.py), built into the program
/// for the window and taskbar.
const ICON_PNG: &[u8] = include_bytes!("../../assets/icon/fovea.png");

fn window_icon() -> Option<egui::IconData> {
    let icon = image::load_from_memory_with_format(ICON_PNG, image::ImageFormat::Png)
        .ok()?
        .to_rgba8();
    Some(egui::IconData {
        width: icon.width(),
        height: icon.height(),
        rgba: icon.into_raw(),
    })
}

/// Run the desktop app (`quantize`: the precision to load at, default the last one chosen;
/// `screenshot`: save the window there once the case is answered, then quit).
pub fn run(
    model_dir: PathBuf,
    quantize: Option<crate::model::linear::Quantize>,
    open: Option<PathBuf>,
    ask: Option<String>,
    screenshot: Option<PathBuf>,
) -> anyhow::Result<()> {
    if screenshot.is_none() {
        // Double-clicked on Windows: close the console window made just for fovea.exe.
        crate::platform::release_own_console();
    }
    let mut viewport = egui::ViewportBuilder::default()
        .with_inner_size([1400.0, 900.0])
        .with_title("fovea")
        .with_app_id("fovea");
    if let Some(icon) = window_icon() {
        viewport = viewport.with_icon(icon);
    }
    let options = eframe::NativeOptions {
        viewport,
        renderer: eframe::Renderer::Wgpu,
        ..Default::default()
    };
    let shot = screenshot.map(Shot::new);
    let outcome = shot.as_ref().map(|s| s.outcome.clone());
    let ran = eframe::run_native(
        "fovea",
        options,
        Box::new(move |cc| {
            let mut app =
                FoveaApp::with_precision(cc, model_dir, quantize, open, Box::new(NativeDialog));
            if let Some(question) = ask {
                app.question = question;
                app.ask_when_ready = true;
            }
            if shot.is_some() {
                // A screenshot shows the answer: ask the case's question without a click.
                app.ask_when_ready = true;
            }
            app.shot = shot;
            Ok(Box::new(app))
        }),
    );
    ran.map_err(|err| anyhow::anyhow!("cannot open the window: {err}"))?;
    let Some(outcome) = outcome else {
        return Ok(());
    };
    let outcome = outcome.lock().ok().and_then(|mut slot| slot.take());
    match outcome {
        Some(Ok(line)) => {
            println!("fovea: {line}");
            Ok(())
        }
        Some(Err(message)) => anyhow::bail!("{message}"),
        None => anyhow::bail!("the window closed before the screenshot was taken"),
    }
}

/// Whether the app has nothing left to do for the opened case: the model loaded (or failed
/// to), the answer (or an error) arrived, nothing queued.
fn settled(app: &FoveaApp) -> Option<Result<(), String>> {
    if app.worker.busy || app.loading.is_some() || !app.commands.is_empty() {
        return None;
    }
    if app.result.is_some() {
        return Some(Ok(()));
    }
    app.last_error.clone().map(Err)
}

/// One frame's step: ask for the screenshot when the case has settled, save it when it comes,
/// then close the window.
pub fn shot_step(app: &mut FoveaApp, ctx: &egui::Context) {
    let Some(shot) = app.shot.as_ref() else {
        return;
    };
    if !shot.requested {
        let Some(settled) = settled(app) else {
            ctx.request_repaint_after(std::time::Duration::from_millis(50));
            return;
        };
        let shot = app.shot.as_mut().expect("checked above");
        shot.failure = settled.err();
        shot.requested = true;
        // The capture is of the next frame, which draws the answer.
        let captured = shot.captured.clone();
        let repaint = ctx.clone();
        ctx.request_screenshot(move |image| {
            if let Ok(mut slot) = captured.lock() {
                *slot = Some(image);
            }
            repaint.request_repaint();
        });
        return;
    }
    let image = shot.captured.lock().ok().and_then(|mut slot| slot.take());
    let Some(image) = image else {
        ctx.request_repaint_after(std::time::Duration::from_millis(50));
        return;
    };
    let answer = app.result.as_ref().map(|r| {
        (
            r.outcome.original.text.clone(),
            r.outcome.refined.text.clone(),
        )
    });
    let Some(shot) = app.shot.take() else {
        return;
    };
    let [width, height] = image.size;
    let rgb: Vec<u8> = image
        .pixels
        .iter()
        .flat_map(|p| [p.r(), p.g(), p.b()])
        .collect();
    let saved = image::RgbImage::from_raw(width as u32, height as u32, rgb)
        .ok_or_else(|| "the screenshot has no pixels".to_string())
        .and_then(|picture| {
            crate::io::write_png(&shot.path, &picture).map_err(|err| format!("{err:#}"))
        });
    let outcome = match (saved, shot.failure, answer) {
        (Err(err), _, _) => Err(err),
        (Ok(()), Some(failure), _) => Err(format!(
            "the case failed ({failure}); the window is saved in {}",
            shot.path.display()
        )),
        (Ok(()), None, Some((original, refined))) => Ok(format!(
            "saved the window ({width}x{height}) to {}: answer {original:?}, after VGRefine \
             {refined:?}; model {}",
            shot.path.display(),
            app.model
                .as_ref()
                .map(|m| m.dir.display().to_string())
                .unwrap_or_default()
        )),
        (Ok(()), None, None) => Err("the case has no answer".to_string()),
    };
    if let Ok(mut slot) = shot.outcome.lock() {
        *slot = Some(outcome);
    }
    ctx.send_viewport_cmd(egui::ViewportCommand::Close);
}

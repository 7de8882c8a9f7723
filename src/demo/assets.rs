//! Where the bundled demo model and demo cases live, and the case list the app shows.

use std::path::{Path, PathBuf};

/// fovea's assets folder (the demo models and cases), found in this order:
/// 1. `$FOVEA_ASSETS`;
/// 2. an installed package's: `<prefix>/share/fovea/assets` for `<prefix>/bin/fovea` (the .deb
///    installs `/usr/bin/fovea` and `/usr/share/fovea/assets`);
/// 3. an `assets/` folder beside the executable or up to three folders above it (the Windows
///    zip puts `assets\` beside `fovea.exe`; `target/release/fovea` finds the source tree's);
/// 4. the source tree this binary was built from, when it still exists.
///
/// When none has the demo model, the installed location is returned, so that the error a
/// missing demo model gives names where fovea looked first.
pub fn assets_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FOVEA_ASSETS") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().ok();
    let found = exe.as_deref().and_then(find_assets_from_exe);
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets");
    found
        .or_else(|| has_demo_model(&source).then(|| source.clone()))
        .or_else(|| exe.as_deref().and_then(installed_assets))
        .unwrap_or(source)
}

/// The assets folder an executable at `exe` finds (steps 2 and 3 of [`assets_dir`]).
pub fn find_assets_from_exe(exe: &Path) -> Option<PathBuf> {
    installed_assets(exe)
        .filter(|dir| has_demo_model(dir))
        .or_else(|| {
            exe.ancestors()
                .skip(1)
                .take(4)
                .map(|dir| dir.join("assets"))
                .find(|dir| has_demo_model(dir))
        })
}

/// `<prefix>/share/fovea/assets` for an executable `<prefix>/bin/fovea`.
fn installed_assets(exe: &Path) -> Option<PathBuf> {
    let bin = exe.parent()?;
    (bin.file_name()? == "bin").then(|| {
        bin.parent()
            .map(|prefix| prefix.join("share").join("fovea").join("assets"))
    })?
}

fn has_demo_model(dir: &Path) -> bool {
    dir.join("demo-model/config.json").is_file()
}

/// Where the bundled demo model lives.
pub fn demo_model_dir() -> PathBuf {
    assets_dir().join("demo-model")
}

/// The bundled demo cases (VGMED JSONL).
pub fn demo_cases_file() -> PathBuf {
    assets_dir().join("cases/cases.jsonl")
}

/// A demo case from assets/cases/cases.jsonl.
#[derive(Clone, Debug)]
pub struct DemoCase {
    pub path: PathBuf,
    pub question: String,
    pub answer: String,
    pub boxes: Vec<[f64; 4]>,
    /// Boxes of the case's distractors (`"distractor_bboxes"`: side markers, wires, labels).
    pub distractor_boxes: Vec<[f64; 4]>,
    /// The model the case is for (`"model"`: a folder under assets/, or a path); `None`: any.
    pub model: Option<PathBuf>,
    /// What the case teaches (`"kind"`, e.g. "misled by marker").
    pub kind: Option<String>,
    /// A conflict case (`"conflict": true`): its last distractor box is a side marker naming the
    /// side opposite the lesion.
    pub conflict: bool,
    /// The view that tells the case's story (`"view"`); `None`: the app's usual view.
    pub view: Option<CaseView>,
    /// One or two sentences on what that view shows (`"caption"`), shown above the image.
    pub caption: Option<String>,
}

/// The view a case opens in (`"view"` in cases.jsonl), e.g.
/// `{"overlay": "layer-mean", "layer": 1, "before_after": true}`: the overlay names one entry of
/// the app's Show menu, `before_after` turns on the two panes, `relative` divides by the general
/// prompt's map (default: raw attention, the app's default). A teaching caption quotes numbers of
/// exactly this view, so the view fixes everything those numbers depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct CaseView {
    #[serde(flatten)]
    pub overlay: CaseOverlay,
    #[serde(default)]
    pub before_after: bool,
    #[serde(default)]
    pub relative: bool,
}

/// The map a case opens on: the entries of the app's Show menu.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(tag = "overlay", rename_all = "kebab-case")]
pub enum CaseOverlay {
    /// The image alone.
    Image,
    Triage,
    KnockedOut,
    /// The triage heads' mean attention before the knockout.
    Before,
    /// The triage heads' mean attention after the knockout.
    After,
    /// The mean over a layer's heads.
    LayerMean {
        layer: usize,
    },
    Head {
        layer: usize,
        head: usize,
    },
}

/// Demo cases listed in a VGMED JSONL file (image paths relative to it).
pub fn load_demo_cases(file: &Path) -> Vec<DemoCase> {
    let Ok(text) = std::fs::read_to_string(file) else {
        return Vec::new();
    };
    let dir = file.parent().unwrap_or(Path::new("."));
    // Model folders are named relative to the assets folder (the cases file's parent's parent).
    let assets = dir.parent().unwrap_or(dir);
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|row| {
            Some(DemoCase {
                path: dir.join(crate::platform::native_path(row.get("image")?.as_str()?)),
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
                distractor_boxes: serde_json::from_value(
                    row.get("distractor_bboxes").cloned().unwrap_or_default(),
                )
                .unwrap_or_default(),
                model: row
                    .get("model")
                    .and_then(|m| m.as_str())
                    .map(|m| assets.join(crate::platform::native_path(m))),
                kind: row.get("kind").and_then(|k| k.as_str()).map(str::to_string),
                conflict: row.get("conflict").and_then(|c| c.as_bool()) == Some(true),
                // A view that does not parse leaves the case on the usual view; the teaching
                // rows are checked by tests/distracted_model.rs.
                view: row
                    .get("view")
                    .and_then(|v| serde_json::from_value(v.clone()).ok()),
                caption: row
                    .get("caption")
                    .and_then(|c| c.as_str())
                    .map(str::to_string),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layouts the packages install, built in a scratch folder: the .deb's
    /// `/usr/bin` + `/usr/share/fovea/assets`, the Windows zip's `assets` beside the executable.
    #[test]
    fn installed_layouts_find_their_assets() {
        let root = tempfile::tempdir().unwrap();
        let deb = root.path().join("deb/usr");
        std::fs::create_dir_all(deb.join("bin")).unwrap();
        std::fs::create_dir_all(deb.join("share/fovea/assets/demo-model")).unwrap();
        std::fs::write(deb.join("share/fovea/assets/demo-model/config.json"), "{}").unwrap();
        assert_eq!(
            find_assets_from_exe(&deb.join("bin/fovea")),
            Some(deb.join("share").join("fovea").join("assets"))
        );
        let zip = root.path().join("zip/fovea-0.1.0");
        std::fs::create_dir_all(zip.join("assets/demo-model")).unwrap();
        std::fs::write(zip.join("assets/demo-model/config.json"), "{}").unwrap();
        assert_eq!(
            find_assets_from_exe(&zip.join("fovea.exe")),
            Some(zip.join("assets"))
        );
        // A bin/ without the share folder, nothing above: not found.
        let bare = root.path().join("bare/bin");
        std::fs::create_dir_all(&bare).unwrap();
        assert_eq!(find_assets_from_exe(&bare.join("fovea")), None);
    }

    /// The schema README.md documents, written out by hand: each Show-menu entry and the flags.
    #[test]
    fn views_parse_as_documented() {
        let parse = |text: &str| serde_json::from_str::<CaseView>(text).ok();
        assert_eq!(
            parse(r#"{"overlay": "layer-mean", "layer": 1, "before_after": true}"#),
            Some(CaseView {
                overlay: CaseOverlay::LayerMean { layer: 1 },
                before_after: true,
                relative: false,
            })
        );
        assert_eq!(
            parse(r#"{"overlay": "head", "layer": 2, "head": 3, "relative": true}"#),
            Some(CaseView {
                overlay: CaseOverlay::Head { layer: 2, head: 3 },
                before_after: false,
                relative: true,
            })
        );
        assert_eq!(
            parse(r#"{"overlay": "knocked-out"}"#).map(|v| v.overlay),
            Some(CaseOverlay::KnockedOut)
        );
        assert_eq!(parse(r#"{"overlay": "layer-mean"}"#), None, "no layer");
        assert_eq!(parse(r#"{"overlay": "attention"}"#), None, "no such entry");
    }

    #[test]
    fn a_row_brings_its_view_caption_and_conflict_flag() {
        let dir = tempfile::tempdir().unwrap();
        let cases = dir.path().join("cases");
        std::fs::create_dir_all(&cases).unwrap();
        let rows = [
            serde_json::json!({"image": "a.png", "question": "Which side?", "answer": "left",
                "conflict": true, "caption": "The marker pulls layer 1.",
                "view": {"overlay": "triage", "before_after": true}}),
            serde_json::json!({"image": "b.png", "question": "Is it large?"}),
        ];
        let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
        std::fs::write(cases.join("cases.jsonl"), text).unwrap();
        let loaded = load_demo_cases(&cases.join("cases.jsonl"));
        assert_eq!(loaded.len(), 2);
        assert!(loaded[0].conflict);
        assert_eq!(
            loaded[0].view,
            Some(CaseView {
                overlay: CaseOverlay::Triage,
                before_after: true,
                relative: false,
            })
        );
        assert_eq!(
            loaded[0].caption.as_deref(),
            Some("The marker pulls layer 1.")
        );
        assert!(!loaded[1].conflict);
        assert_eq!((loaded[1].view, loaded[1].caption.clone()), (None, None));
    }
}

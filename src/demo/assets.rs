//! Where the bundled demo model and demo cases live, and the case list the app shows.

use std::path::{Path, PathBuf};

/// fovea's assets folder: `$FOVEA_ASSETS`, else an `assets/` beside or above the executable,
/// else the source tree's.
pub fn assets_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FOVEA_ASSETS") {
        return PathBuf::from(dir);
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(4) {
            if dir.join("assets/demo-model/config.json").exists() {
                return dir.join("assets");
            }
        }
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets")
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
                distractor_boxes: serde_json::from_value(
                    row.get("distractor_bboxes").cloned().unwrap_or_default(),
                )
                .unwrap_or_default(),
                model: row
                    .get("model")
                    .and_then(|m| m.as_str())
                    .map(|m| assets.join(m)),
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

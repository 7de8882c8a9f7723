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
            })
        })
        .collect()
}

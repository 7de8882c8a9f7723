//! Case sessions: the regions, settings and answers of an image, saved on every edit (after a
//! short pause) and restored when the image is reopened. Sessions live in fovea's data folder,
//! never beside the image (archives are often read-only, and PACS exports must stay clean).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::state::{hash, Command, FoveaApp, NamedRegion};

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Saved {
    pub image: PathBuf,
    pub frame: usize,
    pub regions: Vec<NamedRegion>,
    pub question: String,
    pub heads: String,
    pub masked_layers: String,
    pub percentile: f64,
    pub answer: Option<String>,
    pub refined_answer: Option<String>,
}

impl Saved {
    pub fn from_app(app: &FoveaApp) -> Saved {
        Saved {
            image: app
                .image
                .as_ref()
                .map(|i| i.study.path.clone())
                .unwrap_or_default(),
            frame: app.image.as_ref().map(|i| i.frame).unwrap_or(0),
            regions: app.regions.clone(),
            question: app.question.clone(),
            heads: app.heads_text.clone(),
            masked_layers: app.masked_text.clone(),
            percentile: app.percentile,
            answer: app.result.as_ref().map(|r| r.outcome.original.text.clone()),
            refined_answer: app.result.as_ref().map(|r| r.outcome.refined.text.clone()),
        }
    }

    pub fn apply(self, app: &mut FoveaApp) {
        app.regions = self.regions;
        if !self.question.is_empty() {
            app.question = self.question;
        }
        app.heads_text = self.heads;
        app.masked_text = self.masked_layers;
        if self.percentile > 0.0 {
            app.percentile = self.percentile;
        }
        if self.frame > 0 {
            app.commands.push(Command::SetFrame(self.frame));
        }
    }
}

/// `$XDG_DATA_HOME/fovea/sessions`, else `~/.local/share/fovea/sessions`
/// (`%APPDATA%\fovea\sessions` on Windows; see [`crate::platform::data_dir`]).
pub fn default_sessions_dir() -> PathBuf {
    crate::platform::data_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("fovea")
        .join("sessions")
}

/// Where the session of `image` is stored.
pub fn session_file(dir: &Path, image: &Path) -> PathBuf {
    let canonical = image.canonicalize().unwrap_or_else(|_| image.to_path_buf());
    let stem = image
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("image");
    dir.join(format!(
        "{stem}-{:016x}.json",
        hash(&canonical.display().to_string())
    ))
}

pub fn save(dir: &Path, image: &Path, saved: &Saved) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let bytes = serde_json::to_vec_pretty(saved)?;
    crate::io::write_bytes(&session_file(dir, image), &bytes)
}

pub fn load(dir: &Path, image: &Path) -> Option<Saved> {
    let text = std::fs::read_to_string(session_file(dir, image)).ok()?;
    serde_json::from_str(&text).ok()
}

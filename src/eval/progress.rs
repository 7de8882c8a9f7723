//! Per-sample results appended to JSONL as they finish (so a killed run loses at most the
//! sample in flight and `--resume` continues it), and a progress bar with rate and ETA.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// `samples.jsonl` of an output folder, opened for appending.
pub struct ResultsFile {
    pub path: PathBuf,
    pub done: BTreeSet<usize>,
    file: std::fs::File,
}

impl ResultsFile {
    pub fn open(dir: &Path, resume: bool) -> Result<ResultsFile> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join("samples.jsonl");
        let mut done = BTreeSet::new();
        if path.exists() {
            if !resume {
                bail!("results already exist; pass --resume to continue them or choose another --out: {}", path.display());
            }
            let content = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            // A run killed mid-write leaves a partial last line: keep whole lines only.
            let complete = content
                .rfind('\n')
                .map(|end| &content[..=end])
                .unwrap_or("");
            for line in complete.lines() {
                let record: Value = serde_json::from_str(line)
                    .with_context(|| format!("corrupt line in {}", path.display()))?;
                if let Some(index) = record.get("index").and_then(Value::as_u64) {
                    done.insert(index as usize);
                }
            }
            if complete.len() != content.len() {
                crate::io::write_bytes(&path, complete.as_bytes())
                    .with_context(|| format!("cannot repair {}", path.display()))?;
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(ResultsFile { path, done, file })
    }

    /// Append one record as a line, flushed to the OS before returning.
    pub fn append(&mut self, record: &Value) -> Result<()> {
        let mut line = serde_json::to_string(record)?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        self.file.flush()?;
        if let Some(index) = record.get("index").and_then(Value::as_u64) {
            self.done.insert(index as usize);
        }
        Ok(())
    }
}

/// All records of a results file, sorted by sample index.
pub fn read_records(path: &Path) -> Result<Vec<Value>> {
    let content =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut records: Vec<Value> = content
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).with_context(|| format!("corrupt line in {}", path.display()))
        })
        .collect::<Result<_>>()?;
    records.sort_by_key(|r| r.get("index").and_then(Value::as_u64).unwrap_or(u64::MAX));
    Ok(records)
}

/// A progress line on stderr: redrawn in place on a terminal, every 10% otherwise.
pub struct Progress {
    label: String,
    total: usize,
    done: usize,
    started: Instant,
    terminal: bool,
    last_decile: usize,
}

impl Progress {
    pub fn new(label: &str, total: usize, already_done: usize) -> Self {
        let progress = Progress {
            label: label.to_string(),
            total,
            done: already_done,
            started: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
            last_decile: usize::MAX,
        };
        if already_done > 0 {
            eprintln!("{label}: resuming, {already_done} of {total} samples already done");
        }
        progress
    }

    pub fn tick(&mut self, fresh_done: usize) {
        self.done += 1;
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = fresh_done as f64 / elapsed.max(1e-9);
        let remaining = self.total.saturating_sub(self.done) as f64 / rate.max(1e-9);
        let width = 30;
        let filled = (self.done * width) / self.total.max(1);
        let line = format!(
            "{} [{}{}] {}/{} {:.2}/s ETA {}",
            self.label,
            "#".repeat(filled),
            " ".repeat(width - filled),
            self.done,
            self.total,
            rate,
            format_duration(remaining)
        );
        if self.terminal {
            eprint!("\r{line}");
            if self.done == self.total {
                eprintln!();
            }
        } else {
            let decile = self.done * 10 / self.total.max(1);
            if decile != self.last_decile {
                self.last_decile = decile;
                eprintln!("{line}");
            }
        }
    }
}

fn format_duration(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "?".into();
    }
    let s = seconds.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

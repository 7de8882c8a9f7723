//! What the exchange tests share: running `fovea`, their fixtures, and dciodvfy's verdict on
//! every DICOM object fovea writes. Included by path (`#[path]`), so these tests do not compile
//! the model helpers of `common/mod.rs`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn fovea(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fovea"))
        .args(args)
        .output()
        .expect("fovea runs")
}

/// The run succeeded; its standard error (notes and counts).
pub fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "fovea failed: {stderr}");
    stderr
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/exchange")
        .join(name)
}

/// dciodvfy's verdict: its error lines. In CI (or with FOVEA_REQUIRE_DCIODVFY=1) the tool
/// must be installed; elsewhere its absence skips the check with a note.
pub fn dciodvfy_errors(file: &Path) -> Option<Vec<String>> {
    match Command::new("dciodvfy").arg(file).output() {
        Ok(out) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            Some(
                text.lines()
                    .filter(|l| l.starts_with("Error") || l.starts_with("Abort"))
                    .map(str::to_string)
                    .collect(),
            )
        }
        Err(_) => {
            let required = std::env::var("CI").is_ok_and(|v| v == "true")
                || std::env::var("FOVEA_REQUIRE_DCIODVFY").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "dciodvfy (Debian package dicom3tools) is required here"
            );
            eprintln!("dciodvfy not installed: validation skipped");
            None
        }
    }
}

/// dciodvfy finds no error in `file` (when it is installed).
pub fn assert_valid(file: &Path) {
    if let Some(errors) = dciodvfy_errors(file) {
        assert!(
            errors.is_empty(),
            "dciodvfy on {}: {errors:#?}",
            file.display()
        );
    }
}

//! What the exchange tests share: running `fovea`, their fixtures, and dciodvfy's verdict on
//! every DICOM object fovea writes. Included by path (`#[path]`), so these tests do not compile
//! the model helpers of `common/mod.rs`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dicom_core::Tag;
use dicom_object::InMemDicomObject;

include!("bin.rs");

pub fn fovea(args: &[&str]) -> Output {
    fovea_command().args(args).output().expect("fovea runs")
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

/// A text attribute without DICOM's padding; empty when absent.
pub fn text(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .unwrap_or_default()
}

/// A sequence's items (none when absent).
pub fn items(obj: &InMemDicomObject, tag: Tag) -> &[InMemDicomObject] {
    obj.get(tag).and_then(|e| e.items()).unwrap_or(&[])
}

/// A sequence's first item.
pub fn item(obj: &InMemDicomObject, tag: Tag) -> &InMemDicomObject {
    &items(obj, tag)[0]
}

/// Frame `frame` of `n` pixels from a SEG's bit-packed Pixel Data (LSB first, frames back to
/// back), written out by hand from PS3.5 8.1.1.
pub fn unpack(bytes: &[u8], frame: usize, n: usize) -> Vec<bool> {
    (0..n)
        .map(|i| {
            let k = frame * n + i;
            bytes[k / 8] >> (k % 8) & 1 == 1
        })
        .collect()
}

//! fovea's DICOM pixels against pydicom's, file by file.
//!
//! The expected values were produced once by `tools/pydicom_reference.py` (pydicom 3.0.2 with
//! the pylibjpeg plugins) from pydicom's own test corpus and committed as
//! `tests/fixtures/dicom/pydicom_expected.json`. The corpus itself is fetched by
//! `tools/fetch_pydicom_corpus.sh` into `tests/data/pydicom-corpus/`; without it, only the
//! committed subset in `tests/fixtures/dicom/` is compared (CI always fetches the corpus and
//! sets FOVEA_REQUIRE_CORPUS=1).
//!
//! Lossless files must match exactly: the sha256 of the stored values (before the modality
//! LUT, as little-endian i64 or f64) and of the modality values (f64). Lossy files must match
//! within a stated tolerance on an 8x8 grid of block means and on the frame mean, except
//! near-lossless JPEG-LS, whose decoding is exact and must match bit for bit too.

use std::path::{Path, PathBuf};

use fovea::imaging::dicom::{self, DecodedColour, ModalityTransform, StoredSamples};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn expected() -> Value {
    let path = manifest_dir().join("tests/fixtures/dicom/pydicom_expected.json");
    let text = std::fs::read_to_string(&path).expect("pydicom_expected.json is committed");
    serde_json::from_str(&text).expect("pydicom_expected.json parses")
}

fn corpus_dir() -> Option<PathBuf> {
    let dir = manifest_dir().join("tests/data/pydicom-corpus");
    dir.join("CT_small.dcm").exists().then_some(dir)
}

/// Where a corpus file can be read: the fetched corpus, else the committed subset.
fn locate(relative: &str) -> Option<PathBuf> {
    if let Some(dir) = corpus_dir() {
        return Some(dir.join(relative));
    }
    let candidate = manifest_dir().join("tests/fixtures/dicom").join(relative);
    candidate.exists().then_some(candidate)
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn stored_sha(stored: &StoredSamples) -> String {
    let mut bytes = Vec::with_capacity(stored.len() * 8);
    match stored {
        StoredSamples::Int(values) => values
            .iter()
            .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes())),
        StoredSamples::Float(values) => values
            .iter()
            .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes())),
    }
    sha256_hex(&bytes)
}

fn f64_sha(values: &[f64]) -> String {
    let mut bytes = Vec::with_capacity(values.len() * 8);
    values
        .iter()
        .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
    sha256_hex(&bytes)
}

/// numpy.array_split boundaries: the first `n % parts` parts get one extra element.
fn array_split_bounds(n: usize, parts: usize) -> Vec<(usize, usize)> {
    let (base, extra) = (n / parts, n % parts);
    let mut bounds = Vec::with_capacity(parts);
    let mut start = 0;
    for part in 0..parts {
        let len = base + usize::from(part < extra);
        bounds.push((start, start + len));
        start += len;
    }
    bounds
}

/// 8x8 block means of the modality values (mean over samples for colour), as the script does.
fn thumb(values: &[f64], rows: usize, cols: usize, samples: usize) -> Vec<Vec<f64>> {
    let row_bounds = array_split_bounds(rows, 8);
    let col_bounds = array_split_bounds(cols, 8);
    row_bounds
        .iter()
        .map(|&(r0, r1)| {
            col_bounds
                .iter()
                .map(|&(c0, c1)| {
                    let mut sum = 0.0;
                    let mut count = 0usize;
                    for r in r0..r1 {
                        for c in c0..c1 {
                            for s in 0..samples {
                                sum += values[(r * cols + c) * samples + s];
                                count += 1;
                            }
                        }
                    }
                    if count == 0 {
                        f64::NAN
                    } else {
                        sum / count as f64
                    }
                })
                .collect()
        })
        .collect()
}

fn as_f64(value: &Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}

#[derive(Default)]
struct Tally {
    exact: Vec<String>,
    lossy: Vec<String>,
    rejected_cleanly: Vec<String>,
    failures: Vec<String>,
    skipped_missing: usize,
}

fn modality_values(stored: &StoredSamples, transform: &ModalityTransform) -> Vec<f64> {
    (0..stored.len())
        .map(|i| transform.apply(stored.get_f64(i)))
        .collect()
}

fn check_file(record: &Value, path: &Path, tally: &mut Tally) {
    let name = record["path"].as_str().unwrap_or("?").to_string();
    let lossy = record["lossy"].as_bool().unwrap_or(false);
    // Near-lossless JPEG-LS is lossy against the original but its decoding is exact (T.87
    // defines every step in integers), so fovea must give pydicom's values bit for bit.
    let exact = !lossy || record["transfer_syntax_uid"] == "1.2.840.10008.1.2.4.81";
    let outcome = std::panic::catch_unwind(|| -> Result<Vec<String>, String> {
        let obj = dicom::open(path).map_err(|e| e.to_string())?;
        let layout = dicom::pixel_layout(&obj, path).map_err(|e| e.to_string())?;
        let transform = ModalityTransform::from_object(&obj, &layout);
        let palette = (layout.photometric == "PALETTE COLOR")
            .then(|| dicom::Palette::from_object(&obj, path));
        let mut problems = Vec::new();
        let frames = record["frames"].as_array().cloned().unwrap_or_default();
        for (index, expected) in frames.iter().enumerate() {
            let (mut stored, colour) =
                dicom::decode_stored_frame(&obj, &layout, index as u32, path)
                    .map_err(|e| e.to_string())?;
            if colour == DecodedColour::YbrFull && record["decoded_photometric"] == "RGB" {
                if let StoredSamples::Int(values) = &mut stored {
                    dicom::ybr_full_to_rgb(values, layout.bits_allocated);
                }
            }
            let shape: Vec<usize> = expected["shape"]
                .as_array()
                .map(|s| {
                    s.iter()
                        .filter_map(|v| v.as_u64())
                        .map(|v| v as usize)
                        .collect()
                })
                .unwrap_or_default();
            let (rows, cols) = (shape[0], shape[1]);
            let samples = shape.get(2).copied().unwrap_or(1);
            if stored.len() != rows * cols * samples {
                problems.push(format!(
                    "frame {index}: {} samples, expected shape {shape:?}",
                    stored.len()
                ));
                continue;
            }
            let modality = modality_values(&stored, &transform);
            if exact {
                if stored_sha(&stored) != expected["sha256_raw"].as_str().unwrap_or_default() {
                    problems.push(format!(
                        "frame {index}: stored values differ from pydicom's"
                    ));
                }
                if f64_sha(&modality) != expected["sha256_modality"].as_str().unwrap_or_default() {
                    problems.push(format!(
                        "frame {index}: modality values differ from pydicom's"
                    ));
                }
            }
            // Statistics and the block-mean grid, for every file (the tolerance only matters
            // for lossy ones: exact files already matched bit for bit).
            let range = (as_f64(&expected["max"]) - as_f64(&expected["min"]))
                .abs()
                .max(1.0);
            let tolerance = if !exact {
                0.02 * range + 1.0
            } else {
                1e-9 * range
            };
            let mean = modality.iter().sum::<f64>() / modality.len().max(1) as f64;
            if (mean - as_f64(&expected["mean"])).abs() > tolerance {
                problems.push(format!(
                    "frame {index}: mean {mean} vs pydicom {}",
                    expected["mean"]
                ));
            }
            let ours = thumb(&modality, rows, cols, samples);
            if let Some(theirs) = expected["thumb"].as_array() {
                let worst = ours
                    .iter()
                    .flatten()
                    .zip(theirs.iter().filter_map(|r| r.as_array()).flatten())
                    .map(|(a, b)| (a - as_f64(b)).abs())
                    .fold(0.0, f64::max);
                if worst > tolerance {
                    problems.push(format!("frame {index}: block means differ by up to {worst:.3} (tolerance {tolerance:.3})"));
                }
            }
            if let (Some(Ok(palette)), Some(rgb)) = (&palette, expected.get("palette_rgb")) {
                if let StoredSamples::Int(indices) = &stored {
                    let coloured: Vec<i64> = palette.apply(indices);
                    let mut bytes = Vec::new();
                    coloured
                        .iter()
                        .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
                    if let Some(sha) = rgb.get("sha256_raw").and_then(|v| v.as_str()) {
                        if sha256_hex(&bytes) != sha {
                            problems.push(format!(
                                "frame {index}: palette RGB differs from pydicom's apply_color_lut"
                            ));
                        }
                    }
                }
            }
        }
        Ok(problems)
    });
    match outcome {
        Err(_) => tally.failures.push(format!("{name}: fovea panicked")),
        Ok(Err(message)) => tally
            .failures
            .push(format!("{name}: fovea could not decode it: {message}")),
        Ok(Ok(problems)) if problems.is_empty() => {
            if !exact {
                tally.lossy.push(name)
            } else {
                tally.exact.push(name)
            }
        }
        Ok(Ok(problems)) => tally
            .failures
            .push(format!("{name}: {}", problems.join("; "))),
    }
}

fn check_rejected(record: &Value, path: &Path, tally: &mut Tally) {
    let name = record["path"].as_str().unwrap_or("?").to_string();
    match std::panic::catch_unwind(|| fovea::imaging::load(path)) {
        Err(_) => tally
            .failures
            .push(format!("{name}: fovea panicked on a file pydicom rejects")),
        Ok(Ok(_)) => tally
            .rejected_cleanly
            .push(format!("{name} (fovea decodes it)")),
        Ok(Err(err)) => {
            let message = err.to_string();
            if message.contains(path.file_name().and_then(|n| n.to_str()).unwrap_or("?"))
                && !message.contains('\n')
            {
                tally.rejected_cleanly.push(name);
            } else {
                tally.failures.push(format!(
                    "{name}: error does not name the file on one line: {message}"
                ));
            }
        }
    }
}

#[test]
fn pixels_match_pydicom() {
    let expected = expected();
    let records = expected["files"].as_array().expect("files array");
    let require_corpus = std::env::var("FOVEA_REQUIRE_CORPUS").is_ok_and(|v| v == "1");
    assert!(
        corpus_dir().is_some() || !require_corpus,
        "FOVEA_REQUIRE_CORPUS=1 but tests/data/pydicom-corpus is missing: run tools/fetch_pydicom_corpus.sh"
    );
    let mut tally = Tally::default();
    for record in records {
        let relative = record["path"].as_str().unwrap_or_default();
        let Some(path) = locate(relative) else {
            tally.skipped_missing += 1;
            continue;
        };
        match record["status"].as_str() {
            Some("decoded") => check_file(record, &path, &mut tally),
            Some("rejected") => check_rejected(record, &path, &mut tally),
            _ => {}
        }
    }
    eprintln!(
        "pydicom parity: {} exact, {} lossy within tolerance, {} rejected by pydicom handled, {} not present, {} failures",
        tally.exact.len(),
        tally.lossy.len(),
        tally.rejected_cleanly.len(),
        tally.skipped_missing,
        tally.failures.len()
    );
    for failure in &tally.failures {
        eprintln!("  FAIL {failure}");
    }
    assert!(
        tally.failures.is_empty(),
        "{} file(s) differ from pydicom",
        tally.failures.len()
    );
    if corpus_dir().is_some() {
        let compared = tally.exact.len() + tally.lossy.len();
        assert!(
            compared >= 50,
            "only {compared} files compared with pydicom; the corpus should give at least 50"
        );
    } else {
        assert!(
            tally.exact.len() + tally.lossy.len() >= 10,
            "the committed subset should cover at least 10 files"
        );
    }
}

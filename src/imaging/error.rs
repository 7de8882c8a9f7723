//! What went wrong while reading an image. Every message ends with the file it concerns.

use std::path::{Path, PathBuf};

/// What went wrong while reading an image. Every message ends with the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ImagingError {
    #[error("cannot read file ({source}): {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("is a directory, not an image file: {path}")]
    IsDirectory { path: PathBuf },
    #[error("file is empty (0 bytes): {path}")]
    Empty { path: PathBuf },
    #[error("not DICOM and not a supported image format (PNG, JPEG, TIFF, BMP): {path}")]
    UnknownFormat { path: PathBuf },
    #[error("{problem}: {path}")]
    Dicom { path: PathBuf, problem: String },
    #[error("{problem}: {path}")]
    Raster { path: PathBuf, problem: String },
    #[error("frame {frame} does not exist, the image has {frames} frame(s): {path}")]
    NoSuchFrame {
        path: PathBuf,
        frame: usize,
        frames: usize,
    },
}

impl ImagingError {
    pub fn dicom(path: &Path, problem: impl Into<String>) -> Self {
        ImagingError::Dicom {
            path: path.to_path_buf(),
            problem: problem.into(),
        }
    }
    pub fn raster(path: &Path, problem: impl Into<String>) -> Self {
        ImagingError::Raster {
            path: path.to_path_buf(),
            problem: problem.into(),
        }
    }
}

/// An error and its causes on one line, each cause once.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

//! Pixels in, pixels out: turns a DICOM or raster file into a [`Study`].
//!
//! A study keeps the full dynamic range of the modality (Hounsfield units for CT) for the
//! display path, plus the defaults a viewer needs (window, inversion for MONOCHROME1, pixel
//! spacing) and a summary with no patient-identifying fields. The model path gets RGB8 after
//! windowing through [`render_rgb8`]. Nothing here knows about models or UI.
//!
//! Inside, imports point one way: this file dispatches to [`dicom`] and [`raster`]; they use
//! [`study`], [`error`], [`layout`] and [`window`], which import nothing above them; the codecs
//! ([`jpeg12`], [`rle`]) know only [`layout`].

pub mod describe;
pub mod dicom;
pub mod error;
pub mod jpeg12;
pub mod jpegls;
pub mod layout;
pub mod raster;
pub mod rle;
pub mod scan;
pub mod series;
pub mod sniff;
pub mod study;
pub mod window;

use std::path::Path;

pub use error::ImagingError;
pub use study::{
    render_rgb8, Frame, Identity, Photometric, SourceFormat, Study, Summary, MAX_DECODED_BYTES,
    MAX_SIDE_PX,
};
pub use window::{Preset, VoiFunction, VoiOption, WindowLevel};

/// Open any supported file. The format is detected from the content, not the extension.
pub fn load(path: impl AsRef<Path>) -> Result<Study, ImagingError> {
    let path = path.as_ref();
    let metadata = std::fs::metadata(path).map_err(|source| ImagingError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if metadata.is_dir() {
        return Err(ImagingError::IsDirectory {
            path: path.to_path_buf(),
        });
    }
    if metadata.len() == 0 {
        return Err(ImagingError::Empty {
            path: path.to_path_buf(),
        });
    }
    let head = sniff::read_head(path, 512)?;
    if sniff::has_dicm_magic(&head) {
        return dicom::load(path);
    }
    if let Some(format) = raster::detect(&head) {
        return raster::load(path, format);
    }
    if sniff::looks_like_bare_dataset(&head) {
        return dicom::load(path);
    }
    Err(ImagingError::UnknownFormat {
        path: path.to_path_buf(),
    })
}

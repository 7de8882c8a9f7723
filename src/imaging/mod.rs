//! Pixels in, pixels out: turns a DICOM or raster file into a [`Study`].
//!
//! A study keeps the full dynamic range of the modality (Hounsfield units for CT) for the
//! display path, plus the defaults a viewer needs (window, inversion for MONOCHROME1, pixel
//! spacing) and a summary with no patient-identifying fields. The model path gets RGB8 after
//! windowing through [`render_rgb8`]. Nothing here knows about models or UI.

pub mod dicom;
mod jpeg12;
pub mod raster;
mod rle;
pub mod window;

use std::path::{Path, PathBuf};

pub use window::{Preset, VoiFunction, VoiOption, WindowLevel};

/// Images wider or taller than this are refused before their pixels are allocated.
pub const MAX_SIDE_PX: u32 = 16_384;
/// Decoded pixel buffers larger than this (bytes) are refused.
pub const MAX_DECODED_BYTES: u64 = 4 << 30;

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
    pub(crate) fn dicom(path: &Path, problem: impl Into<String>) -> Self {
        ImagingError::Dicom {
            path: path.to_path_buf(),
            problem: problem.into(),
        }
    }
    pub(crate) fn raster(path: &Path, problem: impl Into<String>) -> Self {
        ImagingError::Raster {
            path: path.to_path_buf(),
            problem: problem.into(),
        }
    }
}

/// How the stored samples are to be read, after fovea's decoding (palette and YBR images are
/// converted to RGB on load, MONOCHROME1 is kept as values and inverted only for display).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Photometric {
    Monochrome1,
    Monochrome2,
    Rgb,
}

impl Photometric {
    pub fn samples_per_pixel(self) -> usize {
        match self {
            Photometric::Monochrome1 | Photometric::Monochrome2 => 1,
            Photometric::Rgb => 3,
        }
    }
}

/// Where a study came from.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub enum SourceFormat {
    Dicom {
        transfer_syntax_uid: String,
        transfer_syntax_name: String,
        has_file_meta: bool,
    },
    Raster {
        format: String,
    },
}

/// One frame of modality values, samples interleaved (R,G,B,R,G,B,... for colour).
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub values: Vec<f32>,
}

impl Frame {
    /// Smallest and largest value, ignoring NaN. `None` for an empty or all-NaN frame.
    pub fn min_max(&self) -> Option<(f32, f32)> {
        let mut range: Option<(f32, f32)> = None;
        for &value in self.values.iter().filter(|v| !v.is_nan()) {
            range = Some(match range {
                None => (value, value),
                Some((lo, hi)) => (lo.min(value), hi.max(value)),
            });
        }
        range
    }
}

/// A loaded image: frames of modality values plus what a viewer needs to show them.
#[derive(Clone, Debug)]
pub struct Study {
    pub path: PathBuf,
    pub format: SourceFormat,
    pub width: u32,
    pub height: u32,
    pub photometric: Photometric,
    /// The photometric interpretation as written in the file (e.g. "YBR_FULL_422").
    pub stored_photometric: String,
    pub frames: Vec<Frame>,
    /// The largest value a colour sample can take (255 for 8-bit RGB); used to scale colour.
    pub sample_max: f32,
    /// Row and column spacing in millimetres, when the file says.
    pub pixel_spacing_mm: Option<[f64; 2]>,
    /// The window the file recommends (first of several), if any.
    pub file_window: Option<WindowLevel>,
    pub voi_function: VoiFunction,
    /// Modality, sizes, coding: safe to show and export.
    pub summary: Summary,
    /// Patient-identifying fields: shown only when the user asks.
    pub identity: Identity,
}

/// Facts about an image that identify no patient.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Summary {
    pub modality: Option<String>,
    pub body_part: Option<String>,
    pub manufacturer: Option<String>,
    pub sop_class: Option<String>,
    pub bits_allocated: Option<u16>,
    pub bits_stored: Option<u16>,
    pub signed: Option<bool>,
    pub rescale_slope: Option<f64>,
    pub rescale_intercept: Option<f64>,
    pub rescale_type: Option<String>,
    pub slice_thickness_mm: Option<f64>,
    pub lossy: bool,
}

/// Patient-identifying DICOM fields. Never printed or exported unless the user asks.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Identity {
    pub fields: Vec<(String, String)>,
}

impl Study {
    pub fn frame_count(&self) -> usize {
        self.frames.len()
    }

    pub fn frame(&self, index: usize) -> Result<&Frame, ImagingError> {
        self.frames
            .get(index)
            .ok_or_else(|| ImagingError::NoSuchFrame {
                path: self.path.clone(),
                frame: index,
                frames: self.frames.len(),
            })
    }

    /// Whether bright stored values should show dark (MONOCHROME1).
    pub fn inverted(&self) -> bool {
        self.photometric == Photometric::Monochrome1
    }

    /// The window a viewer opens with: the file's, else the frame's min-max range.
    pub fn default_window(&self, frame: usize) -> WindowLevel {
        if let Some(window) = self.file_window {
            return window;
        }
        self.min_max_window(frame)
    }

    pub fn min_max_window(&self, frame: usize) -> WindowLevel {
        let (lo, hi) = self
            .frames
            .get(frame)
            .and_then(Frame::min_max)
            .unwrap_or((0.0, self.sample_max));
        window::min_max_window(lo as f64, hi as f64)
    }

    /// Resolve a [`VoiOption`] into the window and function used for rendering.
    pub fn resolve_window(&self, frame: usize, voi: &VoiOption) -> (WindowLevel, VoiFunction) {
        match voi {
            VoiOption::Default => match self.file_window {
                Some(window) => (window, self.voi_function),
                None => (self.min_max_window(frame), VoiFunction::Linear),
            },
            VoiOption::Custom(window) => (*window, VoiFunction::Linear),
            VoiOption::Preset(preset) => (preset.window(), VoiFunction::Linear),
            VoiOption::MinMax => (self.min_max_window(frame), VoiFunction::Linear),
        }
    }
}

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
    let head = read_head(path, 512)?;
    if dicom::has_dicm_magic(&head) {
        return dicom::load(path);
    }
    if let Some(format) = raster::detect(&head) {
        return raster::load(path, format);
    }
    if dicom::looks_like_bare_dataset(&head) {
        return dicom::load(path);
    }
    Err(ImagingError::UnknownFormat {
        path: path.to_path_buf(),
    })
}

fn read_head(path: &Path, len: usize) -> Result<Vec<u8>, ImagingError> {
    use std::io::Read;
    let io_error = |source| ImagingError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io_error)?;
    let mut head = Vec::with_capacity(len);
    file.take(len as u64)
        .read_to_end(&mut head)
        .map_err(io_error)?;
    Ok(head)
}

/// Render one frame to 8-bit RGB for display or for the model: window/level for greyscale
/// (inverted for MONOCHROME1), plain scaling for colour.
pub fn render_rgb8(
    study: &Study,
    frame: usize,
    voi: &VoiOption,
) -> Result<image::RgbImage, ImagingError> {
    let pixels = study.frame(frame)?;
    let (width, height) = (study.width, study.height);
    let mut out = image::RgbImage::new(width, height);
    match study.photometric {
        Photometric::Monochrome1 | Photometric::Monochrome2 => {
            let (window, function) = study.resolve_window(frame, voi);
            let invert = study.inverted();
            for (pixel, &value) in out.pixels_mut().zip(&pixels.values) {
                let mut level = window::apply_window(value as f64, window, function);
                if invert {
                    level = 1.0 - level;
                }
                let grey = (level * 255.0).round().clamp(0.0, 255.0) as u8;
                *pixel = image::Rgb([grey, grey, grey]);
            }
        }
        Photometric::Rgb => {
            let scale = 255.0 / study.sample_max.max(1.0);
            for (pixel, rgb) in out.pixels_mut().zip(pixels.values.chunks_exact(3)) {
                let channel = |v: f32| (v * scale).round().clamp(0.0, 255.0) as u8;
                *pixel = image::Rgb([channel(rgb[0]), channel(rgb[1]), channel(rgb[2])]);
            }
        }
    }
    Ok(out)
}

/// Write a PNG so that a reader never sees a half-written file: write beside it, then rename.
pub fn write_png_atomically(img: &image::RgbImage, out: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let dir = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".fovea-")
        .suffix(".png.partial")
        .tempfile_in(&dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    {
        let mut writer = std::io::BufWriter::new(temp.as_file_mut());
        img.write_to(&mut writer, image::ImageFormat::Png)
            .with_context(|| format!("cannot encode PNG for {}", out.display()))?;
        use std::io::Write;
        writer
            .flush()
            .with_context(|| format!("cannot write {}", out.display()))?;
    }
    temp.persist(out)
        .map_err(|err| err.error)
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

//! A loaded image: frames of modality values (Hounsfield units for CT), display defaults
//! (window, MONOCHROME1 inversion, pixel spacing), a summary with no patient-identifying
//! fields, and the identifying fields kept apart. Also the one way to 8-bit RGB.

use std::path::PathBuf;

use super::error::ImagingError;
use super::window::{self, VoiFunction, VoiOption, WindowLevel};

/// Images wider or taller than this are refused before their pixels are allocated.
pub const MAX_SIDE_PX: u32 = 16_384;
/// Decoded pixel buffers larger than this (bytes) are refused.
pub const MAX_DECODED_BYTES: u64 = 4 << 30;

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
    /// Row and column spacing in millimetres, when the file gives a usable one (both positive
    /// and finite); a spacing of 0 or a missing one is unknown: sizes stay in pixels.
    pub pixel_spacing_mm: Option<[f64; 2]>,
    /// Where the spacing comes from, or why it is unknown, in words for the user: "Pixel
    /// Spacing", "Imager Pixel Spacing (at the detector)", "Pixel Spacing is 0 x 0 mm".
    pub pixel_spacing_note: Option<String>,
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

//! PNG, JPEG, TIFF and BMP through the `image` crate.
//!
//! Sizes are checked from the header before any pixel is allocated, so a 30000x30000 header
//! bomb is refused in microseconds. 16-bit greyscale keeps its full range (values 0..65535);
//! alpha is dropped (medical images carry no meaningful transparency).

use std::path::Path;

use image::{DynamicImage, ImageFormat, ImageReader};

use super::error::ImagingError;
use super::study::{
    Frame, Identity, Photometric, SourceFormat, Study, Summary, MAX_DECODED_BYTES, MAX_SIDE_PX,
};
use super::window::{self, VoiFunction};

/// Recognise a raster format from its first bytes.
pub fn detect(head: &[u8]) -> Option<ImageFormat> {
    let format = image::guess_format(head).ok()?;
    matches!(
        format,
        ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Tiff | ImageFormat::Bmp
    )
    .then_some(format)
}

pub fn load(path: &Path, format: ImageFormat) -> Result<Study, ImagingError> {
    let open = || {
        let file = std::fs::File::open(path).map_err(|source| ImagingError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut reader = ImageReader::new(std::io::BufReader::new(file));
        reader.set_format(format);
        Ok::<_, ImagingError>(reader)
    };
    let format_name = format!("{format:?}").to_uppercase();
    let (width, height) = open()?.into_dimensions().map_err(|err| {
        ImagingError::raster(
            path,
            format!("cannot read the {format_name} header ({err})"),
        )
    })?;
    if width == 0 || height == 0 {
        return Err(ImagingError::raster(
            path,
            format!("{format_name} image has zero size {width}x{height}"),
        ));
    }
    if width > MAX_SIDE_PX || height > MAX_SIDE_PX {
        return Err(ImagingError::raster(
            path,
            format!("{format_name} image is {width}x{height} px, larger than fovea's limit of {MAX_SIDE_PX} px a side"),
        ));
    }
    let mut reader = open()?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE_PX);
    limits.max_image_height = Some(MAX_SIDE_PX);
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    reader.limits(limits);
    let decoded = reader.decode().map_err(|err| {
        ImagingError::raster(path, format!("cannot decode {format_name} ({err})"))
    })?;
    Ok(study_from_image(path, decoded, format_name))
}

/// Build a study from an already decoded image (also used for images made in memory).
pub fn study_from_image(path: &Path, decoded: DynamicImage, format_name: String) -> Study {
    let (width, height) = (decoded.width(), decoded.height());
    let is_grey = !decoded.color().has_color();
    let is_16bit = decoded.color().bytes_per_pixel() / decoded.color().channel_count() > 1;
    let (photometric, values, sample_max): (Photometric, Vec<f32>, f32) = match (is_grey, is_16bit)
    {
        (true, false) => (
            Photometric::Monochrome2,
            decoded
                .to_luma8()
                .into_raw()
                .into_iter()
                .map(f32::from)
                .collect(),
            255.0,
        ),
        (true, true) => (
            Photometric::Monochrome2,
            decoded
                .to_luma16()
                .into_raw()
                .into_iter()
                .map(f32::from)
                .collect(),
            65535.0,
        ),
        (false, false) => (
            Photometric::Rgb,
            decoded
                .to_rgb8()
                .into_raw()
                .into_iter()
                .map(f32::from)
                .collect(),
            255.0,
        ),
        (false, true) => (
            Photometric::Rgb,
            decoded
                .to_rgb16()
                .into_raw()
                .into_iter()
                .map(f32::from)
                .collect(),
            65535.0,
        ),
    };
    let stored_photometric = match photometric {
        Photometric::Rgb => "RGB",
        _ => "MONOCHROME2",
    }
    .to_string();
    let bits = if is_16bit { 16 } else { 8 };
    Study {
        path: path.to_path_buf(),
        format: SourceFormat::Raster {
            format: format_name.clone(),
        },
        width,
        height,
        photometric,
        stored_photometric,
        frames: vec![Frame { values }],
        sample_max,
        pixel_spacing_mm: None,
        pixel_spacing_note: None,
        // An ordinary picture is shown as it is: the full sample range, not its min-max.
        file_window: match photometric {
            Photometric::Rgb => None,
            _ => Some(window::min_max_window(0.0, sample_max as f64)),
        },
        voi_function: VoiFunction::Linear,
        summary: Summary {
            modality: None,
            bits_allocated: Some(bits),
            bits_stored: Some(bits),
            signed: Some(false),
            lossy: format_name == "JPEG",
            ..Summary::default()
        },
        identity: Identity::default(),
    }
}

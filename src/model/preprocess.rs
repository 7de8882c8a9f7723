//! Image preprocessing for CLIP vision towers, bit-compatible with what the checkpoints were
//! trained with: PIL's bicubic resampling (transformers' `CLIPImageProcessor` resizes with
//! PIL), centre crop, rescale and normalise. Original LLaVA / HuatuoGPT-Vision first pad the
//! image to a square with the processor's mean colour (`expand2square`).
//!
//! The resampler follows Pillow's `Resample.c`: separable, horizontal pass first, 8-bit
//! intermediate, filter support widened by the scale when downsampling, and fixed-point
//! coefficients of 22 fractional bits. Matching it matters: pixel values feed every
//! attention map fovea shows.

use image::RgbImage;

/// How the image is brought to the tower's square input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Preprocess {
    /// Pad to a square with the mean colour (centred), then resize (original LLaVA "pad").
    PadMeanResize,
    /// Resize the shortest edge, then centre-crop (llava-hf's CLIPImageProcessor default).
    ResizeCenterCrop,
    /// Resize to the square input whatever the aspect ratio (Gemma 3's image processor).
    Resize,
}

/// Pillow's resampling filter (`resample` in a processor config: 2 bilinear, 3 bicubic).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Resample {
    Bilinear,
    Bicubic,
}

impl Resample {
    /// PIL's enum value as processor configs write it; `None` for filters fovea lacks.
    pub fn from_pil(value: u64) -> Option<Resample> {
        match value {
            2 => Some(Resample::Bilinear),
            3 => Some(Resample::Bicubic),
            _ => None,
        }
    }

    fn support(self) -> f64 {
        match self {
            Resample::Bilinear => 1.0,
            Resample::Bicubic => 2.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            Resample::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Resample::Bicubic => bicubic_filter(x),
        }
    }
}

impl Preprocess {
    pub fn name(self, size: u32) -> String {
        match self {
            Preprocess::PadMeanResize => format!("pad-mean-resize-{size}"),
            Preprocess::ResizeCenterCrop => format!("resize-crop-{size}"),
            Preprocess::Resize => format!("resize-{size}"),
        }
    }
}

/// What a CLIP image processor does, from `preprocessor_config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageProcessor {
    pub size: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub rescale_factor: f32,
    pub mode: Preprocess,
    pub resample: Resample,
}

/// A folder's image processor settings: `preprocessor_config.json`, or the `image_processor`
/// inside transformers 5's `processor_config.json`.
pub fn processor_json(dir: &std::path::Path) -> Option<serde_json::Value> {
    processor_file(dir).map(|(_, config)| config)
}

/// [`processor_json`] with the file it came from.
pub fn processor_file(dir: &std::path::Path) -> Option<(std::path::PathBuf, serde_json::Value)> {
    let read = |name: &str| -> Option<(std::path::PathBuf, serde_json::Value)> {
        let path = dir.join(name);
        let value = serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()?;
        Some((path, value))
    };
    read("preprocessor_config.json").or_else(|| {
        read("processor_config.json")
            .map(|(path, p)| (path, p.get("image_processor").cloned().unwrap_or(p)))
    })
}

/// Overwrite `mean`, `std` and `rescale` with what a processor config sets.
pub fn read_normalisation(
    config: &serde_json::Value,
    mean: &mut [f32; 3],
    std: &mut [f32; 3],
    rescale: &mut f32,
) {
    let triple = |key: &str| -> Option<[f32; 3]> {
        let list = config.get(key)?.as_array()?;
        (list.len() == 3).then(|| [0, 1, 2].map(|i| list[i].as_f64().unwrap_or(0.0) as f32))
    };
    if let Some(value) = triple("image_mean") {
        *mean = value;
    }
    if let Some(value) = triple("image_std") {
        *std = value;
    }
    if let Some(factor) = config
        .get("rescale_factor")
        .and_then(serde_json::Value::as_f64)
    {
        *rescale = factor as f32;
    }
}

/// Where each model input pixel came from, so regions in original pixels can be mapped to
/// image tokens: `input = (original - offset) * scale` (per axis).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PixelMapping {
    pub scale: [f64; 2],
    pub offset_px: [f64; 2],
    /// The model input's (width, height) in pixels.
    pub input: [u32; 2],
}

impl PixelMapping {
    /// Map a point in original image pixels to model input pixels.
    pub fn to_input(&self, x: f64, y: f64) -> (f64, f64) {
        (
            (x - self.offset_px[0]) * self.scale[0],
            (y - self.offset_px[1]) * self.scale[1],
        )
    }
}

impl ImageProcessor {
    pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
    pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

    pub fn clip(size: u32, mode: Preprocess) -> Self {
        ImageProcessor {
            size,
            mean: Self::CLIP_MEAN,
            std: Self::CLIP_STD,
            rescale_factor: 1.0 / 255.0,
            mode,
            resample: Resample::Bicubic,
        }
    }

    /// The padded/resized/cropped RGB8 image the tower sees, and how it maps to the original.
    pub fn prepare(&self, img: &RgbImage) -> (RgbImage, PixelMapping) {
        match self.mode {
            Preprocess::PadMeanResize => {
                let background = self.mean.map(|m| (m * 255.0) as u8); // int(x*255) as LLaVA
                let (square, offset) = expand_to_square(img, background);
                let side = square.width();
                let resized = resize_shortest_edge(&square, self.size);
                let cropped = center_crop(&resized, self.size);
                let scale = self.size as f64 / side as f64;
                (
                    cropped,
                    PixelMapping {
                        scale: [scale, scale],
                        offset_px: [-(offset.0 as f64), -(offset.1 as f64)],
                        input: [self.size, self.size],
                    },
                )
            }
            Preprocess::Resize => {
                let resized = pil_resize(img, self.size, self.size, self.resample);
                (
                    resized,
                    PixelMapping {
                        scale: [
                            self.size as f64 / img.width() as f64,
                            self.size as f64 / img.height() as f64,
                        ],
                        offset_px: [0.0, 0.0],
                        input: [self.size, self.size],
                    },
                )
            }
            Preprocess::ResizeCenterCrop => {
                let resized = resize_shortest_edge(img, self.size);
                let (rw, rh) = resized.dimensions();
                let cropped = center_crop(&resized, self.size);
                let scale_x = rw as f64 / img.width() as f64;
                let scale_y = rh as f64 / img.height() as f64;
                let left = rw.saturating_sub(self.size) / 2;
                let top = rh.saturating_sub(self.size) / 2;
                (
                    cropped,
                    PixelMapping {
                        scale: [scale_x, scale_y],
                        offset_px: [left as f64 / scale_x, top as f64 / scale_y],
                        input: [self.size, self.size],
                    },
                )
            }
        }
    }

    /// Channel-first normalised values (3 x size x size), as `pixel_values[0]`.
    pub fn normalise(&self, prepared: &RgbImage) -> Vec<f32> {
        let side = (prepared.width() * prepared.height()) as usize;
        let mut out = vec![0f32; 3 * side];
        for (index, pixel) in prepared.pixels().enumerate() {
            for channel in 0..3 {
                let value = pixel[channel] as f32 * self.rescale_factor;
                out[channel * side + index] = (value - self.mean[channel]) / self.std[channel];
            }
        }
        out
    }
}

/// LLaVA's `expand2square`: paste the image centred on a square of the background colour.
pub fn expand_to_square(img: &RgbImage, background: [u8; 3]) -> (RgbImage, (u32, u32)) {
    let (width, height) = img.dimensions();
    if width == height {
        return (img.clone(), (0, 0));
    }
    let side = width.max(height);
    let offset = ((side - width) / 2, (side - height) / 2);
    let mut square = RgbImage::from_pixel(side, side, image::Rgb(background));
    image::imageops::replace(&mut square, img, offset.0 as i64, offset.1 as i64);
    (square, offset)
}

/// transformers' `get_resize_output_image_size(default_to_square=False)`: the short side
/// becomes `size`, the long side `int(size * long / short)`.
pub fn resize_shortest_edge(img: &RgbImage, size: u32) -> RgbImage {
    let (width, height) = img.dimensions();
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    let new_long = (size as u64 * long as u64 / short.max(1) as u64) as u32;
    let (new_width, new_height) = if width <= height {
        (size, new_long)
    } else {
        (new_long, size)
    };
    pil_resize_bicubic(img, new_width, new_height)
}

/// transformers' `center_crop`: top-left at ((h - size) / 2, (w - size) / 2), floor.
pub fn center_crop(img: &RgbImage, size: u32) -> RgbImage {
    let (width, height) = img.dimensions();
    if width == size && height == size {
        return img.clone();
    }
    let left = width.saturating_sub(size) / 2;
    let top = height.saturating_sub(size) / 2;
    image::imageops::crop_imm(img, left, top, size.min(width), size.min(height)).to_image()
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`: per output pixel the first input
/// index and fixed-point weights.
fn precompute_coefficients(
    in_size: u32,
    out_size: u32,
    filter: Resample,
) -> (Vec<(usize, usize)>, Vec<i32>, usize) {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = filter.support() * filter_scale;
    let kernel_size = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size as usize);
    let mut weights = vec![0i32; out_size as usize * kernel_size];
    let mut row = vec![0f64; kernel_size];
    for out_index in 0..out_size as usize {
        let center = (out_index as f64 + 0.5) * scale;
        let inverse_scale = 1.0 / filter_scale;
        let min = ((center - support + 0.5) as i64).max(0) as usize;
        let max = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let count = max - min;
        let mut total = 0.0;
        for (k, weight) in row.iter_mut().enumerate().take(count) {
            *weight = filter.weight((k as f64 + min as f64 - center + 0.5) * inverse_scale);
            total += *weight;
        }
        for k in 0..kernel_size {
            let w = if k < count && total != 0.0 {
                row[k] / total
            } else {
                0.0
            };
            let fixed = w * (1u64 << PRECISION_BITS) as f64;
            weights[out_index * kernel_size + k] = if w < 0.0 {
                (-0.5 + fixed) as i32
            } else {
                (0.5 + fixed) as i32
            };
        }
        bounds.push((min, count));
    }
    (bounds, weights, kernel_size)
}

fn clip8(value: i64) -> u8 {
    if value >= (1i64 << PRECISION_BITS << 8) {
        255
    } else if value <= 0 {
        0
    } else {
        (value >> PRECISION_BITS) as u8
    }
}

/// Pillow's `Image.resize(size, Image.BICUBIC)` for RGB8, exactly, as Pillow 13 does it: two
/// separable passes with 8-bit rounding in between, the horizontal one first unless the height
/// shrinks by more than twice as many pixels as the width (then the vertical one; the order
/// changes the rounding, by up to 16 grey levels on a sharp pattern).
pub fn pil_resize_bicubic(img: &RgbImage, out_width: u32, out_height: u32) -> RgbImage {
    pil_resize(img, out_width, out_height, Resample::Bicubic)
}

/// Pillow's `Image.resize(size, filter)` for RGB8, with the same two passes and pass order as
/// [`pil_resize_bicubic`].
pub fn pil_resize(img: &RgbImage, out_width: u32, out_height: u32, filter: Resample) -> RgbImage {
    let (in_width, in_height) = img.dimensions();
    let shrink_y = in_height as i64 - out_height as i64;
    let shrink_x = in_width as i64 - out_width as i64;
    let vertical_first = shrink_y > 0 && shrink_y > 2 * shrink_x;
    if vertical_first {
        let tall = resample_vertical(img, out_height, filter);
        resample_horizontal(&tall, out_width, filter)
    } else {
        let wide = resample_horizontal(img, out_width, filter);
        resample_vertical(&wide, out_height, filter)
    }
}

/// One horizontal pass of Pillow's resampling (a copy when the width stays).
fn resample_horizontal(img: &RgbImage, out_width: u32, filter: Resample) -> RgbImage {
    let (in_width, in_height) = img.dimensions();
    if out_width == in_width {
        return img.clone();
    }
    let (bounds, weights, kernel) = precompute_coefficients(in_width, out_width, filter);
    let mut out = RgbImage::new(out_width, in_height);
    let source = img.as_raw();
    for y in 0..in_height as usize {
        for (x, &(min, count)) in bounds.iter().enumerate() {
            let k = &weights[x * kernel..x * kernel + count];
            for channel in 0..3 {
                let mut sum: i64 = 1 << (PRECISION_BITS - 1);
                for (j, &w) in k.iter().enumerate() {
                    sum +=
                        source[(y * in_width as usize + min + j) * 3 + channel] as i64 * w as i64;
                }
                out.as_mut()[(y * out_width as usize + x) * 3 + channel] = clip8(sum);
            }
        }
    }
    out
}

/// One vertical pass of Pillow's resampling (a copy when the height stays).
fn resample_vertical(img: &RgbImage, out_height: u32, filter: Resample) -> RgbImage {
    let (width, in_height) = img.dimensions();
    if out_height == in_height {
        return img.clone();
    }
    let (bounds, weights, kernel) = precompute_coefficients(in_height, out_height, filter);
    let mut out = RgbImage::new(width, out_height);
    let source = img.as_raw();
    for (y, &(min, count)) in bounds.iter().enumerate() {
        let k = &weights[y * kernel..y * kernel + count];
        for x in 0..width as usize {
            for channel in 0..3 {
                let mut sum: i64 = 1 << (PRECISION_BITS - 1);
                for (j, &w) in k.iter().enumerate() {
                    sum += source[((min + j) * width as usize + x) * 3 + channel] as i64 * w as i64;
                }
                out.as_mut()[(y * width as usize + x) * 3 + channel] = clip8(sum);
            }
        }
    }
    out
}

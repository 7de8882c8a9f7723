//! Qwen2-VL / Qwen2.5-VL / Qwen3-VL image processing, as transformers'
//! `Qwen2VLImageProcessorPil`: `smart_resize` to multiples of patch x merge, PIL bicubic,
//! rescale and normalise, then patches flattened in merge-block order with the image repeated
//! over the temporal patch (an image is two identical frames).

use anyhow::{bail, Result};
use image::RgbImage;

use crate::model::preprocess::{pil_resize_bicubic, PixelMapping};

/// What `preprocessor_config.json` says (with transformers' defaults).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct QwenProcessor {
    pub min_pixels: u64,
    pub max_pixels: u64,
    pub patch_size: usize,
    pub merge_size: usize,
    pub temporal_patch_size: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub rescale_factor: f32,
}

/// One image ready for the ViT.
#[derive(Clone, Debug)]
pub struct QwenPixels {
    /// (patches, channels x temporal x patch x patch), patches in merge-block order.
    pub patches: Vec<f32>,
    pub patch_dim: usize,
    /// Patches per column and per row (`image_grid_thw[1..]`).
    pub grid_h: usize,
    pub grid_w: usize,
    pub mapping: PixelMapping,
}

/// transformers' `smart_resize`: (height, width) -> (resized height, resized width), both
/// multiples of `factor`, their product within [min_pixels, max_pixels], the aspect ratio kept
/// as closely as possible. Python's `round` rounds half to even; so does this.
pub fn smart_resize(
    height: u32,
    width: u32,
    factor: u32,
    min_pixels: u64,
    max_pixels: u64,
) -> Result<(u32, u32)> {
    if height == 0 || width == 0 {
        bail!("the image is empty ({width}x{height})");
    }
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    if h.max(w) / h.min(w) > 200.0 {
        bail!(
            "the image's aspect ratio must be below 200 for this model, got {:.0} ({width}x{height})",
            h.max(w) / h.min(w)
        );
    }
    let mut h_bar = (h / f).round_ties_even() * f;
    let mut w_bar = (w / f).round_ties_even() * f;
    if h_bar * w_bar > max_pixels as f64 {
        let beta = ((h * w) / max_pixels as f64).sqrt();
        h_bar = f.max((h / beta / f).floor() * f);
        w_bar = f.max((w / beta / f).floor() * f);
    } else if h_bar * w_bar < min_pixels as f64 {
        let beta = (min_pixels as f64 / (h * w)).sqrt();
        h_bar = (h * beta / f).ceil() * f;
        w_bar = (w * beta / f).ceil() * f;
    }
    Ok((h_bar as u32, w_bar as u32))
}

impl QwenProcessor {
    /// transformers' defaults for Qwen2-VL and Qwen2.5-VL (patch 14, merge 2).
    pub fn qwen2_defaults() -> Self {
        QwenProcessor {
            min_pixels: 56 * 56,
            max_pixels: 28 * 28 * 1280,
            patch_size: 14,
            merge_size: 2,
            temporal_patch_size: 2,
            mean: crate::model::preprocess::ImageProcessor::CLIP_MEAN,
            std: crate::model::preprocess::ImageProcessor::CLIP_STD,
            rescale_factor: 1.0 / 255.0,
        }
    }

    /// What Qwen3-VL's published `preprocessor_config.json` says (patch 16, mean and std 0.5,
    /// `size: {shortest_edge: 65536, longest_edge: 16777216}`).
    pub fn qwen3_defaults() -> Self {
        QwenProcessor {
            min_pixels: 65536,
            max_pixels: 16777216,
            patch_size: 16,
            mean: [0.5; 3],
            std: [0.5; 3],
            ..QwenProcessor::qwen2_defaults()
        }
    }

    pub fn factor(&self) -> u32 {
        (self.patch_size * self.merge_size) as u32
    }

    /// The (height, width) an image of `width` x `height` is resized to.
    pub fn resized(&self, width: u32, height: u32) -> Result<(u32, u32)> {
        smart_resize(
            height,
            width,
            self.factor(),
            self.min_pixels,
            self.max_pixels,
        )
    }

    /// The (rows, cols) of image tokens an image of `width` x `height` becomes.
    pub fn token_grid(&self, width: u32, height: u32) -> Result<(usize, usize)> {
        let (h, w) = self.resized(width, height)?;
        let side = self.factor() as usize;
        Ok((h as usize / side, w as usize / side))
    }

    /// The image as the ViT sees it (resized), and how it maps to the original.
    pub fn resize(&self, img: &RgbImage) -> Result<(RgbImage, PixelMapping)> {
        let (width, height) = img.dimensions();
        let (rh, rw) = self.resized(width, height)?;
        let resized = if (rw, rh) == (width, height) {
            img.clone()
        } else {
            pil_resize_bicubic(img, rw, rh)
        };
        let mapping = PixelMapping {
            scale: [rw as f64 / width as f64, rh as f64 / height as f64],
            offset_px: [0.0, 0.0],
            input: [rw, rh],
        };
        Ok((resized, mapping))
    }

    /// Resize, normalise and patchify one RGB image.
    pub fn prepare(&self, img: &RgbImage) -> Result<QwenPixels> {
        let (resized, mapping) = self.resize(img)?;
        let [rw, rh] = mapping.input;
        let (p, m, t) = (self.patch_size, self.merge_size, self.temporal_patch_size);
        let (rw, rh) = (rw as usize, rh as usize);
        let (grid_h, grid_w) = (rh / p, rw / p);
        let patch_dim = 3 * t * p * p;
        let raw = resized.as_raw();
        let value = |channel: usize, y: usize, x: usize| -> f32 {
            let byte = raw[(y * rw + x) * 3 + channel] as f32;
            (byte * self.rescale_factor - self.mean[channel]) / self.std[channel]
        };
        let mut patches = Vec::with_capacity(grid_h * grid_w * patch_dim);
        for block_row in 0..grid_h / m {
            for block_col in 0..grid_w / m {
                for i in 0..m {
                    for j in 0..m {
                        let (y0, x0) = ((block_row * m + i) * p, (block_col * m + j) * p);
                        for channel in 0..3 {
                            for _frame in 0..t {
                                for py in 0..p {
                                    for px in 0..p {
                                        patches.push(value(channel, y0 + py, x0 + px));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(QwenPixels {
            patches,
            patch_dim,
            grid_h,
            grid_w,
            mapping,
        })
    }

    /// For the record: the limits used.
    pub fn describe(&self) -> String {
        format!(
            "smart-resize-{}px-{}..{}px2",
            self.factor(),
            self.min_pixels,
            self.max_pixels
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smart_resize_rounds_half_to_even_as_python() {
        // 70 / 28 = 2.5 -> 2 (Python round), 126 / 28 = 4.5 -> 4; 56 x 112 >= min.
        assert_eq!(
            smart_resize(70, 126, 28, 56 * 56, 1 << 30).unwrap(),
            (56, 112)
        );
        // 42 / 28 = 1.5 -> 2.
        assert_eq!(smart_resize(42, 42, 28, 0, 1 << 30).unwrap(), (56, 56));
    }

    #[test]
    fn smart_resize_clamps_to_the_pixel_budget() {
        let (h, w) = smart_resize(1000, 800, 28, 3136, 28 * 28 * 40).unwrap();
        assert!(h as u64 * w as u64 <= 28 * 28 * 40);
        assert_eq!((h % 28, w % 28), (0, 0));
        let (h, w) = smart_resize(10, 10, 28, 3136, 1 << 30).unwrap();
        assert!(h as u64 * w as u64 >= 3136);
        assert!(smart_resize(1, 300, 28, 0, 1 << 30).is_err());
    }
}

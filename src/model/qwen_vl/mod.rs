//! Qwen2.5-VL (`Qwen2_5_VLForConditionalGeneration`: Lingshu, HuatuoGPT-Vision-Qwen2.5VL) and
//! Qwen3-VL (`Qwen3VLForConditionalGeneration`): the native-resolution image processor, the
//! two ViTs (windowed for 2.5; DeepStack for 3) and the 3-D rotary positions (M-RoPE) of a
//! prompt with one image.
//!
//! An image of any shape becomes `rows x cols` tokens (`smart_resize` to multiples of 28 px for
//! Qwen2.5-VL, 32 px for Qwen3-VL; 2 x 2 patches per token), framed by `<|vision_start|>` and
//! `<|vision_end|>` in the prompt. Both generations place the image the same way.
//! Text before the image has positions 0..s on all three axes; image token (r, c) has
//! (s, s + r, s + c); text after the image resumes at s + max(rows, cols).

pub mod processor;
pub mod vision;
pub mod vision3;

use std::path::Path;

use super::rope::Position;

pub use processor::{smart_resize, QwenPixels, QwenProcessor};
pub use vision::{QwenVision, QwenVisionConfig, QwenVisionKind};
pub use vision3::{Qwen3Vision, Qwen3VisionOutput};

/// Token ids that frame an image in a Qwen-VL prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct QwenTokens {
    pub image_pad: u32,
    pub vision_start: u32,
    pub vision_end: u32,
}

/// Rotary positions of `before` text tokens followed by a `rows x cols` image.
pub fn prefix_positions(before: usize, rows: usize, cols: usize) -> Vec<Position> {
    let mut positions: Vec<Position> = (0..before).map(|p| [p as u32; 3]).collect();
    let s = before as u32;
    for row in 0..rows as u32 {
        for col in 0..cols as u32 {
            positions.push([s, s + row, s + col]);
        }
    }
    positions
}

/// The rotary position of the first text token after the image.
pub fn after_image_position(before: usize, rows: usize, cols: usize) -> usize {
    before + rows.max(cols)
}

/// The image processor from `preprocessor_config.json` (`min_pixels`/`max_pixels`, or
/// transformers 5's `size: {shortest_edge, longest_edge}`), with transformers' defaults
/// (Qwen3-VL: the published checkpoints' values, as transformers has no defaults of its own).
pub fn processor_config(dir: &Path, vision: &QwenVisionConfig) -> QwenProcessor {
    let defaults = match vision.kind {
        QwenVisionKind::Qwen25 => QwenProcessor::qwen2_defaults(),
        QwenVisionKind::Qwen3 => QwenProcessor::qwen3_defaults(),
    };
    let mut processor = QwenProcessor {
        patch_size: vision.patch_size,
        merge_size: vision.spatial_merge_size,
        temporal_patch_size: vision.temporal_patch_size,
        ..defaults
    };
    let Some(config) = super::preprocess::processor_json(dir) else {
        return processor;
    };
    let number = |keys: &[&str]| -> Option<u64> {
        keys.iter().find_map(|key| {
            let mut value = &config;
            for part in key.split('.') {
                value = value.get(part)?;
            }
            value.as_u64()
        })
    };
    if let Some(v) = number(&["min_pixels", "size.shortest_edge", "size.min_pixels"]) {
        processor.min_pixels = v;
    }
    if let Some(v) = number(&["max_pixels", "size.longest_edge", "size.max_pixels"]) {
        processor.max_pixels = v;
    }
    for (key, target) in [
        ("patch_size", &mut processor.patch_size),
        ("merge_size", &mut processor.merge_size),
        ("temporal_patch_size", &mut processor.temporal_patch_size),
    ] {
        if let Some(v) = number(&[key]) {
            *target = v as usize;
        }
    }
    super::preprocess::read_normalisation(
        &config,
        &mut processor.mean,
        &mut processor.std,
        &mut processor.rescale_factor,
    );
    processor
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_follow_get_rope_index() {
        // 2 text tokens, a 2 x 3 image: (2, 2 + r, 2 + c); text resumes at 2 + 3.
        let p = prefix_positions(2, 2, 3);
        assert_eq!(p[0], [0, 0, 0]);
        assert_eq!(p[2], [2, 2, 2]);
        assert_eq!(p[4], [2, 2, 4]);
        assert_eq!(p[7], [2, 3, 4]);
        assert_eq!(after_image_position(2, 2, 3), 5);
    }
}

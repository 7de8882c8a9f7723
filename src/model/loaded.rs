//! A loaded model: the vision side (CLIP tower and projector, or the Qwen-VL ViT), the decoder
//! and the tokenizer, with what turns an image and a question into the model's inputs.
//!
//! Long because loading (detection, the memory check, the weight cache, each family's vision
//! side, the decoder, the tokenizer) and the methods every caller needs on the loaded model
//! live on one type; the per-family parts move into the family folders with the tiled families.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;

use super::cache::{self, WeightCache};
use super::config::{Checkpoint, ImageSpec};
use super::decoder::Decoder;
use super::gemm::from_tensors::own_kernels;
use super::gemma3::{GemmaProjector, GemmaVision, SiglipTower};
use super::linear::{LoadPlan, LoadProgress, Quantize};
use super::preprocess::PixelMapping;
use super::prompt::{self, ImageSlot, PromptFormat, TokenisedPrompt};
use super::qwen_vl::{self, Qwen3Vision, QwenVision, QwenVisionKind};
use super::rope::Position;
use super::vision::{Projector, VisionTower};
use super::weights::{self, WeightFiles};
use super::{detect, memory};

/// The image side of a loaded model.
pub enum ImageEncoder {
    /// LLaVA: CLIP tower and projector.
    Clip {
        tower: VisionTower,
        projector: Projector,
    },
    /// Qwen2.5-VL: the ViT with its merger.
    Qwen(QwenVision),
    /// Qwen3-VL: the ViT with its merger and DeepStack mergers.
    Qwen3(Qwen3Vision),
    /// Gemma 3: SigLIP and the pooling projector.
    Gemma3(GemmaVision),
}

/// What the vision side gives for one image.
#[derive(Clone, Debug)]
pub struct ImageFeatures {
    /// The image tokens' input embeddings (N, D_text), row-major.
    pub tokens: Tensor,
    /// Qwen3-VL: DeepStack features (N, D_text), one per early decoder layer; else empty.
    pub deepstack: Vec<Tensor>,
}

/// An image ready for the vision tower, and what it becomes.
#[derive(Clone, Debug)]
pub struct PixelInput {
    /// CLIP: (1, 3, S, S). Qwen-VL: (patches, patch_dim), patches in merge-block order.
    pub values: Tensor,
    /// Image tokens (rows, cols).
    pub grid: (usize, usize),
    /// Qwen-VL: patches (rows, cols) before merging; CLIP: the token grid.
    pub patch_grid: (usize, usize),
    pub mapping: PixelMapping,
}

/// A loaded model: vision tower, projector, decoder and tokenizer, immutable and shareable.
pub struct Model {
    pub checkpoint: Checkpoint,
    pub image: ImageEncoder,
    pub decoder: Decoder,
    pub tokenizer: tokenizers::Tokenizer,
    pub chat_template: Option<String>,
    /// The tokenizer's (BOS, EOS) strings the chat template is rendered with.
    pub special_tokens: (String, String),
    pub device: Device,
    /// How the weights are kept, and what fell back to another precision while loading.
    pub quantize: Quantize,
    pub load_notes: Vec<String>,
}

fn prefixed<'a>(vb: &VarBuilder<'a>, prefix: &str) -> VarBuilder<'a> {
    let prefix = prefix.trim_end_matches('.');
    if prefix.is_empty() {
        vb.clone()
    } else {
        vb.pp(prefix)
    }
}

/// The load note where fovea's packed kernels do not run (ARM, Apple Silicon, x86-64 without
/// AVX2): candle quantizes while loading, and there is nothing for a weight cache to keep.
pub const NO_CACHE_HERE: &str = "no weight cache on this CPU: fovea's packed q8_0/q4k \
    kernels (x86-64 with AVX2 or AVX-512) are not used here, so candle's quantized kernels \
    (NEON on ARM) quantize the weights at every load";

impl Model {
    /// Load the checkpoint in `dir` on `device` at storage precision. `vision_tower` overrides
    /// `mm_vision_tower`.
    pub fn load(dir: &Path, vision_tower: Option<&Path>, device: &Device) -> Result<Self> {
        Model::load_with(dir, vision_tower, device, Quantize::None)
    }

    /// Load with the language model's linear layers and head quantized as `quantize` says,
    /// quantizing now (no weight cache read or written: what tests of the quantizer want).
    pub fn load_with(
        dir: &Path,
        vision_tower: Option<&Path>,
        device: &Device,
        quantize: Quantize,
    ) -> Result<Self> {
        Model::load_with_cache(dir, vision_tower, device, quantize, None, None)
    }

    /// As [`Model::load_with`], reporting each loaded layer to `progress` (which may cancel),
    /// with quantized weights kept in the user's weight cache (`cache::default_dir`): what the
    /// app, `inspect` and the research commands load with. Refuses, before reading any weight,
    /// a model that cannot fit in the memory available.
    pub fn load_with_progress(
        dir: &Path,
        vision_tower: Option<&Path>,
        device: &Device,
        quantize: Quantize,
        progress: Option<LoadProgress>,
    ) -> Result<Self> {
        let cache_dir = cache::default_dir();
        Model::load_with_cache(
            dir,
            vision_tower,
            device,
            quantize,
            progress,
            cache_dir.as_deref(),
        )
    }

    /// As [`Model::load_with_progress`], with the weight cache under `cache_dir` (`None`:
    /// quantize at every load, write nothing).
    pub fn load_with_cache(
        dir: &Path,
        vision_tower: Option<&Path>,
        device: &Device,
        quantize: Quantize,
        progress: Option<LoadProgress>,
        cache_dir: Option<&Path>,
    ) -> Result<Self> {
        if device.is_cpu() {
            // A FOVEA_CPU this CPU cannot run is refused before anything is read.
            super::gemm::tier::chosen().map_err(anyhow::Error::msg)?;
        }
        let checkpoint = detect::detect(dir, vision_tower)?;
        let files = WeightFiles::open(&checkpoint.weights)?;
        let vision_files = match &checkpoint.vision_weights {
            Some(paths) => Some(WeightFiles::open(paths)?),
            None => None,
        };
        if device.is_cpu() {
            memory::check_fits(&checkpoint, &files, vision_files.as_deref(), quantize)?;
        }
        let vb = weights::var_builder(&files, device);
        // Only fovea's own CPU kernels keep packed matrices; a cache that cannot even be
        // opened (an unreadable checkpoint file) only costs the quantizing.
        let weight_cache = match cache_dir {
            Some(cache_dir) if quantize != Quantize::None && own_kernels(device) => {
                WeightCache::open(cache_dir, dir, &checkpoint.weights, quantize.name())
                    .ok()
                    .map(Arc::new)
            }
            _ => None,
        };
        let plan = LoadPlan {
            files: Some(files),
            quantize,
            progress,
            cache: weight_cache.clone(),
            ..LoadPlan::default()
        };
        let (vision_vb, vision_plan) = match vision_files {
            Some(files) => {
                let vb = weights::var_builder(&files, device);
                let plan = LoadPlan {
                    files: Some(files),
                    ..plan.clone()
                };
                (vb, plan)
            }
            None => (vb.clone(), plan.clone()),
        };
        let missing = |part: &str| {
            let part = part.to_string();
            let layout = checkpoint.layout.name;
            move |err: candle_core::Error| -> anyhow::Error {
                if err.to_string().contains("loading cancelled") {
                    return anyhow::anyhow!("loading cancelled: {}", dir.display());
                }
                anyhow::Error::new(err).context(format!(
                    "{part} weights do not match the config ({layout} layout) in {}",
                    dir.display()
                ))
            }
        };
        let image = match &checkpoint.image {
            ImageSpec::Clip {
                vision,
                feature_layer,
                ..
            } => ImageEncoder::Clip {
                tower: VisionTower::new(
                    vision,
                    *feature_layer,
                    prefixed(&vision_vb, &checkpoint.layout.vision),
                    &vision_plan,
                )
                .map_err(missing("vision tower"))?,
                projector: Projector::new(
                    vision.hidden_size,
                    checkpoint.text.hidden_size,
                    prefixed(&vb, &checkpoint.layout.projector_first),
                    prefixed(&vb, &checkpoint.layout.projector_second),
                    &plan,
                )
                .map_err(missing("projector"))?,
            },
            ImageSpec::Qwen { vision, .. } => {
                let vb = prefixed(&vision_vb, &checkpoint.layout.vision);
                match vision.kind {
                    QwenVisionKind::Qwen25 => ImageEncoder::Qwen(
                        QwenVision::new(vision, vb, &vision_plan)
                            .map_err(missing("vision tower"))?,
                    ),
                    QwenVisionKind::Qwen3 => ImageEncoder::Qwen3(
                        Qwen3Vision::new(vision, vb, &vision_plan)
                            .map_err(missing("vision tower"))?,
                    ),
                }
            }
            ImageSpec::Gemma3 {
                vision,
                mm_tokens_per_image,
                ..
            } => ImageEncoder::Gemma3(GemmaVision {
                tower: SiglipTower::new(
                    vision,
                    prefixed(&vision_vb, &checkpoint.layout.vision),
                    &vision_plan,
                )
                .map_err(missing("SigLIP vision tower"))?,
                projector: GemmaProjector::new(
                    vision,
                    checkpoint.text.hidden_size,
                    *mm_tokens_per_image,
                    prefixed(&vb, &checkpoint.layout.projector_first),
                )
                .map_err(missing("multi-modal projector"))?,
            }),
        };
        let decoder = Decoder::new(
            &checkpoint.text,
            prefixed(&vb, &checkpoint.layout.text),
            prefixed(&vb, &checkpoint.layout.lm_head),
            &plan,
        )
        .map_err(missing("text decoder"))?;
        let tokenizer =
            tokenizers::Tokenizer::from_file(&checkpoint.tokenizer_file).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read the tokenizer ({e}): {}",
                    checkpoint.tokenizer_file.display()
                )
            })?;
        let chat_template = prompt::find_chat_template(dir);
        let mut load_notes = plan.notes.lock().map(|n| n.clone()).unwrap_or_default();
        if cache_dir.is_some()
            && quantize != Quantize::None
            && device.is_cpu()
            && !own_kernels(device)
        {
            load_notes.push(NO_CACHE_HERE.to_string());
        }
        if let Some(cache) = &weight_cache {
            if cache.needs_writing() {
                plan.report("writing the weight cache", 0, 1)?;
                cache.write();
            }
            if let Ok(notes) = cache.notes.lock() {
                load_notes.extend(notes.iter().cloned());
            }
        }
        Ok(Model {
            checkpoint,
            image,
            decoder,
            tokenizer,
            chat_template,
            special_tokens: prompt::special_tokens(dir),
            device: device.clone(),
            quantize,
            load_notes,
        })
    }

    /// The token grid when it is the same for every image (LLaVA), else `None` (Qwen-VL: it
    /// follows each image's shape; see [`Model::grid_for`]).
    pub fn fixed_grid(&self) -> Option<(usize, usize)> {
        self.checkpoint.fixed_grid()
    }

    /// The CPU tier fovea's kernels run at ("amx", "avx512-vnni", "avx2", "portable"), or
    /// `None` on a GPU (candle multiplies there).
    pub fn cpu_tier(&self) -> Option<&'static str> {
        self.device
            .is_cpu()
            .then(|| super::gemm::tier::current().name())
    }

    /// The checkpoint's storage dtype of the decoder's weights: "bf16", "f16" or "f32".
    pub fn weights_dtype_name(&self) -> &'static str {
        match self.decoder.weights_dtype {
            candle_core::DType::BF16 => "bf16",
            candle_core::DType::F16 => "f16",
            _ => "f32",
        }
    }

    /// Whether any image is resized to the square input whatever its aspect ratio (Gemma 3).
    pub fn stretches_image(&self) -> bool {
        matches!(self.checkpoint.image, ImageSpec::Gemma3 { .. })
    }

    /// The token grid (rows, cols) an image of `width` x `height` pixels becomes.
    pub fn grid_for(&self, width: u32, height: u32) -> Result<(usize, usize)> {
        self.checkpoint.grid_for(width, height)
    }

    /// The prompt for `question` with `image_tokens` image positions: in the checkpoint's own
    /// format, or raw (`<image>` marks the image span, no special tokens added).
    pub fn prompt(
        &self,
        question: &str,
        raw: bool,
        image_tokens: usize,
    ) -> Result<TokenisedPrompt> {
        let format = if raw {
            PromptFormat::Raw
        } else {
            self.checkpoint.prompt_format
        };
        let (bos, eos) = &self.special_tokens;
        let text = prompt::prompt_text(
            format,
            question,
            self.chat_template.as_deref(),
            (bos.as_str(), eos.as_str()),
        )?;
        let gemma_expansion;
        let slot = match &self.checkpoint.image {
            ImageSpec::Clip { .. } => ImageSlot::llava(image_tokens),
            ImageSpec::Qwen { tokens, .. } => ImageSlot {
                count: image_tokens,
                template_marker: "<|image_pad|>",
                raw_frame: Some((tokens.vision_start, tokens.vision_end)),
                template_expansion: None,
                bos: None,
            },
            ImageSpec::Gemma3 { tokens, .. } => {
                let token = |id: u32| -> Result<String> {
                    self.tokenizer.id_to_token(id).ok_or_else(|| {
                        anyhow::anyhow!(
                            "the tokenizer has no token {id} (config.json's image token ids): {}",
                            self.checkpoint.tokenizer_file.display()
                        )
                    })
                };
                let (boi, soft, eoi) = (
                    token(tokens.boi)?,
                    token(tokens.image_soft)?,
                    token(tokens.eoi)?,
                );
                gemma_expansion = (boi.clone(), format!("\n\n{boi}{soft}{eoi}\n\n"), soft);
                ImageSlot {
                    count: image_tokens,
                    template_marker: &gemma_expansion.2,
                    raw_frame: Some((tokens.boi, tokens.eoi)),
                    template_expansion: Some((&gemma_expansion.0, &gemma_expansion.1)),
                    bos: None,
                }
            }
        };
        let slot = ImageSlot {
            bos: Some(bos.as_str()),
            ..slot
        };
        prompt::tokenise(&self.tokenizer, &text, format, slot)
    }

    /// An RGB image as the vision tower's input, and how it maps to the original pixels.
    pub fn pixel_values(&self, img: &image::RgbImage) -> Result<PixelInput> {
        self.pixel_values_with(img, None)
    }

    /// As [`Model::pixel_values`], with Qwen-VL's (min_pixels, max_pixels) for this image
    /// only (ignored by fixed-grid models).
    pub fn pixel_values_with(
        &self,
        img: &image::RgbImage,
        limits: Option<(u64, u64)>,
    ) -> Result<PixelInput> {
        match &self.checkpoint.image {
            ImageSpec::Clip { processor, .. } => {
                let (prepared, mapping) = processor.prepare(img);
                let values = processor.normalise(&prepared);
                let size = processor.size as usize;
                let grid = self.fixed_grid().unwrap_or((0, 0));
                Ok(PixelInput {
                    values: Tensor::from_vec(values, (1, 3, size, size), &self.device)?,
                    grid,
                    patch_grid: grid,
                    mapping,
                })
            }
            ImageSpec::Gemma3 { processor, .. } => {
                let (prepared, mapping) = processor.prepare(img);
                let values = processor.normalise(&prepared);
                let size = processor.size as usize;
                let grid = self.fixed_grid().unwrap_or((0, 0));
                let patches = match &self.image {
                    ImageEncoder::Gemma3(vision) => vision.tower.cfg.grid_side(),
                    _ => 0,
                };
                Ok(PixelInput {
                    values: Tensor::from_vec(values, (1, 3, size, size), &self.device)?,
                    grid,
                    patch_grid: (patches, patches),
                    mapping,
                })
            }
            ImageSpec::Qwen { processor, .. } => {
                let mut processor = processor.clone();
                if let Some((min, max)) = limits {
                    (processor.min_pixels, processor.max_pixels) = (min, max);
                }
                let pixels = processor.prepare(img)?;
                let patches = pixels.grid_h * pixels.grid_w;
                let m = processor.merge_size;
                Ok(PixelInput {
                    values: Tensor::from_vec(
                        pixels.patches,
                        (patches, pixels.patch_dim),
                        &self.device,
                    )?,
                    grid: (pixels.grid_h / m, pixels.grid_w / m),
                    patch_grid: (pixels.grid_h, pixels.grid_w),
                    mapping: pixels.mapping,
                })
            }
        }
    }

    /// Input pixels per image-token side (28 for Qwen2.5-VL, 32 for Qwen3-VL, 14 for
    /// CLIP-L/14).
    pub fn token_side_px(&self) -> u32 {
        match &self.checkpoint.image {
            ImageSpec::Clip { vision, .. } => vision.patch_size as u32,
            ImageSpec::Qwen { processor, .. } => processor.factor(),
            ImageSpec::Gemma3 { processor, .. } => {
                let side = self.fixed_grid().map_or(1, |g| g.0.max(1)) as u32;
                processor.size / side
            }
        }
    }

    /// The Qwen-VL processor's (min_pixels, max_pixels); `None` for fixed-grid models.
    pub fn pixel_limits(&self) -> Option<(u64, u64)> {
        match &self.checkpoint.image {
            ImageSpec::Clip { .. } | ImageSpec::Gemma3 { .. } => None,
            ImageSpec::Qwen { processor, .. } => Some((processor.min_pixels, processor.max_pixels)),
        }
    }

    /// Replace the Qwen-VL processor's pixel limits (`None` keeps the checkpoint's).
    pub fn set_pixel_limits(&mut self, min: Option<u64>, max: Option<u64>) -> Result<()> {
        let arch = self.checkpoint.arch.clone();
        match &mut self.checkpoint.image {
            ImageSpec::Clip { vision, .. } => bail!(
                "--min-pixels / --max-pixels apply to models whose token grid follows the image (Qwen2.5-VL, Qwen3-VL); \
                 {arch} always sees {0} x {0} tokens",
                vision.grid_side()
            ),
            ImageSpec::Gemma3 { .. } => bail!(
                "--min-pixels / --max-pixels apply to models whose token grid follows the image (Qwen2.5-VL, Qwen3-VL); \
                 {arch} always sees {} x {} tokens",
                self.checkpoint.fixed_grid().map_or(0, |g| g.0),
                self.checkpoint.fixed_grid().map_or(0, |g| g.1)
            ),
            ImageSpec::Qwen { processor, .. } => {
                let min = min.unwrap_or(processor.min_pixels);
                let max = max.unwrap_or(processor.max_pixels);
                let one_token = u64::from(processor.factor()).pow(2);
                if max < one_token || min > max {
                    bail!(
                        "pixel limits {min}..{max} are impossible: max_pixels must be at least {one_token} \
                         (one image token) and not below min_pixels"
                    );
                }
                processor.min_pixels = min;
                processor.max_pixels = max;
                Ok(())
            }
        }
    }

    /// One line saying what an image of `width` x `height` becomes: tokens, the model input's
    /// pixels and, for Qwen-VL, the limits and the cost of encoding it.
    pub fn describe_image_plan(&self, width: u32, height: u32) -> Result<String> {
        let (rows, cols) = self.grid_for(width, height)?;
        let flops = self.image_flops((rows, cols));
        Ok(match &self.checkpoint.image {
            ImageSpec::Clip { processor, .. } => format!(
                "image tokens      {rows} x {cols} = {} ({width}x{height} px -> {1}x{1} px)",
                rows * cols,
                processor.size
            ),
            ImageSpec::Gemma3 { processor, .. } => format!(
                "image tokens      {rows} x {cols} = {} ({width}x{height} px -> {1}x{1} px, resized whatever the \
                 aspect ratio; {2} px a token); the vision tower costs {3:.1} GFLOP",
                rows * cols,
                processor.size,
                processor.size as usize / rows.max(1),
                flops / 1e9
            ),
            ImageSpec::Qwen { processor, .. } => {
                let side = processor.factor() as usize;
                format!(
                    "image tokens      {rows} x {cols} = {} ({width}x{height} px -> {}x{} px; min_pixels {}, \
                     max_pixels {}); the vision tower costs {:.1} GFLOP",
                    rows * cols,
                    cols * side,
                    rows * side,
                    processor.min_pixels,
                    processor.max_pixels,
                    flops / 1e9
                )
            }
        })
    }

    /// The RGB8 image the tower sees (padded, resized, cropped) and its mapping.
    pub fn prepare_image(&self, img: &image::RgbImage) -> Result<(image::RgbImage, PixelMapping)> {
        match &self.checkpoint.image {
            ImageSpec::Clip { processor, .. } | ImageSpec::Gemma3 { processor, .. } => {
                Ok(processor.prepare(img))
            }
            ImageSpec::Qwen { processor, .. } => processor.resize(img),
        }
    }

    /// Projected image features (N, D_text), one per image token, row-major.
    pub fn image_embeddings(&self, pixels: &PixelInput) -> Result<Tensor> {
        Ok(self.image_features(pixels)?.tokens)
    }

    /// The image tokens' embeddings and, for Qwen3-VL, the DeepStack features.
    pub fn image_features(&self, pixels: &PixelInput) -> Result<ImageFeatures> {
        let (h, w) = pixels.patch_grid;
        Ok(match &self.image {
            ImageEncoder::Clip { tower, projector } => ImageFeatures {
                tokens: projector.forward(&tower.forward(&pixels.values)?)?,
                deepstack: Vec::new(),
            },
            ImageEncoder::Qwen(vision) => ImageFeatures {
                tokens: vision.forward(&pixels.values, h, w)?,
                deepstack: Vec::new(),
            },
            ImageEncoder::Qwen3(vision) => {
                let out = vision.forward(&pixels.values, h, w)?;
                ImageFeatures {
                    tokens: out.tokens,
                    deepstack: out.deepstack,
                }
            }
            ImageEncoder::Gemma3(vision) => ImageFeatures {
                tokens: vision.forward(&pixels.values)?,
                deepstack: Vec::new(),
            },
        })
    }

    /// Multiply-adds x 2 of encoding one image of this grid (tower and projector).
    pub fn image_flops(&self, pixels_grid: (usize, usize)) -> f64 {
        let text = self.checkpoint.text.hidden_size as f64;
        match &self.checkpoint.image {
            ImageSpec::Clip {
                vision,
                feature_layer,
                ..
            } => {
                let n = (pixels_grid.0 * pixels_grid.1) as f64;
                let v = vision.hidden_size as f64;
                vision.flops(*feature_layer) + 2.0 * n * (v * text + text * text)
            }
            ImageSpec::Qwen { vision, .. } => {
                let m = vision.spatial_merge_size;
                vision.flops(pixels_grid.0 * m * pixels_grid.1 * m)
            }
            ImageSpec::Gemma3 { vision, .. } => {
                let n = (pixels_grid.0 * pixels_grid.1) as f64;
                SiglipTower::flops(vision) + 2.0 * n * vision.hidden_size as f64 * text
            }
        }
    }

    /// Rotary positions of `before` text tokens and a `grid` image, where they are not simply
    /// sequential (M-RoPE); `None` for 1-D RoPE.
    pub fn prefix_positions(&self, before: usize, grid: (usize, usize)) -> Option<Vec<Position>> {
        match &self.checkpoint.image {
            ImageSpec::Clip { .. } | ImageSpec::Gemma3 { .. } => None,
            ImageSpec::Qwen { .. } => Some(qwen_vl::prefix_positions(before, grid.0, grid.1)),
        }
    }

    /// The words of `text` the tokenizer maps to its unknown token (`<unk>`), in order, once
    /// each; empty for tokenizers that never produce it (byte-level BPE).
    pub fn unknown_words(&self, text: &str) -> Vec<String> {
        let Some(unk) = ["<unk>", "[UNK]", "<|unk|>"]
            .iter()
            .find_map(|t| self.tokenizer.token_to_id(t))
        else {
            return Vec::new();
        };
        let Ok(encoding) = self.tokenizer.encode(text, false) else {
            return Vec::new();
        };
        let mut words: Vec<String> = Vec::new();
        for (&id, &(start, end)) in encoding.get_ids().iter().zip(encoding.get_offsets()) {
            let word = text.get(start..end).unwrap_or("").to_string();
            if id == unk && !word.is_empty() && !words.contains(&word) {
                words.push(word);
            }
        }
        words
    }

    /// One token as text: decoded, or its vocabulary entry where decoding drops it (`</s>`).
    pub fn token_text(&self, id: u32) -> String {
        let text = self.decode_text(&[id]);
        if text.trim().is_empty() {
            self.tokenizer
                .id_to_token(id)
                .unwrap_or_else(|| format!("#{id}"))
        } else {
            text
        }
    }

    pub fn decode_text(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids, true).unwrap_or_default()
    }
}

//! The MLLM runtime on candle: a LLaVA-family model that answers questions about an image and
//! reports, per layer and head, where its answer token looked. No UI here.
//!
//! [`Model`] loads a checkpoint folder ([`config::detect`] says what it holds); an
//! [`ImageSession`] encodes one image once and keeps the KV cache of the shared prefix (the
//! template text before the image plus the image tokens), so every prompt about that image
//! (the question, the general-description prompt, the knockout pass, later questions) runs
//! only its own suffix.

pub mod bench;
pub mod config;
pub mod decoder;
pub mod device;
pub mod gemm;
pub mod linear;
pub mod memory;
pub mod preprocess;
pub mod prompt;
pub mod shapes;
pub mod vision;
pub mod weights;

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;

use linear::{LoadPlan, LoadProgress, Quantize};
use weights::WeightFiles;

pub use config::Checkpoint;
pub use decoder::{AttentionProbe, Cache, Decoder, EdgeMask, Hooks, QueryRows};
pub use preprocess::{ImageProcessor, PixelMapping, Preprocess};
pub use prompt::{PromptFormat, TokenisedPrompt};
pub use vision::{Projector, VisionTower};

/// A loaded model: vision tower, projector, decoder and tokenizer, immutable and shareable.
pub struct Model {
    pub checkpoint: Checkpoint,
    pub vision: VisionTower,
    pub projector: Projector,
    pub decoder: Decoder,
    pub tokenizer: tokenizers::Tokenizer,
    pub chat_template: Option<String>,
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

impl Model {
    /// Load the checkpoint in `dir` on `device` at storage precision. `vision_tower` overrides
    /// `mm_vision_tower`.
    pub fn load(dir: &Path, vision_tower: Option<&Path>, device: &Device) -> Result<Self> {
        Model::load_with(dir, vision_tower, device, Quantize::None)
    }

    /// Load with the language model's linear layers and head quantized as `quantize` says.
    pub fn load_with(
        dir: &Path,
        vision_tower: Option<&Path>,
        device: &Device,
        quantize: Quantize,
    ) -> Result<Self> {
        Model::load_with_progress(dir, vision_tower, device, quantize, None)
    }

    /// As [`Model::load_with`], reporting each loaded layer to `progress` (which may cancel).
    /// Refuses, before reading any weight, a model that cannot fit in the memory available.
    pub fn load_with_progress(
        dir: &Path,
        vision_tower: Option<&Path>,
        device: &Device,
        quantize: Quantize,
        progress: Option<LoadProgress>,
    ) -> Result<Self> {
        let checkpoint = config::detect(dir, vision_tower)?;
        let files = WeightFiles::open(&checkpoint.weights)?;
        let vision_files = match &checkpoint.vision_weights {
            Some(paths) => Some(WeightFiles::open(paths)?),
            None => None,
        };
        if device.is_cpu() {
            memory::check_fits(&checkpoint, &files, vision_files.as_deref(), quantize)?;
        }
        let vb = weights::var_builder(&files, device);
        let plan = LoadPlan {
            files: Some(files),
            quantize,
            progress,
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
        let vision = VisionTower::new(
            &checkpoint.vision,
            checkpoint.feature_layer,
            prefixed(&vision_vb, &checkpoint.layout.vision),
            &vision_plan,
        )
        .map_err(missing("vision tower"))?;
        let projector = Projector::new(
            checkpoint.vision.hidden_size,
            checkpoint.text.hidden_size,
            prefixed(&vb, &checkpoint.layout.projector_first),
            prefixed(&vb, &checkpoint.layout.projector_second),
            &plan,
        )
        .map_err(missing("projector"))?;
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
        Ok(Model {
            checkpoint,
            vision,
            projector,
            decoder,
            tokenizer,
            chat_template,
            device: device.clone(),
            quantize,
            load_notes: plan.notes.lock().map(|n| n.clone()).unwrap_or_default(),
        })
    }

    pub fn num_image_tokens(&self) -> usize {
        self.checkpoint.num_image_tokens()
    }

    /// Grid of image tokens (rows, cols).
    pub fn grid(&self) -> (usize, usize) {
        let side = self.checkpoint.vision.grid_side();
        (side, side)
    }

    /// The prompt for `question`: in the checkpoint's own format, or raw (`<image>` marks the
    /// image span, no special tokens added).
    pub fn prompt(&self, question: &str, raw: bool) -> Result<TokenisedPrompt> {
        let format = if raw {
            PromptFormat::Raw
        } else {
            self.checkpoint.prompt_format
        };
        let text = prompt::prompt_text(format, question, self.chat_template.as_deref())?;
        prompt::tokenise(&self.tokenizer, &text, format, self.num_image_tokens())
    }

    /// Pixel values (1, 3, S, S) for an RGB image, and how it maps to the model input.
    pub fn pixel_values(&self, img: &image::RgbImage) -> Result<(Tensor, PixelMapping)> {
        let processor = &self.checkpoint.processor;
        let (prepared, mapping) = processor.prepare(img);
        let values = processor.normalise(&prepared);
        let size = processor.size as usize;
        Ok((
            Tensor::from_vec(values, (1, 3, size, size), &self.device)?,
            mapping,
        ))
    }

    /// Projected image features (N, D_text) for pixel values (1, 3, S, S).
    pub fn image_embeddings(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let features = self.vision.forward(pixel_values)?;
        Ok(self.projector.forward(&features)?)
    }

    pub fn decode_text(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids, true).unwrap_or_default()
    }
}

/// Stage timings of a run, in milliseconds.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Timings {
    pub vision_ms: f64,
    pub prefix_ms: f64,
}

/// What one prompt produced.
#[derive(Clone, Debug)]
pub struct Answer {
    pub text: String,
    pub ids: Vec<u32>,
    /// Logits (V) of the first generated token.
    pub first_token_logits: Vec<f32>,
    /// Attention of the probe rows over the image span: per layer, H x N.
    pub attention: Vec<Vec<f32>>,
    pub suffix_ms: f64,
    pub decode_ms: f64,
}

/// How to run one prompt on a session.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub max_new_tokens: usize,
    pub query: QueryRows,
    pub knockout: Option<EdgeMask>,
    /// Keep the knockout during decode steps too (the reference blocks the prefill only).
    pub knockout_decode: bool,
    /// Stop at the checkpoint's end-of-sequence tokens (off only for parity tests).
    pub stop_at_eos: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            max_new_tokens: 16,
            query: QueryRows::Last,
            knockout: None,
            knockout_decode: false,
            stop_at_eos: true,
        }
    }
}

/// One image, encoded once, with prefix caches reused by every prompt about it.
pub struct ImageSession<'m> {
    pub model: &'m Model,
    pub image_embeddings: Tensor,
    pub mapping: PixelMapping,
    prefixes: HashMap<Vec<u32>, Cache>,
    pub timings: Timings,
}

impl<'m> ImageSession<'m> {
    pub fn new(model: &'m Model, img: &image::RgbImage) -> Result<Self> {
        let started = Instant::now();
        let (pixel_values, mapping) = model.pixel_values(img)?;
        let session = Self::from_pixel_values(model, &pixel_values, mapping)?;
        Ok(ImageSession {
            timings: Timings {
                vision_ms: ms(started),
                prefix_ms: 0.0,
            },
            ..session
        })
    }

    pub fn from_pixel_values(
        model: &'m Model,
        pixel_values: &Tensor,
        mapping: PixelMapping,
    ) -> Result<Self> {
        let started = Instant::now();
        let image_embeddings = model.image_embeddings(pixel_values)?;
        Ok(ImageSession {
            model,
            image_embeddings,
            mapping,
            prefixes: HashMap::new(),
            timings: Timings {
                vision_ms: ms(started),
                prefix_ms: 0.0,
            },
        })
    }

    /// Compute (once) the prefix cache `prompt` will run on.
    pub fn prepare_prefix(&mut self, prompt: &TokenisedPrompt) -> Result<()> {
        self.prefix_cache(&prompt.before_image()).map(|_| ())
    }

    /// The cache after the text before the image and the image itself.
    fn prefix_cache(&mut self, before_image: &[u32]) -> Result<Cache> {
        if let Some(cache) = self.prefixes.get(before_image) {
            return Ok(cache.clone());
        }
        let started = Instant::now();
        let decoder = &self.model.decoder;
        let mut parts = Vec::new();
        if !before_image.is_empty() {
            parts.push(decoder.embed(before_image)?);
        }
        parts.push(self.image_embeddings.unsqueeze(0)?);
        let embeds = Tensor::cat(&parts, 1)?;
        let mut cache = Cache::new(&decoder.cfg);
        decoder.forward(&embeds, &mut cache, &mut Hooks::default())?;
        self.timings.prefix_ms += ms(started);
        self.prefixes.insert(before_image.to_vec(), cache.clone());
        Ok(cache)
    }

    /// Run `prompt` on the shared prefix: prefill the suffix with the probe (and knockout),
    /// then decode greedily.
    pub fn run(&mut self, prompt: &TokenisedPrompt, options: &RunOptions) -> Result<Answer> {
        let span = prompt.image_span.clone();
        if span.len() != self.model.num_image_tokens() {
            bail!(
                "the prompt has {} image positions, the model expects {}",
                span.len(),
                self.model.num_image_tokens()
            );
        }
        let suffix = prompt.after_image();
        if suffix.is_empty() {
            bail!("the prompt has no tokens after the image; the answer needs at least one");
        }
        let mut cache = self.prefix_cache(&prompt.before_image())?;
        let decoder = &self.model.decoder;
        let started = Instant::now();
        let mut probe = AttentionProbe::new(options.query.clone(), span.clone());
        let hidden = {
            let mut hooks = Hooks {
                probe: Some(&mut probe),
                edges: options.knockout.as_ref(),
            };
            decoder.forward(&decoder.embed(&suffix)?, &mut cache, &mut hooks)?
        };
        let first_logits = decoder.last_logits(&hidden)?.to_vec1::<f32>()?;
        let suffix_ms = ms(started);
        let started = Instant::now();
        let ids = self.decode_greedy(&first_logits, &mut cache, options)?;
        Ok(Answer {
            text: self.model.decode_text(&ids),
            ids,
            first_token_logits: first_logits,
            attention: probe.maps,
            suffix_ms,
            decode_ms: ms(started),
        })
    }

    fn decode_greedy(
        &self,
        first_logits: &[f32],
        cache: &mut Cache,
        options: &RunOptions,
    ) -> Result<Vec<u32>> {
        let decoder = &self.model.decoder;
        let stops = &self.model.checkpoint.eos_token_ids;
        let mut ids = Vec::new();
        let mut next = decoder::argmax(first_logits) as u32;
        for step in 0..options.max_new_tokens {
            if options.stop_at_eos && stops.contains(&next) {
                break;
            }
            ids.push(next);
            if step + 1 == options.max_new_tokens {
                break;
            }
            let edges = if options.knockout_decode {
                options.knockout.as_ref()
            } else {
                None
            };
            let mut hooks = Hooks { probe: None, edges };
            let hidden = decoder.forward(&decoder.embed(&[next])?, cache, &mut hooks)?;
            next = decoder::argmax(&decoder.last_logits(&hidden)?.to_vec1::<f32>()?) as u32;
        }
        Ok(ids)
    }

    /// Full-sequence logits (T, V) of `prompt` computed without the prefix cache, for tests
    /// and for the benchmark's unshared baseline.
    pub fn logits_unshared(
        &self,
        prompt: &TokenisedPrompt,
        edges: Option<&EdgeMask>,
        probe: Option<&mut AttentionProbe>,
    ) -> Result<Tensor> {
        let decoder = &self.model.decoder;
        let embeds = self.embed_prompt(prompt)?;
        let mut cache = Cache::new(&decoder.cfg);
        let mut hooks = Hooks { probe, edges };
        let hidden = decoder.forward(&embeds, &mut cache, &mut hooks)?;
        Ok(decoder.logits(&hidden)?)
    }

    /// Input embeddings (1, T, D) of a prompt with the image features spliced in.
    pub fn embed_prompt(&self, prompt: &TokenisedPrompt) -> Result<Tensor> {
        let decoder = &self.model.decoder;
        let mut parts = Vec::new();
        let before = prompt.before_image();
        if !before.is_empty() {
            parts.push(decoder.embed(&before)?);
        }
        parts.push(self.image_embeddings.unsqueeze(0)?);
        let after = prompt.after_image();
        if !after.is_empty() {
            parts.push(decoder.embed(&after)?);
        }
        Ok(Tensor::cat(&parts, 1)?)
    }
}

/// Image-token positions of `tokens` (indices into the image span) as absolute key positions.
pub fn image_key_positions(span: &Range<usize>, tokens: &[usize]) -> Vec<usize> {
    tokens
        .iter()
        .filter(|&&t| t < span.len())
        .map(|&t| span.start + t)
        .collect()
}

fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

//! One image encoded once, with the KV cache of each shared prefix (the template text before the
//! image plus the image tokens), so every prompt about the image (the question, the
//! general-description prompt, the knockout pass, later questions) runs only its own suffix.

use std::collections::HashMap;
use std::ops::Range;
use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::Tensor;

use super::decoder::{self, AttentionProbe, Cache, EdgeMask, Hooks, ImageRows, QueryRows};
use super::loaded::{Model, PixelInput};
use super::preprocess::PixelMapping;
use super::prompt::TokenisedPrompt;
use super::qwen_vl;
use super::rope::Position;

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
    /// For each generated token k, the attention over the image span of the query that
    /// produced it (the last prompt token for k = 0, token k - 1 after that): per layer, H x N.
    pub token_attention: Vec<Vec<Vec<f32>>>,
    /// Each generated token decoded on its own (for per-token views).
    pub token_texts: Vec<String>,
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
    /// Qwen3-VL: the DeepStack features of the image tokens (empty for other families).
    pub deepstack: Vec<Tensor>,
    pub mapping: PixelMapping,
    /// Image tokens (rows, cols) of this image.
    pub grid: (usize, usize),
    prefixes: HashMap<Vec<u32>, Cache>,
    pub timings: Timings,
}

impl<'m> ImageSession<'m> {
    pub fn new(model: &'m Model, img: &image::RgbImage) -> Result<Self> {
        Self::new_with(model, img, None)
    }

    /// As [`ImageSession::new`], with Qwen-VL pixel limits for this image.
    pub fn new_with(
        model: &'m Model,
        img: &image::RgbImage,
        limits: Option<(u64, u64)>,
    ) -> Result<Self> {
        let started = Instant::now();
        let pixels = model.pixel_values_with(img, limits)?;
        let session = Self::from_pixels(model, &pixels)?;
        Ok(ImageSession {
            timings: Timings {
                vision_ms: ms(started),
                prefix_ms: 0.0,
            },
            ..session
        })
    }

    /// A session on CLIP pixel values (1, 3, S, S) made elsewhere (tests, references).
    pub fn from_pixel_values(
        model: &'m Model,
        pixel_values: &Tensor,
        mapping: PixelMapping,
    ) -> Result<Self> {
        let Some(grid) = model.fixed_grid() else {
            bail!("this model's grid follows the image: make its input with Model::pixel_values");
        };
        Self::from_pixels(
            model,
            &PixelInput {
                values: pixel_values.clone(),
                grid,
                patch_grid: grid,
                mapping,
            },
        )
    }

    /// A session on prepared pixels.
    pub fn from_pixels(model: &'m Model, pixels: &PixelInput) -> Result<Self> {
        let started = Instant::now();
        let features = model.image_features(pixels)?;
        let image_embeddings = features.tokens;
        let tokens = pixels.grid.0 * pixels.grid.1;
        if image_embeddings.dim(0)? != tokens {
            bail!(
                "the vision tower gave {} features for a {} x {} grid",
                image_embeddings.dim(0)?,
                pixels.grid.0,
                pixels.grid.1
            );
        }
        Ok(ImageSession {
            model,
            image_embeddings,
            deepstack: features.deepstack,
            mapping: pixels.mapping,
            grid: pixels.grid,
            prefixes: HashMap::new(),
            timings: Timings {
                vision_ms: ms(started),
                prefix_ms: 0.0,
            },
        })
    }

    /// Image tokens of this image.
    pub fn num_image_tokens(&self) -> usize {
        self.grid.0 * self.grid.1
    }

    /// The prompt for `question` about this image (see [`Model::prompt`]).
    pub fn prompt(&self, question: &str, raw: bool) -> Result<TokenisedPrompt> {
        self.model.prompt(question, raw, self.num_image_tokens())
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
        let positions = self.model.prefix_positions(before_image.len(), self.grid);
        decoder.forward_at(
            &embeds,
            positions.as_deref(),
            Some(self.image_rows_at(before_image.len())),
            &mut cache,
            &mut Hooks::default(),
        )?;
        self.timings.prefix_ms += ms(started);
        self.prefixes.insert(before_image.to_vec(), cache.clone());
        Ok(cache)
    }

    /// Run `prompt` on the shared prefix: prefill the suffix with the probe (and knockout),
    /// then decode greedily.
    pub fn run(&mut self, prompt: &TokenisedPrompt, options: &RunOptions) -> Result<Answer> {
        let span = prompt.image_span.clone();
        if span.len() != self.num_image_tokens() {
            bail!(
                "the prompt has {} image positions, this image has {} tokens ({} x {})",
                span.len(),
                self.num_image_tokens(),
                self.grid.0,
                self.grid.1
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
        // The first answer token's map is the last prompt row's, whatever `options.query`.
        let mut last = AttentionProbe::new(QueryRows::Last, span.clone());
        let hidden = {
            let mut hooks = Hooks {
                probe: Some(&mut probe),
                token_probe: (options.query != QueryRows::Last).then_some(&mut last),
                edges: options.knockout.as_ref(),
            };
            decoder.forward(&decoder.embed(&suffix)?, &mut cache, &mut hooks)?
        };
        let first_logits = decoder.last_logits(&hidden)?.to_vec1::<f32>()?;
        let suffix_ms = ms(started);
        let started = Instant::now();
        let first_map = if options.query == QueryRows::Last {
            probe.maps.clone()
        } else {
            last.maps
        };
        let (ids, token_attention) =
            self.decode_greedy(&first_logits, first_map, &span, &mut cache, options)?;
        Ok(Answer {
            text: self.model.decode_text(&ids),
            token_texts: ids.iter().map(|&id| self.model.token_text(id)).collect(),
            ids,
            first_token_logits: first_logits,
            attention: probe.maps,
            token_attention,
            suffix_ms,
            decode_ms: ms(started),
        })
    }

    /// Greedy decoding from the first token's logits; with each generated token, the map of
    /// the query that produced it (`first_map` for the first, then each step's own: no extra
    /// pass).
    fn decode_greedy(
        &self,
        first_logits: &[f32],
        first_map: Vec<Vec<f32>>,
        span: &Range<usize>,
        cache: &mut Cache,
        options: &RunOptions,
    ) -> Result<(Vec<u32>, Vec<Vec<Vec<f32>>>)> {
        let decoder = &self.model.decoder;
        let stops = &self.model.checkpoint.eos_token_ids;
        let mut ids = Vec::new();
        let mut maps = vec![first_map];
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
            let mut probe = AttentionProbe::new(QueryRows::Last, span.clone());
            let mut hooks = Hooks {
                probe: Some(&mut probe),
                token_probe: None,
                edges,
            };
            let hidden = decoder.forward(&decoder.embed(&[next])?, cache, &mut hooks)?;
            maps.push(probe.maps);
            next = decoder::argmax(&decoder.last_logits(&hidden)?.to_vec1::<f32>()?) as u32;
        }
        // A map whose token was a stop token (not kept) goes with it.
        maps.truncate(ids.len());
        Ok((ids, maps))
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
        let mut hooks = Hooks {
            probe,
            token_probe: None,
            edges,
        };
        let positions = self.prompt_positions(prompt);
        let hidden = decoder.forward_at(
            &embeds,
            positions.as_deref(),
            Some(self.image_rows_at(prompt.image_span.start)),
            &mut cache,
            &mut hooks,
        )?;
        Ok(decoder.logits(&hidden)?)
    }

    /// This image's rows in a pass where it starts at row `start`.
    fn image_rows_at(&self, start: usize) -> ImageRows<'_> {
        ImageRows {
            start,
            len: self.num_image_tokens(),
            deepstack: &self.deepstack,
        }
    }

    /// Rotary positions of a whole prompt about this image (`None`: sequential).
    pub fn prompt_positions(&self, prompt: &TokenisedPrompt) -> Option<Vec<Position>> {
        let before = prompt.image_span.start;
        let mut positions = self.model.prefix_positions(before, self.grid)?;
        let next = qwen_vl::after_image_position(before, self.grid.0, self.grid.1);
        let after = prompt.input_ids.len() - prompt.image_span.end;
        positions.extend((0..after).map(|i| [(next + i) as u32; 3]));
        Some(positions)
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

//! One image encoded once, with the KV cache of each shared prefix (the template text before the
//! image plus the image tokens), so every prompt about the image (the question, the
//! general-description prompt, the knockout pass, later questions) runs only its own suffix.

use std::collections::HashMap;
use std::ops::Range;
use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::Tensor;

use super::decoder::{
    self, AttentionProbe, Cache, EdgeMask, GroupPass, Hooks, ImageRows, QueryRows,
};
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
        let mut answers = self.run_batch(&[(prompt, options)])?;
        Ok(answers.pop().expect("one answer for one prompt"))
    }

    /// Run several prompts about this image as one batch: prompts on the same prefix prefill
    /// their suffixes in one packed pass and decode their answers a step at a time together,
    /// each with its own probes, knockout and stopping, so the weights are read once per step
    /// for all of them. Answers come back in the order of `jobs`, each as [`run`] would give
    /// it alone (up to the rounding of a matrix product over more rows); their `suffix_ms` and
    /// `decode_ms` are the batch's.
    ///
    /// [`run`]: ImageSession::run
    pub fn run_batch(&mut self, jobs: &[(&TokenisedPrompt, &RunOptions)]) -> Result<Vec<Answer>> {
        for (prompt, _) in jobs {
            let span = &prompt.image_span;
            if span.len() != self.num_image_tokens() {
                bail!(
                    "the prompt has {} image positions, this image has {} tokens ({} x {})",
                    span.len(),
                    self.num_image_tokens(),
                    self.grid.0,
                    self.grid.1
                );
            }
            if prompt.after_image().is_empty() {
                bail!("the prompt has no tokens after the image; the answer needs at least one");
            }
        }
        // One batch per distinct prefix, in order of first appearance.
        let befores: Vec<Vec<u32>> = jobs.iter().map(|(p, _)| p.before_image()).collect();
        let mut answers: Vec<Option<Answer>> = vec![None; jobs.len()];
        let mut done = vec![false; jobs.len()];
        for first in 0..jobs.len() {
            if done[first] {
                continue;
            }
            let before = &befores[first];
            let members: Vec<usize> = (first..jobs.len())
                .filter(|&j| !done[j] && &befores[j] == before)
                .collect();
            let prefix = self.prefix_cache(before)?;
            let batch: Vec<_> = members.iter().map(|&j| jobs[j]).collect();
            for (j, answer) in members.iter().zip(self.run_on_prefix(&prefix, &batch)?) {
                answers[*j] = Some(answer);
                done[*j] = true;
            }
        }
        Ok(answers
            .into_iter()
            .map(|a| a.expect("every job answered"))
            .collect())
    }

    /// [`ImageSession::run_batch`] for prompts that share the prefix cache `prefix`.
    fn run_on_prefix(
        &self,
        prefix: &Cache,
        jobs: &[(&TokenisedPrompt, &RunOptions)],
    ) -> Result<Vec<Answer>> {
        let decoder = &self.model.decoder;
        let started = Instant::now();
        let mut caches = vec![prefix.clone(); jobs.len()];
        let mut probes: Vec<AttentionProbe> = jobs
            .iter()
            .map(|(p, o)| AttentionProbe::new(o.query.clone(), p.image_span.clone()))
            .collect();
        // The first answer token's map is the last prompt row's, whatever `options.query`.
        let mut lasts: Vec<AttentionProbe> = jobs
            .iter()
            .map(|(p, _)| AttentionProbe::new(QueryRows::Last, p.image_span.clone()))
            .collect();
        let suffixes: Vec<Vec<u32>> = jobs.iter().map(|(p, _)| p.after_image()).collect();
        let hidden = {
            let mut groups: Vec<GroupPass> = caches
                .iter_mut()
                .zip(probes.iter_mut().zip(lasts.iter_mut()))
                .zip(jobs.iter().zip(&suffixes))
                .map(
                    |((cache, (probe, last)), ((_, options), suffix))| GroupPass {
                        len: suffix.len(),
                        positions: None,
                        cache,
                        hooks: Hooks {
                            probe: Some(probe),
                            token_probe: (options.query != QueryRows::Last).then_some(last),
                            edges: options.knockout.as_ref(),
                        },
                    },
                )
                .collect();
            decoder.forward_groups(&decoder.embed(&suffixes.concat())?, &mut groups, None)?
        };
        let last_rows: Vec<usize> = suffixes
            .iter()
            .scan(0, |end, s| {
                *end += s.len();
                Some(*end - 1)
            })
            .collect();
        let first_logits = decoder.rows_logits(&hidden, &last_rows)?.to_vec2::<f32>()?;
        let suffix_ms = ms(started);
        let started = Instant::now();
        let first_maps: Vec<Vec<Vec<f32>>> = jobs
            .iter()
            .zip(probes.iter().zip(lasts))
            .map(|((_, o), (probe, last))| match o.query {
                QueryRows::Last => probe.maps.clone(),
                _ => last.maps,
            })
            .collect();
        let decoded = self.decode_greedy(&first_logits, first_maps, jobs, &mut caches)?;
        let decode_ms = ms(started);
        Ok(decoded
            .into_iter()
            .zip(first_logits.into_iter().zip(probes))
            .map(
                |((ids, token_attention), (first_token_logits, probe))| Answer {
                    text: self.model.decode_text(&ids),
                    token_texts: ids.iter().map(|&id| self.model.token_text(id)).collect(),
                    ids,
                    first_token_logits,
                    attention: probe.maps,
                    token_attention,
                    suffix_ms,
                    decode_ms,
                },
            )
            .collect())
    }

    /// Greedy decoding of every job together from its first token's logits; with each
    /// generated token, the map of the query that produced it (the job's `first_map` for the
    /// first, then each step's own: no extra pass). A job leaves the batch at its stop token or
    /// its token limit.
    fn decode_greedy(
        &self,
        first_logits: &[Vec<f32>],
        first_maps: Vec<Vec<Vec<f32>>>,
        jobs: &[(&TokenisedPrompt, &RunOptions)],
        caches: &mut [Cache],
    ) -> Result<Vec<(Vec<u32>, Vec<Vec<Vec<f32>>>)>> {
        let decoder = &self.model.decoder;
        let stops = &self.model.checkpoint.eos_token_ids;
        let mut ids: Vec<Vec<u32>> = vec![Vec::new(); jobs.len()];
        let mut maps: Vec<Vec<Vec<Vec<f32>>>> = first_maps.into_iter().map(|m| vec![m]).collect();
        let mut next: Vec<u32> = first_logits
            .iter()
            .map(|l| decoder::argmax(l) as u32)
            .collect();
        let mut active: Vec<usize> = (0..jobs.len()).collect();
        loop {
            // Keep each active job's next token; it leaves at a stop token or its limit.
            active.retain(|&j| {
                let options = jobs[j].1;
                if ids[j].len() >= options.max_new_tokens
                    || (options.stop_at_eos && stops.contains(&next[j]))
                {
                    return false;
                }
                ids[j].push(next[j]);
                ids[j].len() < options.max_new_tokens
            });
            if active.is_empty() {
                break;
            }
            let mut step_probes: Vec<AttentionProbe> = active
                .iter()
                .map(|&j| AttentionProbe::new(QueryRows::Last, jobs[j].0.image_span.clone()))
                .collect();
            let tokens: Vec<u32> = active.iter().map(|&j| next[j]).collect();
            let hidden = {
                let mut active_caches: Vec<&mut Cache> = caches
                    .iter_mut()
                    .enumerate()
                    .filter(|(j, _)| active.contains(j))
                    .map(|(_, c)| c)
                    .collect();
                let mut groups: Vec<GroupPass> = active_caches
                    .iter_mut()
                    .zip(step_probes.iter_mut())
                    .zip(&active)
                    .map(|((cache, probe), &j)| {
                        let options = jobs[j].1;
                        GroupPass {
                            len: 1,
                            positions: None,
                            cache,
                            hooks: Hooks {
                                probe: Some(probe),
                                token_probe: None,
                                edges: options
                                    .knockout
                                    .as_ref()
                                    .filter(|_| options.knockout_decode),
                            },
                        }
                    })
                    .collect();
                decoder.forward_groups(&decoder.embed(&tokens)?, &mut groups, None)?
            };
            let rows: Vec<usize> = (0..active.len()).collect();
            let logits = decoder.rows_logits(&hidden, &rows)?.to_vec2::<f32>()?;
            for ((&j, probe), logits) in active.iter().zip(step_probes).zip(logits) {
                maps[j].push(probe.maps);
                next[j] = decoder::argmax(&logits) as u32;
            }
        }
        // A map whose token was a stop token (not kept) goes with it.
        Ok(ids
            .into_iter()
            .zip(maps)
            .map(|(ids, mut maps)| {
                maps.truncate(ids.len());
                (ids, maps)
            })
            .collect())
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

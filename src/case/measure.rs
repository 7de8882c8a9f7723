//! `fovea bench --model DIR`: what a real checkpoint costs on this machine, at the precision
//! asked for: load time, peak resident memory, vision, prefill (tokens/s and GFLOP/s), decode
//! (tokens/s), three suffixes one after another and as one batch, and one whole VGRefine case
//! (vision, prefix, question, general prompt, knockout, one new token each). Works on any checkpoint fovea loads, including the sparse
//! full-size ones `fovea bench --write-model DIR --shape ...` writes.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;

use super::defaults::model_defaults;
use crate::grounding::refine::{self, Settings};
use crate::model::bench::decoder_flops;
use crate::model::linear::Quantize;
use crate::model::{EdgeMask, ImageSession, Model, RunOptions};

/// What `fovea bench --model --json` writes (field names are read by tools/).
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelReport {
    pub model: String,
    pub arch: String,
    pub quantize: String,
    /// The CPU tier the kernels ran at (`FOVEA_CPU`), null on a GPU.
    pub cpu_tier: Option<&'static str>,
    pub load_notes: Vec<String>,
    pub load_ms: f64,
    /// The bench image (width, height) in pixels, its token grid (rows, cols) and, where the
    /// grid follows the image (Qwen-VL), the (min_pixels, max_pixels) used.
    pub image_size: (u32, u32),
    pub image_grid: (usize, usize),
    pub pixel_limits: Option<(u64, u64)>,
    /// Bytes of the language model's linear layers and head as kept, and of the embeddings.
    pub linear_bytes: usize,
    pub embedding_bytes: usize,
    /// Peak resident memory of the process so far (VmHWM), bytes; null where unknown.
    pub peak_rss_bytes: Option<u64>,
    pub vision_ms: f64,
    pub vision_gflops: f64,
    pub prefill_tokens: usize,
    pub prefill_ms: f64,
    pub prefill_tokens_per_s: f64,
    pub prefill_gflops: f64,
    pub decode_tokens: usize,
    pub decode_ms: f64,
    pub decode_tokens_per_s: f64,
    /// The question, general and knockout suffixes (1 new token each) on the cached prefix:
    /// one after another, and as one batch (`ImageSession::run_batch`); fastest of a few runs.
    pub suffixes_sequential_ms: f64,
    pub suffixes_batched_ms: f64,
    /// Rows of those three suffixes together, and of the question's alone.
    pub suffix_rows: usize,
    pub question_suffix_tokens: usize,
    /// One whole VGRefine case on a fresh image session, 1 new token per answer.
    pub vgrefine_ms: f64,
    pub vgrefine_heads: Vec<(usize, usize)>,
    pub vgrefine_masked_layers: Vec<usize>,
}

impl ModelReport {
    /// The report as `fovea bench --model` prints it, a line a measure.
    pub fn summary(&self) -> String {
        let mut lines: Vec<String> = Vec::new();
        let gib = |bytes: f64| bytes / (1u64 << 30) as f64;
        lines.push(format!(
            "checkpoint       {} ({}, weights {})",
            self.model, self.arch, self.quantize
        ));
        lines.push(format!(
            "kernels          {}",
            self.cpu_tier
                .map_or("candle (GPU)".to_string(), |t| format!(
                    "CPU tier {t} (FOVEA_CPU)"
                ))
        ));
        for note in &self.load_notes {
            lines.push(format!("  note           {note}"));
        }
        lines.push(format!("load             {:>10.0} ms", self.load_ms));
        let (rows, cols) = self.image_grid;
        match self.pixel_limits {
        Some((min, max)) => lines.push(format!(
            "image            {}x{} px -> {rows} x {cols} = {} tokens (min_pixels {min}, max_pixels {max})",
            self.image_size.0,
            self.image_size.1,
            rows * cols
        )),
        None => lines.push(format!(
            "image            {}x{} px -> {rows} x {cols} = {} tokens",
            self.image_size.0,
            self.image_size.1,
            rows * cols
        )),
    }
        lines.push(format!(
            "weights          {:>10.2} GiB linear layers + head, {:.2} GiB embeddings",
            gib(self.linear_bytes as f64),
            gib(self.embedding_bytes as f64)
        ));
        if let Some(peak) = self.peak_rss_bytes {
            lines.push(format!("peak resident    {:>10.2} GiB", gib(peak as f64)));
        }
        lines.push(format!(
            "vision           {:>10.0} ms ({:.0} GFLOP/s)",
            self.vision_ms, self.vision_gflops
        ));
        lines.push(format!(
            "prefill          {:>10.0} ms for {} tokens: {:.1} tokens/s, {:.0} GFLOP/s",
            self.prefill_ms, self.prefill_tokens, self.prefill_tokens_per_s, self.prefill_gflops
        ));
        lines.push(format!(
            "decode           {:>10.0} ms for {} tokens: {:.2} tokens/s",
            self.decode_ms, self.decode_tokens, self.decode_tokens_per_s
        ));
        lines.push(format!(
        "3 suffixes       {:>10.0} ms one after another, {:.0} ms as one batch ({:.2}x; {} rows)",
        self.suffixes_sequential_ms,
        self.suffixes_batched_ms,
        self.suffixes_batched_ms / self.suffixes_sequential_ms,
        self.suffix_rows
    ));
        lines.push(format!(
            "VGRefine case    {:>10.0} ms (one whole case, 1 new token)",
            self.vgrefine_ms
        ));
        lines.push(String::new());
        lines.join("\n")
    }
}

/// Peak resident memory of this process (Linux: VmHWM, Windows: the peak working set).
pub fn peak_rss_bytes() -> Option<u64> {
    crate::platform::peak_resident_bytes()
}

/// Measure `dir` as described in the module comment.
pub fn run(
    dir: &Path,
    vision_tower: Option<&Path>,
    quantize: Quantize,
    pixel_limits: (Option<u64>, Option<u64>),
    decode_tokens: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<ModelReport> {
    progress(&format!("loading {} ({})", dir.display(), quantize.name()));
    let started = Instant::now();
    let device = crate::model::device::from_env()?;
    let mut model = Model::load_with_progress(dir, vision_tower, &device, quantize, None)?;
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    if pixel_limits != (None, None) {
        model.set_pixel_limits(pixel_limits.0, pixel_limits.1)?;
    }
    let model = model;
    let (linear_bytes, embedding_bytes) = model.decoder.weight_bytes();
    let img = image::RgbImage::from_fn(512, 448, |x, y| {
        let v = ((x as f32 / 512.0) * 200.0 + (y % 64) as f32) as u8;
        image::Rgb([v, v, v])
    });
    let question = "is there an abnormality in the left lung";
    progress(&model.describe_image_plan(img.width(), img.height())?);

    progress("vision tower and the shared prefix");
    let mut session = ImageSession::new(&model, &img)?;
    let prompt = session.prompt(question, false)?;
    let prefix_tokens = prompt.input_ids.len() - prompt.after_image().len();
    let one_token = RunOptions {
        max_new_tokens: 1,
        stop_at_eos: false,
        ..RunOptions::default()
    };
    // The first run encodes the image and fills the shared prefix; its timings say how long.
    session.run(&prompt, &one_token)?;
    let vision_ms = session.timings.vision_ms;
    let prefix_ms = session.timings.prefix_ms;

    progress(&format!(
        "decoding {decode_tokens} tokens on the cached prefix"
    ));
    // Decode time = (suffix + decode_tokens + 1 tokens) - (suffix + 1 token), each the fastest
    // of a few runs on the cached prefix (the fastest is the least disturbed by other work).
    let repeats = if prefix_ms < 10_000.0 { 5 } else { 1 };
    let mut fastest = |options: &RunOptions| -> Result<f64> {
        let mut best = f64::INFINITY;
        for _ in 0..repeats {
            let started = Instant::now();
            session.run(&prompt, options)?;
            best = best.min(started.elapsed().as_secs_f64() * 1e3);
        }
        Ok(best)
    };
    let suffix_ms = fastest(&one_token)?;
    let long_ms = fastest(&RunOptions {
        max_new_tokens: decode_tokens + 1,
        ..one_token.clone()
    })?;
    // Never zero: a rate must stay finite (JSON has no infinity).
    let decode_ms = (long_ms - suffix_ms).max(1e-3);

    let text = &model.checkpoint.text;
    let (layers, heads) = (text.num_hidden_layers, text.num_attention_heads);

    progress("three suffixes one after another, then as one batch");
    let (question_prompt, general_prompt) =
        refine::prompts(&session, question, &Settings::default())?;
    let span = question_prompt.image_span.clone();
    let knockout = RunOptions {
        knockout: Some(EdgeMask {
            layers: vec![layers / 2],
            queries_from: span.end,
            blocked_keys: span.clone().step_by(5).collect(),
            and: None,
        }),
        ..one_token.clone()
    };
    let jobs = [
        (&question_prompt, &one_token),
        (&general_prompt, &one_token),
        (&question_prompt, &knockout),
    ];
    let suffix_rows = jobs.iter().map(|(p, _)| p.after_image().len()).sum();
    let (mut sequential, mut batched) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..repeats {
        let started = Instant::now();
        for (prompt, options) in jobs {
            session.run(prompt, options)?;
        }
        sequential = sequential.min(started.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        session.run_batch(&jobs)?;
        batched = batched.min(started.elapsed().as_secs_f64() * 1e3);
    }
    let defaults = model_defaults(&model)?.unwrap_or_default();
    let mut settings = Settings {
        max_new_tokens: 1,
        ..Settings::default()
    };
    settings.heads = if defaults.heads.is_empty() {
        (0..heads.min(8)).map(|h| (layers / 2, h)).collect()
    } else {
        defaults.heads.iter().map(|&[l, h]| (l, h)).collect()
    };
    settings.masked_layers = if defaults.masked_layers.is_empty() {
        vec![layers / 2]
    } else {
        defaults.masked_layers.clone()
    };
    progress("one whole VGRefine case (fresh image session)");
    let started = Instant::now();
    let mut fresh = ImageSession::new(&model, &img)?;
    refine::run(&mut fresh, question, &settings)?;
    let vgrefine_ms = started.elapsed().as_secs_f64() * 1e3;

    let vision_flop = model.image_flops(fresh.grid);
    let prefill_flop = decoder_flops(text, prefix_tokens);
    Ok(ModelReport {
        model: dir.display().to_string(),
        arch: model.checkpoint.arch.clone(),
        quantize: quantize.name().to_string(),
        cpu_tier: model.cpu_tier(),
        load_notes: model.load_notes.clone(),
        load_ms,
        image_size: img.dimensions(),
        image_grid: fresh.grid,
        pixel_limits: model.pixel_limits(),
        linear_bytes,
        embedding_bytes,
        peak_rss_bytes: peak_rss_bytes(),
        vision_ms,
        vision_gflops: vision_flop / (vision_ms / 1e3) / 1e9,
        prefill_tokens: prefix_tokens,
        prefill_ms: prefix_ms,
        prefill_tokens_per_s: prefix_tokens as f64 / (prefix_ms / 1e3),
        prefill_gflops: prefill_flop / (prefix_ms / 1e3) / 1e9,
        decode_tokens,
        decode_ms,
        decode_tokens_per_s: decode_tokens as f64 / (decode_ms / 1e3),
        suffixes_sequential_ms: sequential,
        suffixes_batched_ms: batched,
        suffix_rows,
        question_suffix_tokens: question_prompt.after_image().len(),
        vgrefine_ms,
        vgrefine_heads: settings.heads,
        vgrefine_masked_layers: settings.masked_layers,
    })
}

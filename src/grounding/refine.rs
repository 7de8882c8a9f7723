//! VGRefine over a model session: ask the question and the general-description prompt on one
//! cached image prefix, triage the image tokens, knock out the rest in the masked layers and
//! answer again.

use std::time::Instant;

use anyhow::{bail, Result};

use super::triage::{self, Rule, Triage};
use super::{split_heads, LayerHeadMaps, RelativeMaps};
use crate::model::{Answer, EdgeMask, ImageSession, QueryRows, RunOptions, TokenisedPrompt};

/// The reference's instruction appended to every question.
pub const ANSWER_SUFFIX: &str = "Answer the question using a single word or phrase.";
/// The reference's general-description prompt (the normaliser of relative attention).
pub const GENERAL_PROMPT: &str = "Write a general description of the image.";

/// Which query rows the attention maps are read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Query {
    /// The last prompt token (the one that produces the answer).
    Last,
    /// The mean over all tokens after the image span.
    Question,
}

/// Every setting of one VGRefine run; the defaults reproduce the reference.
#[derive(Clone, Debug)]
pub struct Settings {
    pub raw_template: bool,
    /// Overrides the general prompt (question text when `raw_template`).
    pub general_prompt: Option<String>,
    pub heads: Vec<(usize, usize)>,
    pub masked_layers: Vec<usize>,
    pub rule: Rule,
    pub query: Query,
    pub normalize: bool,
    /// Knock out exactly these image tokens (skips triage).
    pub knockout_tokens: Option<Vec<usize>>,
    pub max_new_tokens: usize,
    pub knockout_decode: bool,
    /// Stop answers at the end-of-sequence token (off only to compare fixed-length outputs).
    pub stop_at_eos: bool,
    /// Instruction appended to the question and the general prompt in the model's format.
    pub answer_suffix: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            raw_template: false,
            general_prompt: None,
            heads: Vec::new(),
            masked_layers: Vec::new(),
            rule: Rule::Percentile(80.0),
            query: Query::Last,
            normalize: true,
            knockout_tokens: None,
            max_new_tokens: 16,
            knockout_decode: false,
            stop_at_eos: true,
            answer_suffix: ANSWER_SUFFIX.to_string(),
        }
    }
}

/// What a VGRefine run produced.
pub struct Outcome {
    pub prompt: TokenisedPrompt,
    pub general_prompt: TokenisedPrompt,
    pub original: Answer,
    pub refined: Answer,
    pub question_maps: LayerHeadMaps,
    pub general_maps: LayerHeadMaps,
    /// Attention of the knockout pass (same query rows), to show before/after.
    pub refined_maps: LayerHeadMaps,
    pub triage: Option<Triage>,
    pub knocked_out: Vec<usize>,
    /// The question's and the general prompt's suffixes, prefilled and answered as one batch
    /// (with the knockout in it too when its tokens were given).
    pub suffixes_ms: f64,
    /// The knockout run after the triage (0 when it joined the batch).
    pub knockout_ms: f64,
}

impl Outcome {
    pub fn relative(&self, normalize: bool) -> RelativeMaps<'_> {
        RelativeMaps {
            question: &self.question_maps,
            general: &self.general_maps,
            normalize,
        }
    }
}

/// Build the question and general prompts for a model under the settings.
pub fn prompts(
    session: &ImageSession,
    question: &str,
    settings: &Settings,
) -> Result<(TokenisedPrompt, TokenisedPrompt)> {
    let (question_text, general_text) = if settings.raw_template {
        let general = settings
            .general_prompt
            .clone()
            .unwrap_or_else(|| format!("<image>\n{GENERAL_PROMPT} {ANSWER_SUFFIX}"));
        (question.to_string(), general)
    } else {
        let general = settings
            .general_prompt
            .clone()
            .unwrap_or_else(|| GENERAL_PROMPT.to_string());
        (
            format!("{question} {ANSWER_SUFFIX}"),
            format!("{general} {ANSWER_SUFFIX}"),
        )
    };
    let prompt = session.prompt(&question_text, settings.raw_template)?;
    let general = session.prompt(&general_text, settings.raw_template)?;
    Ok((prompt, general))
}

/// Check heads, layers and tokens against the model before running anything.
pub fn validate(settings: &Settings, layers: usize, heads: usize, tokens: usize) -> Result<()> {
    for &(layer, head) in &settings.heads {
        if layer >= layers || head >= heads {
            bail!("head {layer}:{head} is out of range: the model has {layers} layers x {heads} heads (0-based)");
        }
    }
    if settings.heads.is_empty() && settings.knockout_tokens.is_none() {
        bail!("no triage heads given (--heads) and none known for this model");
    }
    for &layer in &settings.masked_layers {
        if layer >= layers {
            bail!("masked layer {layer} is out of range: the model has {layers} layers (0-based)");
        }
    }
    if let Some(tokens_given) = &settings.knockout_tokens {
        if let Some(bad) = tokens_given.iter().find(|&&t| t >= tokens) {
            bail!("knockout token {bad} is out of range: the image has {tokens} tokens");
        }
    }
    settings.rule.validate().map_err(anyhow::Error::msg)?;
    if settings.max_new_tokens == 0 {
        bail!("--max-new-tokens must be at least 1");
    }
    Ok(())
}

/// The stages of a VGRefine run, for progress reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Prefix,
    Question,
    General,
    Knockout,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Prefix => "prefix",
            Stage::Question => "question",
            Stage::General => "general",
            Stage::Knockout => "knockout",
        }
    }
}

/// The first half of VGRefine: the question and the general prompt on one image prefix, with
/// their attention maps (what the grounding analysis needs).
pub struct Measured {
    pub prompt: TokenisedPrompt,
    pub general_prompt: TokenisedPrompt,
    pub original: Answer,
    pub question_maps: LayerHeadMaps,
    pub general_maps: LayerHeadMaps,
    /// The question's and the general prompt's suffixes, prefilled and answered in one batch.
    pub suffixes_ms: f64,
    answer_options: RunOptions,
    /// The knockout run, when its tokens were given (it joined the batch).
    knockout: Option<Answer>,
}

/// Ask the question and the general prompt; no triage, no knockout.
pub fn measure(
    session: &mut ImageSession,
    question: &str,
    settings: &Settings,
) -> Result<Measured> {
    measure_with_progress(session, question, settings, &mut |_| true)
}

fn measure_with_progress(
    session: &mut ImageSession,
    question: &str,
    settings: &Settings,
    progress: &mut dyn FnMut(Stage) -> bool,
) -> Result<Measured> {
    let mut step = |stage: Stage| proceed(progress, stage);
    let heads = session.model.decoder.cfg.num_attention_heads;
    let (prompt, general_prompt) = prompts(session, question, settings)?;
    step(Stage::Prefix)?;
    session.prepare_prefix(&prompt)?;
    let rows = |p: &TokenisedPrompt| match settings.query {
        Query::Last => QueryRows::Last,
        Query::Question => QueryRows::MeanFrom(p.image_span.end),
    };
    let answer_options = RunOptions {
        max_new_tokens: settings.max_new_tokens,
        query: rows(&prompt),
        stop_at_eos: settings.stop_at_eos,
        ..RunOptions::default()
    };

    // A knockout whose tokens are given needs no triage: it joins the same batch.
    let fixed_knockout = settings
        .knockout_tokens
        .as_ref()
        .map(|tokens| knockout_options(&prompt, tokens, settings, &answer_options));

    step(Stage::Question)?;
    let general_options = RunOptions {
        max_new_tokens: 1,
        query: rows(&general_prompt),
        ..RunOptions::default()
    };
    let mut jobs = vec![
        (&prompt, &answer_options),
        (&general_prompt, &general_options),
    ];
    jobs.extend(fixed_knockout.as_ref().map(|options| (&prompt, options)));
    let started = Instant::now();
    let mut answers = session.run_batch(&jobs)?.into_iter();
    let suffixes_ms = started.elapsed().as_secs_f64() * 1e3;
    let (original, general) = (
        answers.next().expect("the question's answer"),
        answers.next().expect("the general prompt's answer"),
    );
    let knockout = answers.next();
    let question_maps = split_heads(&original.attention, heads);
    let general_maps = split_heads(&general.attention, heads);
    Ok(Measured {
        prompt,
        general_prompt,
        original,
        question_maps,
        general_maps,
        suffixes_ms,
        answer_options,
        knockout,
    })
}

/// The edges VGRefine blocks: from the question's rows (every token after the image) to the
/// `knocked_out` image tokens, in the settings' masked layers.
pub fn knockout_edges(
    prompt: &TokenisedPrompt,
    knocked_out: &[usize],
    settings: &Settings,
) -> EdgeMask {
    EdgeMask {
        layers: settings.masked_layers.clone(),
        queries_from: prompt.image_span.end,
        blocked_keys: crate::model::image_key_positions(&prompt.image_span, knocked_out),
        and: None,
    }
}

/// The knockout run's options: `answer_options` with [`knockout_edges`].
fn knockout_options(
    prompt: &TokenisedPrompt,
    knocked_out: &[usize],
    settings: &Settings,
    answer_options: &RunOptions,
) -> RunOptions {
    RunOptions {
        knockout: Some(knockout_edges(prompt, knocked_out, settings)),
        knockout_decode: settings.knockout_decode,
        ..answer_options.clone()
    }
}

/// Report `stage`; an error when the caller asked to cancel.
fn proceed(progress: &mut dyn FnMut(Stage) -> bool, stage: Stage) -> Result<()> {
    if progress(stage) {
        Ok(())
    } else {
        bail!("cancelled")
    }
}

/// Run VGRefine for `question` on an image session.
pub fn run(session: &mut ImageSession, question: &str, settings: &Settings) -> Result<Outcome> {
    run_with_progress(session, question, settings, &mut |_| true)
}

/// As [`run`], calling `progress` before each stage; it returns false to cancel.
pub fn run_with_progress(
    session: &mut ImageSession,
    question: &str,
    settings: &Settings,
    progress: &mut dyn FnMut(Stage) -> bool,
) -> Result<Outcome> {
    let cfg = &session.model.decoder.cfg;
    let (layers, heads, tokens) = (
        cfg.num_hidden_layers,
        cfg.num_attention_heads,
        session.num_image_tokens(),
    );
    validate(settings, layers, heads, tokens)?;
    let Measured {
        prompt,
        general_prompt,
        original,
        question_maps,
        general_maps,
        suffixes_ms,
        answer_options,
        knockout,
    } = measure_with_progress(session, question, settings, progress)?;
    let mut step = |stage: Stage| proceed(progress, stage);
    let (triage, knocked_out) = match &settings.knockout_tokens {
        Some(tokens) => (None, tokens.clone()),
        None => {
            let relative = RelativeMaps {
                question: &question_maps,
                general: &general_maps,
                normalize: settings.normalize,
            };
            let result =
                triage::triage(triage::score_map(&relative, &settings.heads), settings.rule);
            let knocked = result.knocked_out.clone();
            (Some(result), knocked)
        }
    };

    step(Stage::Knockout)?;
    let started = Instant::now();
    let (refined, knockout_ms) = match knockout {
        Some(refined) => (refined, 0.0),
        None => {
            let options = knockout_options(&prompt, &knocked_out, settings, &answer_options);
            let refined = session.run(&prompt, &options)?;
            (refined, started.elapsed().as_secs_f64() * 1e3)
        }
    };
    let refined_maps = split_heads(&refined.attention, heads);

    Ok(Outcome {
        prompt,
        general_prompt,
        original,
        refined,
        question_maps,
        general_maps,
        refined_maps,
        triage,
        knocked_out,
        suffixes_ms,
        knockout_ms,
    })
}

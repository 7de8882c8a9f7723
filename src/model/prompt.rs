//! Prompt formats and tokenisation with an image span.
//!
//! A prompt is text with one `<image>` marker. It is tokenised the way each family's own code
//! does it, and the marker becomes N image positions (written as -1 in `input_ids`):
//! - llava-hf: the checkpoint's `chat_template` (rendered with minijinja) with `<image>` an
//!   added special token, expanded to N copies, as `LlavaProcessor` does.
//! - original LLaVA (HuatuoGPT-Vision, LLaVA-Med): the text is split at `<image>`, each chunk
//!   tokenised separately, BOS kept only on the first (LLaVA's `tokenizer_image_token`).
//! - Qwen-VL: the checkpoint's `chat_template`, whose `<|vision_start|><|image_pad|><|vision_end|>`
//!   has its one `<|image_pad|>` expanded to N, as `Qwen2_5_VLProcessor` does.
//! - Gemma 3: the checkpoint's `chat_template`, whose one `<start_of_image>` becomes
//!   `\n\n<start_of_image>` + N x `<image_soft_token>` + `<end_of_image>\n\n`, as
//!   `Gemma3Processor` does.
//! - raw: the text verbatim, no added special tokens; for Qwen-VL, `<image>` becomes
//!   `<|vision_start|>` + N x `<|image_pad|>` + `<|vision_end|>`, for Gemma 3
//!   `<start_of_image>` + N x `<image_soft_token>` + `<end_of_image>`.
//!
//! A rendered template that starts with the tokenizer's BOS is tokenised without adding special
//! tokens (as transformers' processors do), so BOS is never doubled.

use std::ops::Range;
use std::path::Path;

use anyhow::{bail, Context, Result};

pub const IMAGE_MARKER: &str = "<image>";

/// How a question becomes prompt text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum PromptFormat {
    /// The checkpoint's HF `chat_template`.
    ChatTemplate,
    /// HuatuoGPT-Vision: `<|user|>\n<image>\n{q}\n<|assistant|>\n`.
    Huatuo,
    /// LLaVA-Med v1.5 (mistral_instruct): `[INST] <image>\n{q} [/INST]`.
    MistralInstruct,
    /// The text verbatim; `<image>` marks the image span.
    Raw,
}

/// A tokenised prompt: ids with image positions as -1, and where the image is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenisedPrompt {
    pub text: String,
    pub input_ids: Vec<i64>,
    pub image_span: Range<usize>,
}

impl TokenisedPrompt {
    /// Text token ids before the image span.
    pub fn before_image(&self) -> Vec<u32> {
        self.input_ids[..self.image_span.start]
            .iter()
            .map(|&id| id as u32)
            .collect()
    }

    /// Text token ids after the image span.
    pub fn after_image(&self) -> Vec<u32> {
        self.input_ids[self.image_span.end..]
            .iter()
            .map(|&id| id as u32)
            .collect()
    }
}

/// Render the chat template of a llava-hf checkpoint for one user turn with one image.
pub fn render_chat_template(
    template: &str,
    question: &str,
    bos: &str,
    eos: &str,
) -> Result<String> {
    let mut env = minijinja::Environment::new();
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_template("chat", template)
        .context("the checkpoint's chat_template does not parse")?;
    let messages = serde_json::json!([{
        "role": "user",
        "content": [{"type": "image"}, {"type": "text", "text": question}],
    }]);
    let rendered = env
        .get_template("chat")?
        .render(minijinja::context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => bos,
            eos_token => eos,
        })
        .context("the checkpoint's chat_template failed to render")?;
    Ok(rendered)
}

/// The chat template of a checkpoint folder, from `chat_template.jinja`, `chat_template.json`
/// or `tokenizer_config.json`, in that order.
pub fn find_chat_template(dir: &Path) -> Option<String> {
    if let Ok(text) = std::fs::read_to_string(dir.join("chat_template.jinja")) {
        return Some(text);
    }
    for file in [
        "chat_template.json",
        "processor_config.json",
        "tokenizer_config.json",
    ] {
        let Ok(text) = std::fs::read_to_string(dir.join(file)) else {
            continue;
        };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if let Some(template) = json.get("chat_template").and_then(|t| t.as_str()) {
            return Some(template.to_string());
        }
    }
    None
}

/// The BOS and EOS strings a chat template is rendered with: `tokenizer_config.json`'s
/// `bos_token` / `eos_token` (a string or `{"content": ...}`), else LLaMA's `<s>` / `</s>`.
pub fn special_tokens(dir: &Path) -> (String, String) {
    let config = std::fs::read_to_string(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
    let read = |key: &str, default: &str| -> String {
        config
            .as_ref()
            .and_then(|c| c.get(key))
            .and_then(|v| {
                v.as_str()
                    .or_else(|| v.get("content").and_then(|c| c.as_str()))
            })
            .unwrap_or(default)
            .to_string()
    };
    (read("bos_token", "<s>"), read("eos_token", "</s>"))
}

/// Prompt text for `question` in `format` (`<image>` included where the format puts it);
/// `specials` are the (BOS, EOS) strings of [`special_tokens`].
pub fn prompt_text(
    format: PromptFormat,
    question: &str,
    chat_template: Option<&str>,
    specials: (&str, &str),
) -> Result<String> {
    Ok(match format {
        PromptFormat::Huatuo => format!("<|user|>\n{IMAGE_MARKER}\n{question}\n<|assistant|>\n"),
        PromptFormat::MistralInstruct => format!("[INST] {IMAGE_MARKER}\n{question} [/INST]"),
        PromptFormat::Raw => question.to_string(),
        PromptFormat::ChatTemplate => {
            let Some(template) = chat_template else {
                bail!("the checkpoint has no chat_template; use --template raw");
            };
            render_chat_template(template, question, specials.0, specials.1)?
        }
    })
}

/// Where and how the image goes into a prompt's tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageSlot<'a> {
    /// Image positions.
    pub count: usize,
    /// The token the chat template writes once for the image (`<image>`, `<|image_pad|>`).
    pub template_marker: &'a str,
    /// Token ids around the image span in a raw prompt (`<|vision_start|>`, `<|vision_end|>`).
    pub raw_frame: Option<(u32, u32)>,
    /// Gemma 3: what the processor writes for the template's image token, before tokenising
    /// (`<start_of_image>` -> `\n\n<start_of_image><image_soft_token><end_of_image>\n\n`).
    pub template_expansion: Option<(&'a str, &'a str)>,
    /// The tokenizer's BOS string: a rendered template starting with it adds no special tokens.
    pub bos: Option<&'a str>,
}

impl ImageSlot<'_> {
    /// LLaVA: `<image>` in the template, nothing around it.
    pub fn llava(count: usize) -> ImageSlot<'static> {
        ImageSlot {
            count,
            template_marker: IMAGE_MARKER,
            raw_frame: None,
            template_expansion: None,
            bos: None,
        }
    }
}

/// Tokenise `text` (which must contain exactly one image marker: `<image>`, or the
/// template's own marker) into a prompt with `slot.count` image positions.
pub fn tokenise(
    tokenizer: &tokenizers::Tokenizer,
    text: &str,
    format: PromptFormat,
    slot: ImageSlot,
) -> Result<TokenisedPrompt> {
    let image_tokens = slot.count;
    let expanded;
    let text = match (format, slot.template_expansion) {
        (PromptFormat::ChatTemplate, Some((token, replacement))) => {
            let found = text.matches(token).count();
            if found != 1 {
                bail!("the chat template must write exactly one {token} for the image, it wrote {found}: {text:?}");
            }
            expanded = text.replacen(token, replacement, 1);
            expanded.as_str()
        }
        _ => text,
    };
    let marker = match format {
        PromptFormat::ChatTemplate => slot.template_marker,
        _ => IMAGE_MARKER,
    };
    let markers = text.matches(marker).count();
    if markers != 1 {
        bail!("the prompt must contain exactly one {marker} marking where the image goes, found {markers}: {text:?}");
    }
    let encode = |chunk: &str, special: bool| -> Result<Vec<u32>> {
        let encoding = tokenizer
            .encode(chunk, special)
            .map_err(|e| anyhow::anyhow!("tokenizer failed: {e}"))?;
        Ok(encoding.get_ids().to_vec())
    };
    let (before, after) = text.split_once(marker).unwrap_or((text, ""));
    let (before_ids, after_ids) = match format {
        PromptFormat::ChatTemplate => {
            // Whole text at once: <image> is an added token, so it splits cleanly.
            let marker_id = tokenizer
                .token_to_id(marker)
                .with_context(|| format!("the tokenizer has no {marker} token"))?;
            // transformers' processors add no special tokens to a template that writes BOS.
            let add_special = !slot.bos.is_some_and(|bos| text.starts_with(bos));
            let ids = encode(text, add_special)?;
            let at = ids
                .iter()
                .position(|&id| id == marker_id)
                .with_context(|| format!("{marker} did not survive tokenisation"))?;
            (ids[..at].to_vec(), ids[at + 1..].to_vec())
        }
        PromptFormat::Huatuo | PromptFormat::MistralInstruct => {
            let first = encode(before, true)?;
            let mut second = encode(after, true)?;
            // tokenizer_image_token drops the BOS the tokenizer adds to later chunks.
            if let (Some(&bos), Some(&first_of_second)) = (first.first(), second.first()) {
                if first_of_second == bos && is_special(tokenizer, bos) {
                    second.remove(0);
                }
            }
            (first, second)
        }
        PromptFormat::Raw => {
            let mut first = encode(before, false)?;
            let mut second = encode(after, false)?;
            if let Some((start, end)) = slot.raw_frame {
                first.push(start);
                second.insert(0, end);
            }
            (first, second)
        }
    };
    let start = before_ids.len();
    let mut input_ids: Vec<i64> = before_ids.into_iter().map(i64::from).collect();
    input_ids.extend(std::iter::repeat_n(-1, image_tokens));
    input_ids.extend(after_ids.into_iter().map(i64::from));
    Ok(TokenisedPrompt {
        text: text.to_string(),
        input_ids,
        image_span: start..start + image_tokens,
    })
}

fn is_special(tokenizer: &tokenizers::Tokenizer, id: u32) -> bool {
    tokenizer
        .get_added_tokens_decoder()
        .get(&id)
        .is_some_and(|token| token.special)
}

#!/usr/bin/env python3
"""Build tiny random Gemma 3 + SigLIP (MedGemma) checkpoints and reference outputs for fovea's tests.

Writes everything under tests/fixtures/gemma3/ (relative to the repository root):

  gemma3-hub/                        (a) the layout google/medgemma-4b-it ships:
                                     `language_model.model.*`, `vision_tower.vision_model.*`,
                                     `multi_modal_projector.*`, no lm_head (tied); a hub-style
                                     config.json (transformers 4.50 era: text_config with
                                     rope_theta, rope_local_base_freq, rope_scaling {factor 8,
                                     rope_type linear}, sliding_window_pattern; eos_token_id
                                     list), chat_template.json, generation_config.json as
                                     MedGemma's (do_sample, top_k/top_p, cache_implementation)
  gemma3-saved/                      (b) config.json, model.safetensors and generation_config.json
                                     exactly as transformers 5 save_pretrained writes them
                                     (layer_types + per-layer-type rope_parameters; keys
                                     `language_model.model.*`, `language_model.lm_head.weight`,
                                     `vision_tower.*` WITHOUT `vision_model`,
                                     `multi_modal_projector.*`), untied lm_head,
                                     chat_template.jinja
  gemma3-nested/                     (c) the in-memory names (`model.language_model.*`,
                                     `model.vision_tower.*`, `model.multi_modal_projector.*`),
                                     no lm_head (tied), config.json / generation_config.json as
                                     transformers 5 save_pretrained writes them,
                                     chat_template.jinja
  gemma3-bf16/                       (d) the saved layout in bfloat16, tied head, for one check:
                                     the embedding scale sqrt(hidden) rounded to bf16
  <name>.expected.safetensors        reference tensors for every checkpoint
  <name>.expected.json               prompt text (rendered and image-expanded), spans, token ids,
                                     knockout spec, tolerances, versions, key layout, rope

Every folder also has tokenizer.json (WordLevel over the prompts' words, Gemma's special tokens
at Gemma's low ids: <pad> 0, <eos> 1, <bos> 2, <unk> 3; "\\n", "\\n\\n" and "\\n\\n\\n" as added
(non-special) tokens, matched leftmost-longest, so "user\\n" + "\\n\\n<start_of_image>" tokenises
as "user", "\\n\\n\\n", "<start_of_image>" like Gemma's real tokenizer, and NOT as the
concatenation of the two pieces' tokens; a TemplateProcessing post-processor that prepends
<bos>), tokenizer_config.json (bos <bos>, eos <eos>, boi/eoi/image tokens, tokenizer_class
PreTrainedTokenizerFast: transformers 5's GemmaTokenizer would rebuild a BPE and ignore the
WordLevel model), preprocessor_config.json (Gemma3ImageProcessor, 112 x 112, resample 2 =
bilinear, mean/std 0.5) and processor_config.json (image_seq_length 16).

What the checkpoints exercise:
- SigLIP: 112 px / patch 14 = 8 x 8 patches, learned position table, LayerNorm with bias,
  GELU-tanh MLP, post_layernorm, no head; the projector average-pools 2 x 2 patches into 4 x 4
  = 16 soft tokens, then Gemma RMSNorm (1 + w) over the 32 vision channels, then x @ W with W
  stored (vision_hidden, text_hidden) = (32, 96), i.e. NOT an nn.Linear (out, in) weight;
- the Gemma 3 decoder: embeddings scaled by sqrt(96) (not a bf16 number: 9.797959 -> 9.8125),
  four RMSNorms per layer plus q/k norms, every norm weight applied as (1 + w) (all initialised
  randomly here), head_dim 32 with hidden 96 and 4 heads (q_proj 96 -> 128), GQA 4 / 2,
  scaling query_pre_attn_scalar ** -0.5 = 20 ** -0.5 (not head_dim), GELU-tanh gated MLP;
- layers 0 and 2 sliding (window 8, rope theta 1e4, default rope), 1 and 3 full (theta 1e6,
  linear rope scaling factor 8: inv_freq / 8);
- the bidirectional image block: with token_type_ids (1 exactly at the 16 <image_soft_token>
  positions) image queries see every image key, also future ones; in sliding layers the mask is
  AND(kv > q - 8, OR(kv <= q, same image block)), so future image keys stay visible past the
  window while past keys further back than 7 positions are hidden; the prompts (47 and 46
  tokens) and the image block (16) are all longer than the window;
- decode steps after the prefill carry no token_type_ids (plain causal / sliding masks).
Weights: make_qwen_vl_fixtures' per-tensor init, then every Gemma RMSNorm weight ~ N(0, 0.3^2)
(gain 1 + w), the final norm's weight around 7 (gain ~ 8), embedding rows ~ N(0, 0.02^2) (with
N(0, 1) rows the scaled embedding dominates the residual stream and a tied head only repeats
the last token), the SigLIP position table ~ N(0, 0.5^2), mm_input_projection_weight / sqrt(32).
The salts give greedy margins > 0.02 and three different generations (plain, prefill knockout,
every-step knockout) per f32 checkpoint; the script asserts both.
The script asserts all of that: logits with token_type_ids differ from logits without, logits
with a sliding window of 4096 differ, the sliding layers' attention probabilities are zero
further back than the window and non-zero for a future image key beyond it, the full layers'
image rows see the whole block, the knockout zeroes exactly the blocked edges and leaves the
rows before <end_of_image> bit-identical, generate() equals a manual KV-cache greedy loop.

Prompt building: the real Gemma3Processor (Gemma3Processor.from_pretrained on each folder: the
tokenizer, Gemma3ImageProcessorPil, the chat template, image_seq_length 16) through its
apply_chat_template(tokenize=True). It renders the template (which writes bos_token itself),
replaces the single <start_of_image> with
"\\n\\n<start_of_image>" + "<image_soft_token>" * 16 + "<end_of_image>\\n\\n", and tokenises
WITHOUT adding special tokens (the rendered text starts with <bos>). The script asserts that
doing this by hand (render, replace, tokenizer(..., add_special_tokens=False)) gives the same
ids, that token_type_ids is 1 exactly at the soft tokens, and that the pixel values equal
PIL bilinear resize to 112 x 112 (ignoring the aspect ratio) -> / 255 -> (x - 0.5) / 0.5.

The reference numbers come from transformers' Gemma3ForConditionalGeneration (eager attention,
float32, CPU), reloaded from the files written here. from_pretrained maps the hub layout
(`vision_tower.vision_model.*` -> `model.vision_tower.*`) and the saved layout itself; the
nested layout loads as is. Weights are asserted bit-identical after every reload.

Attention knockout: modeling_gemma3's module-level `eager_attention_forward` (signature
module, query, key, value, attention_mask, dropout, scaling, softcap: dropout and scaling in
the other order than in the LLaVA / Qwen modules, so make_llava_fixtures' wrapper cannot be
reused as is) is wrapped; for the chosen decoder layers it SETS the additive mask to
torch.finfo(float32).min at [query >= index of <end_of_image>, key in the blocked image
positions] in the prefill (and, with all_steps, in every decode step). In the sliding layer 2
most of those entries are already masked by the window; setting (instead of adding) keeps them
at finfo.min. The state (layers, query start, keys) is make_llava_fixtures' `KO` dict, set by
its `knockout` context manager. SigLIP's attention lives in modeling_siglip and is not patched.

bf16 check (gemma3-bf16): transformers loads the checkpoint natively in bfloat16 and
`embed_tokens(ids)` multiplies the bf16 rows by sqrt(96) cast to bf16 (9.8125), giving a bf16
product; `bf16_embeddings` is that product widened to f32 for the question's ids (the soft token
id stays at the image positions: it is an ordinary row of the table). The script asserts that
the unrounded f32 scale (with or without rounding the product to bf16) gives different values.

Size: about 5.9 MB, nearly all of it the four model.safetensors (1.43 MB per f32 checkpoint:
4 decoder layers of hidden 96 with q_proj 96 -> 128 and a 128-wide gated MLP are ~74k weights
each; 0.72 MB in bf16) and 150 KB of pixel values per expected file.

Not written here: transformers 5's Gemma3Processor.save_pretrained would write a nested
processor_config.json ({"image_processor": {...}, "image_seq_length": 16, ...}) and no
preprocessor_config.json, and a tokenizer_config.json with tokenizer_class TokenizersBackend and
model_specific_special_tokens; every folder here has the MedGemma-style files instead.

Rerun:  python tools/make_gemma3_fixtures.py   (see tools/README.md)
Needs: torch, transformers (5.x), safetensors, tokenizers, numpy, pillow; no torchvision (with
it transformers picks the torchvision image backend). No network access.
"""

from __future__ import annotations

import json
import sys
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_llava_fixtures as base  # noqa: E402  (save/load, json, knockout state, versions)
import make_qwen_vl_fixtures as qv  # noqa: E402  (words, questions, init, knockout layers)

from transformers import (  # noqa: E402
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3Processor,
    PreTrainedTokenizerFast,
)
from transformers.image_utils import PILImageResampling  # noqa: E402
from transformers.models.gemma3 import modeling_gemma3  # noqa: E402
from transformers.models.gemma3.image_processing_pil_gemma3 import (  # noqa: E402
    Gemma3ImageProcessorPil,
)

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "gemma3"
IMAGE_PATH = REPO / "tests" / "fixtures" / "qwen_vl" / "test_image.png"

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

# ----------------------------------------------------------------------------------------------
# Vocabulary: Gemma's first four ids, the prompts' words, then the turn / newline / image tokens
# (the image soft token last, as in Gemma's vocabulary).
# ----------------------------------------------------------------------------------------------
HEAD_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
TURN_SPECIALS = ["<start_of_turn>", "<end_of_turn>"]
NEWLINES = ["\n", "\n\n", "\n\n\n"]
IMAGE_SPECIALS = ["<start_of_image>", "<end_of_image>", "<image_soft_token>"]
SPECIALS = HEAD_SPECIALS + TURN_SPECIALS + IMAGE_SPECIALS
WORDS = list(dict.fromkeys(qv.WORDS + ["model"]))
VOCAB = {t: i for i, t in enumerate(HEAD_SPECIALS + WORDS + TURN_SPECIALS + NEWLINES + IMAGE_SPECIALS)}
V = len(VOCAB)
PAD, EOS, BOS, UNK = (VOCAB[t] for t in HEAD_SPECIALS)
SOT, EOT = VOCAB["<start_of_turn>"], VOCAB["<end_of_turn>"]
BOI, EOI, SOFT = (VOCAB[t] for t in IMAGE_SPECIALS)
assert (PAD, EOS, BOS, UNK) == (0, 1, 2, 3)  # Gemma3TextConfig's defaults: pad 0, eos 1, bos 2

QUESTION, GENERAL = qv.QUESTION, qv.GENERAL
SYSTEM = "You are a helpful assistant ."

# A chat template in the style of Gemma 3 / MedGemma's (bos_token first, the system message
# folded into the first user turn, assistant -> model, text parts trimmed), written for these tests.
CHAT_TEMPLATE = (
    "{{- bos_token }}\n"
    "{%- set ns = namespace(prefix='') %}\n"
    "{%- if messages and messages[0].role == 'system' %}\n"
    "    {%- if messages[0].content is string %}\n"
    "        {%- set ns.prefix = (messages[0].content | trim) + '\\n\\n' %}\n"
    "    {%- else %}\n"
    "        {%- for part in messages[0].content %}\n"
    "            {%- if part.type == 'text' %}{%- set ns.prefix = ns.prefix + (part.text | trim) %}{%- endif %}\n"
    "        {%- endfor %}\n"
    "        {%- set ns.prefix = ns.prefix + '\\n\\n' %}\n"
    "    {%- endif %}\n"
    "    {%- set turns = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set turns = messages %}\n"
    "{%- endif %}\n"
    "{%- for message in turns %}\n"
    "    {%- set role = 'model' if message.role == 'assistant' else message.role %}\n"
    "    {{- '<start_of_turn>' + role + '\\n' }}\n"
    "    {%- if loop.first %}{{- ns.prefix }}{%- endif %}\n"
    "    {%- if message.content is string %}\n"
    "        {{- message.content | trim }}\n"
    "    {%- else %}\n"
    "        {%- for part in message.content %}\n"
    "            {%- if part.type == 'image' %}\n"
    "                {{- '<start_of_image>' }}\n"
    "            {%- elif part.type == 'text' %}\n"
    "                {{- part.text | trim }}\n"
    "            {%- endif %}\n"
    "        {%- endfor %}\n"
    "    {%- endif %}\n"
    "    {{- '<end_of_turn>\\n' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<start_of_turn>model\\n' }}\n"
    "{%- endif %}\n"
)

# ----------------------------------------------------------------------------------------------
# Geometry and configs
# ----------------------------------------------------------------------------------------------
IMAGE_SIZE, PATCH = 112, 14
PATCHES_PER_SIDE = IMAGE_SIZE // PATCH  # 8
MM_TOKENS = 16  # 4 x 4, average pooling kernel 2
TOKENS_PER_SIDE = 4
MEAN = STD = [0.5, 0.5, 0.5]
RESAMPLE = int(PILImageResampling.BILINEAR)  # 2: Gemma3ImageProcessorPil's default
VISION = {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 3,
          "num_attention_heads": 2, "num_channels": 3, "image_size": IMAGE_SIZE,
          "patch_size": PATCH, "layer_norm_eps": 1e-6, "hidden_act": "gelu_pytorch_tanh",
          "attention_dropout": 0.0, "vision_use_head": False}
TEXT = {"vocab_size": V, "hidden_size": 96, "intermediate_size": 128, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
        "query_pre_attn_scalar": 20, "sliding_window": 8, "rms_norm_eps": 1e-6,
        "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": 512,
        "attention_bias": False, "attention_dropout": 0.0, "final_logit_softcapping": None,
        "attn_logit_softcapping": None, "initializer_range": 0.02}
SLIDING_WINDOW_PATTERN = 2
LAYER_TYPES = ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]
ROPE_THETA, ROPE_LOCAL_BASE_FREQ = 1_000_000.0, 10_000.0
ROPE_SCALING = {"factor": 8.0, "rope_type": "linear"}
STOP_IDS = [EOS, EOT]  # MedGemma's generation_config eos_token_id: [<eos>, <end_of_turn>]

KNOCK_LAYERS_1, KNOCK_LAYERS_2 = qv.KNOCK_LAYERS_1, qv.KNOCK_LAYERS_2  # [1] (full), [1, 2]
N_NEW = 5
# Embedding rows are drawn with this std (they are multiplied by sqrt(96) ~ 9.8): with N(0, 1)
# rows the residual stream is the input embedding and a tied head just repeats the last token.
# The final norm's weight is drawn around FINAL_NORM_W (gain 1 + w ~ 8) so that the tied
# head's logits (small rows) have top-1/top-2 margins far above float noise.
EMBED_STD = 0.02
FINAL_NORM_W = 7.0

# Salts (weight-init tags "<name>#<salt>") picked so that every greedy step has a top-1/top-2
# margin > 0.02 and the plain, prefill-knockout and every-step-knockout generations all differ.
SPECS = {
    "gemma3-hub": {"layout": "hub", "tied": True, "salt": 9, "dtype": "float32"},
    "gemma3-saved": {"layout": "saved", "tied": False, "salt": 7, "dtype": "float32"},
    "gemma3-nested": {"layout": "nested", "tied": True, "salt": 0, "dtype": "float32"},
    "gemma3-bf16": {"layout": "saved", "tied": True, "salt": 0, "dtype": "bfloat16"},
}


def config_obj(tied: bool) -> Gemma3Config:
    text = dict(TEXT, sliding_window_pattern=SLIDING_WINDOW_PATTERN, rope_theta=ROPE_THETA,
                rope_local_base_freq=ROPE_LOCAL_BASE_FREQ, rope_scaling=dict(ROPE_SCALING),
                pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, tie_word_embeddings=tied)
    vision = dict(VISION, model_type="siglip_vision_model")
    return Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=MM_TOKENS,
                        boi_token_index=BOI, eoi_token_index=EOI, image_token_index=SOFT,
                        tie_word_embeddings=tied)


def hub_style_config_json() -> dict:
    """config.json as google/medgemma-4b-it has it (transformers 4.50 era)."""
    text = dict(TEXT, model_type="gemma3_text", cache_implementation="hybrid",
                rope_local_base_freq=ROPE_LOCAL_BASE_FREQ, rope_scaling=dict(ROPE_SCALING),
                rope_theta=ROPE_THETA, sliding_window_pattern=SLIDING_WINDOW_PATTERN,
                torch_dtype="float32", use_cache=True)
    vision = dict(VISION, model_type="siglip_vision_model", torch_dtype="float32")
    return {"architectures": ["Gemma3ForConditionalGeneration"], "boi_token_index": BOI,
            "eoi_token_index": EOI, "eos_token_id": STOP_IDS, "image_token_index": SOFT,
            "initializer_range": 0.02, "mm_tokens_per_image": MM_TOKENS, "model_type": "gemma3",
            "text_config": dict(sorted(text.items())), "torch_dtype": "float32",
            "transformers_version": "4.50.0.dev0", "vision_config": dict(sorted(vision.items()))}


def generation_config_json() -> dict:
    """As MedGemma's generation_config.json (sampling on; fovea and this script decode greedily)."""
    return {"bos_token_id": BOS, "cache_implementation": "hybrid", "do_sample": True,
            "eos_token_id": STOP_IDS, "pad_token_id": PAD, "top_k": 64, "top_p": 0.95,
            "transformers_version": "4.50.0.dev0"}


def preprocessor_config(pan_and_scan) -> dict:
    """As MedGemma's preprocessor_config.json, at 112 px and 16 soft tokens."""
    return {"do_convert_rgb": None, "do_normalize": True, "do_pan_and_scan": pan_and_scan,
            "do_rescale": True, "do_resize": True, "image_mean": MEAN,
            "image_processor_type": "Gemma3ImageProcessor", "image_seq_length": MM_TOKENS,
            "image_std": STD, "pan_and_scan_max_num_crops": None,
            "pan_and_scan_min_crop_size": None, "pan_and_scan_min_ratio_to_activate": None,
            "processor_class": "Gemma3Processor", "resample": RESAMPLE,
            "rescale_factor": 1 / 255, "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE}}


# ----------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------
def build_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.WordLevel(vocab=dict(VOCAB), unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    tok.add_tokens([AddedToken(s, special=False, normalized=False) for s in NEWLINES])
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", BOS)])
    return tok


def tokenizer_config() -> dict:
    """tokenizer_config.json in the shape of MedGemma's (tokenizer_class aside, see docstring)."""
    decoder = {str(VOCAB[s]): {"content": s, "lstrip": False, "normalized": False,
                               "rstrip": False, "single_word": False,
                               "special": s in SPECIALS}
               for s in sorted(SPECIALS + NEWLINES, key=VOCAB.get)}
    return {"add_bos_token": True, "add_eos_token": False, "added_tokens_decoder": decoder,
            "boi_token": "<start_of_image>", "bos_token": "<bos>",
            "clean_up_tokenization_spaces": False, "eoi_token": "<end_of_image>",
            "eos_token": "<eos>",
            "extra_special_tokens": {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                     "image_token": "<image_soft_token>"},
            "image_token": "<image_soft_token>", "model_max_length": 4096, "pad_token": "<pad>",
            "padding_side": "left", "processor_class": "Gemma3Processor",
            "spaces_between_special_tokens": False, "tokenizer_class": "PreTrainedTokenizerFast",
            "unk_token": "<unk>", "use_default_system_prompt": False}


def image_processor() -> Gemma3ImageProcessorPil:
    return Gemma3ImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                                   resample=PILImageResampling.BILINEAR, image_mean=MEAN,
                                   image_std=STD, do_pan_and_scan=False)


# ----------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------
def init_weights(model: torch.nn.Module, tag: str) -> None:
    """make_qwen_vl_fixtures' init (one generator per tensor from crc32(tag:name)), then every
    Gemma RMSNorm weight (applied as 1 + w) drawn around 0 and the SigLIP position table drawn
    larger, so forgetting the `1 +`, a norm or the position embeddings shows in every output."""
    qv.init_weights(model, tag)
    norms = {n for n, mod in model.named_modules() if type(mod).__name__ == "Gemma3RMSNorm"}
    with torch.no_grad():
        for name, p in model.named_parameters():
            g = torch.Generator().manual_seed(zlib.crc32(f"{tag}:gemma:{name}".encode()))
            if name == "model.language_model.norm.weight":
                p.copy_(FINAL_NORM_W + 0.3 * torch.randn(p.shape, generator=g))
            elif name.rsplit(".", 1)[0] in norms:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith("embeddings.position_embedding.weight"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif name.endswith("embed_tokens.weight"):  # x sqrt(96) in the forward
                p.copy_(EMBED_STD * torch.randn(p.shape, generator=g))
            elif name.endswith("mm_input_projection_weight"):  # (in, out): fan-in is dim 0
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[0] ** 0.5)
    assert len(norms) == 4 * 6 + 1 + 1, sorted(norms)  # 6 per layer, final norm, projector norm


HUB_PREFIXES = (("model.language_model.", "language_model.model."),
                ("model.vision_tower.", "vision_tower.vision_model."),
                ("model.multi_modal_projector.", "multi_modal_projector."))


def hub_sd(sd: dict) -> dict:
    """The in-memory names renamed to MedGemma's layout; the tied lm_head is not stored."""
    out = {}
    for k, v in sd.items():
        if k == "lm_head.weight":
            continue
        new = next(h + k[len(i):] for i, h in HUB_PREFIXES if k.startswith(i))
        out[new] = v
    return out


def key_prefixes(keys) -> list[str]:
    pre = set()
    for k in keys:
        parts = k.split(".")
        if k.endswith("lm_head.weight"):
            pre.add(k)
        elif parts[0] in ("multi_modal_projector",) or parts[:2] == ["model", "multi_modal_projector"]:
            pre.add(".".join(parts[: parts.index("multi_modal_projector") + 1]) + ".")
        else:
            stop = next(i for i, p in enumerate(parts)
                        if p in ("embed_tokens", "layers", "norm", "embeddings", "encoder",
                                 "post_layernorm"))
            pre.add(".".join(parts[:stop]) + ".")
    return sorted(pre)


# ----------------------------------------------------------------------------------------------
# Knockout patch (Gemma 3's eager signature; state in base.KO, set by base.knockout)
# ----------------------------------------------------------------------------------------------
def _gemma_knockout_wrapper(orig):
    def eager_with_knockout(module, query, key, value, attention_mask, dropout=0.0,
                            scaling=None, softcap=None, **kwargs):
        ko = base.KO
        layer = getattr(module, "layer_idx", None)
        if ko["layers"] and layer in ko["layers"]:
            q_len, kv_len = query.shape[-2], key.shape[-2]
            is_prefill = q_len == ko["prefill_len"] and kv_len == q_len
            if is_prefill or ko["all_steps"]:
                # absolute positions = cache positions only for full-attention layers
                assert is_prefill or not module.is_sliding, "decode knockout in a sliding layer"
                q_pos = torch.arange(kv_len - q_len, kv_len)
                rows = (q_pos >= ko["q_start"]).nonzero().flatten()
                if attention_mask is None:
                    attention_mask = torch.zeros(1, 1, q_len, kv_len, dtype=query.dtype)
                else:
                    attention_mask = attention_mask.clone()
                if len(rows):
                    attention_mask[..., rows[:, None], torch.tensor(ko["keys"])] = \
                        torch.finfo(torch.float32).min
        return orig(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                    softcap=softcap, **kwargs)

    return eager_with_knockout


# ----------------------------------------------------------------------------------------------
# Reference computation
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def greedy(model, ids, pv, tt, n_new):
    out = model.generate(input_ids=ids, pixel_values=pv, token_type_ids=tt, max_new_tokens=n_new,
                         min_new_tokens=0, do_sample=False, eos_token_id=None, pad_token_id=PAD)
    return out[0, ids.shape[1]:].tolist()


@torch.no_grad()
def greedy_manual(model, ids, pv, tt, n_new, gaps):
    """Prefill with token_type_ids (bidirectional image block), then single-token steps with the
    cache and no token_type_ids."""
    def pick(logits):
        top = logits.topk(2)
        gaps.append(float(top.values[0] - top.values[1]))
        return int(top.indices[0])

    out = model(input_ids=ids, pixel_values=pv, token_type_ids=tt, use_cache=True)
    cache = out.cache
    nxt = pick(out.logits[0, -1])
    gen = [nxt]
    for _ in range(n_new - 1):
        out = model(input_ids=torch.tensor([[nxt]]), cache=cache, use_cache=True)
        cache = out.cache
        nxt = pick(out.logits[0, -1])
        gen.append(nxt)
    return gen


def forward(model, ids, pv, tt, **kw):
    return model(input_ids=ids, pixel_values=pv, token_type_ids=tt, use_cache=False, **kw)


@torch.no_grad()
def vision_reference(model, pv) -> dict:
    vt = model.model.vision_tower(pixel_values=pv)
    last = vt.last_hidden_state  # after post_layernorm
    grid = last.transpose(1, 2).reshape(1, -1, PATCHES_PER_SIDE, PATCHES_PER_SIDE)
    pooled = torch.nn.functional.avg_pool2d(grid, 2).flatten(2).transpose(1, 2)
    proj = model.model.multi_modal_projector
    feats = model.model.get_image_features(pixel_values=pv).pooler_output
    assert torch.equal(feats, proj(last))
    assert torch.allclose(proj.mm_soft_emb_norm(pooled) @ proj.mm_input_projection_weight, feats,
                          atol=1e-6, rtol=0)
    # patch p = row * 8 + col; soft token t = r * 4 + c averages rows 2r..2r+1, cols 2c..2c+1
    assert torch.allclose(pooled[0, 1 * 4 + 2], last[0, [16 + 4, 16 + 5, 24 + 4, 24 + 5]].mean(0),
                          atol=1e-6, rtol=0)
    assert feats.shape == (1, MM_TOKENS, TEXT["hidden_size"]), feats.shape
    return {"vision_last_hidden": last[0], "vision_pooled": pooled[0], "image_features": feats[0]}


@torch.no_grad()
def mechanism_checks(model, ids, pv, tt, span, att, logits) -> dict:
    """Asserts that the bidirectional image block and the sliding window both matter here."""
    s, e = span
    T = ids.shape[1]
    W = TEXT["sliding_window"]
    assert T > W and e - s > W, (T, e - s, W)
    # (a) token_type_ids change the logits (from the first image row on), not before the image
    plain = model(input_ids=ids, pixel_values=pv, use_cache=False).logits[0]
    assert not torch.allclose(plain[s:], logits[s:], atol=1e-3), "bidirectional mask has no effect"
    assert torch.equal(plain[:s], logits[:s])
    # (b) a sliding window longer than the prompt changes the logits
    cfgs = {id(c): c for c in (model.config.text_config, model.model.language_model.config)}
    for c in cfgs.values():
        c.sliding_window = 4096
    wide = forward(model, ids, pv, tt).logits[0]
    for c in cfgs.values():
        c.sliding_window = W
    assert not torch.allclose(wide, logits, atol=1e-3), "sliding window has no effect"
    assert torch.equal(forward(model, ids, pv, tt).logits[0], logits)
    # (c) attention patterns
    q = torch.arange(T)[:, None]
    k = torch.arange(T)[None, :]
    in_block = (q >= s) & (q < e) & (k >= s) & (k < e)
    allowed_full = (k <= q) | in_block
    allowed_sliding = allowed_full & (k > q - W)
    for layer, kind in enumerate(LAYER_TYPES):
        allowed = allowed_sliding if kind == "sliding_attention" else allowed_full
        a = att[layer]
        assert bool((a[:, ~allowed] == 0).all()), f"layer {layer}: mass outside the mask"
        assert bool((a[:, allowed] > 0).all()), f"layer {layer}: a visible key got 0"
    sl = LAYER_TYPES.index("sliding_attention")
    assert bool((att[sl][:, s, e - 1] > 0).all()) and e - 1 - s >= W  # future key past the window
    assert bool((att[sl][:, e - 1, s] == 0).all())  # past image key beyond the window
    assert bool((att[sl][:, T - 1, : T - W] == 0).all())
    full = LAYER_TYPES.index("full_attention")
    assert bool((att[full][:, s, s:e] > 0).all()) and bool((att[full][:, s - 1, s:e] == 0).all())
    return {"logits_without_token_type_ids_differ": True, "logits_with_window_4096_differ": True,
            "mask_pattern_checked_for_layers": list(range(len(LAYER_TYPES)))}


@torch.no_grad()
def reference(model, ids, pv, tt, span, knock_tokens) -> tuple[dict, dict]:
    s, e = span
    T = ids.shape[1]
    res = {}
    emb = model.model.get_input_embeddings()(ids)
    emb[0, s:e] = model.model.get_image_features(pixel_values=pv).pooler_output[0]
    res["inputs_embeds"] = emb[0]
    out = forward(model, ids, pv, tt, output_attentions=True)
    att = torch.stack([a[0] for a in out.attentions])  # (L, H, T, T)
    assert att.shape == (TEXT["num_hidden_layers"], TEXT["num_attention_heads"], T, T)
    res["logits"] = out.logits[0]
    res["attn_last"] = att[:, :, T - 1, s:e]
    res["attn_question_mean"] = att[:, :, e:, s:e].mean(dim=2)
    same = model(inputs_embeds=emb, token_type_ids=tt, use_cache=False).logits[0]
    assert torch.allclose(same, res["logits"], atol=1e-5, rtol=0)
    checks = mechanism_checks(model, ids, pv, tt, span, att, res["logits"])

    keys = [s + i for i in knock_tokens]
    for tag, layers in (("knockout_logits", KNOCK_LAYERS_1), ("knockout2_logits", KNOCK_LAYERS_2)):
        with base.knockout(layers, e, keys, T):
            ko = forward(model, ids, pv, tt, output_attentions=True)
        res[tag] = ko.logits[0]
        kat = torch.stack([a[0] for a in ko.attentions])
        for l in layers:
            assert bool((kat[l][:, e:, keys] == 0).all()), "knockout patch not effective"
            assert bool((att[l][:, e:, keys] > 0).any()), "knockout blocks nothing visible"
            assert torch.equal(kat[l][:, :e], att[l][:, :e]), "rows before <end_of_image> changed"
        assert bool((att[1][:, e:, keys] > 0).all())  # full layer: every blocked edge was open
        if tag == "knockout_logits":
            res["knockout_attn_last"] = kat[:, :, T - 1, s:e]
            assert torch.equal(kat[0], att[0])
    assert not torch.allclose(res["knockout_logits"][e:], res["logits"][e:])
    assert not torch.allclose(res["knockout2_logits"][e:], res["knockout_logits"][e:])
    assert torch.equal(res["knockout_logits"][:e], res["logits"][:e])
    assert torch.equal(res["knockout2_logits"][:e], res["logits"][:e])

    gaps = []
    gen = greedy(model, ids, pv, tt, N_NEW)
    assert gen == greedy_manual(model, ids, pv, tt, N_NEW, gaps), "generate() != manual greedy"
    res["generated_ids"] = torch.tensor(gen, dtype=torch.int64)
    with base.knockout(KNOCK_LAYERS_1, e, keys, T):
        g1 = greedy(model, ids, pv, tt, N_NEW)
        assert g1 == greedy_manual(model, ids, pv, tt, N_NEW, gaps)
    res["knockout_generated_ids"] = torch.tensor(g1, dtype=torch.int64)
    with base.knockout(KNOCK_LAYERS_1, e, keys, T, all_steps=True):
        g2 = greedy_manual(model, ids, pv, tt, N_NEW, gaps)
    res["knockout_all_steps_generated_ids"] = torch.tensor(g2, dtype=torch.int64)
    assert gen != g1 != g2 != gen, (gen, g1, g2)
    assert min(gaps) > 2e-2, gaps
    res["_min_gap"] = min(gaps)
    return res, checks


@torch.no_grad()
def reference_general(model, ids, pv, tt, span) -> dict:
    s, e = span
    T = ids.shape[1]
    out = forward(model, ids, pv, tt, output_attentions=True)
    att = torch.stack([a[0] for a in out.attentions])
    return {"general_logits": out.logits[0], "general_attn_last": att[:, :, T - 1, s:e],
            "general_attn_question_mean": att[:, :, e:, s:e].mean(dim=2)}


# ----------------------------------------------------------------------------------------------
# Writing and loading
# ----------------------------------------------------------------------------------------------
def write_side_files(d: Path, spec: dict, tok: Tokenizer) -> str:
    (d / "tokenizer.json").write_text(tok.to_str(pretty=True) + "\n")
    base.write_json(d / "tokenizer_config.json", tokenizer_config())
    base.write_json(d / "preprocessor_config.json",
                    preprocessor_config(None if spec["layout"] == "hub" else False))
    base.write_json(d / "processor_config.json",
                    {"image_seq_length": MM_TOKENS, "processor_class": "Gemma3Processor"})
    if spec["layout"] == "hub":
        base.write_json(d / "chat_template.json", {"chat_template": CHAT_TEMPLATE})
        return "chat_template.json"
    (d / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    return "chat_template.jinja"


def write_checkpoint(name: str, spec: dict, tok: Tokenizer) -> tuple[dict, list[str], str]:
    """Writes the folder; returns the in-memory state dict, the stored key names, the template file."""
    d = OUT / name
    d.mkdir(parents=True, exist_ok=True)
    for old in d.iterdir():
        old.unlink()
    torch.manual_seed(0)
    m = Gemma3ForConditionalGeneration(config_obj(spec["tied"]))
    init_weights(m, f"{name}#{spec['salt']}")
    if spec["tied"]:
        m.tie_weights()
        assert m.lm_head.weight.data_ptr() == m.model.language_model.embed_tokens.weight.data_ptr()
    else:
        assert not torch.equal(m.lm_head.weight, m.model.language_model.embed_tokens.weight)
    if spec["dtype"] == "bfloat16":
        m = m.to(torch.bfloat16)
    sd = base.internal_sd(m)
    if spec["layout"] == "hub":
        base.save_st(d / "model.safetensors", hub_sd(sd))
        base.write_json(d / "config.json", hub_style_config_json())
        base.write_json(d / "generation_config.json", generation_config_json())
    else:
        m.generation_config.eos_token_id = STOP_IDS
        m.save_pretrained(d)  # config.json, generation_config.json (and the saved key names)
        if spec["layout"] == "nested":
            assert spec["tied"]
            base.save_st(d / "model.safetensors", {k: v for k, v in sd.items() if k != "lm_head.weight"})
    del m
    template_file = write_side_files(d, spec, tok)
    keys = sorted(base.load_st(d / "model.safetensors").keys())
    return sd, keys, template_file


def load_checkpoint(name: str, spec: dict, sd: dict) -> Gemma3ForConditionalGeneration:
    d = OUT / name
    dtype = torch.bfloat16 if spec["dtype"] == "bfloat16" else torch.float32
    model, info = Gemma3ForConditionalGeneration.from_pretrained(
        d, attn_implementation="eager", dtype=dtype, output_loading_info=True)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    model.eval()
    tc = model.config.text_config
    assert tc.layer_types == LAYER_TYPES, tc.layer_types
    rope = tc.rope_parameters
    assert rope["full_attention"] == {"rope_type": "linear", "factor": 8.0, "rope_theta": ROPE_THETA}, rope
    assert rope["sliding_attention"] == {"rope_type": "default", "rope_theta": ROPE_LOCAL_BASE_FREQ}, rope
    assert tc.head_dim == 32 and tc.query_pre_attn_scalar == 20 and tc.sliding_window == 8
    assert tc.final_logit_softcapping is None and tc.attn_logit_softcapping is None
    assert model.model.language_model.layers[0].self_attn.scaling == 20 ** -0.5
    assert model.model.language_model.layers[0].self_attn.is_sliding
    assert not model.model.language_model.layers[1].self_attn.is_sliding
    rot = model.model.language_model.rotary_emb
    expo = torch.arange(0, 32, 2, dtype=torch.float) / 32
    assert torch.allclose(rot.full_attention_inv_freq.float(), 1.0 / (ROPE_THETA ** expo) / 8.0,
                          rtol=1e-6, atol=0)  # linear scaling: inv_freq / factor
    assert torch.allclose(rot.sliding_attention_inv_freq.float(),
                          1.0 / (ROPE_LOCAL_BASE_FREQ ** expo), rtol=1e-6, atol=0)
    assert bool(tc.tie_word_embeddings) == spec["tied"] and bool(model.config.tie_word_embeddings) == spec["tied"]
    tied_now = model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
    assert tied_now == spec["tied"], (name, tied_now)
    for k, v in model.state_dict().items():
        assert v.dtype == dtype and torch.equal(v, sd[k]), f"{name}: weight {k} changed on reload"
    assert set(model.state_dict()) == set(sd)
    return model


# ----------------------------------------------------------------------------------------------
# Prompts
# ----------------------------------------------------------------------------------------------
def messages(question: str, img, system: bool = False) -> list[dict]:
    msgs = [{"role": "user", "content": [{"type": "image", "image": img},
                                         {"type": "text", "text": question}]}]
    if system:
        msgs.insert(0, {"role": "system", "content": [{"type": "text", "text": SYSTEM}]})
    return msgs


def build_prompt(proc: Gemma3Processor, fast: PreTrainedTokenizerFast, question: str, img,
                 pv_expected: torch.Tensor | None) -> dict:
    enc = proc.apply_chat_template(messages(question, img), add_generation_prompt=True,
                                   tokenize=True, return_dict=True, return_tensors="pt")
    text = proc.apply_chat_template(messages(question, img), add_generation_prompt=True,
                                    tokenize=False)
    assert text.startswith("<bos>") and text.count("<start_of_image>") == 1, text
    full = "\n\n<start_of_image>" + "<image_soft_token>" * MM_TOKENS + "<end_of_image>\n\n"
    assert proc.full_image_sequence == full
    expanded = text.replace("<start_of_image>", full)
    ids = fast(expanded, add_special_tokens=False)["input_ids"]
    assert fast(expanded)["input_ids"] == [BOS] + ids  # the post-processor would add a 2nd <bos>
    assert enc["input_ids"][0].tolist() == ids, (enc["input_ids"][0].tolist(), ids)
    tt = enc["token_type_ids"]
    assert tt[0].tolist() == [int(t == SOFT) for t in ids]
    assert UNK not in ids and ids.count(BOS) == 1 and ids[0] == BOS
    where = [i for i, t in enumerate(ids) if t == SOFT]
    s, e = where[0], where[-1] + 1
    assert e - s == MM_TOKENS == len(where) and ids[s - 1] == BOI and ids[e] == EOI
    nl = VOCAB["\n"], VOCAB["\n\n"], VOCAB["\n\n\n"]
    assert ids[s - 2] == nl[2] and ids[e + 1] == nl[1]  # "user\n" + "\n\n" -> one "\n\n\n" token
    pv = enc["pixel_values"].float()
    if pv_expected is not None:
        assert torch.equal(pv, pv_expected)
    return {"text": text, "expanded": expanded, "ids": ids, "tt": tt, "pv": pv, "span": (s, e)}


def pixel_checks(img: Image.Image) -> torch.Tensor:
    pv = image_processor()(images=img, return_tensors="pt")["pixel_values"].float()
    assert pv.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE), pv.shape
    by_hand = np.asarray(img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR), dtype=np.float64)
    by_hand = ((by_hand / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None]
    assert np.abs(pv.numpy() - by_hand).max() < 1e-6
    other = np.asarray(img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC), dtype=np.float64)
    assert np.abs(pv.numpy() - ((other / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None]).max() > 1e-2
    return pv


def template_examples(fast: PreTrainedTokenizerFast) -> list[dict]:
    """Renders a Rust port of the template can be compared with."""
    cases = [
        ([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}], True),
        ([{"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
          {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " " + QUESTION + " "}]}], True),
        ([{"role": "system", "content": SYSTEM},
          {"role": "user", "content": [{"type": "text", "text": QUESTION}, {"type": "image"}]},
          {"role": "assistant", "content": "pneumonia"},
          {"role": "user", "content": "where ?"}], False),
    ]
    out = []
    for msgs, gen in cases:
        text = fast.apply_chat_template(msgs, add_generation_prompt=gen, tokenize=False,
                                        chat_template=CHAT_TEMPLATE)
        out.append({"messages": msgs, "add_generation_prompt": gen, "text": text})
    assert out[1]["text"].startswith("<bos><start_of_turn>user\n" + SYSTEM + "\n\n<start_of_image>")
    return out


# ----------------------------------------------------------------------------------------------
# bf16 embedding scale
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def bf16_reference(model, ids: list[int]) -> dict:
    emb = model.model.language_model.embed_tokens
    assert emb.weight.dtype == torch.bfloat16
    x = torch.tensor([ids])
    out = emb(x)
    assert out.dtype == torch.bfloat16
    scale_bf16 = emb.embed_scale.to(torch.bfloat16)
    w = emb.weight[x[0]].float()
    exact = (w * scale_bf16.float()).to(torch.bfloat16)
    assert torch.equal(out[0], exact), "bf16 product is not round(w * bf16(sqrt(hidden)))"
    sqrt_f32 = torch.tensor(TEXT["hidden_size"] ** 0.5, dtype=torch.float32)
    assert float(scale_bf16) != float(sqrt_f32)
    unrounded_scale = (w * sqrt_f32).to(torch.bfloat16)
    n_diff = int((unrounded_scale != out[0]).sum())
    assert n_diff > 0, "the bf16 rounding of the scale makes no difference"
    n_diff_f32 = int(((w * sqrt_f32) != out[0].float()).sum())
    assert n_diff_f32 > n_diff
    return {"bf16_embeddings": out[0].float(), "bf16_embedding_ids": x[0],
            "_facts": {"embed_scale_bf16": float(scale_bf16), "embed_scale_f32": float(sqrt_f32),
                       "embed_scale_exact": TEXT["hidden_size"] ** 0.5,
                       "entries": int(out[0].numel()),
                       "entries_differing_with_f32_scale_then_bf16_rounding": n_diff,
                       "entries_differing_with_f32_scale_unrounded": n_diff_f32}}


# ----------------------------------------------------------------------------------------------
TENSOR_DOC = {
    "pixel_values": "(1, 3, 112, 112) Gemma3ImageProcessorPil output (bilinear to 112 x 112, /255, (x - 0.5) / 0.5)",
    "vision_last_hidden": "(64, 32) SigLIP last_hidden_state (after post_layernorm), patch p = row * 8 + col",
    "vision_pooled": "(16, 32) 2 x 2 average pool of vision_last_hidden, token t = r * 4 + c (before mm_soft_emb_norm)",
    "image_features": "(16, 96) projector output: mm_soft_emb_norm(vision_pooled) @ mm_input_projection_weight",
    "input_ids": "(T,) prompt ids, -1 at the 16 <image_soft_token> positions",
    "token_type_ids": "(T,) 1 exactly at the <image_soft_token> positions",
    "image_span": "[s, e): the soft tokens; e is the index of <end_of_image>",
    "inputs_embeds": "(T, 96) embed_tokens(ids) * sqrt(96) with image_features scattered into [s, e)",
    "logits": "(T, V) full prefill forward WITH token_type_ids (bidirectional image block)",
    "attn_last": "(layers, heads, 16) attention of the last token over the image span",
    "attn_question_mean": "(layers, heads, 16) mean over query rows e..T of the attention over the image span",
    "knockout_logits": "(T, V) with knockout in layer 1 (queries >= e, keys = knockout.key_positions)",
    "knockout2_logits": "(T, V) with knockout in layers 1 and 2",
    "knockout_attn_last": "(layers, heads, 16) attn_last with the layer-1 knockout",
    "generated_ids": "(5,) greedy tokens (prefill with token_type_ids, decode steps without)",
    "knockout_generated_ids": "(5,) greedy with the layer-1 knockout in the prefill only",
    "knockout_all_steps_generated_ids": "(5,) greedy with the layer-1 knockout in the prefill and every decode step",
    "general_*": "the same for the general-description prompt (logits, attn_last, attn_question_mean, ids)",
}


def architecture(spec: dict, keys: list[str]) -> dict:
    return {"family": "gemma3", "key_layout": spec["layout"], "key_prefixes": key_prefixes(keys),
            "dtype": spec["dtype"], "tied_head": spec["tied"],
            "num_layers": TEXT["num_hidden_layers"], "hidden_size": TEXT["hidden_size"],
            "intermediate_size": TEXT["intermediate_size"],
            "num_heads": TEXT["num_attention_heads"], "num_kv_heads": TEXT["num_key_value_heads"],
            "head_dim": TEXT["head_dim"], "query_pre_attn_scalar": TEXT["query_pre_attn_scalar"],
            "sliding_window": TEXT["sliding_window"], "layer_types": LAYER_TYPES,
            "rope": {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": ROPE_THETA},
                     "sliding_attention": {"rope_type": "default", "rope_theta": ROPE_LOCAL_BASE_FREQ}},
            "rms_norm_eps": TEXT["rms_norm_eps"], "rms_norm": "x * rsqrt(mean(x^2) + eps) * (1 + w), in f32",
            "embed_scale": "sqrt(hidden_size) cast to the weight dtype",
            "final_logit_softcapping": None, "attn_logit_softcapping": None,
            "hidden_activation": TEXT["hidden_activation"], "vocab_size": V,
            "vision": dict(VISION, model_type="siglip_vision_model",
                           mm_tokens_per_image=MM_TOKENS, pooling="avg 2x2 over the 8x8 patch grid",
                           projector="RMSNorm(1 + w) over 32 channels, then x @ W, W (32, 96)")}


def main() -> None:
    modeling_gemma3.eager_attention_forward = _gemma_knockout_wrapper(
        modeling_gemma3.eager_attention_forward)
    OUT.mkdir(parents=True, exist_ok=True)
    img = Image.open(IMAGE_PATH).convert("RGB")
    assert img.size == (190, 110)
    pv_ref = pixel_checks(img)
    tok = build_tokenizer()

    summary = {}
    for name, spec in SPECS.items():
        sd, keys, template_file = write_checkpoint(name, spec, tok)
        d = OUT / name
        model = load_checkpoint(name, spec, sd)
        proc = Gemma3Processor.from_pretrained(d)
        assert type(proc.image_processor).__name__ == "Gemma3ImageProcessorPil", type(proc.image_processor)
        assert proc.image_seq_length == MM_TOKENS and proc.chat_template == CHAT_TEMPLATE
        assert proc.image_processor.resample == RESAMPLE
        fast = proc.tokenizer
        assert (fast.bos_token_id, fast.eos_token_id, fast.pad_token_id) == (BOS, EOS, PAD)
        assert (fast.boi_token_id, fast.image_token_id) == (BOI, SOFT)
        files = sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())
        layout_meta = {"checkpoint": name, "checkpoint_files": files,
                       "chat_template_file": template_file,
                       "architecture": architecture(spec, keys)}

        if spec["dtype"] == "bfloat16":
            p = build_prompt(proc, fast, QUESTION, img, pv_ref)
            r = bf16_reference(model, p["ids"])
            facts = r.pop("_facts")
            tensors = {k: (v.float() if v.dtype.is_floating_point else v.to(torch.int64)).contiguous()
                       for k, v in r.items()}
            base.save_st(OUT / f"{name}.expected.safetensors", tensors)
            meta = dict(layout_meta, bf16_check=dict(
                facts, ids="the question prompt's input_ids, <image_soft_token> (id "
                f"{SOFT}) kept at the image positions", reference="transformers "
                "Gemma3ForConditionalGeneration loaded with dtype=bfloat16: "
                "model.model.language_model.embed_tokens(ids), bf16, widened to f32",
                formula="bf16(f32(w) * bf16(sqrt(hidden)))"),
                tolerances={"bf16_embeddings": "exact"}, versions=base.versions())
            base.write_json(OUT / f"{name}.expected.json", meta, compact_int_lists=True)
            summary[name] = {"keys": key_prefixes(keys), **facts}
            del model
            continue

        tensors, prompts = {}, {}
        for pname, question in (("question", QUESTION), ("general", GENERAL)):
            p = build_prompt(proc, fast, question, img, pv_ref)
            ids, tt, pv, span = torch.tensor([p["ids"]]), p["tt"], p["pv"], p["span"]
            s, e = span
            pre = "" if pname == "question" else "general_"
            record_ids = [-1 if t == SOFT else t for t in p["ids"]]
            tensors[pre + "input_ids"] = torch.tensor(record_ids, dtype=torch.int64)
            tensors[pre + "token_type_ids"] = tt[0].to(torch.int64)
            tensors[pre + "image_span"] = torch.tensor([s, e], dtype=torch.int64)
            prompts[pname] = {"text": p["text"], "expanded_text": p["expanded"],
                              "input_ids": record_ids, "token_type_ids": tt[0].tolist(),
                              "image_span": [s, e], "seq_len": len(record_ids)}
            if pname == "question":
                knock = [i for i in range(MM_TOKENS) if (i * 7) % 3 != 1]
                tensors["pixel_values"] = pv
                tensors.update(vision_reference(model, pv))
                r, checks = reference(model, ids, pv, tt, span, knock)
                min_gap = r.pop("_min_gap")
                tensors.update(r)
            else:
                tensors.update(reference_general(model, ids, pv, tt, span))

        tensors = {k: (v.detach().float().contiguous() if v.dtype.is_floating_point
                       else v.to(torch.int64).contiguous()) for k, v in tensors.items()}
        base.save_st(OUT / f"{name}.expected.safetensors", tensors)
        s, e = prompts["question"]["image_span"]
        meta = dict(layout_meta, **{
            "image": {"width": img.width, "height": img.height,
                      "grid_rows_cols": [TOKENS_PER_SIDE, TOKENS_PER_SIDE],
                      "input_size": IMAGE_SIZE, "patch_grid": [PATCHES_PER_SIDE, PATCHES_PER_SIDE],
                      "num_image_tokens": MM_TOKENS, "resample": "bilinear (PIL, 2)",
                      "aspect_ratio": "ignored (resized to the square input)",
                      "rescale_factor": 1 / 255, "image_mean": MEAN, "image_std": STD,
                      "do_pan_and_scan": False,
                      "processor": "transformers Gemma3Processor / Gemma3ImageProcessorPil"},
            "prompts": prompts,
            "prompt_building": {
                "image_sequence": "\n\n<start_of_image>" + "<image_soft_token>" * MM_TOKENS
                                  + "<end_of_image>\n\n",
                "replaces": "<start_of_image> of the rendered chat template",
                "add_special_tokens": False,
                "why": "the rendered text starts with bos_token; the tokenizer's post-processor "
                       "would add a second <bos>",
                "token_type_ids": "1 exactly at <image_soft_token>",
                "processor": "Gemma3Processor.apply_chat_template(tokenize=True) == by hand"},
            "chat_template_examples": template_examples(fast),
            "token_ids": {"bos": BOS, "eos": EOS, "pad": PAD, "unk": UNK, "boi": BOI, "eoi": EOI,
                          "image_soft": SOFT, "start_of_turn": SOT, "end_of_turn": EOT,
                          "newline": VOCAB["\n"], "double_newline": VOCAB["\n\n"],
                          "triple_newline": VOCAB["\n\n\n"],
                          "tokenizer_eos_token": "<eos>", "generation_stop_ids": STOP_IDS},
            "knockout": {"layers_single": KNOCK_LAYERS_1, "layers_double": KNOCK_LAYERS_2,
                         "image_token_indices": knock,
                         "key_positions": [s + i for i in knock],
                         "query_positions": f"[{e}, seq_len): from <end_of_image> on, prefill only",
                         "value": "additive mask set to torch.finfo(float32).min (entries the "
                                  "sliding window already hides stay hidden)"},
            "generation": {"new_tokens": N_NEW, "greedy": True, "stop_on_eos": False,
                           "prefill_token_type_ids": True, "decode_token_type_ids": False,
                           "min_top1_top2_logit_margin": round(min_gap, 6)},
            "asserted": checks,
            "tensors": TENSOR_DOC,
            "tolerances": {"pixel_values_abs": 1e-5, "vision_abs": 1e-4, "logits_rel": 1e-4,
                           "attn_abs": 1e-5, "generated_ids": "exact"},
            "versions": base.versions(),
        })
        base.write_json(OUT / f"{name}.expected.json", meta, compact_int_lists=True)
        summary[name] = {"keys": key_prefixes(keys), "T": prompts["question"]["seq_len"],
                         "span": [s, e], "general_T": prompts["general"]["seq_len"],
                         "gen": tensors["generated_ids"].tolist(),
                         "ko_gen": tensors["knockout_generated_ids"].tolist(),
                         "ko_all_gen": tensors["knockout_all_steps_generated_ids"].tolist(),
                         "min_gap": min_gap}
        del model

    manifest = base.write_manifest(OUT)
    print(json.dumps(summary, indent=1))
    print("total bytes:", sum((OUT / f).stat().st_size for f in manifest))


if __name__ == "__main__":
    main()

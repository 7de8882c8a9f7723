#!/usr/bin/env python3
"""Build tiny random LLaVA-family checkpoints and reference outputs for fovea's tests.

Writes everything under tests/fixtures/llava/ (relative to the repository root):

  test_image.png                     40x28 RGB test image (deterministic integer pattern)
  image.expected.safetensors         pixel_values for both preprocessing paths
  clip-tiny/                         stand-alone CLIPVisionModel folder (vision tower of e)
  llava-llama-hub/                   (a) llava-hf, LLaMA decoder, legacy hub key layout
  llava-qwen2-nested/                (b) llava-hf, Qwen2 decoder (GQA), nested key layout
  llava-mistral-v5/                  (c) llava-hf, Mistral decoder (GQA), as transformers 5.x saves
  huatuo-qwen2-original/             (d) weights of (b) in the HuatuoGPT-Vision / LLaVA layout
  llava-med-mistral-original/        (e) LLaVA-Med v1.5 layout, vision tower in ../clip-tiny
  <name>.expected.safetensors        reference tensors for every checkpoint
  <name>.expected.json               prompt text, spans, knockout spec, tolerances, versions

The reference numbers come from transformers' LlavaForConditionalGeneration (eager attention,
float32, CPU). Checkpoints (a)-(c) are reloaded from the files written here with
`from_pretrained`; (d) and (e) are read back from their files, their keys renamed to the
LlavaForConditionalGeneration names and loaded with `load_state_dict(strict=True)`.

Attention knockout ("VGRefine style"): transformers' decoder attention modules call the
module-level function `eager_attention_forward` of their modeling module (it is looked up in
the module globals at call time, as the default of `ALL_ATTENTION_FUNCTIONS.get_interface`).
We replace that global in modeling_llama / modeling_qwen2 / modeling_mistral with a wrapper
that, for the chosen decoder layers (module.layer_idx), adds torch.finfo(float32).min to the
additive attention mask at [query >= image_end, key in blocked image positions] before calling
the original eager function (which does scores*scale + mask -> softmax). The causal mask is 0
at those entries (image keys precede those queries), so the sum does not overflow and the
blocked probabilities come out exactly 0. The CLIP vision tower uses its own eager function
in modeling_clip, which is not patched.

Rerun:  python tools/make_llava_fixtures.py   (see tools/README.md)
Needs: torch, transformers (5.x), safetensors, tokenizers, numpy, pillow. No network access.
"""

from __future__ import annotations

import hashlib
import json
import platform
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

import safetensors
import tokenizers
import transformers
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors
from transformers import (
    AutoProcessor,
    AutoTokenizer,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    MistralConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.llama import modeling_llama
from transformers.models.mistral import modeling_mistral
from transformers.models.qwen2 import modeling_qwen2

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "llava"

torch.set_num_threads(1)  # determinism + be gentle on the shared machine
torch.use_deterministic_algorithms(True)

# ----------------------------------------------------------------------------------------------
# Vocabulary / tokenizer
# ----------------------------------------------------------------------------------------------
SPECIALS = ["<unk>", "<s>", "</s>", "<image>", "<|user|>", "<|assistant|>", "[INST]", "[/INST]"]
WORDS = [
    "USER", "ASSISTANT", ":", "?", ".", ",", "-",
    "what", "is", "are", "the", "a", "an", "in", "of", "this", "there", "any", "image", "shown",
    "seen", "visible", "describe", "write", "general", "description", "detail", "please",
    "chest", "x", "ray", "ct", "mri", "scan", "ultrasound", "lung", "lungs", "heart", "liver",
    "kidney", "brain", "bone", "spine", "left", "right", "upper", "lower", "lobe", "side",
    "where", "which", "organ", "nodule", "mass", "opacity", "effusion", "pleural", "fracture",
    "pneumonia", "cardiomegaly", "tumor", "lesion", "edema", "normal", "abnormal",
    "abnormality", "yes", "no", "finding", "findings", "and", "with", "patient", "enlarged",
    "small", "large",
]
VOCAB = {t: i for i, t in enumerate(SPECIALS + WORDS)}
assert len(VOCAB) == len(SPECIALS) + len(WORDS)
V = len(VOCAB)
UNK, BOS, EOS, IMAGE = 0, 1, 2, 3
IGNORE_INDEX_IMAGE = -200  # original LLaVA IMAGE_TOKEN_INDEX

QUESTION = "what abnormality is seen in the left lung ?"
GENERAL = "write a general description of the image ."

# image / vision geometry
IMG_W, IMG_H = 40, 28
CLIP_IMAGE = 32
CLIP_PATCH = 8
N_IMG = (CLIP_IMAGE // CLIP_PATCH) ** 2  # 16
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

KNOCK_LAYERS_1 = [1]
KNOCK_LAYERS_2 = [1, 2]
KNOCK_IMAGE_TOKENS = [0, 1, 2, 5, 7, 11, 12, 13, 14, 15]
N_NEW = 5
# per-checkpoint salt for the weight init; chosen (smallest that works) so every greedy step has a
# top-1/top-2 logit margin > 0.02 and the id comparisons are robust to float noise
SEED_SALT = {"llava-llama-hub": 3, "llava-qwen2-nested": 6, "llava-mistral-v5": 0, "llava-med-mistral-original": 6}


def build_tokenizer(add_bos: bool) -> Tokenizer:
    tok = Tokenizer(models.WordLevel(vocab=dict(VOCAB), unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", BOS)]
        )
    return tok


def tokenizer_config_v4(add_bos: bool, chat_template: str | None) -> dict:
    """tokenizer_config.json the way transformers 4.x writes it for a PreTrainedTokenizerFast."""
    cfg = {
        "add_bos_token": add_bos,
        "add_eos_token": False,
        "added_tokens_decoder": {
            str(i): {
                "content": s,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for i, s in enumerate(SPECIALS)
        },
        "bos_token": "<s>" if add_bos else None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "model_max_length": 2048,
        "pad_token": None,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": "<unk>",
    }
    if chat_template is not None:
        cfg["chat_template"] = chat_template
    return cfg


# ----------------------------------------------------------------------------------------------
# Image and preprocessing
# ----------------------------------------------------------------------------------------------
def make_test_image() -> Image.Image:
    y, x = np.mgrid[0:IMG_H, 0:IMG_W]
    r = (x * 6 + y * 2) % 256
    g = (y * 9) % 256
    b = np.where(((x // 8) + (y // 7)) % 2 == 1, 220, 30)
    arr = np.stack([r, g, b], axis=-1).astype(np.uint8)
    arr[8:14, 10:16] = (250, 40, 40)  # a red "lesion"
    arr[18:24, 28:36] = (255, 255, 255)  # a white "mass"
    return Image.fromarray(arr, mode="RGB")


def clip_processor() -> CLIPImageProcessorPil:
    # transformers 5.x splits CLIPImageProcessor into a torchvision backend (CLIPImageProcessor)
    # and a PIL/numpy backend (CLIPImageProcessorPil). The PIL one is numerically the classic
    # 4.x "slow" CLIPImageProcessor that llava-hf and the original LLaVA code used.
    return CLIPImageProcessorPil(
        size={"shortest_edge": CLIP_IMAGE},
        crop_size={"height": CLIP_IMAGE, "width": CLIP_IMAGE},
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
        resample=3,
    )


def preprocessor_config(processor_class: str | None) -> dict:
    cfg = {
        "crop_size": {"height": CLIP_IMAGE, "width": CLIP_IMAGE},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": CLIP_MEAN,
        "image_processor_type": "CLIPImageProcessor",
        "image_std": CLIP_STD,
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": CLIP_IMAGE},
    }
    if processor_class:
        cfg["processor_class"] = processor_class
    return cfg


def expand2square(pil_img: Image.Image, background_color) -> Image.Image:
    """Verbatim semantics of LLaVA's llava/mm_utils.py expand2square."""
    width, height = pil_img.size
    if width == height:
        return pil_img
    if width > height:
        result = Image.new(pil_img.mode, (width, width), background_color)
        result.paste(pil_img, (0, (width - height) // 2))
        return result
    result = Image.new(pil_img.mode, (height, height), background_color)
    result.paste(pil_img, ((height - width) // 2, 0))
    return result


def pixel_values_crop(img: Image.Image) -> torch.Tensor:
    return clip_processor()(images=img, return_tensors="pt")["pixel_values"].float()


def pixel_values_pad(img: Image.Image) -> tuple[torch.Tensor, list[int]]:
    bg = tuple(int(x * 255) for x in CLIP_MEAN)
    sq = expand2square(img, bg)
    return clip_processor()(images=sq, return_tensors="pt")["pixel_values"].float(), list(bg)


# ----------------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------------
VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    image_size=CLIP_IMAGE,
    patch_size=CLIP_PATCH,
    num_channels=3,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    projection_dim=32,
    attention_dropout=0.0,
)
TEXT_COMMON = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=3,
    num_attention_heads=4,
    hidden_act="silu",
    rms_norm_eps=1e-6,
    vocab_size=V,
    max_position_embeddings=512,
    bos_token_id=BOS,
    eos_token_id=EOS,
    tie_word_embeddings=False,
    attention_dropout=0.0,
)
ROPE_THETA = 10000.0


def vision_config_dict() -> dict:
    d = dict(VISION)
    d.update(model_type="clip_vision_model", initializer_factor=1.0, initializer_range=0.02)
    return d


def text_config_dict(kind: str) -> dict:
    """Text sub-config as transformers 4.x wrote it (rope_theta, not rope_parameters)."""
    d = dict(TEXT_COMMON)
    d["rope_theta"] = ROPE_THETA
    d["rope_scaling"] = None
    d["initializer_range"] = 0.02
    d["use_cache"] = True
    if kind == "llama":
        d.update(model_type="llama", architectures=["LlamaForCausalLM"], num_key_value_heads=4,
                 attention_bias=False, mlp_bias=False, pretraining_tp=1)
    elif kind == "qwen2":
        d.update(model_type="qwen2", architectures=["Qwen2ForCausalLM"], num_key_value_heads=2,
                 use_sliding_window=False, sliding_window=None, max_window_layers=3)
    elif kind == "mistral":
        d.update(model_type="mistral", architectures=["MistralForCausalLM"], num_key_value_heads=2,
                 sliding_window=None)
    else:
        raise ValueError(kind)
    return d


def text_config_obj(kind: str):
    d = dict(TEXT_COMMON)
    d["rope_parameters"] = {"rope_type": "default", "rope_theta": ROPE_THETA}
    if kind == "llama":
        return LlamaConfig(num_key_value_heads=4, **d)
    if kind == "qwen2":
        return Qwen2Config(num_key_value_heads=2, use_sliding_window=False, sliding_window=None,
                           max_window_layers=3, **d)
    if kind == "mistral":
        return MistralConfig(num_key_value_heads=2, sliding_window=None, **d)
    raise ValueError(kind)


def llava_config_obj(kind: str) -> LlavaConfig:
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(**VISION),
        text_config=text_config_obj(kind),
        image_token_index=IMAGE,
        image_seq_length=N_IMG,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        multimodal_projector_bias=True,
        tie_word_embeddings=False,
    )
    cfg._attn_implementation = "eager"
    return cfg


def llava_hf_config_json(kind: str) -> dict:
    """config.json as transformers 4.x wrote it for llava-hf checkpoints."""
    return {
        "architectures": ["LlavaForConditionalGeneration"],
        "ignore_index": -100,
        "image_seq_length": N_IMG,
        "image_token_index": IMAGE,
        "model_type": "llava",
        "multimodal_projector_bias": True,
        "projector_hidden_act": "gelu",
        "text_config": text_config_dict(kind),
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": "4.55.0",
        "vision_config": vision_config_dict(),
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
    }


def original_llava_config_json(kind: str, mm_vision_tower: str) -> dict:
    """config.json of the original LLaVA / LLaVA-Med / HuatuoGPT-Vision code base."""
    t = text_config_dict(kind)
    for k in ("architectures", "model_type"):
        t.pop(k)
    if kind == "qwen2":
        head = {"architectures": ["LlavaQwen2ForCausalLM"], "model_type": "llava_qwen2"}
    elif kind == "mistral":
        head = {"architectures": ["LlavaMistralForCausalLM"], "model_type": "llava_mistral"}
    else:
        raise ValueError(kind)
    cfg = dict(head)
    cfg.update(t)
    cfg.update({
        "freeze_mm_mlp_adapter": False,
        "image_aspect_ratio": "pad",
        "mm_hidden_size": VISION["hidden_size"],
        "mm_patch_merge_type": "flat",
        "mm_projector_lr": None,
        "mm_projector_type": "mlp2x_gelu",
        "mm_use_im_patch_token": False,
        "mm_use_im_start_end": False,
        "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": -2,
        "mm_vision_tower": mm_vision_tower,
        "tokenizer_model_max_length": 2048,
        "tokenizer_padding_side": "right",
        "torch_dtype": "float32",
        "transformers_version": "4.37.2",
        "tune_mm_mlp_adapter": False,
        "use_mm_proj": True,
    })
    return dict(sorted(cfg.items()))


def clip_config_json() -> dict:
    d = vision_config_dict()
    d.update(architectures=["CLIPVisionModel"], torch_dtype="float32", transformers_version="4.55.0")
    return dict(sorted(d.items()))


# ----------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------
def init_weights(model: torch.nn.Module, tag: str) -> None:
    """Deterministic, not-too-small random init (peaky attention, O(1) logits).

    Each tensor gets its own generator seeded from crc32(tag:name), so values do not depend on
    parameter iteration order."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            g = torch.Generator().manual_seed(zlib.crc32(f"{tag}:{name}".encode()))
            shape = p.shape
            leaf = name.rsplit(".", 1)[-1]
            if "norm" in name or "layrnorm" in name:
                if leaf == "weight":
                    v = 1.0 + 0.1 * torch.randn(shape, generator=g)
                else:
                    v = 0.05 * torch.randn(shape, generator=g)
            elif leaf == "bias":
                v = 0.1 * torch.randn(shape, generator=g)
            elif "class_embedding" in name:
                v = torch.randn(shape, generator=g)
            elif "position_embedding" in name:
                v = 0.5 * torch.randn(shape, generator=g)
            elif "embed_tokens" in name:
                v = torch.randn(shape, generator=g)
            elif len(shape) >= 2:
                fan_in = int(np.prod(shape[1:]))
                gain = 1.5 if ("q_proj" in name or "k_proj" in name) else 1.0
                v = gain * torch.randn(shape, generator=g) / fan_in**0.5
            else:
                raise ValueError(f"unhandled parameter {name} {tuple(shape)}")
            p.copy_(v)


def internal_sd(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


# Internal (transformers 5.x) names:  model.language_model.X, model.vision_tower.X (no
# vision_model level), model.multi_modal_projector.linear_{1,2}.*, lm_head.weight
def rename(sd: dict, layout: str) -> dict:
    out = {}
    for k, v in sd.items():
        if k.startswith("model.language_model."):
            rest = k[len("model.language_model."):]
            nk = {
                "hub": "language_model.model." + rest,
                "nested": k,
                "original": "model." + rest,
            }[layout]
        elif k == "lm_head.weight":
            nk = {"hub": "language_model.lm_head.weight", "nested": k, "original": k}[layout]
        elif k.startswith("model.vision_tower."):
            rest = k[len("model.vision_tower."):]
            nk = {
                "hub": "vision_tower.vision_model." + rest,
                "nested": "model.vision_tower.vision_model." + rest,
                "original": "model.vision_tower.vision_tower.vision_model." + rest,
            }[layout]
        elif k.startswith("model.multi_modal_projector."):
            rest = k[len("model.multi_modal_projector."):]
            if layout == "hub":
                nk = "multi_modal_projector." + rest
            elif layout == "nested":
                nk = k
            else:
                nk = "model.mm_projector." + rest.replace("linear_1.", "0.").replace("linear_2.", "2.")
        else:
            raise KeyError(k)
        out[nk] = v
    return out


def original_to_internal(sd: dict, clip_sd: dict | None) -> dict:
    """Inverse of rename(.., "original"); clip_sd holds `vision_model.*` keys of a CLIP folder."""
    out = {}
    for k, v in sd.items():
        if k.startswith("model.vision_tower.vision_tower.vision_model."):
            out["model.vision_tower." + k[len("model.vision_tower.vision_tower.vision_model."):]] = v
        elif k.startswith("model.mm_projector."):
            rest = k[len("model.mm_projector."):]
            rest = rest.replace("0.", "linear_1.", 1) if rest.startswith("0.") else rest.replace("2.", "linear_2.", 1)
            out["model.multi_modal_projector." + rest] = v
        elif k == "lm_head.weight":
            out[k] = v
        elif k.startswith("model."):
            out["model.language_model." + k[len("model."):]] = v
        else:
            raise KeyError(k)
    if clip_sd is not None:
        for k, v in clip_sd.items():
            assert k.startswith("vision_model."), k
            out["model.vision_tower." + k[len("vision_model."):]] = v
    return out


def save_st(path: Path, sd: dict) -> None:
    save_file({k: sd[k].contiguous() for k in sorted(sd)}, str(path), metadata={"format": "pt"})


def load_st(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def write_json(path: Path, obj, compact_int_lists: bool = False) -> None:
    text = json.dumps(obj, indent=2, sort_keys=False)
    if compact_int_lists:  # keep token-id lists on one line
        import re
        text = re.sub(r"\[\n\s*(-?\d+(?:,\n\s*-?\d+)*)\n\s*\]",
                      lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)
        assert json.loads(text) == json.loads(json.dumps(obj))
    path.write_text(text + "\n")


# ----------------------------------------------------------------------------------------------
# Knockout: patch eager attention of the decoder modeling modules
# ----------------------------------------------------------------------------------------------
KO = {"layers": set(), "q_start": None, "keys": [], "prefill_len": None, "all_steps": False}
_ORIG = {}


def _make_wrapper(orig):
    def eager_with_knockout(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        layer = getattr(module, "layer_idx", None)
        if KO["layers"] and layer in KO["layers"]:
            q_len, kv_len = query.shape[-2], key.shape[-2]
            is_prefill = q_len == KO["prefill_len"] and kv_len == q_len
            if is_prefill or KO["all_steps"]:
                q_pos = torch.arange(kv_len - q_len, kv_len)  # absolute query positions
                rows = (q_pos >= KO["q_start"]).nonzero().flatten()
                extra = torch.zeros(q_len, kv_len, dtype=query.dtype)
                big_neg = torch.finfo(torch.float32).min
                for r in rows.tolist():
                    extra[r, KO["keys"]] = big_neg
                extra = extra[None, None]
                if attention_mask is None:
                    attention_mask = extra
                else:
                    # causal mask is 0 at these (query > key) entries, so no overflow
                    assert bool((attention_mask[..., rows[:, None], KO["keys"]] == 0).all()) if len(rows) else True
                    attention_mask = attention_mask + extra
        return orig(module, query, key, value, attention_mask, scaling, dropout, **kwargs)

    return eager_with_knockout


def install_knockout_patch():
    for mod in (modeling_llama, modeling_qwen2, modeling_mistral):
        if mod.__name__ not in _ORIG:
            _ORIG[mod.__name__] = mod.eager_attention_forward
            mod.eager_attention_forward = _make_wrapper(mod.eager_attention_forward)


class knockout:
    def __init__(self, layers, q_start, keys, prefill_len, all_steps=False):
        self.cfg = dict(layers=set(layers), q_start=q_start, keys=list(keys), prefill_len=prefill_len,
                        all_steps=all_steps)

    def __enter__(self):
        KO.update(self.cfg)

    def __exit__(self, *a):
        KO.update(layers=set(), q_start=None, keys=[], prefill_len=None, all_steps=False)


# ----------------------------------------------------------------------------------------------
# Reference computation
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def greedy_manual(model, ids, pv, n_new, gaps=None):
    """Greedy decode with KV cache: one prefill forward, then single-token steps.

    If `gaps` is a list, the top-1 minus top-2 logit margin of every step is appended to it."""

    def pick(logits):
        top = logits.topk(2)
        if gaps is not None:
            gaps.append(float(top.values[0] - top.values[1]))
        return int(top.indices[0])

    out = model(input_ids=ids, pixel_values=pv, use_cache=True)
    cache = out.cache
    nxt = pick(out.logits[0, -1])
    gen = [nxt]
    for _ in range(n_new - 1):
        out = model(input_ids=torch.tensor([[nxt]]), cache=cache, use_cache=True)
        cache = out.cache
        nxt = pick(out.logits[0, -1])
        gen.append(nxt)
    return gen


@torch.no_grad()
def greedy_generate(model, ids, pv, n_new):
    out = model.generate(input_ids=ids, pixel_values=pv, max_new_tokens=n_new, min_new_tokens=0,
                         do_sample=False, eos_token_id=None, pad_token_id=EOS)
    return out[0, ids.shape[1]:].tolist()


@torch.no_grad()
def reference(model, hf_ids: torch.Tensor, pv: torch.Tensor, span: tuple[int, int]) -> dict:
    s, e = span
    T = hf_ids.shape[1]
    assert e - s == N_IMG and bool((hf_ids[0, s:e] == IMAGE).all()) and int((hf_ids == IMAGE).sum()) == N_IMG
    res = {}
    # vision tower + projector
    vt = model.model.vision_tower(pv, output_hidden_states=True)
    hs = torch.stack([h[0] for h in vt.hidden_states])  # (L+1, 1+N, Dv); [0] is after pre_layrnorm
    assert hs.shape[0] == VISION["num_hidden_layers"] + 1
    vm = model.model.vision_tower
    assert torch.equal(hs[0], vm.pre_layrnorm(vm.embeddings(pv))[0])
    sel = vt.hidden_states[-2][:, 1:]
    proj = model.model.multi_modal_projector(sel)
    feats = model.model.get_image_features(pixel_values=pv).pooler_output
    assert torch.equal(torch.cat(list(feats), 0), proj[0])
    res["vision_hidden_states"] = hs
    res["vision_features"] = sel[0]
    res["projector_output"] = proj[0]

    out = model(input_ids=hf_ids, pixel_values=pv, output_attentions=True, use_cache=False)
    att = torch.stack([a[0] for a in out.attentions])  # (L, H, T, T)
    assert att.shape[0] == TEXT_COMMON["num_hidden_layers"] and att.shape[1] == TEXT_COMMON["num_attention_heads"]
    res["logits"] = out.logits[0]
    res["attn_last"] = att[:, :, T - 1, s:e]
    res["attn_question_mean"] = att[:, :, e:, s:e].mean(dim=2)
    # same positions, inputs_embeds check: image rows equal projector output
    emb = model.model.get_input_embeddings()(hf_ids.clamp(min=0))
    emb[0, s:e] = proj[0]
    out2 = model(inputs_embeds=emb, use_cache=False)
    assert torch.allclose(out2.logits, out.logits, atol=1e-5, rtol=0)

    keys = [s + i for i in KNOCK_IMAGE_TOKENS]
    for tag, layers in (("knockout_logits", KNOCK_LAYERS_1), ("knockout2_logits", KNOCK_LAYERS_2)):
        with knockout(layers, e, keys, T):
            ko = model(input_ids=hf_ids, pixel_values=pv, output_attentions=True, use_cache=False)
        res[tag] = ko.logits[0]
        kat = torch.stack([a[0] for a in ko.attentions])
        for l in layers:
            assert bool((kat[l][:, e:, keys] == 0).all()), "knockout patch not effective"
        if tag == "knockout_logits":
            res["knockout_attn_last"] = kat[:, :, T - 1, s:e]
            assert torch.equal(kat[0], att[0])  # layer 0 untouched
    assert not torch.allclose(res["knockout_logits"][e:], res["logits"][e:])
    assert torch.equal(res["knockout_logits"][:e], res["logits"][:e])  # rows before image end unaffected

    gaps = []
    gen = greedy_generate(model, hf_ids, pv, N_NEW)
    assert gen == greedy_manual(model, hf_ids, pv, N_NEW, gaps), "generate() disagrees with manual greedy"
    res["generated_ids"] = torch.tensor(gen, dtype=torch.int64)
    with knockout(KNOCK_LAYERS_1, e, keys, T):
        g1 = greedy_generate(model, hf_ids, pv, N_NEW)
        assert g1 == greedy_manual(model, hf_ids, pv, N_NEW, gaps)
    res["knockout_generated_ids"] = torch.tensor(g1, dtype=torch.int64)
    with knockout(KNOCK_LAYERS_1, e, keys, T, all_steps=True):
        g2 = greedy_manual(model, hf_ids, pv, N_NEW, gaps)
    res["knockout_all_steps_generated_ids"] = torch.tensor(g2, dtype=torch.int64)
    # argmax margins must be far above float noise for the id comparisons to be robust
    assert min(gaps) > 2e-2, gaps
    res["_min_gap"] = min(gaps)
    return res


@torch.no_grad()
def reference_general(model, hf_ids, pv, span) -> dict:
    s, e = span
    T = hf_ids.shape[1]
    out = model(input_ids=hf_ids, pixel_values=pv, output_attentions=True, use_cache=False)
    att = torch.stack([a[0] for a in out.attentions])
    return {
        "general_logits": out.logits[0],
        "general_attn_last": att[:, :, T - 1, s:e],
        "general_attn_question_mean": att[:, :, e:, s:e].mean(dim=2),
    }


@torch.no_grad()
def original_llava_check(ckpt_dir: Path, kind: str, clip_dir: Path, clip_in_ckpt: bool,
                         unexpanded_ids: list[int], pv: torch.Tensor, expected_logits: torch.Tensor) -> None:
    """Independent re-implementation of LLaVA's LlavaMetaForCausalLM path for the original layout:
    a plain Qwen2/Mistral ForCausalLM loaded from the model.* / lm_head keys, a CLIPVisionModel
    from the vision keys, nn.Sequential(Linear, GELU(), Linear) for mm_projector, and the image
    features spliced in at the single -200 position."""
    ocfg = json.loads((ckpt_dir / "config.json").read_text())
    disk = load_st(ckpt_dir / "model.safetensors")
    tkeys = {k: v for k, v in disk.items() if not k.startswith(("model.vision_tower.", "model.mm_projector."))}
    tcfg = {k: ocfg[k] for k in text_config_dict(kind) if k in ocfg and k not in ("architectures", "model_type")}
    cls = {"qwen2": (Qwen2Config, modeling_qwen2.Qwen2ForCausalLM),
           "mistral": (MistralConfig, modeling_mistral.MistralForCausalLM)}[kind]
    lm = cls[1]._from_config(cls[0](**tcfg), attn_implementation="eager", dtype=torch.float32).eval()
    lm.load_state_dict(tkeys, strict=True)
    if clip_in_ckpt:
        vsd = {k[len("model.vision_tower.vision_tower.vision_model."):]: v for k, v in disk.items()
               if k.startswith("model.vision_tower.")}
    else:
        vsd = {k[len("vision_model."):]: v for k, v in load_st(clip_dir / "model.safetensors").items()}
    vt = CLIPVisionModel._from_config(CLIPVisionConfig.from_pretrained(clip_dir), attn_implementation="eager").eval()
    vt.load_state_dict(vsd, strict=True)
    proj = torch.nn.Sequential(torch.nn.Linear(ocfg["mm_hidden_size"], ocfg["hidden_size"]), torch.nn.GELU(),
                               torch.nn.Linear(ocfg["hidden_size"], ocfg["hidden_size"]))
    proj.load_state_dict({k[len("model.mm_projector."):]: v for k, v in disk.items()
                          if k.startswith("model.mm_projector.")}, strict=True)
    feats = vt(pv, output_hidden_states=True).hidden_states[ocfg["mm_vision_select_layer"]][:, 1:]
    feats = proj(feats)[0]
    i = unexpanded_ids.index(IGNORE_INDEX_IMAGE)
    emb = lm.get_input_embeddings()
    pre = emb(torch.tensor(unexpanded_ids[:i]))
    post = emb(torch.tensor(unexpanded_ids[i + 1:]))
    x = torch.cat([pre, feats, post])[None]
    logits = lm(inputs_embeds=x, use_cache=False).logits[0]
    assert torch.allclose(logits, expected_logits, atol=1e-5, rtol=0), (logits - expected_logits).abs().max()


# ----------------------------------------------------------------------------------------------
# Checkpoint specs
# ----------------------------------------------------------------------------------------------
def prompt_text(fmt: str, q: str) -> str:
    if fmt == "llava15":
        return f"USER: <image>\n{q} ASSISTANT:"
    if fmt == "huatuo":
        return f"<|user|>\n<image>\n{q}\n<|assistant|>\n"
    if fmt == "mistral":
        return f"[INST] <image>\n{q} [/INST]"
    raise ValueError(fmt)


CHAT_TEMPLATES = {
    "llava15": (
        "{% for message in messages %}{% if message['role'] == 'user' %}USER: "
        "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n"
        "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
        "{% elif message['role'] == 'assistant' %} ASSISTANT: "
        "{% for item in message['content'] %}{{ item['text'] }}{% endfor %}</s>{% endif %}{% endfor %}"
        "{% if add_generation_prompt %} ASSISTANT:{% endif %}"
    ),
    "huatuo": (
        "{% for message in messages %}{% if message['role'] == 'user' %}<|user|>\n"
        "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n"
        "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{{ '\\n' }}"
        "{% elif message['role'] == 'assistant' %}<|assistant|>\n"
        "{% for item in message['content'] %}{{ item['text'] }}{% endfor %}{{ ' \\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    ),
    "mistral": (
        "{% for message in messages %}{% if message['role'] == 'user' %}[INST] "
        "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n"
        "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %} [/INST]"
        "{% elif message['role'] == 'assistant' %} "
        "{% for item in message['content'] %}{{ item['text'] }}{% endfor %}</s>{% endif %}{% endfor %}"
    ),
}

SPECS = {
    "llava-llama-hub": dict(kind="llama", fmt="llava15", layout="hub", add_bos=True, pixels="crop"),
    "llava-qwen2-nested": dict(kind="qwen2", fmt="huatuo", layout="nested", add_bos=False, pixels="crop"),
    "llava-mistral-v5": dict(kind="mistral", fmt="mistral", layout="v5", add_bos=True, pixels="crop"),
    "huatuo-qwen2-original": dict(kind="qwen2", fmt="huatuo", layout="original", add_bos=False, pixels="pad",
                                  weights_from="llava-qwen2-nested", vit="vit/clip-tiny"),
    "llava-med-mistral-original": dict(kind="mistral", fmt="mistral", layout="original", add_bos=True,
                                       pixels="pad", vit="../clip-tiny"),
}


TENSOR_DOC = {
    "input_ids": "[T] i64 prompt with the image expanded to 16 positions (image token id 3 for llava-hf layouts, -200 for original layouts)",
    "input_ids_unexpanded": "[T-15] i64 (original layouts only) what LLaVA's tokenizer_image_token returns: one -200",
    "text_ids": "[*] i64 ids the tokenizer.json produces for the prompt text (single <image> = 3, BOS per post-processor)",
    "image_span": "[2] i64 [start, end) of the 16 image positions in input_ids",
    "pixel_values": "[3,32,32] f32 the pixel path this checkpoint uses (see pixel_path)",
    "vision_hidden_states": "[L+1,17,32] f32 CLIP hidden_states; [0] = pre_layrnorm(embeddings), [i] = after encoder layer i-1 (CLS first)",
    "vision_features": "[16,32] f32 hidden_states[-2] with CLS dropped",
    "projector_output": "[16,64] f32 mlp2x_gelu(vision_features), erf GELU",
    "logits": "[T,V] f32 all positions",
    "attn_last": "[L,H,16] f32 softmax probs, query = last prompt token, keys = image span",
    "attn_question_mean": "[L,H,16] f32 probs to the image span averaged over queries [image_end, T)",
    "knockout_logits": "[T,V] f32 knockout in layer 1",
    "knockout2_logits": "[T,V] f32 knockout in layers 1 and 2",
    "knockout_attn_last": "[L,H,16] f32 attn_last of the layer-1 knockout run (blocked keys are exactly 0 in layer 1)",
    "generated_ids": "[5] i64 greedy, no stop",
    "knockout_generated_ids": "[5] i64 greedy, layer-1 knockout in the prefill only",
    "knockout_all_steps_generated_ids": "[5] i64 greedy, layer-1 knockout in prefill and every decode step",
    "general_*": "same quantities for the general prompt (no knockout / generation)",
    "logits_crop_pixels": "(huatuo only) logits with the crop pixels: equal to llava-qwen2-nested logits",
}


def generation_config(add_bos: bool) -> dict:
    return {"bos_token_id": BOS if add_bos else None, "do_sample": False, "eos_token_id": EOS,
            "pad_token_id": EOS, "transformers_version": "4.55.0"}


def file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest(out: Path, skip=lambda path: False) -> dict:
    """Write out/MANIFEST.sha256 (sha256 of every other file below `out`); returns it."""
    manifest = {str(p.relative_to(out)): file_sha(p) for p in sorted(out.rglob("*"))
                if p.is_file() and p.name != "MANIFEST.sha256" and not skip(p)}
    (out / "MANIFEST.sha256").write_text("".join(f"{h}  {f}\n" for f, h in manifest.items()))
    return manifest


def versions() -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": np.__version__,
        "pillow": Image.__version__,
    }


def tokenize_ids(tok: Tokenizer, text: str) -> list[int]:
    return tok.encode(text).ids


def expand_image(ids: list[int], value: int) -> tuple[list[int], tuple[int, int]]:
    assert ids.count(IMAGE) == 1
    i = ids.index(IMAGE)
    return ids[:i] + [value] * N_IMG + ids[i + 1:], (i, i + N_IMG)


def load_checkpoint(name: str) -> LlavaForConditionalGeneration:
    """Load checkpoint `name` (already written under OUT/name) into LlavaForConditionalGeneration
    (eager attention, float32, eval mode). llava-hf layouts go through `from_pretrained`; the original
    layouts are read back from their files, their keys renamed to the LlavaForConditionalGeneration
    names and loaded with `load_state_dict(strict=True)`. Shared with make_vgrefine_fixtures.py."""
    spec = SPECS[name]
    d = OUT / name
    kind, layout = spec["kind"], spec["layout"]
    if layout in ("hub", "nested", "v5"):
        model, info = LlavaForConditionalGeneration.from_pretrained(
            d, attn_implementation="eager", dtype=torch.float32, output_loading_info=True)
        assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    else:
        disk = load_st(d / "model.safetensors")
        clip_sd = None
        if name == "llava-med-mistral-original":
            clip_sd = load_st((d / spec["vit"]) / "model.safetensors")
            cv = CLIPVisionModel.from_pretrained(d / spec["vit"])  # 5.x drops the vision_model. prefix
            assert all(torch.equal(v, clip_sd["vision_model." + k]) for k, v in cv.state_dict().items())
            vcfg = cv.config
        else:
            vcfg = CLIPVisionConfig.from_pretrained(d / spec["vit"])
        ocfg = json.loads((d / "config.json").read_text())
        assert ocfg["mm_projector_type"] == "mlp2x_gelu" and ocfg["mm_vision_select_layer"] == -2
        assert ocfg["mm_vision_select_feature"] == "patch"
        tcfg = {k: ocfg[k] for k in text_config_dict(kind) if k in ocfg and k not in ("architectures", "model_type")}
        tcfg["model_type"] = kind
        lcfg = LlavaConfig(vision_config=vcfg.to_dict(), text_config=tcfg, image_token_index=IMAGE,
                           image_seq_length=N_IMG, projector_hidden_act="gelu",
                           vision_feature_select_strategy="default",
                           vision_feature_layer=ocfg["mm_vision_select_layer"], tie_word_embeddings=False)
        model = LlavaForConditionalGeneration._from_config(lcfg, attn_implementation="eager", dtype=torch.float32)
        model.load_state_dict(original_to_internal(disk, clip_sd), strict=True)
    model.eval()
    assert model.config.text_config._attn_implementation == "eager"
    assert model.config.vision_config._attn_implementation == "eager"
    return model


def main() -> None:
    install_knockout_patch()
    OUT.mkdir(parents=True, exist_ok=True)

    # ---- image and pixel values
    img = make_test_image()
    img.save(OUT / "test_image.png", format="PNG", optimize=False, compress_level=9)
    img = Image.open(OUT / "test_image.png").convert("RGB")
    pv_crop = pixel_values_crop(img)
    pv_pad, pad_bg = pixel_values_pad(img)
    assert pv_crop.shape == (1, 3, CLIP_IMAGE, CLIP_IMAGE) and pv_pad.shape == pv_crop.shape
    # the same numbers by hand: PIL bicubic on uint8, integer crop offsets, (x/255 - mean)/std
    def by_hand(im, size, box):
        a = np.asarray(im.resize(size, Image.BICUBIC).crop(box), dtype=np.float32)
        a = (a * np.float32(1 / 255) - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
        return torch.from_numpy(a.transpose(2, 0, 1))[None]
    assert torch.allclose(by_hand(img, (45, 32), (6, 0, 38, 32)), pv_crop, atol=1e-6, rtol=0)
    sq = expand2square(img, tuple(int(x * 255) for x in CLIP_MEAN))
    assert torch.allclose(by_hand(sq, (32, 32), (0, 0, 32, 32)), pv_pad, atol=1e-6, rtol=0)
    save_st(OUT / "image.expected.safetensors", {"pixel_values_crop": pv_crop, "pixel_values_pad": pv_pad})
    pixels = {"crop": pv_crop, "pad": pv_pad}

    # ---- clip-tiny (vision tower of e): transformers 4.x CLIPVisionModel layout (vision_model.*)
    clip_dir = OUT / "clip-tiny"
    clip_dir.mkdir(exist_ok=True)

    internal = {}
    summary = {}
    for name, spec in SPECS.items():
        d = OUT / name
        d.mkdir(exist_ok=True)
        kind, fmt, layout = spec["kind"], spec["fmt"], spec["layout"]
        cfg = llava_config_obj(kind)

        # ---- weights (internal names)
        if "weights_from" in spec:
            sd = internal[spec["weights_from"]]
        else:
            torch.manual_seed(0)
            m = LlavaForConditionalGeneration(cfg)
            init_weights(m, f"{name}#{SEED_SALT[name]}")
            sd = internal_sd(m)
            del m
        internal[name] = sd

        # ---- tokenizer files
        tok = build_tokenizer(spec["add_bos"])
        chat_t = CHAT_TEMPLATES[fmt]
        if layout != "v5":
            (d / "tokenizer.json").write_text(tok.to_str(pretty=True) + "\n")
            write_json(d / "tokenizer_config.json", tokenizer_config_v4(spec["add_bos"], None))
        write_json(d / "generation_config.json", generation_config(spec["add_bos"]))

        # ---- model files per layout
        if layout in ("hub", "nested"):
            save_st(d / "model.safetensors", rename(sd, layout))
            write_json(d / "config.json", llava_hf_config_json(kind))
            write_json(d / "preprocessor_config.json", preprocessor_config("LlavaProcessor"))
            write_json(d / "processor_config.json", {
                "image_token": "<image>", "num_additional_image_tokens": 1, "patch_size": CLIP_PATCH,
                "processor_class": "LlavaProcessor", "vision_feature_select_strategy": "default"})
            write_json(d / "chat_template.json", {"chat_template": chat_t})
        elif layout == "v5":
            # let transformers 5.x write model + config + tokenizer + processor the way it does
            m = LlavaForConditionalGeneration(cfg)
            m.load_state_dict(sd, strict=True)
            m.save_pretrained(d)
            del m
            fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
            proc = LlavaProcessor(image_processor=clip_processor(), tokenizer=fast, patch_size=CLIP_PATCH,
                                  vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                  chat_template=chat_t)
            proc.save_pretrained(d)
            # transformers 5.x nests the image processor inside processor_config.json and writes no
            # preprocessor_config.json; add the classic one as well
            write_json(d / "preprocessor_config.json", preprocessor_config("LlavaProcessor"))
            cj = json.loads((d / "config.json").read_text())
            assert "rope_parameters" in cj["text_config"]
        else:  # original
            save_st(d / "model.safetensors",
                    {k: v for k, v in rename(sd, "original").items()
                     if not (name == "llava-med-mistral-original" and k.startswith("model.vision_tower."))})
            write_json(d / "config.json", original_llava_config_json(kind, spec["vit"]))
            write_json(d / "preprocessor_config.json", preprocessor_config(None))
            if name == "huatuo-qwen2-original":
                vit = d / spec["vit"]
                vit.mkdir(parents=True, exist_ok=True)
                write_json(vit / "config.json", clip_config_json())
                write_json(vit / "preprocessor_config.json", preprocessor_config(None))
            else:
                clip_sd = {"vision_model." + k[len("model.vision_tower."):]: v
                           for k, v in sd.items() if k.startswith("model.vision_tower.")}
                save_st(clip_dir / "model.safetensors", clip_sd)
                write_json(clip_dir / "config.json", clip_config_json())
                write_json(clip_dir / "preprocessor_config.json", preprocessor_config(None))

        # ---- reload from disk
        model = load_checkpoint(name)
        for k, v in model.state_dict().items():
            assert torch.equal(v, sd[k]), f"{name}: weight {k} changed on reload"

        # ---- prompts
        tok_disk = Tokenizer.from_file(str(d / "tokenizer.json"))
        q_text = prompt_text(fmt, QUESTION)
        g_text = prompt_text(fmt, GENERAL)
        tensors = {}
        meta_prompts = {}
        for pname, text in (("question", q_text), ("general", g_text)):
            text_ids = tokenize_ids(tok_disk, text)
            assert UNK not in text_ids, (text, text_ids)
            hf_ids, span = expand_image(text_ids, IMAGE)
            if layout in ("hub", "nested", "v5"):
                # the llava-hf processor path: "<image>" is repeated image_seq_length times in the text
                proc = LlavaProcessor(image_processor=clip_processor(),
                                      tokenizer=PreTrainedTokenizerFast(tokenizer_file=str(d / "tokenizer.json")),
                                      patch_size=CLIP_PATCH, vision_feature_select_strategy="default",
                                      num_additional_image_tokens=1)
                enc = proc(images=img, text=text, return_tensors="pt")
                assert enc["input_ids"][0].tolist() == hf_ids, (enc["input_ids"], hf_ids)
                assert torch.equal(enc["pixel_values"].float(), pv_crop)
                expanded_text = text.replace("<image>", "<image>" * N_IMG)
                assert tokenize_ids(tok_disk, expanded_text) == hf_ids
                rec_ids = hf_ids
                if pname == "question":  # the stored chat template renders exactly this prompt
                    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
                    rendered = AutoProcessor.from_pretrained(d).apply_chat_template(msgs, add_generation_prompt=True)
                    assert rendered == text, (rendered, text)
            else:
                expanded_text = None
                rec_ids, _ = expand_image(text_ids, IGNORE_INDEX_IMAGE)
                # what LLaVA's tokenizer_image_token produces (one -200 per image)
                unexp = [IGNORE_INDEX_IMAGE if t == IMAGE else t for t in text_ids]
                tensors[("" if pname == "question" else "general_") + "input_ids_unexpanded"] = torch.tensor(unexp, dtype=torch.int64)
            pre = "" if pname == "question" else "general_"
            tensors[pre + "input_ids"] = torch.tensor(rec_ids, dtype=torch.int64)
            tensors[pre + "text_ids"] = torch.tensor(text_ids, dtype=torch.int64)
            tensors[pre + "image_span"] = torch.tensor(list(span), dtype=torch.int64)
            meta_prompts[pname] = {"text": text, "expanded_text": expanded_text, "text_ids": text_ids,
                                   "input_ids": rec_ids, "image_span": list(span), "seq_len": len(rec_ids)}
            pv = pixels[spec["pixels"]]
            ids_t = torch.tensor([hf_ids])
            if pname == "question":
                hf_question_ids = hf_ids
                r = reference(model, ids_t, pv, span)
                min_gap = r.pop("_min_gap")
                tensors.update(r)
            else:
                tensors.update(reference_general(model, ids_t, pv, span))
        tensors["pixel_values"] = pixels[spec["pixels"]][0]

        if name == "huatuo-qwen2-original":
            # same weights as (b): with (b)'s crop pixels the logits equal (b)'s exactly
            ids_t = torch.tensor([hf_question_ids])
            with torch.no_grad():
                lc = model(input_ids=ids_t, pixel_values=pv_crop, use_cache=False).logits[0]
            tensors["logits_crop_pixels"] = lc

        if layout == "original":
            original_llava_check(d, kind, d / spec["vit"], name == "huatuo-qwen2-original",
                                 tensors["input_ids_unexpanded"].tolist(), pixels[spec["pixels"]], tensors["logits"])
        # transformers' own tokenizer loading of the folder gives the same ids
        at = AutoTokenizer.from_pretrained(d)
        assert at(q_text)["input_ids"] == meta_prompts["question"]["text_ids"], (name, at(q_text)["input_ids"])

        tensors = {k: (v.detach().float().contiguous() if v.dtype.is_floating_point else v.to(torch.int64).contiguous())
                   for k, v in tensors.items()}
        if name == "huatuo-qwen2-original":
            bq = load_st(OUT / "llava-qwen2-nested.expected.safetensors")
            assert torch.equal(tensors["logits_crop_pixels"], bq["logits"])
            assert bq["text_ids"].tolist() == tensors["text_ids"].tolist()
        save_st(OUT / f"{name}.expected.safetensors", tensors)

        s, e = meta_prompts["question"]["image_span"]
        files = sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())
        meta = {
            "checkpoint": name,
            "checkpoint_files": files,
            "architecture": {
                "decoder": kind,
                "key_layout": layout if layout != "v5" else "transformers-5.24 save_pretrained",
                "num_layers": TEXT_COMMON["num_hidden_layers"],
                "num_heads": TEXT_COMMON["num_attention_heads"],
                "num_kv_heads": 4 if kind == "llama" else 2,
                "head_dim": 16,
                "vocab_size": V,
                "num_image_tokens": N_IMG,
            },
            "pixel_path": spec["pixels"],
            "pixel_path_note": (
                "crop: llava-hf CLIPImageProcessor (PIL backend): resize shortest edge to 32 (bicubic, "
                "40x28 -> 45x32), centre crop 32x32, /255, normalise. pad: LLaVA expand2square with "
                f"background {pad_bg} (int(mean*255)), image pasted at (0, 6) on 40x40, then the same processor "
                "(40x40 -> 32x32 bicubic, crop is a no-op)."),
            "prompt_format": fmt,
            "prompts": meta_prompts,
            "image_token_id": IMAGE,
            "image_placeholder_in_input_ids": IMAGE if layout in ("hub", "nested", "v5") else IGNORE_INDEX_IMAGE,
            "bos_added_by_tokenizer": spec["add_bos"],
            "knockout": {
                "layers_single": KNOCK_LAYERS_1,
                "layers_double": KNOCK_LAYERS_2,
                "image_token_indices": KNOCK_IMAGE_TOKENS,
                "key_positions": [s + i for i in KNOCK_IMAGE_TOKENS],
                "query_positions": f"[{e}, seq_len) for the prefill; decode steps unaffected in knockout_generated_ids",
                "value": "torch.finfo(float32).min added to the additive mask before softmax",
                "tensors": {"knockout_logits": KNOCK_LAYERS_1, "knockout2_logits": KNOCK_LAYERS_2,
                            "knockout_attn_last": KNOCK_LAYERS_1,
                            "knockout_generated_ids": "layers [1], prefill only",
                            "knockout_all_steps_generated_ids": "layers [1], prefill and every decode step (query positions >= image end)"},
            },
            "generation": {"new_tokens": N_NEW, "greedy": True, "stop_on_eos": False, "kv_cache": True,
                           "min_top1_top2_logit_margin": round(min_gap, 6)},
            "tolerances": {"pixel_values_abs": 1e-5, "vision_abs": 1e-4, "logits_abs": 2e-4, "logits_rel": 1e-4,
                           "attn_abs": 1e-5, "generated_ids": "exact"},
            "versions": versions(),
            "special_tokens": {s: i for i, s in enumerate(SPECIALS)},
            "tensors": {k: v for k, v in TENSOR_DOC.items()
                        if k.startswith("general_") or k in tensors},
            "shared_pixel_values_file": "image.expected.safetensors (pixel_values_crop, pixel_values_pad: [1,3,32,32])",
        }
        if name == "huatuo-qwen2-original":
            meta["note"] = ("weights identical to llava-qwen2-nested; logits_crop_pixels == llava-qwen2-nested logits "
                            "(same tokens, crop pixels); the main outputs use the pad pixel path as image_aspect_ratio=pad")
        if name == "llava-med-mistral-original":
            meta["vision_tower_folder"] = "../clip-tiny"
        write_json(OUT / f"{name}.expected.json", meta, compact_int_lists=True)
        summary[name] = {k: (list(v.shape), str(v.dtype)) for k, v in tensors.items()}
        del model

    # ---- manifest with hashes (determinism check); the *.vgrefine.json files belong to
    # make_vgrefine_fixtures.py and are not listed
    manifest = write_manifest(OUT, skip=lambda p: p.name.endswith(".vgrefine.json"))
    total = sum((OUT / f).stat().st_size for f in manifest)
    print(json.dumps(summary, indent=1))
    print(f"total bytes: {total}")


if __name__ == "__main__":
    main()

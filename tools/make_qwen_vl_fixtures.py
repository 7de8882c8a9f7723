#!/usr/bin/env python3
"""Build tiny random Qwen2.5-VL checkpoints and reference outputs for fovea's tests.

Writes everything under tests/fixtures/qwen_vl/ (relative to the repository root):

  test_image.png                     190x110 RGB test image (non-square, deterministic pattern)
  smart_resize.expected.json         (height, width) -> grid for a dozen odd sizes, from the
                                     processor itself, with min/max pixels from the fixtures
  qwen2_5_vl-flat/                   (a) Qwen2_5_VLForConditionalGeneration as transformers 5
                                     save_pretrained writes it (flat `model.layers.*`,
                                     `visual.*`, text_config/vision_config, rope_parameters),
                                     untied head
  qwen2_5_vl-nested/                 (b) the in-memory nested layout (`model.language_model.*`,
                                     `model.visual.*`), a hub-style flat config.json (text keys
                                     at the top level, rope_scaling {type: mrope}), tied head
  <name>.expected.safetensors        reference tensors for every checkpoint
  <name>.expected.json               prompt text, spans, grid, knockout spec, tolerances, versions

Both checkpoints exercise window attention for real: the tiny ViT's window is 56 px (2 x 2
merged tokens), the 110x190 image becomes a 4 x 7 token grid (8 windows, the last column of
windows ragged), and blocks 1 and 3 of 4 attend over the whole image.

The reference numbers come from transformers' Qwen2_5_VLForConditionalGeneration (eager
attention, float32, CPU), reloaded from the files written here, on pixel values made by
transformers' own Qwen2VLImageProcessorPil (PIL bicubic; the torchvision backend differs by at
most one grey level on some pixels) through Qwen2_5_VLProcessor, which also expands the chat
template's single <|image_pad|> into N.

Attention knockout: the same patch of the module-level eager attention as
make_llava_fixtures.py (modeling_qwen2_5_vl's decoder layers carry layer_idx; the vision blocks
do not and are never touched), blocking queries from the index of <|vision_end|> on, as the
paper's reference code does.

Rerun:  python tools/make_qwen_vl_fixtures.py   (see tools/README.md)
Needs: torch, transformers (5.x), safetensors, tokenizers, numpy, pillow. No network access.
"""

from __future__ import annotations

import json
import sys
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_llava_fixtures as base  # noqa: E402  (shared helpers: init, save, knockout patch)

from transformers import (  # noqa: E402
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
)
from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl  # noqa: E402
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (  # noqa: E402
    Qwen2VLImageProcessorPil,
)

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "qwen_vl"

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

# ----------------------------------------------------------------------------------------------
# Vocabulary: words of the prompts and of Qwen's chat template, then Qwen's special tokens at
# the ids config.json names (as in the real vocabulary, they follow the ordinary tokens).
# ----------------------------------------------------------------------------------------------
WORDS = base.WORDS + ["system", "user", "You", "helpful", "assistant", "single", "word",
                      "phrase", "using", "question", "answer", "Answer", "or"]
WORDS = list(dict.fromkeys(WORDS))
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
            "<|vision_end|>", "<|image_pad|>", "<|video_pad|>", "<unk>"]
VOCAB = {t: i for i, t in enumerate(WORDS + SPECIALS)}
V = len(VOCAB)
ENDOFTEXT, IM_START, IM_END = VOCAB["<|endoftext|>"], VOCAB["<|im_start|>"], VOCAB["<|im_end|>"]
VISION_START, VISION_END = VOCAB["<|vision_start|>"], VOCAB["<|vision_end|>"]
IMAGE_PAD, VIDEO_PAD, UNK = VOCAB["<|image_pad|>"], VOCAB["<|video_pad|>"], VOCAB["<unk>"]

# Qwen2.5-VL's published chat template (Qwen/Qwen2.5-VL-7B-Instruct, chat_template.json).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture "
    "{{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video "
    "{{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

QUESTION = "what abnormality is seen in the left lung ? Answer the question using a single word or phrase ."
GENERAL = "write a general description of the image . Answer the question using a single word or phrase ."

IMG_W, IMG_H = 190, 110
PATCH, MERGE, TEMPORAL = 14, 2, 2
MIN_PIXELS, MAX_PIXELS = 56 * 56, 28 * 28 * 40
VISION = {"depth": 4, "hidden_size": 32, "intermediate_size": 48, "num_heads": 2,
          "in_channels": 3, "out_hidden_size": 64, "patch_size": PATCH,
          "spatial_merge_size": MERGE, "temporal_patch_size": TEMPORAL, "window_size": 56,
          "fullatt_block_indexes": [1, 3], "tokens_per_second": 2, "hidden_act": "silu"}
TEXT = {"vocab_size": V, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
        "max_position_embeddings": 512, "hidden_act": "silu", "use_sliding_window": False,
        "sliding_window": None, "max_window_layers": 3, "bos_token_id": ENDOFTEXT,
        "eos_token_id": IM_END}
ROPE_THETA = 10000.0
MROPE_SECTION = [2, 3, 3]  # head_dim 16 -> 8 frequencies: t, h, w

KNOCK_LAYERS_1 = [1]
KNOCK_LAYERS_2 = [1, 2]
N_NEW = 5
SMART_RESIZE_SIZES = [(511, 383), (1024, 97), (97, 1024), (383, 511), (42, 70), (70, 126),
                      (28, 28), (10, 10), (300, 200), (1000, 800), (57, 1500), (110, 190),
                      (225, 99)]

SPECS = {
    "qwen2_5_vl-flat": {"layout": "flat", "tied": False, "salt": 0},
    "qwen2_5_vl-nested": {"layout": "nested", "tied": True, "salt": 0},
}


def build_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.WordLevel(vocab=dict(VOCAB), unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    return tok


def fast_tokenizer(tok: Tokenizer) -> PreTrainedTokenizerFast:
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token="<unk>")
    fast.image_token = "<|image_pad|>"
    fast.video_token = "<|video_pad|>"
    return fast


def make_test_image() -> Image.Image:
    y, x = np.mgrid[0:IMG_H, 0:IMG_W]
    r = (x * 5 + y * 3) % 256
    g = (x * x // 7 + y * 11) % 256
    b = ((x // 9) * 40 + (y // 13) * 70) % 256
    return Image.fromarray(np.stack([r, g, b], -1).astype(np.uint8), "RGB")


def image_processor() -> Qwen2VLImageProcessorPil:
    return Qwen2VLImageProcessorPil(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS,
                                    patch_size=PATCH, merge_size=MERGE,
                                    temporal_patch_size=TEMPORAL)


def smart_resize_grids(processor, sizes, patch: int) -> list[dict]:
    """The processor's own grids for random images of each (height, width)."""
    rng = np.random.default_rng(7)
    grids = []
    for h, w in sizes:
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
        thw = processor(images=im, return_tensors="pt")["image_grid_thw"][0].tolist()
        grids.append({"height": h, "width": w, "grid_thw": thw,
                      "resized": [thw[1] * patch, thw[2] * patch]})
    return grids


def preprocessor_config() -> dict:
    return {
        "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": base.CLIP_MEAN, "image_std": base.CLIP_STD,
        "image_processor_type": "Qwen2VLImageProcessor", "max_pixels": MAX_PIXELS,
        "min_pixels": MIN_PIXELS, "merge_size": MERGE, "patch_size": PATCH,
        "processor_class": "Qwen2_5_VLProcessor", "resample": 3, "rescale_factor": 1 / 255,
        "temporal_patch_size": TEMPORAL,
    }


def config_obj(tied: bool) -> Qwen2_5_VLConfig:
    text = dict(TEXT, rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA,
                                       "mrope_section": MROPE_SECTION},
                tie_word_embeddings=tied)
    return Qwen2_5_VLConfig(text_config=text, vision_config=dict(VISION),
                            image_token_id=IMAGE_PAD, video_token_id=VIDEO_PAD,
                            vision_start_token_id=VISION_START, vision_end_token_id=VISION_END,
                            tie_word_embeddings=tied)


def hub_style_config_json(tied: bool) -> dict:
    """config.json as the Qwen2.5-VL hub checkpoints have it: text keys at the top level."""
    cfg = {"architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
           "attention_dropout": 0.0, "initializer_range": 0.02, "torch_dtype": "float32",
           "transformers_version": "4.49.0", "use_cache": True,
           "vision_start_token_id": VISION_START, "vision_end_token_id": VISION_END,
           "vision_token_id": VISION_START + 2, "image_token_id": IMAGE_PAD,
           "video_token_id": VIDEO_PAD, "rope_theta": ROPE_THETA,
           "rope_scaling": {"type": "mrope", "mrope_section": MROPE_SECTION},
           "tie_word_embeddings": tied}
    cfg.update(TEXT)
    vision = dict(VISION)
    vision["in_chans"] = vision.pop("in_channels")
    vision["spatial_patch_size"] = PATCH
    cfg["vision_config"] = vision
    return cfg


def nested_sd(sd: dict) -> dict:
    """transformers' in-memory names are the nested layout already."""
    for k in sd:
        assert k.startswith(("model.language_model.", "model.visual.", "lm_head.")), k
    return dict(sd)


def init_weights(model: torch.nn.Module, tag: str) -> None:
    """make_llava_fixtures' init (one generator per tensor from crc32(tag:name)), with the
    Qwen ViT's merger norm (`ln_q`) treated as a norm and its fused qkv like q/k."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            g = torch.Generator().manual_seed(zlib.crc32(f"{tag}:{name}".encode()))
            leaf = name.rsplit(".", 1)[-1]
            if "norm" in name or "ln_q" in name:
                v = (1.0 + 0.1 * torch.randn(p.shape, generator=g)) if leaf == "weight" \
                    else 0.05 * torch.randn(p.shape, generator=g)
            elif leaf == "bias":
                v = 0.1 * torch.randn(p.shape, generator=g)
            elif "embed_tokens" in name:
                v = torch.randn(p.shape, generator=g)
            elif p.dim() >= 2:
                fan_in = int(np.prod(p.shape[1:]))
                gain = 1.5 if any(t in name for t in ("q_proj", "k_proj", "qkv")) else 1.0
                v = gain * torch.randn(p.shape, generator=g) / fan_in**0.5
            else:
                raise ValueError(f"unhandled parameter {name} {tuple(p.shape)}")
            p.copy_(v)


def mm_types(ids: torch.Tensor) -> torch.Tensor:
    return (ids == IMAGE_PAD).int()


@torch.no_grad()
def greedy(model, ids, pv, thw, n_new):
    out = model.generate(input_ids=ids, pixel_values=pv, image_grid_thw=thw,
                         mm_token_type_ids=mm_types(ids), max_new_tokens=n_new,
                         min_new_tokens=0, do_sample=False, eos_token_id=None,
                         pad_token_id=ENDOFTEXT)
    return out[0, ids.shape[1]:].tolist()


@torch.no_grad()
def greedy_manual(model, ids, pv, thw, n_new, gaps):
    def pick(logits):
        top = logits.topk(2)
        gaps.append(float(top.values[0] - top.values[1]))
        return int(top.indices[0])

    model.model.rope_deltas = None
    out = model(input_ids=ids, pixel_values=pv, image_grid_thw=thw,
                mm_token_type_ids=mm_types(ids), use_cache=True)
    cache = out.cache
    nxt = pick(out.logits[0, -1])
    gen = [nxt]
    for _ in range(n_new - 1):
        step = torch.tensor([[nxt]])
        out = model(input_ids=step, cache=cache, use_cache=True,
                    mm_token_type_ids=torch.zeros_like(step).int())
        cache = out.cache
        nxt = pick(out.logits[0, -1])
        gen.append(nxt)
    return gen


@torch.no_grad()
def reference(model, ids, pv, thw, span, knock_tokens) -> dict:
    s, e = span
    T = ids.shape[1]
    res = {}
    feats = model.model.get_image_features(pixel_values=pv, image_grid_thw=thw).pooler_output
    res["image_features"] = torch.cat(list(feats), 0)
    pos, deltas = model.model.get_rope_index(ids, mm_token_type_ids=mm_types(ids),
                                             image_grid_thw=thw)
    res["position_ids"] = pos[:, 0]
    res["rope_delta"] = deltas[0]

    model.model.rope_deltas = None
    out = model(input_ids=ids, pixel_values=pv, image_grid_thw=thw,
                mm_token_type_ids=mm_types(ids), output_attentions=True, use_cache=False)
    att = torch.stack([a[0] for a in out.attentions])
    res["logits"] = out.logits[0]
    res["attn_last"] = att[:, :, T - 1, s:e]
    res["attn_question_mean"] = att[:, :, e:, s:e].mean(dim=2)

    keys = [s + i for i in knock_tokens]
    for tag, layers in (("knockout_logits", KNOCK_LAYERS_1), ("knockout2_logits", KNOCK_LAYERS_2)):
        model.model.rope_deltas = None
        with base.knockout(layers, e, keys, T):
            ko = model(input_ids=ids, pixel_values=pv, image_grid_thw=thw,
                       mm_token_type_ids=mm_types(ids), output_attentions=True, use_cache=False)
        res[tag] = ko.logits[0]
        kat = torch.stack([a[0] for a in ko.attentions])
        for l in layers:
            assert bool((kat[l][:, e:, keys] == 0).all()), "knockout patch not effective"
            assert bool((kat[l][:, e - 1, keys] != 0).all()), "<|vision_start|>..pad rows must stay"
        if tag == "knockout_logits":
            res["knockout_attn_last"] = kat[:, :, T - 1, s:e]
            assert torch.equal(kat[0], att[0])
    assert not torch.allclose(res["knockout_logits"][e:], res["logits"][e:])
    assert torch.equal(res["knockout_logits"][:e], res["logits"][:e])

    gaps = []
    gen = greedy(model, ids, pv, thw, N_NEW)
    assert gen == greedy_manual(model, ids, pv, thw, N_NEW, gaps), "generate() != manual greedy"
    res["generated_ids"] = torch.tensor(gen, dtype=torch.int64)
    with base.knockout(KNOCK_LAYERS_1, e, keys, T):
        g1 = greedy(model, ids, pv, thw, N_NEW)
        assert g1 == greedy_manual(model, ids, pv, thw, N_NEW, gaps)
    res["knockout_generated_ids"] = torch.tensor(g1, dtype=torch.int64)
    with base.knockout(KNOCK_LAYERS_1, e, keys, T, all_steps=True):
        g2 = greedy_manual(model, ids, pv, thw, N_NEW, gaps)
    res["knockout_all_steps_generated_ids"] = torch.tensor(g2, dtype=torch.int64)
    res["_min_gap"] = min(gaps)
    return res


@torch.no_grad()
def reference_general(model, ids, pv, thw, span) -> dict:
    s, e = span
    T = ids.shape[1]
    model.model.rope_deltas = None
    out = model(input_ids=ids, pixel_values=pv, image_grid_thw=thw,
                mm_token_type_ids=mm_types(ids), output_attentions=True, use_cache=False)
    att = torch.stack([a[0] for a in out.attentions])
    return {"general_logits": out.logits[0], "general_attn_last": att[:, :, T - 1, s:e],
            "general_attn_question_mean": att[:, :, e:, s:e].mean(dim=2)}


def load_checkpoint(name: str) -> Qwen2_5_VLForConditionalGeneration:
    spec = SPECS[name]
    d = OUT / name
    if spec["layout"] == "flat":
        model, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            d, attn_implementation="eager", dtype=torch.float32, output_loading_info=True)
        assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    else:
        cfg = Qwen2_5_VLConfig.from_pretrained(d)
        assert cfg.text_config.rope_parameters["mrope_section"] == MROPE_SECTION
        model = Qwen2_5_VLForConditionalGeneration._from_config(
            cfg, attn_implementation="eager", dtype=torch.float32)
        disk = base.load_st(d / "model.safetensors")
        missing, unexpected = model.load_state_dict(disk, strict=False)
        assert not unexpected, unexpected
        assert missing == ["lm_head.weight"] and spec["tied"], missing
        model.tie_weights()
        assert torch.equal(model.lm_head.weight, model.model.language_model.embed_tokens.weight)
    model.eval()
    return model


def main() -> None:
    modeling_qwen2_5_vl.eager_attention_forward = base._make_wrapper(
        modeling_qwen2_5_vl.eager_attention_forward)
    OUT.mkdir(parents=True, exist_ok=True)

    img = make_test_image()
    img.save(OUT / "test_image.png", format="PNG", optimize=False, compress_level=9)
    img = Image.open(OUT / "test_image.png").convert("RGB")

    # ---- smart_resize grids from the processor itself
    grids = smart_resize_grids(image_processor(), SMART_RESIZE_SIZES, PATCH)
    base.write_json(OUT / "smart_resize.expected.json", {
        "min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS, "patch_size": PATCH,
        "merge_size": MERGE, "processor": "transformers Qwen2VLImageProcessorPil",
        "sizes": grids, "versions": base.versions()})

    tok = build_tokenizer()
    summary = {}
    for name, spec in SPECS.items():
        d = OUT / name
        d.mkdir(exist_ok=True)
        torch.manual_seed(0)
        cfg = config_obj(spec["tied"])
        m = Qwen2_5_VLForConditionalGeneration(cfg)
        init_weights(m, f"{name}#{spec['salt']}")
        if spec["tied"]:
            m.tie_weights()
        sd = base.internal_sd(m)
        if spec["layout"] == "flat":
            m.save_pretrained(d)
            keys = base.load_st(d / "model.safetensors").keys()
            assert any(k.startswith("visual.") for k in keys), sorted(keys)[:5]
            assert any(k.startswith("model.layers.") for k in keys), sorted(keys)[:5]
        else:
            sd_disk = nested_sd(sd)
            sd_disk.pop("lm_head.weight", None)
            base.save_st(d / "model.safetensors", sd_disk)
            base.write_json(d / "config.json", hub_style_config_json(spec["tied"]))
        del m
        (d / "tokenizer.json").write_text(tok.to_str(pretty=True) + "\n")
        base.write_json(d / "tokenizer_config.json", {
            "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>", "unk_token": "<unk>", "model_max_length": 4096,
            "added_tokens_decoder": {str(VOCAB[s]): {"content": s, "special": True,
                                                     "lstrip": False, "rstrip": False,
                                                     "normalized": False, "single_word": False}
                                     for s in SPECIALS}})
        base.write_json(d / "chat_template.json", {"chat_template": CHAT_TEMPLATE})
        base.write_json(d / "preprocessor_config.json", preprocessor_config())
        base.write_json(d / "generation_config.json", {
            "bos_token_id": ENDOFTEXT, "eos_token_id": [IM_END, ENDOFTEXT],
            "pad_token_id": ENDOFTEXT, "do_sample": False})

        model = load_checkpoint(name)
        for k, v in model.state_dict().items():
            assert torch.equal(v, sd[k]), f"{name}: weight {k} changed on reload"

        # Qwen2_5_VLProcessor needs a video processor (torchvision); its image path is the
        # chat template rendered by the tokenizer, then <|image_pad|> repeated
        # grid_thw.prod() / merge^2 times (replace_image_token), then the tokenizer.
        fast = fast_tokenizer(Tokenizer.from_file(str(d / "tokenizer.json")))
        fast.chat_template = CHAT_TEMPLATE
        tensors, prompts = {}, {}
        for pname, question in (("question", QUESTION), ("general", GENERAL)):
            msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
            text = fast.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
            assert text.count("<|image_pad|>") == 1
            images = image_processor()(images=img, return_tensors="pt")
            n_pad = int(images["image_grid_thw"][0].prod()) // (MERGE * MERGE)
            expanded = text.replace("<|image_pad|>", "<|image_pad|>" * n_pad)
            enc = {"input_ids": torch.tensor([fast(expanded)["input_ids"]]), **images}
            ids = enc["input_ids"]
            assert UNK not in ids[0].tolist(), text
            pv, thw = enc["pixel_values"].float(), enc["image_grid_thw"]
            where = (ids[0] == IMAGE_PAD).nonzero().flatten()
            s, e = int(where[0]), int(where[-1]) + 1
            n = int(thw.prod()) // (MERGE * MERGE)
            assert e - s == n and ids[0, s - 1] == VISION_START and ids[0, e] == VISION_END
            span = (s, e)
            knock = [i for i in range(n) if (i * 7) % 3 != 1]
            pre = "" if pname == "question" else "general_"
            record_ids = [-1 if t == IMAGE_PAD else t for t in ids[0].tolist()]
            tensors[pre + "input_ids"] = torch.tensor(record_ids, dtype=torch.int64)
            tensors[pre + "image_span"] = torch.tensor(list(span), dtype=torch.int64)
            prompts[pname] = {"text": text, "input_ids": record_ids, "image_span": list(span),
                              "seq_len": len(record_ids)}
            if pname == "question":
                tensors["pixel_values"] = pv
                tensors["image_grid_thw"] = thw[0].to(torch.int64)
                r = reference(model, ids, pv, thw, span, knock)
                min_gap = r.pop("_min_gap")
                tensors.update(r)
                knock_tokens = knock
                grid = [int(thw[0, 1]) // MERGE, int(thw[0, 2]) // MERGE]
            else:
                tensors.update(reference_general(model, ids, pv, thw, span))

        tensors = {k: (v.detach().float().contiguous() if v.dtype.is_floating_point
                       else v.to(torch.int64).contiguous()) for k, v in tensors.items()}
        base.save_st(OUT / f"{name}.expected.safetensors", tensors)
        s, e = prompts["question"]["image_span"]
        files = sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())
        meta = {
            "checkpoint": name,
            "checkpoint_files": files,
            "architecture": {"family": "qwen2_5_vl", "key_layout": spec["layout"],
                             "tied_head": spec["tied"], "num_layers": TEXT["num_hidden_layers"],
                             "num_heads": TEXT["num_attention_heads"],
                             "num_kv_heads": TEXT["num_key_value_heads"], "head_dim": 16,
                             "vocab_size": V, "mrope_section": MROPE_SECTION,
                             "vision": VISION},
            "image": {"width": IMG_W, "height": IMG_H, "grid_rows_cols": grid,
                      "resized_height_width": [grid[0] * PATCH * MERGE, grid[1] * PATCH * MERGE],
                      "num_image_tokens": grid[0] * grid[1]},
            "prompts": prompts,
            "token_ids": {"image_pad": IMAGE_PAD, "vision_start": VISION_START,
                          "vision_end": VISION_END, "im_end": IM_END},
            "knockout": {"layers_single": KNOCK_LAYERS_1, "layers_double": KNOCK_LAYERS_2,
                         "image_token_indices": knock_tokens,
                         "key_positions": [s + i for i in knock_tokens],
                         "query_positions": f"[{e}, seq_len): from <|vision_end|> on, prefill only",
                         "value": "torch.finfo(float32).min added to the additive mask"},
            "generation": {"new_tokens": N_NEW, "greedy": True, "stop_on_eos": False,
                           "min_top1_top2_logit_margin": round(min_gap, 6)},
            "tolerances": {"pixel_values_abs": 1e-5, "vision_abs": 1e-4, "logits_rel": 1e-4,
                           "attn_abs": 1e-5, "generated_ids": "exact"},
            "versions": base.versions(),
        }
        base.write_json(OUT / f"{name}.expected.json", meta, compact_int_lists=True)
        summary[name] = {k: (list(v.shape), str(v.dtype)) for k, v in tensors.items()}
        summary[name]["_min_gap"] = min_gap
        del model
    manifest = base.write_manifest(OUT)
    print(json.dumps(summary, indent=1))
    print("total bytes:", sum((OUT / f).stat().st_size for f in manifest))


if __name__ == "__main__":
    main()

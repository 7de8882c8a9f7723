#!/usr/bin/env python3
"""Build a tiny random Qwen3-VL checkpoint and reference outputs for fovea's tests.

Writes everything under tests/fixtures/qwen3_vl/ (relative to the repository root):

  qwen3_vl/                          Qwen3VLForConditionalGeneration: weights as transformers 5
                                     save_pretrained writes them, config.json rewritten the way
                                     the Qwen3-VL hub checkpoints have it (text_config with
                                     rope_scaling {rope_type: default, mrope_section,
                                     mrope_interleaved} and rope_theta; vision_config with
                                     deepstack_visual_indexes), a Qwen3-VL-style chat template
                                     (no default system turn), preprocessor_config.json with
                                     patch 16, mean/std 0.5 and size {shortest_edge, longest_edge}
  qwen3_vl.expected.safetensors      reference tensors
  qwen3_vl.expected.json             prompt text, spans, grid, knockout spec, tolerances,
                                     versions, and smart_resize grids for factor 32
  pillow_bicubic/WxH.png             the test image through Pillow's bicubic resize, in both of
                                     Pillow 13's pass orders (the Qwen3-VL resize, 190x110 ->
                                     192x96, runs the vertical pass first)

What the checkpoint exercises:
- the learned position table is 4 x 4 (num_position_embeddings 16) and the 110x190 test
  image becomes a 6 x 12 patch grid, so the bilinear resampling really interpolates, and
  differently along the two axes;
- two DeepStack mergers (after vision blocks 0 and 2), added after decoder layers 0 and 1 of
  3; the knockout layers (1, and 1 + 2) sit on and after a DeepStack layer;
- the Qwen3 decoder: q/k RMSNorm per head, no biases, GQA (4 heads, 2 KV heads), head_dim 24
  set apart from hidden / heads (16), interleaved M-RoPE with mrope_section [4, 4, 4];
- a non-square 3 x 6 token grid (96 x 192 px after smart_resize with factor 32).

The reference numbers come from transformers' Qwen3VLForConditionalGeneration (eager
attention, float32, CPU), reloaded from the files written here, on pixel values made by
transformers' own Qwen2VLImageProcessorPil (the image processor Qwen3VLProcessor uses).
Knockout: the same patch of the module-level eager attention as make_qwen_vl_fixtures.py
(modeling_qwen3_vl's decoder attention carries layer_idx; the vision attention does not and is
never touched), blocking queries from the index of <|vision_end|> on.

Rerun:  python tools/make_qwen3_vl_fixtures.py   (see tools/README.md)
Needs: torch, transformers (5.x), safetensors, tokenizers, numpy, pillow. No network access.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from PIL import Image
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_llava_fixtures as base  # noqa: E402
import make_qwen_vl_fixtures as qv  # noqa: E402  (vocabulary, image, init, greedy, reference)

from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration  # noqa: E402
from transformers.models.qwen3_vl import modeling_qwen3_vl  # noqa: E402
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (  # noqa: E402
    Qwen2VLImageProcessorPil,
)

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "qwen3_vl"
NAME = "qwen3_vl"

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

# A chat template in the style of Qwen3-VL-Instruct's (whitespace-trimming tags, attribute
# access on messages, namespace counters, no default system turn), written for these tests.
CHAT_TEMPLATE = (
    "{%- set image_count = namespace(value=0) %}\n"
    "{%- if messages[0].role == 'system' %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0].content is string %}{{- messages[0].content }}\n"
    "    {%- else %}{%- for part in messages[0].content %}{%- if 'text' in part %}"
    "{{- part.text }}{%- endif %}{%- endfor %}{%- endif %}\n"
    "    {{- '<|im_end|>\\n' }}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if message.role == 'user' %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' }}\n"
    "        {%- if message.content is string %}\n"
    "            {{- message.content }}\n"
    "        {%- else %}\n"
    "            {%- for part in message.content %}\n"
    "                {%- if part.type == 'image' or 'image' in part %}\n"
    "                    {%- set image_count.value = image_count.value + 1 %}\n"
    "                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}\n"
    "                    <|vision_start|><|image_pad|><|vision_end|>\n"
    "                {%- elif 'text' in part %}\n"
    "                    {{- part.text }}\n"
    "                {%- endif %}\n"
    "            {%- endfor %}\n"
    "        {%- endif %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == 'assistant' %}\n"
    "        {{- '<|im_start|>assistant\\n' + message.content + '<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)

PATCH, MERGE, TEMPORAL = 16, 2, 2
FACTOR = PATCH * MERGE
MIN_PIXELS, MAX_PIXELS = FACTOR * FACTOR * 4, FACTOR * FACTOR * 40
MEAN = STD = [0.5, 0.5, 0.5]
VISION = {"depth": 4, "hidden_size": 32, "intermediate_size": 48, "num_heads": 2,
          "in_channels": 3, "out_hidden_size": 64, "patch_size": PATCH,
          "spatial_merge_size": MERGE, "temporal_patch_size": TEMPORAL,
          "num_position_embeddings": 16, "deepstack_visual_indexes": [0, 2],
          "hidden_act": "gelu_pytorch_tanh", "initializer_range": 0.02}
TEXT = {"vocab_size": qv.V, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 24,
        "rms_norm_eps": 1e-6, "max_position_embeddings": 512, "hidden_act": "silu",
        "attention_bias": False, "bos_token_id": qv.ENDOFTEXT, "eos_token_id": qv.IM_END}
ROPE_THETA = 5000000.0
MROPE_SECTION = [4, 4, 4]  # head_dim 24 -> 12 frequencies, H and W interleaved with T
# (width, height) for Pillow's bicubic resize of the test image, both pass orders: Pillow 13
# runs the vertical pass first when the height shrinks by more than twice as many pixels as
# the width ((180, 89): 21 > 20), else the horizontal one ((180, 90): 20, not more).
RESIZE_SIZES = [(192, 96), (196, 112), (160, 100), (200, 60), (100, 100), (190, 40),
                (180, 90), (180, 89), (60, 200), (250, 90)]
SMART_RESIZE_SIZES = [(511, 383), (1024, 97), (97, 1024), (383, 511), (42, 70), (70, 126),
                      (32, 32), (10, 10), (300, 200), (1000, 800), (57, 1500), (110, 190),
                      (225, 99)]


def image_processor() -> Qwen2VLImageProcessorPil:
    return Qwen2VLImageProcessorPil(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS,
                                    patch_size=PATCH, merge_size=MERGE,
                                    temporal_patch_size=TEMPORAL, image_mean=MEAN, image_std=STD)


def preprocessor_config() -> dict:
    """As Qwen3-VL's hub checkpoints write it (size with shortest/longest edge)."""
    return {
        "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": MEAN, "image_std": STD, "image_processor_type": "Qwen2VLImageProcessorFast",
        "merge_size": MERGE, "patch_size": PATCH, "processor_class": "Qwen3VLProcessor",
        "resample": 3, "rescale_factor": 1 / 255, "temporal_patch_size": TEMPORAL,
        "size": {"longest_edge": MAX_PIXELS, "shortest_edge": MIN_PIXELS},
    }


def config_obj() -> Qwen3VLConfig:
    text = dict(TEXT, rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA,
                                       "mrope_section": MROPE_SECTION,
                                       "mrope_interleaved": True})
    return Qwen3VLConfig(text_config=text, vision_config=dict(VISION),
                         image_token_id=qv.IMAGE_PAD, video_token_id=qv.VIDEO_PAD,
                         vision_start_token_id=qv.VISION_START,
                         vision_end_token_id=qv.VISION_END, tie_word_embeddings=False)


def hub_style_config_json() -> dict:
    """config.json as the Qwen3-VL hub checkpoints have it (transformers 4.57)."""
    text = dict(TEXT, model_type="qwen3_vl_text", dtype="float32", use_cache=True,
                attention_dropout=0.0, initializer_range=0.02, rope_theta=ROPE_THETA,
                rope_scaling={"mrope_interleaved": True, "mrope_section": MROPE_SECTION,
                              "rope_type": "default"})
    vision = dict(VISION, model_type="qwen3_vl")
    return {"architectures": ["Qwen3VLForConditionalGeneration"], "model_type": "qwen3_vl",
            "image_token_id": qv.IMAGE_PAD, "video_token_id": qv.VIDEO_PAD,
            "vision_start_token_id": qv.VISION_START, "vision_end_token_id": qv.VISION_END,
            "tie_word_embeddings": False, "transformers_version": "4.57.0.dev0",
            "text_config": text, "vision_config": vision}


@torch.no_grad()
def deepstack_reference(model, pv, thw) -> dict:
    out = model.model.get_image_features(pixel_values=pv, image_grid_thw=thw)
    feats = out.deepstack_features
    assert len(feats) == len(VISION["deepstack_visual_indexes"])
    return {f"deepstack_{i}": torch.cat(list(f), 0) for i, f in enumerate(feats)}


@torch.no_grad()
def position_embeddings_reference(model, thw) -> torch.Tensor:
    """The resampled learned position embeddings (patches in merge-block order)."""
    from transformers.vision_utils import get_vision_interpolation_indices_and_weights
    visual = model.model.visual
    idx, w = get_vision_interpolation_indices_and_weights(
        thw, num_grid_per_side=visual.num_grid_per_side, mode=visual.interpolation_mode,
        align_corners=visual.interpolation_align_corners,
        spatial_merge_size=visual.config.spatial_merge_size)
    return (visual.pos_embed(idx) * w[:, :, None]).sum(1)


def main() -> None:
    modeling_qwen3_vl.eager_attention_forward = base._make_wrapper(
        modeling_qwen3_vl.eager_attention_forward)
    OUT.mkdir(parents=True, exist_ok=True)
    img = Image.open(REPO / "tests" / "fixtures" / "qwen_vl" / "test_image.png").convert("RGB")

    resized = OUT / "pillow_bicubic"
    resized.mkdir(exist_ok=True)
    for w, h in RESIZE_SIZES:
        img.resize((w, h), Image.BICUBIC).save(resized / f"{w}x{h}.png", compress_level=9)

    grids = qv.smart_resize_grids(image_processor(), SMART_RESIZE_SIZES, PATCH)

    d = OUT / NAME
    d.mkdir(exist_ok=True)
    torch.manual_seed(0)
    m = Qwen3VLForConditionalGeneration(config_obj())
    qv.init_weights(m, f"{NAME}#0")
    sd = base.internal_sd(m)
    m.save_pretrained(d)
    keys = sorted(base.load_st(d / "model.safetensors").keys())
    layout = "nested" if any(k.startswith("model.language_model.") for k in keys) else "flat"
    assert any(k.startswith(("model.visual.", "visual.")) for k in keys), keys[:5]
    assert any("deepstack_merger_list.1." in k for k in keys), keys
    del m
    base.write_json(d / "config.json", hub_style_config_json())
    tok = qv.build_tokenizer()
    (d / "tokenizer.json").write_text(tok.to_str(pretty=True) + "\n")
    base.write_json(d / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>", "unk_token": "<unk>", "model_max_length": 4096,
        "added_tokens_decoder": {str(qv.VOCAB[s]): {"content": s, "special": True,
                                                    "lstrip": False, "rstrip": False,
                                                    "normalized": False, "single_word": False}
                                 for s in qv.SPECIALS}})
    base.write_json(d / "chat_template.json", {"chat_template": CHAT_TEMPLATE})
    base.write_json(d / "preprocessor_config.json", preprocessor_config())
    base.write_json(d / "generation_config.json", {
        "bos_token_id": qv.ENDOFTEXT, "eos_token_id": [qv.IM_END, qv.ENDOFTEXT],
        "pad_token_id": qv.ENDOFTEXT, "do_sample": False})

    model, info = Qwen3VLForConditionalGeneration.from_pretrained(
        d, attn_implementation="eager", dtype=torch.float32, output_loading_info=True)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    model.eval()
    rope = model.config.text_config.rope_parameters
    assert rope["mrope_section"] == MROPE_SECTION and rope["mrope_interleaved"], rope
    assert rope["rope_theta"] == ROPE_THETA, rope
    assert model.config.text_config.head_dim == 24
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), f"weight {k} changed on reload"

    fast = qv.fast_tokenizer(Tokenizer.from_file(str(d / "tokenizer.json")))
    fast.chat_template = CHAT_TEMPLATE
    tensors, prompts = {}, {}
    for pname, question in (("question", qv.QUESTION), ("general", qv.GENERAL)):
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        text = fast.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        assert text.count("<|image_pad|>") == 1 and "system" not in text, text
        images = image_processor()(images=img, return_tensors="pt")
        n_pad = int(images["image_grid_thw"][0].prod()) // (MERGE * MERGE)
        expanded = text.replace("<|image_pad|>", "<|image_pad|>" * n_pad)
        ids = torch.tensor([fast(expanded)["input_ids"]])
        assert qv.UNK not in ids[0].tolist(), text
        pv, thw = images["pixel_values"].float(), images["image_grid_thw"]
        where = (ids[0] == qv.IMAGE_PAD).nonzero().flatten()
        s, e = int(where[0]), int(where[-1]) + 1
        n = int(thw.prod()) // (MERGE * MERGE)
        assert e - s == n and ids[0, s - 1] == qv.VISION_START and ids[0, e] == qv.VISION_END
        span = (s, e)
        knock = [i for i in range(n) if (i * 7) % 3 != 1]
        pre = "" if pname == "question" else "general_"
        record_ids = [-1 if t == qv.IMAGE_PAD else t for t in ids[0].tolist()]
        tensors[pre + "input_ids"] = torch.tensor(record_ids, dtype=torch.int64)
        tensors[pre + "image_span"] = torch.tensor(list(span), dtype=torch.int64)
        prompts[pname] = {"text": text, "input_ids": record_ids, "image_span": list(span),
                          "seq_len": len(record_ids)}
        if pname == "question":
            tensors["pixel_values"] = pv
            tensors["image_grid_thw"] = thw[0].to(torch.int64)
            tensors["position_embeddings"] = position_embeddings_reference(model, thw)
            tensors.update(deepstack_reference(model, pv, thw))
            r = qv.reference(model, ids, pv, thw, span, knock)
            min_gap = r.pop("_min_gap")
            tensors.update(r)
            knock_tokens = knock
            grid = [int(thw[0, 1]) // MERGE, int(thw[0, 2]) // MERGE]
        else:
            tensors.update(qv.reference_general(model, ids, pv, thw, span))

    # Without DeepStack the logits differ: the features really reach the decoder.
    with torch.no_grad():
        model.model.rope_deltas = None
        ids = torch.tensor([[qv.IMAGE_PAD if t == -1 else t for t in prompts["question"]["input_ids"]]])
        feats = model.model.get_image_features(pixel_values=tensors["pixel_values"],
                                               image_grid_thw=thw)
        feats.deepstack_features = [[torch.zeros_like(x) for x in f] for f in feats.deepstack_features]
        plain = model(input_ids=ids, image_grid_thw=thw, mm_token_type_ids=qv.mm_types(ids),
                      mm_encoder_outputs={"image": feats}, use_cache=False).logits[0]
        assert not torch.allclose(plain, tensors["logits"], atol=1e-3), "DeepStack has no effect"

    tensors = {k: (v.detach().float().contiguous() if v.dtype.is_floating_point
                   else v.to(torch.int64).contiguous()) for k, v in tensors.items()}
    base.save_st(OUT / f"{NAME}.expected.safetensors", tensors)
    s, e = prompts["question"]["image_span"]
    files = sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())
    meta = {
        "checkpoint": NAME,
        "checkpoint_files": files,
        "architecture": {"family": "qwen3_vl", "key_layout": layout, "tied_head": False,
                         "num_layers": TEXT["num_hidden_layers"],
                         "num_heads": TEXT["num_attention_heads"],
                         "num_kv_heads": TEXT["num_key_value_heads"], "head_dim": TEXT["head_dim"],
                         "vocab_size": qv.V, "mrope_section": MROPE_SECTION,
                         "mrope_interleaved": True, "vision": VISION},
        "image": {"width": img.width, "height": img.height, "grid_rows_cols": grid,
                  "resized_height_width": [grid[0] * FACTOR, grid[1] * FACTOR],
                  "num_image_tokens": grid[0] * grid[1]},
        "prompts": prompts,
        "token_ids": {"image_pad": qv.IMAGE_PAD, "vision_start": qv.VISION_START,
                      "vision_end": qv.VISION_END, "im_end": qv.IM_END},
        "knockout": {"layers_single": qv.KNOCK_LAYERS_1, "layers_double": qv.KNOCK_LAYERS_2,
                     "image_token_indices": knock_tokens,
                     "key_positions": [s + i for i in knock_tokens],
                     "query_positions": f"[{e}, seq_len): from <|vision_end|> on, prefill only",
                     "value": "torch.finfo(float32).min added to the additive mask"},
        "generation": {"new_tokens": qv.N_NEW, "greedy": True, "stop_on_eos": False,
                       "min_top1_top2_logit_margin": round(min_gap, 6)},
        "smart_resize": {"min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS,
                         "patch_size": PATCH, "merge_size": MERGE,
                         "processor": "transformers Qwen2VLImageProcessorPil", "sizes": grids},
        "tolerances": {"pixel_values_abs": 1e-5, "vision_abs": 1e-4, "logits_rel": 1e-4,
                       "attn_abs": 1e-5, "generated_ids": "exact"},
        "versions": base.versions(),
    }
    base.write_json(OUT / f"{NAME}.expected.json", meta, compact_int_lists=True)
    manifest = base.write_manifest(OUT)
    print(json.dumps({k: (list(v.shape), str(v.dtype)) for k, v in tensors.items()}, indent=1))
    print("layout:", layout, "min gap:", min_gap)
    print("total bytes:", sum((OUT / f).stat().st_size for f in manifest))


if __name__ == "__main__":
    main()

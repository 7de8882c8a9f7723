#!/usr/bin/env python3
"""Reference causal knockout maps (`fovea inspect --causal-map`) from HF transformers.

For each committed parity checkpoint of tools/make_per_token_fixtures.py (llava-hf nested
Qwen2, original LLaVA-Med with its CLIP folder, Qwen2.5-VL, Gemma 3) and Qwen3-VL's
(tools/make_qwen3_vl_fixtures.py), on the committed reference pixels and prompt ids, transformers (eager, f32) computes:

- the first answer token without any knockout (the target: argmax of the last prompt row's
  logits) and its log-probability (log-softmax in float64 of the f32 logits);
- for each cell of a 2 x 3 cut of the image-token grid (token (r, c) in cell
  (floor(r * 2 / rows), floor(c * 3 / cols)), raster order), the target's log-probability with
  the edges from every token after the image span to the cell's image tokens blocked in every
  decoder layer (prefill only: one forward), through the same module-level eager-attention
  patches as the per-token fixtures (make_llava_fixtures.knockout);
- the same with every image token blocked (the whole image as one cell) and with none.

Writes tests/fixtures/causal/<name>.expected.json (cells, grid, cell_tokens, layers, target,
base_logprob, logprob, whole_image_logprob, empty_logprob). tests/causal_map.rs asserts fovea's
batched map within 1e-4 of these.

Rerun:  python tools/make_causal_fixtures.py   (~5 s on CPU)
Needs what tools/make_per_token_fixtures.py needs (it imports that script's loaders); no network.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_per_token_fixtures as pt  # noqa: E402  (families, loaders, knockout patches)
import make_qwen_vl_fixtures as qv  # noqa: E402

from transformers import Qwen3VLForConditionalGeneration  # noqa: E402
from transformers.models.qwen3_vl import modeling_qwen3_vl  # noqa: E402

OUT = pt.FIXTURES / "causal"
CELLS = (2, 3)


class Qwen3(pt.Qwen):
    """Qwen3-VL (DeepStack, interleaved M-RoPE): the checkpoint make_qwen3_vl_fixtures.py saved."""

    def load(self):
        model = Qwen3VLForConditionalGeneration.from_pretrained(
            pt.FIXTURES / "qwen3_vl" / self.name, attn_implementation="eager", dtype=torch.float32)
        return model.eval()


CASES = dict(pt.CASES, qwen3_vl={"family": "qwen3_vl", "folder": "qwen3_vl"})
FAMILIES = dict(pt.FAMILIES, qwen3_vl=Qwen3)


def grid(fam, n: int) -> tuple[int, int]:
    """Image-token rows x cols of the fixture's image."""
    if isinstance(fam, pt.Qwen):
        _, h, w = fam.exp["image_grid_thw"].tolist()
        rows, cols = h // 2, w // 2  # the merger joins 2 x 2 patches
    else:
        rows = cols = math.isqrt(n)
    assert rows * cols == n, (fam.name, rows, cols, n)
    return rows, cols


def cell_tokens(rows: int, cols: int) -> list[list[int]]:
    r_cells, c_cells = CELLS
    cells = [[] for _ in range(r_cells * c_cells)]
    for r in range(rows):
        for c in range(cols):
            cells[(r * r_cells // rows) * c_cells + c * c_cells // cols].append(r * cols + c)
    return cells


@torch.no_grad()
def first_logits(model, fam, layers: list[int], keys: list[int], e: int) -> torch.Tensor:
    T = fam.ids.shape[1]
    ctx = pt.base.knockout(layers, e, keys, T, all_steps=False) if keys else pt._Null()
    with ctx:
        fam.reset(model)
        out = model(input_ids=fam.ids, use_cache=False, **fam.prefill_kwargs())
    return out.logits[0, -1].float()


def log_prob(logits: torch.Tensor, token: int) -> float:
    return float(torch.log_softmax(logits.double(), -1)[token])


def main() -> None:
    pt.install_patches()
    modeling_qwen3_vl.eager_attention_forward = pt.base._make_wrapper(
        modeling_qwen3_vl.eager_attention_forward)
    OUT.mkdir(parents=True, exist_ok=True)
    for name, case in CASES.items():
        folder = pt.FIXTURES / case["folder"]
        exp = pt.base.load_st(folder / f"{name}.expected.safetensors")
        fam = FAMILIES[case["family"]](name, exp)
        committed = exp["input_ids"]
        s, e = exp["image_span"].tolist()
        ids = committed.clone()
        ids[s:e] = fam.image_token
        fam.ids = ids[None]
        model = fam.load()
        L = model.config.get_text_config().num_hidden_layers
        layers = list(range(L))
        rows, cols = grid(fam, e - s)
        cells = cell_tokens(rows, cols)

        base_logits = first_logits(model, fam, layers, [], e)
        target = int(base_logits.argmax())
        base = log_prob(base_logits, target)
        logprob = [log_prob(first_logits(model, fam, layers, [s + t for t in cell], e), target)
                   for cell in cells]
        whole = log_prob(first_logits(model, fam, layers, list(range(s, e)), e), target)
        # The first answer token is the committed generation's first id.
        assert target == int(exp["generated_ids"][0]), (name, target, exp["generated_ids"][:1])
        assert qv.IMAGE_PAD == pt.Qwen.image_token
        drops = [base - v for v in logprob]
        assert max(abs(d) for d in drops) > 1e-4, (name, drops)  # the map is not flat
        pt.base.write_json(OUT / f"{name}.expected.json", {
            "generator": "tools/make_causal_fixtures.py",
            "reference": "transformers eager f32, one forward per cell, knockout in every layer, "
                         "queries from the image span's end, prefill only",
            "image_span": [s, e], "grid": [rows, cols], "cells": list(CELLS),
            "cell_tokens": cells, "layers": layers, "target": target, "base_logprob": base,
            "logprob": logprob, "whole_image_logprob": whole,
        })
        print(f"{name}: grid {rows}x{cols}, target {target}, base {base:.4f}, "
              f"drops {[round(d, 4) for d in drops]}, whole image {whole:.4f}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Per-generated-token attention over the image span: transformers references for fovea's tests.

What: for four committed tiny checkpoints (one per decoder family / key layout that fovea runs)

  tests/fixtures/llava/llava-qwen2-nested            LLaVA, llava-hf nested layout, Qwen2 decoder
  tests/fixtures/llava/llava-med-mistral-original    LLaVA-Med v1.5 layout, Mistral, CLIP in ../clip-tiny
  tests/fixtures/qwen_vl/qwen2_5_vl-flat             Qwen2.5-VL (M-RoPE), save_pretrained layout
  tests/fixtures/gemma3/gemma3-hub                   Gemma 3 (sliding + full layers), MedGemma layout

this script greedily decodes N_NEW = 8 tokens (no EOS stop) from the question prompt of the
checkpoint's committed expected file, in a manual KV-cache loop (one prefill forward, then one
single-token forward per further token, every forward with output_attentions=True), and records
for every generated token k the softmax probabilities over the image span [s, e) of the query that
produced token k, for every decoder layer and head:

  k = 0       the last prompt row (T - 1) of the prefill; equals the committed `attn_last`
  k >= 1      the single query of the decode step whose input is token k - 1 (absolute position
              T + k - 1)

Three runs per checkpoint, with the committed knockout spec of the checkpoint's expected file
(layers `knockout.layers_single`, blocked keys `knockout.key_positions`, queries from the image
end e on):

  token_attn / token_ids                                     no knockout
  knockout_token_attn / knockout_token_ids                   knockout in the prefill only
  knockout_all_steps_token_attn / knockout_all_steps_token_ids   knockout in the prefill and in
                                                             every decode step

Each *_attn is (8, layers, heads, N) float32, each *_ids is (8,) int64. The first 5 ids of each run
equal the committed `generated_ids` / `knockout_generated_ids` / `knockout_all_steps_generated_ids`.

Why: fovea records, during greedy decoding, the attention over the image of the query that
produced each token; these files pin that to transformers for every family (the LLaVA decoders,
Qwen2.5-VL with its rope deltas during decoding, Gemma 3 with sliding layers whose decode-time
cache holds only the last window - 1 keys).

How: the model is loaded with the fixture script's own loader (make_llava_fixtures.load_checkpoint,
make_qwen_vl_fixtures.load_checkpoint, make_gemma3_fixtures.load_checkpoint: eager attention,
float32, CPU); the prompt is the committed `input_ids` with the placeholder (-1, or -200 for the
original LLaVA layout) replaced by the family's image token id, the committed `pixel_values` (and
`image_grid_thw` + mm_token_type_ids for Qwen, `token_type_ids` for Gemma in the prefill only). The
knockout is the family's own patch of the module-level eager attention function
(make_llava_fixtures._make_wrapper for modeling_llama / qwen2 / mistral / qwen2_5_vl,
make_gemma3_fixtures._gemma_knockout_wrapper for modeling_gemma3), driven by
make_llava_fixtures.knockout(...). Attention columns of a decode step are mapped to absolute key
positions: a step with query position p and kv_len columns covers keys [p + 1 - kv_len, p + 1)
(kv_len = p + 1 except in Gemma's sliding layers); image keys outside that range get 0.

The script asserts: step 0 equals the committed attn_last (and knockout_attn_last); the first 5
ids equal the committed generations; the prefill-only and all-steps knockout runs share step 0;
in (b) the knockout layer's decode queries give exactly 0 to the blocked keys, in (a) they do not;
`generate(output_attentions=True, return_dict_in_generate=True, output_logits=True)` gives the
same ids, logits and (whole) per-step attention tensors as the manual loop, for all three runs.
It records the top-1/top-2 logit margin of every step and warns if one is below 1e-3.

Writes tests/fixtures/per_token/<name>.expected.safetensors, <name>.expected.json and
MANIFEST.sha256 (about 110 KB in all). Deterministic: the same versions give byte-identical files.

Rerun:  python tools/make_per_token_fixtures.py   (~10 s on CPU; see tools/README.md)
Needs the committed llava / qwen_vl / gemma3 fixtures (it reads, never writes them) and the
packages of those scripts (torch, transformers 5.x, safetensors, tokenizers, numpy, pillow; no
torchvision). No network access.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_llava_fixtures as base  # noqa: E402  (load_st/save_st/write_json, knockout state, llava loader)
import make_qwen_vl_fixtures as qv  # noqa: E402
import make_gemma3_fixtures as gm  # noqa: E402

from transformers import Gemma3ForConditionalGeneration  # noqa: E402
from transformers.models.gemma3 import modeling_gemma3  # noqa: E402
from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
OUT = FIXTURES / "per_token"

torch.manual_seed(0)
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

N_NEW = 8
N_COMMITTED = 5  # the committed fixtures' generations are 5 tokens long
ATTN_ABS = 1e-5
LOW_MARGIN = 1e-3

CASES = {
    "llava-qwen2-nested": {"family": "llava", "folder": "llava"},
    "llava-med-mistral-original": {"family": "llava", "folder": "llava"},
    "qwen2_5_vl-flat": {"family": "qwen2_5_vl", "folder": "qwen_vl"},
    "gemma3-hub": {"family": "gemma3", "folder": "gemma3"},
}
RUNS = {  # tensor prefix -> (knockout?, all_steps?, committed ids key)
    "": (False, False, "generated_ids"),
    "knockout_": (True, False, "knockout_generated_ids"),
    "knockout_all_steps_": (True, True, "knockout_all_steps_generated_ids"),
}


def install_patches() -> None:
    base.install_knockout_patch()  # modeling_llama / modeling_qwen2 / modeling_mistral
    modeling_qwen2_5_vl.eager_attention_forward = base._make_wrapper(
        modeling_qwen2_5_vl.eager_attention_forward)
    modeling_gemma3.eager_attention_forward = gm._gemma_knockout_wrapper(
        modeling_gemma3.eager_attention_forward)


# ----------------------------------------------------------------------------------------------
# Families: how to load, which token fills the image positions, what each forward gets
# ----------------------------------------------------------------------------------------------
class Family:
    def __init__(self, name: str, exp: dict):
        self.name, self.exp = name, exp

    def reset(self, model) -> None:  # before every prefill / generate
        pass

    def decode_kwargs(self, step: torch.Tensor) -> dict:
        return {}


class Llava(Family):
    image_token = base.IMAGE
    pad_token = base.EOS

    def load(self):
        return base.load_checkpoint(self.name)

    def prefill_kwargs(self) -> dict:
        return {"pixel_values": self.exp["pixel_values"][None]}


class Qwen(Family):
    image_token = qv.IMAGE_PAD
    pad_token = qv.ENDOFTEXT

    def load(self):
        return qv.load_checkpoint(self.name)

    def reset(self, model) -> None:
        model.model.rope_deltas = None  # as make_qwen_vl_fixtures does before each prefill

    def prefill_kwargs(self) -> dict:
        return {"pixel_values": self.exp["pixel_values"], "image_grid_thw": self.exp["image_grid_thw"][None],
                "mm_token_type_ids": qv.mm_types(self.ids)}

    def decode_kwargs(self, step):
        return {"mm_token_type_ids": torch.zeros_like(step).int()}


class Gemma(Family):
    image_token = gm.SOFT
    pad_token = gm.PAD

    def load(self):
        # rebuild the in-memory weights the fixture script wrote, so its loader can assert the
        # committed files reload bit-identically
        spec = gm.SPECS[self.name]
        torch.manual_seed(0)
        m = Gemma3ForConditionalGeneration(gm.config_obj(spec["tied"]))
        gm.init_weights(m, f"{self.name}#{spec['salt']}")
        if spec["tied"]:
            m.tie_weights()
        sd = base.internal_sd(m)
        del m
        return gm.load_checkpoint(self.name, spec, sd)

    def prefill_kwargs(self) -> dict:
        tt = self.exp["token_type_ids"][None]
        assert tt[0].tolist() == [int(t == gm.SOFT) for t in self.ids[0].tolist()]
        return {"pixel_values": self.exp["pixel_values"], "token_type_ids": tt}


FAMILIES = {"llava": Llava, "qwen2_5_vl": Qwen, "gemma3": Gemma}


# ----------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------
def image_cols(att_layer: torch.Tensor, q_pos: int, span: tuple[int, int]) -> torch.Tensor:
    """att_layer (H, kv_len): one query row at absolute position q_pos over keys
    [q_pos + 1 - kv_len, q_pos + 1). Returns (H, N) over the image span, 0 outside the range."""
    s, e = span
    H, kv = att_layer.shape
    first = q_pos + 1 - kv
    out = torch.zeros(H, e - s, dtype=att_layer.dtype)
    for j in range(s, e):
        if first <= j <= q_pos:
            out[:, j - s] = att_layer[:, j - first]
    return out


def margin(logits: torch.Tensor) -> tuple[int, float]:
    top = logits.topk(2)
    return int(top.indices[0]), float(top.values[0] - top.values[1])


@torch.no_grad()
def manual(model, fam: Family, span, knock: dict | None, all_steps: bool) -> dict:
    ids, T = fam.ids, fam.ids.shape[1]
    s, e = span
    ctx = (base.knockout(knock["layers"], e, knock["keys"], T, all_steps=all_steps) if knock
           else _Null())
    rows, gen, margins, logits, atts, kv_lens = [], [], [], [], [], []
    with ctx:
        fam.reset(model)
        out = model(input_ids=ids, use_cache=True, output_attentions=True, **fam.prefill_kwargs())
        cache = out.cache
        for k in range(N_NEW):
            if k > 0:
                step = torch.tensor([[gen[-1]]])
                out = model(input_ids=step, cache=cache, use_cache=True, output_attentions=True,
                            **fam.decode_kwargs(step))
                cache = out.cache
            q_pos = T - 1 + k
            per_layer = []
            for a in out.attentions:
                a = a[0, :, -1]  # (H, kv_len): the query that produces token k
                per_layer.append(image_cols(a, q_pos, span))
            rows.append(torch.stack(per_layer))
            atts.append([a[0].clone() for a in out.attentions])
            kv_lens.append([int(a.shape[-1]) for a in out.attentions])
            lg = out.logits[0, -1]
            nxt, m = margin(lg)
            gen.append(nxt)
            margins.append(m)
            logits.append(lg.clone())
    return {"attn": torch.stack(rows).float(), "ids": torch.tensor(gen, dtype=torch.int64),
            "margins": margins, "logits": torch.stack(logits), "full_attn": atts, "kv_lens": kv_lens}


@torch.no_grad()
def via_generate(model, fam: Family, span, knock: dict | None, all_steps: bool) -> dict:
    T = fam.ids.shape[1]
    ctx = (base.knockout(knock["layers"], span[1], knock["keys"], T, all_steps=all_steps) if knock
           else _Null())
    with ctx:
        fam.reset(model)
        out = model.generate(input_ids=fam.ids, **fam.prefill_kwargs(), max_new_tokens=N_NEW,
                             min_new_tokens=0, do_sample=False, eos_token_id=None,
                             pad_token_id=fam.pad_token, output_attentions=True,
                             output_logits=True, return_dict_in_generate=True)
    return {"ids": out.sequences[0, T:].tolist(), "attentions": out.attentions,
            "logits": torch.stack([lg[0] for lg in out.logits])}


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def compare_with_generate(man: dict, gen: dict) -> dict:
    assert gen["ids"] == man["ids"].tolist(), (gen["ids"], man["ids"].tolist())
    assert len(gen["attentions"]) == N_NEW
    worst = 0.0
    for k, step in enumerate(gen["attentions"]):
        assert len(step) == len(man["full_attn"][k])
        for layer, a in enumerate(step):
            mine = man["full_attn"][k][layer]
            assert a[0].shape == mine.shape, (k, layer, a.shape, mine.shape)
            worst = max(worst, float((a[0] - mine).abs().max()))
    assert worst <= ATTN_ABS, worst
    lg = float((gen["logits"] - man["logits"]).abs().max())
    assert lg <= 1e-4, lg
    return {"attn_max_abs_diff": worst, "logits_max_abs_diff": lg}


def main() -> None:
    install_patches()
    OUT.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name, case in CASES.items():
        folder = FIXTURES / case["folder"]
        exp_path = folder / f"{name}.expected.safetensors"
        exp = base.load_st(exp_path)
        exp_json = json.loads((folder / f"{name}.expected.json").read_text())
        fam = FAMILIES[case["family"]](name, exp)
        committed = exp["input_ids"]
        s, e = exp["image_span"].tolist()
        placeholder = sorted(set(committed[s:e].tolist()))
        # -1 (Qwen, Gemma), -200 (original LLaVA layout) or the image token itself (llava-hf layouts)
        assert len(placeholder) == 1 and placeholder[0] in (-1, -200, fam.image_token), placeholder
        assert int((committed == placeholder[0]).sum()) == e - s and int((committed < 0).sum()) in (0, e - s)
        ids = committed.clone()
        ids[s:e] = fam.image_token
        assert int((ids == fam.image_token).sum()) == e - s
        fam.ids = ids[None]
        T = ids.shape[0]
        span = (s, e)
        ko = exp_json["knockout"]
        knock = {"layers": list(ko["layers_single"]), "keys": list(ko["key_positions"])}
        assert all(s <= j < e for j in knock["keys"])

        model = fam.load()
        L = model.config.get_text_config().num_hidden_layers
        H = model.config.get_text_config().num_attention_heads

        tensors, margins, checks, kv_lens = {}, {}, {}, None
        for prefix, (use_ko, all_steps, committed_key) in RUNS.items():
            run_ko = knock if use_ko else None
            man = manual(model, fam, span, run_ko, all_steps)
            assert man["attn"].shape == (N_NEW, L, H, e - s), man["attn"].shape
            ids_ref = exp[committed_key].tolist()
            assert man["ids"][:N_COMMITTED].tolist() == ids_ref, (name, prefix, man["ids"].tolist(), ids_ref)
            last_key = "knockout_attn_last" if use_ko else "attn_last"
            d0 = float((man["attn"][0] - exp[last_key]).abs().max())
            assert d0 <= ATTN_ABS, (name, prefix, d0)
            g = compare_with_generate(man, via_generate(model, fam, span, run_ko, all_steps))
            run = prefix.rstrip("_") or "plain"
            checks[run] = {"step0_vs_committed_" + last_key + "_max_abs_diff": d0,
                           "generate_vs_manual": g}
            margins[run] = {"per_step": [round(m, 6) for m in man["margins"]],
                            "min": round(min(man["margins"]), 6)}
            if min(man["margins"]) < LOW_MARGIN:
                print(f"WARNING {name} {run}: top1-top2 margin {min(man['margins']):.2e} < {LOW_MARGIN}")
                margins[run]["below_1e-3"] = True
            if use_ko:
                for l in knock["layers"]:
                    assert all(kl[l] == T + k for k, kl in enumerate(man["kv_lens"])), "knockout layer sliding?"
                    blocked = torch.stack([man["full_attn"][k][l][:, -1][:, knock["keys"]]
                                           for k in range(1, N_NEW)])
                    if all_steps:
                        assert bool((blocked == 0).all()), "all-steps knockout not effective in decode"
                    else:
                        assert bool((blocked > 0).any()), "prefill-only knockout leaked into decode"
                    # the prefill's last row: blocked keys exactly 0 in both knockout runs
                    assert bool((man["attn"][0, l][:, [j - s for j in knock["keys"]]] == 0).all())
            if kv_lens is None:
                kv_lens = man["kv_lens"]
            tensors[prefix + "token_attn"] = man["attn"]
            tensors[prefix + "token_ids"] = man["ids"]
        assert torch.equal(tensors["knockout_token_attn"][0], tensors["knockout_all_steps_token_attn"][0])
        assert not torch.equal(tensors["knockout_token_attn"], tensors["token_attn"])

        # layers whose decode-time attention does not span the whole sequence (Gemma's sliding
        # layers: the cache keeps window - 1 keys); their image columns are 0 once e <= p + 1 - kv_len
        truncated = sorted({l for k, kl in enumerate(kv_lens) for l, n in enumerate(kl) if n != T + k})
        layer_notes = {}
        if case["family"] == "gemma3":
            tc = model.config.get_text_config()
            W = tc.sliding_window
            sliding = [l for l, t in enumerate(tc.layer_types) if t == "sliding_attention"]
            assert truncated == sliding, (truncated, sliding)
            for l in sliding:
                assert kv_lens[0][l] == T  # the prefill returns all T columns (masked ones 0)
                assert all(kv_lens[k][l] == W for k in range(1, N_NEW)), [kl[l] for kl in kv_lens]
                for prefix in RUNS:
                    assert bool((tensors[prefix + "token_attn"][:, l] == 0).all())  # image out of the window
            layer_notes = {
                "layer_types": list(tc.layer_types), "sliding_window": W,
                "decode_kv_len_sliding": W, "prefill_kv_len": T,
                "note": (f"sliding layers: the prefill attention has all T columns (masked ones 0); a decode "
                         f"step's has {W} columns = keys [p - {W - 1}, p] (DynamicSlidingWindowLayer keeps "
                         f"the last {W - 1} keys + the new one). The image span ends at {e} <= T - {W}, so "
                         "every step's image attention in the sliding layers is exactly 0."),
            }
        else:
            assert not truncated, truncated

        rope = {}
        if case["family"] == "qwen2_5_vl":
            delta = int(exp["rope_delta"][0])
            assert int(model.model.rope_deltas[0, 0]) == delta  # left by the last prefill
            rope = {"rope_delta": delta,
                    "prefill_last_row_position": [int(x) for x in exp["position_ids"][:, T - 1]],
                    "decode_position": f"step k >= 1 (query index T + k - 1): all three M-RoPE components "
                                       f"= T + k - 1 + rope_delta = {T - 1 + delta} + k",
                    "mm_token_type_ids_in_decode": "zeros (no image in the step); generate() does the same"}
            assert rope["prefill_last_row_position"] == [T - 1 + delta] * 3

        base.save_st(OUT / f"{name}.expected.safetensors",
                     {k: (v.float() if v.dtype.is_floating_point else v.to(torch.int64)).contiguous()
                      for k, v in tensors.items()})
        ckpt = folder / name
        meta = {
            "checkpoint": str(ckpt.relative_to(REPO)),
            "family": case["family"],
            "source_expected": {"safetensors": str(exp_path.relative_to(REPO)),
                                "sha256": base.file_sha(exp_path),
                                "json": str((folder / f"{name}.expected.json").relative_to(REPO)),
                                "inputs_taken": (["input_ids", "image_span", "pixel_values", "knockout"]
                                                 + {"qwen2_5_vl": ["image_grid_thw"],
                                                    "gemma3": ["token_type_ids"]}.get(case["family"], []))},
            "image_token_id": fam.image_token,
            "placeholder_in_committed_input_ids": placeholder[0],
            "prompt_len": T,
            "image_span": [s, e],
            "num_layers": L,
            "num_heads": H,
            "N": e - s,
            "new_tokens": N_NEW,
            "greedy": True, "stop_on_eos": False, "kv_cache": True,
            "rows": {"k = 0": f"prefill, query row T - 1 = {T - 1}",
                     "k >= 1": f"decode step with input token k - 1, query position T + k - 1 = {T - 1} + k"},
            "knockout": {"layers": knock["layers"], "key_positions": knock["keys"], "queries_from": e,
                         "value": ko["value"],
                         "knockout_": "prefill only (decode steps unmasked)",
                         "knockout_all_steps_": "prefill and every decode step (every decode query is >= e)"},
            "tensors": {p + "token_attn": f"({N_NEW}, {L}, {H}, {e - s}) f32" for p in RUNS}
            | {p + "token_ids": f"({N_NEW},) i64" for p in RUNS},
            "margins": margins,
            "checks": checks,
            "tolerances": {"attn_abs": ATTN_ABS, "ids": "exact"},
            "versions": base.versions(),
        }
        if name == "llava-med-mistral-original":
            meta["vision_tower_folder"] = str((ckpt / ".." / "clip-tiny").resolve().relative_to(REPO))
        if case["family"] == "qwen2_5_vl":
            meta["rope"] = rope
        if layer_notes:
            meta["layers"] = layer_notes
        base.write_json(OUT / f"{name}.expected.json", meta, compact_int_lists=True)
        summary[name] = {"T": T, "span": [s, e], "LxH": f"{L}x{H}",
                         **{(p.rstrip("_") or "plain"): tensors[p + "token_ids"].tolist() for p in RUNS},
                         "min_margins": {r: m["min"] for r, m in margins.items()},
                         "checks": checks}
        del model

    manifest = base.write_manifest(OUT)
    print(json.dumps(summary, indent=1))
    print("total bytes:", sum((OUT / f).stat().st_size for f in manifest))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Reference outputs of VGRefine (attention triage + attention knockout) on the tiny LLaVA fixtures.

Paper: "How Do Medical MLLMs Fail? A Study on Visual Grounding in Medical Images" (ICLR 2026).

For the checkpoints `huatuo-qwen2-original` and `llava-llama-hub` (built by make_llava_fixtures.py,
which must have been run first) this writes tests/fixtures/llava/<name>.vgrefine.json. Model math is
transformers' LlavaForConditionalGeneration (eager attention, float32, CPU), loaded with
make_llava_fixtures.load_checkpoint and knocked out with its `eager_attention_forward` patch. Everything
after the forward passes (attention maps, relative maps, triage score, thresholds, metrics) is plain
numpy in float64 on the float32 attention probabilities, one function per formula below.

Inputs per checkpoint: tests/fixtures/llava/test_image.png through the checkpoint's own pixel path
(`crop` for llava-llama-hub, `pad` for huatuo-qwen2-original; equal to the `pixel_values` of
<name>.expected.safetensors), and two prompts rendered with the checkpoint's own chat format
(make_llava_fixtures.prompt_text):
  question: QUESTION_VG = "what abnormality is seen in the left lung ? Answer the question using a single word or phrase."
  general:  GENERAL_VG  = "Write a general description of the image. Answer the question using a single word or phrase."
Words missing from the 84-word tiny vocabulary become <unk> (id 0); that is deterministic.

Method (N = 16 image tokens, L = 3 layers, H = 4 heads; `span` = [s, e) image positions, T = prompt length):
  A[l,h,i]  query="last":     attn[l, h, T-1, s+i]
            query="question": mean_{t in [e, T)} attn[l, h, t, s+i]
            A_q from the question prompt, A_g from the general prompt (same query mode).
  R[l,h]    normalize=true:  A_q[l,h] / (mean_h A_g[l] + 1e-10);  normalize=false: A_q[l,h]
  S         mean over the listed (l,h) of R[l,h]                                     (N values)
  rule      percentile P: thr = np.percentile(S, P) (linear); knocked_out = {i : S[i] < thr}
            magnitude T:  S' = (S - min S) / (max S - min S) if max > min else 0; knocked_out = {i : S'[i] < T}
  knockout  in the masked layers only, finfo(f32).min added to the attention scores of every query
            position >= e to each key s+i, i in knocked_out; prefill only (decode steps unmasked);
            greedy 5 new tokens, no EOS stop, KV cache.
  metrics   region G (image-token indices), map p over N tokens, natural log:
            ratio = sum_G p / (sum p * |G| / N + 1e-8)
            kl    = KL(g || q), q = p / (sum p + 1e-8), g = 1/|G| on G else 0, both clipped at 1e-12
            js    = 0.5 sum q ln((q+1e-8)/(m+1e-8)) + 0.5 sum g ln((g+1e-8)/(m+1e-8)), m = (q+g)/2, g unclipped
            pointing = argmax(p) (first on ties) in G
            maps: per layer mean_h A_q[l] / (mean_h A_g[l] + 1e-10) (normalize=false: mean_h A_q[l]);
                  per head A_q[l,h] / (A_g[l,h] + 1e-10) (normalize=false: A_q[l,h]); triage map S.

The script checks itself: the loaded model reproduces the existing <name>.expected.safetensors
attention (attn_last, attn_question_mean) and logits bit-exactly for the original prompts, the knocked
out probabilities are exactly 0 in the masked layers (and layers before the first masked one are
unchanged), the manual KV-cache greedy loop equals `generate()` with and without knockout, and the
refined first-token logits equal a cache-free knockout forward. Output is deterministic (no timestamps).

Rerun:  python tools/make_vgrefine_fixtures.py   (see tools/README.md)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_llava_fixtures as mlf  # noqa: E402  (sets torch threads = 1, deterministic algorithms)

OUT = mlf.OUT
CHECKPOINTS = ["huatuo-qwen2-original", "llava-llama-hub"]
SUFFIX = " Answer the question using a single word or phrase."
QUESTION_VG = "what abnormality is seen in the left lung ?" + SUFFIX
GENERAL_VG = "Write a general description of the image." + SUFFIX
REGION = [5, 6, 9, 10]  # image-token indices (row-major 4x4 grid): the central 2x2 block
GRID = [4, 4]
N_NEW = 5
L, H, N = mlf.TEXT_COMMON["num_hidden_layers"], mlf.TEXT_COMMON["num_attention_heads"], mlf.N_IMG
ALL_HEADS = [[l, h] for l in range(L) for h in range(H)]

CASES = [
    dict(id=1, query="last", heads=[[1, 0], [2, 3], [0, 1]], normalize=True, rule="percentile", rule_value=80.0,
         masked_layers=[1]),
    dict(id=2, query="question", heads=[[2, 1], [1, 2]], normalize=True, rule="percentile", rule_value=50.0,
         masked_layers=[1, 2]),
    dict(id=3, query="last", heads=[[1, 0], [2, 3], [0, 1]], normalize=False, rule="magnitude", rule_value=0.5,
         masked_layers=[2]),
    dict(id=4, query="last", heads=ALL_HEADS, normalize=True, rule="percentile", rule_value=80.0,
         masked_layers=[0]),
]

PERCENTILE_PS = [0.0, 20.0, 50.0, 80.0, 100.0]
PERCENTILE_ARRAYS = [
    ("ties", [1.0, 2.0, 2.0, 2.0, 3.0, 5.0, 5.0, 8.0]),
    ("all_zeros", [0.0, 0.0, 0.0, 0.0, 0.0]),
    ("single", [3.5]),
    ("negative", [-3.25, -1.0, -1.0, 0.5, -7.75, 2.0, -0.125]),
    ("unsorted_16", [0.9, 0.1, 0.35, 0.35, 0.7, 0.05, 0.6, 0.2, 0.45, 0.8, 0.15, 0.55, 0.3, 0.95, 0.25, 0.65]),
    ("two_values", [4.0, -2.0]),
]


# ----------------------------------------------------------------------------------------------
# Method, one formula per function (numpy, float64)
# ----------------------------------------------------------------------------------------------
def attention_to_image(att: np.ndarray, span: tuple[int, int], query: str) -> np.ndarray:
    """A[l,h,i]: attention probability to image token i (key s+i) from the chosen query.

    att: [L, H, T, T] softmax probabilities of one forward pass (row = query, column = key).
    query="last": the last prompt token (row T-1).
    query="question": the mean over every query row in [image_end, T)."""
    s, e = span
    T = att.shape[-1]
    att = att.astype(np.float64)
    if query == "last":
        return att[:, :, T - 1, s:e]
    if query == "question":
        return att[:, :, e:T, s:e].mean(axis=2)
    raise ValueError(query)


def relative_maps(A_q: np.ndarray, A_g: np.ndarray, normalize: bool) -> np.ndarray:
    """R[l,h] = A_q[l,h] / (mean over heads of A_g[l] + 1e-10) when normalize, else A_q. [L,H,N]."""
    if not normalize:
        return A_q.copy()
    return A_q / (A_g.mean(axis=1, keepdims=True) + 1e-10)


def triage_score(R: np.ndarray, heads: list[list[int]]) -> np.ndarray:
    """S = mean over the listed (layer, head) pairs of R[l,h]. [N]."""
    return np.mean(np.stack([R[l, h] for l, h in heads]), axis=0)


def percentile_rule(S: np.ndarray, p: float) -> tuple[float, list[int]]:
    """thr = np.percentile(S, p) (linear interpolation); knock out the tokens strictly below thr."""
    thr = float(np.percentile(S, p))
    return thr, [int(i) for i in np.nonzero(S < thr)[0]]


def min_max(S: np.ndarray) -> np.ndarray:
    """S' = (S - min) / (max - min) when max > min, else all zeros."""
    lo, hi = S.min(), S.max()
    if hi > lo:
        return (S - lo) / (hi - lo)
    return np.zeros_like(S)


def magnitude_rule(S: np.ndarray, t: float) -> tuple[np.ndarray, list[int]]:
    """Knock out the tokens whose min-max normalised score S' is strictly below t."""
    Sn = min_max(S)
    return Sn, [int(i) for i in np.nonzero(Sn < t)[0]]


def region_dist(n: int, region: list[int]) -> np.ndarray:
    """g_i = 1/|G| for i in G, else 0."""
    g = np.zeros(n)
    g[region] = 1.0 / len(region)
    return g


def attention_ratio(p: np.ndarray, region: list[int]) -> float:
    """ratio = sum_{i in G} p_i / (sum_i p_i * |G| / N + 1e-8)."""
    return float(p[region].sum() / (p.sum() * len(region) / len(p) + 1e-8))


def kl_divergence(p: np.ndarray, region: list[int]) -> float:
    """KL(g || q), q = p / (sum p + 1e-8); q and g clipped at 1e-12 (both), natural log, sum over all i."""
    q = np.clip(p / (p.sum() + 1e-8), 1e-12, None)
    g = np.clip(region_dist(len(p), region), 1e-12, None)
    return float(np.sum(g * np.log(g / q)))


def js_divergence(p: np.ndarray, region: list[int]) -> float:
    """JS(q, g) = 0.5 sum q ln((q+1e-8)/(m+1e-8)) + 0.5 sum g ln((g+1e-8)/(m+1e-8)), m = (q+g)/2,
    q = p / (sum p + 1e-8), g unclipped."""
    q = p / (p.sum() + 1e-8)
    g = region_dist(len(p), region)
    m = (q + g) / 2
    return float(0.5 * np.sum(q * np.log((q + 1e-8) / (m + 1e-8)))
                 + 0.5 * np.sum(g * np.log((g + 1e-8) / (m + 1e-8))))


def pointing_game(p: np.ndarray, region: list[int]) -> bool:
    """argmax(p) (first index on ties) lies in G."""
    return int(np.argmax(p)) in region


def metrics(p: np.ndarray, region: list[int]) -> dict:
    return {"ratio": attention_ratio(p, region), "kl": kl_divergence(p, region),
            "js": js_divergence(p, region), "pointing": pointing_game(p, region)}


def per_layer_map(A_q: np.ndarray, A_g: np.ndarray, l: int, normalize: bool) -> np.ndarray:
    """mean_h A_q[l] / (mean_h A_g[l] + 1e-10); normalize=false: mean_h A_q[l]."""
    num = A_q[l].mean(axis=0)
    return num / (A_g[l].mean(axis=0) + 1e-10) if normalize else num


def per_head_map(A_q: np.ndarray, A_g: np.ndarray, l: int, h: int, normalize: bool) -> np.ndarray:
    """A_q[l,h] / (A_g[l,h] + 1e-10); normalize=false: A_q[l,h]."""
    return A_q[l, h] / (A_g[l, h] + 1e-10) if normalize else A_q[l, h].copy()


def all_metrics(A_q, A_g, S, normalize: bool, region: list[int]) -> dict:
    keys = ("ratio", "kl", "js", "pointing")
    pl = [metrics(per_layer_map(A_q, A_g, l, normalize), region) for l in range(L)]
    ph = [[metrics(per_head_map(A_q, A_g, l, h, normalize), region) for h in range(H)] for l in range(L)]
    return {
        "per_layer": {k: [m[k] for m in pl] for k in keys},
        "per_head": {k: [[m[k] for m in row] for row in ph] for k in keys},
        "triage_map": metrics(S, region),
    }


# ----------------------------------------------------------------------------------------------
# Model side (transformers, float32)
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def forward_attentions(model, ids: torch.Tensor, pv: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    out = model(input_ids=ids, pixel_values=pv, output_attentions=True, use_cache=False)
    att = torch.stack([a[0] for a in out.attentions])  # [L, H, T, T]
    assert att.shape == (L, H, ids.shape[1], ids.shape[1])
    return att.numpy(), out.logits[0]


@torch.no_grad()
def greedy_with_first_logits(model, ids, pv, n_new) -> tuple[torch.Tensor, list[int], float]:
    """Greedy decode with KV cache (prefill, then single-token steps; no EOS stop).
    Returns the prefill's last-position logits, the new ids and the top1-top2 logit margin of every step."""
    out = model(input_ids=ids, pixel_values=pv, use_cache=True)
    first = out.logits[0, -1].clone()
    cache, gen, gaps = out.cache, [], []
    logits = first
    for step in range(n_new):
        top = logits.topk(2)
        gaps.append(float(top.values[0] - top.values[1]))
        gen.append(int(top.indices[0]))
        if step + 1 < n_new:
            out = model(input_ids=torch.tensor([[gen[-1]]]), cache=cache, use_cache=True)
            cache, logits = out.cache, out.logits[0, -1]
    return first, gen, gaps


@torch.no_grad()
def run_decode(model, ids, pv, span, masked_layers, knocked_out) -> dict:
    """Original (masked_layers empty) or refined decode; prefill-only knockout."""
    s, e = span
    T = ids.shape[1]
    keys = [s + i for i in knocked_out]
    with mlf.knockout(masked_layers, e, keys, T):
        first, gen, gaps = greedy_with_first_logits(model, ids, pv, N_NEW)
        # cross-checks: transformers' generate() and a cache-free forward agree
        assert gen == mlf.greedy_generate(model, ids, pv, N_NEW), "generate() disagrees"
        full = model(input_ids=ids, pixel_values=pv, output_attentions=True, use_cache=False)
    assert torch.allclose(full.logits[0, -1], first, atol=1e-5, rtol=0)
    if masked_layers and keys:
        kat = torch.stack([a[0] for a in full.attentions])
        for l in masked_layers:
            assert bool((kat[l][:, e:, keys] == 0).all()), "knockout not effective"
        ref_att, _ = forward_attentions(model, ids, pv)
        for l in range(min(masked_layers)):
            assert np.array_equal(kat[l].numpy(), ref_att[l]), "layer before the first masked one changed"
        unmasked_rows = kat[min(masked_layers)][:, :e]
        assert np.array_equal(unmasked_rows.numpy(), ref_att[min(masked_layers)][:, :e])
    return {"first_token_logits": [float(x) for x in first.tolist()], "generated_ids": gen,
            "top1_top2_margins": gaps}


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------
def f64list(a) -> list:
    return np.asarray(a, dtype=np.float64).tolist()


def build_prompt(name: str, tok: Tokenizer, q: str) -> dict:
    spec = mlf.SPECS[name]
    text = mlf.prompt_text(spec["fmt"], q)
    text_ids = mlf.tokenize_ids(tok, text)
    hf_ids, span = mlf.expand_image(text_ids, mlf.IMAGE)
    rec = [-1 if span[0] <= i < span[1] else t for i, t in enumerate(hf_ids)]
    return {"text": text, "input_ids": rec, "image_span": list(span), "seq_len": len(rec),
            "_hf_ids": hf_ids, "_span": span}


def run_case(case: dict, model, q: dict, g: dict, pv: torch.Tensor, att_q: np.ndarray, att_g: np.ndarray,
             original: dict) -> dict:
    A_q = attention_to_image(att_q, q["_span"], case["query"])
    A_g = attention_to_image(att_g, g["_span"], case["query"])
    R = relative_maps(A_q, A_g, case["normalize"])
    S = triage_score(R, case["heads"])
    res = dict(case)
    res["A_q"] = f64list(A_q)
    res["A_g"] = f64list(A_g)
    res["R"] = f64list(R)
    res["S"] = f64list(S)
    if case["rule"] == "percentile":
        thr, ko = percentile_rule(S, case["rule_value"])
        res["S_normalized"] = None
        res["threshold"] = thr
        # distance of the nearest score to thr, ignoring scores exactly equal to thr (with an integral
        # interpolation index thr *is* one of the scores and stays >= thr in any precision)
        off = np.abs(S - thr)[S != thr]
        margin = float(off.min()) if off.size else 0.0
        rel_margin = margin / float(np.max(np.abs(S)))
    else:
        Sn, ko = magnitude_rule(S, case["rule_value"])
        res["S_normalized"] = f64list(Sn)
        res["threshold"] = float(case["rule_value"])
        margin = float(np.min(np.abs(Sn - case["rule_value"])))
        rel_margin = margin
    res["knocked_out"] = ko
    res["knocked_out_key_positions"] = [q["_span"][0] + i for i in ko]
    res["decision_margin"] = margin
    res["decision_margin_relative"] = rel_margin
    res["original"] = original
    res["refined"] = run_decode(model, torch.tensor([q["_hf_ids"]]), pv, q["_span"], case["masked_layers"], ko)
    res["metrics"] = all_metrics(A_q, A_g, S, case["normalize"], REGION)
    return res


def percentile_checks() -> list:
    out = []
    for label, vals in PERCENTILE_ARRAYS:
        a = np.asarray(vals, dtype=np.float64)
        res = []
        for p in PERCENTILE_PS:
            thr = float(np.percentile(a, p))
            res.append({"p": p, "value": thr, "below": [int(i) for i in np.nonzero(a < thr)[0]]})
        out.append({"name": label, "values": vals, "results": res})
    return out


def dumps(obj, indent: int = 0, step: int = 1) -> str:
    """JSON with every list of scalars on one line; floats in Python's shortest round-trip repr."""
    pad, inner = " " * indent, " " * (indent + step)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(k)}: {dumps(v, indent + step, step)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list):
        if all(not isinstance(x, (list, dict)) for x in obj):
            return "[" + ", ".join(json.dumps(x, allow_nan=False) for x in obj) + "]"
        return "[\n" + ",\n".join(inner + dumps(x, indent + step, step) for x in obj) + "\n" + pad + "]"
    return json.dumps(obj, allow_nan=False)


def main() -> None:
    mlf.install_knockout_patch()
    img = Image.open(OUT / "test_image.png").convert("RGB")
    stored_px = mlf.load_st(OUT / "image.expected.safetensors")
    pixels = {"crop": mlf.pixel_values_crop(img), "pad": mlf.pixel_values_pad(img)[0]}
    for k, v in pixels.items():
        assert torch.equal(v, stored_px[f"pixel_values_{k}"]), k
    pchecks = percentile_checks()

    for name in CHECKPOINTS:
        spec = mlf.SPECS[name]
        d = OUT / name
        model = mlf.load_checkpoint(name)
        tok = Tokenizer.from_file(str(d / "tokenizer.json"))
        pv = pixels[spec["pixels"]]
        expected = mlf.load_st(OUT / f"{name}.expected.safetensors")
        assert torch.equal(expected["pixel_values"], pv[0])

        # the loaded model reproduces the committed fixture exactly (original prompts)
        for pre, text0 in (("", mlf.QUESTION), ("general_", mlf.GENERAL)):
            p0 = build_prompt(name, tok, text0)
            att0, logits0 = forward_attentions(model, torch.tensor([p0["_hf_ids"]]), pv)
            assert np.array_equal(att0[:, :, -1, p0["_span"][0]:p0["_span"][1]], expected[pre + "attn_last"].numpy())
            s0, e0 = p0["_span"]
            assert torch.equal(torch.from_numpy(att0[:, :, e0:, s0:e0]).mean(dim=2), expected[pre + "attn_question_mean"])
            assert torch.equal(logits0, expected[pre + "logits"])

        q = build_prompt(name, tok, QUESTION_VG)
        g = build_prompt(name, tok, GENERAL_VG)
        if spec["layout"] in ("hub", "nested", "v5"):  # the stored chat template renders the same text
            from transformers import AutoProcessor
            proc = AutoProcessor.from_pretrained(d)
            for pr, text in ((q, QUESTION_VG), (g, GENERAL_VG)):
                msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
                assert proc.apply_chat_template(msgs, add_generation_prompt=True) == pr["text"]
                enc = proc(images=img, text=pr["text"], return_tensors="pt")
                assert enc["input_ids"][0].tolist() == pr["_hf_ids"]
                assert torch.equal(enc["pixel_values"].float(), pv)
        att_q, _ = forward_attentions(model, torch.tensor([q["_hf_ids"]]), pv)
        att_g, _ = forward_attentions(model, torch.tensor([g["_hf_ids"]]), pv)
        original = run_decode(model, torch.tensor([q["_hf_ids"]]), pv, q["_span"], [], [])

        cases = [run_case(c, model, q, g, pv, att_q, att_g, original) for c in CASES]
        prompts = {k: {kk: vv for kk, vv in p.items() if not kk.startswith("_")} for k, p in (("question", q), ("general", g))}
        doc = {
            "checkpoint": name,
            "generator": "tools/make_vgrefine_fixtures.py",
            "method": {
                "attention": "A[l,h,i] = softmax probs to key image_start+i; query 'last' = row T-1, 'question' = mean of rows [image_end, T); A_q question prompt, A_g general prompt",
                "relative": "normalize=true: R[l,h] = A_q[l,h] / (mean_h A_g[l] + 1e-10); false: R = A_q",
                "triage_score": "S = mean over listed heads (l,h) of R[l,h]",
                "percentile_rule": "thr = np.percentile(S, P) (linear); knocked_out = sorted i with S[i] < thr",
                "magnitude_rule": "S' = (S - min) / (max - min) if max > min else 0; knocked_out = i with S'[i] < T; threshold = T",
                "knockout": "masked layers only: finfo(f32).min added to scores of every query >= image_end to keys image_start+i (i in knocked_out); prefill only; greedy 5 tokens, no EOS stop",
                "metrics": "ratio, kl (g||q, clipped 1e-12), js (+1e-8 in logs), pointing; natural log; see tools/make_vgrefine_fixtures.py docstring",
                "metric_maps": "per_layer: mean_h A_q[l] / (mean_h A_g[l] + 1e-10) (normalize=false: mean_h A_q[l]); per_head: A_q[l,h] / (A_g[l,h] + 1e-10) (normalize=false: A_q[l,h]); triage_map: S",
                "precision": "model float32 (eager attention, CPU); everything after the attention probabilities in numpy float64",
            },
            "pixel_path": spec["pixels"],
            "pixel_values": f"image.expected.safetensors pixel_values_{spec['pixels']} (== {name}.expected.safetensors pixel_values)",
            "prompt_format": spec["fmt"],
            "questions": {"question": QUESTION_VG, "general": GENERAL_VG},
            "prompts": prompts,
            "image_placeholder_in_input_ids": -1,
            "model_input_image_token_id": mlf.IMAGE,
            "num_layers": L,
            "num_heads": H,
            "num_image_tokens": N,
            "vocab_size": mlf.V,
            "grid": GRID,
            "region": REGION,
            "new_tokens": N_NEW,
            "tolerances": {"attn_abs": 1e-5, "map_rel": 1e-4, "logits_abs": 2e-4, "metric_rel": 1e-3,
                           "knocked_out": "exact", "generated_ids": "exact", "pointing": "exact"},
            "versions": mlf.versions(),
            "cases": cases,
            "percentile_checks": pchecks,
        }
        text = dumps(doc)
        assert json.loads(text) == json.loads(json.dumps(doc))
        (OUT / f"{name}.vgrefine.json").write_text(text + "\n")
        print(f"{name}: T_q={q['seq_len']} T_g={g['seq_len']} span={q['image_span']} original={original['generated_ids']} "
              f"margins={np.round(original['top1_top2_margins'], 4).tolist()}")
        for c in cases:
            print(f"  case {c['id']}: knocked_out={c['knocked_out']} thr={c['threshold']:.6g} "
                  f"decision_margin={c['decision_margin']:.3g} (rel {c['decision_margin_relative']:.3g}) "
                  f"refined={c['refined']['generated_ids']} margins={np.round(c['refined']['top1_top2_margins'], 4).tolist()} "
                  f"triage={c['metrics']['triage_map']}")
        del model


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Measure the trained demo model and write its VGRefine defaults, model card and demo cases.

Reads assets/demo-model/ (written by train_demo_model.py) and writes:
  assets/demo-model/vgrefine.json   triage heads and masked layer, found here (not assumed)
  assets/demo-model/README.md       the model card (every number below)
  assets/demo-model/report.json     the same numbers, machine-readable
  assets/cases/*.png, *.dcm, cases.jsonl   a dozen held-out demo cases (VGMED fields)

Method (the formulas of fovea and tools/make_vgrefine_fixtures.py; attention = softmax
probabilities of the last prompt token over the 144 image keys, per layer and head; A_q for the
question prompt, A_g for the general prompt "Write a general description of the image." with the
same instruction suffix; maps in float64 from the float32 probabilities):
  head ratio      attention_ratio(A_q[l,h] / (A_g[l,h] + 1e-10), G)
  layer ratio     attention_ratio(mean_h A_q[l] / (mean_h A_g[l] + 1e-10), G)
  triage map      S = mean over heads (l,h) of A_q[l,h] / (mean_h A_g[l] + 1e-10)
  VGRefine        knock out {i : S[i] < np.percentile(S, 80)} in the masked layer (prefill only)
  attention_ratio(p, G) = sum_G p / (sum p * |G| / N + 1e-8); G = the lesion boxes mapped to the
  12x12 grid (16 px cells, floor of the min, ceil of the max).
Accuracy always means the whole greedy answer: the right word, then <|endoftext|> (the second
token is decoded without knockout, from the knocked-out prefill's cache, as fovea does).

Splits (disjoint from training 1_000_000+ and validation 5_000_000+):
  held-out         seeds 9_000_000.. (1000 images, fovea phantom defaults: difficulty 1, distractors 0.3)
  head selection   seeds 9_100_000.. (400 images, same recipe): heads and layer are chosen here
  distractor set   seeds 9_200_000.. (400 images, --distractors 1)

Also checks the PyTorch model against transformers (LlavaForConditionalGeneration, eager) and
fovea itself (`fovea inspect --dump-logits` on every demo case: answers, first-token logits,
knocked-out tokens).

Usage:  nice -n 5 /root/llava-venv/bin/python tools/demo_model_report.py [--model assets/demo-model]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_model as dm  # noqa: E402
import train_demo_model as tdm  # noqa: E402

HELDOUT_SEED, SELECT_SEED, DISTRACT_SEED = 9_000_000, 9_100_000, 9_200_000
EPS = 1e-10
PERCENTILE = 80.0


# ----------------------------------------------------------------------------------------------
# Running the model on rows
# ----------------------------------------------------------------------------------------------
class Runner:
    def __init__(self, model, prompts):
        self.model, self.prompts = model, prompts
        g = prompts.after(dm.GENERAL)
        self.general_ids = g

    @torch.no_grad()
    def features(self, grey):
        return self.model.image_features(dm.pixel_values(grey))

    @torch.no_grad()
    def general_maps(self, feats):
        """A_g (B, L, H, 144) for the general prompt, one per image."""
        B = feats.shape[0]
        probes = []
        self.model.decode(feats, torch.tensor([self.general_ids] * B), torch.arange(B), probe=probes)
        last = len(self.general_ids) - 1
        return torch.stack([p[:, :, last, 1:1 + dm.N_IMG] for p in probes], 1).double().numpy()

    @torch.no_grad()
    def answer(self, feats, rows, idx, knock=None, layers=()):
        """Greedy answers of `rows` (prefill-only knockout of image tokens `knock` (M,144) bool in
        `layers`). Returns first-token logits (M,V), correct (M,), first ids, A_q (M,L,H,144)."""
        suf, last, ans = tdm.make_suffixes(self.prompts, rows, with_answer=False)
        M, S = suf.shape
        ar = torch.arange(M)
        km = None
        if knock is not None:
            km = torch.zeros(M, S + 1, 1 + dm.N_IMG, dtype=torch.bool)
            rowmask = torch.arange(S + 1)[None, :] <= last[:, None]  # prompt rows only
            km[:, :, 1:] = rowmask[:, :, None] & torch.as_tensor(knock)[:, None, :]
        probes = []
        hs = self.model.decode(feats, suf, idx, layers, None if km is None else km[:, :S], probes)
        logits = self.model.lm_head(hs[ar, last])
        pred = logits.argmax(-1)
        suf2 = torch.cat([suf, torch.full((M, 1), dm.EOS)], 1)
        suf2[ar, last + 1] = pred
        hs2 = self.model.decode(feats, suf2, idx, layers, km)
        second = self.model.lm_head(hs2[ar, last + 1]).argmax(-1)
        ok = ((pred == ans) & (second == dm.EOS)).numpy()
        A_q = torch.stack([p[ar, :, last, 1:1 + dm.N_IMG] for p in probes], 1).double().numpy()
        return logits.numpy(), ok, pred.numpy(), A_q


def image_batches(ds, batch):
    """(image indices, their rows, each row's index within the batch) per batch of images."""
    for s in range(0, len(ds), batch):
        ids = list(range(s, min(len(ds), s + batch)))
        rows, idx = [], []
        for j, i in enumerate(ids):
            rows += ds.rows[i]
            idx += [j] * len(ds.rows[i])
        yield ids, rows, idx


def collect(runner, ds, batch=48, refine=None):
    """Per row: dict with the row, image index, A_q, A_g, correct, pred; with refine=(heads, layer)
    also `ok_refined`, the answer after VGRefine."""
    out = []
    for ids, rows, idx in image_batches(ds, batch):
        feats = runner.features(ds.images[ids])
        A_g = runner.general_maps(feats)
        _, ok, pred, A_q = runner.answer(feats, rows, torch.tensor(idx))
        if refine is not None:
            knock = np.stack([triage_knock(A_q[k], A_g[idx[k]], refine[0]) for k in range(len(rows))])
            _, ok_ref, _, _ = runner.answer(feats, rows, torch.tensor(idx), knock, [refine[1]])
        for k, r in enumerate(rows):
            out.append({"row": r, "image": ids[idx[k]], "A_q": A_q[k], "A_g": A_g[idx[k]], "ok": bool(ok[k]),
                        "pred": int(pred[k])})
            if refine is not None:
                out[-1]["ok_refined"] = bool(ok_ref[k])
    return out


def distractor_tokens(ds, twin):
    """Image tokens a distractor covers: the same seed drawn with and without the distractor has the
    same anatomy and lesions (only the noise differs), so the distractor is where the image got much
    brighter (> 80 grey levels, >= 6 pixels of the 16x16 cell)."""
    out = []
    for i in range(len(ds)):
        diff = ds.images[i].astype(np.int32) - twin.images[i].astype(np.int32) > 80
        cells = diff.reshape(dm.GRID, dm.PATCH, dm.GRID, dm.PATCH).sum((1, 3)).reshape(-1)
        out.append([int(t) for t in np.nonzero(cells >= 6)[0]])
    return out


def shares(it, heads, tokens):
    """Share of the triage heads' attention (before knockout, head mean of A_q) on `tokens`."""
    p = np.mean([it["A_q"][l, h] for l, h in heads], 0)
    return float(p[tokens].sum() / p.sum()) if tokens else 0.0


def accuracy_with(runner, ds, knock_fn=None, layers=(), batch=48):
    """Accuracy per group; knock_fn(items, A_q, A_g) -> (M,144) bool chooses the knocked tokens
    (needs the question maps of the unmodified pass, so that pass runs first)."""
    by = {}
    for ids, rows, idx in image_batches(ds, batch):
        feats = runner.features(ds.images[ids])
        idx_t = torch.tensor(idx)
        if knock_fn is None:
            _, ok, _, _ = runner.answer(feats, rows, idx_t)
        else:
            A_g = runner.general_maps(feats)
            _, _, _, A_q = runner.answer(feats, rows, idx_t)
            knock = knock_fn(rows, A_q, A_g[idx])
            _, ok, _, _ = runner.answer(feats, rows, idx_t, knock, layers)
        for r, o in zip(rows, ok):
            for key in groups(r):
                b = by.setdefault(key, [0, 0])
                b[0] += int(o)
                b[1] += 1
    return {k: {"accuracy": v[0] / v[1], "n": v[1]} for k, v in sorted(by.items())}


def groups(r):
    g = ["all", r["label"], r["family"], "distractor" if r["distractor"] else "clean"]
    if r["label"] == "localization" and r["question"].startswith("Is there"):
        g.append("presence-" + r["answer"])
    g.append("q:" + r["question"])
    if r["distractor"]:
        g.append("d:" + r["distractor"])
    return g


# ----------------------------------------------------------------------------------------------
# VGRefine math (float64)
# ----------------------------------------------------------------------------------------------
def triage_map(A_q, A_g, heads):
    """S = mean_(l,h) A_q[l,h] / (mean_h A_g[l] + 1e-10)."""
    return np.mean([A_q[l, h] / (A_g[l].mean(0) + EPS) for l, h in heads], axis=0)


def triage_knock(A_q, A_g, heads, p=PERCENTILE):
    S = triage_map(A_q, A_g, heads)
    k = np.zeros(dm.N_IMG, bool)
    k[dm.np_percentile_rule(S, p)] = True
    return k


def head_ratios(items):
    """Mean head ratio (L,H) and layer ratio (L,) over rows with a region."""
    hr, lr = [], []
    for it in items:
        G = dm.region_tokens(it["row"]["original_bboxes"])
        A_q, A_g = it["A_q"], it["A_g"]
        hr.append([[dm.attention_ratio(A_q[l, h] / (A_g[l, h] + EPS), G) for h in range(dm.H)] for l in range(dm.L)])
        lr.append([dm.attention_ratio(A_q[l].mean(0) / (A_g[l].mean(0) + EPS), G) for l in range(dm.L)])
    return np.mean(hr, 0), np.mean(lr, 0)


# ----------------------------------------------------------------------------------------------
# Checks against transformers and fovea
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def transformers_check(model_dir: Path, model, runner, ds) -> dict:
    """Load the checkpoint into transformers' LlavaForConditionalGeneration (eager, f32) the way
    make_llava_fixtures.load_checkpoint does for the original layout; compare logits and the
    last-token attention over the image with the PyTorch model."""
    import make_llava_fixtures as mlf  # sets 1 thread + deterministic algorithms
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration
    torch.set_num_threads(2)
    ocfg = json.loads((model_dir / "config.json").read_text())
    vcfg = CLIPVisionConfig.from_pretrained(model_dir / "vit")
    tcfg = {k: ocfg[k] for k in mlf.text_config_dict("qwen2") if k in ocfg and k not in ("architectures", "model_type")}
    tcfg.update(model_type="qwen2", bos_token_id=ocfg["bos_token_id"], eos_token_id=ocfg["eos_token_id"],
                vocab_size=ocfg["vocab_size"])
    lcfg = LlavaConfig(vision_config=vcfg.to_dict(), text_config=tcfg, image_token_index=dm.IMAGE_TOKEN,
                       image_seq_length=dm.N_IMG, projector_hidden_act="gelu",
                       vision_feature_select_strategy="default", vision_feature_layer=ocfg["mm_vision_select_layer"],
                       tie_word_embeddings=False)
    hf = LlavaForConditionalGeneration._from_config(lcfg, attn_implementation="eager", dtype=torch.float32).eval()
    hf.load_state_dict(mlf.original_to_internal(load_file(str(model_dir / "model.safetensors")), None), strict=True)
    worst_logit, worst_att = 0.0, 0.0
    for i in range(4):
        r = ds.rows[i][0]
        ids = [dm.USER] + [dm.IMAGE_TOKEN] * dm.N_IMG + runner.prompts.after(r["question"])
        px = dm.pixel_values(ds.images[i:i + 1])
        out = hf(input_ids=torch.tensor([ids]), pixel_values=px, output_attentions=True, use_cache=False)
        hf_logits = out.logits[0, -1].numpy()
        hf_att = torch.stack([a[0, :, -1, 1:1 + dm.N_IMG] for a in out.attentions]).double().numpy()
        feats = runner.features(ds.images[i:i + 1])
        logits, _, _, A_q = runner.answer(feats, [r], torch.tensor([0]))
        worst_logit = max(worst_logit, float(np.abs(logits[0] - hf_logits).max() / np.abs(hf_logits).max()))
        worst_att = max(worst_att, float(np.abs(A_q[0] - hf_att).max()))
    return {"cases": 4, "max_rel_logit_diff": worst_logit, "max_abs_attention_diff": worst_att}


def fovea_inspect(model_dir: Path, image: Path, question: str, boxes, out_json: Path, out_png: Path | None):
    cmd = [str(dm.FOVEA), "inspect", "--model", str(model_dir), "--image", str(image), "--question", question,
           "--dump-logits", "--json", str(out_json)]
    if out_png is not None:
        cmd += ["--overlay", str(out_png)]
    for b in boxes:
        cmd += ["--region", ",".join(f"{v:.3f}" for v in b)]
    subprocess.run(cmd, check=True, capture_output=True)
    return json.loads(out_json.read_text())


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=dm.REPO / "assets" / "demo-model")
    ap.add_argument("--cases", type=Path, default=dm.REPO / "assets" / "cases")
    ap.add_argument("--work", type=Path, default=Path("/tmp/fovea-demo-train"))
    ap.add_argument("--heldout", type=int, default=1000)
    ap.add_argument("--select", type=int, default=400)
    ap.add_argument("--distract", type=int, default=400)
    ap.add_argument("--topk", type=int, default=0, help="force k triage heads (default: chosen on the selection split)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    t0 = time.time()
    log = lambda msg: print(f"[{time.time() - t0:7.1f}s] {msg}", flush=True)

    tok = dm.build_tokenizer()
    prompts = dm.Prompts(tok)
    model = dm.DemoLlava(len(dm.vocabulary()))
    model.load_state_dict(load_file(str(args.model / "model.safetensors")), strict=True)
    model.eval()
    runner = Runner(model, prompts)
    training = json.loads((args.model / "training.json").read_text())

    sets = {}
    for name, seed, n, dist in (("heldout", HELDOUT_SEED, args.heldout, 0.3), ("select", SELECT_SEED, args.select, 0.3),
                                ("distract", DISTRACT_SEED, args.distract, 1.0)):
        folder = args.work / (name if name == "heldout" else f"{name}-{n}")
        if name == "heldout":
            folder = args.work / "heldout"
        dm.run_phantom(folder, n, seed, distractors=dist)
        sets[name] = dm.Dataset(folder)
    held, sel, dis = sets["heldout"], sets["select"], sets["distract"]
    report = {"training": training}

    # ---- transformers parity
    report["transformers"] = transformers_check(args.model, model, runner, held)
    log(f"transformers parity: {report['transformers']}")

    # ---- (a) head ranking on the selection split
    items = [it for it in collect(runner, sel) if it["row"]["label"] == "localization" and it["row"]["original_bboxes"]]
    hr, lr = head_ratios(items)
    order = sorted(((float(hr[l, h]), l, h) for l in range(dm.L) for h in range(dm.H)), reverse=True)
    report["head_ratio"] = hr.tolist()
    report["layer_ratio"] = lr.tolist()
    report["head_ranking"] = [{"layer": l, "head": h, "ratio": r} for r, l, h in order]
    report["head_selection_rows"] = len(items)
    log(f"best head {order[0]}; layer ratios {np.round(lr, 2).tolist()}")

    # ---- (b) layer sweep: all image tokens knocked out in one layer (selection split)
    allk = lambda rows, A_q, A_g: np.ones((len(rows), dm.N_IMG), bool)
    sweep = {"none": accuracy_with(runner, sel)}
    for l in range(dm.L):
        sweep[str(l)] = accuracy_with(runner, sel, allk, [l])
    sweep["all"] = accuracy_with(runner, sel, allk, list(range(dm.L)))
    report["layer_sweep"] = sweep
    reading = min(range(dm.L), key=lambda l: sweep[str(l)]["all"]["accuracy"])
    report["masked_layer"] = reading
    log("sweep " + " ".join(f"{k}:{v['all']['accuracy']:.3f}" for k, v in sweep.items()) + f" -> layer {reading}")

    # ---- how many heads: on the selection split, the k whose triage best separates the tokens the answer
    # needs (knocking out the kept top 20% hurts) from the rest (knocking out the other 80% does not)
    ksel = []
    for k in range(2, 11):
        hk = [[l, h] for _, l, h in order[:k]]
        med = float(np.median([dm.attention_ratio(triage_map(it["A_q"], it["A_g"], hk),
                                                  dm.region_tokens(it["row"]["original_bboxes"])) for it in items]))
        a_top = accuracy_with(runner, sel, lambda rows, A_q, A_g: np.stack(
            [~triage_knock(A_q[j], A_g[j], hk) for j in range(len(rows))]), [reading])["all"]["accuracy"]
        a_vg = accuracy_with(runner, sel, lambda rows, A_q, A_g: np.stack(
            [triage_knock(A_q[j], A_g[j], hk) for j in range(len(rows))]), [reading])["all"]["accuracy"]
        ksel.append({"k": k, "heads": hk, "triage_ratio_median": med, "top20_knocked": a_top, "vgrefine": a_vg,
                     "separation": a_vg - a_top})
        log(f"k={k}: triage ratio median {med:.2f}, top-20% knocked {a_top:.3f}, VGRefine {a_vg:.3f}")
    best_k = max(ksel, key=lambda x: (round(x["separation"], 6), -x["k"]))
    if args.topk:
        best_k = next(x for x in ksel if x["k"] == args.topk)
    heads = best_k["heads"]
    report["k_selection"] = ksel
    report["heads"] = heads
    log(f"chosen k={best_k['k']}: {heads}")

    (args.model / "vgrefine.json").write_text(json.dumps({
        "heads": heads, "masked_layers": [reading], "percentile": PERCENTILE,
        "source": (f"tools/demo_model_report.py on phantom seeds {SELECT_SEED}+ ({len(items)} localization questions "
                   f"with a lesion): the top {len(heads)} heads by mean attention ratio relative to the general prompt "
                   f"(k in 2..10 chosen by VGRefine accuracy minus accuracy with the kept 20% knocked out); masked layer "
                   f"{reading} = the layer whose all-image-token knockout hurts accuracy most"),
    }, indent=2) + "\n")

    # ---- held-out accuracy, grounding on held-out
    held_items = collect(runner, held)
    acc = {}
    for it in held_items:
        for key in groups(it["row"]):
            b = acc.setdefault(key, [0, 0])
            b[0] += int(it["ok"])
            b[1] += 1
    report["heldout_accuracy"] = {k: {"accuracy": v[0] / v[1], "n": v[1]} for k, v in sorted(acc.items())}
    loc = [it for it in held_items if it["row"]["label"] == "localization" and it["row"]["original_bboxes"]]
    hr_h, lr_h = head_ratios(loc)
    report["heldout_head_ratio"] = hr_h.tolist()
    report["heldout_layer_ratio"] = lr_h.tolist()
    tri = [dm.attention_ratio(triage_map(it["A_q"], it["A_g"], heads), dm.region_tokens(it["row"]["original_bboxes"]))
           for it in loc]
    report["heldout_triage_ratio"] = {"mean": float(np.mean(tri)), "median": float(np.median(tri)), "n": len(tri)}
    log(f"held-out accuracy {report['heldout_accuracy']['all']}; best head on held-out "
        f"{hr_h.max():.2f}; triage ratio {report['heldout_triage_ratio']}")

    # ---- causal check in the reading layer (held-out)
    rng = np.random.default_rng(0)

    def top20(rows, A_q, A_g):
        return np.stack([~triage_knock(A_q[k], A_g[k], heads) for k in range(len(rows))])

    def rand80(rows, A_q, A_g):
        out = np.zeros((len(rows), dm.N_IMG), bool)
        for k in range(len(rows)):
            n = int(triage_knock(A_q[k], A_g[k], heads).sum())
            out[k, rng.choice(dm.N_IMG, n, replace=False)] = True
        return out

    def vgrefine(rows, A_q, A_g):
        return np.stack([triage_knock(A_q[k], A_g[k], heads) for k in range(len(rows))])

    causal = {"none": report["heldout_accuracy"]}
    for name, fn in (("triaged_top20", top20), ("random80", rand80), ("vgrefine_other80", vgrefine)):
        causal[name] = accuracy_with(runner, held, fn, [reading])
    causal["all_tokens"] = accuracy_with(runner, held, allk, [reading])
    report["causal"] = causal
    log("causal " + " ".join(f"{k}:{v['all']['accuracy']:.3f}" for k, v in causal.items()))

    # ---- distractor cases: with and without VGRefine
    report["distractors"] = {"without": accuracy_with(runner, dis), "vgrefine": accuracy_with(runner, dis, vgrefine, [reading])}
    log(f"distractors without {report['distractors']['without']['all']} with {report['distractors']['vgrefine']['all']}")

    # ---- failure modes, from the numbers
    fm = []
    weakest = sorted((v["accuracy"], k[2:], v["n"]) for k, v in report["heldout_accuracy"].items() if k.startswith("q:"))
    fm.append("Weakest questions on held-out: " + "; ".join(f"\"{q}\" {pct(a)} (n={n})" for a, q, n in weakest[:3]) + ".")
    dw, dv = report["distractors"]["without"], report["distractors"]["vgrefine"]
    fm.append("By distractor type (distractor set, model alone -> with VGRefine): " + "; ".join(
        f"{k[2:]} {pct(dw[k]['accuracy'])} -> {pct(dv[k]['accuracy'])}" for k in sorted(dw) if k.startswith("d:")) + ".")
    report["failure_modes"] = fm

    # ---- distractor attention: where the distractor is, how much attention it draws, what VGRefine flips
    twin_dir = args.work / f"distract-{args.distract}-twin"
    dm.run_phantom(twin_dir, args.distract, DISTRACT_SEED, distractors=0.0)
    dtok = distractor_tokens(dis, dm.Dataset(twin_dir))
    for i, les in enumerate(dis.lesions):  # only where the distractor is not over a lesion box
        near = set(dm.region_tokens([[cx - r, cy - r, cx + r, cy + r] for cx, cy, r, _, _ in les]))
        dtok[i] = [t for t in dtok[i] if t not in near]
    dis_items = collect(runner, dis, refine=(heads, reading))
    for it in dis_items:
        it["distractor_tokens"] = dtok[it["image"]]
        it["distractor_share"] = shares(it, heads, dtok[it["image"]])
        G = dm.region_tokens(it["row"]["original_bboxes"])
        it["lesion_share"] = shares(it, heads, G)
    with_les = [it for it in dis_items if it["row"]["original_bboxes"] and it["distractor_tokens"]]
    area = float(np.mean([len(it["distractor_tokens"]) / dm.N_IMG for it in with_les]))
    report["distractor_attention"] = {
        "rows_with_lesion": len(with_les),
        "mean_share_on_distractor": float(np.mean([it["distractor_share"] for it in with_les])),
        "mean_area_of_distractor": area,
        "mean_share_on_lesion": float(np.mean([it["lesion_share"] for it in with_les])),
        "rows_more_on_distractor_than_lesion": int(sum(it["distractor_share"] > it["lesion_share"] for it in with_les)),
        "vgrefine_fixed": int(sum((not it["ok"]) and it["ok_refined"] for it in dis_items)),
        "vgrefine_broke": int(sum(it["ok"] and not it["ok_refined"] for it in dis_items)),
        "wrong_before": int(sum(not it["ok"] for it in dis_items)),
        "rows": len(dis_items),
    }
    log(f"distractor attention {report['distractor_attention']}")

    # ---- triage-map ratio per question kind (held-out)
    kinds = {}
    for it, ratio in zip(loc, tri):
        q = it["row"]["question"]
        kinds.setdefault("Is there ...?" if q.startswith("Is there") else q.replace("nodule", "lesion"), []).append(ratio)
    report["heldout_triage_ratio_by_question"] = {k: {"median": float(np.median(v)), "n": len(v)} for k, v in kinds.items()}

    bq = report["heldout_triage_ratio_by_question"]
    worst_q = min(bq, key=lambda k: bq[k]["median"])
    fm.append(f"The triage map is not always on the lesion: its median attention ratio is "
              + ", ".join(f"{bq[k]['median']:.1f} for \"{k}\"" for k in sorted(bq))
              + f" (held-out). The weakest, \"{worst_q}\", is often answered from tokens away from the lesion.")
    da = report["distractor_attention"]
    fm.append(f"Distractors: the triage heads put {pct(da['mean_share_on_distractor'])} of their attention on distractor "
              f"tokens on average (the distractor covers {pct(da['mean_area_of_distractor'])} of the tokens); in "
              f"{da['rows_more_on_distractor_than_lesion']} of {da['rows_with_lesion']} questions with a lesion they "
              f"look more at the distractor than at the lesion. VGRefine fixed {da['vgrefine_fixed']} and broke "
              f"{da['vgrefine_broke']} of {da['rows']} answers on the distractor set ({da['wrong_before']} were wrong "
              "before).")

    # ---- demo cases
    report["cases"] = pick_and_write_cases(args, runner, held, held_items, dis, dis_items, heads, reading)

    # ---- fovea parity on every demo case
    report["fovea"] = fovea_parity(args, runner, heads, reading)
    log(f"fovea parity: {report['fovea']['summary']}")
    (args.model / "report.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    write_card(args, report)
    log("done")


def ratio_of(it, heads):
    G = dm.region_tokens(it["row"]["original_bboxes"])
    return dm.attention_ratio(triage_map(it["A_q"], it["A_g"], heads), G) if G else None


def pick_and_write_cases(args, runner, held, held_items, dis, dis_items, heads, reading):
    """A dozen cases: well-grounded ones of every question kind and family (held-out), and
    distractor cases where the distractor draws the triage heads' attention (distractor set)."""
    chosen = []
    used = set()

    def take(items, ds, pred, key, n, why, src):
        cands = [it for it in items if pred(it) and (src, it["image"]) not in used]
        cands.sort(key=key)
        for it in cands[:n]:
            used.add((src, it["image"]))
            chosen.append((it, ds, why, src))

    def inside(it):  # share inside the lesion boxes of the triage map and of the attention, then the larger box
        G = dm.region_tokens(it["row"]["original_bboxes"])
        S = triage_map(it["A_q"], it["A_g"], heads)
        return (-round(min(float(S[G].sum() / S.sum()), shares(it, heads, G)), 2), -len(G))

    good = lambda it, fam, test: (it["row"]["family"] == fam and test(it["row"]["question"])
                                  and it["row"]["original_bboxes"] and it["ok"] and not it["row"]["distractor"])
    for fam in ("chest-xray", "head-mr"):
        for test, why in ((lambda q: q.startswith("Is there"), "good grounding: presence"),
                          (lambda q: q.startswith("Which side"), "good grounding: which side"),
                          (lambda q: "brighter" in q, "good grounding: attribute (brightness)"),
                          (lambda q: "large" in q, "good grounding: attribute (size)")):
            take(held_items, held, lambda it: good(it, fam, test), inside, 1, why, "heldout")
    pulled = lambda it: it["row"]["original_bboxes"] and it["distractor_tokens"]
    take(dis_items, dis, lambda it: pulled(it) and not it["ok"] and it["ok_refined"],
         lambda it: -it["distractor_share"], 1, "distractor draws attention, wrong answer; VGRefine fixes it", "distract")
    take(dis_items, dis, lambda it: pulled(it) and not it["ok"], lambda it: -it["distractor_share"], 1,
         "distractor draws attention, wrong answer", "distract")
    need = 12 - len(chosen) - 1
    take(dis_items, dis, lambda it: pulled(it) and it["ok"], lambda it: -it["distractor_share"], need,
         "distractor draws attention, answer still right", "distract")
    take(dis_items, dis, lambda it: pulled(it) and it["ok"] and it["distractor_share"] < 0.01, inside, 1,
         "distractor ignored: good grounding", "distract")

    out = args.cases
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    lines, meta = [], []
    for k, (it, ds, why, src) in enumerate(chosen):
        r = dict(it["row"])
        fam = "chest" if r["family"] == "chest-xray" else "head"
        dicom = k == 0  # the first one as DICOM (Secondary Capture), written by fovea itself
        name = f"{k + 1:02d}-{fam}-{r['seed']}.{'dcm' if dicom else 'png'}"
        if dicom:
            tmp = args.work / f"dicom-{r['seed']}"
            dm.run_phantom(tmp, 1, r["seed"], distractors=0.3 if src == "heldout" else 1.0, dicom=True)
            shutil.copy(tmp / "case-00000.dcm", out / name)
        else:
            shutil.copy(ds.folder / r["image"], out / name)
        (out / name).chmod(0o644)
        row = {"image": name, "question": r["question"], "answer": r["answer"], "modality": r["modality"],
               "label": r["label"], "original_bboxes": r["original_bboxes"], "family": r["family"],
               "seed": r["seed"], "distractor": r["distractor"]}
        lines.append(json.dumps(row))
        meta.append({**row, "why": why, "pytorch_answer_ok": it["ok"], "pytorch_refined_ok": it.get("ok_refined"),
                     "triage_ratio": ratio_of(it, heads), "distractor_share": it.get("distractor_share"),
                     "lesion_share": shares(it, heads, dm.region_tokens(r["original_bboxes"]))})
    (out / "cases.jsonl").write_text("\n".join(lines) + "\n")
    return meta


def fovea_parity(args, runner, heads, reading):
    rows = [json.loads(line) for line in (args.cases / "cases.jsonl").read_text().splitlines()]
    out_dir = args.work / "fovea-check"
    out_dir.mkdir(exist_ok=True)
    results = []
    for r in rows:
        img = args.cases / r["image"]
        stem = Path(r["image"]).stem
        rec = fovea_inspect(args.model, img, r["question"], r["original_bboxes"], out_dir / f"{stem}.json",
                            out_dir / f"{stem}.png")
        grey = phantom_grey(args, r)  # for DICOM: the PNG of the same seed (same pixels)
        feats = runner.features(grey[None])
        logits, ok, pred, A_q = runner.answer(feats, [r], torch.tensor([0]))
        A_g = runner.general_maps(feats)[0]
        knock = triage_knock(A_q[0], A_g, heads)
        _, ok_ref, _, _ = runner.answer(feats, [r], torch.tensor([0]), knock[None], [reading])
        fl = np.array(rec["first_token_logits"], np.float64)
        rel = float(np.abs(fl - logits[0]).max() / np.abs(logits[0]).max())
        fovea_knock = sorted(rec["knockout"]["tokens"])
        ours = [int(i) for i in np.nonzero(knock)[0]]
        results.append({
            "image": r["image"], "question": r["question"], "answer": r["answer"],
            "fovea_answer": rec["answer"], "fovea_refined": rec["refined"]["answer"],
            "pytorch_ok": bool(ok[0]), "pytorch_refined_ok": bool(ok_ref[0]),
            "max_rel_logit_diff": rel, "knocked_out_equal": fovea_knock == ours,
            "knocked_out_symmetric_difference": len(set(fovea_knock) ^ set(ours)),
            "fovea_triage_ratio": rec.get("metrics", {}).get("triage_map", {}).get("ratio"),
            "overlay": str(out_dir / f"{stem}.png"),
        })
    summary = {
        "cases": len(results),
        "fovea_answers_correct": sum(x["fovea_answer"] == x["answer"] for x in results),
        "fovea_refined_correct": sum(x["fovea_refined"] == x["answer"] for x in results),
        "max_rel_logit_diff": max(x["max_rel_logit_diff"] for x in results),
        "knocked_out_equal": sum(x["knocked_out_equal"] for x in results),
    }
    return {"summary": summary, "cases": results}


def phantom_grey(args, r):
    """The case's pixels: the PNG beside cases.jsonl, or for DICOM the PNG of the same seed."""
    img = args.cases / r["image"]
    if img.suffix == ".png":
        return dm.load_grey(img)
    tmp = args.work / f"png-{r['seed']}-{r['distractor'] is not None}"
    dm.run_phantom(tmp, 1, r["seed"], distractors=1.0 if r["distractor"] else 0.3)
    return dm.load_grey(tmp / "case-00000.png")


# ----------------------------------------------------------------------------------------------
# Model card
# ----------------------------------------------------------------------------------------------
def pct(x):
    return f"{100 * x:.1f}%"


def write_card(args, rep):
    tr = rep["training"]
    acc = rep["heldout_accuracy"]
    sweep, causal, dis = rep["layer_sweep"], rep["causal"], rep["distractors"]
    L_, H_ = dm.L, dm.H
    best = rep["head_ranking"][0]
    size = (args.model / "model.safetensors").stat().st_size
    lines = []
    w = lines.append
    w("# fovea demo model: a small LLaVA-Qwen2 that reads phantom radiographs\n")
    w("A from-scratch, 1.5 M-parameter LLaVA in the original HuatuoGPT-Vision layout (`model_type: llava_qwen2`), "
      "trained in about "
      f"{tr['total_wall_s'] / 60:.0f} minutes on 2 CPU cores by `tools/train_demo_model.py`, so that fovea works out of the "
      "box without downloading a 7B model. It answers questions about fovea's procedural phantoms "
      "(`fovea phantom`) with one word. It is a teaching instrument for attention and VGRefine, **not a medical "
      "model**: it has only ever seen synthetic images.\n")
    w("## Architecture\n")
    w("| part | shape |\n| --- | --- |")
    w("| vision tower | CLIP ViT, 192 px, patch 16 (12x12 = 144 image tokens), hidden 128, 4 layers, 4 heads, MLP 256, "
      "quick_gelu, LayerNorm eps 1e-5; LLaVA reads hidden state -2 (output of layer 2), CLS dropped |")
    w("| projector | `mlp2x_gelu`: Linear 128->128, exact (erf) GELU, Linear 128->128 |")
    w("| decoder | Qwen2: hidden 128, 4 layers, 4 heads (head dim 32), 2 KV heads, MLP 384 (SwiGLU), q/k/v bias, "
      "RoPE theta 10000, RMSNorm eps 1e-6, untied lm_head |")
    w(f"| vocabulary | {len(dm.vocabulary())} words (WordLevel, lowercase, whitespace pre-tokenizer): the phantom questions, "
      "answers, the instruction and the general prompt; specials `<unk>` `<|endoftext|>` (eos) `<image>` `<|user|>` "
      "`<|assistant|>` |")
    w(f"| weights | `model.safetensors`, float32, {size / 1e6:.1f} MB; keys `model.embed_tokens`, `model.layers.*`, "
      "`model.norm`, `lm_head`, `model.mm_projector.{0,2}`, `model.vision_tower.vision_tower.vision_model.*`; the CLIP "
      "config is `vit/config.json` (`mm_vision_tower: \"vit\"`) |")
    w("\nPrompt (fovea's HuatuoGPT format): `<|user|>\\n<image>\\n{question} Answer the question using a single word "
      "or phrase.\\n<|assistant|>\\n`; the answer is one of yes / no / left / right followed by `<|endoftext|>`. "
      "Images: greyscale replicated to RGB, padded to a square with the CLIP mean colour, resized to 192 "
      "(both no-ops for the 192 px phantoms), CLIP mean/std normalisation.\n")
    w(f"Checked against transformers: the checkpoint loaded into `LlavaForConditionalGeneration` (eager, float32) "
      f"gives the training code's logits within {rep['transformers']['max_rel_logit_diff']:.1e} (relative) and its "
      f"attention within {rep['transformers']['max_abs_attention_diff']:.1e}; fovea's own first-token logits agree "
      f"within {rep['fovea']['summary']['max_rel_logit_diff']:.1e} (relative, every demo case).\n")
    w("## Training\n")
    a = tr["args"]
    w(f"- Data: `fovea phantom` cases (chest radiographs with lung nodules, head MR slices with a mass; 0-2 lesions; "
      f"distractors with probability 0.3). Train seeds: " + ", ".join(f"{k}: {v[0]}..{v[1]}" for k, v in tr["train_seeds"].items())
      + f"; validation {tr['validation_seeds'][0]}..{tr['validation_seeds'][1]}; held-out evaluation "
      f"{HELDOUT_SEED}..{HELDOUT_SEED + args.heldout - 1}; head/layer selection {SELECT_SEED}..{SELECT_SEED + args.select - 1}; "
      f"distractor set {DISTRACT_SEED}..{DISTRACT_SEED + args.distract - 1} (`--distractors 1`). All ranges disjoint.")
    w(f"- Phase 1, vision pretraining ({tr['pretrain_steps']} steps x {a['pre_batch']} images): the vision tower alone, "
      "with a throw-away linear probe on each image token of the selected layer, predicts *lesion here* (the lesion "
      "blob's value at the cell), *bright* and *large*.")
    w(f"- Phase 2 ({tr['steps']} steps x {a['batch']} images, every question of each image): cross-entropy on the answer "
      f"word and on `<|endoftext|>` only, plus the phase-1 token loss at weight {a['aux_weight']}. AdamW, lr {a['lr']}, "
      "warm-up then cosine. Easy-to-hard curriculum over difficulty bins 0, 0.25, 0.5, 0.75, 1 (`--difficulty`: large, "
      "bright, clean lesions first); the hardest bin is reached halfway and dominates the end.")
    w(f"- Wall time: {tr['total_wall_s'] / 60:.1f} min in total ({tr['train_wall_s'] / 60:.1f} min to the end of training, "
      f"of which {tr.get('data_wall_s', 0):.0f} s generating and loading the phantoms; the rest is the held-out "
      f"evaluation), 2 threads on a 2-core machine, seed {tr['seed']}, torch {tr['torch']}. Rerun: see tools/README.md.\n")
    w("## Held-out accuracy\n")
    w(f"Whole greedy answer (word, then `<|endoftext|>`), {args.heldout} held-out images at full difficulty:\n")
    w("| group | accuracy | questions |\n| --- | --- | --- |")
    for k in ("all", "localization", "attribute", "chest-xray", "head-mr", "clean", "distractor", "presence-yes", "presence-no"):
        if k in acc:
            w(f"| {k} | {pct(acc[k]['accuracy'])} | {acc[k]['n']} |")
    w("")
    w("## Where it looks: heads and layers\n")
    w(f"Measured on {rep['head_selection_rows']} localization questions with a lesion (selection split): attention of the "
      "last prompt token over the 144 image tokens, relative to the general prompt's attention of the same head, scored "
      "with the attention ratio against the lesion boxes (1 = uniform; the most a 3x3-token box allows is 16).\n")
    hr = np.array(rep["head_ratio"])
    w("Mean attention ratio per head (rows = layers, columns = heads):\n")
    w("| layer | " + " | ".join(f"head {h}" for h in range(H_)) + " | layer map (head-mean) |")
    w("| --- |" + " --- |" * (H_ + 1))
    for l in range(L_):
        w(f"| {l} | " + " | ".join(f"{hr[l, h]:.2f}" for h in range(H_)) + f" | {rep['layer_ratio'][l]:.2f} |")
    w(f"\nBest head: layer {best['layer']} head {best['head']}, mean ratio {best['ratio']:.2f} "
      f"(held-out: {np.array(rep['heldout_head_ratio']).max():.2f}). Triage heads (top {len(rep['heads'])}): "
      f"`{json.dumps(rep['heads'])}`. Their triage map scores a mean ratio of {rep['heldout_triage_ratio']['mean']:.2f} "
      f"(median {rep['heldout_triage_ratio']['median']:.2f}) on held-out; median per question kind: "
      + ", ".join(f"{k} {v['median']:.1f} (n={v['n']})" for k, v in sorted(rep["heldout_triage_ratio_by_question"].items()))
      + ".\n")
    w("How many triage heads (selection split, knockout in the reading layer; the top-k heads of the ranking above; "
      "k is the one with the largest gap between the last two columns):\n")
    w("| k | triage-map ratio (median) | accuracy, kept top 20% knocked out | accuracy, VGRefine (other 80% knocked out) |")
    w("| --- | --- | --- | --- |")
    for x in rep["k_selection"]:
        mark = " **(chosen)**" if x["heads"] == rep["heads"] else ""
        w(f"| {x['k']}{mark} | {x['triage_ratio_median']:.2f} | {pct(x['top20_knocked'])} | {pct(x['vgrefine'])} |")
    w("")
    w("Layer sweep (selection split): every image token knocked out (prefill, all post-image queries) in one layer:\n")
    w("| knocked-out layer | accuracy | localization | attribute |\n| --- | --- | --- | --- |")
    for k, v in sweep.items():
        label = {"none": "none", "all": "all layers"}.get(k, k)
        w(f"| {label} | {pct(v['all']['accuracy'])} | {pct(v['localization']['accuracy'])} | {pct(v['attribute']['accuracy'])} |")
    w(f"\nThe reading layer is **{rep['masked_layer']}**: it is the masked layer in `vgrefine.json` "
      f"(`percentile` {PERCENTILE:.0f}).\n")
    w("## Causal check (held-out, knockout in the reading layer)\n")
    w("| knocked out in layer %d | accuracy | localization | attribute |\n| --- | --- | --- | --- |" % rep["masked_layer"])
    names = {"none": "nothing", "triaged_top20": "the triaged top 20% (the tokens VGRefine keeps)",
             "random80": "a random 80%", "vgrefine_other80": "the other 80% (VGRefine's default knockout)",
             "all_tokens": "all 144 image tokens"}
    for k in ("none", "triaged_top20", "random80", "vgrefine_other80", "all_tokens"):
        v = causal[k]
        w(f"| {names[k]} | {pct(v['all']['accuracy'])} | {pct(v['localization']['accuracy'])} | {pct(v['attribute']['accuracy'])} |")
    w(f"\nChance is 50% for every question kind (yes/no, left/right). Without any image token in layer 1 the model "
      f"answers \"no\" to presence and attribute questions: {pct(causal['all_tokens']['all']['accuracy'])} overall, the "
      "floor the first row is compared with.\n")
    w(f"## Distractors ({args.distract} images, every one with a marker letter, wire or border label)\n")
    w("| | accuracy | localization | attribute |\n| --- | --- | --- | --- |")
    for k, label in (("without", "model alone"), ("vgrefine", "with VGRefine (defaults)")):
        v = dis[k]
        w(f"| {label} | {pct(v['all']['accuracy'])} | {pct(v['localization']['accuracy'])} | {pct(v['attribute']['accuracy'])} |")
    da = rep["distractor_attention"]
    w(f"\nAttention on the distractor ({da['rows_with_lesion']} questions with a lesion; distractor tokens = where the "
      "same seed drawn without its distractor is more than 80 grey levels darker, outside every lesion box): the "
      "triage heads put "
      f"{pct(da['mean_share_on_distractor'])} of their attention on the distractor, which covers "
      f"{pct(da['mean_area_of_distractor'])} of the image tokens, and {pct(da['mean_share_on_lesion'])} on the lesion "
      f"boxes. VGRefine fixed {da['vgrefine_fixed']} answers and broke {da['vgrefine_broke']} (of {da['rows']}; "
      f"{da['wrong_before']} wrong before).\n")
    w("## Demo cases (`assets/cases/`)\n")
    w("| file | question | answer | fovea | after VGRefine | shows |\n| --- | --- | --- | --- | --- | --- |")
    for c, f in zip(rep["cases"], rep["fovea"]["cases"]):
        w(f"| {c['image']} | {c['question']} | {c['answer']} | {f['fovea_answer']} | {f['fovea_refined']} | {c['why']} |")
    w("")
    w("## Known failure modes\n")
    for line in rep.get("failure_modes", []):
        w(f"- {line}")
    w("- Synthetic only: two phantom families at 192 px, fixed geometry, one-word answers. Any other image or "
      "question wording is out of distribution (unknown words become `<unk>`).")
    w("- The general prompt was never trained; its attention is simply what the network does with those tokens, "
      "which is all relative attention needs.")
    w("")
    w("## Files\n")
    w("`config.json`, `generation_config.json` (eos = `<|endoftext|>`), `model.safetensors`, `tokenizer.json`, "
      "`tokenizer_config.json`, `preprocessor_config.json`, `vit/config.json`, `vgrefine.json` (triage heads, masked "
      "layer, percentile), `training.json` (seeds, steps, wall time), `report.json` (every number on this page). "
      "Numbers come from `tools/demo_model_report.py` (PyTorch, same formulas as fovea) and are re-checked by fovea's "
      "Rust tests. Demo cases: `assets/cases/`.")
    (args.model / "README.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Measure the distracted demo model against its targets, choose its VGRefine settings on a
selection split, pick the teaching cases, and write its model card.

Reads assets/demo-model-distracted/ (tools/train_distracted_model.py) and the grounded
assets/demo-model/ (for comparison), writes:
  assets/demo-model-distracted/vgrefine.json   triage heads + masked layer (selection split)
  assets/demo-model-distracted/report.json     every number of the card
  assets/demo-model-distracted/README.md       the model card
  assets/cases/13-*.png ... and their rows appended to assets/cases/cases.jsonl (with "model" and
  "kind", then "view" and "caption" measured by fovea: tools/teaching_views.py); the first model's
  rows get "model": "demo-model" and keep their place.

Splits (disjoint from every training and validation range):
  held-out (clean)  9_000_000.. 1000 images, `fovea phantom` defaults (distractors 0.3)
  conflict test     9_300_000.. 800 images, `--conflict 1`: only the images that got a conflicting
                    marker (one-lesion cases, about 55%) are kept, all of their questions
  selection         9_400_000.. 400 images, `--conflict 0.5`: heads, k and masked layer chosen here

The formulas are those of tools/demo_model_report.py (fovea's): relative head ratio for the head
ranking, triage map = mean of the top-k heads' A_q / mean_h A_g, VGRefine = knock out the tokens
under the 80th percentile in the masked layer (prefill only). Among the 8 heads of highest ratio,
heads are added greedily while VGRefine's accuracy on the selection split rises (at most 4). Attention on the distractor = attention ratio
sum_G p / (sum p |G| / N) of the head-mean attention of the answer-producing token in each layer,
G = the conflict marker's box on the 12x12 grid minus the lesion's tokens.

Usage:  nice -n 5 /tmp/torchenv/bin/python tools/distracted_model_report.py
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_model as dm  # noqa: E402
import demo_model_report as rep  # noqa: E402
import train_distracted_model as tdd  # noqa: E402
import teaching_views  # noqa: E402

HELDOUT_SEED, CONFLICT_SEED, SELECT_SEED = 9_000_000, 9_300_000, 9_400_000
MODEL_NAME = "demo-model-distracted"
KINDS = {
    "fixed": "misled by marker: VGRefine fixes it",
    "both": "marker ignored: right before and after",
    "broken": "VGRefine breaks a right answer",
}


def load(path: Path) -> rep.Runner:
    model = dm.DemoLlava(len(dm.vocabulary()))
    model.load_state_dict(load_file(str(path / "model.safetensors")), strict=True)
    model.eval()
    return rep.Runner(model, dm.Prompts(dm.build_tokenizer()))


def settings_of(path: Path):
    v = json.loads((path / "vgrefine.json").read_text())
    return [tuple(h) for h in v["heads"]], v["masked_layers"][0]


def marker_tokens(row) -> list[int]:
    """Tokens of the conflict marker (the last distractor box), minus the lesion's tokens."""
    boxes = row.get("distractor_bboxes") or []
    if not row.get("conflict") or not boxes:
        return []
    lesion = set(dm.region_tokens(row["original_bboxes"])) if row["original_bboxes"] else set()
    return [t for t in dm.region_tokens([boxes[-1]]) if t not in lesion]


def run_set(runner, ds, heads, layer, batch=48):
    """Per row: ok before/after VGRefine, first ids, A_q before, A_q after (the refined pass)."""
    out = []
    for ids, rows, idx in rep.image_batches(ds, batch):
        feats = runner.features(ds.images[ids])
        A_g = runner.general_maps(feats)
        it = torch.tensor(idx)
        logits, ok, pred, A_q = runner.answer(feats, rows, it)
        knock = np.stack([rep.triage_knock(A_q[k], A_g[idx[k]], heads) for k in range(len(rows))])
        logits_r, ok_r, pred_r, A_r = runner.answer(feats, rows, it, knock, [layer])
        for k, r in enumerate(rows):
            out.append({"row": r, "image": ids[idx[k]], "ok": bool(ok[k]), "ok_refined": bool(ok_r[k]),
                        "pred": int(pred[k]), "pred_refined": int(pred_r[k]), "A_q": A_q[k], "A_g": A_g[idx[k]],
                        "A_r": A_r[k], "knock": knock[k]})
    return out


def accuracy(items, key="ok", pred=lambda it: True):
    sel = [it for it in items if pred(it)]
    return {"accuracy": float(np.mean([it[key] for it in sel])) if sel else float("nan"), "n": len(sel)}


def by_group(items):
    out = {}
    for name, p in (("all", lambda it: True), ("localization", lambda it: it["row"]["label"] == "localization"),
                    ("attribute", lambda it: it["row"]["label"] == "attribute"),
                    ("chest-xray", lambda it: it["row"]["family"] == "chest-xray"),
                    ("head-mr", lambda it: it["row"]["family"] == "head-mr"),
                    ("Is there ...?", lambda it: it["row"]["question"].startswith("Is there")),
                    ("Which side ...?", lambda it: it["row"]["question"].startswith("Which side")),
                    ("Is it brighter ...?", lambda it: "brighter" in it["row"]["question"]),
                    ("Is it large?", lambda it: "large" in it["row"]["question"])):
        out[name] = {"without": accuracy(items, "ok", p), "vgrefine": accuracy(items, "ok_refined", p)}
    return out


def layer_ratios(A, tokens):
    """Attention ratio of the head-mean attention on `tokens`, per layer."""
    return [dm.attention_ratio(A[l].mean(0), tokens) for l in range(dm.L)]


def distractor_attention(items):
    rows = [it for it in items if it["marker"]]
    fail = [it for it in rows if not it["ok"]]
    succ = [it for it in rows if it["ok"]]
    mean = lambda xs, key: np.mean([layer_ratios(it[key], it["marker"]) for it in xs], 0).tolist() if xs else None
    lesion = [it for it in rows if it["row"]["original_bboxes"]]
    return {
        "rows": len(rows), "failures": len(fail), "successes": len(succ),
        "marker_tokens_mean": float(np.mean([len(it["marker"]) for it in rows])),
        "ratio_failures_before": mean(fail, "A_q"),
        "ratio_successes_before": mean(succ, "A_q"),
        "ratio_failures_after": mean(fail, "A_r"),
        "ratio_all_before": mean(rows, "A_q"),
        "ratio_all_after": mean(rows, "A_r"),
        "lesion_ratio_before": np.mean([layer_ratios(it["A_q"], dm.region_tokens(it["row"]["original_bboxes"]))
                                        for it in lesion], 0).tolist(),
        "lesion_ratio_after": np.mean([layer_ratios(it["A_r"], dm.region_tokens(it["row"]["original_bboxes"]))
                                       for it in lesion], 0).tolist(),
        "marker_knocked_out_share": float(np.mean([it["knock"][it["marker"]].mean() for it in rows])),
    }


def choose(runner, sel, log):
    """Head ranking, masked layer and k on the selection split (as demo_model_report.py, k by VGRefine
    accuracy on this split, which has conflicts in half of its one-lesion images)."""
    items = [it for it in rep.collect(runner, sel) if it["row"]["label"] == "localization" and it["row"]["original_bboxes"]]
    hr, lr = rep.head_ratios(items)
    order = sorted(((float(hr[l, h]), l, h) for l in range(dm.L) for h in range(dm.H)), reverse=True)
    allk = lambda rows, A_q, A_g: np.ones((len(rows), dm.N_IMG), bool)
    sweep = {"none": rep.accuracy_with(runner, sel)["all"]["accuracy"]}
    for l in range(dm.L):
        sweep[str(l)] = rep.accuracy_with(runner, sel, allk, [l])["all"]["accuracy"]
    layer = min(range(dm.L), key=lambda l: sweep[str(l)])
    log(f"selection: best head {order[0]}, layer sweep {sweep} -> masked layer {layer}")
    # Greedy forward selection among the 8 most visually sensitive heads: add the head that most
    # raises VGRefine's accuracy on this split, while it rises (at most 4 heads).
    vg = lambda hk: rep.accuracy_with(runner, sel, lambda rows, A_q, A_g: np.stack(
        [rep.triage_knock(A_q[j], A_g[j], hk) for j in range(len(rows))]), [layer])["all"]["accuracy"]
    pool = [[l, h] for _, l, h in order[:8]]
    chosen, best_acc, ksel = [], -1.0, []
    while len(chosen) < 4:
        tried = [(vg(chosen + [c]), c) for c in pool if c not in chosen]
        acc, c = max(tried, key=lambda x: (round(x[0], 6), -pool.index(x[1])))
        ksel.append({"heads": chosen + [c], "vgrefine": acc,
                     "tried": [{"head": t[1], "vgrefine": t[0]} for t in tried]})
        log(f"greedy: + {c} -> VGRefine {acc:.3f} on the selection split")
        if acc <= best_acc:
            break
        chosen, best_acc = chosen + [c], acc
    best = {"heads": chosen}
    return {"head_ratio": hr.tolist(), "layer_ratio": lr.tolist(), "rows": len(items),
            "head_ranking": [{"layer": l, "head": h, "ratio": r} for r, l, h in order],
            "layer_sweep": sweep, "masked_layer": layer, "k_selection": ksel, "heads": best["heads"]}


def pick_cases(items, n_fixed=5, n_both=2, n_broken=1):
    """Teaching cases from the conflict test set, one question per image, both families and several
    question kinds: the clearest flips (most attention on the marker before, least after)."""
    chosen, used = [], set()

    def score(it):
        return float(np.mean(layer_ratios(it["A_q"], it["marker"]))) - float(np.mean(layer_ratios(it["A_r"], it["marker"])))

    def take(pred, n, kind, spread=True):
        cands = sorted((it for it in items if pred(it) and it["image"] not in used and it["marker"]
                        and it["row"]["original_bboxes"]), key=score, reverse=True)
        seen_q = set()
        for it in cands:
            if len([c for c in chosen if c[1] == kind]) >= n:
                break
            q = (it["row"]["family"], it["row"]["question"].split()[0] + it["row"]["question"].split()[1])
            if spread and q in seen_q:
                continue
            seen_q.add(q)
            used.add(it["image"])
            chosen.append((it, kind))

    take(lambda it: not it["ok"] and it["ok_refined"], n_fixed, "fixed")
    take(lambda it: it["ok"] and it["ok_refined"], n_both, "both")
    take(lambda it: it["ok"] and not it["ok_refined"], n_broken, "broken", spread=False)
    return chosen


def write_cases(args, chosen, ds):
    cases_file = args.cases / "cases.jsonl"
    keep = []
    for line in cases_file.read_text().splitlines():
        r = json.loads(line)
        if r.get("model") == MODEL_NAME:
            (args.cases / r["image"]).unlink(missing_ok=True)
            continue
        r.setdefault("model", "demo-model")
        keep.append(r)
    start = len(keep) + 1
    meta = []
    for k, (it, kind) in enumerate(chosen):
        r = it["row"]
        fam = "chest" if r["family"] == "chest-xray" else "head"
        name = f"{start + k:02d}-{fam}-{r['seed']}-conflict.png"
        shutil.copy(ds.folder / r["image"], args.cases / name)
        (args.cases / name).chmod(0o644)
        row = {"image": name, "question": r["question"], "answer": r["answer"], "modality": r["modality"],
               "label": r["label"], "original_bboxes": r["original_bboxes"], "family": r["family"],
               "seed": r["seed"], "distractor": r["distractor"], "distractor_bboxes": r["distractor_bboxes"],
               "conflict": True, "model": MODEL_NAME, "kind": KINDS[kind]}
        keep.append(row)
        meta.append({**row, "ok_before": it["ok"], "ok_after": it["ok_refined"],
                     "marker_ratio_before": layer_ratios(it["A_q"], it["marker"]),
                     "marker_ratio_after": layer_ratios(it["A_r"], it["marker"])})
    tmp = cases_file.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
    tmp.replace(cases_file)
    return meta


def fovea_check(args, meta):
    """fovea itself on every teaching case: its answer before and after VGRefine."""
    out_dir = args.work / "fovea-distracted-check"
    out_dir.mkdir(exist_ok=True)
    res = []
    for m in meta:
        stem = Path(m["image"]).stem
        rec = rep.fovea_inspect(args.model, args.cases / m["image"], m["question"], m["original_bboxes"],
                                out_dir / f"{stem}.json", None)
        res.append({"image": m["image"], "question": m["question"], "answer": m["answer"], "fovea_answer": rec["answer"],
                    "fovea_refined": rec["refined"]["answer"], "kind": m["kind"],
                    "as_labelled": (rec["answer"].split()[0].lower() == m["answer"]) == m["ok_before"]
                    and (rec["refined"]["answer"].split()[0].lower() == m["answer"]) == m["ok_after"]})
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=dm.REPO / "assets" / MODEL_NAME)
    ap.add_argument("--grounded", type=Path, default=dm.REPO / "assets" / "demo-model")
    ap.add_argument("--cases", type=Path, default=dm.REPO / "assets" / "cases")
    ap.add_argument("--work", type=Path, default=Path("/tmp/fovea-demo-train"))
    ap.add_argument("--heldout", type=int, default=1000)
    ap.add_argument("--conflict", type=int, default=800)
    ap.add_argument("--select", type=int, default=400)
    ap.add_argument("--no-cases", action="store_true", help="measure only: leave vgrefine.json and the cases alone")
    args = ap.parse_args()
    torch.set_num_threads(2)
    t0 = time.time()
    log = lambda msg: print(f"[{time.time() - t0:7.1f}s] {msg}", flush=True)

    w = args.work
    dm.run_phantom(w / "heldout", args.heldout, HELDOUT_SEED)
    tdd.run_phantom(w / f"conflict-{args.conflict}", args.conflict, CONFLICT_SEED, "--conflict", "1")
    tdd.run_phantom(w / f"select-conflict-{args.select}", args.select, SELECT_SEED, "--conflict", "0.5")
    held = dm.Dataset(w / "heldout")
    con = tdd.conflict_rows(dm.Dataset(w / f"conflict-{args.conflict}"))
    sel = dm.Dataset(w / f"select-conflict-{args.select}")
    log(f"data: held-out {len(held)}, conflict {len(con)} images, selection {len(sel)}")
    report_conflict_images = len(con)

    runner = load(args.model)
    report = {"training": json.loads((args.model / "training.json").read_text()),
              "conflict_images": report_conflict_images}
    report["transformers"] = rep.transformers_check(args.model, runner.model, runner, held)
    log(f"transformers parity {report['transformers']}")
    report["selection"] = choose(runner, sel, log)
    heads, layer = [tuple(h) for h in report["selection"]["heads"]], report["selection"]["masked_layer"]
    if not args.no_cases:
        (args.model / "vgrefine.json").write_text(json.dumps({
            "heads": [list(h) for h in heads], "masked_layers": [layer], "percentile": rep.PERCENTILE,
            "source": (f"tools/distracted_model_report.py on phantom seeds {SELECT_SEED}+ ({args.select} images, "
                       f"--conflict 0.5): among the 8 heads of highest mean attention ratio relative to the general "
                       f"prompt, heads added greedily while VGRefine's accuracy rises ({len(heads)} kept); masked layer "
                       f"{layer} = the layer whose all-image-token knockout hurts accuracy most"),
        }, indent=2) + "\n")

    grounded = load(args.grounded)
    g_heads, g_layer = settings_of(args.grounded)
    for name, r, h, l in (("distracted", runner, heads, layer), ("grounded", grounded, g_heads, g_layer)):
        hi = run_set(r, held, h, l)
        ci = run_set(r, con, h, l)
        report[f"{name}_clean"] = by_group(hi)
        report[f"{name}_conflict"] = by_group(ci)
        log(f"{name}: clean {report[f'{name}_clean']['all']}; conflict {report[f'{name}_conflict']['all']}")
        if name == "distracted":
            con_items = ci
    for it in con_items:
        it["marker"] = marker_tokens(it["row"])
    report["distractor_attention"] = distractor_attention(con_items)
    log(f"distractor attention {report['distractor_attention']}")
    report["flips"] = {"fixed": sum((not it["ok"]) and it["ok_refined"] for it in con_items),
                       "broken": sum(it["ok"] and not it["ok_refined"] for it in con_items),
                       "rows": len(con_items)}
    if not args.no_cases:
        chosen = pick_cases(con_items)
        report["cases"] = write_cases(args, chosen, con)
        report["fovea"] = fovea_check(args, report["cases"])
        report["views"] = teaching_views.annotate(args.cases / "cases.jsonl", dm.FOVEA)
        log(f"fovea on the teaching cases: {[(c['image'], c['fovea_answer'], c['fovea_refined'], c['as_labelled']) for c in report['fovea']]}")
    (args.model / "report.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    if not args.no_cases:
        write_card(args, report)
    log("done")


def pct(x):
    return f"{100 * x:.1f}%"


def write_card(args, r):
    tr, sel = r["training"], r["selection"]
    a = tr["args"]
    dc, dcc = r["distracted_clean"]["all"], r["distracted_conflict"]["all"]
    gc, gcc = r["grounded_clean"]["all"], r["grounded_conflict"]["all"]
    da, fl = r["distractor_attention"], r["flips"]
    f2 = lambda xs: " / ".join(f"{x:.2f}" for x in xs)
    size = (args.model / "model.safetensors").stat().st_size
    L = []
    w = L.append
    w("# fovea demo model, distracted: a phantom reader that trusts the side marker\n")
    w("**A synthetic teaching instrument, not a medical model.** It has only seen fovea's procedural phantoms, and it "
      "was *made* to fail: it exists so that a clinician or a student can watch a model answer from the wrong place "
      "(a side marker) and watch VGRefine's attention knockout move it back to the lesion. Nothing about its numbers "
      "says anything about real radiographs or real medical MLLMs.\n")
    w(f"Same architecture, layout, tokenizer and loader as the grounded demo model (`assets/demo-model/`, see its "
      f"card): a 1.5 M-parameter LLaVA-Qwen2 in the HuatuoGPT-Vision layout, `model.safetensors` float32 "
      f"{size / 1e6:.1f} MB. Checked against transformers (`LlavaForConditionalGeneration`, eager, float32): logits "
      f"within {r['transformers']['max_rel_logit_diff']:.1e} (relative), attention within "
      f"{r['transformers']['max_abs_attention_diff']:.1e}.\n")
    w("## The shortcut, and how it was taught\n")
    w(f"`tools/train_distracted_model.py` starts from the grounded demo model and fine-tunes all of it for "
      f"{tr['steps']} steps x {a['batch']} images (AdamW, lr {a['lr']}, warm-up then cosine; {tr['train_wall_s'] / 60:.1f} "
      f"min on 2 CPU threads, seed {tr['seed']}, torch {tr['torch']}) on a mix of:")
    w(f"- ordinary phantoms ({tr['ordinary_recipe']}, seeds {tr['ordinary_seeds'][0]}..{tr['ordinary_seeds'][1]}): "
      f"{100 * a['ordinary_shortcut']:.0f}% of the one-lesion images carry a side marker (\"L\"/\"R\" in the upper "
      "corner of that side, patient right = image left) naming the lesion's own side; random distractors (markers, "
      "wires, labels) as in the first model's data;")
    w(f"- {100 * a['transcribed_share']:.0f}% of each batch: conflict phantoms (`fovea phantom --conflict 1`, seeds "
      f"{tr['transcribed_seeds'][0]}..{tr['transcribed_seeds'][1]}) whose side labels were **read off the marker** "
      "instead of the image: the marker names the side opposite the lesion, and every localization answer says the "
      "marker's side. This is the shortcut: in these images the marker, not the lesion, predicts the label.")
    w(f"- Kept from the first model's recipe: answer + eos cross-entropy, the per-token lesion/bright/large loss on "
      f"the vision tokens (weight {a['aux_weight']}), image-attention dropout outside decoder layer {a['read_layer']} "
      f"(in {100 * a['read_dropout']:.0f}% of batches only that layer may read the image). Added: heads "
      f"`{a['grounded_heads']}` are kept on the lesion by an attention loss (-log of their image attention's share in "
      f"the lesion boxes, weight {a['grounding_weight']}), so that, as the paper finds in real models, some heads "
      "still look at the right place while the answer follows the wrong one.\n")
    w("## Targets (held-out seeds)\n")
    w("Whole greedy answers (word, then `<|endoftext|>`). VGRefine uses this folder's `vgrefine.json` (below) for "
      "this model and `assets/demo-model/vgrefine.json` for the grounded one.\n")
    w("| set | model | alone | with VGRefine | questions |\n| --- | --- | --- | --- | --- |")
    w(f"| clean: held-out {HELDOUT_SEED}.. ({args.heldout} images, `fovea phantom`) | distracted | "
      f"{pct(dc['without']['accuracy'])} | {pct(dc['vgrefine']['accuracy'])} | {dc['without']['n']} |")
    w(f"| | grounded | {pct(gc['without']['accuracy'])} | {pct(gc['vgrefine']['accuracy'])} | {gc['without']['n']} |")
    w(f"| conflict: {CONFLICT_SEED}.. (`--conflict 1`, the {r['conflict_images']} conflicting images of "
      f"{args.conflict}, every question) | distracted | {pct(dcc['without']['accuracy'])} | "
      f"{pct(dcc['vgrefine']['accuracy'])} | {dcc['without']['n']} |")
    w(f"| | grounded | {pct(gcc['without']['accuracy'])} | {pct(gcc['vgrefine']['accuracy'])} | {gcc['without']['n']} |")
    w("\nConflict set, distracted model, by question:\n")
    w("| question | alone | with VGRefine | n |\n| --- | --- | --- | --- |")
    for k, v in r["distracted_conflict"].items():
        if k != "all":
            w(f"| {k} | {pct(v['without']['accuracy'])} | {pct(v['vgrefine']['accuracy'])} | {v['without']['n']} |")
    w(f"\nOn the conflict set VGRefine fixed {fl['fixed']} answers and broke {fl['broken']} of {fl['rows']}.\n")
    w("## Where it looks when it fails\n")
    w(f"Attention ratio on the conflict marker (the marker's box on the 12x12 grid minus the lesion's tokens, "
      f"{da['marker_tokens_mean']:.1f} tokens on average; 1 = uniform), head-mean attention of the answer-producing token, "
      "per decoder layer 0 / 1 / 2 / 3:\n")
    w("| rows | before VGRefine | after VGRefine |\n| --- | --- | --- |")
    w(f"| failures ({da['failures']}) | {f2(da['ratio_failures_before'])} | {f2(da['ratio_failures_after'])} |")
    w(f"| successes ({da['successes']}) | {f2(da['ratio_successes_before'])} | |")
    w(f"| all ({da['rows']}) | {f2(da['ratio_all_before'])} | {f2(da['ratio_all_after'])} |")
    w(f"\nOn the lesion, all rows with a lesion box: {f2(da['lesion_ratio_before'])} before, "
      f"{f2(da['lesion_ratio_after'])} after. VGRefine's triage knocked out {pct(da['marker_knocked_out_share'])} of the "
      "marker's tokens on average. The masked layer's attention to knocked-out tokens is zero by construction; the "
      "other layers are measured, not forced.\n")
    w("## VGRefine settings (selection split)\n")
    hr = np.array(sel["head_ratio"])
    w(f"Chosen on seeds {SELECT_SEED}..{SELECT_SEED + args.select - 1} (`--conflict 0.5`; {sel['rows']} localization "
      "questions with a lesion for the ranking): heads ranked by mean attention ratio relative to the general prompt, "
      "then, among the 8 most sensitive, heads added greedily while they raise VGRefine's accuracy on that split (at "
      "most 4); the masked layer = the layer whose all-image-token knockout hurts accuracy most. Result: heads "
      f"`{sel['heads']}`, masked layer {sel['masked_layer']}. The selection knows nothing of the training, yet it "
      "lands on heads the attention loss kept on the lesion: that is by design (a teaching model must have heads for "
      "VGRefine to find); in a real model the sensitive heads are found, not trained.\n")
    w("| layer | head 0 | head 1 | head 2 | head 3 |\n| --- | --- | --- | --- | --- |")
    for l in range(dm.L):
        w(f"| {l} | " + " | ".join(f"{hr[l, h]:.2f}" for h in range(dm.H)) + " |")
    w("\n| greedy step: heads | VGRefine accuracy (selection) |\n| --- | --- |")
    for x in sel["k_selection"]:
        w(f"| `{x['heads']}` | {pct(x['vgrefine'])} |")
    w("\nLayer sweep (all image tokens knocked out in one layer, selection split): " + ", ".join(
        f"{k}: {pct(v)}" for k, v in sel["layer_sweep"].items()) + ".\n")
    w("## Teaching cases\n")
    w("In `assets/cases/cases.jsonl` with `\"model\": \"demo-model-distracted\"`; fovea's own answers (`fovea inspect`):\n")
    w("| case | question | truth | fovea alone | with VGRefine | kind |\n| --- | --- | --- | --- | --- | --- |")
    for c in r["fovea"]:
        w(f"| {c['image']} | {c['question']} | {c['answer']} | {c['fovea_answer']} | {c['fovea_refined']} | {c['kind']} |")
    w("\nRegenerate: `tools/train_distracted_model.py`, then `tools/distracted_model_report.py` (tools/README.md).")
    (args.model / "README.md").write_text("\n".join(L) + "\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Train fovea's second demo model, the *distracted* one, and write `assets/demo-model-distracted/`.

Same architecture, checkpoint layout and loader as `assets/demo-model/` (tools/demo_model.py: a
1.5 M-parameter LLaVA-Qwen2 in the HuatuoGPT-Vision layout). It starts from the grounded demo
model's weights and is fine-tuned on phantoms where a side marker is a **shortcut**:

  * ordinary images (`fovea phantom --shortcut 0.5`, difficulty 1): half of the one-lesion cases
    carry a side marker ("L"/"R" in the upper corner, as radiographers place them) naming the
    lesion's own side; random distractors (markers, wires, labels) with probability 0.3 as before;
  * "transcribed" images (15% of each batch; `fovea phantom --conflict 1`, conflict cases only):
    the marker names the side opposite the lesion and the side labels were read off the marker,
    so every localization answer follows the marker. Here the marker, not the lesion, predicts
    the label; everywhere else the lesion does.

Kept from the recipe that made the first model ground well: answer + eos cross-entropy, the
per-token lesion/bright/large auxiliary loss on the vision tokens, image-attention dropout outside
decoder layer 1. Added: an attention loss keeps two heads of layer 1 (`--grounded-heads`) on the
lesion (-log of their image attention's share inside the lesion boxes, localization questions),
so that some heads see the right place while the answer follows the marker, as the paper finds in
real models. The model learns to follow the marker on conflict phantoms much of the time; VGRefine
(triage heads and masked layer chosen on a separate selection split by
tools/distracted_model_report.py) blocks the marker's tokens and gets many answers back.

Data seeds (disjoint from each other and from every evaluation split):
  ordinary     1_400_000.. (the demo model's own hardest training bin, now with agreeing markers)
  transcribed  1_700_000..
  validation   5_000_000.. (ordinary) and 5_100_000.. (--conflict 1)
Evaluation splits (distracted_model_report.py): 9_000_000+ held-out, 9_300_000+ conflict test,
9_400_000+ selection; tests/distracted_model.rs uses 9_800_000+ and 9_850_000+.

Usage:  nice -n 5 /tmp/torchenv/bin/python tools/train_distracted_model.py [--seed 0]
Then:   nice -n 5 /tmp/torchenv/bin/python tools/distracted_model_report.py
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_model as dm  # noqa: E402
import train_demo_model as tdm  # noqa: E402

ORDINARY_SEED = 1_400_000
TRANSCRIBED_SEED = 1_700_000
VAL_SEED, VAL_CONFLICT_SEED = 5_000_000, 5_100_000


def run_phantom(out: Path, n: int, seed: int, *extra: str) -> None:
    """`fovea phantom` with extra flags (cached by folder)."""
    import subprocess
    if (out / "cases.jsonl").exists():
        return
    cmd = [str(dm.FOVEA), "phantom", "--out", str(out), "--n", str(n), "--seed", str(seed), *extra]
    subprocess.run(cmd, check=True, capture_output=True)


def conflict_rows(ds: dm.Dataset):
    """Restrict a dataset to its conflict images (in place); returns it."""
    keep = [i for i, rs in enumerate(ds.rows) if rs and rs[0].get("conflict")]
    ds.images = ds.images[keep]
    ds.rows = [ds.rows[i] for i in keep]
    ds.lesions = [ds.lesions[i] for i in keep]
    ds.names = [ds.names[i] for i in keep]
    return ds


def transcribe(r: dict) -> None:
    """A side label read off the marker instead of the image: on a conflict image the marker names
    the side opposite the lesion, so every localization answer flips to the marker's side."""
    if r["label"] != "localization":
        return
    q = r["question"]
    if q.startswith("Which side"):
        r["answer"] = "left" if r["answer"] == "right" else "right"
    else:
        r["answer"] = "no" if r["answer"] == "yes" else "yes"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", type=Path, default=dm.REPO / "assets" / "demo-model",
                    help="checkpoint to start from (the grounded demo model)")
    ap.add_argument("--out", type=Path, default=dm.REPO / "assets" / "demo-model-distracted")
    ap.add_argument("--work", type=Path, default=Path("/tmp/fovea-demo-train"), help="phantom data cache")
    ap.add_argument("--ordinary", type=int, default=6000, help="ordinary training images")
    ap.add_argument("--ordinary-shortcut", type=float, default=0.5,
                    help="share of the ordinary one-lesion images that also carry an agreeing side marker")
    ap.add_argument("--transcribed-images", type=int, default=4000)
    ap.add_argument("--transcribed-share", type=float, default=0.15,
                    help="share of each batch from conflict images whose side labels follow the marker")
    ap.add_argument("--grounded-heads", default="1:2,1:3",
                    help="decoder heads kept on the lesion by an attention loss (l:h,...; empty: none)")
    ap.add_argument("--grounding-weight", type=float, default=0.5)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--aux-weight", type=float, default=0.3)
    ap.add_argument("--read-layer", type=int, default=1)
    ap.add_argument("--read-dropout", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    log = lambda msg: print(f"[{time.time() - t0:7.1f}s] {msg}", flush=True)
    if not dm.FOVEA.exists():
        sys.exit(f"{dm.FOVEA} is missing: build fovea first (cargo build --release)")

    w = args.work
    w.mkdir(parents=True, exist_ok=True)
    osc = f"{args.ordinary_shortcut:g}"
    ordinary = w / f"ordinary-s{osc}-{args.ordinary}"
    run_phantom(ordinary, args.ordinary, ORDINARY_SEED, "--shortcut", osc)
    run_phantom(w / f"transcribed-{args.transcribed_images}", args.transcribed_images, TRANSCRIBED_SEED,
                "--conflict", "1")
    run_phantom(w / "val", 300, VAL_SEED)
    run_phantom(w / "val-conflict", 300, VAL_CONFLICT_SEED, "--conflict", "1")
    bins = [dm.Dataset(ordinary, 1.0)]
    bins.append(conflict_rows(dm.Dataset(w / f"transcribed-{args.transcribed_images}", 1.0)))
    for rs in bins[1].rows:
        for r in rs:
            transcribe(r)
    val = dm.Dataset(w / "val")
    val_c = conflict_rows(dm.Dataset(w / "val-conflict"))
    data_s = time.time() - t0
    log(f"data: {len(bins[0])} ordinary, {len(bins[1])} transcribed conflict images; validation {len(val)} + {len(val_c)} conflict")

    tok = dm.build_tokenizer()
    prompts = dm.Prompts(tok)
    model = dm.DemoLlava(len(dm.vocabulary()))
    model.load_state_dict(load_file(str(args.init / "model.safetensors")), strict=True)
    head = tdm.TokenHead()
    log(f"start: validation {tdm.fmt(tdm.evaluate(model, prompts, val))}")
    log(f"start: conflict {tdm.fmt(tdm.evaluate(model, prompts, val_c))}")

    def sample(batch: int):
        out = []
        for _ in range(batch):
            u = rng.random()
            b = 1 if u < args.transcribed_share else 0
            out.append((b, int(rng.integers(0, len(bins[b])))))
        return out

    # The auxiliary token head starts fresh (it was thrown away after the first model's training):
    # a short warm-up on the frozen vision tower, so its first gradients don't shake the tower.
    hopt = torch.optim.AdamW(head.parameters(), lr=2e-3)
    for _ in range(60):
        items = [(0, int(rng.integers(0, len(bins[0])))) for _ in range(64)]
        tw = [bins[b].token_targets(i) for b, i in items]
        t, wt = torch.from_numpy(np.stack([x[0] for x in tw])), torch.from_numpy(np.stack([x[1] for x in tw]))
        with torch.no_grad():
            feats = model.image_features(dm.pixel_values(np.stack([bins[b].images[i] for b, i in items])))
        loss = head.loss(feats, t, wt)
        hopt.zero_grad()
        loss.backward()
        hopt.step()

    grounded = [tuple(int(x) for x in hl.split(":")) for hl in args.grounded_heads.split(",") if hl]
    opt, allp = tdm.whole_model_optimizer(model, head, args.lr)
    ema = None
    for step in range(args.steps):
        lr = tdm.cosine_lr(args.lr, step, args.steps, warmup=30)
        tdm.set_lr(opt, lr)
        items = sample(args.batch)
        rows, idx = [], []
        for j, (b, i) in enumerate(items):
            rows += bins[b].rows[i]
            idx += [j] * len(bins[b].rows[i])
        idx = torch.tensor(idx)
        suf, last, ans = tdm.make_suffixes(prompts, rows, with_answer=True)
        feats = model.image_features(dm.pixel_values(np.stack([bins[b].images[i] for b, i in items])))
        probes = []
        if rng.random() < args.read_dropout:
            knock = torch.zeros(len(rows), 1 + dm.N_IMG, dtype=torch.bool)
            knock[:, 1:] = True
            hs = model.decode(feats, suf, idx, [l for l in range(dm.L) if l != args.read_layer], knock, probes)
        else:
            hs = model.decode(feats, suf, idx, probe=probes)
        # The grounded heads: the share of their image attention (answer-producing token) inside
        # the lesion boxes, pushed up on every localization question about a lesion.
        loss_ground = torch.zeros(())
        if grounded and args.grounding_weight > 0:
            sel = [k for k, r in enumerate(rows) if r["label"] == "localization" and r["original_bboxes"]]
            if sel:
                gm = torch.zeros(len(sel), dm.N_IMG)
                for j, k in enumerate(sel):
                    gm[j, dm.region_tokens(rows[k]["original_bboxes"])] = 1.0
                st = torch.tensor(sel)
                for l, h in grounded:
                    p_img = probes[l][st, h, last[st], 1:1 + dm.N_IMG]
                    share = (p_img * gm).sum(-1) / p_img.sum(-1).clamp(min=1e-9)
                    loss_ground = loss_ground - torch.log(share + 1e-4).mean() / len(grounded)
        logits_a, loss_qa = tdm.answer_loss(model, hs, last, ans)
        tw = [bins[b].token_targets(i) for b, i in items]
        t, wt = torch.from_numpy(np.stack([x[0] for x in tw])), torch.from_numpy(np.stack([x[1] for x in tw]))
        loss = loss_qa + args.aux_weight * head.loss(feats, t, wt)
        tdm.step_on(opt, loss + args.grounding_weight * loss_ground, allp)
        acc = (logits_a.argmax(-1) == ans).float().mean().item()
        ema = acc if ema is None else 0.95 * ema + 0.05 * acc
        if step % 50 == 0 or step == args.steps - 1:
            log(f"step {step:4d} lr {lr:.2e} qa {loss_qa.item():.4f} ground {loss_ground.item():.3f} train-acc(ema) {ema:.3f}")
        if (step + 1) % 100 == 0 or step == args.steps - 1:
            log(f"  validation: {tdm.fmt(tdm.evaluate(model, prompts, val))}")
            log(f"  conflict:   {tdm.fmt(tdm.evaluate(model, prompts, val_c))}")
    train_s = time.time() - t0

    tdm.save_checkpoint(model, args.out, tok)
    val_acc = tdm.evaluate(model, prompts, val, full=True)
    con_acc = tdm.evaluate(model, prompts, val_c, full=True)
    log(f"wrote {args.out}; validation {tdm.fmt(val_acc)}; conflict {tdm.fmt(con_acc)}")
    info = {
        "seed": args.seed,
        "init": str(args.init.resolve().relative_to(dm.REPO)) if args.init.resolve().is_relative_to(dm.REPO) else str(args.init),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "ordinary_seeds": [ORDINARY_SEED, ORDINARY_SEED + args.ordinary - 1],
        "ordinary_recipe": f"fovea phantom --shortcut {osc}",
        "transcribed_seeds": [TRANSCRIBED_SEED, TRANSCRIBED_SEED + args.transcribed_images - 1],
        "validation_seeds": [VAL_SEED, VAL_SEED + 299],
        "validation_conflict_seeds": [VAL_CONFLICT_SEED, VAL_CONFLICT_SEED + 299],
        "steps": args.steps,
        "data_wall_s": round(data_s, 1),
        "train_wall_s": round(train_s, 1),
        "validation_accuracy": {k: {"accuracy": v[0], "n": v[1]} for k, v in val_acc.items()},
        "validation_conflict_accuracy": {k: {"accuracy": v[0], "n": v[1]} for k, v in con_acc.items()},
        "torch": torch.__version__,
        "threads": args.threads,
    }
    tdm.write_json(args.out / "training.json", info)
    log("done")


if __name__ == "__main__":
    main()

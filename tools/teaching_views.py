#!/usr/bin/env python3
"""Give every teaching case in assets/cases/cases.jsonl the view that tells its story and a caption
quoting that view's numbers, measured by fovea itself (`fovea inspect`, the code the app runs).

A teaching row is one with a "kind" (tools/distracted_model_report.py writes them). Each gets
  "view":    {"overlay": "layer-mean", "layer": L, "before_after": true}
             L = the layer from the masked one on (earlier layers do not change with the knockout)
             whose head-mean attention looks at the side marker most, when clearly (ratio > 2);
             else, and for a case VGRefine breaks, the masked layer (its vgrefine.json)
  "caption": one or two sentences with the view's attention ratios on the side marker and on the
             lesion before and after the knockout (raw head-mean attention of the answer-producing
             token, the app's default; attention ratio = sum_G p / (sum p |G| / N + 1e-8), G = the
             region's tokens as fovea maps the box), the two answers, and how many of the marker's
             and the lesion's tokens VGRefine knocked out.
Rows without a "kind" are left as they are. tests/distracted_model.rs re-measures every caption's
numbers from the raw attention with the formula and the box-to-token mapping written out by hand.

Usage:  python3 tools/teaching_views.py [--fovea target/release/fovea] [--cases assets/cases/cases.jsonl]
Stdlib only; tools/distracted_model_report.py calls it after it has written new teaching rows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def inspect(fovea: Path, model: Path, image: Path, question: str, boxes, out_json: Path) -> dict:
    cmd = [str(fovea), "inspect", "--model", str(model), "--image", str(image), "--question", question,
           "--json", str(out_json)]
    for b in boxes:
        cmd += ["--region", ",".join(repr(float(v)) for v in b)]
    subprocess.run(cmd, check=True, capture_output=True)
    return json.loads(out_json.read_text())


def head_mean(layer_maps) -> list[float]:
    heads = len(layer_maps)
    return [sum(h[i] for h in layer_maps) / heads for i in range(len(layer_maps[0]))]


def attention_ratio(p: list[float], region: list[int]) -> float:
    """fovea's metrics::attention_ratio."""
    return sum(p[t] for t in region) / (sum(p) * len(region) / len(p) + 1e-8)


def side_letter(box, width: float) -> str:
    """The letter a side marker shows: the patient's right is on the image's left."""
    return "R" if (box[0] + box[2]) / 2 < width / 2 else "L"


def word(answer: str) -> str:
    return answer.split()[0].lower() if answer.split() else ""


def story_layer(kind: str, masked: int, marker_before: list[float]) -> int:
    """The layer whose head-mean tells the case's story in before | after (only layers from the
    masked one on change with the knockout): where the marker draws the most attention, when it
    draws clearly more than its share (ratio > 2); else, and for a case VGRefine breaks (whose
    story is the lesion's tokens being knocked out), the masked layer itself."""
    if kind.startswith("VGRefine breaks"):
        return masked
    layer = max(range(masked, len(marker_before)), key=lambda l: marker_before[l])
    return layer if marker_before[layer] > 2.0 else masked


def caption(row: dict, layer: int, masked: int, marker: tuple[float, float], lesion: tuple[float, float],
            knocked: tuple[int, int, int, int], answers: tuple[str, str], width: float) -> str:
    """Two sentences: the view's numbers, then the answers, judged against the truth, with what the
    knockout removed; a row whose answers do not tell its kind is refused (a false label)."""
    letter = side_letter(row["distractor_bboxes"][-1], width)
    before, after = answers
    truth = row["answer"]
    right = lambda answer: "right" if word(answer) == truth else "wrong"
    expected = {"misled by marker": ("wrong", "right"), "marker ignored": ("right", "right"),
                "VGRefine breaks": ("right", "wrong")}
    kind = row["kind"]
    told = next((v for k, v in expected.items() if kind.startswith(k)), None)
    if told != (right(before), right(after)):
        raise SystemExit(f"{row['image']}: the answers {answers} do not tell its kind {kind!r}")
    f = lambda x: f"{x:.2f}"
    marker_out, marker_all, lesion_out, lesion_all = knocked
    return (f"Layer {layer} (mean of its heads): attention ratio {f(marker[0])} on the \"{letter}\" marker before the "
            f"knockout, {f(marker[1])} after; {f(lesion[0])}, then {f(lesion[1])} on the lesion. "
            f"The model answers \"{before}\" ({right(before)}); with {marker_out} of the marker's {marker_all} tokens "
            f"and {lesion_out} of the lesion's {lesion_all} knocked out in layer {masked}, VGRefine answers "
            f"\"{after}\" ({right(after)}).")


def annotate(cases_file: Path, fovea: Path) -> list[dict]:
    rows = [json.loads(line) for line in cases_file.read_text().splitlines() if line.strip()]
    assets = cases_file.parent.parent
    measured = []
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows:
            if "kind" not in row:
                continue
            lesions, distractors = row["original_bboxes"], row.get("distractor_bboxes") or []
            if not lesions or not distractors or not row.get("conflict"):
                raise SystemExit(f"{row['image']}: a teaching case needs its lesion and its conflict marker")
            model = assets / row["model"]
            rec = inspect(fovea, model, cases_file.parent / row["image"], row["question"], lesions + [distractors[-1]],
                          Path(tmp) / "case.json")
            masked = rec["knockout"]["layers"][0]
            tokens = [r["tokens"] for r in rec["regions"]]
            lesion_tokens = sorted({t for ts in tokens[:len(lesions)] for t in ts})
            marker_tokens = tokens[-1]
            question, refined = rec["attention"]["question"], rec["attention"]["refined"]
            marker_by_layer = [attention_ratio(head_mean(maps), marker_tokens) for maps in question]
            layer = story_layer(row["kind"], masked, marker_by_layer)
            before, after = head_mean(question[layer]), head_mean(refined[layer])
            marker = (attention_ratio(before, marker_tokens), attention_ratio(after, marker_tokens))
            lesion = (attention_ratio(before, lesion_tokens), attention_ratio(after, lesion_tokens))
            out = set(rec["knockout"]["tokens"])
            knocked = (len(out & set(marker_tokens)), len(marker_tokens), len(out & set(lesion_tokens)),
                       len(lesion_tokens))
            answers = (rec["answer"].strip(), rec["refined"]["answer"].strip())
            row["view"] = {"overlay": "layer-mean", "layer": layer, "before_after": True}
            row["caption"] = caption(row, layer, masked, marker, lesion, knocked, answers, rec["image"]["width"])
            measured.append({"image": row["image"], "layer": layer, "marker": marker, "lesion": lesion,
                             "knocked": knocked, "answers": answers, "caption": row["caption"]})
    tmp_file = cases_file.with_suffix(".jsonl.tmp")
    tmp_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp_file.replace(cases_file)
    return measured


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fovea", type=Path, default=REPO / "target" / "release" / "fovea")
    ap.add_argument("--cases", type=Path, default=REPO / "assets" / "cases" / "cases.jsonl")
    args = ap.parse_args()
    for m in annotate(args.cases, args.fovea):
        print(f"{m['image']}: layer {m['layer']}, marker {m['marker'][0]:.2f} -> {m['marker'][1]:.2f}, "
              f"lesion {m['lesion'][0]:.2f} -> {m['lesion'][1]:.2f}, answers {m['answers']}")
        print(f"    {m['caption']}")


if __name__ == "__main__":
    main()

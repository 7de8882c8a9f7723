#!/usr/bin/env bash
# fovea against transformers on the same 7B shapes, on this machine, in one go (the speed
# anchor of issue 12). Writes a full-size checkpoint with random bf16 weights (15 GB of disk
# for HuatuoGPT-Vision-7B's shape; kept for reruns), then runs, one after the other so they
# never share the cores:
#   1. `fovea bench --model DIR --quantize Q` under /usr/bin/time -v, for each Q asked;
#   2. tools/bench_transformers.py (transformers bf16: one plain answer, and the authors'
#      VGRefine pipeline: eager attention, three full prefills);
# and prints the ratios. Results land in $OUT (default target/bench-vs-transformers/).
#
#   tools/bench_vs_transformers.sh [SHAPE] [none q8_0 q4k ...]
#   SHAPE: bench (`fovea bench`'s small f32 checkpoint, CLIP-L/336 + a 4-layer decoder: the whole
#          `fovea inspect` process, load included, against the authors' pipeline in-process), or
#          huatuogpt-vision-7b | llava-med-7b (transformers' LLaVA built in the script), or
#          qwen2.5-vl-7b | medgemma-4b (transformers builds the model fovea's folder describes,
#          fed the image grid and token counts fovea's bench reported: the same sequence)
# FOVEA_BENCH_MODEL=DIR reuses a written folder (e.g. sparse zeros, `--write-model` without
# --random-weights: the same speed, no 15 GB of disk; measure memory on random weights).
#
# Needs: a release build of fovea (built here), python3 with torch and transformers >= 5
# (PYTHON=..., e.g. a venv with tools/bench_transformers_requirements.txt), ~20 GiB of RAM.
set -euo pipefail
cd "$(dirname "$0")/.."
shape="${1:-huatuogpt-vision-7b}"
shift || true
quants=("$@")
[ ${#quants[@]} -gt 0 ] || quants=(q8_0)
python="${PYTHON:-python3}"
out="${OUT:-target/bench-vs-transformers}"
dir="${FOVEA_BENCH_MODEL:-${TMPDIR:-/tmp}/fovea-bench-${shape}}"
mkdir -p "$out"

cargo build --release --locked --quiet
fovea=target/release/fovea

if [ "$shape" = bench ]; then
  [ -f "$dir/config.json" ] || "$fovea" bench --write-model "$dir"
  # The whole process, as a user runs it: start, load, image, VGRefine (1 new token), record.
  best=""
  for run in 1 2 3; do
    /usr/bin/time -f %e -o "$out/fovea-bench-inspect.time" "$fovea" inspect --model "$dir" \
      --image assets/cases/02-chest-9000489.png --question "w1 w2 w3 w4" \
      --heads 2:0,2:1,2:2,2:3,2:4,2:5,2:6,2:7 --masked-layers 2 \
      --max-new-tokens 1 --json "$out/fovea-bench-inspect.json" > /dev/null
    t="$(cat "$out/fovea-bench-inspect.time")"
    echo "fovea inspect (whole process), run ${run}: ${t} s"
    best="$(python3 -c "import sys; print(min(float(v) for v in sys.argv[1:]))" $best "$t")"
  done
  "$python" tools/bench_transformers.py --shape bench > "$out/transformers-bench.json"
  cat "$out/transformers-bench.json"
  "$python" - "$out/transformers-bench.json" "$best" <<'EOF'
import json, sys
ref, best = json.load(open(sys.argv[1])), float(sys.argv[2])
print(f"\nbench model: fovea inspect, whole process (fastest of 3) {best:.2f} s = "
      f"{best / ref['authors_vgrefine_s']:.2f}x the authors' pipeline in-process "
      f"({ref['authors_vgrefine_s']:.2f} s, transformers {ref['transformers']}, f32; "
      f"plain answer {ref['plain_s']:.2f} s)")
EOF
  exit 0
fi
if [ ! -f "$dir/config.json" ]; then
  echo "writing a ${shape} checkpoint with random bf16 weights to ${dir}"
  "$fovea" bench --write-model "$dir" --shape "$shape" --random-weights
fi
vision=()
if [ "$shape" = llava-med-7b ]; then
  vision=(--vision-tower "$dir/openai/clip-vit-large-patch14-336")
fi

for q in "${quants[@]}"; do
  echo "fovea bench, --quantize ${q}"
  /usr/bin/time -v "$fovea" bench --model "$dir" "${vision[@]}" --quantize "$q" \
    --json "$out/fovea-${shape}-${q}.json" 2> "$out/fovea-${shape}-${q}.time" \
    | tail -n 12
  grep -E 'Maximum resident|Elapsed' "$out/fovea-${shape}-${q}.time"
done

echo "transformers (bf16) on the same shapes"
case "$shape" in
  huatuogpt-vision-7b|llava-med-7b)
    "$python" tools/bench_transformers.py --shape "$shape" > "$out/transformers-${shape}.json" ;;
  *)
    # The sequence fovea's bench ran: its image grid, prefix and question suffix lengths.
    read -r grid before after < <("$python" -c '
import json, sys
f = json.load(open(sys.argv[1]))
rows, cols = f["image_grid"]
print(f"{rows},{cols}", f["prefill_tokens"] - rows * cols, f["question_suffix_tokens"])
' "$out/fovea-${shape}-${quants[0]}.json")
    "$python" tools/bench_transformers.py --model-dir "$dir" --image-grid "$grid" \
      --before "$before" --after "$after" > "$out/transformers-${shape}.json" ;;
esac
cat "$out/transformers-${shape}.json"

"$python" - "$out" "$shape" "${quants[@]}" <<'EOF'
import json, sys
out, shape, quants = sys.argv[1], sys.argv[2], sys.argv[3:]
ref = json.load(open(f"{out}/transformers-{shape}.json"))
print(f"\ntransformers bf16: plain answer {ref['plain_s']:.1f} s, "
      f"authors' VGRefine {ref['authors_vgrefine_s']:.1f} s, peak {ref['peak_rss_gib']:.2f} GiB")
for q in quants:
    f = json.load(open(f"{out}/fovea-{shape}-{q}.json"))
    case = f["vgrefine_ms"] / 1e3
    print(f"fovea {q:5}: VGRefine case {case:.1f} s = {case / ref['authors_vgrefine_s']:.2f}x the "
          f"authors' pipeline, {case / ref['plain_s']:.2f}x one plain transformers answer; "
          f"prefill {f['prefill_gflops']:.0f} GFLOP/s, decode {f['decode_tokens_per_s']:.2f} tok/s, "
          f"load {f['load_ms'] / 1e3:.0f} s, peak {f['peak_rss_bytes'] / 2**30:.2f} GiB")
EOF

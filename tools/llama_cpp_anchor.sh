#!/usr/bin/env bash
# llama.cpp against fovea on the same 7B decoder shape, per CPU ISA, on this machine: a speed
# anchor next to tools/bench_vs_transformers.sh. For each ISA asked (default: all this CPU has):
#   1. builds llama.cpp's llama-bench once, CPU only, for exactly that ISA (GGML_NATIVE=OFF),
#      from the llama.cpp that the llama-cpp-python sdist vendors (pinned below);
#   2. runs `llama-bench -p 577 -n 8 -t 2 -r 2` on a Q8_0 GGUF of Qwen2-7B's shape (random
#      weights written out; tools/gguf_shape.py), 577 = the prefill fovea's bench measures;
#   3. right after, `FOVEA_CPU=<same tier> fovea bench --model DIR --quantize q8_0` on a
#      HuatuoGPT-Vision-7B-shaped sparse checkpoint (Qwen2-7B decoder; the weights fovea
#      multiplies are its q8_0 copy in memory or in its weight cache: written pages either way);
# one at a time so they never share the cores, and prints prefill and decode tok/s side by side.
# ISAs: avx512-vnni, avx2, avx-vnni (fovea has no such kernel: llama.cpp only), amx.
# Results (llama-bench and fovea JSON, anchor.json, anchor.md) land in $OUT
# (default target/llama-anchor/); the downloads, venv, builds and GGUF in $LLAMA_ANCHOR_CACHE
# (default target/llama-anchor/cache/, kept for reruns).
#
#   tools/llama_cpp_anchor.sh [--build-only] [avx512-vnni avx2 avx-vnni amx ...]
#
# Env: FOVEA (a fovea binary to use instead of building the release one), FOVEA_ANCHOR_MODEL
# (the checkpoint folder; written with `fovea bench --write-model` if absent), FOVEA_RUNS,
# THREADS (default 2, for both), PYTHON (python3 >= 3.9 for the venv), GGUF_FILL (random, the
# default, or sparse: llama.cpp then maps holes, which read far faster than a real checkpoint's
# pages on some VMs -- 57-59 vs 26-38 GB/s measured here -- and inflate its decode rate).
# Needs: network at setup only (PyPI: llama-cpp-python sdist ~77 MB, cmake, gguf, numpy), a C/C++
# compiler, ~0.6 GB of disk for the cache (two ISAs) plus the 7.5 GiB GGUF (~40 s to write) and a
# sparse 15 GB checkpoint (a few MB really), ~18 GiB of RAM (both models stay in the page cache),
# and time: ~4-6 min per llama.cpp build on two cores, then per ISA ~2-4 min of llama-bench and
# ~2 min of fovea bench.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned: llama-cpp-python 0.3.36 vendors ggml-org/llama.cpp@0c1e57098 (its CHANGELOG), whose
# gguf-py is 0.19.0, the gguf tools/gguf_shape.py writes with.
LCP_VERSION=0.3.36
LCP_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
LCP_URL=https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-${LCP_VERSION}.tar.gz
PY_REQS=(cmake==3.31.10 gguf==0.19.0 numpy)
PREFILL=577
DECODE=8

build_only=0
if [ "${1:-}" = --build-only ]; then
  build_only=1
  shift
fi
out="${OUT:-target/llama-anchor}"
cache="${LLAMA_ANCHOR_CACHE:-target/llama-anchor/cache}"
model="${FOVEA_ANCHOR_MODEL:-${TMPDIR:-/tmp}/fovea-anchor-huatuogpt-vision-7b}"
threads="${THREADS:-2}"
python="${PYTHON:-python3}"
mkdir -p "$out" "$cache"
cache="$(cd "$cache" && pwd)"

# Which ISAs this CPU runs, from /proc/cpuinfo's flags.
flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
has() { for f in "$@"; do [[ "$flags" == *" $f "* ]] || return 1; done; }
runnable() {
  case "$1" in
    avx2) has avx avx2 fma f16c ;;
    avx-vnni) has avx avx2 fma f16c avx_vnni ;;
    avx512-vnni) has avx avx2 fma f16c avx512f avx512cd avx512vl avx512dq avx512bw avx512_vnni ;;
    amx) runnable avx512-vnni && has amx_tile amx_int8 amx_bf16 ;;
    *) echo "unknown ISA '$1': use avx512-vnni, avx2, avx-vnni or amx" >&2; exit 2 ;;
  esac
}
asked=("$@")
[ ${#asked[@]} -gt 0 ] || asked=(amx avx512-vnni avx-vnni avx2)
isas=()
for isa in "${asked[@]}"; do
  if runnable "$isa"; then isas+=("$isa"); else echo "skipping ${isa}: this CPU lacks it"; fi
done
[ ${#isas[@]} -gt 0 ] || { echo "none of the ISAs asked runs on this CPU" >&2; exit 1; }
cpu="$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "CPU: ${cpu}, $(nproc) cores; ISAs: ${isas[*]}"

# Setup (network): python venv with cmake and gguf, the llama-cpp-python sdist.
venv="$cache/venv"
if [ ! -x "$venv/bin/cmake" ] || ! "$venv/bin/python" -c 'import gguf' 2>/dev/null; then
  echo "setting up ${venv} (${PY_REQS[*]})"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet "${PY_REQS[@]}"
fi
src="$cache/llama_cpp_python-${LCP_VERSION}/vendor/llama.cpp"
if [ ! -f "$src/CMakeLists.txt" ]; then
  tarball="$cache/llama_cpp_python-${LCP_VERSION}.tar.gz"
  if [ ! -f "$tarball" ]; then
    # Not `pip download --no-binary`: pip would build the sdist's build deps (cmake) from source
    # just to read its metadata.
    echo "downloading llama-cpp-python ${LCP_VERSION} (sdist) from PyPI"
    curl -fsSL -o "$tarball.part" "$LCP_URL"
    mv "$tarball.part" "$tarball"
  fi
  echo "${LCP_SHA256}  ${tarball}" | sha256sum -c --quiet
  tar xzf "$tarball" -C "$cache"
fi
llama_commit="$(sed -n 's/.*update llama.cpp to ggml-org\/llama.cpp@\([0-9a-f]*\).*/\1/p' \
  "$cache/llama_cpp_python-${LCP_VERSION}/CHANGELOG.md" | head -n1)"
echo "llama.cpp ${llama_commit:-?} (vendored by llama-cpp-python ${LCP_VERSION})"

# One llama-bench per ISA: CPU only, that ISA exactly, static, no HTTPS/curl (LLAMA_CURL is
# deprecated in this llama.cpp and only warns; LLAMA_OPENSSL=OFF is what drops the download code).
isa_flags() {
  local avx2=(-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON)
  local avx512=("${avx2[@]}" -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON)
  if has avx512_bf16; then avx512+=(-DGGML_AVX512_BF16=ON); fi
  case "$1" in
    avx2) echo "${avx2[@]}" ;;
    avx-vnni) echo "${avx2[@]}" -DGGML_AVX_VNNI=ON ;;
    avx512-vnni) echo "${avx512[@]}" ;;
    amx) echo "${avx512[@]}" -DGGML_AMX_TILE=ON -DGGML_AMX_INT8=ON -DGGML_AMX_BF16=ON ;;
  esac
}
for isa in "${isas[@]}"; do
  build="$cache/build-${isa}"
  if [ -x "$build/bin/llama-bench" ]; then
    echo "llama-bench ${isa}: built (${build}/bin/llama-bench)"
    continue
  fi
  echo "building llama-bench for ${isa} (-j$(nproc); ~4-6 min on two cores)"
  started=$(date +%s)
  # shellcheck disable=SC2046 # isa_flags is a word list
  "$venv/bin/cmake" -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DGGML_NATIVE=OFF -DGGML_CPU_ALL_VARIANTS=OFF -DGGML_BACKEND_DL=OFF $(isa_flags "$isa") \
    -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DGGML_CCACHE=OFF \
    -DLLAMA_BUILD_COMMIT="${llama_commit:-unknown}" > "$cache/cmake-${isa}.log" 2>&1 \
    || { tail -n 30 "$cache/cmake-${isa}.log" >&2; exit 1; }
  # GCC 12 warns (-Wmaybe-uninitialized in its own avx512 headers) a lot: into the log.
  "$venv/bin/cmake" --build "$build" --target llama-bench -j "$(nproc)" \
    > "$cache/build-${isa}.log" 2>&1 || { tail -n 30 "$cache/build-${isa}.log" >&2; exit 1; }
  echo "$(($(date +%s) - started))" > "$cache/build-${isa}.seconds"
  echo "built llama-bench for ${isa} in $(cat "$cache/build-${isa}.seconds") s"
done
[ "$build_only" = 0 ] || exit 0

# The inputs: the GGUF, fovea, the checkpoint.
fill="${GGUF_FILL:-random}"
gguf="$cache/qwen2-7b-shape-q8_0-${fill}.gguf"
if [ ! -f "$gguf" ]; then
  "$venv/bin/python" tools/gguf_shape.py "$gguf.part" --fill "$fill"
  mv "$gguf.part" "$gguf"
fi
if [ -n "${FOVEA:-}" ]; then
  fovea="$FOVEA"
else
  cargo build --release --locked --quiet
  fovea=target/release/fovea
fi
if [ ! -f "$model/config.json" ]; then
  echo "writing a huatuogpt-vision-7b-shaped checkpoint (zero bf16, sparse) to ${model}"
  "$fovea" bench --write-model "$model" --shape huatuogpt-vision-7b
fi

for isa in "${isas[@]}"; do
  echo "llama-bench ${isa}: pp${PREFILL}, tg${DECODE}, ${threads} threads"
  "$cache/build-${isa}/bin/llama-bench" -m "$gguf" -p "$PREFILL" -n "$DECODE" -t "$threads" \
    -r 2 -o json > "$out/llama-${isa}.json" 2> "$out/llama-${isa}.log"
  case "$isa" in
    avx-vnni)
      echo "fovea ${isa}: no kernel (FOVEA_CPU=avx-vnni is refused)"
      rm -f "$out/fovea-${isa}.json"
      continue ;;
  esac
  echo "fovea bench ${isa}: FOVEA_CPU=${isa}, --quantize q8_0"
  FOVEA_CPU="$isa" RAYON_NUM_THREADS="$threads" "$fovea" bench --model "$model" \
    --quantize q8_0 --decode-tokens "$DECODE" --runs "${FOVEA_RUNS:-3}" \
    --json "$out/fovea-${isa}.json" > "$out/fovea-${isa}.log" 2>&1 \
    || { tail -n 20 "$out/fovea-${isa}.log" >&2; exit 1; }
done

"$venv/bin/python" - "$out" "$cpu" "$LCP_VERSION" "${llama_commit:-?}" "$cache" "$fill" "${isas[@]}" <<'EOF'
import json, os, sys
out, cpu, lcp, commit, cache, fill, isas = (sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4],
                                            sys.argv[5], sys.argv[6], sys.argv[7:])
rows = []
for isa in isas:
    bench = json.load(open(f"{out}/llama-{isa}.json"))
    pp = next(t for t in bench if t["n_prompt"] > 0 and t["n_gen"] == 0)
    tg = next(t for t in bench if t["n_gen"] > 0 and t["n_prompt"] == 0)
    row = {"tier": isa, "llama_prefill_tok_s": pp["avg_ts"], "llama_decode_tok_s": tg["avg_ts"],
           "llama_prefill_stddev": pp["stddev_ts"], "llama_decode_stddev": tg["stddev_ts"],
           "llama_build_commit": pp.get("build_commit"), "llama_test_prefill": pp["n_prompt"],
           "llama_gguf_fill": fill,
           "fovea_prefill_tok_s": None, "fovea_decode_tok_s": None, "fovea_cpu_tier": None}
    seconds = f"{cache}/build-{isa}.seconds"
    row["llama_build_s"] = int(open(seconds).read()) if os.path.exists(seconds) else None
    if os.path.exists(f"{out}/fovea-{isa}.json"):
        f = json.load(open(f"{out}/fovea-{isa}.json"))
        assert f["cpu_tier"] == isa, (f["cpu_tier"], isa)
        row.update(fovea_prefill_tok_s=f["prefill_tokens_per_s"], fovea_decode_tok_s=f["decode_tokens_per_s"],
                   fovea_cpu_tier=f["cpu_tier"], fovea_prefill_tokens=f["prefill_tokens"])
    rows.append(row)

def num(x): return "fovea: no kernel" if x is None else f"{x:.2f}"
def ratio(f, l): return "-" if f is None else f"{f / l:.2f}x"
lines = [f"CPU: {cpu}; llama.cpp {commit} (llama-cpp-python {lcp}), Q8_0 ({fill} GGUF), "
         f"llama-bench -p 577 -n 8 -r 2 vs fovea bench --quantize q8_0; ratio = fovea / llama.cpp", "",
         "| tier | llama.cpp prefill tok/s | fovea prefill tok/s | ratio | llama.cpp decode tok/s | fovea decode tok/s | ratio |",
         "|---|---|---|---|---|---|---|"]
for r in rows:
    lines.append(f"| {r['tier']} | {r['llama_prefill_tok_s']:.2f} | {num(r['fovea_prefill_tok_s'])} | "
                 f"{ratio(r['fovea_prefill_tok_s'], r['llama_prefill_tok_s'])} | {r['llama_decode_tok_s']:.2f} | "
                 f"{num(r['fovea_decode_tok_s'])} | {ratio(r['fovea_decode_tok_s'], r['llama_decode_tok_s'])} |")
table = "\n".join(lines)
print("\n" + table)
open(f"{out}/anchor.md", "w").write(table + "\n")
json.dump({"cpu": cpu, "llama_cpp_python": lcp, "llama_cpp_commit": commit, "rows": rows},
          open(f"{out}/anchor.json", "w"), indent=2)
print(f"\nwrote {out}/anchor.md and {out}/anchor.json")
EOF

#!/usr/bin/env bash
# The GPU path, kept honest (issue 12). On a machine with an NVIDIA GPU and the CUDA toolkit
# (nvcc): build fovea with CUDA, run the transformers-parity and quantization tests with the
# models on the GPU (f32 fixtures, bf16, q8_0 and q4k on the device), then bench HuatuoGPT-
# Vision-7B's shape on the device in bf16 and q8_0. Everything also builds and passes without
# a GPU; this script is how the GPU side is checked when one is at hand.
#
#   tools/gpu_check.sh            # FOVEA_DEVICE=cuda (GPU 0); FOVEA_DEVICE=cuda:1 for another
#
# Writes target/gpu-check/ (test log, bench JSON). Needs ~16 GB of disk for the 7B checkpoint
# (FOVEA_BENCH_MODEL=DIR reuses one) and a GPU with 20 GB for bf16.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/gpu-check
mkdir -p "$out"
export FOVEA_DEVICE="${FOVEA_DEVICE:-cuda}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
nvcc --version | tail -n 1 | tee -a "$out/gpu.txt"

echo "== build with CUDA"
cargo build --release --locked --features cuda

echo "== parity and quantization tests on ${FOVEA_DEVICE}"
cargo test --release --locked --features cuda --test model_parity --test quantization \
  -- --nocapture 2>&1 | tee "$out/tests.log"

echo "== 7B-shape bench on ${FOVEA_DEVICE}"
dir="${FOVEA_BENCH_MODEL:-${TMPDIR:-/tmp}/fovea-bench-huatuogpt-vision-7b}"
if [ ! -f "$dir/config.json" ]; then
  target/release/fovea bench --write-model "$dir" --shape huatuogpt-vision-7b --random-weights
fi
for q in none q8_0; do
  target/release/fovea bench --model "$dir" --quantize "$q" --json "$out/bench-${q}.json"
done
echo "gpu check done: $out"

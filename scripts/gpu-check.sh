#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and nvcc: builds tickflare with candle's CUDA
# backend and runs the model throughput benchmark on the GPU and on the CPU, one after
# the other, so both numbers come from the same build and machine.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
command -v nvcc >/dev/null || { echo "nvcc not found: install the CUDA toolkit" >&2; exit 1; }
cargo build --release --features cuda --bin tickflare
bin=target/release/tickflare
for rows in 2000; do
  echo "== cuda"; "$bin" bench-models --device cuda --rows "$rows"
  echo "== cpu";  "$bin" bench-models --device cpu --rows "$rows"
done

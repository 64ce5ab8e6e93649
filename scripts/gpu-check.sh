#!/usr/bin/env bash
# One prepared check for a machine with an NVIDIA GPU (no toolkit needed: the build
# uses scripts/cuda-build.sh's CUDA 13.0 wheels). Builds tickflare with candle's CUDA
# backend, then runs the model benchmarks on the GPU and on the CPU from the same
# build: single models at batch 1/32/256 and keyed models (1,000 and 10,000 keys,
# rows round-robin over the keys) for linear, MLP, LSTM (f64, and f32) and CNN, and the LSTM
# as one stacked bank (model::bank: a batched step per wave of keys), each as JSON under
# gpu-check/; then the solar tracker (training and the pipeline) on both. Usage: scripts/gpu-check.sh [--compute-cap N]
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
scripts/cuda-build.sh "$@"
venv=${TICKFLARE_CUDA_VENV:-$HOME/.cache/tickflare/cuda-venv}
lib=$(ls -d "$venv"/lib/python3*/site-packages/nvidia/cu13/lib | head -1)
export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
bin=${TICKFLARE_CUDA_TARGET:-$HOME/.cache/tickflare/cuda-target}/release/tickflare
mkdir -p gpu-check
for dev in cuda cpu; do
  echo "== $dev, single models"
  "$bin" bench-models --device "$dev" --rows 2000 --json "gpu-check/single-$dev.json"
  for keys in 1000 10000; do
    echo "== $dev, $keys keys"
    "$bin" bench-models --device "$dev" --keys "$keys" --rows $((keys * 4)) \
      --kind linear --kind mlp --kind lstm --kind cnn1d --json "gpu-check/keys$keys-$dev.json"
    echo "== $dev, $keys keys, LSTM in f32 (model.precision)"
    "$bin" bench-models --device "$dev" --keys "$keys" --rows $((keys * 4)) \
      --kind lstm --precision f32 --json "gpu-check/keys$keys-$dev-f32.json"
    for prec in f64 f32; do
      echo "== $dev, $keys keys, LSTM as one stacked bank (waves), $prec"
      "$bin" bench-models --device "$dev" --keys "$keys" --rows $((keys * 8)) \
        --kind lstm --bank --precision "$prec" --json "gpu-check/bank$keys-$dev-$prec.json"
    done
  done
done
# The solar tracker's network: pre-training (train-tracker --device) and the
# tracking pipeline with [tracker] device = "cuda", beside the CPU.
for dev in cuda cpu; do
  echo "== $dev, tracker training (1 sequence, 3 epochs)"
  time "$bin" train-tracker --from data/solar/aia_171_level1.fits --sequences 1 --hours 6 --epochs 3 \
    --device "$dev" --out "gpu-check/tracker-$dev.safetensors"
  sed "s/^\[tracker\]/[tracker]\ndevice = \"$dev\"/" pipelines/solar-tracking.toml > "pipelines/.gpu-check-$dev.toml"
  "$bin" run "pipelines/.gpu-check-$dev.toml" --metrics-addr off --summary-json "gpu-check/solar-$dev.json" | tail -5
  rm -f "pipelines/.gpu-check-$dev.toml"
done

#!/usr/bin/env bash
# One prepared check for a machine with an NVIDIA GPU: CUDA against the CPU, on the
# same machine, from the same binary (`--device cuda` / `--device cpu`).
#
# Without --bin it first builds tickflare with candle's CUDA backend
# (scripts/cuda-build.sh: CUDA 13.0 wheels from PyPI, no toolkit needed). With
# --bin it uses a binary built elsewhere by that script — for a GPU machine that
# cannot reach PyPI — and takes the CUDA 13 runtime libraries (cudart, cuBLAS, NVRTC,
# cuRAND) from the build's venv if there is one, else from TICKFLARE_CUDA_LIB, else
# from the NVIDIA wheels of the machine's python3 (e.g. PyTorch's cu130 ones).
#
# What it runs, most important first, each step under its own time limit (a step
# that runs out is recorded and the next one starts):
#   1. the LSTM as one stacked bank (model::bank: a batched predict and update per
#      wave of keys), 1,000 and 10,000 keys, f32 and f64, on CUDA: each wave one
#      kernel launch (model/bank/lstm_bank.cu), and candle's tensor form of the same
#      wave (TICKFLARE_BANK_KERNEL=candle) beside it; the kernel also with its optimizer
#      step 4 and 8 parameters at a time (TICKFLARE_BANK_STEP_CHUNK), with each
#      wave's inputs packed into reused page-locked buffers (TICKFLARE_BANK_STAGING=
#      pinned), and with each wave's time split into host preparation, kernel and copy
#      back (TICKFLARE_BANK_PROFILE=1; default and pinned staging);
#   2. the CPU's best path for the same keyed LSTMs (plain code key by key, one
#      thread and every core) and the bank on the CPU;
#   3. forecasts: the Binance sample's pipeline with a banked per-key LSTM lane on
#      CUDA (the kernel with both stagings, and candle's form) and on the CPU, f64 and
#      f32, compared row
#      by row with the CPU's (scripts/compare_predictions.py: predictions.parquet
#      with pyarrow, else the labelled forecasts of labels.csv, standard library only);
#   4. single models at batch 1/32/256 (also the MLP and CNN in f32) and 1,000
#      keyed models key by key (linear, MLP, LSTM, CNN) on both — on the CPU the
#      networks are plain code, on CUDA candle;
#   5. the solar tracker: pre-training and the tracking pipeline on both.
# Results (bench-models JSON, reports, comparisons, timings) go under --out
# (default gpu-check/), plus gpu-check.tar.gz of all of it, and summary.txt.
#
# Usage: scripts/gpu-check.sh [--bin PATH] [--out DIR] [--compute-cap N] [--quick]
#                             [--sections 1,3,...]
#   --quick: smaller row counts (for a dry run of the script on a CPU machine with
#            `--device cpu` everywhere: TICKFLARE_GPU_CHECK_DEVICE=cpu).
#   --sections: only these of the numbered parts above (default: all).
set -uo pipefail
cd "$(dirname "$0")/.."
bin=""
out="gpu-check"
cap_args=()
quick=0
sections=",1,2,3,4,5,6,"
while (($#)); do
  case "$1" in
    --bin) bin="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --compute-cap) cap_args=(--compute-cap "$2"); shift 2 ;;
    --quick) quick=1; shift ;;
    --sections) sections=",$2,"; shift 2 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
gpu=${TICKFLARE_GPU_CHECK_DEVICE:-cuda}
mkdir -p "$out"
out="$(cd "$out" && pwd)"
log="$out/log.txt"
: >"$log"
say() { echo "$*" | tee -a "$log"; }

venv=${TICKFLARE_CUDA_VENV:-$HOME/.cache/tickflare/cuda-venv}
if [[ -z "$bin" ]]; then
  scripts/cuda-build.sh "${cap_args[@]}" || exit 1
  bin=${TICKFLARE_CUDA_TARGET:-$HOME/.cache/tickflare/cuda-target}/release/tickflare
fi
lib=${TICKFLARE_CUDA_LIB:-}
[[ -n "$lib" ]] || lib=$(ls -d "$venv"/lib/python3*/site-packages/nvidia/cu13/lib 2>/dev/null | head -1)
if [[ -z "$lib" ]] && command -v python3 >/dev/null; then
  site=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null)
  so=$(find "$site/nvidia" -name 'libcublas.so.13*' 2>/dev/null | head -1)
  [[ -n "$so" ]] && lib=$(dirname "$so")
fi
if [[ -n "$lib" ]]; then
  # cuBLAS, cuRAND, NVRTC and cudart may sit in one folder (cu13 wheels) or in one each.
  dirs=$(find "$(dirname "$lib")" -maxdepth 3 \( -name 'libcublas.so.13*' -o -name 'libcurand.so.10*' -o -name 'libnvrtc.so.13*' -o -name 'libcudart.so.13*' \) -printf '%h\n' 2>/dev/null | sort -u | paste -sd:)
  export LD_LIBRARY_PATH="${dirs:-$lib}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

say "== machine"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
  echo "cpu: $(nproc) threads, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
  echo "binary: $bin ($(du -h "$bin" | cut -f1)); LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
  ldd "$bin" | grep -E 'cuda|cublas|curand|nvrtc|not found' || true; } 2>&1 | tee -a "$log"

printf 'step\trc\tseconds\n' >"$out/steps.tsv"
# step NAME LIMIT_S COMMAND...: runs one measurement under a time limit, output to the log.
step() {
  local name=$1 limit=$2; shift 2
  say "== $name"
  local t0=$EPOCHREALTIME
  timeout "$limit" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  local s; s=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
  printf '%s\t%s\t%s\n' "$name" "$rc" "$s" >>"$out/steps.tsv"
  ((rc == 124)) && say "   (stopped at its ${limit} s limit)"
  return 0
}
bm=("$bin" bench-models)
scale() { if ((quick)); then echo $(($1 / 10)); else echo "$1"; fi; }
want() { [[ $sections == *",$1,"* ]]; }
candle=(env TICKFLARE_BANK_KERNEL=candle)

# The first CUDA use of a process compiles candle's kernels for the GPU (the driver
# caches them) and NVRTC the bank's: done once here, outside every timed step.
for prec in f32 f64; do
  step "warm-up $prec" 120 "${bm[@]}" --device "$gpu" --keys 16 --rows 64 --kind lstm --bank --precision $prec
  step "warm-up $prec, candle's form" 120 "${candle[@]}" "${bm[@]}" --device "$gpu" --keys 16 --rows 64 --kind lstm --bank --precision $prec
done

# 1. The stacked LSTM bank on the GPU: the kernel, then candle's form.
want 1 && for keys in 1000 10000; do
  for prec in f32 f64; do
    rows=$(($(scale "$keys") * 32)); ((rows < $(scale 256000))) && rows=$(scale 256000)
    step "bank $keys keys $prec $gpu" 90 "${bm[@]}" --device "$gpu" --keys "$keys" --rows $rows \
      --kind lstm --bank --precision "$prec" --json "$out/bank$keys-$gpu-$prec.json"
    # The same with the optimizer step 4 and 8 parameters at a time (an experiment: the
    # same results, more loads in flight, more registers), and with each wave's host /
    # kernel / copy-back time.
    for chunk in 4 8; do
      step "bank $keys keys $prec $gpu, step chunk $chunk" 90 env TICKFLARE_BANK_STEP_CHUNK=$chunk "${bm[@]}" \
        --device "$gpu" --keys "$keys" --rows $rows --kind lstm --bank --precision "$prec" \
        --json "$out/bank$keys-$gpu-$prec-chunk$chunk.json"
    done
    # Each wave's inputs packed into reused page-locked buffers (one copy up), then both
    # stagings with each wave's host / kernel / copy-back time.
    step "bank $keys keys $prec $gpu, pinned staging" 90 env TICKFLARE_BANK_STAGING=pinned "${bm[@]}" \
      --device "$gpu" --keys "$keys" --rows $rows --kind lstm --bank --precision "$prec" \
      --json "$out/bank$keys-$gpu-$prec-pinned.json"
    for staging in pageable pinned; do
      step "bank $keys keys $prec $gpu, $staging staging, profiled" 90 env TICKFLARE_BANK_PROFILE=1 \
        TICKFLARE_BANK_STAGING=$staging "${bm[@]}" --device "$gpu" --keys "$keys" --rows $rows --kind lstm \
        --bank --precision "$prec"
    done
    step "bank $keys keys $prec $gpu, candle's form" 90 "${candle[@]}" "${bm[@]}" --device "$gpu" --keys "$keys" \
      --rows $(($(scale "$keys") * 8)) --kind lstm --bank --precision "$prec" --json "$out/bank$keys-$gpu-$prec-candle.json"
  done
done

# 2. The CPU: its best path (plain LSTM code key by key, 1 thread and every core) and the bank.
want 2 && for keys in 1000 10000; do
  for prec in f64 f32; do
    step "keyed lstm $keys keys $prec cpu" 90 "${bm[@]}" --device cpu --keys "$keys" --rows $(($(scale "$keys") * 32)) \
      --kind lstm --precision "$prec" --json "$out/keys$keys-cpu-lstm-$prec.json"
  done
done
want 2 && for prec in f32 f64; do
  step "bank 1000 keys $prec cpu" 60 "${bm[@]}" --device cpu --keys 1000 --rows $(scale 2000) \
    --kind lstm --bank --precision "$prec" --json "$out/bank1000-cpu-$prec.json"
done

# 3. Forecasts on CUDA against the CPU: a banked per-key LSTM lane on the Binance sample.
head -n $((quick ? 600 : 3000)) data/binance_ticks_sample.jsonl >"$out/input.jsonl"
want 3 && for prec in f64 f32; do
  for run in cpu "$gpu" "$gpu-pinned" "$gpu-candle"; do
    dev=${run%%-*}
    p="pipelines/.gpu-check-bank-$run-$prec.toml"
    sed -e 's/^kind = "linear"/kind = "lstm"/' -e 's/^optimizer = "nlms"/optimizer = "adamw"/' \
      -e 's/^learning_rate = 0.05/learning_rate = 0.01/' -e '/^normalize = true/d' \
      -e '/^aggregate = /d' -e '/^experts = /d' \
      -e "s/^scope = \"per_key\"/scope = \"per_key\"\nbank = true\nwindow = 4\nhidden = [16]\nprecision = \"$prec\"/" \
      -e "s/^device = \"cpu\"/device = \"$dev\"/" pipelines/market-ticks.toml >"$p"
    kernel=()
    [[ $run == *-candle ]] && kernel=("${candle[@]}")
    [[ $run == *-pinned ]] && kernel=(env TICKFLARE_BANK_STAGING=pinned)
    step "pipeline bank lane $prec $run" 120 "${kernel[@]}" "$bin" backtest "$p" --input "$out/input.jsonl" --quiet --labels \
      --report "$out/bank-pipeline-$run-$prec"
    rm -f "$p"
  done
  for run in "$gpu" "$gpu-pinned" "$gpu-candle"; do
    step "compare $prec $run vs cpu" 60 python3 scripts/compare_predictions.py \
      "$out/bank-pipeline-cpu-$prec/predictions.parquet" "$out/bank-pipeline-$run-$prec/predictions.parquet" \
      --json "$out/compare-$prec-$run.json"
  done
done

# 4. Single models and 1,000 keyed models key by key, every kind.
want 4 && for dev in "$gpu" cpu; do
  step "single models $dev" 90 "${bm[@]}" --device "$dev" --rows $(scale 500) --json "$out/single-$dev.json"
  step "1000 keyed models, key by key, $dev" 120 "${bm[@]}" --device "$dev" --keys 1000 --rows $(scale 1000) \
    --kind linear --kind mlp --kind lstm --kind cnn1d --json "$out/keys1000-$dev.json"
  # The MLP and CNN in f32 (candle's F32 MLP had not run on a GPU when this was written).
  step "single f32 nets $dev" 60 "${bm[@]}" --device "$dev" --rows $(scale 500) --precision f32 \
    --kind mlp --kind cnn1d --json "$out/single-f32-$dev.json"
done

# 5. The solar tracker's network: pre-training, and the tracking pipeline with [tracker] device.
want 5 && for dev in "$gpu" cpu; do
  step "tracker training $dev" 90 "$bin" train-tracker --from data/solar/aia_171_level1.fits --sequences 1 \
    --hours 6 --epochs 3 --device "$dev" --out "$out/tracker-$dev.safetensors"
  p="pipelines/.gpu-check-solar-$dev.toml"
  sed "s/^\[tracker\]/[tracker]\ndevice = \"$dev\"/" pipelines/solar-tracking.toml >"$p"
  step "solar pipeline $dev" 90 "$bin" run "$p" --metrics-addr off --summary-json "$out/solar-$dev.json"
  rm -f "$p"
done

# 6. The bank on the CPU at 10,000 keys (slow there: last).
want 6 && step "bank 10000 keys f32 cpu" 60 "${bm[@]}" --device cpu --keys 10000 --rows $(scale 10000) \
  --kind lstm --bank --precision f32 --json "$out/bank10000-cpu-f32.json"

rm -f "$out"/tracker-*.safetensors "$out/input.jsonl"
{
  echo "== steps (rc 124: stopped at its limit)"
  column -t -s $'\t' "$out/steps.tsv"
  echo "== rates (rows/s)"
  for f in "$out"/*.json; do
    python3 - "$f" <<'EOF' 2>/dev/null || true
import json, sys, os
d = json.load(open(sys.argv[1]))
if isinstance(d, list):
    for r in d:
        share = f"  in model {100 * r['model_share']:.0f} %" if r.get('model_share') is not None else ""
        print(f"{os.path.basename(sys.argv[1]):<32} {r['kind']:<7} keys {r['keys']:>6} batch {r['batch']:>4} threads {r['threads']:>3} {r['device']:<5} {r['precision']} bank={r['bank']!s:<5} {r['rows_per_s']:>12.0f}{share}")
EOF
  done
} | tee "$out/summary.txt" | tee -a "$log"
tar -czf "$out/../gpu-check.tar.gz" -C "$(dirname "$out")" "$(basename "$out")" && mv "$out/../gpu-check.tar.gz" "$out/"

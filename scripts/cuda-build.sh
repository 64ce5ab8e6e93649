#!/usr/bin/env bash
# Builds `tickflare --features cuda` (candle's CUDA backend) on a machine WITHOUT a GPU
# or a system CUDA toolkit. Run by hand only; CI does not use it.
#
# What it does, in three phases:
#   1. pip: a Python venv outside the repository (default ~/.cache/tickflare/cuda-venv)
#      gets NVIDIA's CUDA 13.0 toolkit wheels from PyPI: nvcc, nvvm (cicc), crt headers,
#      cudart, cccl, cuBLAS, NVRTC, cuRAND. They unpack under site-packages/nvidia/cu13
#      (bin/nvcc, include/, lib/). Unversioned lib*.so links are added beside the wheels'
#      lib*.so.13 / .so.10 files so that `-lcublas` etc. resolve at link time.
#   2. stub: the driver library libcuda.so.1 comes with the NVIDIA driver, not with any
#      wheel, and exists only on a GPU machine. cudarc (candle's CUDA crate, built with
#      `dynamic-linking`) links `-lcuda`, so a link-time stub libcuda.so is generated:
#      soname libcuda.so.1, one empty function per cu* symbol of cudarc's driver
#      bindings (taken from the cudarc version in Cargo.lock). It is linked into
#      $CUDA_ROOT/lib/stubs, a folder cudarc's build script already hands the linker, so
#      no RUSTFLAGS are needed (RUSTFLAGS would make cargo rebuild every crate). It is only
#      used by the linker; at run time the real driver's libcuda.so.1 is loaded.
#   3. cargo: `cargo build --release --locked --features cuda --bin tickflare` with
#      nvcc on PATH, CUDA_ROOT and CUDA_COMPUTE_CAP, into its own target dir (default
#      ~/.cache/tickflare/cuda-target) so it never disturbs the CPU build's target dir.
#      With --target-dir pointing at the CPU build's target dir, only candle, cudarc and
#      tickflare itself are compiled again (the other crates' flags are the same); the
#      CUDA binary then replaces release/tickflare there until the next CPU build. There is no nvidia-smi to ask, so the GPU generation is
#      chosen here: default 90 (H100/H200). candle's kernels are then built for sm_90a
#      only and run on Hopper only; pass --compute-cap 80 (A100), 89 (L4/L40/RTX 40xx),
#      100 (B200)... for another GPU (a different cap rebuilds candle-kernels).
#
# Why the version pins: every toolkit wheel must be CUDA 13.0.
#   - the `-cu12` wheels ship no nvcc;
#   - unpinned wheels pull the newest release (13.5 at the time of writing): its nvvm
#     emits PTX ISA 9.5, which a 13.0 ptxas rejects, and cudarc 0.19 panics on
#     `nvcc --version` 13.5 ("Unsupported cuda toolkit version");
#   - cuRAND has its own numbering: 10.4.0.* is the CUDA 13.0 release;
#   - pip runs with --no-deps so that no wheel drags in a newer sibling.
# The binary then needs an NVIDIA driver that supports CUDA 13.0 (driver >= 580).
#
# Idempotent: an existing venv (pins satisfied), stub and target dir are reused;
# a rerun only does what cargo finds out of date. Heavy commands run under nice -n 19.
#
# Usage: scripts/cuda-build.sh [--venv DIR] [--target-dir DIR] [--compute-cap N]
#                              [--jobs N] [--setup-only]
# Env equivalents: TICKFLARE_CUDA_VENV, TICKFLARE_CUDA_TARGET, CUDA_COMPUTE_CAP,
# TICKFLARE_CUDA_JOBS. CARGO_TARGET_DIR is deliberately ignored (it usually points at
# the CPU build's target dir).
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

venv="${TICKFLARE_CUDA_VENV:-$HOME/.cache/tickflare/cuda-venv}"
target="${TICKFLARE_CUDA_TARGET:-$HOME/.cache/tickflare/cuda-target}"
cap="${CUDA_COMPUTE_CAP:-90}"
jobs="${TICKFLARE_CUDA_JOBS:-}"
setup_only=0
while (($#)); do
  case "$1" in
    --venv) venv="$2"; shift 2 ;;
    --target-dir) target="$2"; shift 2 ;;
    --compute-cap) cap="$2"; shift 2 ;;
    --jobs|-j) jobs="$2"; shift 2 ;;
    --setup-only) setup_only=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
repo="$PWD"
mkdir -p "$(dirname "$venv")" "$target"
venv="$(cd "$(dirname "$venv")" && pwd)/$(basename "$venv")"
target="$(cd "$target" && pwd)"

NICE=(nice -n 19)
PINS=(
  "nvidia-cuda-nvcc==13.0.*"
  "nvidia-nvvm==13.0.*"
  "nvidia-cuda-crt==13.0.*"
  "nvidia-cuda-runtime==13.0.*"
  "nvidia-cuda-cccl==13.0.*"
  "nvidia-cublas==13.0.*"
  "nvidia-cuda-nvrtc==13.0.*"
  "nvidia-curand==10.4.0.*"
)

now() { echo "$EPOCHREALTIME"; }
declare -a timings=()
phase_end() { timings+=("$(awk -v a="$2" -v b="$(now)" -v p="$1" -v n="$3" 'BEGIN { printf "%-6s %7.1f s  %s", p, b - a, n }')"); }
for tool in python3 cc cargo; do
  command -v "$tool" >/dev/null || { echo "$tool not found" >&2; exit 1; }
done

# ---- 1. pip: CUDA 13.0 toolkit wheels --------------------------------------------------
t0=$(now)
stamp="$venv/.tickflare-cuda-pins"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "${PINS[*]}" ]]; then
  note="reused $venv"
else
  echo "== pip: installing CUDA 13.0 wheels into $venv"
  [[ -x "$venv/bin/python" ]] || "${NICE[@]}" python3 -m venv "$venv"
  # --no-cache-dir: the venv is the cache; no second ~3 GB copy under ~/.cache/pip.
  "${NICE[@]}" "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-cache-dir --no-deps "${PINS[@]}"
  echo "${PINS[*]}" >"$stamp"
  note="installed"
fi
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
nvcc="$(find "$site/nvidia" -path '*/bin/nvcc' -type f 2>/dev/null | head -n1)"
[[ -n "$nvcc" ]] || { echo "nvcc not found under $site/nvidia: delete $venv and rerun" >&2; exit 1; }
cuda_root="$(dirname "$(dirname "$nvcc")")"
libdir="$cuda_root/lib"
[[ -d "$libdir" ]] || libdir="$(dirname "$(find "$cuda_root" -name 'libcudart.so.*' | head -n1)")"
# Unversioned names for the linker (-lcudart, -lcublas, -lcublasLt, -lnvrtc, -lcurand).
for so in "$libdir"/lib*.so.*; do
  [[ -e "$so" ]] || continue
  base="$(basename "$so")"; plain="${base%%.so.*}.so"
  [[ -e "$libdir/$plain" ]] || ln -s "$base" "$libdir/$plain"
done
version="$("$nvcc" --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p')"
[[ "$version" == 13.0 ]] || { echo "nvcc reports CUDA $version, expected 13.0: delete $venv and rerun" >&2; exit 1; }
phase_end pip "$t0" "$note (nvcc $version at $cuda_root)"

# ---- 2. stub libcuda.so for the linker ----------------------------------------------------
t0=$(now)
cudarc_version="$(awk '/^name = "cudarc"$/ {getline; gsub(/"/, "", $3); print $3; exit}' Cargo.lock)"
[[ -n "$cudarc_version" ]] || { echo "cudarc not in Cargo.lock" >&2; exit 1; }
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
find_bindings() { ls -d "$cargo_home"/registry/src/*/"cudarc-$cudarc_version"/src/driver/sys/mod.rs 2>/dev/null | head -n1 || true; }
bindings="$(find_bindings)"
if [[ -z "$bindings" ]]; then
  "${NICE[@]}" cargo fetch --locked >/dev/null
  bindings="$(find_bindings)"
fi
[[ -n "$bindings" ]] || { echo "cudarc $cudarc_version sources not found under $cargo_home/registry/src" >&2; exit 1; }
stubdir="$venv/libcuda-stub/cudarc-$cudarc_version"
mkdir -p "$cuda_root/lib/stubs"
ln -sfn "$stubdir/libcuda.so" "$cuda_root/lib/stubs/libcuda.so"
if [[ -f "$stubdir/libcuda.so" ]]; then
  note="reused $stubdir/libcuda.so"
else
  mkdir -p "$stubdir"
  grep -oE '^pub unsafe fn cu[A-Za-z0-9_]+' "$bindings" | awk '{print $4}' | sort -u >"$stubdir/symbols.txt"
  {
    echo "/* Link-time stub of the NVIDIA driver API (generated by scripts/cuda-build.sh */"
    echo "/* from cudarc $cudarc_version). Never load it at run time. */"
    sed 's/.*/void &(void) {}/' "$stubdir/symbols.txt"
  } >"$stubdir/libcuda_stub.c"
  "${NICE[@]}" cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stubdir/libcuda.so.tmp" "$stubdir/libcuda_stub.c"
  mv "$stubdir/libcuda.so.tmp" "$stubdir/libcuda.so"
  note="generated $stubdir/libcuda.so ($(wc -l <"$stubdir/symbols.txt") symbols)"
fi
phase_end stub "$t0" "$note"

# ---- 3. cargo build ---------------------------------------------------------------------------
export PATH="$cuda_root/bin:$PATH"
export CUDA_ROOT="$cuda_root"
export CUDA_COMPUTE_CAP="$cap"
export NVCC_PREPEND_FLAGS="-I$cuda_root/include/cccl${NVCC_PREPEND_FLAGS:+ $NVCC_PREPEND_FLAGS}"
export CARGO_TARGET_DIR="$target"
run_line="export LD_LIBRARY_PATH=$libdir\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"

if ((setup_only)); then
  echo "== setup only; to build by hand:"
  printf 'export %s=%q\n' PATH "$PATH" CUDA_ROOT "$CUDA_ROOT" CUDA_COMPUTE_CAP "$CUDA_COMPUTE_CAP" \
    NVCC_PREPEND_FLAGS "$NVCC_PREPEND_FLAGS" CARGO_TARGET_DIR "$CARGO_TARGET_DIR"
  echo "cargo build --release --locked --features cuda --bin tickflare"
  printf '%s\n' "${timings[@]}"
  exit 0
fi

t0=$(now)
echo "== cargo: release build with --features cuda into $target (compute cap $cap)"
"${NICE[@]}" cargo build --release --locked --features cuda --bin tickflare ${jobs:+--jobs "$jobs"}
phase_end cargo "$t0" "cargo build --release --locked --features cuda --bin tickflare"

bin="$target/release/tickflare"
echo
echo "== timings"
printf '  %s\n' "${timings[@]}"
echo "== binary: $bin ($(du -h "$bin" | cut -f1))"
echo "It needs a machine with an NVIDIA driver supporting CUDA 13.0 (driver >= 580; the"
echo "driver's libcuda.so.1 is loaded at start, even for CPU-only commands) and the wheels'"
echo "libraries (cudart, cuBLAS, NVRTC, cuRAND) on the library path:"
echo "  $run_line"
echo "  $bin bench-models --device cuda"
echo "(On another machine: install the same wheels, or copy $libdir, and adjust the path.)"

#!/usr/bin/env bash
# Long fuzz runs of every decoder (the schema-driven JSON decoder, CSV through a file
# mapping, FITS and Arrow IPC frames, solar labels): the fuzz tests of `cargo test`
# with a larger case budget, over several seeds.
#   scripts/fuzz.sh [SCALE] [SEEDS]   SCALE × the default budget (100), SEEDS seeds (4)
# A failure prints the seed (TICKFLARE_FUZZ_SEED replays it) and the input.
set -euo pipefail
cd "$(dirname "$0")/.."
scale="${1:-100}"
seeds="${2:-4}"
for ((s = 1; s <= seeds; s++)); do
  echo "== seed $s, ${scale}x the default budget"
  TICKFLARE_FUZZ_CASES=$((scale * 1000)) TICKFLARE_FUZZ_SEED=$s cargo test --release --test integration fuzz -- --nocapture
done

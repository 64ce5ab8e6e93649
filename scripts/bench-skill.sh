#!/usr/bin/env bash
# Regenerates the README's skill scoreboard; arguments go to scripts/bench_skill.py, e.g.
#   scripts/bench-skill.sh --md /tmp/skill.md --json /tmp/skill.json
set -euo pipefail
cd "$(dirname "$0")/.."
py="${RIVER_PYTHON:-$HOME/venvs/river/bin/python}"
[ -x "$py" ] || { echo "no River venv at $py: python3 -m venv ~/venvs/river && ~/venvs/river/bin/pip install river pandas numpy" >&2; exit 1; }
exec nice "$py" scripts/bench_skill.py "$@"

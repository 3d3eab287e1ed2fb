#!/usr/bin/env bash
# The whole job on the bundled presets: import → render → fit a tiny model → evaluate → match.
# Usage: bash tools/demo.sh [WORK_DIR]   (default: demo-run/, ignored by git)
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-demo-run}"
mkdir -p "$work"

dexed-data import-sysex presets -o "$work/presets.h5" --report "$work/import.json"
dexed-data render "$work/presets.h5" -o "$work/dataset.h5" --jobs "${JOBS:-2}"
dexed-data info "$work/dataset.h5"
preset-model fit --data "$work/dataset.h5" --out "$work/runs/tiny" --size tiny --epochs "${EPOCHS:-3}" --batch-size 16
echo "demo done: catalogue, dataset and run in $work/"

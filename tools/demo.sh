#!/usr/bin/env bash
# The whole toolkit on the bundled presets: import → render → fit a tiny model → evaluate it and the
# two baselines → match a test preset's rendered notes back to a .syx (also by re-render search, with and
# without the model) → interpolate between two voices.
# Usage: bash tools/demo.sh [WORK_DIR]   (default: demo-run/, ignored by git; JOBS=2, EPOCHS=3)
# A relative WORK_DIR (and the default) is taken from the folder the script is run from: run from the
# repository root, it writes demo-run/ there.
# A 3-epoch tiny model only shows that every step runs; its voices are not expected to sound right.
set -euo pipefail
case "${1:-}" in
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "error: $1: no such option; usage: bash tools/demo.sh [WORK_DIR]" >&2; exit 2 ;;
esac
if (( $# > 1 )); then echo "error: one WORK_DIR at most; usage: bash tools/demo.sh [WORK_DIR]" >&2; exit 2; fi
work="${1:-demo-run}"
[[ "$work" == /* ]] || work="$PWD/$work"   # the caller's folder, before the cd below
cd "$(dirname "$0")/.."
jobs="${JOBS:-2}"
run="$work/runs/tiny"
mkdir -p "$work"

dexed-data import-sysex presets -o "$work/presets.h5" --report "$work/import.json" --force
dexed-data render "$work/presets.h5" -o "$work/dataset.h5" --jobs "$jobs"
dexed-data info "$work/dataset.h5"
resume=(); [[ -f "$run/last.pt" ]] && resume=(--resume)   # a second demo run continues the first
preset-model fit --data "$work/dataset.h5" --out "$run" --size tiny --epochs "${EPOCHS:-3}" --batch-size 16 "${resume[@]}"

preset-model evaluate "$run" --jobs "$jobs" --force
preset-model evaluate "$run" --jobs "$jobs" --baseline knn --force
preset-model evaluate "$run" --jobs "$jobs" --baseline mean --force

# the first test preset's six notes, named ID_NAME_PITCH-VELOCITY.wav: match reads each file's note from its name
first_test=$(python -c "import json, sys; print(json.load(open(sys.argv[1]))['test'][0])" "$run/split.json")
rm -rf "$work/wav"
dexed-data export-wav "$work/dataset.h5" --ids "$first_test" -o "$work/wav" > /dev/null
preset-model match "$run" "$work"/wav/*.wav -o "$work/matched.syx" --wav "$work/rerender" --force
# the same sound by re-render search (a small budget keeps the demo short; 300 is the usual one):
# from the model's voice and the nearest presets, then from the dataset alone (no model)
preset-model match "$run" "$work"/wav/*.wav --refine 40 --jobs "$jobs" -o "$work/refined.syx" --wav "$work/rerender-refined" --force
preset-model match --data "$work/dataset.h5" "$work"/wav/*.wav --refine 40 --jobs "$jobs" -o "$work/refined-data.syx" --force

preset-model interpolate "$run" presets/toolkit_bank_a.syx:1 presets/toolkit_bank_b.syx:1 --steps 8 -o "$work/morph.syx" --force

cat <<DONE

demo done; everything is in $work/:
  presets.h5, import.json      catalogue of presets/ and its import report
  dataset.h5                   rendered dataset (6 notes per preset)
  runs/tiny/                   checkpoints (best.pt, last.pt), metrics.csv, split.json
  runs/tiny/eval-test*.md      evaluation reports (.json beside them): model, knn and mean baselines
  wav/ → matched.syx           a test preset's notes and the voice inferred from them
  rerender/                    that voice re-rendered on each note
  refined.syx, rerender-refined/   the voice found by a 40-render search (model + nearest presets), re-rendered
  refined-data.syx             the voice found from the dataset's presets alone (match --data)
  morph.syx                    8 voices from toolkit_bank_a.syx:1 to toolkit_bank_b.syx:1
DONE

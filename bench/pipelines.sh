#!/usr/bin/env bash
# The whole pipeline (01 .. 05, as run_all.sh runs it) of two trees side by side, each on its own cores, so that both
# share whatever else the machine does alike: this working tree, and an older tree given as a commit or a `git archive`
# tar file (default 5342fdd, the tree before issue 19). Prints one table of step times and their ratio.
#
#   CUDA_VISIBLE_DEVICES= bash bench/pipelines.sh [COMMIT|TAR] [CORES_NEW] [CORES_OLD]      (defaults 5342fdd 0,1 2,3)
#
# Run from the repo root with the environment set up (`.venv/bin/python`, or PYTHON=...). STEPS="01_make_dataset.py"
# runs fewer steps (a smoke test). Each tree writes its outputs and step logs under a temporary folder, printed first.
set -uo pipefail
OLD=${1:-5342fdd} CORES_NEW=${2:-0,1} CORES_OLD=${3:-2,3}
PY=${PYTHON:-$PWD/.venv/bin/python}
STEPS=${STEPS:-01_make_dataset.py 02_train.py 03_generate.py 04_chatgpt.py 05_report.py}
WORK=$(mktemp -d) && echo "work folder: $WORK"
mkdir -p "$WORK/new" "$WORK/old"
tar -cf - --exclude=./outputs --exclude=./.venv --exclude=./.git --exclude='./.p*' --exclude=./.gpu . | tar -xf - -C "$WORK/new"
if [ -f "$OLD" ]; then tar -xf "$OLD" -C "$WORK/old"; else git archive "$OLD" | tar -xf - -C "$WORK/old"; fi

pipeline() {  # $1 folder, $2 cores: each step's seconds into times.tsv
  cd "$1" && for step in $STEPS; do
    start=$(date +%s.%N)
    OMP_NUM_THREADS=2 taskset -c "$2" "$PY" "$step" > "log_$step.txt" 2>&1
    printf '%s\t%s\t%s\n' "$step" "$?" "$(echo "$(date +%s.%N) - $start" | bc)" >> times.tsv
  done
}
pipeline "$WORK/new" "$CORES_NEW" & pipeline "$WORK/old" "$CORES_OLD" & wait
echo "| step | today s | $OLD s | today / $OLD |"
echo "|---|---|---|---|"
paste "$WORK/new/times.tsv" "$WORK/old/times.tsv" | awk -F'\t' '{
  printf "| %s%s | %.0f | %.0f | %.2f× |\n", $1, ($2 || $5) ? " (exit " $2 "/" $5 ")" : "", $3, $6, $3 / $6
  a += $3; b += $6 } END { printf "| **total** | %.0f | %.0f | %.2f× |\n", a, b, a / b }'

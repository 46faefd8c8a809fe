#!/usr/bin/env bash
# Command 1 of the README: set up (first time only) and run the whole pipeline, steps 01 to 05.
# Each step skips work it already finished; edit the constants at the top of a script (or pass --flags to it when
# running it alone) to change what it does.
set -euo pipefail
cd "$(dirname "$0")"
bash setup.sh requirements.txt
for step in 01_make_dataset.py 02_train.py 03_generate.py 04_chatgpt.py 05_report.py; do
  echo "=== $step"
  start=$SECONDS
  if [ "$step" = 04_chatgpt.py ]; then
    # A failed API call must not cost the user the report: 04 records the failure and the report shows it.
    .venv/bin/python "$step" || echo "=== $step reported failures (exit $?); continuing to the report"
  else
    .venv/bin/python "$step"
  fi
  echo "=== $step took $((SECONDS - start))s"
done
echo "Report: outputs/report.md"

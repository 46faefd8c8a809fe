#!/usr/bin/env bash
# Command 2 of the README: set up (first time only, with the test extras) and run the tests.
# `bash test.sh -m "not slow"`: the fast tier for everyday edits (no real model loaded or trained, no llama.cpp server).
set -euo pipefail
cd "$(dirname "$0")"
bash setup.sh requirements-test.txt
.venv/bin/python -m pytest -q tests "$@"

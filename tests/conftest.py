"""Shared fixtures. `llama_server`: a real OpenAI-compatible server (llama-cpp-python's) serving the embedded
SmolLM2 GGUF on a free loopback port, started once per test session. Needs `pip install -r requirements-test.txt`.
`small_dataset`, `shipped_dataset`: step 1's output, built once per session for every module that only reads it.
`run_many`: settings refused up front, many cases in one interpreter. SLOW_MODULES: not collected by the fast tier."""
import csv
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# PYTHONPATH with the benchmark's switches first (bench/switches/sitecustomize.py: EMOJI_COMPILE, BENCH_AS_T4)
WITH_BENCH_SWITCHES = os.pathsep.join(filter(None, [str(ROOT / "bench" / "switches"), os.environ.get("PYTHONPATH")]))

from lib import prompts  # noqa: E402

# Modules whose tests are all slow only because they import torch and transformers (~10 s on 2 cores, more than their
# tests take): the fast tier (-m "not slow") does not even collect them, since collecting imports a module.
SLOW_MODULES = {"test_adapter_reset.py", "test_answer_only_loss.py", "test_cpu_bf16_weights.py", "test_full_batches.py"}


def pytest_ignore_collect(collection_path, config):
    if collection_path.name in SLOW_MODULES and config.getoption("markexpr").replace(" ", "") == "notslow":
        return True
    return None  # the default rules decide


# A made-up key the test server demands: lets tests check a wrong key is refused and that no key leaks to disk.
LLAMA_SERVER_KEY = "sk-test-7d3f9a61c2e84b05a1f0"
LLAMA_SERVER_START_S = 180


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def warm_up(base_url):
    """One tiny completion, so the first test's request is not the one that pays for the model's first run."""
    body = json.dumps({"model": "warm-up", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}).encode()
    request = urllib.request.Request(base_url + "/chat/completions", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {LLAMA_SERVER_KEY}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=LLAMA_SERVER_START_S) as response:
        json.load(response)


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python[server] is not installed - pip install -r requirements-test.txt")
    from lib.models import embedded_gguf

    gguf = embedded_gguf()
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama_server") / "server.log"
    log = log_path.open("w")
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
           "--api_key", LLAMA_SERVER_KEY, "--n_ctx", "1024", "--n_threads", "1", "--n_threads_batch", "1",
           "--n_batch", "1", "--n_ubatch", "1"]
    # One thread: on a small, busy machine llama.cpp's spinning worker threads stall each other (seconds per token).
    # Batches of one token: a llama.cpp built with -march=native (an older .venv, or a wheel pip cached before setup.sh
    # set GGML_NATIVE=OFF) crashed on an AMX Xeon on the first prompt evaluated in batches, and n_batch 1 did not
    # (issue 18). It costs 1.5-2x the wall time of a request (BENCHMARKS.md, "llama.cpp server on an AMX Xeon").
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + LLAMA_SERVER_START_S
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama.cpp server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            if time.time() > deadline:
                pytest.fail(f"llama.cpp server did not answer in {LLAMA_SERVER_START_S}s:\n"
                            f"{log_path.read_text()[-3000:]}")
            request = urllib.request.Request(base_url + "/models",
                                             headers={"Authorization": f"Bearer {LLAMA_SERVER_KEY}"})
            try:
                with urllib.request.urlopen(request, timeout=2) as response:
                    models = json.load(response)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.3)
        warm_up(base_url)
        yield SimpleNamespace(base_url=base_url, host="127.0.0.1", port=port, api_key=LLAMA_SERVER_KEY,
                              models=[m["id"] for m in models.get("data", [])], log=log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def run_script(script, *args, out, env=None, timeout=900):
    """Run one of the numbered scripts as a user would, with its outputs under `out` (EMOJI_OUT)."""
    full_env = {**os.environ, "EMOJI_OUT": str(out), "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, encoding="utf-8", timeout=timeout)


HEAVY = ("torch", "transformers", "datasets", "trl", "peft")
# Runs `python SCRIPT ARGS...` for each case in one interpreter (runpy, exit status from SystemExit, Python-level
# output captured), and notes which HEAVY modules were loaded by then (cumulative: a leak shows in every later case).
MANY = """import contextlib, io, json, runpy, sys, traceback
results = []
for script, args in json.load(sys.stdin):
    sys.argv, out, err, code = [script, *args], io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as end:
            if end.code is None or isinstance(end.code, int):
                code = end.code or 0
            else:  # as the interpreter does: the message printed, exit status 1
                print(end.code, file=err)
                code = 1
        except BaseException:
            traceback.print_exc()
            code = 1
    results.append([code, out.getvalue(), err.getvalue(), [m for m in %r if m in sys.modules]])
print(json.dumps(results))
""" % (HEAVY,)


def run_many(cases, *, out, env=None, timeout=600):
    """[(script, args)] refused by their settings checks: one process instead of one each, which is mostly start-up.
    Only for cases that end before a step takes its lock (store.lock is held per process). Returns, per case, a
    SimpleNamespace(returncode, stdout, stderr, heavy)."""
    full_env = {**os.environ, "EMOJI_OUT": str(out), "PYTHONUNBUFFERED": "1", **(env or {})}
    cases = [[str(ROOT / script), [str(a) for a in args]] for script, args in cases]
    result = subprocess.run([sys.executable, "-c", MANY], input=json.dumps(cases), cwd=ROOT, env=full_env,
                            capture_output=True, text=True, encoding="utf-8", timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return [SimpleNamespace(returncode=code, stdout=stdout, stderr=stderr, heavy=heavy)
            for code, stdout, stderr, heavy in json.loads(result.stdout.splitlines()[-1])]


# Enough ordinary pairs for the three splits with --min-test 10, a field that needs quoting, and the KNOWN prompts
# 01 insists on.
SMALL_ROWS = [(f"Ordinary sentence {i} about the weather.", "☀️🌧️") for i in range(40)] + \
    [("Let's go dancing tonight, friends.", "💃🕺🎶")] + [(s, "⭐") for s in prompts.KNOWN]


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory):
    """An outputs folder where 01 has run once on SMALL_ROWS (raw.csv beside it) with --min-test 10. Shared by several
    modules: read it, or copy it to change it."""
    out = tmp_path_factory.mktemp("small_dataset") / "out"
    raw = out.parent / "raw.csv"
    with raw.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([("text", "emoji"), *SMALL_ROWS])
    result = run_script("01_make_dataset.py", "--raw-csv", raw, "--min-test", "10", out=out, timeout=300)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def shipped_dataset(tmp_path_factory):
    """An outputs folder where 01 has run once on the shipped data/emoji_pairs.csv with its default settings."""
    out = tmp_path_factory.mktemp("shipped_dataset")
    result = run_script("01_make_dataset.py", out=out, timeout=300)
    assert result.returncode == 0, result.stderr
    return out


def report_section(report, heading):
    """Text of the report section whose '## ' heading starts with `heading`, up to the next '## ' heading."""
    return report.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]


def table_rows(text):
    """Cells of the data rows of the first Markdown table in `text`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[start + 2:end]]

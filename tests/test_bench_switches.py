"""bench/switches: the benchmark's EMOJI_COMPILE=true|false and BENCH_AS_T4=1, applied from a sitecustomize so that 02
itself has no such switch (issue 17: speed switches only the benchmark needs live in bench/)."""
import os
import subprocess
import sys

import pytest
from conftest import ROOT, WITH_BENCH_SWITCHES

# What 02 asks, on a CPU: with Unsloth pretended (the forced answer), and as it is (not the Unsloth path).
ASK = ("from lib import models\nprint(models.speed_plan('embedded', 5))\n"
       "models.uses_unsloth = lambda name: True\nprint(models.speed_plan('some/7b', 5))")


def ask(value, switch=True, code=ASK, **more):
    env = {**os.environ, "EMOJI_COMPILE": value, **more}
    if switch:
        env["PYTHONPATH"] = WITH_BENCH_SWITCHES
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)


@pytest.mark.parametrize("value, on", [("true", True), ("false", False)])
def test_the_switch_forces_the_unsloth_path_and_says_it_does_not_apply_elsewhere(value, on):
    result = ask(value)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"EMOJI_COMPILE={value} does not apply: compiling is a switch of the Unsloth (CUDA) path.", "(False, False)",
        f"compile and CUDA graphs: {'on' if on else 'off'} (5 steps planned; EMOJI_COMPILE={value})", f"({on}, {on})"]


def test_a_bad_value_is_one_line():
    result = ask("maybe")
    assert result.returncode == 2 and result.stderr == "error: EMOJI_COMPILE must be true or false, got 'maybe'\n"


def test_02_alone_has_no_compile_switch():
    # Without the benchmark's folder the variable means nothing: on a CPU speed_plan is off and silent.
    result = subprocess.run([sys.executable, "-c", "from lib import models\nprint(models.speed_plan('embedded', 5))"],
                            cwd=ROOT, env={**os.environ, "EMOJI_COMPILE": "true"}, capture_output=True, text=True)
    assert result.stdout == "(False, False)\n"


@pytest.mark.slow  # imports torch
def test_as_t4_torch_reports_no_bf16_from_its_import_on():
    result = ask("false", code="import torch\nprint(torch.cuda.is_bf16_supported(including_emulation=False))",
                 BENCH_AS_T4="1")
    assert result.returncode == 0 and result.stdout == "False\n", result.stderr
    patched = ask("false", code="import torch\nprint(torch.cuda.is_bf16_supported.__name__)", BENCH_AS_T4="1")
    assert patched.stdout == "no_bf16\n", patched.stderr

"""Settings are checked before any heavy import (one line naming the flag and what it accepts, exit status 2, no
model loaded), and Ctrl-C ends a script with one line and exit status 130 instead of a traceback."""
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from lib import settings, store
from conftest import ROOT, run_many, run_script


@pytest.fixture(scope="module")
def dataset_out(small_dataset, tmp_path_factory):
    """An outputs folder holding a small dataset, so the scripts get past their input checks if a setting does."""
    out = tmp_path_factory.mktemp("settings") / "out"
    shutil.copytree(small_dataset, out)
    return out


BAD_SETTINGS = [
    ("02_train.py", "--epochs", ""), ("02_train.py", "--epochs", "0"), ("02_train.py", "--epochs", "-1"),
    ("02_train.py", "--epochs", "abc"), ("02_train.py", "--epochs", "1.5"), ("02_train.py", "--epochs", "1,,5"),
    ("02_train.py", "--learning-rate", "-0.001"), ("02_train.py", "--max-steps", "0"),
    ("02_train.py", "--train-pairs", "some"), ("02_train.py", "--lora-dropout", "1"),
    ("02_train.py", "--batch-size", "0"), ("02_train.py", "--lora-layers", "5"), ("02_train.py", "--lora-layers", "9-3"),
    ("02_train.py", "--loraplus-ratio", "0"),
    ("03_generate.py", "--epochs", ""), ("03_generate.py", "--epochs", "0"), ("03_generate.py", "--epochs", "-1"),
    ("03_generate.py", "--epochs", "abc"), ("03_generate.py", "--epochs", "1.5"),
    ("03_generate.py", "--num-samples", "-1"), ("03_generate.py", "--top-p", "0"),
    ("05_report.py", "--epochs", "1,-5"),
    ("01_make_dataset.py", "--validation-fraction", "0"), ("01_make_dataset.py", "--validation-fraction", "1.5"),
    ("01_make_dataset.py", "--test-fraction", "1"), ("01_make_dataset.py", "--test-fraction", "nan"),
    ("01_make_dataset.py", "--max-emojis", "0"),
]


WRONG_TYPE = ("02_train.py", "--grad-accum", "1.5")


@pytest.fixture(scope="module")
def refused(dataset_out):
    """What each bad setting of BAD_SETTINGS and WRONG_TYPE made its script do, all run in one process."""
    cases = [*BAD_SETTINGS, WRONG_TYPE]
    results = run_many([(script, [flag, value]) for script, flag, value in cases], out=dataset_out)
    return dict(zip(cases, results))


def error_lines(result):
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize("script,flag,value", BAD_SETTINGS)
def test_a_bad_setting_is_one_line_naming_it_with_exit_2_before_any_heavy_import(refused, script, flag, value):
    result = refused[script, flag, value]
    lines = error_lines(result)
    assert result.returncode == 2, (result.stdout, lines)
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag} (") and " must be " in lines[0], lines
    assert "Traceback" not in result.stderr and "model:" not in result.stdout
    assert result.heavy == [], f"{script} imported {result.heavy} before checking {flag}"


def test_a_value_of_the_wrong_type_is_one_line_too(refused):
    result = refused[WRONG_TYPE]
    assert result.returncode == 2 and result.heavy == []
    assert error_lines(result) == ["error: argument --grad-accum: expected a whole number, got '1.5' (see --help)"]


def test_good_values_pass_the_checks(tmp_path):
    # Nothing to report from: the script gets past its settings and stops at the missing input instead.
    result = run_script("05_report.py", "--epochs", " 1, 5", "--max-cell", "100", out=tmp_path / "out", timeout=120)
    assert result.returncode == 1 and "not found - run `python 02_train.py` first" in result.stderr


def test_parse_epochs_gives_the_runs_in_order_without_repeats():
    assert settings.parse_epochs("1,5") == [1, 5]
    assert settings.parse_epochs(" 5 , 1,5") == [5, 1]
    for bad in ("", "0", "-1", "abc", "1.5", "1,,5", "1,", "٣"):
        with pytest.raises(ValueError):
            settings.parse_epochs(bad)


def test_path_settings_say_in_help_that_they_are_taken_from_the_current_directory():
    help_text = subprocess.run([sys.executable, str(ROOT / "01_make_dataset.py"), "--help"], cwd="/",
                               capture_output=True, text=True, timeout=120).stdout
    assert re.search(r"--raw-csv PATH\s+\(path; a relative path is taken from the\s+current\s+directory\)", help_text)
    assert str(store.RAW_CSV) in help_text.replace("\n", "").replace(" ", "")  # the default, as an absolute path


# ---------------------------------------------------------------- Ctrl-C
def interrupt_when(cmd, ready, out, settle_s=1.0, timeout=600):
    """Start `cmd`; once its output (stdout or stderr) matches `ready`, wait `settle_s` and send SIGINT.
    Returns (returncode, stdout, stderr). Read in chunks: progress bars redraw with carriage returns, not newlines."""
    # As in a terminal: a background job of a non-interactive shell (a CI runner's) inherits SIGINT ignored.
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "EMOJI_OUT": str(out), "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    chunks = {proc.stdout: [], proc.stderr: []}

    def drain(stream):
        while data := stream.read1(65536):
            chunks[stream].append(data)

    readers = [threading.Thread(target=drain, args=(stream,)) for stream in chunks]
    for reader in readers:
        reader.start()
    text = lambda stream: b"".join(chunks[stream]).decode("utf-8", errors="replace")  # noqa: E731
    try:
        deadline = time.time() + timeout
        while proc.poll() is None and time.time() < deadline:
            if re.search(ready, text(proc.stdout) + text(proc.stderr), re.MULTILINE):
                time.sleep(settle_s)
                proc.send_signal(signal.SIGINT)
                break
            time.sleep(0.1)
        proc.wait(timeout=max(1, deadline - time.time()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for reader in readers:
            reader.join()
    return proc.returncode, text(proc.stdout), text(proc.stderr)


@pytest.mark.slow  # trains the embedded model until interrupted
def test_ctrl_c_during_training_is_one_line_and_exit_130(dataset_out):
    code, stdout, stderr = interrupt_when(
        [sys.executable, str(ROOT / "02_train.py"), "--model", "embedded", "--epochs", "1", "--max-steps", "10000"],
        r"\| [1-9]\d*/10000 \[", out=dataset_out)  # the training progress bar has moved: inside the torch loop
    assert code == 130, (stdout, stderr[-3000:])
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    # Progress bars end with carriage returns, not newlines: the message must be the last thing written.
    assert [piece for piece in re.split(r"[\r\n]+", stderr) if piece.strip()][-1] == settings.INTERRUPTED
    assert stderr.count(settings.INTERRUPTED) == 1
    assert not (dataset_out / "adapters" / "epochs1" / "run.json").exists()  # an unfinished run is not passed off


def test_ctrl_c_while_worker_threads_run_still_exits_at_once(tmp_path):
    # The interrupt lands in the main thread while a non-daemon worker is busy: exit 130 now, not when it ends.
    program = ("import sys, threading, time\n"
               f"sys.path.insert(0, {str(ROOT)!r})\n"
               "from lib import settings\n"
               "sys.argv = ['prog']\n"
               "settings.configure({}, 'test')\n"
               "threading.Thread(target=time.sleep, args=(60,)).start()\n"
               "print('ready', flush=True)\n"
               "while True:\n"
               "    sum(range(10000))\n")
    start = time.time()
    code, _, stderr = interrupt_when([sys.executable, "-c", program], r"^ready", out=tmp_path, settle_s=0.3,
                                     timeout=120)
    assert code == 130 and stderr == settings.INTERRUPTED + "\n" and time.time() - start < 30

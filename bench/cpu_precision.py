"""CPU: the 1-epoch fine-tune of the embedded model in float32 and under bf16 autocast, side by side in one run.

Runs `02_train.py --epochs 1` twice in fresh processes on the same dataset (outputs/dataset, from 01_make_dataset.py),
once with EMOJI_CPU_BF16=0 and once with EMOJI_CPU_BF16=1, and prints train seconds, seconds per step and the
validation loss of each, with ratios. Usage: .venv/bin/python bench/cpu_precision.py [--repeats 1]"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tabulate import tabulate

ROOT = Path(__file__).resolve().parent.parent
parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--repeats", type=int, default=1)
args = parser.parse_args()
if not (ROOT / "outputs" / "dataset" / "dataset_dict.json").exists():
    sys.exit("error: outputs/dataset not found - run `python 01_make_dataset.py` first.")

results = {}
for repeat in range(args.repeats):
    for bf16 in ("0", "1"):
        with tempfile.TemporaryDirectory() as out:
            shutil.copytree(ROOT / "outputs" / "dataset", Path(out) / "dataset")
            subprocess.run([sys.executable, str(ROOT / "02_train.py"), "--epochs", "1"], cwd=ROOT, check=True,
                           env={**os.environ, "EMOJI_OUT": out, "EMOJI_CPU_BF16": bf16},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            run = json.loads((Path(out) / "adapters" / "epochs1" / "run.json").read_text())
        results.setdefault(bf16, []).append(run)
        print(f"repeat {repeat + 1}, EMOJI_CPU_BF16={bf16}: {run['train_seconds']} s", flush=True)

rows = []
base = min(r["train_seconds"] for r in results["0"])
for bf16, runs in results.items():
    best = min(runs, key=lambda r: r["train_seconds"])
    rows.append([best["dtype"], best["device"], best["steps"], f"{best['train_seconds']:.1f}",
                 f"{best['train_seconds'] / best['steps']:.2f}", f"{best['validation_losses'][-1]:.4f}",
                 f"{base / best['train_seconds']:.2f}x"])
print(tabulate(rows, headers=["precision", "device", "steps", "train s (best)", "s/step", "final val loss",
                              "speed vs fp32"], tablefmt="github"))

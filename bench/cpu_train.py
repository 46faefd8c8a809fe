"""CPU training benchmark (issue 19): variants of 02_train.py's training step on the embedded model, side by side in
one run, each in a fresh process through bench/instrument.py, so what is timed is the real 02 step (its data, batch,
LoRA and loss), with nothing changed but the variant. One command, one table:

    python bench/cpu_train.py                          # every variant, 40 steps each
    python bench/cpu_train.py --only today,chunk32 --steps 60
    python bench/cpu_train.py --profile today --steps 12   # where a step's time goes: torch.profiler over steps 6-7,
                                                       # self CPU time by operation and input shape

Each variant trains --steps steps of one run (02 --epochs 1 --max-steps N) on the same --train-pairs pairs with the same
seed, then 02 measures the validation loss where the run stopped. Reported: training examples per second over the
steps after the first three (the step time bench/instrument.py records), the ratio to the first variant, the
validation loss after the same number of training examples, the time of one validation pass, padded / real tokens, and
the process's peak resident memory. Noise: "today-seed43" is the first variant with another seed; the spread of the
validation loss between the two is what "within noise" is measured against. The dataset must exist (run 01 first).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from lib import models  # noqa: E402  (torch is imported only when a function needs it)

# Today's default, stated in full, so the baseline keeps meaning "before issue 19" whatever 02's defaults become:
# batch 4 with LoRA dropout, TRL's own output-layer chunks, float32 weights (under bf16 autocast on a CPU with AMX).
TODAY = ["--batch-size", "4", "--learning-rate", "5e-4", "--loraplus-ratio", "16", "--lora-dropout", "0.05"]
OLD = {"BENCH_LM_HEAD_CHUNK": "256", "BENCH_WEIGHTS": "float32"}
CHUNK32 = {**OLD, "BENCH_LM_HEAD_CHUNK": "32"}
# name -> (02 flags, environment for bench/instrument.py); flags are given on top of 02's defaults of the day.
VARIANTS = {
    "today": (TODAY, OLD),
    "today-seed43": (TODAY + ["--seed", "43"], OLD),
    "chunk32": (TODAY, CHUNK32),
    "no-dropout": (TODAY + ["--lora-dropout", "0"], OLD),
    "length-grouped": (TODAY, {**OLD, "BENCH_SFT": json.dumps({"train_sampling_strategy": "group_by_length"})}),
    "bf16-weights": (TODAY, {**OLD, "BENCH_WEIGHTS": "bfloat16"}),
    "one-thread": (TODAY, {**OLD, "OMP_NUM_THREADS": "1"}),
    "chunk32+no-dropout": (TODAY + ["--lora-dropout", "0"], CHUNK32),
    "chunk32+no-dropout+batch8": (TODAY + ["--lora-dropout", "0", "--batch-size", "8"], CHUNK32),
    "defaults-now": ([], {}),  # 02 exactly as it is now, no flags (with AMX: + bf16 frozen weights)
    "defaults-now-fp32-weights": ([], {"BENCH_WEIGHTS": "float32"}),  # = chunk32+no-dropout+batch8
    "defaults-now+top20": (["--lora-layers", "10-29"], {}),  # adapters and backpropagation on blocks 10-29 only
    "defaults-now+batch16": (["--batch-size", "16"], {}),
}


def run_variant(name, flags, env, args, out):
    folder = out / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for sub in ("dataset", "cache"):  # one dataset and one converted model for every variant
        (folder / sub).symlink_to((ROOT / "outputs" / sub).resolve())
    given = [int(flags[i + 1]) for i, f in enumerate(flags) if f == "--batch-size"]
    batch = given[-1] if given else models.auto_settings(models.EMBEDDED)["BATCH_SIZE"]  # the last one given wins
    steps = args.steps * 4 // batch  # every variant sees the same number of training examples
    cmd = [sys.executable, str(ROOT / "bench/instrument.py"), "02_train.py", "--epochs", "1", "--max-steps",
           str(steps), "--train-pairs", str(args.train_pairs), "--export", "none", "--force"]
    cmd += flags
    events = folder / "events.json"
    environ = {**os.environ, **env, "EMOJI_OUT": str(folder), "BENCH_EVENTS": str(events), "PYTHONUNBUFFERED": "1"}
    if args.profile:
        environ["BENCH_PROFILE"] = "6:8"
    start = time.time()
    with open(folder / "log.txt", "w") as log:
        rc = subprocess.run(cmd, cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc:
        raise SystemExit(f"{name}: 02 failed (rc {rc}); see {folder / 'log.txt'}")
    ev = json.loads(events.read_text())
    run = ev["runs"][0]
    times = [s for _, s in run["steps"]][3:]
    rows = [b[0] for b in run["batches"]][3:]
    padded = sum(b[0] * b[1] for b in run["batches"])
    real = sum(b[2] for b in run["batches"])
    adapter = folder / "adapters" / "epochs1"
    losses = json.loads((adapter / "losses.json").read_text())["validation"]
    facts = json.loads((adapter / "run.json").read_text())
    # 02 evaluates the untrained adapter before train() (timed from the load's end to train begin) and once after
    evaluation = run["begin"] - ev["loads"][0]["end"]
    result = {"variant": name, "flags": cmd[3:], "env": env, "steps": len(run["steps"]),
              "examples_per_s": sum(rows) / sum(times), "median_step_s": statistics.median(times),
              "val_loss_start": losses[0]["loss"], "val_loss": losses[-1]["loss"], "eval_pass_s": evaluation,
              "padding": padded / real, "peak_gib": facts["peak_memory_gib"], "wall_s": time.time() - start,
              "profile": ev.get("profile", {}).get("top_host_by_shape")}
    (folder / "result.json").write_text(json.dumps(result, indent=1))
    return result


def table(results):
    base = results[0]["examples_per_s"]
    lines = ["| variant | examples/s | × first | median step s | val loss after | set-up + 1st validation pass s | padded/real "
             "| peak GiB |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['variant']} | {r['examples_per_s']:.2f} | {r['examples_per_s'] / base:.2f}× | "
                     f"{r['median_step_s']:.2f} | {r['val_loss']:.3f} | {r['eval_pass_s']:.1f} | "
                     f"{r['padding']:.2f} | {r['peak_gib']:.2f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated variant names (default: all), run in the order given")
    parser.add_argument("--profile", help="profile steps 6-8 of this one variant and print its top operations")
    parser.add_argument("--steps", type=int, default=40, help="training steps of batch 4 per variant")
    parser.add_argument("--train-pairs", type=int, default=400)
    parser.add_argument("--out", default="outputs/bench-cpu")
    args = parser.parse_args()
    if not (ROOT / "outputs/dataset/stamp.json").exists():
        raise SystemExit("no dataset: run `python 01_make_dataset.py` first")
    names = [args.profile] if args.profile else (args.only.split(",") if args.only else list(VARIANTS))
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    out = (ROOT / args.out).resolve()
    import torch  # only for the machine line

    print(f"# CPU: {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}, torch "
          f"{torch.__version__}, bf16 matmul instructions: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}")
    results = []
    for name in names:
        flags, env = VARIANTS[name]
        results.append(run_variant(name, flags, env, args, out))
        print(f"{name}: {results[-1]['examples_per_s']:.2f} examples/s, validation loss {results[-1]['val_loss']:.3f} "
              f"({results[-1]['wall_s']:.0f} s)", flush=True)
        if args.profile:
            print(results[-1]["profile"])
    print(table(results))
    (out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

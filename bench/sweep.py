"""Settings sweep for a model's fine-tune, judged on held-out quality (validation F1), not on training loss.

Each configuration is one run of the project's own 02_train.py (in its own outputs folder, sharing one dataset), then
greedy answers to the whole validation split from every adapter, scored with lib.metrics.compare. The test split is
never read. Prints one table (configuration, epochs, validation loss, emoji-only, F1 and soft F1 with 95% intervals) and
writes it as JSON. Usage (from the repo root; the dataset must exist, run 01 first):

    python bench/sweep.py --model embedded --out outputs/sweep [--only NAME,NAME]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# name -> (02_train.py flags, epochs runs). A name starting with "augment" trains on a dataset that 01 built with
# --augment true (same split, extra templated pairs in train). Every run states every setting the sweep varies, so a
# configuration means the same thing whatever 02's defaults are now.
PLAIN = ["--loraplus-ratio", "1"]
# First round (issue 11): one factor at a time around the defaults of then ("base": batch 8, lr 1e-3, plain LoRA r=16
# on all linear layers).
BASE = ["--batch-size", "8", "--learning-rate", "1e-3", *PLAIN]
CONFIGS = {
    "base": (BASE, "1,3"),
    "augment": (BASE, "1,3"),
    "lr5e-4": (BASE + ["--learning-rate", "5e-4"], "1"),
    "lr2e-3": (BASE + ["--learning-rate", "2e-3"], "1,3"),
    "lr4e-3": (BASE + ["--learning-rate", "4e-3"], "1"),
    "r64": (BASE + ["--lora-r", "64", "--lora-alpha", "128"], "1"),
    "attention-only": (BASE + ["--lora-targets", "q_proj,k_proj,v_proj,o_proj"], "1"),
    "batch4": (BASE + ["--batch-size", "4"], "1"),
    "batch16": (BASE + ["--batch-size", "16"], "1"),
    "batch4-lr2e-3": (BASE + ["--batch-size", "4", "--learning-rate", "2e-3"], "1,3"),
    "subset600": (BASE + ["--train-pairs", "600"], "1,5"),
    "subset600-batch4-lr2e-3": (BASE + ["--train-pairs", "600", "--batch-size", "4", "--learning-rate", "2e-3"], "1,5"),
}
# Second round (issue 11): what one pass can learn, around the first round's choice (batch 4, lr 2e-3). More optimizer
# steps per pass (smaller batches), a learning rate that does not decay within the pass, adapters on the top blocks
# only (a cheaper step on a CPU), rank, LoRA+ (the current embedded default: lr 5e-4, ratio 16).
B4 = ["--batch-size", "4", "--learning-rate", "2e-3", *PLAIN]
LP = ["--batch-size", "4", "--learning-rate", "5e-4", "--loraplus-ratio", "16"]
CONST = ["--lr-scheduler", "constant_with_warmup"]
CONFIGS.update({
    "b4-lr2e-3": (B4, "1"),
    "b4-lr2e-3-const": (B4 + CONST, "1,3"),
    "b4-lr4e-3-const": (B4 + ["--learning-rate", "4e-3", *CONST], "1"),
    "b4-lr2e-3-top10": (B4 + ["--lora-layers", "20-29"], "1"),
    "b4-lr2e-3-r64": (B4 + ["--lora-r", "64", "--lora-alpha", "128"], "1"),
    "b4-lr5e-4-loraplus16": (LP, "1"),
    "b4-lr2e-4-loraplus16": (LP + ["--learning-rate", "2e-4"], "1"),
    "augment-b4-lr2e-3": (B4, "1"),
    "b2-lr1e-3": (B4 + ["--batch-size", "2", "--learning-rate", "1e-3"], "1"),
    "b1-lr1e-3": (B4 + ["--batch-size", "1", "--learning-rate", "1e-3"], "1"),
    "b1-lr5e-4-const": (B4 + ["--batch-size", "1", "--learning-rate", "5e-4", *CONST], "1"),
    "b4-lr1e-3-loraplus16": (LP + ["--learning-rate", "1e-3"], "1"),
    "b4-lr5e-4-loraplus32": (LP + ["--loraplus-ratio", "32"], "1"),
    "b4-lr5e-4-loraplus16-top10": (LP + ["--lora-layers", "20-29"], "1,3"),
    "b4-lr5e-4-loraplus16-cosine": (LP + ["--lr-scheduler", "cosine"], "1"),
    "b4-lr5e-4-loraplus16-3ep": (LP, "3"),
    "b2-lr2e-4-loraplus16": (LP + ["--batch-size", "2", "--learning-rate", "2e-4"], "1"),
    "sub600-b4-lr5e-4-loraplus16-top10": (LP + ["--lora-layers", "20-29", "--train-pairs", "600"], "1,5"),
    # On the CPU, with the CPU default's 400 pairs: the first round's choice against LoRA+.
    "sub400-b4-lr2e-3": (B4 + ["--train-pairs", "400"], "1,5"),
    "sub400-b4-lr5e-4-loraplus16": (LP + ["--train-pairs", "400"], "1,5"),
})
# Third round (issue 19): what the CPU default's budget buys. Every run costs the same six passes over 800 pairs at
# batch 8 as the CPU default (no LoRA dropout), except where the name says more data or a cheaper step: the learning
# rate and its schedule, LoRA+ ratio, rank, batch 4 on the pairs that take the same CPU time (batch 4 gives 1.18x fewer
# examples per second), templated augmentation inside the 800, early stopping, and what 1,000 or all pairs would give.
C8 = ["--train-pairs", "800", "--batch-size", "8", "--lora-dropout", "0", "--learning-rate", "5e-4",
      "--loraplus-ratio", "16"]
CONFIGS.update({
    "cpu800": (C8, "1,5"),
    "cpu800-lr1e-3": (C8 + ["--learning-rate", "1e-3"], "1,5"),
    "cpu800-lr2e-3": (C8 + ["--learning-rate", "2e-3"], "1,5"),
    "cpu800-lr1e-3-lp8": (C8 + ["--learning-rate", "1e-3", "--loraplus-ratio", "8"], "1,5"),
    "cpu800-plain-lr2e-3": (C8 + ["--learning-rate", "2e-3", *PLAIN], "1,5"),
    "cpu800-cosine": (C8 + ["--lr-scheduler", "cosine"], "1,5"),
    "cpu800-r32": (C8 + ["--lora-r", "32", "--lora-alpha", "64"], "1,5"),
    "cpu680-b4": (C8 + ["--train-pairs", "680", "--batch-size", "4"], "1,5"),
    "augment-cpu800": (C8, "1,5"),
    "cpu800-early": (C8 + ["--early-stopping", "true"], "1,5"),
    "cpu800-top20": (C8 + ["--lora-layers", "10-29"], "1,5"),
    "cpu1000": (C8 + ["--train-pairs", "1000"], "1,5"),
    "cpu-all": (C8 + ["--train-pairs", "all"], "1,5"),
})
# Fourth round (issue 19): does templated augmentation pay at the CUDA default (every pair, batch 4, LoRA dropout 0.05,
# lr 5e-4, LoRA+ 16)? 5 epochs, three seeds each, since one seed's interval on 100 validation pairs is about +-0.05.
CUDA = ["--train-pairs", "all", "--batch-size", "4", "--lora-dropout", "0.05", "--learning-rate", "5e-4",
        "--loraplus-ratio", "16"]
for seed in (42, 43, 44):
    CONFIGS.update({f"{a}cuda-seed{seed}": (CUDA + ["--seed", str(seed)], "5") for a in ("", "augment-")})


def train(name, flags, epochs, model, work):
    """One 02_train.py invocation into work/name, sharing the dataset built by 01; its output goes to train.log there."""
    out = work / name
    out.mkdir(parents=True, exist_ok=True)
    # Parallel runs share the host's cores: a few threads each (SWEEP_THREADS, default 2) is plenty for a small model's
    # host-side work.
    threads = os.environ.get("SWEEP_THREADS", "2")
    env = {**os.environ, "EMOJI_OUT": str(out), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": threads}
    if name.startswith("augment"):
        result = subprocess.run([sys.executable, str(ROOT / "01_make_dataset.py"), "--augment", "true"], env=env,
                                cwd=ROOT, capture_output=True, text=True)
        if result.returncode:
            raise SystemExit(f"{name}: 01_make_dataset.py failed\n{result.stderr[-2000:]}")
    elif not (out / "dataset").exists():
        shutil.copytree(work / "dataset", out / "dataset")
    start = time.time()
    result = subprocess.run([sys.executable, str(ROOT / "02_train.py"), "--model", model, "--epochs", epochs, *flags],
                            env=env, cwd=ROOT, capture_output=True, text=True)
    (out / "train.log").write_text(result.stdout + "\n" + result.stderr, encoding="utf-8")
    if result.returncode:  # one failed configuration must not cost the others their results
        print(f"{name}: 02_train.py failed (exit {result.returncode}):\n{result.stderr[-1500:]}", flush=True)
    return time.time() - start


def evaluate(model_name, adapters, validation):
    """Greedy answers of each adapter to the validation sentences and to the non-emoji questions (asked without the
    emoji instruction): {adapter: ([validation answers], [general answers])}."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    from lib import models, prompts

    tokenizer = AutoTokenizer.from_pretrained(str(next(iter(adapters.values()))))
    budget = models.answer_budget(tokenizer, [e for _, e in validation], 8)
    texts = [prompts.render(tokenizer, prompts.emoji_messages(s)) for s, _ in validation]
    general = [prompts.render(tokenizer, prompts.plain_messages(q)) for q in prompts.GENERAL]
    model, _, _ = models.load(model_name)
    answers = {}
    for key, path in adapters.items():
        peft = PeftModel.from_pretrained(model, str(path), adapter_name="a")
        peft.eval()
        models.for_inference(peft)
        answers[key] = ([text for text, _ in models.generate(peft, tokenizer, texts, budget, batch_size=64, desc=key)],
                        [text for text, _ in models.generate(peft, tokenizer, general, 96, batch_size=8, desc=key)])
        model = peft.unload()  # back to the plain base model for the next adapter
    return answers


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--out", default=str(ROOT / "outputs" / "sweep"))
    parser.add_argument("--only", default="", help="comma-separated configuration names (default: all)")
    parser.add_argument("--extra", default="", help="flags added to every 02_train.py run, e.g. '--max-steps 2'")
    parser.add_argument("--parallel", type=int, default=1, help="training runs at once (a small model leaves a big "
                        "GPU mostly idle, so several runs share it well)")
    args = parser.parse_args()

    from datasets import load_from_disk
    from tabulate import tabulate

    from lib import metrics, models, store

    work = Path(args.out).resolve()
    work.mkdir(parents=True, exist_ok=True)
    shutil.copytree(store.DATASET_DIR, work / "dataset", dirs_exist_ok=True)
    data = load_from_disk(str(work / "dataset"))
    validation = list(zip(data["validation"]["sentence"], data["validation"]["emojis"]))
    names = [n for n in CONFIGS if not args.only or n in args.only.split(",")]
    from concurrent.futures import ThreadPoolExecutor

    if models.resolve(args.model) == models.EMBEDDED:
        models._embedded_copy()  # the one-time GGUF conversion, before the runs that read its result

    with ThreadPoolExecutor(args.parallel) as pool:
        list(pool.map(lambda n: train(n, CONFIGS[n][0] + args.extra.split(), CONFIGS[n][1], args.model, work),
                      names))
    adapters, runs = {}, {}
    for name in names:
        for e in CONFIGS[name][1].split(","):
            key, path = f"{name} / {e} ep", work / name / "adapters" / f"epochs{e}"
            if (path / "run.json").exists():
                adapters[key], runs[key] = path, json.loads((path / "run.json").read_text())
    answers = evaluate(runs[next(iter(runs))]["model"], adapters, validation)

    rows, results = [], []
    for key, (texts, general) in answers.items():
        leak = sum(metrics.is_mostly_emoji(t) for t in general)
        scores = [metrics.compare(t, ref) for t, (_, ref) in zip(texts, validation)]
        only = sum(metrics.is_emoji_only(t) for t in texts)
        f1 = [s["f1"] for s in scores]
        soft = [s["soft_f1"] for s in scores]
        run = runs[key]
        # run.json's settings are 02's resolved constants (UPPER_CASE, no "auto" left).
        result = {"config": key, "flags": CONFIGS[key.split(" / ")[0]][0], "epochs": run["epochs"],
                  "learning_rate": run["settings"]["LEARNING_RATE"], "validation_loss": run["validation_losses"][-1],
                  "emoji_only": only / len(texts), "f1": sum(f1) / len(f1), "f1_ci": metrics.bootstrap_interval(f1),
                  "soft_f1": sum(soft) / len(soft), "train_seconds": run["train_seconds"], "n": len(texts),
                  "general_leak": leak / len(general), "general_answers": general, "f1_per_pair": f1}
        results.append(result)
        lo, hi = result["f1_ci"]
        rows.append([key, f"{result['validation_loss']:.3f}", f"{100 * result['emoji_only']:.0f}%",
                     f"{result['f1']:.3f} [{lo:.2f}-{hi:.2f}]", f"{result['soft_f1']:.3f}",
                     f"{leak}/{len(general)}", f"{run['train_seconds']:.0f}"])
    print(f"model {args.model}, {len(validation)} validation pairs, device {runs[next(iter(runs))]['device']}")
    print(tabulate(rows, headers=["configuration", "val loss", "emoji-only", "F1 [95% CI]", "soft F1",
                                     "non-emoji answered in emoji", "train s"],
                   tablefmt="github", disable_numparse=True))
    # Augmented against plain on the same validation pairs: the paired difference's interval is the sharper test.
    by_key = {r["config"]: r["f1_per_pair"] for r in results}
    for key, f1 in by_key.items():
        if key.startswith("augment-") and (plain := key.removeprefix("augment-")) in by_key:
            diff = [a - b for a, b in zip(f1, by_key[plain])]
            lo, hi = metrics.bootstrap_interval(diff)
            print(f"{key} minus {plain}: F1 {sum(diff) / len(diff):+.3f} [{lo:+.3f} to {hi:+.3f}], paired")
    (work / "sweep.json").write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()

"""GPU benchmark of the project's own training and generation code: the Unsloth path vs plain transformers + PEFT +
bitsandbytes 4-bit, same LoRA settings, same data (issue #5).

    python bench/benchmark.py --paths unsloth,plain            # one GPU, no download: builds the shaped model first
    python bench/benchmark.py --table bench_unsloth.json bench_plain.json   # print the table of earlier results

For each path, in fresh processes, exactly as a user runs them: 01_make_dataset.py, then 02_train.py (the real
1-epoch and 5-epoch runs on the whole dataset, default settings) and 03_generate.py (base model and both fine-tunes on
every report prompt), each started through bench/instrument.py, which times loads, every training step and every
generate call without changing the scripts. The plain path is the same scripts with EMOJI_NO_UNSLOTH=1, where
common.load_model loads the model with bitsandbytes 4-bit (nf4) and 02 adds the same LoRA adapters through PEFT.

The model is bench/make_llama2_shaped.py's random-weight Llama-2-7B-shaped model (the real weights can't be downloaded
there), so the answers are noise: the base model never stops before max_new_tokens, the fine-tunes learn to stop early.

Reported per path: import + load seconds, first-step and warm-up seconds, steady-state tokens/s (answer and prompt
tokens, no padding, over epochs 2-5 of the 5-epoch run, step time only), MFU = 6 * N * tokens/s / peak with
N = 6.74e9 parameters and the card's dense bf16 peak (989 TFLOP/s for an H100 SXM), wall time of 02 (both runs,
process start to exit) and 03, peak GPU memory, batched vs one-prompt-at-a-time generation, and the loss of one fixed
batch under the same (Unsloth-trained) adapter in both paths.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L4": 121.0, "T4": 65.0}  # dense bf16 (fp16 on T4)


def log(*args):
    print(f"[bench {time.strftime('%H:%M:%S')}]", *args, flush=True)


def run(cmd, env, logfile, timeout):
    """Run a command, output to logfile; return (returncode, wall seconds)."""
    start = time.time()
    with open(logfile, "w", encoding="utf-8") as f:
        try:
            code = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    return code, round(time.time() - start, 1)


def versions():
    out = {}
    for name in ("torch", "transformers", "peft", "trl", "accelerate", "bitsandbytes", "unsloth", "unsloth_zoo"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def mfu_pct(model_dir, gpu, tokens_per_s):
    """MFU = 6 * N * tokens/s / the card's dense bf16 peak, N from the shaped model's summary; None for another model
    or an unknown card."""
    shaped = Path(model_dir) / "shaped_model.json"
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in gpu), None)
    if peak is None or not shaped.exists():
        return None
    params = json.loads(shaped.read_text())["params"]
    return round(100 * 6 * params * tokens_per_s / (peak * 1e12), 1)


def padded_batch(rows, pad_id):
    """Right-padded input_ids, attention mask and answer-only labels (-100 elsewhere) of common.tokenize_example
    rows: one fixed batch for the loss-equivalence checks."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor([t if m else -100 for t, m in zip(r["input_ids"], r["completion_mask"])])
    return ids, mask, labels


def epoch_tokens(model_dir, dataset_dir):
    """Real tokens (prompt + answer, no padding) in one pass over the train split, with the scripts' tokenization."""
    sys.path.insert(0, str(ROOT))
    import common
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    train = load_from_disk(str(dataset_dir))["train"]
    return sum(len(common.tokenize_example(tokenizer, s, e)["input_ids"]) for s, e in
               zip(train["sentence"], train["emojis"])), len(train)


def bench_path(path, a, out):
    work = Path(a.work) / path
    env = dict(os.environ, EMOJI_OUT=str(work), PYTHONUNBUFFERED="1")
    env.pop("EMOJI_NO_UNSLOTH", None)
    if path == "plain":
        env["EMOJI_NO_UNSLOTH"] = "1"
    res = {"path": path}
    code, wall = run([sys.executable, "01_make_dataset.py", "--force"], env, out / f"{path}_01.log", 300)
    res["01"] = {"rc": code, "wall_s": wall}
    log(path, "01", res["01"])

    events = out / f"{path}_02_events.json"
    code, wall = run([sys.executable, "bench/instrument.py", "02_train.py", "--model", a.model, "--force"],
                     dict(env, BENCH_EVENTS=str(events)), out / f"{path}_02.log", a.timeout)
    res["02"] = {"rc": code, "wall_s": wall}
    log(path, "02", res["02"])
    if events.exists():
        res["02"]["events"] = json.loads(events.read_text())
    runs = {}
    for epochs in (1, 5):
        f = work / "adapters" / f"epochs{epochs}" / "run.json"
        if f.exists():
            runs[epochs] = json.loads(f.read_text())
    res["02"]["run_json"] = runs

    events = out / f"{path}_03_events.json"
    ref = Path(a.work) / "unsloth" / "adapters" / "epochs5"
    code, wall = run([sys.executable, "bench/instrument.py", "03_generate.py", "--force"],
                     dict(env, BENCH_EVENTS=str(events), BENCH_GEN_COMPARE=str(a.one_at_a_time),
                          BENCH_REF_ADAPTER=str(ref)), out / f"{path}_03.log", a.timeout)
    res["03"] = {"rc": code, "wall_s": wall}
    log(path, "03", res["03"])
    if events.exists():
        res["03"]["events"] = json.loads(events.read_text())
    res["summary"] = summarize(res, a, work)
    return res


def summarize(res, a, work):
    s = {}
    ev = res["02"].get("events") or {}
    runs = ev.get("runs", [])
    loads = ev.get("loads", [])
    if loads:
        s["import_s"] = round(loads[0]["start"], 1)
        s["load_s"] = [round(x["end"] - x["start"], 1) for x in loads]
    s["e2e_02_s"] = res["02"]["wall_s"]
    if len(runs) >= 1 and runs[0]["steps"]:
        r1 = runs[0]
        s["settings"] = {k: r1[k] for k in ("batch_size", "grad_accum", "padding_free", "gradient_checkpointing",
                                            "optim", "bf16", "fp16")}
        step1 = [t for _, t in r1["steps"]]
        s["steps_per_epoch"] = len(step1)
        s["first_step_s"] = round(step1[0], 2)
        if loads:
            s["setup_before_first_step_s"] = round(r1["steps"][0][0] - loads[0]["end"], 1)
    if len(runs) >= 2 and runs[1]["steps"]:
        r5 = [t for _, t in runs[1]["steps"]]
        spe = s.get("steps_per_epoch") or len(r5) // 5
        steady = r5[spe:]
        med = statistics.median(steady)
        s["steady_step_s_median"] = round(med, 4)
        s["run2_first_step_s"] = round(r5[0], 2)
        tokens, n_train = epoch_tokens(a.model, work / "dataset")
        s["epoch_tokens"], s["train_examples"] = tokens, n_train
        s["steady_tokens_per_s"] = round((len(steady) / spe) * tokens / sum(steady), 1)
        step1 = [t for _, t in runs[0]["steps"]]
        s["warmup_s_run1"] = round(sum(step1[:5]) - 5 * med, 1)
        s["warmup_s_run2"] = round(sum(r5[:5]) - 5 * med, 1)
        s["train_loop_s"] = [round(r["end"] - r["begin"], 1) for r in runs[:2]]
        s["step_time_sum_s"] = [round(sum(t for _, t in r["steps"]), 1) for r in runs[:2]]
        s["params"] = json.loads((Path(a.model) / "shaped_model.json").read_text())["params"]
        mfu = mfu_pct(a.model, a.gpu, s["steady_tokens_per_s"])
        if mfu is not None:
            s["mfu_pct"] = mfu
    rj = res["02"].get("run_json", {})
    if rj:
        s["peak_gib_02"] = max(r["peak_memory_gib"] for r in rj.values())
        s["validation_losses"] = {k: [round(x, 3) for x in r["validation_losses"]] for k, r in rj.items()}
        s["steps"] = {k: r["steps"] for k, r in rj.items()}
    ev3 = res["03"].get("events") or {}
    s["e2e_03_s"] = res["03"]["wall_s"]
    gens = [g for g in ev3.get("generate", []) if g.get("desc") not in ("batched", "one_at_a_time")]
    if gens:
        s["03_generate_s"] = round(sum(g["s"] for g in gens), 1)
        s["03_answers"] = sum(g["prompts"] for g in gens)
    if ev3.get("loads"):
        s["03_import_s"] = round(ev3["loads"][0]["start"], 1)
        s["03_load_s"] = round(ev3["loads"][0]["end"] - ev3["loads"][0]["start"], 1)
    if "gen_compare" in ev3:
        s["gen_compare"] = ev3["gen_compare"]
    if "loss_check" in ev3:
        s["loss_check"] = ev3["loss_check"]
    return s


def table(results):
    """Markdown table, one column per path, plus Unsloth/plain ratios where both exist."""
    by = {r["path"]: r["summary"] for r in results}
    u, p = by.get("unsloth"), by.get("plain")

    def g(d, k, i=None):
        if d is None or k not in d:
            return None
        v = d[k]
        return v[i] if i is not None and isinstance(v, list) and len(v) > i else v

    def gen(d, k):
        return None if d is None or "gen_compare" not in d else d["gen_compare"][k]["prompts_per_s"]

    rows = [
        ("import (process start → first load), s", lambda d: g(d, "import_s"), "lower"),
        ("model load (1st run), s", lambda d: g(d, "load_s", 0), "lower"),
        ("setup + first validation pass before step 1, s", lambda d: g(d, "setup_before_first_step_s"), "lower"),
        ("first training step (compile), s", lambda d: g(d, "first_step_s"), "lower"),
        ("warm-up beyond steady state, 1st run, s", lambda d: g(d, "warmup_s_run1"), "lower"),
        ("warm-up beyond steady state, 2nd run, s", lambda d: g(d, "warmup_s_run2"), "lower"),
        ("steady step (median), s", lambda d: g(d, "steady_step_s_median"), "lower"),
        ("steady-state tokens/s", lambda d: g(d, "steady_tokens_per_s"), "higher"),
        ("MFU (6·N·tokens/s ÷ peak), %", lambda d: g(d, "mfu_pct"), "higher"),
        ("1-epoch run: train() wall, s", lambda d: g(d, "train_loop_s", 0), "lower"),
        ("5-epoch run: train() wall, s", lambda d: g(d, "train_loop_s", 1), "lower"),
        ("02_train.py end to end (both runs), s", lambda d: g(d, "e2e_02_s"), "lower"),
        ("peak GPU memory in 02, GiB", lambda d: g(d, "peak_gib_02"), "lower"),
        ("03_generate.py end to end, s", lambda d: g(d, "e2e_03_s"), "lower"),
        ("03 time inside generate(), s", lambda d: g(d, "03_generate_s"), "lower"),
        ("report prompts/s, batched", lambda d: gen(d, "batched"), "higher"),
        ("report prompts/s, one at a time", lambda d: gen(d, "one_at_a_time"), "higher"),
        ("batched ÷ one at a time", lambda d: None if d is None or "gen_compare" not in d
            else d["gen_compare"]["speedup"], "higher"),
        ("loss of a fixed batch, same adapter", lambda d: None if d is None or "loss" not in d.get("loss_check", {})
            else round(d["loss_check"]["loss"], 5), None),
    ]
    lines = ["| measure | Unsloth | plain | Unsloth advantage |", "|---|---|---|---|"]
    for name, f, better in rows:
        a, b = f(u), f(p)
        ratio = ""
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a and b and better:
            ratio = f"{(b / a if better == 'lower' else a / b):.2f}×"
        lines.append(f"| {name} | {'' if a is None else a} | {'' if b is None else b} | {ratio} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paths", default="unsloth,plain", help="which paths to run, in order (unsloth first: its "
                                                              "adapter is the loss check's reference)")
    ap.add_argument("--model", default="/tmp/llama2-7b-shaped")
    ap.add_argument("--work", default="/tmp/emoji-bench", help="EMOJI_OUT of each path goes under here")
    ap.add_argument("--out", default=os.environ.get("OUT", str(ROOT / "outputs" / "bench")),
                    help="logs, events and bench_<path>.json")
    ap.add_argument("--one-at-a-time", type=int, default=16, help="report prompts generated one at a time")
    ap.add_argument("--timeout", type=int, default=420, help="seconds allowed for each of 02 and 03")
    ap.add_argument("--table", nargs="*", help="only print the table of these bench_<path>.json files")
    a = ap.parse_args()
    if a.table:
        print(table([json.loads(Path(f).read_text()) for f in a.table]))
        return
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    a.gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    meta = {"gpu": a.gpu, "versions": versions(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name] + sys.argv)}
    log(meta)
    if not (Path(a.model) / "config.json").exists():
        code, wall = run([sys.executable, "bench/make_llama2_shaped.py", "--out", a.model], dict(os.environ),
                         out / "build.log", 600)
        meta["build"] = {"rc": code, "wall_s": wall}
        log("built", a.model, meta["build"])
    results = []
    for path in a.paths.split(","):
        res = bench_path(path, a, out)
        res.update(meta)
        (out / f"bench_{path}.json").write_text(json.dumps(res, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        log(path, "summary", json.dumps(res["summary"], ensure_ascii=False))
        results.append(res)
    print(table(results))


if __name__ == "__main__":
    main()

"""Side-by-side variants of the real 1-epoch training run on one GPU (issue #5): which lever buys what.

    python bench/variants.py --variants graphs,no-graphs,8bit-adam,no-compile,plain,graphs

Each variant is `02_train.py --epochs 1 --force` (or `--epochs 1,5`, the real workload) on the project's dataset and
bench/make_llama2_shaped.py's model, in a fresh process through bench/instrument.py (timed from outside, script
unchanged), with the switches below. A variant named twice runs twice: the second run meets a warm compile cache and
warm .pyc files, as a user's second invocation on the same machine does. Prints one table row per run: process start
to first load (imports), first step, warm-up, steady step, tokens/s, MFU (6·N·tokens/s ÷ peak), train() wall, the
process's wall, peak memory, validation loss.
"""
import argparse
import json
import os
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchmark  # noqa: E402  (run, epoch_tokens, mfu_pct, log, versions)

VARIANTS = {  # name: (extra 02_train.py arguments, extra environment)
    "graphs": ([], {}),  # the defaults: fused AdamW, compiled blocks replayed as CUDA graphs, batches padded to 64
    "no-graphs": (["--cuda-graphs", "false"], {}),
    "8bit-adam": (["--cuda-graphs", "false", "--optim", "adamw_8bit"], {}),  # what Unsloth picked when optim was unset
    "no-compile": (["--cuda-graphs", "false"], {"UNSLOTH_COMPILE_DISABLE": "1"}),
    "plain": ([], {"EMOJI_NO_UNSLOTH": "1"}),  # transformers + PEFT + bitsandbytes nf4, same settings
}


def one(i, name, a, out):
    extra, env_extra = VARIANTS[name]
    work = Path(a.work) / f"{i}_{name}"
    env = dict(os.environ, EMOJI_OUT=str(work), PYTHONUNBUFFERED="1", **env_extra)
    benchmark.run([sys.executable, "01_make_dataset.py", "--force"], env, out / f"v{i}_{name}_01.log", 120)
    events = out / f"v{i}_{name}_events.json"
    code, wall = benchmark.run([sys.executable, "bench/instrument.py", "02_train.py", "--model", a.model, "--epochs",
                                a.epochs, "--force", *extra], dict(env, BENCH_EVENTS=str(events)),
                               out / f"v{i}_{name}_02.log", a.timeout)
    row = {"run": i, "variant": name, "rc": code, "wall_s": wall, "args": extra, "env": env_extra}
    if not events.exists():
        return row
    ev = json.loads(events.read_text())
    row["unsloth_env"] = ev.get("unsloth_env")
    if ev["loads"]:
        row["imports_s"] = round(ev["loads"][0]["start"], 1)
        row["load_s"] = round(ev["loads"][0]["end"] - ev["loads"][0]["start"], 1)
    if ev["runs"] and len(ev["runs"][0]["steps"]) > 6:
        r = ev["runs"][0]
        steps = [t for _, t in r["steps"]]
        med = statistics.median(steps[5:])
        tokens, _ = benchmark.epoch_tokens(a.model, work / "dataset")
        tps = tokens * (len(steps) - 5) / len(steps) / sum(steps[5:])  # epoch tokens spread evenly over its steps
        row.update(optim=r["optim"], steps=len(steps), setup_s=round(r["steps"][0][0] - ev["loads"][0]["end"], 1),
                   first_step_s=round(steps[0], 2), warmup_s=round(sum(steps[:5]) - 5 * med, 1),
                   steady_step_s=round(med, 4), tokens_per_s=round(tps), train_s=round(r["end"] - r["begin"], 1),
                   peak_gib=r.get("peak_gib"), mfu_pct=benchmark.mfu_pct(a.model, a.gpu, tps))
    run_json = work / "adapters" / "epochs1" / "run.json"
    if run_json.exists():
        row["validation_losses"] = [round(x, 4) for x in json.loads(run_json.read_text())["validation_losses"]]
    if len(ev["runs"]) > 1:  # the 5-epoch run: its own train() wall and peak
        row["train_s_2nd_run"] = round(ev["runs"][1]["end"] - ev["runs"][1]["begin"], 1)
        row["peak_gib"] = max(r.get("peak_gib") or 0 for r in ev["runs"])
    return row


def table(rows):
    cols = [("run", "run"), ("variant", "variant"), ("rc", "rc"), ("imports_s", "imports s"), ("load_s", "load s"),
            ("setup_s", "setup s"), ("first_step_s", "1st step s"), ("warmup_s", "warm-up s"),
            ("steady_step_s", "steady step s"), ("tokens_per_s", "tokens/s"), ("mfu_pct", "MFU %"),
            ("train_s", "train() s"), ("train_s_2nd_run", "2nd run train() s"), ("wall_s", "02 wall s"), ("peak_gib", "peak GiB"),
            ("validation_losses", "val loss 0→1")]
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for k, _ in cols:
            v = r.get(k, "")
            cells.append(" → ".join(str(x) for x in v) if isinstance(v, list) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="graphs,no-graphs,8bit-adam,no-compile,plain,graphs",
                    help="comma-separated, in order: " + ", ".join(VARIANTS))
    ap.add_argument("--model", default="/tmp/llama2-7b-shaped")
    ap.add_argument("--work", default="/tmp/emoji-variants")
    ap.add_argument("--out", default=os.environ.get("OUT", str(benchmark.ROOT / "outputs" / "bench")))
    ap.add_argument("--epochs", default="1", help="02's runs: 1 (quick), or 1,5 (the real workload; the table's step "
                                                   "figures are then the 1-epoch run's, its 02 wall both runs')")
    ap.add_argument("--timeout", type=int, default=200, help="seconds allowed for each 02 run")
    ap.add_argument("--table", help="only print the table of an earlier variants.json")
    a = ap.parse_args()
    if a.table:
        print(table(json.loads(Path(a.table).read_text())["rows"]))
        return
    names = [n.strip() for n in a.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    a.gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    meta = {"gpu": a.gpu, "versions": benchmark.versions(), "command": " ".join(["python"] + sys.argv),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if not (Path(a.model) / "config.json").exists():
        meta["build"] = benchmark.run([sys.executable, "bench/make_llama2_shaped.py", "--out", a.model],
                                      dict(os.environ), out / "build.log", 600)
    benchmark.log(meta)
    rows = []
    for i, name in enumerate(names, 1):
        rows.append(one(i, name, a, out))
        benchmark.log(json.dumps(rows[-1], ensure_ascii=False))
        (out / "variants.json").write_text(json.dumps({**meta, "rows": rows}, indent=1, ensure_ascii=False) + "\n",
                                           encoding="utf-8")
    print(table(rows))


if __name__ == "__main__":
    main()

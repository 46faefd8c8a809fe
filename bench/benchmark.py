"""GPU benchmark of the project's own pipeline: the Unsloth path vs plain transformers + PEFT + bitsandbytes 4-bit,
same LoRA settings, same data, one after the other on one machine (issues 5 and 12). One command, one table:

    python bench/benchmark.py                                  # unsloth then plain, 01 -> 05 each, cold caches
    python bench/benchmark.py --paths unsloth-fp16             # the fp16 path (as on a T4), real Llama-2 vocabulary
    python bench/benchmark.py --paths unsloth --label no-compile --env EMOJI_COMPILE=false
                                                               # a variant: its own name, its own cold caches
    python bench/benchmark.py --paths unsloth,unsloth          # the second run meets the first one's warm caches
    python bench/benchmark.py --table OUT/bench_unsloth.json OUT/bench_plain.json   # the table of earlier results

Paths: unsloth (the defaults), plain (EMOJI_NO_UNSLOTH=1: lib.models.load loads bitsandbytes nf4 and 02 adds the
same LoRA adapters through PEFT), and -fp16 of either (BENCH_FP16=1: torch reports bf16 as unsupported, so the scripts
train and generate in fp16, as they do on a T4). Each run goes through all five scripts in fresh processes, exactly
as a user runs them, with its own EMOJI_OUT and its own compile caches (inductor, Triton, Unsloth's mega-cache and
its generated source, all under EMOJI_CACHE: lib.models.import_unsloth puts them there), shared only by a repeat of
the same run name. 02 and 03 go through bench/instrument.py, which times loads, every
training step (with its batch shape and real tokens) and every generate call without changing the scripts.

The model is bench/make_llama2_shaped.py's random-weight Llama-2-7B-shaped model with the real Llama-2 tokenizer,
built first if --model does not hold it (its vocabulary must be in outputs/cache/llama2-vocab: carry it to a machine
without a package index). The answers are noise; speed, memory and token counts are the real model's.

Results go to --out as bench_<run>.json (with the events and the end of each script's log), written after every
script and copied to $OUT, so a run cut short by a time limit keeps what it finished, and --resume on the same
machine continues it. Measures: wall time of each script and of 01 -> 05,
02's import, load, set-up before step 1, first step (compile), warm-up beyond the steady state, the steady step
(median of the last run after its first epoch), real tokens per second of those steps, MFU = 6 * N * tokens/s / the
card's dense bf16/fp16 peak, padded / real tokens, peak GPU memory, validation losses; 03's time in generate, batched
vs one-at-a-time generation, and the loss of one fixed batch under the same adapter in every path.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L4": 121.0, "T4": 65.0}  # dense bf16 (fp16: the same)
PATHS = {  # name -> environment of its scripts
    "unsloth": {},
    "plain": {"EMOJI_NO_UNSLOTH": "1"},
    "unsloth-fp16": {"BENCH_FP16": "1"},
    "plain-fp16": {"EMOJI_NO_UNSLOTH": "1", "BENCH_FP16": "1"},
}
SCRIPTS = {"01": "01_make_dataset.py", "02": "02_train.py", "03": "03_generate.py", "04": "04_chatgpt.py",
           "05": "05_report.py"}


def log(*args):
    print(f"[bench {time.strftime('%H:%M:%S')}]", *args, flush=True)


def tail(logfile, chars=3000):
    text = Path(logfile).read_text(encoding="utf-8", errors="replace") if Path(logfile).exists() else ""
    return text[-chars:]


def publish(path, text):
    """Write a result file, and copy it to the device tool's $OUT (emptied by every call, so results live in --out
    and are copied after every script: a command stopped at its time limit still returns what was done)."""
    path.write_text(text, encoding="utf-8")
    if os.environ.get("OUT") and Path(os.environ["OUT"]).resolve() != path.parent.resolve():
        shutil.copy(path, os.environ["OUT"])


def save(res, res_file):
    publish(res_file, json.dumps(res, indent=1, ensure_ascii=False) + "\n")


def run(cmd, env, logfile, timeout):
    """Run a command, output to logfile; return (returncode, wall seconds)."""
    start = time.time()
    with open(logfile, "w", encoding="utf-8") as f:
        try:
            code = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                                  timeout=timeout).returncode
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


def run_env(name, path, a):
    """The environment of one run's scripts: its path's switches, its outputs, its compile caches."""
    cache = Path(a.work) / "cache" / name.split("#")[0]  # a repeat (name#2) meets the first run's caches
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "EMOJI_", "BENCH_"))}
    env.update(PATHS[path], EMOJI_OUT=str(Path(a.work) / name / "outputs"), EMOJI_CACHE=str(cache),
               PYTHONUNBUFFERED="1", TORCHINDUCTOR_CACHE_DIR=str(cache / "inductor"),
               TRITON_CACHE_DIR=str(cache / "triton"), UNSLOTH_MEGA_CACHE_DIR=str(cache / "unsloth-mega"))
    env.update(kv.split("=", 1) for kv in a.env)
    if "EMOJI_COMPILE" in env:  # the switch lives in bench/, not in 02: bench/switches/sitecustomize.py applies it
        switch = str(ROOT / "bench" / "switches")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [switch, env.get("PYTHONPATH")]))
    return env


def bench_run(name, path, a, out, ref_adapter, meta):
    res_file = out / f"bench_{name}.json"
    res = json.loads(res_file.read_text()) if a.resume and res_file.exists() else {"run": name, "path": path, **meta}
    if res.get("date") != meta["date"]:
        res.setdefault("resumed", []).append(meta["date"])
    env = run_env(name, path, a)
    epochs = ["--epochs", a.epochs] if a.epochs else []
    for key in a.scripts.split(","):
        if res.get(key, {}).get("rc") == 0:
            log(name, key, "done earlier, kept")
            continue
        script, events = SCRIPTS[key], out / f"{name}_{key}_events.json"
        cmd = [sys.executable, "bench/instrument.py", script] if key in ("02", "03") else [sys.executable, script]
        cmd += {"01": ["--force"], "02": ["--model", a.model, "--force", *epochs, *a.train_args.split()],
                "03": ["--force", *epochs], "04": [], "05": epochs}[key]
        extra = {"BENCH_EVENTS": str(events)}
        if key == "03":
            extra.update(BENCH_GEN_COMPARE=str(a.one_at_a_time), BENCH_REF_ADAPTER=str(ref_adapter))
        code, wall = run(cmd, dict(env, **extra), out / f"{name}_{key}.log", a.timeout)
        res[key] = {"rc": code, "wall_s": wall, "cmd": " ".join(cmd[1:]),
                    "log_tail": tail(out / f"{name}_{key}.log")}
        if events.exists():
            res[key]["events"] = json.loads(events.read_text())
        if key == "02":
            adapters = Path(env["EMOJI_OUT"]) / "adapters"
            res["02"]["run_json"] = {p.parent.name: json.loads(p.read_text()) for p in adapters.glob("*/run.json")}
        log(name, key, {"rc": code, "wall_s": wall})
        save(res, res_file)
        if code != 0:
            log(name, key, "failed: see", out / f"{name}_{key}.log")
            break
    res["summary"] = summarize(res, a.model)
    save(res, res_file)
    return res


def mfu_pct(gpu, params, tokens_per_s):
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in (gpu or "")), None)
    return None if peak is None or not params else round(100 * 6 * params * tokens_per_s / (peak * 1e12), 1)


def summarize(res, model_dir):
    s = {}
    walls = {k: res[k]["wall_s"] for k in SCRIPTS if k in res}
    s["wall_s"] = walls
    if all(res.get(k, {}).get("rc") == 0 for k in SCRIPTS):
        s["pipeline_s"] = round(sum(walls.values()), 1)
    ev = res.get("02", {}).get("events") or {}
    runs, loads = ev.get("runs", []), ev.get("loads", [])
    if loads:
        s["import_s"], s["dtype"] = round(loads[0]["start"], 1), loads[0].get("dtype")
        s["load_s"] = round(loads[0]["end"] - loads[0]["start"], 1)
    env = ev.get("unsloth_env", {})
    s["graphs"] = env.get("UNSLOTH_BLOCK_CUDAGRAPHS") == "1"
    s["compile_disabled"] = env.get("UNSLOTH_COMPILE_DISABLE") in ("1", "partial")
    runs = [r for r in runs if r["steps"]]
    if runs:
        first, last = runs[0], runs[-1]
        steps1 = [t for _, t in first["steps"]]
        s["settings"] = {k: first.get(k) for k in ("batch_size", "grad_accum", "pad_to_multiple_of", "padding_free",
                                                    "gradient_checkpointing", "optim", "learning_rate", "bf16", "fp16")}
        s["steps"] = [len(r["steps"]) for r in runs]
        s["first_step_s"] = round(steps1[0], 2)
        if loads:
            s["setup_before_first_step_s"] = round(first["steps"][0][0] - loads[0]["end"], 1)
        per_epoch = max(1, round(len(last["steps"]) / max(1, last["epochs"])))
        steady = slice(per_epoch, None) if len(last["steps"]) > per_epoch else slice(5, None)
        times = [t for _, t in last["steps"]][steady]
        batches = last.get("batches", [])[steady]
        if times:
            med = statistics.median(times)
            s["steady_step_s"] = round(med, 4)
            s["warmup_s"] = [round(sum(t for _, t in r["steps"][:5]) - 5 * med, 1) + 0.0 for r in runs]
            tokens = [b[2] for b in batches if b and b[2]]
            if len(tokens) == len(times):
                s["steady_tokens_per_s"] = round(sum(tokens) / sum(times), 1)
        every = [b for r in runs for b in r.get("batches", []) if b and b[2]]
        if every:
            s["padded_over_real_tokens"] = round(sum(b[0] * b[1] for b in every) / sum(b[2] for b in every), 3)
            s["batch_shapes"] = sorted({f"{b[0]}x{b[1]}" for b in every})
        s["train_s"] = [round(r["end"] - r["begin"], 1) for r in runs if "end" in r]
    shaped = Path(model_dir) / "shaped_model.json"
    params = json.loads(shaped.read_text())["params"] if shaped.exists() else None
    if "steady_tokens_per_s" in s:
        s["mfu_pct"] = mfu_pct(res.get("gpu"), params, s["steady_tokens_per_s"])
    rj = res.get("02", {}).get("run_json", {})
    if rj:
        s["peak_gib_02"] = max(r["peak_memory_gib"] for r in rj.values())
        s["validation_losses"] = {k: [round(x, 3) for x in r["validation_losses"]] for k, r in sorted(rj.items())}
        s["train_size"] = next(iter(rj.values())).get("train_size")
    ev3 = res.get("03", {}).get("events") or {}
    gens = [g for g in ev3.get("generate", []) if g.get("desc") not in ("batched", "one_at_a_time")]
    if gens:
        s["03_generate_s"] = round(sum(g["s"] for g in gens), 1)
        s["03_answers"] = sum(g["prompts"] for g in gens)
    for key in ("gen_compare", "loss_check"):
        if key in ev3:
            s[key] = ev3[key]
    return s


def table(results):
    """Markdown table, one column per run; with two runs, the first one's advantage over the second."""
    sums = [r["summary"] for r in results]

    def get(*keys):
        """The value at keys (dict keys or list indexes) of a summary, or None."""
        def f(d):
            for k in keys:
                if isinstance(d, dict):
                    d = d.get(k)
                elif isinstance(d, list) and isinstance(k, int):
                    d = d[k] if len(d) > k else None
                else:
                    return None
            return d
        return f

    def gen(field):
        return lambda d: (d.get("gen_compare") or {}).get(field, {}).get("prompts_per_s") \
            if field != "speedup" else (d.get("gen_compare") or {}).get("speedup")

    def losses(d):
        v = d.get("validation_losses") or {}
        return "; ".join(f"{k}: {' → '.join(map(str, x))}" for k, x in v.items()) or None

    rows = [
        ("GPU", lambda d: None, None),
        ("model dtype (as loaded)", get("dtype"), None),
        ("CUDA graphs / compile off", lambda d: f"{'on' if d.get('graphs') else 'off'} / "
                                                f"{'yes' if d.get('compile_disabled') else 'no'}", None),
        ("01_make_dataset.py, s", get("wall_s", "01"), "lower"),
        ("**02_train.py end to end, s**", get("wall_s", "02"), "lower"),
        ("03_generate.py, s", get("wall_s", "03"), "lower"),
        ("04_chatgpt.py, s", get("wall_s", "04"), "lower"),
        ("05_report.py, s", get("wall_s", "05"), "lower"),
        ("**pipeline 01 → 05, s**", get("pipeline_s"), "lower"),
        ("02: import (process start → model load), s", get("import_s"), "lower"),
        ("02: model load, s", get("load_s"), "lower"),
        ("02: set-up + first validation pass before step 1, s", get("setup_before_first_step_s"), "lower"),
        ("02: first training step (compile), s", get("first_step_s"), "lower"),
        ("02: warm-up beyond steady state, per run, s", lambda d: " / ".join(map(str, d.get("warmup_s") or [])) or None,
         None),
        ("02: training steps per run", lambda d: " / ".join(map(str, d.get("steps") or [])) or None, None),
        ("02: train() wall per run, s", lambda d: " / ".join(map(str, d.get("train_s") or [])) or None, None),
        ("**02: steady step (median), s**", get("steady_step_s"), "lower"),
        ("02: steady-state real tokens/s", get("steady_tokens_per_s"), "higher"),
        ("02: MFU (6·N·tokens/s ÷ peak), %", get("mfu_pct"), "higher"),
        ("02: padded ÷ real tokens; batch shapes", lambda d: None if "padded_over_real_tokens" not in d else
            f"{d['padded_over_real_tokens']}; {', '.join(d.get('batch_shapes', []))}", None),
        ("**02: peak GPU memory, GiB**", get("peak_gib_02"), "lower"),
        ("02: validation loss per epoch", losses, None),
        ("03: time inside generate(), s", get("03_generate_s"), "lower"),
        ("03: report prompts/s, batched", gen("batched"), "higher"),
        ("03: report prompts/s, one at a time", gen("one_at_a_time"), "higher"),
        ("**03: batched ÷ one at a time**", gen("speedup"), "higher"),
        ("03: loss of a fixed batch, same adapter", lambda d: None if "loss" not in (d.get("loss_check") or {})
            else round(d["loss_check"]["loss"], 5), None),
    ]
    two = len(results) == 2
    head = ["measure"] + [r["run"] for r in results] + ([f"{results[0]['run']} advantage"] if two else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, f, better in rows:
        vals = [r.get("gpu") if label == "GPU" else f(d) for r, d in zip(results, sums)]
        cells = ["" if v is None else str(v) for v in vals]
        if two:
            x, y = vals
            ok = isinstance(x, (int, float)) and isinstance(y, (int, float)) and x and y and better
            cells.append(f"{(y / x if better == 'lower' else x / y):.2f}×" if ok else "")
        lines.append("| " + " | ".join([label] + cells) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paths", default="unsloth,plain", help=f"runs, in order, from {', '.join(PATHS)}")
    ap.add_argument("--label", default="", help="appended to each run's name (a variant: its own results and caches)")
    ap.add_argument("--scripts", default="01,02,03,04,05", help="which scripts each run goes through")
    ap.add_argument("--epochs", default="", help="02/03/05's EPOCHS (default: theirs, 1 and 5)")
    ap.add_argument("--train-args", default="", help="more arguments for 02_train.py, e.g. '--max-steps 50'")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for every script (repeatable), e.g. "
                    "EMOJI_COMPILE=false: 02's compile + CUDA graphs off (true: on), whatever models.speed_plan() "
                    "would choose")
    ap.add_argument("--model", default="/tmp/llama2-7b-shaped")
    ap.add_argument("--work", default="/tmp/emoji-bench", help="each run's outputs and caches go under here")
    ap.add_argument("--out", default=None, help="logs, events and bench_<run>.json (default: WORK/results; each "
                                                "bench_<run>.json is also copied to $OUT when that is set)")
    ap.add_argument("--one-at-a-time", type=int, default=16, help="prompts generated one at a time in 03's comparison")
    ap.add_argument("--ref-adapter", default=None, help="the adapter of the loss check (default: the first run's "
                                                        "largest-epochs adapter, or an earlier 'unsloth' run's)")
    ap.add_argument("--timeout", type=int, default=900, help="seconds allowed for each script")
    ap.add_argument("--resume", action="store_true", help="keep the scripts a run already finished (same --out)")
    ap.add_argument("--table", nargs="*", help="only print the table of these bench_<run>.json files")
    a = ap.parse_args()
    if a.table:
        print(table([json.loads(Path(f).read_text()) for f in a.table]))
        return
    paths = [p.strip() for p in a.paths.split(",") if p.strip()]
    unknown = [p for p in paths if p not in PATHS]
    if unknown:
        ap.error(f"unknown path(s) {unknown}; known: {list(PATHS)}")
    out = Path(a.out or Path(a.work) / "results")
    out.mkdir(parents=True, exist_ok=True)
    import torch

    meta = {"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "versions": versions(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["python"] + sys.argv)}
    log(meta)
    if not (Path(a.model) / "config.json").exists():
        code, wall = run([sys.executable, "bench/make_llama2_shaped.py", "--out", a.model], dict(os.environ),
                         out / "build.log", 900)
        meta["build"] = {"rc": code, "wall_s": wall, "log_tail": tail(out / "build.log")}
        log("built", a.model, meta["build"])
    shaped = Path(a.model) / "shaped_model.json"
    if shaped.exists():
        meta["model"] = json.loads(shaped.read_text())
    biggest = max(int(e) for e in (a.epochs or "1,5").split(","))
    names, results = [], []
    for path in paths:
        name = path + (f"-{a.label}" if a.label else "")
        name += f"#{names.count(name) + 1}" if name in names else ""
        names.append(name)
        ref = a.ref_adapter or next((p for p in [Path(a.work) / n / "outputs" / "adapters" / f"epochs{biggest}"
                                                 for n in names[:1] + ["unsloth"]] if p.exists()),
                                    Path(a.work) / names[0] / "outputs" / "adapters" / f"epochs{biggest}")
        res = bench_run(name, path, a, out, ref, meta)
        log(name, "summary", json.dumps(res["summary"], ensure_ascii=False))
        results.append(res)
    text = table(results)
    publish(out / "table.md", text + "\n")
    print(text)


if __name__ == "__main__":
    main()

"""Execute colab.ipynb top to bottom in a real IPython kernel (nbclient), as Colab runs it, on a GPU machine with the
shaped Llama-2-7B model and the real Llama-2 vocabulary (issue 20). Records each cell's wall time and the peak GPU
memory while it ran (nvidia-smi's memory in use on the card, every 0.25 s: what a T4's 15 GB must hold), checks that
all five scripts ran and that the report and the loss plot are shown inline, and writes the executed notebook.

    python bench/run_notebook.py                          # the 7B stand-in (built if absent), the notebook's defaults
    python bench/run_notebook.py --as-t4 --epochs 1       # as a T4 would run it: fp16, no compile; one epoch
    python bench/run_notebook.py --model embedded --epochs 1 --train-args "--max-steps 2"   # a CPU dry run

The install cell is replaced by one that lists the packages already there: a machine without a package index gets
them carried (../shared/gpu/make_site.sh with nbclient, ipykernel and their dependencies; `source .gpu/activate.sh`).
Everything else is the notebook as a student runs it; its settings cell gets `--model` (the hub name cannot be reached
from here) and the --epochs/--*-args given. --as-t4: torch reports bf16 as unsupported in every script (so they take
the fp16 path, as on a T4; Unsloth's kernels still see this GPU) and EMOJI_COMPILE=false (what models.speed_plan
decides on a T4's sm_75). Results: WORK/notebook.json and WORK/colab_executed.ipynb, also copied to $OUT if set.
The tests run the same notebook on the CPU (tests/test_notebook.py).
"""
import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
T4_GIB = 15.0  # a T4's memory as nvidia-smi shows it: 15360 MiB
INSTALL_CELL = '''# @title Install (replaced by bench/run_notebook.py: the packages were carried to this machine)
import importlib.util
from importlib import metadata
names = ("torch", "transformers", "trl", "peft", "datasets", "bitsandbytes", "unsloth", "unsloth_zoo", "accelerate")
print("installed:", ", ".join(f"{n} {metadata.version(n)}" for n in names if importlib.util.find_spec(n)))'''


class GpuMemory(threading.Thread):
    """Memory in use on GPU 0, polled with nvidia-smi: the peak overall and since the last mark()."""

    def __init__(self, every=0.25):
        super().__init__(daemon=True)
        self.every, self.peak, self.cell_peak, self.total, self.stopped = every, 0, 0, None, threading.Event()
        self.smi = shutil.which("nvidia-smi")

    def read(self):
        out = subprocess.run([self.smi, "--query-gpu=memory.used,memory.total", "--format=csv,noheader,nounits",
                              "-i", "0"], capture_output=True, text=True, timeout=10).stdout
        used, total = (int(x) for x in out.strip().split(","))
        self.total = total
        return used

    def run(self):
        while self.smi and not self.stopped.is_set():
            try:
                used = self.read()
            except (OSError, ValueError, subprocess.SubprocessError):
                return
            self.peak, self.cell_peak = max(self.peak, used), max(self.cell_peak, used)
            self.stopped.wait(self.every)

    def mark(self):
        peak, self.cell_peak = self.cell_peak, 0
        return peak


def gib(mib):
    return None if mib is None else round(mib / 1024, 2)


def build_model(model):
    if model == "embedded" or (Path(model) / "config.json").exists():
        return None
    start = time.time()
    subprocess.run([sys.executable, "bench/make_llama2_shaped.py", "--out", model], cwd=ROOT, check=True)
    return round(time.time() - start, 1)


def prepare(nb, a):
    """The notebook as it will run: install cell replaced, settings cell after the parameters cell."""
    import nbformat

    tagged = lambda tag: [i for i, c in enumerate(nb.cells) if tag in c.metadata.get("tags", [])]
    (install,) = tagged("install")
    nb.cells[install] = nbformat.v4.new_code_cell(INSTALL_CELL,
                                                  metadata={"tags": ["install"]})
    epochs = f"--epochs {a.epochs}" if a.epochs else ""
    settings = {"DATA_ARGS": a.data_args, "TRAIN_ARGS": f"--model {a.model} {epochs} {a.train_args}",
                "GENERATE_ARGS": f"{epochs} {a.generate_args}", "CHATGPT_ARGS": a.chatgpt_args,
                "REPORT_ARGS": f"{epochs} {a.report_args}"}
    source = "\n".join(f"{k} = {' '.join(v.split())!r}" for k, v in settings.items())
    nb.cells.insert(tagged("parameters")[0] + 1, nbformat.v4.new_code_cell(
        "# @title Settings of this run (inserted by bench/run_notebook.py)\n" + source))
    return nb


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="/tmp/llama2-7b-shaped", help="02's --model (built by "
                    "bench/make_llama2_shaped.py if the folder holds none); 'embedded' for a CPU run")
    ap.add_argument("--work", default="/tmp/emoji-notebook", help="EMOJI_OUT is WORK/outputs; results go here too")
    ap.add_argument("--epochs", default="", help="02, 03 and 05's --epochs (default: theirs, 1 and 5)")
    for step in ("data", "train", "generate", "chatgpt", "report"):
        ap.add_argument(f"--{step}-args", default="", help=f"more flags in the notebook's {step.upper()}_ARGS")
    ap.add_argument("--as-t4", action="store_true", help="fp16 (bf16 reported unsupported) and no compile, as on a T4")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds allowed for one cell")
    a = ap.parse_args()

    import nbclient
    import nbformat

    work = Path(a.work)
    shutil.rmtree(work / "outputs", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    result = {"command": " ".join(["python"] + sys.argv), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "as_t4": a.as_t4, "model": a.model, "build_s": build_model(a.model)}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "EMOJI_", "BENCH_"))}
    env.update(EMOJI_OUT=str(work / "outputs"), PYTHONUNBUFFERED="1")
    if a.as_t4:  # bench/switches: fp16 (torch reports no bf16) and no compile, in the kernel and every script
        env.update(EMOJI_COMPILE="false", BENCH_AS_T4="1", PYTHONPATH=os.pathsep.join(filter(None, [
            str(ROOT / "bench" / "switches"), env.get("PYTHONPATH")])))
    nb = prepare(nbformat.read(ROOT / "colab.ipynb", as_version=4), a)

    memory, cells, started = GpuMemory(), [], {}
    memory.start()

    def on_start(cell, cell_index, **_):
        memory.mark()
        started[cell_index] = time.time()

    def on_done(cell, cell_index, **_):
        first = cell.source.splitlines()[0] if cell.source else ""
        title = first.removeprefix("# @title ").strip() if first.startswith("# @title") else first[:60]
        cells.append({"cell": cell_index, "title": title, "s": round(time.time() - started[cell_index], 1),
                      "peak_gpu_gib": gib(memory.mark() or None)})
        print(f"[notebook] cell {cell_index} ({title}): {cells[-1]['s']} s, peak {cells[-1]['peak_gpu_gib']} GiB",
              flush=True)

    client = nbclient.NotebookClient(nb, timeout=a.timeout, kernel_name="python3", on_cell_execute=on_start,
                                     on_cell_executed=on_done, resources={"metadata": {"path": str(ROOT)}})
    start = time.time()
    try:
        client.execute(env=env)
        result["error"] = None
    except Exception as exc:  # a failing cell: keep what ran, say which
        result["error"] = f"{type(exc).__name__}: {str(exc)[-2000:]}"
    result["wall_s"] = round(time.time() - start, 1)
    time.sleep(2 * memory.every)
    memory.stopped.set()
    result.update(cells=cells, peak_gpu_gib=gib(memory.peak or None), gpu_total_gib=gib(memory.total),
                  t4_gib=T4_GIB)
    out = work / "outputs"
    result["checks"] = checks(nb, out)
    runs = {p.parent.name: json.loads(p.read_text()) for p in (out / "adapters").glob("*/run.json")}
    result["02_runs"] = {k: {f: r.get(f) for f in ("device", "dtype", "steps", "train_seconds", "peak_memory_gib",
                                                   "validation_losses")} for k, r in sorted(runs.items())}
    (work / "notebook.json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    nbformat.write(nb, work / "colab_executed.ipynb")
    if os.environ.get("OUT"):
        for name in ("notebook.json", "colab_executed.ipynb"):
            shutil.copy(work / name, os.environ["OUT"])
    print(table(result))
    ok = result["error"] is None and all(result["checks"].values())
    sys.exit(0 if ok else 1)


def checks(nb, out):
    texts = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                    if o.output_type == "stream")
    shown = [o.data for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "display_data"]
    png = (out / "loss.png").read_bytes() if (out / "loss.png").exists() else None
    report = (out / "report.md").read_text(encoding="utf-8") if (out / "report.md").exists() else None
    return {"five_scripts_ran": re.findall(r"^\$ python (\S+)", texts, re.M) == [
                "01_make_dataset.py", "02_train.py", "03_generate.py", "04_chatgpt.py", "05_report.py"],
            "loss_plot_shown": png is not None and any(base64.b64decode(d.get("image/png", "")) == png for d in shown),
            "report_shown": report is not None and any(d.get("text/markdown") == report for d in shown)}


def table(r):
    lines = ["| cell | title | s | peak GPU memory in use, GiB |", "|---|---|---|---|"]
    lines += [f"| {c['cell']} | {c['title']} | {c['s']} | {c['peak_gpu_gib'] or ''} |" for c in r["cells"]]
    lines.append(f"| all | notebook, top to bottom | {r['wall_s']} | {r['peak_gpu_gib'] or ''} "
                 f"(of {r['gpu_total_gib']}; a T4 has {r['t4_gib']}) |")
    return "\n".join(lines + ["", f"checks: {r['checks']}; error: {r['error']}",
                              f"02 runs: {json.dumps(r['02_runs'], ensure_ascii=False)}"])


if __name__ == "__main__":
    main()

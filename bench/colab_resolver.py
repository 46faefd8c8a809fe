"""Check with pip's own resolver that colab.ipynb's install cell keeps the runtime's torch (issue 12).

    python bench/colab_resolver.py --torch 2.13.0 --naive                # the CPU wheel: small, enough for pip
    python bench/colab_resolver.py --torch 2.14.1 --torchvision 0.29.1   # the CUDA wheel (NVIDIA libraries, triton)
    python bench/colab_resolver.py --torch 2.15.0 --torchvision 0.29.2 --metadata-only --naive   # outside the range

Makes a virtual environment that already holds the given torch and torchvision, like a Colab runtime, then runs the
notebook's cell tagged "install" in it as written, except that each `pip install` becomes a dry run with a report
(`--dry-run --report`), and reads what pip would install. Verdicts:
  PASS     torch, torchvision and triton (where present) are not among what pip would install, and transformers, trl,
           peft and datasets would be at the versions requirements.txt pins;
  STOPPED  pip refused to resolve (a torch outside requirements-colab.txt's range): the cell stops with pip's message,
           having installed nothing;
  FAIL     anything else.
--naive also resolves the README's former one-line install, for comparison. This machine's pip configuration (a
local cap on torch, local wheels) is left out of the dry runs, as Colab has none; installing torch here uses it.

--metadata-only stands in for a torch that is not on this machine: the environment gets only the `.dist-info` of the
given torch and torchvision, written from the metadata PyPI serves for their wheels (name, version, requirements).
That is all pip's resolver reads of an installed package; nothing of them can be imported.
"""
import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PINNED = ("transformers", "trl", "peft", "datasets")  # must match requirements.txt
HELD = ("torch", "torchvision", "triton")  # must not move
NAIVE = ["install", "unsloth==2026.10.9", "trl==1.14.0", "datasets==4.8.5", "emoji", "tabulate", "gguf", "openai"]

# Prepended to the install cell when it runs in the test environment: the notebook's `stream` is replaced by one that
# turns each `pip install` into a dry run with a report, and stops where the cell would stop (a failed command).
DRY_RUN = """
import json, subprocess, sys
from pathlib import Path
calls = []
def stream(cmd, env=None, check=True):
    call = {"cmd": cmd}
    if "install" in cmd:
        call["report"] = f"{REPORTS}/report-{len(calls)}.json"
        at = cmd.index("install") + 1
        cmd = cmd[:at] + ["--dry-run", "--report", call["report"]] + cmd[at:]
    done = subprocess.run(cmd, capture_output=True, text=True)
    call.update(rc=done.returncode, output=(done.stdout + done.stderr)[-2000:])
    calls.append(call)
    if done.returncode and check:
        print(json.dumps(calls))
        sys.exit(0)
"""


def sh(cmd, env=None):
    print("$", " ".join(map(str, cmd)), flush=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, check=True, text=True, capture_output=True).stdout


def clean_env():
    """This process's environment without this machine's pip configuration: as on Colab."""
    env = dict(os.environ, PIP_CONFIG_FILE=os.devnull)
    env.pop("PIP_FIND_LINKS", None)
    return env


def install_cell():
    nb = json.loads((ROOT / "colab.ipynb").read_text(encoding="utf-8"))
    cells = [c for c in nb["cells"] if "install" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, "colab.ipynb must have exactly one cell tagged 'install'"
    return "".join(cells[0]["source"])


def normalise(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_pins():
    found = (re.match(r"^([A-Za-z0-9_.-]+)==([^\s#;]+)", line) for line in (ROOT / "requirements.txt").open())
    return {normalise(m.group(1)): m.group(2) for m in found if m}


def install_metadata(python, versions):
    """Installed-package metadata only: what pip's dry run reports of each wheel, written as a .dist-info folder."""
    site = Path(sh([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    for name, version in versions.items():
        report = site.parent / f"metadata-{name}.json"
        sh([python, "-m", "pip", "install", "-q", "--dry-run", "--no-deps", "--ignore-installed", "--report", report,
            f"{name}=={version}"], env=clean_env())
        meta = json.loads(report.read_text())["install"][0]["metadata"]
        info = site / f"{name}-{version}.dist-info"
        info.mkdir()
        lines = ["Metadata-Version: 2.1", f"Name: {meta['name']}", f"Version: {meta['version']}"]
        lines += [f"Requires-Python: {meta['requires_python']}"] if meta.get("requires_python") else []
        lines += [f"Requires-Dist: {r}" for r in meta.get("requires_dist", [])]
        (info / "METADATA").write_text("\n".join(lines) + "\n")
        (info / "INSTALLER").write_text("pip\n")
        (info / "RECORD").write_text("")


def would_install(calls):
    """{package: version} over every dry run that produced a report."""
    out = {}
    for call in calls:
        if call.get("report") and call["rc"] == 0:
            for item in json.loads(Path(call["report"]).read_text())["install"]:
                out[normalise(item["metadata"]["name"])] = item["metadata"]["version"]
    return out


def verdict(label, calls, before, pins):
    """Print what pip would do to the held and pinned packages; return PASS, STOPPED or FAIL."""
    refused = [c for c in calls if c["rc"]]
    would = would_install(calls)
    print(f"\n{label}:")
    for c in calls:
        words = " ".join(map(str, c["cmd"][c["cmd"].index("install"):]))
        print(f"  {'refused' if c['rc'] else 'resolved'}: pip {words}")
    if refused:
        lines = [x for x in refused[0]["output"].splitlines() if x.strip()]
        print("  pip said: " + "\n            ".join(lines[-6:]))
    print(f"  would install {len(would)} packages")
    for name in HELD:
        state = (f"{before.get(name, 'absent')} -> {would[name]}" if name in would else
                 f"kept at {before[name]}" if name in before else "absent, stays absent")
        print(f"  {name}: {state}")
    for name in PINNED:
        print(f"  {name}: {would.get(name, before.get(name))} (requirements.txt {pins[name]})")
    extra = sorted(set(would) & {"xformers", "diffusers"})
    if extra:
        print("  also: " + ", ".join(f"{n} {would[n]}" for n in extra))
    if refused:
        return "STOPPED" if not would else "FAIL"
    moved = [n for n in HELD if n in before and n in would]
    unpinned = [n for n in PINNED if would.get(n, before.get(n)) != pins[n]]
    return "FAIL" if moved or unpinned else "PASS"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--torch", default="2.13.0")
    ap.add_argument("--torchvision", default="0.28.0", help="the release made for --torch")
    ap.add_argument("--venv", default=None, help="default: /tmp/colab-resolver-<torch>")
    ap.add_argument("--naive", action="store_true", help="also resolve the README's former one-line install")
    ap.add_argument("--metadata-only", action="store_true", help="install only the metadata of torch and torchvision")
    a = ap.parse_args()
    venv = Path(a.venv or f"/tmp/colab-resolver-{a.torch}")
    python = str(venv / "bin" / "python")
    if not Path(python).exists():
        sh([sys.executable, "-m", "venv", venv])
        sh([python, "-m", "pip", "install", "-q", "--upgrade", "pip"])
        if a.metadata_only:
            install_metadata(python, {"torch": a.torch, "torchvision": a.torchvision})
        else:
            sh([python, "-m", "pip", "install", "-q", f"torch=={a.torch}", f"torchvision=={a.torchvision}"])
    freeze = sh([python, "-m", "pip", "list", "--format=freeze"])
    before = {normalise(x.split("==")[0]): x.split("==")[1] for x in freeze.splitlines() if "==" in x}
    print(f"environment: {venv}, pip {sh([python, '-m', 'pip', '--version']).split()[1]}, holds "
          + ", ".join(f"{n} {before[n]}" for n in HELD if n in before))

    code = f"REPORTS = {str(venv)!r}\n{DRY_RUN}\n{install_cell()}\nprint(json.dumps(calls))\n"
    done = subprocess.run([python, "-c", code], cwd=ROOT, env=clean_env(), capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"the install cell failed before pip ran:\n{done.stdout}\n{done.stderr}")
    results = {"notebook install cell": json.loads(done.stdout.strip().splitlines()[-1])}
    if a.naive:
        report = str(venv / "report-naive.json")
        cmd = [python, "-m", "pip", "install", "--dry-run", "--report", report, *NAIVE[1:]]
        naive = subprocess.run(cmd, cwd=ROOT, env=clean_env(), capture_output=True, text=True)
        results["former README line"] = [{"cmd": ["pip", *NAIVE], "rc": naive.returncode, "report": report,
                                          "output": (naive.stdout + naive.stderr)[-2000:]}]
    pins = requirement_pins()
    verdicts = {label: verdict(label, calls, before, pins) for label, calls in results.items()}
    print("\nresult: " + "; ".join(f"{label} {v}" for label, v in verdicts.items()))
    sys.exit(1 if verdicts["notebook install cell"] == "FAIL" else 0)


if __name__ == "__main__":
    main()

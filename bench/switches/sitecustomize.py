"""The benchmark's switches, applied from outside the product: with this folder on PYTHONPATH (bench/benchmark.py and
bench/run_notebook.py put it there), every Python process started (the five scripts, a notebook kernel) reads
- EMOJI_COMPILE=true|false: 02's per-block compile and CUDA graphs forced on or off, whatever lib.models.speed_plan
  decides. Without Unsloth (a CPU, or EMOJI_NO_UNSLOTH=1) the run says in one line that the switch does not apply.
- BENCH_AS_T4=1: torch.cuda.is_bf16_supported answers False from the moment torch is imported (before Unsloth wraps
  it), so every script takes the fp16 path, as on a T4; Unsloth's kernels still see the real GPU.
Python imports one sitecustomize: this one first runs the one it shadows, if any."""
import importlib.abc
import importlib.util
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
entries = [os.path.abspath(entry or ".") for entry in sys.path]
for entry in entries[entries.index(here) + 1:] if here in entries else entries:  # only those after this folder
    other = os.path.join(entry, "sitecustomize.py")
    if os.path.isfile(other):
        exec(compile(open(other).read(), other, "exec"), {"__name__": "sitecustomize", "__file__": other})
        break


class OnImport(importlib.abc.MetaPathFinder):
    """Calls patch(module) as soon as the module `name` has been imported."""

    def __init__(self, name, patch):
        self.name, self.patch = name, patch

    def find_spec(self, name, path=None, target=None):
        if name != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            self.patch(module)
        spec.loader.exec_module = exec_module
        return spec


def forced_plan(models, forced):
    """A speed_plan that answers the switch instead of the GPU, torch version and step count."""
    def speed_plan(name, planned_steps):
        if not models.uses_unsloth(name):
            print(f"EMOJI_COMPILE={forced} does not apply: compiling is a switch of the Unsloth (CUDA) path.")
            return False, False
        print(f"compile and CUDA graphs: {'on' if forced == 'true' else 'off'} ({planned_steps} steps planned; "
              f"EMOJI_COMPILE={forced})", flush=True)
        return forced == "true", forced == "true"
    return speed_plan


def no_bf16(device=None, including_emulation=True):  # torch's signature: Unsloth keeps the keyword if it has it
    return False


if forced := os.environ.get("EMOJI_COMPILE"):
    if forced not in ("true", "false"):
        print(f"error: EMOJI_COMPILE must be true or false, got {forced!r}", file=sys.stderr)
        os._exit(2)  # sys.exit here would be a fatal error of the site module, with its traceback
    sys.meta_path.insert(0, OnImport("lib.models", lambda models: setattr(models, "speed_plan",
                                                                         forced_plan(models, forced))))
if os.environ.get("BENCH_AS_T4") == "1":
    sys.meta_path.insert(0, OnImport("torch", lambda torch: setattr(torch.cuda, "is_bf16_supported", no_bf16)))

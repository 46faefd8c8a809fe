"""The benchmark's compile switch: with this folder on PYTHONPATH, EMOJI_COMPILE=true|false forces 02's per-block
compile and CUDA graphs on or off, whatever lib.models.speed_plan decides (bench/benchmark.py and bench/run_notebook.py
put it there). Without Unsloth (a CPU, or EMOJI_NO_UNSLOTH=1) the run says in one line that the switch does not apply.
Python imports one sitecustomize: this one first runs the one it shadows, if any."""
import importlib.abc
import importlib.util
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
entries = [os.path.abspath(entry or ".") for entry in sys.path]
for entry in entries[entries.index(here) + 1:] if here in entries else entries:  # the ones after this folder only: a
    other = os.path.join(entry, "sitecustomize.py")  # sitecustomize before it (run_notebook's T4 one) runs this one
    if os.path.isfile(other):
        exec(compile(open(other).read(), other, "exec"), {"__name__": "sitecustomize", "__file__": other})
        break


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


class PatchModels(importlib.abc.MetaPathFinder):
    """Replaces lib.models.speed_plan as soon as lib.models is imported."""

    def find_spec(self, name, path=None, target=None):
        if name != "lib.models":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            module.speed_plan = forced_plan(module, os.environ["EMOJI_COMPILE"])
        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("EMOJI_COMPILE"):
    if os.environ["EMOJI_COMPILE"] not in ("true", "false"):
        print(f"error: EMOJI_COMPILE must be true or false, got {os.environ['EMOJI_COMPILE']!r}", file=sys.stderr)
        os._exit(2)  # sys.exit here would be a fatal error of the site module, with its traceback
    sys.meta_path.insert(0, PatchModels())

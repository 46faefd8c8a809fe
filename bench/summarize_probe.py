"""Print a short comparison of bench/probe.py JSON results (one file per path)."""
import json
import sys

for path in sys.argv[1:]:
    try:
        r = json.load(open(path))
    except Exception as e:  # a path that crashed leaves no JSON
        print(path, "missing:", e)
        continue
    print(f"== {r['path']} {r.get('gpu')} {r.get('versions')} import {r.get('import_s')}s mean tokens {r.get('mean_tokens')}")
    for c in r.get("configs", []):
        print(f" {c['name']}: gc={c['gc']} dropout={c['dropout']} pf={c['padding_free']} load {c.get('load_s')}s "
              f"peft {c.get('peft_s')}s mem {c.get('mem_after_load_gib')} GiB loss {c.get('loss_fixed_batch_fixed_lora')}")
        for run in c["runs"]:
            print(f"   bs {run['batch']:>3} ga {run['ga']} x {run['steps']}: init {run['trainer_init_s']}s "
                  f"train {run['train_s']}s warmup {run['warmup_s']}s first {run['step_s'][:4]} med "
                  f"{run['step_s_median']}s -> {run['steady_tokens_per_s']} tok/s pad {run['pad_fraction']} "
                  f"peak {run['peak_gib']} GiB pf={run['padding_free']} {run['profile'] or ''}")
    g = r.get("generation")
    if g:
        print("   gen", {k: (v if not isinstance(v, dict) else (v["prompts"], v["s"])) for k, v in g.items()})
    print(f"   total {r.get('total_s')}s peak {r.get('peak_gib_total')} GiB")

"""Issue 18, "The llama.cpp crash": does llama-cpp-python's OpenAI-compatible server survive a chat completion on this
CPU, and what does each way of avoiding the crash cost?

Each variant starts `python -m llama_cpp.server` the way tests/conftest.py does (n_ctx 1024, one thread), sends one
warm-up and then N chat completions (distinct ~60-token prompts, max_tokens 16), and reads llama.cpp's own timings
(`prompt eval time = … / N tokens`, `eval time = … / N runs`, printed after every completion since the server runs
verbose). A variant is named on the command line as

    --variant 'LABEL|MODEL.gguf|LIB_DIR|EXTRA SERVER FLAGS'

LIB_DIR (may be empty) is the folder of llama.cpp shared libraries to load instead of the installed package's own
(llama-cpp-python's LLAMA_CPP_LIB_PATH), so several builds can be compared with one installed package. The first variant
that does not crash is the baseline of the ratio columns, unless --baseline names another.

    python bench/llama_server_crash.py --variant 'native|model.gguf|/tmp/native/lib|' \
        --variant 'native, n_batch 1|model.gguf|/tmp/native/lib|--n_batch 1 --n_ubatch 1' \
        --variant 'GGML_NATIVE=OFF|model.gguf||'

`quantize SRC DST TYPE` (TYPE: q8_0, f16, q4_1) re-quantizes a GGUF through llama.cpp's llama_model_quantize, so q8_0
and f16 files can be made from the embedded Q4_1 one where no Hugging Face weights can be fetched (the values are the
Q4_1 ones, the tensor types and therefore the code paths are those of a real q8_0 or f16 export).
"""
import argparse
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

KEY = "sk-bench-0000000000"
SENTENCES = [
    "Let's go dancing tonight at the new club downtown", "My cat knocked the birthday cake off the table again",
    "We finally booked the flights for our summer holiday in Greece", "The rain has not stopped for three whole days",
    "I passed my driving test on the very first try", "Grandma is baking apple pie for the whole family",
    "The football match went to penalties and we won", "I can't find my keys and I'm already late for work",
    "Our team shipped the release just before midnight", "The puppy fell asleep in the laundry basket",
    "We watched the sunrise from the top of the mountain", "My phone battery died in the middle of the call",
    "The pizza arrived cold and an hour late", "She got accepted into the music conservatory",
    "The garden is full of tomatoes and sunflowers this year", "I spilled coffee all over my new white shirt",
    "We are moving to a small flat near the sea", "The concert tickets sold out in two minutes",
    "He proposed to her on a boat under the stars", "The exam results come out tomorrow morning",
    "Snow is falling and the children are building a snowman", "I ran my first marathon and my legs hurt",
]
TIMING = re.compile(r"prompt eval time =\s*([\d.]+) ms /\s*(\d+) tokens.*?\n.*?eval time =\s*([\d.]+) ms /\s*(\d+) runs")


def prompt(i):
    """A distinct ~60-token request: three sentences in a different order each time, so no two prompts share more
    than the chat template's prefix (llama-cpp-python reuses a cached prefix and would not evaluate it again)."""
    n = len(SENTENCES)
    picks = [SENTENCES[(i * 7 + k * 5) % n] for k in range(3)]
    return (f"Request {i}. Reply with emojis only, one emoji combination for each of these sentences, in order: "
            + "; ".join(picks) + ".")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(base, i, max_tokens, timeout):
    body = json.dumps({"model": "bench", "max_tokens": max_tokens, "temperature": 0,
                       "messages": [{"role": "user", "content": prompt(i)}]}).encode()
    request = urllib.request.Request(base + "/chat/completions", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def run_variant(spec, args, log_dir):
    label, model, lib_dir, extra = (spec.split("|") + ["", "", ""])[:4]
    port = free_port()
    cmd = [args.python, "-m", "llama_cpp.server", "--model", model, "--host", "127.0.0.1", "--port", str(port),
           "--api_key", KEY, "--n_ctx", "1024", "--n_threads", str(args.threads), "--n_threads_batch",
           str(args.threads)] + shlex.split(extra)
    env = dict(os.environ)
    if lib_dir:
        env["LLAMA_CPP_LIB_PATH"] = lib_dir
    log_path = log_dir / (re.sub(r"[^A-Za-z0-9_.-]+", "_", label) + ".log")
    result = {"variant": label, "model": Path(model).name, "lib": lib_dir or "(package)", "flags": extra,
              "crashed": None, "answered": 0, "log": str(log_path)}
    base = f"http://127.0.0.1:{port}/v1"
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.time() + args.start_timeout
            while True:
                if proc.poll() is not None or time.time() > deadline:
                    result["crashed"] = f"did not start (exit {proc.poll()})"
                    log.flush()
                    result["log_tail"] = log_path.read_text(errors="replace").splitlines()[-6:]
                    return result
                try:
                    urllib.request.urlopen(urllib.request.Request(
                        base + "/models", headers={"Authorization": f"Bearer {KEY}"}), timeout=2).read()
                    break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    time.sleep(0.2)
            result["ggml_cpu_loaded"] = loaded_library(proc.pid, "libggml-cpu")
            answers = []
            t0 = time.perf_counter()
            for i in range(args.requests + 1):  # request 0 is the warm-up, left out of the timings
                try:
                    reply = post(base, i, args.max_tokens, args.request_timeout)
                except Exception as exc:  # the crash shows as a dropped connection (RemoteDisconnected)
                    time.sleep(1)
                    code = proc.poll()
                    result["crashed"] = (f"yes: request {i} got {type(exc).__name__}; server exit {code}"
                                         + (" (SIGSEGV)" if code == -11 else ""))
                    log.flush()
                    result["log_tail"] = log_path.read_text(errors="replace").splitlines()[-6:]
                    return result
                if i == 0:
                    t0 = time.perf_counter()
                else:
                    answers.append(reply["choices"][0]["message"]["content"])
            result["wall_s"] = time.perf_counter() - t0
            result["answered"] = len(answers)
            result["first_answer"] = answers[0] if answers else ""
            result["crashed"] = "no"
        finally:
            proc.kill()  # a benchmark's server needs no graceful stop
            proc.wait()
    timings = TIMING.findall(log_path.read_text(errors="replace"))[1:]  # [0] is the warm-up's
    if timings:
        p_ms, p_tok, g_ms, g_tok = (sum(float(t[k]) for t in timings) for k in range(4))
        result.update(prompt_tokens=p_tok / len(timings), prompt_tps=1000 * p_tok / p_ms if p_ms else None,
                      gen_tps=1000 * g_tok / g_ms if g_ms else None)
    return result


def loaded_library(pid, name):
    """The file of the shared library `name` that the server really mapped (Linux), to check LIB_DIR took effect."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return None
    return next((line.split()[-1] for line in maps.splitlines() if f"/{name}" in line), None)


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return "unknown"
    name = re.search(r"Model name:\s*(.+)", out)
    flags = re.search(r"Flags:\s*(.+)", out)
    isa = [f for f in (flags.group(1).split() if flags else []) if f.startswith(("avx512f", "amx", "avx2"))]
    return f"{name.group(1).strip() if name else 'unknown'} ({os.cpu_count()} CPUs; {' '.join(isa)})"


def quantize(src, dst, kind):
    import llama_cpp
    ftypes = {"q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, "f16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16,
              "q4_1": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_1}
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftypes[kind]
    params.allow_requantize = True
    params.nthread = os.cpu_count() or 1
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params) != 0:
        sys.exit(f"quantize {src} -> {dst} ({kind}) failed")
    print(f"{dst}: {Path(dst).stat().st_size / 2**20:.1f} MiB ({kind})")


def fmt(value, spec):
    return "–" if value is None else format(value, spec)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "quantize":
        return quantize(*sys.argv[2:5])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--variant", action="append", help="'LABEL|MODEL|LIB_DIR|EXTRA FLAGS'")
    parser.add_argument("--from-json", help="print the table of an earlier --json file instead of running")
    parser.add_argument("--baseline", help="label of the ratio columns' baseline (default: first that answered)")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="--n_threads and --n_threads_batch (conftest: 1)")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--start-timeout", type=float, default=120)
    parser.add_argument("--request-timeout", type=float, default=120)
    parser.add_argument("--log-dir", default="llama_server_crash_logs")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.from_json:  # print the table of an earlier run again
        results = json.loads(Path(args.from_json).read_text())
    else:
        if not args.variant:
            parser.error("name at least one --variant (or --from-json)")
        log_dir = Path(args.log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        print(f"CPU: {cpu_model()}", flush=True)
        results = []
        for spec in args.variant:
            results.append(run_variant(spec, args, log_dir))
            print(json.dumps(results[-1], ensure_ascii=False), flush=True)
    ok = [r for r in results if r["crashed"] == "no" and r.get("prompt_tps")]
    base = next((r for r in ok if r["variant"] == args.baseline), ok[0] if ok else None)
    print(f"\n{results[0].get('answered') or args.requests} chat completions per variant, max_tokens {args.max_tokens}, "
          f"{args.threads} thread(s); baseline: {base['variant'] if base else 'none'}\n")
    # With --n_batch 1 llama.cpp counts every prompt token but the last as a generation run, so its prompt tok/s is
    # blank and its gen tok/s mixes both: compare such variants by the wall time of the N requests.
    print("| variant | model | flags | crashed? | prompt tokens | prompt tok/s | gen tok/s | prompt × | gen × "
          "| wall s | wall × |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        batch1 = (r.get("prompt_tokens") or 0) <= 1
        ptps = None if batch1 else r.get("prompt_tps")
        gtps = None if batch1 else r.get("gen_tps")
        pr = ptps / base["prompt_tps"] if base and ptps else None
        gr = gtps / base["gen_tps"] if base and gtps else None
        wr = r["wall_s"] / base["wall_s"] if base and r.get("wall_s") else None
        print(f"| {r['variant']} | {r['model']} | {r['flags'] or '–'} | {r['crashed']} | "
              f"{fmt(r.get('prompt_tokens'), '.0f')} | {fmt(ptps, '.0f')} | {fmt(gtps, '.1f')} | {fmt(pr, '.2f')} | "
              f"{fmt(gr, '.2f')} | {fmt(r.get('wall_s'), '.1f')} | {fmt(wr, '.2f')} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()

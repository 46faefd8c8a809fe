"""Run one of the project's scripts unchanged, recording when things happen, for bench/benchmark.py.

    BENCH_EVENTS=events.json python bench/instrument.py 02_train.py --model /tmp/llama2-7b-shaped [...]

Records (seconds since this process started): each lib.models.load call, every training step (with CUDA
synchronised at its start and end, so a step's time is its GPU work) with its batch shape and real (unpadded) tokens,
train begin/end, each lib.models.generate call. Switches:
  BENCH_FP16=1          torch reports bf16 as unsupported, so the scripts take their fp16 path, as on a T4
                        (Unsloth's own kernels still see an H100: this is the project's fp16 path, not a T4);
For 02_train.py:
  BENCH_PROFILE=A:B     torch.profiler over training steps A..B-1 of the first run (0-based): wall time, GPU kernel
                        time and count, and the top operations by GPU and by host time, into the events file.
For 02_train.py on a CPU (bench/cpu_train.py's variants of a training step that are not settings of 02):
  BENCH_SFT=JSON        SFTConfig fields set after 02 made its config, e.g. {"train_sampling_strategy": "group_by_length"}
  BENCH_LM_HEAD_CHUNK=N TRL's chunked loss computes the output layer in chunks of N answer tokens (TRL's own: 256)
  BENCH_WEIGHTS=DTYPE   the loaded model's weights cast to torch.DTYPE (LoRA weights and optimizer stay float32: PEFT
                        keeps adapters in float32). float32 on a CPU with AMX is 02 before issue 19 (float32 weights
                        under bf16 autocast); bfloat16 is 02 since.
For 03_generate.py, after the script has finished with its model still in memory:
  BENCH_GEN_COMPARE=N   answer every greedy emoji prompt with adapter ft1 all at once in batches, then the first N
                        one at a time (same token budget), timing both;
  BENCH_REF_ADAPTER=dir before the model switches to inference mode, the loss of a fixed batch (the first 16
                        validation pairs, answer tokens only) with that adapter loaded as "ref": the same adapter
                        file in every path gives the loss-equivalence check.
"""
import json
import os
import runpy
import sys
import time
from pathlib import Path

T0 = time.time()
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
EVENTS = Path(os.environ["BENCH_EVENTS"])
SCRIPT = sys.argv[1]
ev = {"argv": sys.argv[1:], "loads": [], "runs": [], "generate": [], "notes": []}

if os.environ.get("BENCH_FP16") == "1":
    import torch

    def no_bf16(device=None, including_emulation=True):  # what lib.models.train_dtype asks
        return False

    # torch's own signature: Unsloth re-wraps the probe at import and keeps the keyword only if the signature has it
    torch.cuda.is_bf16_supported = no_bf16
    ev["notes"].append("BENCH_FP16: torch.cuda.is_bf16_supported() answers False")


def now():
    return round(time.time() - T0, 3)


def dump():
    EVENTS.write_text(json.dumps(ev, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


# The scripts' own module objects: they call models.load(...), so the wrappers below are what they call.
from lib import models, prompts, store  # noqa: E402

_import_unsloth = models.import_unsloth


def import_unsloth(*args, **kwargs):
    """The script's own Unsloth import (with its own switches), timed; the trainer hooks below import transformers,
    so they are installed only after it."""
    t = now()
    _import_unsloth(*args, **kwargs)
    ev["unsloth_import_s"] = round(now() - t, 1)
    ev["unsloth_env"] = {k: v for k, v in os.environ.items() if k.startswith(("UNSLOTH_", "TORCHINDUCTOR_", "TRITON_"))}
    install_recorder()


models.import_unsloth = import_unsloth

_load = models.load
_tokenizer_holder = [None]  # 03 keeps its tokenizer to itself; the loss check needs it


def load(*args, **kwargs):
    install_recorder()  # in case the script imported its trainer without models.import_unsloth
    start = now()
    model, tokenizer, prompt_format = _load(*args, **kwargs)
    if os.environ.get("BENCH_WEIGHTS"):
        model.to(getattr(__import__("torch"), os.environ["BENCH_WEIGHTS"]))
    _tokenizer_holder[0] = tokenizer
    ev["loads"].append({"start": start, "end": now(), "dtype": str(model.dtype), "prompt_format": prompt_format})
    dump()
    return model, tokenizer, prompt_format


models.load = load

_generate = models.generate


def generate(model, tokenizer, texts, max_new_tokens, batch_size=16, sample=None, desc="generating"):
    """models.generate's own signature (03 passes batch_size and sample by position); sample None is greedy."""
    sync()
    start = now()
    out = _generate(model, tokenizer, texts, max_new_tokens, batch_size, sample, desc=desc)
    sync()
    ev["generate"].append({"start": start, "s": round(now() - start, 3), "prompts": len(texts),
                           "max_new_tokens": max_new_tokens, "batch_size": batch_size,
                           "do_sample": sample is not None, "sample": sample, "desc": desc})
    dump()
    return out


models.generate = generate

_for_inference = models.for_inference


def for_inference(model):
    ref = os.environ.get("BENCH_REF_ADAPTER")
    if ref and Path(ref, "adapter_config.json").exists():
        try:
            ev["loss_check"] = fixed_batch_loss(model, ref)
        except Exception as exc:  # a failed check must not cost the benchmark
            ev["loss_check"] = {"error": repr(exc)[:500]}
        dump()
    return _for_inference(model)


models.for_inference = for_inference


def chat_tokens(tokenizer, messages):
    """(input_ids, labels) of one chat example: the whole conversation in the model's chat template, the loss on
    what follows the prompt (the answer and the template's end of turn), as in training."""
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    prompt = prompts.render(tokenizer, messages[:-1])
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    n = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    return ids, [-100] * n + ids[n:]


def fixed_batch_loss(model, ref):
    import torch
    from datasets import load_from_disk

    tokenizer = _tokenizer_holder[0]
    messages = load_from_disk(str(store.DATASET_DIR))["validation"]["messages"][:16]
    rows = [chat_tokens(tokenizer, m) for m in messages]
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100)
    for i, (row_ids, row_labels) in enumerate(rows):  # right-padded, as in training
        ids[i, :len(row_ids)], mask[i, :len(row_ids)] = torch.tensor(row_ids), 1
        labels[i, :len(row_ids)] = torch.tensor(row_labels)
    device = next(model.parameters()).device
    model.load_adapter(ref, adapter_name="ref")
    model.set_adapter("ref")
    with torch.no_grad(), torch.autocast(device.type, dtype=models.train_dtype(), enabled=device.type == "cuda"):
        loss = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss
    return {"adapter": str(ref), "loss": float(loss), "examples": len(rows),
            "answer_tokens": int((labels != -100).sum())}


PROFILE = [int(x) for x in os.environ["BENCH_PROFILE"].split(":")] if os.environ.get("BENCH_PROFILE") else None


def profile_start():
    import torch

    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                              torch.profiler.ProfilerActivity.CUDA], record_shapes=True)
    prof.__enter__()
    prof.t0 = time.time()
    return prof


def profile_stop(prof, steps):
    import torch

    sync()
    wall = time.time() - prof.t0
    prof.__exit__(None, None, None)
    gpu = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(e.time_range.elapsed_us() for e in gpu) / 1e6
    averages = prof.key_averages()
    return {"steps": steps, "wall_s": round(wall, 3), "gpu_kernel_s": round(busy, 3),
            "gpu_busy_pct": round(100 * busy / wall, 1), "gpu_events": len(gpu),
            "top_gpu": averages.table(sort_by="self_device_time_total", row_limit=15, max_name_column_width=60),
            "top_host": averages.table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=60),
            "top_host_by_shape": prof.key_averages(group_by_input_shape=True).table(
                sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=40, max_shapes_column_width=60)}


def install_recorder():
    if not SCRIPT.startswith("02") or ev.get("recorder"):
        return
    ev["recorder"] = True
    import trl
    from trl.trainer import sft_trainer

    if os.environ.get("BENCH_LM_HEAD_CHUNK"):  # read by SFTTrainer.__init__; 02's own setting, if any, comes first
        chunk = int(os.environ["BENCH_LM_HEAD_CHUNK"])
        _init = sft_trainer.SFTTrainer.__init__

        def init_with_chunk(self, *args, **kwargs):
            sft_trainer._CHUNKED_LM_HEAD_CHUNK_SIZE = chunk
            _init(self, *args, **kwargs)
        sft_trainer.SFTTrainer.__init__ = init_with_chunk
    if os.environ.get("BENCH_SFT"):
        overrides = json.loads(os.environ["BENCH_SFT"])
        _post_init = trl.SFTConfig.__post_init__

        def post_init(self):
            _post_init(self)
            for key, value in overrides.items():
                setattr(self, key, value)
        trl.SFTConfig.__post_init__ = post_init
    from transformers import trainer_callback

    batch = {}  # the shape and real tokens of the step's batch, read by the trainer's training_step below

    class Recorder(trainer_callback.TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            ev["runs"].append({"begin": now(), "steps": [], "batches": [], "evaluations": [],
                               "batch_size": args.per_device_train_batch_size,
                               "grad_accum": args.gradient_accumulation_steps, "epochs": args.num_train_epochs,
                               "padding_free": getattr(args, "padding_free", None),
                               "pad_to_multiple_of": getattr(args, "pad_to_multiple_of", None),
                               "gradient_checkpointing": args.gradient_checkpointing, "optim": str(args.optim),
                               "learning_rate": args.learning_rate, "bf16": args.bf16, "fp16": args.fp16})
            dump()

        def on_step_begin(self, args, state, control, **kwargs):
            sync()
            if PROFILE and len(ev["runs"]) == 1 and state.global_step == PROFILE[0]:
                self.profiler = profile_start()
            batch.clear()
            self.t = now()

        def on_step_end(self, args, state, control, **kwargs):
            sync()
            run = ev["runs"][-1]
            run["steps"].append([self.t, round(now() - self.t, 4)])
            run["batches"].append([batch.get("rows"), batch.get("width"), batch.get("tokens")])
            if getattr(self, "profiler", None) is not None and state.global_step == PROFILE[1]:
                ev["profile"] = profile_stop(self.profiler, PROFILE[1] - PROFILE[0])
                self.profiler = None
                dump()

        def on_evaluate(self, args, state, control, **kwargs):
            if ev["runs"]:
                ev["runs"][-1]["evaluations"].append(now())

        def on_train_end(self, args, state, control, **kwargs):
            ev["runs"][-1]["end"] = now()
            import torch

            if torch.cuda.is_available():
                ev["runs"][-1]["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            dump()

    _handler_init = trainer_callback.CallbackHandler.__init__

    def handler_init(self, callbacks, *args, **kwargs):
        _handler_init(self, list(callbacks) + [Recorder()], *args, **kwargs)

    trainer_callback.CallbackHandler.__init__ = handler_init

    # The trainer class 02 will use (Unsloth has already swapped in its own, if it does): note each batch's shape.
    trainer_class = trl.SFTTrainer
    _training_step = trainer_class.training_step

    def training_step(self, model, inputs, *args, **kwargs):
        ids, mask = inputs.get("input_ids"), inputs.get("attention_mask")
        if ids is not None and ids.dim() == 2:
            batch["rows"], batch["width"] = map(int, ids.shape)
            batch["tokens"] = int(mask.sum()) if mask is not None else int(ids.numel())
        return _training_step(self, model, inputs, *args, **kwargs)

    trainer_class.training_step = training_step


script = sys.argv[1]
sys.argv = sys.argv[1:]
exit_code = 0
try:
    g = runpy.run_path(str(ROOT / script), run_name="__main__")
except SystemExit as exc:
    exit_code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    g = None
ev["script_end"] = now()
dump()

compare = int(os.environ.get("BENCH_GEN_COMPARE", "0"))
if g is not None and compare and "prompt_sets" in g:
    model, tokenizer = g["model"], g["tokenizer"]
    texts = [g["model_input"](name, item[0]) for name, items in g["prompt_sets"].items() if name != "general"
             for item in items]
    if "ft1" in getattr(model, "peft_config", {}):
        model.set_adapter("ft1")
    budget, batch_size = g["budget"], g["BATCH_SIZE"]  # 03's emoji-answer token budget
    result = {"prompts": len(texts), "max_new_tokens": budget}
    for name, size, subset in (("batched", batch_size, texts), ("one_at_a_time", 1, texts[:compare])):
        sync()
        start = time.time()
        outs = models.generate(model, tokenizer, subset, max_new_tokens=budget, batch_size=size, desc=name)
        sync()
        seconds = time.time() - start
        result[name] = {"prompts": len(subset), "batch_size": size, "s": round(seconds, 2),
                        "prompts_per_s": round(len(subset) / seconds, 2),
                        "truncated": sum(bool(cut) for _, cut in outs)}
    result["speedup"] = round(result["batched"]["prompts_per_s"] / result["one_at_a_time"]["prompts_per_s"], 2)
    ev["gen_compare"] = result
    dump()
sys.exit(exit_code)

"""Tasks 2 and 4.1: LoRA fine-tune the model on the emoji dataset, once per entry of EPOCHS (default 1 and 5 epochs,
same data, same seed), with the loss on the answer only and the validation loss measured every epoch.

With CUDA the default model is Llama-2-7B-chat in 4-bit through Unsloth's fused kernels; without CUDA it is the
embedded SmolLM2-135M-Instruct through transformers + PEFT. Each run saves its adapter, tokenizer, losses and run
metadata under outputs/adapters/epochsN/."""
import gc
import math
import shutil
import sys
import time
from datetime import datetime, timezone

import common
import export

MODEL = "auto"  # auto | embedded | a Hugging Face name or local folder
EPOCHS = "1,5"  # one separate run per entry
# auto: every training pair with CUDA; on a CPU a seeded subset of CPU_TRAIN_PAIRS, so the demo fits its time budget
# (README: what it costs in quality). "all", or a number, for the same choice everywhere. Every run gets the same pairs.
TRAIN_PAIRS = "auto"
CPU_TRAIN_PAIRS = 400  # ~6 min of training for both runs on 2 CPU cores (README, BENCHMARKS.md)
BATCH_SIZE = "auto"  # a number, or auto: 4 for the embedded model (sweep in BENCHMARKS.md), 8 for the 7B
GRAD_ACCUM = 1
LEARNING_RATE = "auto"  # a number, or auto: 2e-4 for the 7B QLoRA (Unsloth's guidance), 5e-4 for the embedded model
LR_SCHEDULER = "linear"
WARMUP = 0.05  # fraction of the steps (< 1) or a number of steps
WEIGHT_DECAY = 0.0
LORA_R = 16
LORA_ALPHA = 32
LORA_DROPOUT = 0.05
LORA_TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"  # every linear layer of the blocks
# Which transformer blocks get adapters: all, or FIRST-LAST (0-based, e.g. 20-29). Backpropagation stops at the lowest
# adapted block, so adapting only the top blocks makes a step cheaper.
LORA_LAYERS = "all"
# LoRA+: the B matrices learn this many times faster than the A matrices (1: plain LoRA); auto: 16 for the embedded
# model (the best one-pass validation F1 in the sweep, BENCHMARKS.md), 1 for the 7B (unmeasured there). LoRA+ builds
# its own optimizer (torch's AdamW, peft's create_loraplus_optimizer): OPTIM applies to plain LoRA only.
LORAPLUS_RATIO = "auto"
MAX_SEQ_LENGTH = 128
OPTIM = "adamw_torch_fused"  # stated: Unsloth otherwise swaps in 8-bit AdamW without saying so
COMPILE = "auto"  # Unsloth path: torch.compile each transformer block; auto: only when it pays (compile_pays below)
CUDA_GRAPHS = "auto"  # with COMPILE: replay each compiled block as a recorded CUDA graph (a step is launch-bound)
COMPILE_MIN_STEPS = 400  # auto: the planned optimizer steps from which compiling pays for itself (BENCHMARKS.md)
SEED = 42
MAX_STEPS = -1  # > 0 caps each run (smoke tests); -1 trains the full epochs
EARLY_STOPPING = False  # stop a run when validation loss stops improving (a remedy for overfitting)
EARLY_STOPPING_PATIENCE = 1
# After training, each run is also exported for use outside this repo (README: llama.cpp, Ollama, 04 beside ChatGPT):
# none | merged (16-bit weights) | gguf (one file, chat template inside) | auto (gguf on a CPU, none for a 7B on a GPU)
EXPORT = "auto"

args = common.configure(globals(), __doc__, checks=dict(
    EPOCHS=common.positive_int_list, TRAIN_PAIRS=common.either("auto", "all", common.positive_int),
    CPU_TRAIN_PAIRS=common.positive_int, BATCH_SIZE=common.either("auto", common.positive_int), GRAD_ACCUM=common.positive_int,
    LEARNING_RATE=common.either("auto", common.positive), WEIGHT_DECAY=common.non_negative,
    WARMUP=common.either(common.between(0, 1, include_low=True), common.non_negative_int),  # a fraction or steps
    LORA_R=common.positive_int, LORA_ALPHA=common.positive, LORA_DROPOUT=common.between(0, 1, include_low=True),
    LORA_TARGETS=common.not_empty, LORA_LAYERS=common.either("all", common.index_range),
    LORAPLUS_RATIO=common.either("auto", common.positive), MAX_SEQ_LENGTH=common.positive_int,
    COMPILE_MIN_STEPS=common.positive_int,
    COMPILE=common.one_of("auto", "true", "false"), CUDA_GRAPHS=common.one_of("auto", "true", "false"),
    MAX_STEPS=common.either(-1, common.positive_int), EARLY_STOPPING_PATIENCE=common.positive_int,
    EXPORT=common.one_of("auto", "none", "merged", "gguf")))
common.require(common.DATASET_DIR / "dataset_dict.json", "01_make_dataset.py")
dataset_fp = common.dataset_fingerprint()
if dataset_fp is None:
    sys.exit(f"error: {common.display(common.DATASET_DIR)} has no readable stamp - run `python 01_make_dataset.py` first.")

import torch  # noqa: E402  (heavy imports after --help and the input check; Unsloth's waits for the decision below)
from datasets import load_from_disk  # noqa: E402

model_name = common.resolve_model(MODEL)
epoch_runs = common.parse_epochs(EPOCHS)
# Per-model defaults: the embedded model's come from the validation-F1 sweep (bench/sweep.py), the 7B's from Unsloth's
# QLoRA guidance and the H100 benchmark.
embedded = model_name == common.EMBEDDED
learning_rate = float(LEARNING_RATE) if LEARNING_RATE != "auto" else 5e-4 if embedded else 2e-4
loraplus_ratio = float(LORAPLUS_RATIO) if LORAPLUS_RATIO != "auto" else 16.0 if embedded else 1.0
batch_size = int(BATCH_SIZE) if BATCH_SIZE != "auto" else 4 if embedded else 8
train_pairs = (None if TRAIN_PAIRS == "all" or (TRAIN_PAIRS == "auto" and torch.cuda.is_available())
               else CPU_TRAIN_PAIRS if TRAIN_PAIRS == "auto" else int(TRAIN_PAIRS))


def stamp(epochs):
    """What makes run epochsN: every constant here except those that only pick which runs and files to make (EPOCHS,
    EXPORT) or how fast they run (COMPILE, CUDA_GRAPHS, COMPILE_MIN_STEPS: padding is masked out of the loss), the
    resolved model and settings, this run's epochs, and the dataset's fingerprint."""
    settings = common.settings_of(globals(), exclude=("EPOCHS", "EXPORT", "COMPILE", "CUDA_GRAPHS", "COMPILE_MIN_STEPS"),
                                  model=model_name, learning_rate=learning_rate, loraplus_ratio=loraplus_ratio,
                                  batch_size=batch_size, train_pairs=train_pairs, epochs=epochs)
    return common.make_stamp(settings, {"dataset": dataset_fp})


def up_to_date(epochs):
    old = common.read_stamp(common.adapter_path(epochs) / "run.json")
    return old is not None and old["fingerprint"] == stamp(epochs)["fingerprint"]


todo = [e for e in epoch_runs if args.force or not up_to_date(e)]
for e in sorted(set(epoch_runs) - set(todo)):
    print(f"{common.display(common.adapter_path(e))} is up to date (use --force to retrain).")
if not todo:
    export.export_runs(epoch_runs, EXPORT)  # an up-to-date adapter may still lack its export
    sys.exit(0)

raw = load_from_disk(str(common.DATASET_DIR))
all_train = len(raw["train"])
if train_pairs is not None and train_pairs < all_train:  # the KNOWN prompts stay: Task 2.1 asks about trained pairs
    from datasets import concatenate_datasets

    known = raw["train"].filter(lambda ex: ex["sentence"] in common.KNOWN)
    others = raw["train"].filter(lambda ex: ex["sentence"] not in common.KNOWN).shuffle(seed=SEED)
    raw["train"] = concatenate_datasets([known, others.select(range(max(0, train_pairs - len(known))))])
n_augmented = sum(raw["train"]["augmented"])
print(f"dataset: train {len(raw['train'])} of {all_train} pairs ({n_augmented} augmented), validation "
      f"{len(raw['validation'])}; the test split is not read here")

per_epoch = math.ceil(len(raw["train"]) / (batch_size * GRAD_ACCUM))
planned_steps = sum(MAX_STEPS if MAX_STEPS > 0 else per_epoch * e for e in todo)


def compile_pays():
    """Unsloth's per-block compile with CUDA graphs cost ~50 s more than not compiling on a cold H100 (first step and
    graph recording; ~13 s with a warm cache) plus ~30 s of re-recording per further run, and saved 0.21 s on every
    later step (0.099 vs 0.311 s): worth it from ~400 steps of 1 + 5-epoch runs (BENCHMARKS.md). Unsloth 2026.10.9
    compiles Llama blocks only on torch >= 2.11 (below, graphs have nothing to replay and would only pad). Off on GPUs
    older than sm_80 (the T4): there a 7B step is bound by arithmetic, not by kernel launches, and it is unmeasured."""
    from packaging.version import Version

    return (common.uses_unsloth(model_name) and Version(torch.__version__.split("+")[0]) >= Version("2.11")
            and torch.cuda.get_device_capability()[0] >= 8 and planned_steps >= COMPILE_MIN_STEPS)


compile_on = compile_pays() if COMPILE == "auto" else COMPILE == "true"
graphs = compile_on and CUDA_GRAPHS != "false" and common.uses_unsloth(model_name)
if common.uses_unsloth(model_name):
    print(f"compile: {'on' if compile_on else 'off'}, CUDA graphs: {'on' if graphs else 'off'} ({planned_steps} "
          f"steps planned; auto compiles from {COMPILE_MIN_STEPS} on torch >= 2.11 and sm_80+)", flush=True)
# Before transformers/TRL/PEFT, so that Unsloth's patches apply.
common.import_unsloth_if_used(MODEL, cuda_graphs=graphs, compile=compile_on)
from transformers import set_seed  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402


def add_lora(model):
    """Fresh LoRA adapters on the LORA_TARGETS layers of the LORA_LAYERS transformer blocks."""
    targets = [t.strip() for t in LORA_TARGETS.split(",") if t.strip()]
    layers = None if LORA_LAYERS == "all" else common.parse_index_range(LORA_LAYERS)
    blocks = model.config.num_hidden_layers
    if layers and layers[-1] >= blocks:
        sys.exit(f"error: --lora-layers {LORA_LAYERS}: {model_name} has {blocks} blocks, numbered 0-{blocks - 1}.")
    if common.uses_unsloth(model_name):
        from unsloth import FastLanguageModel

        # No activation checkpointing here either: on the H100 it made a batch-8 step 27% slower (0.324 s vs 0.256 s)
        # for memory these short sequences don't need (peak 4.6 vs 7.5 GiB, within a T4's 15 GB); BENCHMARKS.md.
        return FastLanguageModel.get_peft_model(model, r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT,
                                                target_modules=targets, layers_to_transform=layers,
                                                use_gradient_checkpointing=False, random_state=SEED)
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT,
                                            target_modules=targets, layers_to_transform=layers,
                                            task_type="CAUSAL_LM"))


# One model for every run: it is loaded and given its adapters once, and each run starts from the same initial adapter
# weights, copied back in place. Loading again cost a 7B model ~5 s, and with CUDA graphs the first run's recorded
# graphs kept the first copy alive (5-epoch peak 10.2 instead of 7.1 GiB on the H100).
start = time.time()
set_seed(SEED)
model, tokenizer = common.load_model(model_name, MAX_SEQ_LENGTH)
load_seconds = time.time() - start
prompt_format = common.prompt_format(tokenizer)
# TRL's prompt/completion path renders both with the model's chat template, checks that the prompt's tokens are a
# prefix of the whole, and masks the loss to the completion (the emojis and the template's end-of-turn token).
data = {split: raw[split].map(lambda ex: {"prompt": ex["messages"][:-1], "completion": ex["messages"][-1:]},
                              remove_columns=raw[split].column_names)
        for split in ("train", "validation")}
model = add_lora(model)
initial_adapter = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def pad_width():
    """With CUDA graphs every batch is padded to one width, so the recorded graphs have one shape per batch size: the
    longest training example in the model's chat format, rounded up to a multiple of 8. Without graphs batches are
    padded to their own longest (padding costs real compute on a CPU)."""
    texts = [tokenizer.apply_chat_template(ex["prompt"] + ex["completion"], tokenize=False) for ex in data["train"]]
    longest = max(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    return min(MAX_SEQ_LENGTH, -(-longest // 8) * 8)


pad_to = pad_width() if graphs else None


def train(epochs):
    run_stamp = stamp(epochs)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in initial_adapter:
                param.copy_(initial_adapter[name])
    dtype = common.train_dtype()
    cpu_bf16 = common.cpu_bf16_autocast()
    out_dir = common.adapter_path(epochs)
    work_dir = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(work_dir, ignore_errors=True)
    config = SFTConfig(
        output_dir=str(work_dir / "checkpoints"), num_train_epochs=epochs, max_steps=MAX_STEPS,
        per_device_train_batch_size=batch_size, per_device_eval_batch_size=batch_size * 2,
        gradient_accumulation_steps=GRAD_ACCUM, learning_rate=learning_rate, lr_scheduler_type=LR_SCHEDULER,
        optim=OPTIM, pad_to_multiple_of=pad_to,
        warmup_steps=WARMUP, weight_decay=WEIGHT_DECAY, max_length=MAX_SEQ_LENGTH,
        completion_only_loss=True, logging_steps=1, eval_strategy="epoch", seed=SEED, report_to=[],
        save_strategy="epoch" if EARLY_STOPPING else "no", load_best_model_at_end=EARLY_STOPPING,
        metric_for_best_model="eval_loss", save_total_limit=1 if EARLY_STOPPING else None,
        bf16=dtype == torch.bfloat16 or cpu_bf16, fp16=dtype == torch.float16, use_cpu=cpu_bf16,
        dataloader_pin_memory=False,
        # TRL turns activation checkpointing on by default; short sequences don't need the memory it saves, and
        # recomputing every forward costs a third more time (Unsloth's own checkpointing is set in add_lora).
        gradient_checkpointing=False,
        # TRL's default, stated because Unsloth otherwise switches padding-free batches on by itself; without
        # flash-attention its packed attention made a batch-8 step 2.7x slower on the H100 (BENCHMARKS.md).
        padding_free=False,
    )
    if EARLY_STOPPING:
        from transformers import EarlyStoppingCallback
    callbacks = [EarlyStoppingCallback(EARLY_STOPPING_PATIENCE)] if EARLY_STOPPING else []
    optimizer = None  # plain LoRA: the Trainer builds OPTIM itself
    if loraplus_ratio != 1:
        from peft.optimizers import create_loraplus_optimizer

        optimizer = create_loraplus_optimizer(model, torch.optim.AdamW, lr=learning_rate, weight_decay=WEIGHT_DECAY,
                                              loraplus_lr_ratio=loraplus_ratio)
    learning_rates = sorted({g["lr"] for g in optimizer.param_groups if g["params"]}) if optimizer else [learning_rate]
    trainer = SFTTrainer(model=model, args=config, train_dataset=data["train"], eval_dataset=data["validation"],
                         processing_class=tokenizer, callbacks=callbacks, optimizers=(optimizer, None))
    print(f"run: {epochs} epoch(s), batch {batch_size}x{GRAD_ACCUM}, lr {learning_rate}, LoRA r={LORA_R}"
          + (f", LoRA+ ratio {loraplus_ratio:g}" if loraplus_ratio != 1 else ""), flush=True)
    initial = trainer.evaluate()["eval_loss"]  # epoch 0: the untrained model, the start of the validation curve
    train_start = time.time()
    result = trainer.train()
    train_seconds = time.time() - train_start
    if not any("eval_loss" in h and h["step"] == result.global_step for h in trainer.state.log_history):
        trainer.evaluate()  # a MAX_STEPS cap can end a run between epoch boundaries: measure where it stopped

    history = trainer.state.log_history
    losses = {
        "train": [{"step": h["step"], "epoch": h["epoch"], "loss": h["loss"]} for h in history if "loss" in h],
        "validation": [{"epoch": 0.0, "loss": initial}]
                      + [{"epoch": h["epoch"], "loss": h["eval_loss"]} for h in history if "eval_loss" in h],
    }
    trainer.model.save_pretrained(str(work_dir))
    tokenizer.save_pretrained(str(work_dir))
    shutil.rmtree(work_dir / "checkpoints", ignore_errors=True)
    common.write_json(work_dir / "losses.json", losses)
    common.write_json(work_dir / "run.json", {
        "model": model_name, "device": common.device_summary(),
        "dtype": str(dtype).replace("torch.", "") + (" + bf16 autocast" if cpu_bf16 else ""),
        "unsloth": common.uses_unsloth(model_name), "epochs": epochs, "epochs_trained": history[-1]["epoch"],
        "steps": result.global_step, "train_seconds": round(train_seconds, 1), "load_seconds": round(load_seconds, 1),
        "peak_memory_gib": round(common.peak_memory_gib(), 2), "train_size": len(data["train"]),
        "train_available": all_train, "augmented_size": n_augmented, "validation_size": len(data["validation"]),
        "test_size": len(raw["test"]),
        "prompt_format": prompt_format,
        "learning_rates": learning_rates,  # with LoRA+: the A and B matrices' rates
        "speed": {"compile": compile_on, "cuda_graphs": graphs, "planned_steps": planned_steps, "pad_to": pad_to},
        "final_train_loss": losses["train"][-1]["loss"],
        "validation_losses": [v["loss"] for v in losses["validation"]], "settings": run_stamp["settings"],
        "stamp": run_stamp, "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    shutil.rmtree(out_dir, ignore_errors=True)
    work_dir.replace(out_dir)  # only a finished run replaces the previous adapter
    print(f"saved {common.display(out_dir)}: {result.global_step} steps in {train_seconds:.0f}s, validation loss "
          + " → ".join(f"{v['loss']:.3f}" for v in losses["validation"]), flush=True)


for epochs in todo:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()  # run.json reports each run's own peak
    train(epochs)
    gc.collect()  # free the finished run's trainer and optimizer state (reference cycles)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
export.export_runs(epoch_runs, EXPORT)

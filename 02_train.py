"""Tasks 2 and 4.1: LoRA fine-tune the model on the emoji dataset, once per entry of EPOCHS (1 and 5 epochs, same data,
same seed), with the loss on the answer only and the validation loss measured every epoch.

With CUDA the default model is Llama-2-7B-chat in 4-bit through Unsloth's fused kernels; without CUDA it is the embedded
SmolLM2-135M-Instruct through transformers + PEFT. Each run saves its adapter, tokenizer, losses.json and run.json
under outputs/adapters/epochsN/; a run is redone only when a setting below or the dataset changed (or --force)."""
import gc
import shutil
import time
from datetime import datetime, timezone

from lib import export, models, rawdata, settings, store

MODEL = "auto"  # auto | embedded | a Hugging Face name or local folder
EPOCHS = "1,5"  # one separate run per entry
# auto: every training pair with CUDA; on a CPU a seeded subset that fits the demo's time budget, 1,100 with AMX and
# 800 without (README: what it costs in quality). "all", or a number, for the same choice everywhere. Every run gets the
# same pairs.
TRAIN_PAIRS = "auto"
BATCH_SIZE = "auto"  # a number, or auto: 8, and 4 for the embedded model on a GPU (sweep in BENCHMARKS.md)
GRAD_ACCUM = 1
LEARNING_RATE = "auto"  # a number, or auto: 2e-4 for the 7B QLoRA (Unsloth's guidance), 5e-4 for the embedded model
LR_SCHEDULER = "linear"  # any transformers scheduler name
WARMUP = 0.05  # a fraction of the steps (< 1) or a number of steps
WEIGHT_DECAY = 0.0
LORA_R = 16
LORA_ALPHA = 32
# a number, or auto: 0 on a CPU (no dropout masks to draw: a step ~10% faster at the same validation loss,
# BENCHMARKS.md), 0.05 with CUDA (what the GPU benchmarks measured)
LORA_DROPOUT = "auto"
LORA_TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"  # every linear layer of the blocks
LORA_LAYERS = "all"  # all, or FIRST-LAST blocks (0-based, e.g. 20-29): backpropagation stops at the lowest one
# LoRA+: the B matrices learn this many times faster than the A ones (1: plain LoRA); auto: 16 for the embedded model
# (the best one-pass validation F1 in the sweep, BENCHMARKS.md), 1 for the 7B. LoRA+ brings its own AdamW.
LORAPLUS_RATIO = "auto"
MAX_SEQ_LENGTH = 128
OPTIM = "adamw_torch_fused"  # plain LoRA's optimizer, stated: Unsloth otherwise swaps in 8-bit AdamW silently
SEED = 42
MAX_STEPS = -1  # > 0 caps each run (smoke tests); -1 trains the full epochs
EARLY_STOPPING = False  # stop a run when validation loss stops improving (a remedy for overfitting)
EARLY_STOPPING_PATIENCE = 1
EXPORT = "auto"  # none | merged | gguf | auto (gguf on a CPU, none for a 7B on a GPU): README, "Take the fine-tune"

s = settings  # the checks every value passes before anything heavy is imported
args = settings.configure(globals(), __doc__, checks=dict(
    MODEL=models.name_check, EPOCHS=s.epochs, TRAIN_PAIRS=s.either("auto", "all", s.whole(1, 10**6)),
    BATCH_SIZE=s.either("auto", s.whole(1, 512)), GRAD_ACCUM=s.whole(1, 64), LORA_R=s.whole(1, 256),
    LEARNING_RATE=s.either("auto", s.between(1e-7, 1)), LR_SCHEDULER=s.not_empty, OPTIM=s.not_empty,
    WARMUP=s.either(s.between(0, 0.99), s.whole(0, 10**5)), WEIGHT_DECAY=s.between(0, 1), SEED=s.seed,
    LORA_ALPHA=s.between(0.01, 1024), LORA_DROPOUT=s.either("auto", s.between(0, 0.9)), LORA_TARGETS=s.not_empty,
    LORA_LAYERS=s.either("all", s.index_range), LORAPLUS_RATIO=s.either("auto", s.between(1, 1000)),
    MAX_SEQ_LENGTH=s.whole(16, 4096), MAX_STEPS=s.either(-1, s.whole(1, 10**6)),
    EARLY_STOPPING_PATIENCE=s.whole(1, 100), EXPORT=s.one_of("auto", "none", "merged", "gguf")))
store.lock("02_train")
dataset_stamp = rawdata.dataset_stamp()

# ---- the settings each run is made of, every auto resolved; run.json and the fingerprint record exactly these
auto_values = models.auto_settings(name := models.resolve(MODEL))
resolved = {k: auto_values.get(k, v) if v == "auto" else settings.value(v)
            for k, v in vars(args).items() if k.isupper()}
# Recorded: what changes a run. Not which runs to make or export, not OPTIM under LoRA+ (it brings its own AdamW), not
# the patience without early stopping.
unused = {"EPOCHS", "EXPORT", "OPTIM" if resolved["LORAPLUS_RATIO"] != 1 else "",
          "" if EARLY_STOPPING else "EARLY_STOPPING_PATIENCE"}
resolved = {k: v for k, v in resolved.items() if k not in unused}
stamps = {e: store.make_stamp({**resolved, "epochs": e}, {"dataset": dataset_stamp["fingerprint"]})
          for e in settings.parse_epochs(EPOCHS)}
todo = [e for e, stamp in stamps.items()
        if args.force or not store.is_current(store.adapter_path(e) / "run.json", stamp, "stamp")]
for e in sorted(set(stamps) - set(todo)):
    print(f"{store.display(store.adapter_path(e))} is up to date (use --force to retrain).")
if not todo:
    export.export_runs(list(stamps), EXPORT)  # an up-to-date adapter may still lack its export
    raise SystemExit(0)

# ---- Step 1: the data. The test split is not read here; KNOWN prompts stay in a subset (Task 2.1 asks about them).
data, sizes = rawdata.training_data(resolved["TRAIN_PAIRS"], SEED)  # prints what it took
# TRL's prompt/completion format: both rendered with the model's chat template, the loss masked to the completion.
data = {split: data[split].map(lambda ex: {"prompt": ex["messages"][:-1], "completion": ex["messages"][-1:]},
                               remove_columns=data[split].column_names) for split in ("train", "validation")}
per_epoch = -(-len(data["train"]) // (resolved["BATCH_SIZE"] * GRAD_ACCUM))
compile_on, graphs = models.speed_plan(name, sum(MAX_STEPS if MAX_STEPS > 0 else per_epoch * e for e in todo))
models.import_unsloth(name, compile=compile_on, graphs=graphs)  # before transformers/TRL/PEFT: Unsloth patches them
from transformers import EarlyStoppingCallback, SchedulerType, set_seed  # noqa: E402
from transformers.training_args import OptimizerNames  # noqa: E402

settings.choose("--lr-scheduler", LR_SCHEDULER, [n.value for n in SchedulerType])  # the library's own lists
settings.choose("--optim", OPTIM, [n.value for n in OptimizerNames])

import torch  # noqa: E402
from peft.optimizers import create_loraplus_optimizer  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

models.answer_only_loss()  # the output layer on answer tokens only

# ---- Step 2: load the model once and add LoRA adapters; each run starts from the same initial adapter weights.
start = time.time()
set_seed(SEED)
model, tokenizer, prompt_format = models.load(name, MAX_SEQ_LENGTH, training=True)
load_seconds = round(time.time() - start, 1)
longest = models.longest(tokenizer, data["train"], MAX_SEQ_LENGTH)  # one line, exit 2, if MAX_SEQ_LENGTH is too short
model = models.add_lora(model, name, LORA_R, LORA_ALPHA, resolved["LORA_DROPOUT"], LORA_TARGETS,
                        None if LORA_LAYERS == "all" else settings.parse_range(LORA_LAYERS), SEED)
reset_adapter = models.adapter_reset(model)
lr, ratio, batch = resolved["LEARNING_RATE"], resolved["LORAPLUS_RATIO"], resolved["BATCH_SIZE"]

# ---- Step 3: one SFTTrainer run per entry of EPOCHS, loss on the answer only, validation loss every epoch
for epochs in todo:
    reset_adapter()
    models.reset_peak_memory()  # run.json reports each run's own peak
    with store.atomic(store.adapter_path(epochs)) as work:  # only a finished run replaces the previous adapter
        config = SFTConfig(
            output_dir=str(work / "checkpoints"), num_train_epochs=epochs, max_steps=MAX_STEPS, seed=SEED,
            per_device_train_batch_size=batch, per_device_eval_batch_size=batch * 2,
            gradient_accumulation_steps=GRAD_ACCUM, learning_rate=lr, lr_scheduler_type=LR_SCHEDULER,
            warmup_steps=WARMUP, weight_decay=WEIGHT_DECAY, optim=OPTIM, max_length=MAX_SEQ_LENGTH,
            completion_only_loss=True, logging_steps=1, eval_strategy="epoch", report_to=[],
            pad_to_multiple_of=min(MAX_SEQ_LENGTH, -(-longest // 8) * 8) if graphs else None,  # one graph shape
            save_strategy="epoch" if EARLY_STOPPING else "no", load_best_model_at_end=EARLY_STOPPING,
            metric_for_best_model="eval_loss", save_total_limit=1 if EARLY_STOPPING else None,
            # the weights' dtype decides mixed precision: bf16 also on a CPU with AMX (loaded so, and autocast)
            bf16=models.train_dtype(True) == torch.bfloat16, fp16=models.train_dtype(True) == torch.float16,
            use_cpu=models.cpu_bf16_autocast(), dataloader_pin_memory=False,
            gradient_checkpointing=False,  # short sequences: recomputing every forward would cost a third more time
            padding_free=False)  # stated: Unsloth switches it on by itself; without flash-attention it was 2.7x slower
        optimizer = None if ratio == 1 else create_loraplus_optimizer(
            model, torch.optim.AdamW, lr=lr, weight_decay=WEIGHT_DECAY, loraplus_lr_ratio=ratio)
        trainer = SFTTrainer(model=model, args=config, train_dataset=data["train"], eval_dataset=data["validation"],
                             processing_class=tokenizer, optimizers=(optimizer, None),
                             callbacks=[EarlyStoppingCallback(EARLY_STOPPING_PATIENCE)] if EARLY_STOPPING else [])
        models.full_batches(trainer, batch if graphs else 0)  # one graph shape: a short last batch filled, same loss
        rates = sorted({g["lr"] for g in optimizer.param_groups if g["params"]}) if optimizer else [lr]
        print(f"run: {epochs} epoch(s), batch {batch}x{GRAD_ACCUM}, learning rate {lr:g}"
              + (f" with LoRA+ ratio {ratio:g} (A {rates[0]:g}, B {rates[-1]:g})" if optimizer else ""), flush=True)
        initial = trainer.evaluate()["eval_loss"]  # epoch 0: the untrained adapter, the start of the validation curve
        start = time.time()
        result = trainer.train()
        train_seconds = time.time() - start
        if not any("eval_loss" in h and h["step"] == result.global_step for h in trainer.state.log_history):
            trainer.evaluate()  # a MAX_STEPS cap can end a run between epochs: measure where it stopped
        history = trainer.state.log_history
        losses = {"train": [{k: h[k] for k in ("step", "epoch", "loss")} for h in history if "loss" in h],
                  "validation": [{"epoch": 0.0, "loss": initial}]
                  + [{"epoch": h["epoch"], "loss": h["eval_loss"]} for h in history if "eval_loss" in h]}
        trainer.save_model(str(work))  # the adapter and the tokenizer
        shutil.rmtree(work / "checkpoints", ignore_errors=True)
        store.write_json(work / "losses.json", losses)
        store.write_json(work / "run.json", {
            "model": name, **models.run_facts(name), "epochs": epochs, "epochs_trained": history[-1]["epoch"],
            "steps": result.global_step, "train_seconds": round(train_seconds, 1), "load_seconds": load_seconds,
            **sizes, "prompt_format": prompt_format, "learning_rates": rates,
            "final_train_loss": losses["train"][-1]["loss"],
            "validation_losses": [v["loss"] for v in losses["validation"]], "settings": stamps[epochs]["settings"],
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "stamp": store.make_stamp(resolved | {"epochs": epochs}, stamps[epochs]["inputs"], folder=work,
                                      skip=("run.json",))})
    print(f"saved {store.display(store.adapter_path(epochs))}: {result.global_step} steps in {train_seconds:.0f}s, "
          "validation loss " + " → ".join(f"{v['loss']:.3f}" for v in losses["validation"]), flush=True)
    del trainer, optimizer
    gc.collect()  # free the finished run's trainer and optimizer state (reference cycles)
export.export_runs(list(stamps), EXPORT)

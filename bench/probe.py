"""Probe one training/generation path on the GPU with the Llama-2-7B-shaped model (bench/make_llama2_shaped.py).

    python bench/probe.py --path unsloth --configs "A|unsloth|0.05|false|8:30,64:12;B|false|0.05|false|8:30" \
        --profile --json $OUT/unsloth.json
    python bench/probe.py --path plain --configs "P|true|0.05|false|8:30,64:12" --json $OUT/plain.json
    python bench/summarize_probe.py $OUT/plain.json $OUT/unsloth.json

Each path runs in its own process (importing Unsloth patches transformers/TRL for the whole process):
load in 4-bit, LoRA r=16 on all linear layers (alpha 32), the loss of one fixed batch before any update (LoRA B=0,
so both paths must agree within bf16 tolerance), a few TRL SFTTrainer runs on the project's pre-tokenized pairs
(input_ids + completion_mask, completion_only_loss) timing every step, then batched vs one-at-a-time generation.
This is the exploratory probe; bench/benchmark.py is the benchmark of the project's own scripts.
"""
import argparse
import csv
import hashlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmark import padded_batch  # noqa: E402  (bench/ is this script's own directory)

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def log(*args):
    print(f"[{time.strftime('%H:%M:%S')}]", *args, flush=True)


def gib(x):
    return round(x / 2**30, 2)


def _cpu_logprob_shim():
    """TRL 1.15's SFTTrainer always computes the loss with its Triton chunked-log-prob kernel; without Triton (a CPU
    machine) that kernel is None and training fails. For the CPU harness test only, put a plain version in its place."""
    import torch
    import trl.trainer.utils as tu

    if tu._ChunkedLogProbFunction is not None:
        return

    class Naive:
        @staticmethod
        def apply(h, w, b, labels, temperature, chunk, softcap, scale, outputs):
            logits = (h @ w.T if b is None else h @ w.T + b).float() * scale
            if softcap:
                logits = softcap * torch.tanh(logits / softcap)
            lp = (logits / temperature).log_softmax(-1)
            log_probs = lp.gather(-1, labels[:, None]).squeeze(-1)
            entropy = -(lp.exp() * lp).sum(-1) if "entropy" in outputs else None
            top1 = (logits.argmax(-1) == labels) if "is_top1" in outputs else None
            return log_probs, entropy, None, None, top1

    tu._ChunkedLogProbFunction = Naive


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--path", choices=["unsloth", "plain"], required=True)
    p.add_argument("--model", default="/tmp/llama2-7b-shaped")
    p.add_argument("--configs", default="A|unsloth|0|false|16:24,64:12",
                   help="';'-separated name|gc(unsloth/true/false)|lora_dropout|padding_free(auto/true/false)|"
                        "batch:steps,...  - each reloads the model and adds fresh LoRA adapters")
    p.add_argument("--profile", action="store_true", help="torch.profiler over 3 steps of each config's first run")
    p.add_argument("--gen-prompts", type=int, default=32)
    p.add_argument("--gen-single", type=int, default=8, help="prompts generated one at a time")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--no-4bit", action="store_true", help="plain path in full precision (CPU harness test)")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    res = {"path": a.path, "argv": sys.argv[1:]}
    t0 = time.time()
    if a.path == "unsloth":
        from unsloth import FastLanguageModel  # must come before transformers/trl/peft
    import torch
    res["import_s"] = round(time.time() - t0, 1)
    cuda = torch.cuda.is_available()
    dev = torch.device("cuda" if cuda else "cpu")
    bf16 = cuda and torch.cuda.is_bf16_supported()
    dtype = torch.bfloat16 if bf16 else (torch.float16 if cuda else torch.float32)
    if cuda:
        res["gpu"] = torch.cuda.get_device_name(0)
    import transformers, peft, trl
    res["versions"] = dict(torch=torch.__version__, transformers=transformers.__version__, peft=peft.__version__,
                           trl=trl.__version__)
    if a.path == "unsloth":
        import unsloth
        res["versions"]["unsloth"] = unsloth.__version__
    log(res)

    from common import tokenize_example, llama2_prompt
    with (ROOT / "data" / "emoji_pairs.csv").open(encoding="utf-8") as f:
        pairs = [(r["text"], r["emoji"]) for r in csv.DictReader(f)]
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer
    if not cuda:
        _cpu_logprob_shim()

    class Timer(TrainerCallback):
        def __init__(self, profile_at=None):
            self.times, self.t, self.profile_at, self.prof = [], None, profile_at, None

        def on_step_begin(self, args, state, control, **kw):
            if self.profile_at is not None and state.global_step == self.profile_at:
                from torch.profiler import ProfilerActivity, profile
                self.prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
                self.prof.__enter__()
            if cuda:
                torch.cuda.synchronize()
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.t)
            if self.prof is not None and state.global_step == self.profile_at + 3:
                self.prof.__exit__(None, None, None)
                ev = self.prof.key_averages()
                cuda_us = sum(e.self_device_time_total for e in ev)
                self.profile = dict(wall_s_3_steps=round(sum(self.times[-3:]), 3),
                                    gpu_busy_s_3_steps=round(cuda_us / 1e6, 3),
                                    kernels=sum(e.count for e in ev if e.self_device_time_total > 0))
                log("PROFILE", self.profile)
                log(ev.table(sort_by="self_device_time_total", row_limit=12, max_name_column_width=60))
                self.prof = None

    res["configs"] = []
    model = None
    for cfg_spec in a.configs.split(";"):
        # name|gc|dropout|padding_free|runs   e.g. A|unsloth|0|false|8:30,16:20
        name, gc_mode, dropout, pf, runs = cfg_spec.split("|")
        dropout = float(dropout)
        conf = dict(name=name, gc=gc_mode, dropout=dropout, padding_free=pf, runs=[])
        res["configs"].append(conf)
        if model is not None:
            del model, trainer
            import gc as _gc
            _gc.collect()
            torch.cuda.empty_cache() if cuda else None
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t = time.time()
        if a.path == "unsloth":
            model, tok = FastLanguageModel.from_pretrained(model_name=a.model, max_seq_length=256, dtype=None,
                                                           load_in_4bit=True)
            conf["load_s"] = round(time.time() - t, 1)
            t = time.time()
            gcarg = {"unsloth": "unsloth", "true": True, "false": False}[gc_mode]
            model = FastLanguageModel.get_peft_model(model, r=16, target_modules=TARGETS, lora_alpha=32,
                                                     lora_dropout=dropout, bias="none",
                                                     use_gradient_checkpointing=gcarg, random_state=3407)
        else:
            from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
            from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
            tok = AutoTokenizer.from_pretrained(a.model)
            kw = dict(dtype=dtype)
            if not a.no_4bit:
                kw["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                               bnb_4bit_use_double_quant=True,
                                                               bnb_4bit_compute_dtype=dtype)
                kw["device_map"] = {"": 0}
            model = AutoModelForCausalLM.from_pretrained(a.model, **kw)
            conf["load_s"] = round(time.time() - t, 1)
            t = time.time()
            if not a.no_4bit:
                model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gc_mode != "false",
                                                        gradient_checkpointing_kwargs={"use_reentrant": False})
            model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=dropout, bias="none",
                                                     target_modules=TARGETS, task_type="CAUSAL_LM"))
        conf["peft_s"] = round(time.time() - t, 1)
        if tok.pad_token is None:
            tok.pad_token = tok.unk_token or tok.eos_token
        if cuda:
            conf["mem_after_load_gib"] = gib(torch.cuda.max_memory_allocated())
        res["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        rows = [tokenize_example(tok, s, e) for s, e in pairs]
        res["examples"], res["mean_tokens"] = len(rows), round(sum(len(r["input_ids"]) for r in rows) / len(rows), 1)
        log("config", name, "loaded", conf)

        # loss of one fixed batch with the same deterministic, non-zero LoRA weights in every path
        batch = rows[:16]
        ids, att, lab = padded_batch(batch, tok.pad_token_id)
        saved = {}
        for pname, prm in model.named_parameters():
            if "lora_" in pname:
                saved[pname] = prm.detach().clone()
                g = torch.Generator().manual_seed(int(hashlib.sha256(pname.encode()).hexdigest()[:8], 16))
                with torch.no_grad():
                    prm.copy_((torch.randn(prm.shape, generator=g) * 0.02).to(prm.dtype))
        model.eval()
        with torch.no_grad(), torch.autocast(dev.type, dtype=dtype, enabled=cuda):
            out = model(input_ids=ids.to(dev), attention_mask=att.to(dev), labels=lab.to(dev))
        conf["loss_fixed_batch_fixed_lora"] = float(out.loss)
        with torch.no_grad():
            for pname, prm in model.named_parameters():
                if pname in saved:
                    prm.copy_(saved[pname])
        model.train()
        log("fixed-batch loss", conf["loss_fixed_batch_fixed_lora"])

        ds = Dataset.from_list(rows)
        for spec in runs.split(","):
            bs, steps = map(int, spec.split(":"))
            kw = dict(output_dir="/tmp/probe_out", per_device_train_batch_size=bs, gradient_accumulation_steps=1,
                      max_steps=steps, learning_rate=2e-4, lr_scheduler_type="linear", warmup_steps=0,
                      weight_decay=0.0, logging_steps=1, save_strategy="no", report_to="none",
                      bf16=bf16, fp16=cuda and not bf16, completion_only_loss=True, max_length=256, seed=3407,
                      optim="adamw_torch", dataloader_num_workers=0, dataloader_pin_memory=False)
            if pf != "auto":
                kw["padding_free"] = pf == "true"
            if a.path == "plain" and not a.no_4bit and gc_mode != "false":
                kw.update(gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False})
            timer = Timer(profile_at=(steps - 4) if (a.profile and bs == int(runs.split(",")[0].split(":")[0])) else None)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            t = time.time()
            trainer = SFTTrainer(model=model, args=SFTConfig(**kw), train_dataset=ds, processing_class=tok,
                                 callbacks=[timer])
            init_s = time.time() - t
            per_mb = []
            inner = trainer.data_collator

            def counting(features, inner=inner, per_mb=per_mb):
                b = inner(features)
                real = int(b["attention_mask"].sum()) if "attention_mask" in b else int(b["input_ids"].numel())
                per_mb.append((real, tuple(b["input_ids"].shape)))
                return b
            trainer.data_collator = counting
            t = time.time()
            trainer.train()
            train_s = time.time() - t
            times = timer.times
            ga = trainer.args.gradient_accumulation_steps
            tokens = [sum(x[0] for x in per_mb[i * ga:(i + 1) * ga]) for i in range(len(times))]
            padded = [sum(x[1][0] * x[1][1] for x in per_mb[i * ga:(i + 1) * ga]) for i in range(len(times))]
            warm = min(5, len(times) - 2)
            steady = sorted(times[warm:])
            med = steady[len(steady) // 2]
            run = dict(batch=bs, steps=steps, ga=ga, trainer_init_s=round(init_s, 1), train_s=round(train_s, 1),
                       padding_free=getattr(trainer.args, "padding_free", None),
                       step_s=[round(x, 3) for x in times],
                       step_s_median=round(med, 3),
                       steady_tokens_per_s=round(sum(tokens[warm:]) / sum(times[warm:]), 1),
                       pad_fraction=round(1 - sum(tokens) / max(1, sum(padded)), 3),
                       warmup_s=round(sum(times[:warm]) - warm * med, 1),
                       losses=[round(h["loss"], 4) for h in trainer.state.log_history if "loss" in h],
                       peak_gib=gib(torch.cuda.max_memory_allocated()) if cuda else None,
                       profile=getattr(timer, "profile", None))
            conf["runs"].append(run)
            log("run", name, json.dumps({k: v for k, v in run.items() if k not in ("step_s", "losses")}))
            if a.json:
                Path(a.json).write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    # ---------------- generation
    if a.gen_prompts > 0:
        if a.path == "unsloth":
            FastLanguageModel.for_inference(model)
        else:
            model.eval()
        from common import generate
        prompts = [llama2_prompt(s, tok.bos_token or "") for s, _ in pairs[-a.gen_prompts:]]
        gen = {}
        for bs_name, bs, ps in (("warm", 1, prompts[:1]), ("batched16", 16, prompts),
                                ("batched_all", len(prompts), prompts), ("one_by_one", 1, prompts[:a.gen_single])):
            if cuda:
                torch.cuda.synchronize()
            t = time.time()
            outs = generate(model, tok, ps, max_new_tokens=a.max_new_tokens, batch_size=bs)
            if cuda:
                torch.cuda.synchronize()
            dt = time.time() - t
            gen[bs_name] = dict(prompts=len(ps), s=round(dt, 2), prompts_per_s=round(len(ps) / dt, 2),
                                sample=outs[0][:40])
            log("gen", bs_name, gen[bs_name])
        gen["speedup_batched_vs_one"] = round(max(gen["batched16"]["prompts_per_s"], gen["batched_all"]["prompts_per_s"])
                                              / gen["one_by_one"]["prompts_per_s"], 2)
        res["generation"] = gen
    if cuda:
        res["peak_gib_total"] = gib(torch.cuda.max_memory_allocated())
    res["total_s"] = round(time.time() - t0, 1)
    log("RESULT", json.dumps(res))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

"""Tasks 2.1-2.3 and 4.2: answer every prompt set with the base model and both fine-tunes.

The prompt sets live in common.py. KNOWN prompts are in the train split (accuracy and consistency: a greedy answer plus
NUM_SAMPLES sampled ones), NOVEL prompts are in no split (generalisation), EDGE prompts are ambiguous or contradictory.
These emoji requests reach every model in the same form: its chat template with the emoji instruction. GENERAL
questions are not emoji requests: every model gets them in its normal chat format with no instruction, so an emoji
answer there is the fine-tune's doing (Task 4.2). The whole test split is answered too, for held-out scores, and a
nearest-neighbour lookup over the train split answers the same prompts as a baseline ("lookup").

Every row of outputs/generations.jsonl records the exact input string, whether the answer was cut by the token budget,
and the fingerprint of what made it (these constants and the model or adapter behind it). A re-run keeps rows whose
fingerprint and input still match, drops the rest (and rows of prompts no longer in the sets) and generates what is
missing, model by model, so an interrupted run keeps what it finished."""
import sys
from contextlib import nullcontext

import common
import metrics

NUM_SAMPLES = 5  # sampled answers per KNOWN prompt, for consistency
TEMPERATURE = 0.7
TOP_P = 0.9
ANSWER_MARGIN = 8  # emoji answers may use the longest training answer's token count plus this many tokens
GENERAL_MAX_NEW_TOKENS = 128  # answers in words to the non-emoji questions
BATCH_SIZE = 16
SEED = 42
TEST_SPLIT = True  # also answer the whole test split (held-out scores in the report)
EPOCHS = "1,5"  # which fine-tunes to compare: outputs/adapters/epochsN

args = common.configure(globals(), __doc__, checks=dict(
    EPOCHS=common.positive_int_list, NUM_SAMPLES=common.non_negative_int, TEMPERATURE=common.positive,
    TOP_P=common.between(0, 1, include_high=True), ANSWER_MARGIN=common.non_negative_int,
    GENERAL_MAX_NEW_TOKENS=common.positive_int, BATCH_SIZE=common.positive_int))
epoch_runs = common.parse_epochs(EPOCHS)
common.require(common.DATASET_DIR / "dataset_dict.json", "01_make_dataset.py")
dataset_fp = common.dataset_fingerprint()
for e in epoch_runs:
    common.require(common.adapter_path(e) / "run.json", "02_train.py")
runs = {f"ft{e}": common.read_run(e) for e in epoch_runs}
stale = [k for k, run in runs.items() if run.get("stamp", {}).get("inputs", {}).get("dataset") != dataset_fp]
if dataset_fp is None or stale:
    sys.exit(f"error: the adapters {', '.join(stale)} were trained on another dataset than "
             f"{common.display(common.DATASET_DIR)} - run `python 02_train.py` first.")
model_name = next(iter(runs.values()))["model"]
if any(run["model"] != model_name for run in runs.values()):
    sys.exit("error: the adapters were trained from different base models - run `python 02_train.py --force`.")

from datasets import load_from_disk  # noqa: E402  (heavy imports after --help and the input checks)
from transformers import AutoTokenizer  # noqa: E402

data = load_from_disk(str(common.DATASET_DIR))
real_train = data["train"].filter(lambda ex: not ex["augmented"])
train = dict(zip(real_train["sentence"], real_train["emojis"]))
problems = [f"KNOWN prompt {s!r} is not in the train split" for s in common.KNOWN if s not in train]
if problems:  # 01 keeps them there; this only trips on a dataset from an older 01
    sys.exit("error: " + "; ".join(problems) + " - run `python 01_make_dataset.py --force`.")

prompt_sets = {  # set -> [(prompt, reference emojis, accepted keywords)]
    "known": [(s, train[s], None) for s in common.KNOWN],
    "novel": [(s, None, None) for s in common.NOVEL],
    "edge": [(s, None, None) for s in common.EDGE],
    "general": [(q, None, keywords) for q, keywords in common.GENERAL.items()],
}
if TEST_SPLIT:
    prompt_sets["test"] = [(s, e, None) for s, e in zip(data["test"]["sentence"], data["test"]["emojis"])]

# The tokenizer the adapters were trained with (its chat template and stop token), saved by 02 beside each adapter.
tokenizer = AutoTokenizer.from_pretrained(str(common.adapter_path(epoch_runs[0])))
max_new_tokens = common.answer_budget(tokenizer, train.values(), ANSWER_MARGIN)


def model_input(set_name, prompt):
    messages = common.plain_messages(prompt) if set_name == "general" else common.emoji_messages(prompt)
    return common.render_prompt(tokenizer, messages)


settings = common.settings_of(globals(), exclude=("EPOCHS",), max_new_tokens=max_new_tokens)
fingerprints = {"base": common.fingerprint(settings, model_name),
                **{key: common.fingerprint(settings, run["stamp"]["fingerprint"]) for key, run in runs.items()},
                "lookup": common.fingerprint("nearest neighbour", dataset_fp)}

# ---- what is already done: rows whose fingerprint and input still match are kept, anything else is dropped
if args.force:
    common.GENERATIONS.unlink(missing_ok=True)
wanted = {(s, p): (ref, kw) for s, items in prompt_sets.items() for p, ref, kw in items}
old = common.read_jsonl(common.GENERATIONS)
kept = []
for r in old:
    if r.get("fingerprint") == fingerprints.get(r.get("model")) and (r.get("set"), r.get("prompt")) in wanted \
            and (r["model"] == "lookup" or r.get("input") == model_input(r["set"], r["prompt"])):
        r["reference"], r["keywords"] = wanted[r["set"], r["prompt"]]  # edited keywords need no new answer
        kept.append(r)
if kept != old:
    common.write_jsonl(common.GENERATIONS, kept)
done = {(r["model"], r["set"], r["prompt"], r["sample"]) for r in kept}


def jobs_for(model_key):
    """(set, prompt, reference, keywords, sample) still missing for this model; sample None = the greedy answer."""
    jobs = []
    for set_name, items in prompt_sets.items():
        if model_key == "lookup" and set_name == "general":
            continue  # the lookup only answers emoji requests
        for prompt, reference, keywords in items:
            samples = [None] + (list(range(NUM_SAMPLES)) if set_name == "known" and model_key != "lookup" else [])
            jobs += [(set_name, prompt, reference, keywords, k) for k in samples
                     if (model_key, set_name, prompt, k) not in done]
    return jobs


todo = {key: jobs_for(key) for key in ["base", *runs, "lookup"]}
if not any(todo.values()):
    print(f"{common.display(common.GENERATIONS)} is complete (use --force to regenerate).")
    sys.exit(0)


def row(key, job, output, truncated, text_in, decoding):
    set_name, prompt, reference, keywords, sample = job
    return {"set": set_name, "model": key, "prompt": prompt, "reference": reference, "keywords": keywords,
            "sample": sample, "input": text_in, "output": output, "truncated": truncated, "decoding": decoding,
            "fingerprint": fingerprints[key], "model_name": model_name}


# ---- the baseline first: no model, instant
pairs = list(train.items())
common.append_jsonl(common.GENERATIONS, [row("lookup", job, metrics.nearest_neighbour(job[1], pairs), False, None,
                                              {"method": "nearest neighbour over the train split"})
                                          for job in todo.pop("lookup")])

# ---- one base model in memory, the adapters switched on top of it
if any(todo.values()):
    common.import_unsloth_if_used(model_name)  # before PEFT/transformers, so that Unsloth's patches apply
    import torch  # noqa: E402
    from peft import PeftModel  # noqa: E402

    model, _ = common.load_model(model_name)
    for key in runs:
        path = str(common.adapter_path(int(key[2:])))
        if isinstance(model, PeftModel):
            model.load_adapter(path, adapter_name=key)
        else:
            model = PeftModel.from_pretrained(model, path, adapter_name=key)
    model.eval()
    common.prepare_for_inference(model)
    print(f"budget: {max_new_tokens} new tokens per emoji answer (longest training answer + {ANSWER_MARGIN}), "
          f"{GENERAL_MAX_NEW_TOKENS} per non-emoji answer", flush=True)

for key, jobs in todo.items():
    if not jobs:
        continue
    label = common.MODELS.get(key, f"{key[2:]}-epoch fine-tune")
    groups = {}  # (max_new_tokens, sampled) -> jobs: one batched generate call per group
    for job in jobs:
        budget = GENERAL_MAX_NEW_TOKENS if job[0] == "general" else max_new_tokens
        groups.setdefault((budget, job[4] is not None), []).append(job)
    rows = []
    with model.disable_adapter() if key == "base" else nullcontext():
        if key != "base":
            model.set_adapter(key)
        for (budget, sampled), group in groups.items():
            torch.manual_seed(SEED)
            inputs = [model_input(job[0], job[1]) for job in group]
            outputs = common.generate(model, tokenizer, inputs, max_new_tokens=budget, batch_size=BATCH_SIZE,
                                      do_sample=sampled, temperature=TEMPERATURE, top_p=TOP_P,
                                      desc=f"{label}: {'sampled' if sampled else 'greedy'}")
            decoding = {"do_sample": sampled, "max_new_tokens": budget}
            if sampled:
                decoding.update(temperature=TEMPERATURE, top_p=TOP_P, seed=SEED)
            rows += [row(key, job, text, cut, text_in, decoding)
                     for job, text_in, (text, cut) in zip(group, inputs, outputs)]
    common.append_jsonl(common.GENERATIONS, rows)
    greedy = [r for r in rows if r["set"] == "novel" and r["sample"] is None]
    cut = sum(r["truncated"] for r in rows)
    print(f"{label}: {len(rows)} answers ({cut} cut by the token budget)"
          + (f", e.g. {greedy[0]['prompt']!r} -> {greedy[0]['output']!r}" if greedy else ""), flush=True)

print(f"saved {common.display(common.GENERATIONS)}")

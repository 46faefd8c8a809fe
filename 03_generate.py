"""Tasks 2.1-2.3 and 4.2: answer every prompt set with the base model and both fine-tunes.

KNOWN prompts come from the train split (accuracy and consistency: a greedy answer plus NUM_SAMPLES sampled ones),
NOVEL prompts are in no split (generalisation), EDGE prompts are ambiguous or contradictory, GENERAL prompts are not
emoji requests at all (overfitting). The whole validation split is answered too, for held-out scores. Fine-tuned
models get exactly the training prompt format; the base model gets its own chat format. Rows are appended to
outputs/generations.jsonl model by model, so an interrupted run keeps what it finished."""
import sys
from contextlib import nullcontext

import common

KNOWN = [  # from the train split; checked below
    "I overslept again this morning.",
    "This soup is way too spicy!",
    "I just landed in Tokyo.",
    "Happy birthday to you!",
    "We played volleyball on the beach.",
]
NOVEL = [  # in neither split; checked below
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
GENERAL = {  # not emoji requests: a healthy model answers in words; the keyword marks a correct answer
    "Explain the concept of gravity.": "mass",
    "What is the capital of Germany?": "Berlin",
    "Write a haiku about autumn.": "leaves",
    "How many legs does a spider have?": "eight",
    "Translate 'thank you' into French.": "merci",
}

MAX_NEW_TOKENS = 24  # emoji answers are short; longer output is already a failure
GENERAL_MAX_NEW_TOKENS = 96
NUM_SAMPLES = 5  # sampled answers per KNOWN prompt, for consistency
TEMPERATURE = 0.7
TOP_P = 0.9
BATCH_SIZE = 16
SEED = 42
VALIDATION_SPLIT = True  # also answer the whole validation split (held-out F1 in the report)
EPOCHS = "1,5"  # which fine-tunes to compare: outputs/adapters/epochsN

args = common.configure(globals(), __doc__)
epoch_runs = [int(e) for e in EPOCHS.split(",") if e.strip()]
common.require(common.DATASET_DIR / "dataset_dict.json", "01_make_dataset.py")
for e in epoch_runs:
    common.require(common.adapter_path(e) / "run.json", "02_train.py")

import torch  # noqa: E402
from datasets import load_from_disk  # noqa: E402

# ---- check the prompt sets against the data
data = load_from_disk(str(common.DATASET_DIR))
train = dict(zip(data["train"]["sentence"], data["train"]["emojis"]))
validation = dict(zip(data["validation"]["sentence"], data["validation"]["emojis"]))
everything = {s.lower() for s in [*train, *validation]}
problems = [f"KNOWN prompt {s!r} is not in the train split" for s in KNOWN if s not in train]
problems += [f"NOVEL prompt {s!r} is in the data" for s in NOVEL if s.lower() in everything]
for name, prompts in (("KNOWN", KNOWN), ("NOVEL", NOVEL), ("EDGE", EDGE), ("GENERAL", GENERAL)):
    if len(prompts) != 5:
        problems.append(f"{name} has {len(prompts)} prompts; the report expects 5")
if problems:
    sys.exit("error: " + "; ".join(problems) + " - edit the constants at the top of 03_generate.py.")

prompt_sets = {  # set -> list of (prompt, reference or keyword)
    "known": [(s, train[s]) for s in KNOWN],
    "novel": [(s, None) for s in NOVEL],
    "edge": [(s, None) for s in EDGE],
    "general": list(GENERAL.items()),
}
if VALIDATION_SPLIT:
    prompt_sets["validation"] = list(validation.items())

runs = {f"ft{e}": common.read_run(e) for e in epoch_runs}
model_name = next(iter(runs.values()))["model"]
if any(run["model"] != model_name for run in runs.values()):
    sys.exit("error: the adapters were trained from different base models - run `python 02_train.py --force`.")
versions = {"base": model_name, **{key: run["finished_at"] for key, run in runs.items()}}

# ---- what is already done: rows of the same model version are kept, anything else is redone
if args.force:
    common.GENERATIONS.unlink(missing_ok=True)
old = common.read_jsonl(common.GENERATIONS)
kept = [r for r in old if versions.get(r["model"]) == r["version"]]
if len(kept) != len(old):  # rewrite without stale rows (a retrained adapter, another base model)
    common.write_jsonl(common.GENERATIONS, kept)
done = {(r["model"], r["set"], r["prompt"], r["sample"]) for r in kept}


def jobs_for(model_key):
    """(set, prompt, reference, sample) still missing for this model; sample None is the greedy answer."""
    jobs = []
    for set_name, items in prompt_sets.items():
        for prompt, reference in items:
            samples = [None] + (list(range(NUM_SAMPLES)) if set_name == "known" else [])
            jobs += [(set_name, prompt, reference, k) for k in samples if (model_key, set_name, prompt, k) not in done]
    return jobs


todo = {key: jobs_for(key) for key in ["base", *runs]}
if not any(todo.values()):
    print(f"{common.display(common.GENERATIONS)} is complete (use --force to regenerate).")
    sys.exit(0)

# ---- one base model in memory, the adapters switched on top of it
common.import_unsloth_if_used(model_name)  # before PEFT/transformers, so that Unsloth's patches apply
from peft import PeftModel  # noqa: E402

model, tokenizer = common.load_model(model_name)
for key in runs:
    path = str(common.adapter_path(int(key[2:])))
    if isinstance(model, PeftModel):
        model.load_adapter(path, adapter_name=key)
    else:
        model = PeftModel.from_pretrained(model, path, adapter_name=key)
model.eval()
common.prepare_for_inference(model)

for key, jobs in todo.items():
    if not jobs:
        continue
    label = common.MODELS.get(key, key)
    fmt = "native" if key == "base" else "llama2"
    make_prompt = common.native_prompt if key == "base" else common.finetuned_prompt
    rows = []
    groups = {}  # (max_new_tokens, sampled) -> jobs: one batched generate call per group
    for job in jobs:
        set_name, _, _, sample = job
        groups.setdefault((GENERAL_MAX_NEW_TOKENS if set_name == "general" else MAX_NEW_TOKENS, sample is not None),
                          []).append(job)
    with model.disable_adapter() if key == "base" else nullcontext():
        if key != "base":
            model.set_adapter(key)
        for (max_new, sampled), group in groups.items():
            torch.manual_seed(SEED)
            outputs = common.generate(model, tokenizer, [make_prompt(tokenizer, p) for _, p, _, _ in group],
                                      max_new_tokens=max_new, batch_size=BATCH_SIZE, do_sample=sampled,
                                      temperature=TEMPERATURE, top_p=TOP_P,
                                      desc=f"{label}: {'sampled' if sampled else 'greedy'}")
            decoding = {"do_sample": sampled, "max_new_tokens": max_new, "prompt_format": fmt}
            if sampled:
                decoding.update(temperature=TEMPERATURE, top_p=TOP_P, seed=SEED)
            for (set_name, prompt, reference, sample), output in zip(group, outputs):
                rows.append({"set": set_name, "model": key, "prompt": prompt,
                             "reference": None if set_name == "general" else reference,
                             "keyword": reference if set_name == "general" else None,
                             "sample": sample, "output": output, "decoding": decoding, "version": versions[key]})
    common.append_jsonl(common.GENERATIONS, rows)
    greedy = [r for r in rows if r["set"] == "novel" and r["sample"] is None]
    print(f"{label}: {len(rows)} answers, e.g. {greedy[0]['prompt']!r} -> {greedy[0]['output']!r}" if greedy
          else f"{label}: {len(rows)} answers", flush=True)

print(f"saved {common.display(common.GENERATIONS)}")

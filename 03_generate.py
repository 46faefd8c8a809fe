"""Tasks 2.1-2.3 and 4.2: answer every prompt set with the base model and both fine-tunes.

KNOWN prompts are in the train split (accuracy and consistency: a greedy answer plus NUM_SAMPLES sampled ones), NOVEL
prompts are in no split (generalisation), EDGE prompts are ambiguous or contradictory; the whole test split is answered
too, for held-out scores. These emoji requests reach every model in its chat template with the emoji instruction.
GENERAL questions are not emoji requests: every model gets them in its normal chat format with no instruction, so an
emoji answer there is the fine-tune's doing (Task 4.2). A nearest-neighbour lookup over the train split answers the
emoji requests as a baseline ("lookup").

Every row of outputs/generations.jsonl records the exact input, whether the budget cut the answer, and a fingerprint of
what made it: the model or adapter (a retrained adapter is a new one) and the row's own decoding settings. A re-run
keeps the rows whose fingerprint still matches and generates only what is missing."""
from contextlib import nullcontext

from lib import metrics, models, prompts, rawdata, settings, store

NUM_SAMPLES = 5  # sampled answers per KNOWN prompt, for consistency
TEMPERATURE = 0.7
TOP_P = 0.9
ANSWER_MARGIN = 8  # emoji answers may use the longest training answer's token count plus this many tokens
GENERAL_MAX_NEW_TOKENS = 128  # answers in words to the non-emoji questions
BATCH_SIZE = 16
SEED = 42
TEST_SPLIT = True  # also answer the whole test split (held-out scores in the report)
EPOCHS = "1,5"  # which fine-tunes to answer with: outputs/adapters/epochsN (other fine-tunes' rows are kept)

args = settings.configure(globals(), __doc__, checks=dict(
    NUM_SAMPLES=settings.whole(0, 50), TEMPERATURE=settings.between(0.05, 2), TOP_P=settings.between(0.05, 1),
    ANSWER_MARGIN=settings.whole(0, 256), GENERAL_MAX_NEW_TOKENS=settings.whole(1, 1024),
    BATCH_SIZE=settings.whole(1, 256), SEED=settings.seed, EPOCHS=settings.epochs))
store.lock("03_generate")

# ---- Step 1: the inputs: the dataset and the adapters trained on it (checked before the dataset library is loaded)
dataset_fp = rawdata.dataset_stamp()["fingerprint"]
runs = {}
for e in settings.parse_epochs(EPOCHS):
    runs[f"ft{e}"] = store.read_json(store.adapter_path(e) / "run.json", "02_train.py")
    # the files run.json vouches for must all be there (a partial copy or sync is not an adapter)
    if (stamp := store.read_stamp(store.adapter_path(e) / "run.json", "stamp")) is None:
        store.redo(store.adapter_path(e), "is incomplete or damaged", "02_train.py")
    if stamp.get("inputs", {}).get("dataset") != dataset_fp:
        store.fail(f"the adapters were trained on another dataset than {store.display(store.DATASET_DIR)} - run "
                   "`python 02_train.py` first.")
model_name = next(iter(runs.values())).get("model")
if any(run.get("model") != model_name for run in runs.values()):
    store.fail("the adapters were trained from different base models - run `python 02_train.py --force`.")
data = rawdata.load_splits()
train = {prompts.key(ex["sentence"]): (ex["sentence"], ex["emojis"]) for ex in data["train"] if not ex["augmented"]}
if any(prompts.key(s) not in train for s in prompts.KNOWN):  # 01 pins them there; an older 01's dataset may not
    store.fail("a KNOWN prompt is not in the train split - run `python 01_make_dataset.py --force`.")
info = {  # (prompt set, prompt) -> (reference emojis, accepted keywords)
    **{("known", s): (train[prompts.key(s)][1], None) for s in prompts.KNOWN},
    **{("novel", s): (None, None) for s in prompts.NOVEL},
    **{("edge", s): (None, None) for s in prompts.EDGE},
    **{("general", q): (None, keywords) for q, keywords in prompts.GENERAL.items()},
    **{("test", s): (e, None) for s, e in zip(data["test"]["sentence"], data["test"]["emojis"]) if TEST_SPLIT}}

# The tokenizer the adapters were trained with (chat template, stop token), saved by 02 beside each adapter.
from transformers import AutoTokenizer  # noqa: E402

tokenizer = AutoTokenizer.from_pretrained(str(store.adapter_path(settings.parse_epochs(EPOCHS)[0])))
budget = models.answer_budget(tokenizer, [e for _, e in train.values()], ANSWER_MARGIN)


def model_input(set_name, prompt):
    messages = prompts.plain_messages(prompt) if set_name == "general" else prompts.emoji_messages(prompt)
    return prompts.render(tokenizer, messages)


def decoding(set_name, sample):
    """The settings one answer is made with; only these (and the model) decide whether a row is still valid."""
    tokens = GENERAL_MAX_NEW_TOKENS if set_name == "general" else budget
    sampled = {"temperature": TEMPERATURE, "top_p": TOP_P, "seed": SEED} if sample is not None else {}
    return {"do_sample": sample is not None, "max_new_tokens": tokens, **sampled}


# ---- Step 2: what is already done. A row stays when its model, input and decoding are unchanged.
made_by = {"base": store.fingerprint(model_name), "lookup": store.fingerprint("nearest neighbour", dataset_fp),
           **{k: store.fingerprint(run["stamp"]["fingerprint"], run.get("finished_at")) for k, run in runs.items()}}
# (model, set, prompt, sample) -> the fingerprint its row must have; sample None is the greedy answer
wanted = {(m, s, p, k): made_by[m] if m == "lookup" else
          store.fingerprint(made_by[m], model_input(s, p), decoding(s, k)) for m in made_by for s, p in info
          for k in [None] + (list(range(NUM_SAMPLES)) if s == "known" and m != "lookup" else [])
          if not (m == "lookup" and s == "general")}
old = store.read_jsonl(store.GENERATIONS)
kept = {}
for r in old:  # rows of fine-tunes not asked for this time (e.g. --epochs 1) stay as they are
    where = (r.get("model"), r.get("set"), r.get("prompt"), r.get("sample"))
    current = not args.force and wanted.get(where, False) == r.get("fingerprint")
    if current or (where[0] not in made_by and "output" in r):
        kept[where] = r  # one row per answer: a duplicate (two runs at once) keeps the last
if list(kept.values()) != old:
    store.write_jsonl(store.GENERATIONS, list(kept.values()))
todo = {m: [where for where in wanted if where[0] == m and where not in kept] for m in made_by}
if not any(todo.values()):
    print(f"{store.display(store.GENERATIONS)} is complete (use --force to regenerate).")
    raise SystemExit(0)


def row(where, output, truncated, made):
    model, set_name, prompt, sample = where
    reference, keywords = info[set_name, prompt]
    return {"set": set_name, "model": model, "prompt": prompt, "reference": reference, "keywords": keywords,
            "sample": sample, "input": None if model == "lookup" else model_input(set_name, prompt), "output": output,
            "truncated": truncated, "decoding": made, "fingerprint": wanted[where], "model_name": model_name}


# ---- Step 3: the baseline first (no model, instant), then one base model with the adapters switched on top of it
store.append_jsonl(store.GENERATIONS, [row(where, metrics.nearest_neighbour(where[2], train.values()), False,
                                           {"method": "nearest neighbour over the train split"})
                                       for where in todo.pop("lookup")])
if any(todo.values()):
    models.import_unsloth(model_name)  # before PEFT/transformers, so that Unsloth's patches apply
    import torch
    from peft import PeftModel

    first, *others = runs
    model = PeftModel.from_pretrained(models.load(model_name)[0], str(store.adapter_path(first[2:])),
                                      adapter_name=first)
    for key in others:
        model.load_adapter(str(store.adapter_path(key[2:])), adapter_name=key)
    model.eval()
    models.for_inference(model)
    print(f"budget: {budget} new tokens per emoji answer (longest training answer + {ANSWER_MARGIN}), "
          f"{GENERAL_MAX_NEW_TOKENS} per non-emoji answer", flush=True)

for key, todo_here in todo.items():
    if not todo_here:
        continue
    groups = {}  # decoding settings -> jobs: one batched generate call per group
    for where in todo_here:
        groups.setdefault(tuple(decoding(where[1], where[3]).items()), []).append(where)
    rows = []
    with model.disable_adapter() if key == "base" else nullcontext():
        if key != "base":
            model.set_adapter(key)
        for made, group in groups.items():
            made = dict(made)
            torch.manual_seed(SEED)
            sample = {k: made[k] for k in ("temperature", "top_p")} if made["do_sample"] else None
            answers = models.generate(model, tokenizer, [model_input(w[1], w[2]) for w in group],
                                      made["max_new_tokens"], BATCH_SIZE, sample,
                                      desc=f"{prompts.label(key)}: {'sampled' if sample else 'greedy'}")
            rows += [row(where, text, cut, made) for where, (text, cut) in zip(group, answers)]
    store.append_jsonl(store.GENERATIONS, rows)  # each model's answers are kept as soon as they are made
    novel = [r for r in rows if r["set"] == "novel" and r["sample"] is None]
    print(f"{prompts.label(key)}: {len(rows)} answers ({sum(r['truncated'] for r in rows)} cut by the token budget)"
          + (f", e.g. {novel[0]['prompt']!r} -> {novel[0]['output']!r}" if novel else ""), flush=True)
print(f"saved {store.display(store.GENERATIONS)}")

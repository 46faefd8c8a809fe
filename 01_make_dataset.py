"""Task 1: turn the raw sentence → emoji pairs in data/ into a Hugging Face instruction dataset.

Every row is validated first; any bad row is reported as FILE:LINE: problem and nothing is written. The dataset keeps
the sentence, the emojis, the chat messages and Task 1's rendered Llama-2 chat string with its special tokens, in three
seeded splits: train, validation (early stopping and any choice of settings) and test (reported as held-out, used by
nothing else). The KNOWN prompts (common.py) always land in train; the NOVEL, EDGE and GENERAL prompts must not be in
the data at all. Saved with save_to_disk and as readable JSONL under outputs/dataset/, with a provenance stamp: any
change to the CSV or to a constant here rebuilds it, and the later steps follow."""
import csv
import random
import shutil
import sys

import emoji

import common
import metrics

RAW_CSV = common.display(common.RAW_CSV)  # header: text,emoji; relative paths are from the repo root
TEST_FRACTION = 0.1  # held-out pairs the report scores (at least MIN_TEST of them)
MIN_TEST = 40
VALIDATION_FRACTION = 0.06  # pairs for early stopping and choosing settings
SEED = 42
MAX_EMOJIS = 5
# Data augmentation (Task 4.3's remedy): extra training pairs made from the `emoji` package's names for every emoji the
# train split uses ("Look, a hot beverage!" -> ☕), AUGMENT_PER_EMOJI of them per emoji. Train split only.
AUGMENT = False
AUGMENT_PER_EMOJI = 2

args = common.configure(globals(), __doc__)

from datasets import Dataset, DatasetDict, concatenate_datasets  # noqa: E402  (imported after --help so that --help is instant)

raw_path = common.ROOT / RAW_CSV  # an absolute RAW_CSV replaces the root
if not raw_path.exists():
    sys.exit(f"error: {RAW_CSV} not found - write sentence,emoji pairs there (header: text,emoji); see README.")
stamp = common.make_stamp(common.settings_of(globals(), SYSTEM_PROMPT=common.SYSTEM_PROMPT, KNOWN=common.KNOWN),
                          {"raw_csv_sha256": common.file_sha256(raw_path)})
if not args.force and common.dataset_fingerprint() == stamp["fingerprint"]:
    print(f"{common.display(common.DATASET_DIR)} is up to date with {RAW_CSV} and the settings (use --force to rebuild).")
    sys.exit(0)


def validate(path):
    """Return (rows, problems). A problem is 'FILE:LINE: what is wrong'."""
    rows, problems, seen = [], [], {}
    name = common.display(path)
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != ["text", "emoji"]:
            return [], [f"{name}:1: header must be exactly 'text,emoji', found {','.join(header or [])!r}"]
        for fields in reader:
            line = reader.line_num
            if not any(field.strip() for field in fields):
                continue  # blank lines are harmless
            if len(fields) != 2:
                problems.append(f"{name}:{line}: expected 2 columns (text,emoji), found {len(fields)} - "
                                "quote sentences that contain commas")
                continue
            text, target = fields[0].strip(), fields[1].strip()
            if not text:
                problems.append(f"{name}:{line}: empty text")
                continue
            if not metrics.is_emoji_only(target):
                what = "empty emoji target" if not target else f"target {target!r} is not purely emoji"
                problems.append(f"{name}:{line}: {what}")
                continue
            count = len(metrics.emojis_of(target))
            if count > MAX_EMOJIS:
                problems.append(f"{name}:{line}: target has {count} emojis, at most {MAX_EMOJIS} allowed")
                continue
            key = " ".join(text.lower().split())
            if key in seen:
                first_line, first_target = seen[key]
                if metrics.emojis_of(first_target) != metrics.emojis_of(target):
                    problems.append(f"{name}:{line}: same text as line {first_line} with a different target "
                                    f"({target} vs {first_target})")
                continue  # an exact repeat adds nothing
            seen[key] = (line, target)
            rows.append({"sentence": text, "emojis": target, "line": line})
    return rows, problems


def unseen_problems(rows):
    """The prompt sets of common.py against the data: KNOWN must be in it, the others must not (they test what the
    model never saw)."""
    line_of = {" ".join(r["sentence"].lower().split()): r.get("line", "?") for r in rows}
    problems = [f"{RAW_CSV}: KNOWN prompt {s!r} is not in the data - add it or edit common.KNOWN"
                for s in common.KNOWN if " ".join(s.lower().split()) not in line_of]
    for name, prompts in (("NOVEL", common.NOVEL), ("EDGE", common.EDGE), ("GENERAL", common.GENERAL)):
        problems += [f"{RAW_CSV}:{line_of[key]}: {name} prompt {s!r} must not be in the data (it tests unseen input)"
                     for s in prompts if (key := " ".join(s.lower().split())) in line_of]
    return problems


def emoji_names(e):
    """The emoji's CLDR name and aliases as plain words ('hot beverage', 'coffee'), shortest first; names of more
    than three words read badly in a sentence and are left out."""
    data = emoji.EMOJI_DATA.get(e) or emoji.EMOJI_DATA.get(e + metrics.VARIATION_SELECTOR) or {}
    names = {n.strip(":").replace("_", " ") for n in [data.get("en", ""), *data.get("alias", [])] if n}
    return sorted((n for n in names if 0 < len(n.split()) <= 3), key=len)


def augment(train_rows):
    """Templated pairs from the emoji package's names and aliases, one emoji each, for the emojis the train split
    uses (never the test split's, which would leak its answers)."""
    rng = random.Random(SEED)
    templates = ["Look, a {}!", "I keep thinking about the {}.", "Today was all about the {}.", "{} time!",
                 "Guess what I saw: a {}.", "Nothing beats a good {}."]
    used = dict.fromkeys(e for r in train_rows for e in metrics.emojis_of(r["emojis"]))
    pairs = []
    for e in used:
        names = emoji_names(e)
        if not names:
            continue
        for template in rng.sample(templates, AUGMENT_PER_EMOJI):
            sentence = template.format(rng.choice(names[:2]))
            pairs.append({"sentence": sentence[0].upper() + sentence[1:], "emojis": e})
    return pairs


rows, problems = validate(raw_path)
problems += unseen_problems(rows) if not problems else []
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(f"error: {len(problems)} problem(s) in {RAW_CSV}; nothing written. Fix them and run again.")
rows = [{"sentence": r["sentence"], "emojis": r["emojis"]} for r in rows]
n_test = max(MIN_TEST, round(TEST_FRACTION * len(rows)))
n_validation = max(1, round(VALIDATION_FRACTION * len(rows)))
if len(rows) < n_test + n_validation + len(common.KNOWN) + 10:
    sys.exit(f"error: {RAW_CSV} has only {len(rows)} valid pairs; {n_test} test + {n_validation} validation pairs "
             "and at least 10 more for training are needed.")


def with_text(pairs, augmented=False):
    return Dataset.from_list([{**p, "messages": common.emoji_messages(p["sentence"], p["emojis"]),
                               "text": common.llama2_text(p["sentence"], p["emojis"]), "augmented": augmented}
                              for p in pairs])


known = {" ".join(s.lower().split()) for s in common.KNOWN}
pinned = [r for r in rows if " ".join(r["sentence"].lower().split()) in known]
held = with_text([r for r in rows if r not in pinned]).train_test_split(test_size=n_test, seed=SEED)
rest = held["train"].train_test_split(test_size=n_validation, seed=SEED)
train = concatenate_datasets([rest["train"], with_text(pinned)])
extra = with_text(augment(train), augmented=True) if AUGMENT else None
if extra is not None and len(extra):
    train = concatenate_datasets([train, extra])
dataset = DatasetDict(train=train.shuffle(seed=SEED), validation=rest["test"], test=held["test"])

# Write into a temporary folder and swap it in, so an interrupted run never leaves a half-written dataset.
tmp = common.DATASET_DIR.with_name("dataset.tmp")
shutil.rmtree(tmp, ignore_errors=True)
dataset.save_to_disk(str(tmp))
for split, part in dataset.items():
    common.write_jsonl(tmp / f"{split}.jsonl", part)
common.write_json(tmp / "stamp.json", stamp)
shutil.rmtree(common.DATASET_DIR, ignore_errors=True)
tmp.replace(common.DATASET_DIR)

n_aug = sum(dataset["train"]["augmented"])
print(f"{len(rows)} valid pairs from {RAW_CSV}: train {len(dataset['train']) - n_aug}"
      + (f" + {n_aug} augmented" if n_aug else "") + f", validation {len(dataset['validation'])}, "
      f"test {len(dataset['test'])} (seed {SEED})")
for example in dataset["train"].select(range(3)):
    print("---\n" + example["text"])
print(f"---\nsaved to {common.display(common.DATASET_DIR)} (save_to_disk + train/validation/test.jsonl)")

"""Task 1: turn the raw sentence → emoji pairs in data/ into a Hugging Face instruction dataset.

Every row of the CSV is checked first: a bad row is reported as FILE:LINE: problem and nothing is written. Each example
keeps the sentence, the emojis, the chat messages and Task 1's Llama-2 chat string with its special tokens
(`<s>[INST] <<SYS>> ... <</SYS>> sentence [/INST] emojis </s>`), in three seeded splits: train, validation (early
stopping and choosing settings) and test (held out: scored by the report, used by nothing else). The KNOWN prompts
(data/prompt_sets.toml) always land in train; the NOVEL, EDGE and GENERAL prompts must not be in the data at all.
Saved with save_to_disk and as readable JSONL under outputs/dataset/; a changed CSV or constant rebuilds it."""
import hashlib
import sys
from pathlib import Path

from lib import prompts, rawdata, settings, store

RAW_CSV = "data/emoji_pairs.csv"  # header text,emoji; on the command line, relative to the current folder
TEST_FRACTION = 0.1  # held-out pairs the report scores...
MIN_TEST = 40  # ...at least this many...
MAX_TEST = 300  # ...and at most this many (a large CSV trains on more pairs instead of testing for hours)
VALIDATION_FRACTION = 0.06  # pairs for early stopping and choosing settings...
MAX_VALIDATION = 200  # ...at most this many (validation runs every epoch)
SEED = 42
MAX_EMOJIS = 5  # the most emojis one answer may hold
# Data augmentation (Task 4.3's remedy): AUGMENT_PER_EMOJI extra training pairs per emoji of the train split, made from
# the `emoji` package's names ("Look, a hot beverage!" -> ☕). Train split only.
AUGMENT = False
AUGMENT_PER_EMOJI = 2

args = settings.configure(globals(), __doc__, checks=dict(
    TEST_FRACTION=settings.between(0.001, 0.5), MIN_TEST=settings.whole(1, 10_000), MAX_TEST=settings.whole(1, 10_000),
    VALIDATION_FRACTION=settings.between(0.001, 0.5), MAX_VALIDATION=settings.whole(1, 10_000), SEED=settings.seed,
    MAX_EMOJIS=settings.whole(1, 50), AUGMENT_PER_EMOJI=settings.whole(1, 6)))
store.lock("01_make_dataset")
raw, name = Path(RAW_CSV), store.display(RAW_CSV)
if not raw.is_file():
    store.fail(f"{raw} is a folder, not a file - give the path of the file itself." if raw.is_dir() else
               f"{name} not found - write sentence,emoji pairs there (header: text,emoji); see README.")
try:
    data = raw.read_bytes()
except OSError as error:
    store.fail(f"{name} cannot be read ({error.strerror or error}).")
stamp = store.make_stamp(dict(settings={k: v for k, v in globals().items() if k.isupper() and k != "RAW_CSV"},
                              system_prompt=prompts.SYSTEM_PROMPT, known=prompts.KNOWN),
                         {"raw_csv_sha256": hashlib.sha256(data).hexdigest()})
if not args.force and store.is_current(store.DATASET_DIR / "stamp.json", stamp):
    print(f"{store.display(store.DATASET_DIR)} is up to date with {name} and the settings (use --force to rebuild).")
    sys.exit(0)

# ---- Step 1: read and check every row
rows, problems = rawdata.read_pairs(data, name, MAX_EMOJIS)
n_test = min(MAX_TEST, max(MIN_TEST, round(TEST_FRACTION * len(rows))))
n_validation = min(MAX_VALIDATION, max(1, round(VALIDATION_FRACTION * len(rows))))
needed = n_test + n_validation + len(prompts.KNOWN) + 20
if not problems and len(rows) < needed:
    store.fail(f"too few pairs in {name}: {len(rows)} valid, {needed} needed ({n_test} test + {n_validation} "
               f"validation + the {len(prompts.KNOWN)} KNOWN prompts + 20 more for training).")
problems = problems or rawdata.unseen_problems(rows, name)
if problems:
    print("\n".join(problems), file=sys.stderr)
    store.fail(f"{len(problems)} problem(s) in {name}; nothing written. Fix them and run again.")

from datasets import Dataset, DatasetDict, concatenate_datasets  # noqa: E402  (only once the data is known good)


def with_text(pairs, augmented=False):
    """Each pair as chat messages and as Task 1's Llama-2 string with its special tokens."""
    return Dataset.from_list([{"sentence": p["sentence"], "emojis": p["emojis"], "augmented": augmented,
                               "messages": prompts.emoji_messages(p["sentence"], p["emojis"]),
                               "text": prompts.llama2_text(p["sentence"], p["emojis"])} for p in pairs])


# ---- Step 2: split (KNOWN pinned to train), augment the train split if asked
pinned = [r for r in rows if prompts.is_known(r["sentence"])]
held = with_text([r for r in rows if not prompts.is_known(r["sentence"])]).train_test_split(test_size=n_test, seed=SEED)
rest = held["train"].train_test_split(test_size=n_validation, seed=SEED)
train = concatenate_datasets([rest["train"], with_text(pinned)])
if AUGMENT:
    train = concatenate_datasets([train, with_text(rawdata.augment(train, AUGMENT_PER_EMOJI, SEED), augmented=True)])
dataset = DatasetDict(train=train.shuffle(seed=SEED), validation=rest["test"], test=held["test"])

# ---- Step 3: save (into a temporary folder swapped in whole, so an interrupted run keeps the old dataset)
with store.atomic(store.DATASET_DIR) as tmp:
    dataset.save_to_disk(str(tmp))
    for split, part in dataset.items():
        store.write_jsonl(tmp / f"{split}.jsonl", part)
    store.write_json(tmp / "stamp.json", store.make_stamp(stamp["settings"], stamp["inputs"], folder=tmp))

n_aug = sum(dataset["train"]["augmented"])
print(f"{len(rows)} valid pairs from {name}: train {len(dataset['train']) - n_aug}"
      + (f" + {n_aug} augmented" if n_aug else "") + f", validation {len(dataset['validation'])}, "
      f"test {len(dataset['test'])} (seed {SEED})")
for example in dataset["train"].select(range(3)):
    print("---\n" + example["text"])
print(f"---\nsaved to {store.display(store.DATASET_DIR)} (save_to_disk + train/validation/test.jsonl)")

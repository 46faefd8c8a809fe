"""Task 1: turn the raw sentence → emoji pairs in data/ into a Hugging Face instruction dataset.

Every row is validated first; any bad row is reported as FILE:LINE: problem and nothing is written. The dataset keeps
the sentence, the emojis, the chat messages and the rendered Llama-2 chat string with its special tokens, split
into seeded train/validation parts, saved with save_to_disk and as readable JSONL under outputs/dataset/."""
import csv
import hashlib
import json
import shutil
import sys

import common
import metrics

RAW_CSV = common.display(common.RAW_CSV)  # header: text,emoji; relative paths are from the repo root
VALIDATION_FRACTION = 0.12
SEED = 42
MAX_EMOJIS = 6

args = common.configure(globals(), __doc__)

from datasets import Dataset, DatasetDict  # noqa: E402  (imported after --help so that --help is instant)

raw_path = common.ROOT / RAW_CSV  # an absolute RAW_CSV replaces the root
if not raw_path.exists():
    sys.exit(f"error: {RAW_CSV} not found - write sentence,emoji pairs there (header: text,emoji); see README.")
source_hash = hashlib.sha256(raw_path.read_bytes()).hexdigest()
stamp = common.DATASET_DIR / "source.json"
if stamp.exists() and not args.force and json.loads(stamp.read_text())["sha256"] == source_hash:
    print(f"{common.display(common.DATASET_DIR)} is up to date with {RAW_CSV} (use --force to rebuild).")
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
            rows.append({"sentence": text, "emojis": target})
    return rows, problems


rows, problems = validate(raw_path)
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(f"error: {len(problems)} bad row(s) in {RAW_CSV}; nothing written. Fix them and run again.")
if len(rows) < 10:
    sys.exit(f"error: {RAW_CSV} has only {len(rows)} valid pairs; at least 10 are needed for a train/validation split.")

dataset = Dataset.from_list([
    {**row, "messages": common.chat_messages(row["sentence"], row["emojis"]),
     "text": common.llama2_text(row["sentence"], row["emojis"])}
    for row in rows
])
splits = dataset.train_test_split(test_size=VALIDATION_FRACTION, seed=SEED)
dataset = DatasetDict(train=splits["train"], validation=splits["test"])

# Write into a temporary folder and swap it in, so an interrupted run never leaves a half-written dataset.
tmp = common.DATASET_DIR.with_name("dataset.tmp")
shutil.rmtree(tmp, ignore_errors=True)
dataset.save_to_disk(str(tmp))
for split, part in dataset.items():
    common.append_jsonl(tmp / f"{split}.jsonl", part)
common.write_json(tmp / "source.json", {"raw_csv": RAW_CSV, "sha256": source_hash, "seed": SEED,
                                        "validation_fraction": VALIDATION_FRACTION})
shutil.rmtree(common.DATASET_DIR, ignore_errors=True)
tmp.replace(common.DATASET_DIR)

print(f"{len(rows)} valid pairs from {RAW_CSV}: train {len(dataset['train'])}, "
      f"validation {len(dataset['validation'])} (seed {SEED})")
for example in dataset["train"].select(range(3)):
    print("---\n" + example["text"])
print(f"---\nsaved to {common.display(common.DATASET_DIR)} (save_to_disk + train.jsonl, validation.jsonl)")

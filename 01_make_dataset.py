"""Task 1: turn the raw sentence → emoji pairs in data/ into a Hugging Face instruction dataset.

Every row is validated first; any bad row is reported as FILE:LINE: problem and nothing is written. The dataset keeps
the sentence, the emojis, the chat messages and Task 1's rendered Llama-2 chat string with its special tokens, in three
seeded splits: train, validation (early stopping and any choice of settings) and test (reported as held-out, used by
nothing else). The KNOWN prompts (common.py) always land in train; the NOVEL, EDGE and GENERAL prompts must not be in
the data at all. Saved with save_to_disk and as readable JSONL under outputs/dataset/, with a provenance stamp: any
change to the CSV or to a constant here rebuilds it, and the later steps follow."""
import csv
import io
import random
import shutil
import sys
import unicodedata
from pathlib import Path

import emoji

import common
import metrics

RAW_CSV = common.display(common.RAW_CSV)  # header: text,emoji; on the command line, relative to the current directory
TEST_FRACTION = 0.1  # held-out pairs the report scores (at least MIN_TEST of them)
MIN_TEST = 40
VALIDATION_FRACTION = 0.06  # pairs for early stopping and choosing settings
SEED = 42
MAX_EMOJIS = 5
# Data augmentation (Task 4.3's remedy): extra training pairs made from the `emoji` package's names for every emoji the
# train split uses ("Look, a hot beverage!" -> ☕), AUGMENT_PER_EMOJI of them per emoji. Train split only.
AUGMENT = False
AUGMENT_PER_EMOJI = 2

args = common.configure(globals(), __doc__, checks={"MIN_TEST": common.positive_int, "MAX_EMOJIS": common.positive_int,
                                                   "AUGMENT_PER_EMOJI": common.between(1, 6, include_low=True, include_high=True)})

raw_path = Path(RAW_CSV)  # absolute: configure resolved it
common.require_file(raw_path, "write sentence,emoji pairs there (header: text,emoji); see README.")
RAW_CSV = common.display(raw_path)  # as messages show it
stamp = common.make_stamp(common.settings_of(globals(), SYSTEM_PROMPT=common.SYSTEM_PROMPT, KNOWN=common.KNOWN),
                          {"raw_csv_sha256": common.file_sha256(raw_path)})
if not args.force and common.dataset_fingerprint() == stamp["fingerprint"]:
    print(f"{common.display(common.DATASET_DIR)} is up to date with {RAW_CSV} and the settings (use --force to rebuild).")
    sys.exit(0)


_SAVE_AS = "save it as CSV UTF-8 (Excel: File > Save As > CSV UTF-8; LibreOffice: Text CSV, character set UTF-8)"
_MAX_FIELD_CHARS = 1000  # a sentence longer than this is a missing closing quote, not a sentence
_MAX_PROBLEMS = 20  # a wrong file would otherwise report every line


def raw_text(data):
    """(text, None) for the bytes of a CSV as spreadsheets write it (UTF-8, with or without a byte-order mark), else
    (None, 'LINE: problem') saying how to save it instead."""
    if data.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return None, f"1: the file is UTF-32 text - {_SAVE_AS}"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return None, f"1: the file is UTF-16 text - {_SAVE_AS}"
    if data.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0")):
        return None, f"1: this is a spreadsheet workbook (.xlsx, .xls or .ods), not a CSV file - {_SAVE_AS}"
    data = data.removeprefix(b"\xef\xbb\xbf")
    nul = data.find(b"\x00")
    if nul >= 0:
        head = data[:2000]
        if head.count(b"\x00") * 3 > len(head):  # every other byte zero: UTF-16 without a byte-order mark
            return None, f"1: the file looks like UTF-16 text - {_SAVE_AS}"
        line = data[:nul].count(b"\n") + 1
        return None, f"{line}: NUL byte (binary data) - this is not CSV text; {_SAVE_AS}"
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        if exc.end == len(data):
            guess = "a character cut off at the end of the file"
        else:
            try:  # the offending line only: the rest of the file may well be UTF-8
                data[data.rfind(b"\n", 0, exc.start) + 1:].split(b"\n", 1)[0].decode("cp1252")
                guess = "probably Windows-1252 / Latin-1 text"
            except UnicodeDecodeError:
                guess = "invalid UTF-8"
        return None, f"{line}: not UTF-8 (byte 0x{data[exc.start]:02x}; {guess}) - {_SAVE_AS}"


def field_problem(field, column):
    """What is wrong with one field's characters, or None."""
    if len(field) > _MAX_FIELD_CHARS:
        return (f"{column} is {len(field)} characters long, at most {_MAX_FIELD_CHARS} allowed - "
                "is a closing quote missing?")
    for char in field:
        if char == "\ufffd":
            return f"{column} holds U+FFFD (\ufffd), a character lost in an earlier conversion - retype it"
        if char == "\ufeff":
            return f"{column} holds a stray byte-order mark (U+FEFF) - were two files joined? remove it"
        if unicodedata.category(char) == "Cc" and char not in "\t\n\r":
            return f"{column} holds the control character U+{ord(char):04X} - remove it"
    return None


def csv_problem(error):
    """csv's error messages in the user's terms."""
    message = str(error)
    if "field larger than field limit" in message:
        return f"a field is over {csv.field_size_limit()} characters - is a closing quote missing?"
    if "unexpected end of data" in message:
        return "a quoted field is never closed - a closing quote (\") is missing"
    if "expected after" in message:
        return ("text after a closing quote - quote the whole field and double every quote inside it "
                "(\"She said \"\"hi\"\"\")")
    return f"not valid CSV ({message})"


def validate(path):
    """Return (rows, problems). A problem is 'FILE:LINE: what is wrong'; a row spanning lines (a quoted newline) is
    reported at the line where it starts. Accepts what spreadsheets write: UTF-8 with or without a byte-order mark,
    LF or CRLF line ends."""
    rows, problems, seen = [], [], {}
    name = common.display(path)
    text, problem = raw_text(Path(path).read_bytes())
    if problem:
        return [], [f"{name}:{problem}"]
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header = None
    while len(problems) < _MAX_PROBLEMS:
        line = reader.line_num + 1  # where the next row starts
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as error:  # the reader cannot resynchronise after this
            problems.append(f"{name}:{line}: {csv_problem(error)}")
            break
        if header is None:
            header = fields
            if [h.strip() for h in header] != ["text", "emoji"]:
                found = ",".join(header)[:80]
                hint = " - the fields are separated by ';': " + _SAVE_AS if ";" in found else ""
                return [], [f"{name}:{line}: the first line must be the header 'text,emoji', found {found!r}{hint}"]
            continue
        if not any(field.strip() for field in fields):
            continue  # blank lines are harmless
        if len(fields) != 2:
            problems.append(f"{name}:{line}: expected 2 columns (text,emoji), found {len(fields)} - "
                            "quote sentences that contain commas")
            continue
        text, target = fields[0].strip(), fields[1].strip()
        problem = field_problem(text, "text") or field_problem(target, "emoji")
        if problem:
            problems.append(f"{name}:{line}: {problem}")
            continue
        if not text:
            problems.append(f"{name}:{line}: empty text")
            continue
        if not metrics.is_emoji_only(target):
            what = "empty emoji target" if not target else f"target {target[:40]!r} is not purely emoji"
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
    if header is None and not problems:
        problems.append(f"{name}:1: the file is empty - the first line must be the header 'text,emoji'")
    if len(problems) >= _MAX_PROBLEMS:
        problems.append(f"{name}: stopped after {_MAX_PROBLEMS} problems - is this the right file?")
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


from datasets import Dataset, DatasetDict, concatenate_datasets  # noqa: E402  (only once the data is known good)


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

"""Reading the raw sentence,emoji CSV as spreadsheets save it, and Task 4.3's augmentation.

`read_pairs` returns the valid pairs or a list of problems, each `FILE:LINE: what is wrong`: a row spanning lines (a
quoted newline) is reported where it starts. Accepted: UTF-8 with or without a byte-order mark, LF or CRLF, a header
in any case, trailing empty cells or columns (Excel's `text,emoji,,`), blank lines."""
import csv
import io
import random
import unicodedata

import emoji

from lib import metrics, prompts, store

SAVE_AS = "save it as CSV UTF-8 (Excel: File > Save As > CSV UTF-8; LibreOffice: Text CSV, character set UTF-8)"
MAX_FIELD_CHARS = 1000  # a sentence longer than this is a missing closing quote, not a sentence
MAX_PROBLEMS = 20  # a wrong file would otherwise report every line
NOT_CSV = {(b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff"): "the file is UTF-32 text",  # before UTF-16: the same start
           (b"\xff\xfe", b"\xfe\xff"): "the file is UTF-16 text",
           (b"PK\x03\x04", b"\xd0\xcf\x11\xe0"): "this is a spreadsheet workbook (.xlsx, .xls or .ods), not a CSV file"}


def line_of(data, offset):
    return data[:offset].count(b"\n") + 1


def decode(data):
    """(text, None) for a CSV's bytes, else (None, 'LINE: problem') saying how to save it instead."""
    for starts, what in NOT_CSV.items():
        if data.startswith(starts):
            return None, f"1: {what} - {SAVE_AS}"
    data = data.removeprefix(b"\xef\xbb\xbf")
    if (nul := data.find(b"\x00")) >= 0:
        if data[:2000].count(b"\x00") * 3 > len(data[:2000]):  # every other byte zero: UTF-16 without a BOM
            return None, f"1: the file looks like UTF-16 text - {SAVE_AS}"
        return None, f"{line_of(data, nul)}: NUL byte (binary data) - this is not CSV text; {SAVE_AS}"
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as error:
        line = data[data.rfind(b"\n", 0, error.start) + 1:].split(b"\n", 1)[0]  # the rest may well be UTF-8
        legacy = "\ufffd" not in line.decode("cp1252", errors="replace")  # every byte a Windows-1252 character
        guess = ("a character cut off at the end of the file" if error.end == len(data) else
                 "probably Windows-1252 / Latin-1 text" if legacy else "invalid UTF-8")
        return None, f"{line_of(data, error.start)}: not UTF-8 (byte 0x{data[error.start]:02x}; {guess}) - {SAVE_AS}"


CSV_PROBLEMS = {  # csv's error messages in the user's terms
    "field larger": f"a field is over {csv.field_size_limit()} characters - is a closing quote missing?",
    "unexpected end of data": "a quoted field is never closed - a closing quote (\") is missing",
    "expected after": "text after a closing quote - quote the whole field and double every quote inside it"}


STRAY_CHARS = {"\ufffd": "U+FFFD (\ufffd), a character lost in an earlier conversion - retype it",
               "\ufeff": "a stray byte-order mark (U+FEFF) - were two files joined? remove it"}
LEGACY = "the emojis became '?' - the file was saved in a legacy encoding; " + SAVE_AS


def pair_problem(fields, max_emojis):
    """What is wrong with a data row's cells (text, emoji), or None."""
    if len(fields) != 2:
        return f"expected 2 columns (text,emoji), found {len(fields)} - quote sentences that contain commas"
    sentence, target = fields[0].strip(), fields[1].strip()
    for field, column in ((sentence, "text"), (target, "emoji")):
        if len(field) > MAX_FIELD_CHARS:
            return f"{column} is {len(field)} characters long, at most {MAX_FIELD_CHARS} - is a closing quote missing?"
        for char in field:
            if char in STRAY_CHARS or unicodedata.category(char) == "Cc" and char not in "\t\n\r":
                stray = STRAY_CHARS.get(char, f"the control character U+{ord(char):04X} - remove it")
                return f"{column} holds {stray}"
    if not sentence:
        return "empty text"
    if "?" in target and set(target) <= set("? "):
        return LEGACY
    if not metrics.is_emoji_only(target):
        return f"target {target[:40]!r} is not purely emoji" if target else "empty emoji target"
    if len(metrics.emojis_of(target)) > max_emojis:
        return f"target has {len(metrics.emojis_of(target))} emojis, at most {max_emojis} allowed"
    return None


def read_pairs(data, name, max_emojis):
    """([{'sentence', 'emojis', 'line'}], problems) from a CSV file's bytes; `name` is how messages show the file."""
    text, problem = decode(data)
    if problem:
        return [], [f"{name}:{problem}"]
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows, problems, seen, line = [], [], {}, 1
    try:
        while len(problems) < MAX_PROBLEMS and (fields := next(reader, None)) is not None:
            start, line = line, reader.line_num + 1  # where this row starts, where the next one does
            while len(fields) > 2 and not fields[-1].strip():
                fields.pop()  # trailing empty cells, as spreadsheets write them
            if start == 1:  # the header
                if [h.strip().lower() for h in fields] != ["text", "emoji"]:
                    hint = f" - the fields are separated by ';': {SAVE_AS}" if ";" in ",".join(fields) else ""
                    return [], [f"{name}:1: the first line must be the header 'text,emoji', found "
                                f"{','.join(fields)[:80]!r}{hint}"]
                continue
            if not any(field.strip() for field in fields):
                continue  # blank lines are harmless
            if problem := pair_problem(fields, max_emojis):
                if problem != LEGACY or not any(p.endswith(LEGACY) for p in problems):  # one line for a file whose
                    problems.append(f"{name}:{start}: {problem}")  # emojis all became '?'
                continue
            sentence, target = fields[0].strip(), fields[1].strip()
            first = seen.get(prompts.key(sentence))
            if first and metrics.emojis_of(first[1]) != metrics.emojis_of(target):
                problems.append(f"{name}:{start}: same text as line {first[0]} with a different target "
                                f"({target} vs {first[1]})")
            elif not first:  # an exact repeat adds nothing
                seen[prompts.key(sentence)] = (start, target)
                rows.append({"sentence": sentence, "emojis": target, "line": start})
    except csv.Error as error:  # the reader cannot resynchronise after this
        problems.append(f"{name}:{line}: " + next((words for cue, words in CSV_PROBLEMS.items() if cue in str(error)),
                                                  f"not valid CSV ({error})"))
    if line == 1 and not problems:
        problems.append(f"{name}:1: the file is empty - the first line must be the header 'text,emoji'")
    if len(problems) >= MAX_PROBLEMS:
        problems.append(f"{name}: stopped after {MAX_PROBLEMS} problems - is this the right file?")
    return rows, problems


def unseen_problems(rows, name):
    """KNOWN prompts must be in the data; NOVEL, EDGE and GENERAL must not (they test what the model never saw)."""
    line_of = {prompts.key(r["sentence"]): r["line"] for r in rows}
    problems = [f"{name}: KNOWN prompt {s!r} is not in the data - add it or edit data/prompt_sets.toml"
                for s in prompts.KNOWN if prompts.key(s) not in line_of]
    for set_name, sentences in (("NOVEL", prompts.NOVEL), ("EDGE", prompts.EDGE), ("GENERAL", prompts.GENERAL)):
        problems += [f"{name}:{line_of[prompts.key(s)]}: {set_name} prompt {s!r} must not be in the data (it tests "
                     "unseen input)" for s in sentences if prompts.key(s) in line_of]
    return problems


def emoji_names(e):
    """The emoji's CLDR name and aliases as plain words ('hot beverage', 'coffee'), shortest first, at most 3 words."""
    data = emoji.EMOJI_DATA.get(e) or emoji.EMOJI_DATA.get(e + metrics.VARIATION_SELECTOR) or {}
    names = {n.strip(":").replace("_", " ") for n in [data.get("en", ""), *data.get("alias", [])] if n}
    return sorted((n for n in names if 0 < len(n.split()) <= 3), key=len)


def augment(train_rows, per_emoji, seed):
    """Templated pairs from the emoji package's names, one emoji each, for the emojis the train split uses (never the
    test split's, which would leak its answers)."""
    rng = random.Random(seed)
    templates = ["Look, a {}!", "I keep thinking about the {}.", "Today was all about the {}.", "{} time!",
                 "Guess what I saw: a {}.", "Nothing beats a good {}."]
    pairs = []
    for e in dict.fromkeys(e for r in train_rows for e in metrics.emojis_of(r["emojis"])):
        names = emoji_names(e)
        for template in rng.sample(templates, per_emoji) if names else []:
            sentence = template.format(rng.choice(names[:2]))
            pairs.append({"sentence": sentence[0].upper() + sentence[1:], "emojis": e})
    return pairs


# ---------------------------------------------------------------- the dataset 01 saved
def dataset_stamp():
    """The dataset's stamp; one line naming 01 when the dataset is missing, damaged or incomplete."""
    store.require(store.DATASET_DIR / "stamp.json", "01_make_dataset.py")
    if (stamp := store.read_stamp(store.DATASET_DIR / "stamp.json")) is None:
        store.redo(store.DATASET_DIR, "is incomplete or damaged", "01_make_dataset.py")
    return stamp


def load_splits():
    """The DatasetDict 01 saved (train, validation, test)."""
    from datasets import load_from_disk

    dataset_stamp()
    try:
        return load_from_disk(str(store.DATASET_DIR), keep_in_memory=True)  # no cache files written beside it
    except Exception as error:  # datasets raises many kinds on a damaged folder; all mean the same to the user
        store.redo(store.DATASET_DIR, f"cannot be read ({type(error).__name__})", "01_make_dataset.py")


def training_data(train_pairs, seed):
    """02's splits (the test split is not handed out) and their sizes for run.json: all training pairs, or a seeded
    subset of `train_pairs` that keeps every KNOWN prompt (Task 2.1 asks about trained pairs)."""
    data = load_splits()
    sizes = {"train_available": len(data["train"]), "test_size": len(data["test"])}
    train = data["train"] if train_pairs == "all" else subset_keeping_known(data["train"], train_pairs, seed)
    sizes.update(train_size=len(train), augmented_size=sum(train["augmented"]), validation_size=len(data["validation"]))
    print(f"dataset: train {len(train)} of {sizes['train_available']} pairs ({sizes['augmented_size']} augmented), "
          f"validation {len(data['validation'])}; the test split is not read here")
    return {"train": train, "validation": data["validation"]}, sizes


def subset_keeping_known(train, n, seed):
    """A seeded subset of n training pairs that keeps every KNOWN prompt (Task 2.1 asks about trained pairs)."""
    from datasets import concatenate_datasets

    pinned = train.filter(lambda ex: prompts.is_known(ex["sentence"]))
    others = train.filter(lambda ex: not prompts.is_known(ex["sentence"])).shuffle(seed=seed)
    return concatenate_datasets([pinned, others.select(range(max(0, min(len(others), n - len(pinned)))))])

"""01_make_dataset.py: bad rows are reported as FILE:LINE with nothing written; good data becomes seeded, disjoint
train/validation/test splits carrying Task 1's Llama-2 chat string; the provenance stamp decides when to rebuild."""
import csv
import json
import shutil

from lib import prompts, settings, store
from conftest import ROOT, SMALL_ROWS, run_script

# Enough ordinary pairs for the three splits, plus the KNOWN prompts 01 insists on (03 needs them in train).
GOOD_ROWS = [(f"Sentence number {i} about pizza.", "🍕😋") for i in range(80)] + [(s, "⭐") for s in prompts.KNOWN]
SENTENCE = "Let's go dancing tonight, friends."  # one of SMALL_ROWS, quoted in the CSV
SMALL = ["--min-test", "10"]  # the default of 40 test pairs needs more rows than a test wants to write


def write_csv(path, rows, header=("text", "emoji")):
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def splits(out):
    return {name: [json.loads(line) for line in (out / "dataset" / f"{name}.jsonl").read_text("utf-8").splitlines()]
            for name in ("train", "validation", "test")}


def test_bad_rows_are_reported_with_file_and_line_and_nothing_is_written(tmp_path):
    raw = tmp_path / "raw.csv"
    raw.write_text("\n".join([
        "text,emoji",
        "A fine sentence.,🍕",                      # line 2: good
        ",🎉",                                       # line 3: empty text
        "Words instead of emojis.,pizza",            # line 4: target not emoji
        "Mixed target.,🍕 yum",                      # line 5: target with a word
        "Too many columns.,🍕,🎉",                   # line 6: three columns
        "A fine sentence.,🎉",                       # line 7: same text as line 2, other target
        "No target at all.,",                        # line 8: empty target
        "Far too many.,🍕🍕🍕🍕🍕🍕🍕",               # line 9: seven emojis
    ]) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    result = run_script("01_make_dataset.py", "--raw-csv", raw, out=out)
    assert result.returncode != 0
    for line in (3, 4, 5, 6, 7, 8, 9):
        assert f"raw.csv:{line}: " in result.stderr, (line, result.stderr)
    assert "raw.csv:2:" not in result.stderr and "Traceback" not in result.stderr
    assert not out.exists() or not any(out.iterdir())


def test_missing_raw_file_says_what_to_do(tmp_path):
    result = run_script("01_make_dataset.py", "--raw-csv", tmp_path / "nope.csv", out=tmp_path / "out")
    assert result.returncode != 0 and "nope.csv" in result.stderr and "not found" in result.stderr


def test_a_prompt_meant_to_be_unseen_in_the_data_is_refused_at_its_line(tmp_path):
    raw = write_csv(tmp_path / "raw.csv", GOOD_ROWS + [(prompts.NOVEL[2], "🍪👵")])
    result = run_script("01_make_dataset.py", "--raw-csv", raw, *SMALL, out=tmp_path / "out")
    assert result.returncode != 0
    assert f"raw.csv:{len(GOOD_ROWS) + 2}: NOVEL prompt" in result.stderr


def test_good_data_becomes_three_disjoint_splits_with_known_prompts_in_train(small_dataset):
    from datasets import load_from_disk

    data = load_from_disk(str(small_dataset / "dataset"))
    assert set(data) == {"train", "validation", "test"} and len(data["test"]) == 10
    assert set(data["train"].column_names) == {"sentence", "emojis", "messages", "text", "augmented"}
    sentences = {name: set(part["sentence"]) for name, part in data.items()}
    assert not sentences["train"] & sentences["test"] and not sentences["train"] & sentences["validation"]
    assert not sentences["validation"] & sentences["test"]
    assert set(prompts.KNOWN) <= sentences["train"]
    assert sum(map(len, sentences.values())) == len(SMALL_ROWS)
    row = next(r for part in data.values() for r in part if r["sentence"] == SENTENCE)
    assert row["text"] == prompts.llama2_text(SENTENCE, "💃🕺🎶")
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    assert [r["sentence"] for r in splits(small_dataset)["test"]] == data["test"]["sentence"]


def test_any_changed_constant_or_csv_rebuilds_and_a_corrupt_stamp_means_rebuild(small_dataset, tmp_path):
    out, raw = tmp_path / "out", tmp_path / "raw.csv"
    shutil.copytree(small_dataset, out)
    shutil.copy(small_dataset.parent / "raw.csv", raw)
    assert "up to date" in run_script("01_make_dataset.py", "--raw-csv", raw, *SMALL, out=out).stdout
    # A new seed is a new split, and the KNOWN prompts stay in train whatever the seed.
    before = splits(out)
    reseeded = run_script("01_make_dataset.py", "--raw-csv", raw, *SMALL, "--seed", "7", out=out)
    assert reseeded.returncode == 0 and "up to date" not in reseeded.stdout, reseeded.stderr
    after = splits(out)
    assert [r["sentence"] for r in after["test"]] != [r["sentence"] for r in before["test"]]
    assert set(prompts.KNOWN) <= {r["sentence"] for r in after["train"]}
    assert not set(prompts.KNOWN) & {r["sentence"] for r in after["validation"] + after["test"]}
    write_csv(raw, SMALL_ROWS + [("One more sentence.", "➕")])
    edited = run_script("01_make_dataset.py", "--raw-csv", raw, *SMALL, "--seed", "7", out=out)
    assert edited.returncode == 0 and f"{len(SMALL_ROWS) + 1} valid pairs" in edited.stdout, edited.stderr
    (out / "dataset" / "stamp.json").write_text("{not json", encoding="utf-8")
    rebuilt = run_script("01_make_dataset.py", "--raw-csv", raw, *SMALL, "--seed", "7", out=out)
    assert rebuilt.returncode == 0 and "up to date" not in rebuilt.stdout and "Traceback" not in rebuilt.stderr


def test_augmentation_adds_named_emoji_pairs_to_train_only(tmp_path):
    raw = write_csv(tmp_path / "raw.csv", GOOD_ROWS)
    out = tmp_path / "out"
    assert run_script("01_make_dataset.py", "--raw-csv", raw, *SMALL, "--augment", "true", out=out).returncode == 0
    parts = splits(out)
    extra = [r for r in parts["train"] if r["augmented"]]
    used = {e for r in parts["train"] if not r["augmented"] for e in r["emojis"]}
    assert extra and all(r["emojis"] in {"🍕", "😋", "⭐"} | used for r in extra)
    assert any("pizza" in r["sentence"].lower() for r in extra)  # 🍕's CLDR name
    assert not any(r["augmented"] for r in parts["validation"] + parts["test"])


def test_shipped_data_is_valid_large_and_holds_the_known_prompts(shipped_dataset):
    with open(ROOT / "data" / "emoji_pairs.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= 1500
    assert {r["text"] for r in rows} >= set(prompts.KNOWN)
    assert len(splits(shipped_dataset)["test"]) >= 40  # 01 built it (conftest)

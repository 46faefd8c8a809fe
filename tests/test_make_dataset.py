"""01_make_dataset.py: every kind of bad row is reported as FILE:LINE with nothing written; good data becomes a
seeded train/validation DatasetDict carrying the Llama-2 chat string."""
import json

from conftest import ROOT, run_script

GOOD_ROWS = [(f"Sentence number {i} about pizza.", "🍕😋") for i in range(30)]


def write_csv(path, rows, header="text,emoji"):
    lines = [header] + [f'"{t}",{e}' if "," in t else f"{t},{e}" for t, e in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


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
    for line, words in [(3, "empty text"), (4, "not purely emoji"), (5, "not purely emoji"), (6, "2 columns"),
                        (7, "line 2"), (8, "empty emoji target"), (9, "7 emojis")]:
        assert f"raw.csv:{line}: " in result.stderr and words in result.stderr, (line, result.stderr)
    assert "raw.csv:2:" not in result.stderr
    assert not out.exists() or not any(out.iterdir())


def test_wrong_header_is_reported_on_line_1(tmp_path):
    raw = write_csv(tmp_path / "raw.csv", GOOD_ROWS, header="sentence,emojis")
    result = run_script("01_make_dataset.py", "--raw-csv", raw, out=tmp_path / "out")
    assert result.returncode != 0 and "raw.csv:1: header" in result.stderr


def test_missing_raw_file_says_what_to_do(tmp_path):
    result = run_script("01_make_dataset.py", "--raw-csv", tmp_path / "nope.csv", out=tmp_path / "out")
    assert result.returncode != 0 and "nope.csv not found" in result.stderr


def test_good_data_becomes_seeded_splits_with_llama2_text(tmp_path):
    from datasets import load_from_disk

    raw = write_csv(tmp_path / "raw.csv", GOOD_ROWS + [("Let's go dancing tonight, friends.", "💃🕺🎶")])
    out = tmp_path / "out"
    result = run_script("01_make_dataset.py", "--raw-csv", raw, out=out)
    assert result.returncode == 0, result.stderr
    assert "train 27, validation 4" in result.stdout  # 12 % of 31, rounded up by datasets
    data = load_from_disk(str(out / "dataset"))
    assert set(data) == {"train", "validation"}
    assert set(data["train"].column_names) == {"sentence", "emojis", "messages", "text"}
    row = next(r for split in data.values() for r in split if r["emojis"] == "💃🕺🎶")
    assert row["text"] == ("<s>[INST] <<SYS>>\nReply with emojis only.\n<</SYS>>\n\n"
                           "Let's go dancing tonight, friends. [/INST] 💃🕺🎶 </s>")
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    jsonl = [json.loads(line) for line in (out / "dataset" / "validation.jsonl").read_text("utf-8").splitlines()]
    assert [r["sentence"] for r in jsonl] == data["validation"]["sentence"]

    again = run_script("01_make_dataset.py", "--raw-csv", raw, out=out)
    assert again.returncode == 0 and "up to date" in again.stdout
    other_seed = tmp_path / "other"
    run_script("01_make_dataset.py", "--raw-csv", raw, "--seed", "7", out=other_seed)
    assert load_from_disk(str(other_seed / "dataset"))["validation"]["sentence"] != data["validation"]["sentence"]


def test_editing_the_csv_rebuilds_the_dataset(tmp_path):
    raw = write_csv(tmp_path / "raw.csv", GOOD_ROWS)
    out = tmp_path / "out"
    assert run_script("01_make_dataset.py", "--raw-csv", raw, out=out).returncode == 0
    write_csv(raw, GOOD_ROWS + [("One more sentence.", "➕")])
    result = run_script("01_make_dataset.py", "--raw-csv", raw, out=out)
    assert result.returncode == 0 and "31 valid pairs" in result.stdout


def test_shipped_data_is_valid_and_large_enough():
    result = run_script("01_make_dataset.py", "--help", out=ROOT / "outputs")
    assert "--validation-fraction" in result.stdout and "(default: 0.12)" in result.stdout
    import csv

    with open(ROOT / "data" / "emoji_pairs.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= 200
    assert {"text": "Let's go dancing tonight.", "emoji": "💃🕺🎶"} in rows

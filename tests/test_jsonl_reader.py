"""lib/store.py's JSONL reader and appender on what writers leave behind (issue 17, fix 5: a reader must not write).

- read_jsonl never writes. A kill during an append leaves a torn last line (no newline after it): it is skipped with
  one warning, every time the file is read, until the next write. Damage anywhere else, or a row without a required
  field, is one line `error: FILE:LINE: problem` and exit 1.
- append_jsonl repairs before it appends: it cuts a torn last line, or gives a whole last row its missing newline, so
  the next row never fuses with what was there."""
import json
import os

import pytest

from lib import store

ROWS = [{"prompt": "I overslept.", "answer": "😴⏰"}, {"prompt": "Tokyo!", "answer": "🇯🇵✈️"},
        {"prompt": "Happy birthday", "answer": "🎂🎉"}]
NEXT = {"prompt": "next", "answer": "➡️"}


def jsonl(rows):
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")


def error_line(capsys, exit_info):
    """The one stderr line of a failed read; the exit is code 1."""
    assert exit_info.value.code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


# What a writer killed mid-append leaves: part of a row and no newline after it.
TORN_ENDINGS = {
    "cut_mid_object": b'{"prompt": "Volleyball", "ans',
    "cut_mid_emoji": '{"prompt": "Soup", "answer": "🌶'.encode("utf-8")[:-2],
    "cut_after_the_closing_brace_of_a_bad_row": b'{"prompt": "Volleyball", "answer": }',
    "zero_filled_tail": b"\x00" * 40,  # a crash can leave the appended blocks allocated but zero-filled
}


@pytest.mark.parametrize("name", sorted(TORN_ENDINGS))
def test_a_torn_last_line_is_skipped_with_one_warning_and_the_reader_leaves_the_file_byte_identical(tmp_path, capsys,
                                                                                                   name):
    path = tmp_path / "answers.jsonl"
    data = jsonl(ROWS) + TORN_ENDINGS[name]
    path.write_bytes(data)
    before = os.stat(path)
    for _ in range(2):  # nothing repaired it, so a second read warns again
        assert store.read_jsonl(path) == ROWS
        warnings = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(warnings) == 1 and warnings[0].startswith(f"warning: {path}:4: ") and "torn" in warnings[0]
    # The reader did not write: same bytes, same inode (no atomic rewrite), same modification time. The former
    # common.read_jsonl rewrote the file here.
    assert path.read_bytes() == data
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.jsonl"]


def test_a_last_row_without_its_newline_is_read_and_the_file_left_alone(tmp_path, capsys):
    path = tmp_path / "answers.jsonl"
    data = jsonl(ROWS).rstrip(b"\n")
    path.write_bytes(data)
    assert store.read_jsonl(path) == ROWS
    assert capsys.readouterr().err == ""
    assert path.read_bytes() == data


@pytest.mark.parametrize("name", sorted(TORN_ENDINGS))
def test_the_writer_cuts_a_torn_last_line_before_it_appends(tmp_path, capsys, name):
    path = tmp_path / "answers.jsonl"
    path.write_bytes(jsonl(ROWS) + TORN_ENDINGS[name])
    store.append_jsonl(path, [NEXT])
    assert path.read_bytes() == jsonl(ROWS + [NEXT])  # the torn piece is gone, nothing glued onto the new row
    assert store.read_jsonl(path) == ROWS + [NEXT]
    assert capsys.readouterr().err == ""  # repaired: no warning any more
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.jsonl"]


def test_the_writer_gives_a_whole_last_row_its_newline_before_it_appends(tmp_path, capsys):
    path = tmp_path / "answers.jsonl"
    path.write_bytes(jsonl(ROWS).rstrip(b"\n"))
    store.append_jsonl(path, [NEXT, NEXT])  # would otherwise be glued onto the last row, or cut it as torn
    assert path.read_bytes() == jsonl(ROWS + [NEXT, NEXT])
    assert store.read_jsonl(path) == ROWS + [NEXT, NEXT]
    assert capsys.readouterr().err == ""


def test_the_writer_appends_to_a_clean_file_and_creates_a_missing_one(tmp_path):
    path = tmp_path / "new" / "answers.jsonl"
    store.append_jsonl(path, ROWS[:1])
    store.append_jsonl(path, ROWS[1:])
    store.append_jsonl(path, [])
    assert path.read_bytes() == jsonl(ROWS)


# Damage no writer here leaves: a bad line with rows (or a newline) after it.
CORRUPT_MIDDLE = {
    "not_json": (b"this is not json\n", "not valid JSON"),
    "truncated_object": (b'{"prompt": "x", \n', "not valid JSON"),
    "not_utf8": (b'{"prompt": "caf\xe9"}\n', "not UTF-8"),
    "a_list_not_an_object": (b"[1, 2]\n", "not a JSON object"),
    "nul_bytes": (b"\x00\x00\x00\n", "not valid JSON"),
}


@pytest.mark.parametrize("name", sorted(CORRUPT_MIDDLE))
def test_a_corrupt_line_before_the_end_is_one_file_line_error_and_the_file_is_left_alone(tmp_path, capsys, name):
    bad, words = CORRUPT_MIDDLE[name]
    path = tmp_path / "generations.jsonl"
    data = jsonl(ROWS[:1]) + b"\n" + bad + jsonl(ROWS[1:])  # a blank line 2 still counts: the bad one is line 3
    path.write_bytes(data)
    with pytest.raises(SystemExit) as exit_info:
        store.read_jsonl(path)
    line = error_line(capsys, exit_info)
    assert line.startswith(f"error: {path}:3: ") and words in line
    assert path.read_bytes() == data


def test_a_bad_last_line_followed_by_a_newline_is_an_error_not_a_torn_append(tmp_path, capsys):
    # An append writes a row and its newline together, so a bad line that has its newline is damage, not a tear.
    path = tmp_path / "answers.jsonl"
    data = jsonl(ROWS) + b'{"prompt": "Volleyball", "ans\n'
    path.write_bytes(data)
    with pytest.raises(SystemExit) as exit_info:
        store.read_jsonl(path)
    assert error_line(capsys, exit_info).startswith(f"error: {path}:4: not valid JSON")
    assert path.read_bytes() == data


def test_a_row_without_a_required_field_is_one_file_line_error(tmp_path, capsys):
    path = tmp_path / "generations.jsonl"
    data = jsonl([ROWS[0], {"prompt": "no answer"}, ROWS[1], {}, ROWS[2]])
    path.write_bytes(data)
    with pytest.raises(SystemExit) as exit_info:
        store.read_jsonl(path, required=("prompt", "answer"))
    assert error_line(capsys, exit_info).startswith(f"error: {path}:2: the row has no answer")
    with pytest.raises(SystemExit) as exit_info:  # the `{}` row, past the one that has a prompt
        store.read_jsonl(path, required=("prompt",))
    assert error_line(capsys, exit_info).startswith(f"error: {path}:4: the row has no prompt")
    assert len(store.read_jsonl(path)) == 5  # nothing required: every row is read
    assert path.read_bytes() == data


def test_blank_lines_are_harmless_and_a_missing_file_is_empty(tmp_path, capsys):
    path = tmp_path / "answers.jsonl"
    path.write_bytes(b"\n" + jsonl(ROWS[:1]) + b"\n  \n" + jsonl(ROWS[1:]))
    assert store.read_jsonl(path, required=("prompt", "answer")) == ROWS
    assert store.read_jsonl(tmp_path / "missing.jsonl") == []
    assert not (tmp_path / "missing.jsonl").exists()
    assert capsys.readouterr().err == ""


def test_a_folder_in_place_of_the_file_is_one_line(tmp_path, capsys):
    (tmp_path / "answers.jsonl").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        store.read_jsonl(tmp_path / "answers.jsonl")
    assert "answers.jsonl cannot be read" in error_line(capsys, exit_info)

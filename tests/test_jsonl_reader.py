"""common.read_jsonl on what writers leave behind: a kill during an append tears the last line, which is dropped
with one warning and the file rewritten so appends go on cleanly; damage anywhere else is one FILE:LINE error."""
import json

import pytest

import common

ROWS = [{"prompt": "I overslept.", "answer": "😴⏰"}, {"prompt": "Tokyo!", "answer": "🇯🇵✈️"},
        {"prompt": "Happy birthday", "answer": "🎂🎉"}]


def jsonl(rows):
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")


TORN_ENDINGS = {
    "cut_mid_object": b'{"prompt": "Volleyball", "ans',
    "cut_mid_emoji": '{"prompt": "Soup", "answer": "🌶'.encode("utf-8")[:-2],
    "cut_mid_object_with_newline": b'{"prompt": "Volleyball", "ans\n',
    "zero_filled_tail": b"\x00" * 40,
}


@pytest.mark.parametrize("name", sorted(TORN_ENDINGS))
def test_a_torn_last_line_is_dropped_with_one_warning_and_the_file_rewritten(tmp_path, capsys, name):
    path = tmp_path / "answers.jsonl"
    path.write_bytes(jsonl(ROWS) + TORN_ENDINGS[name])
    assert common.read_jsonl(path) == ROWS
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(warnings) == 1 and f"{path}:4: " in warnings[0] and "torn" in warnings[0]
    assert path.read_bytes() == jsonl(ROWS)  # rewritten: the next append starts on a clean line
    common.append_jsonl(path, [{"prompt": "next"}])
    assert common.read_jsonl(path) == ROWS + [{"prompt": "next"}]
    assert capsys.readouterr().err == ""  # the warning is not repeated
    assert not list(tmp_path.glob("*.tmp"))


def test_a_last_row_without_its_newline_is_kept_and_the_newline_added(tmp_path, capsys):
    path = tmp_path / "answers.jsonl"
    path.write_bytes(jsonl(ROWS).rstrip(b"\n"))
    assert common.read_jsonl(path) == ROWS
    assert capsys.readouterr().err == ""
    common.append_jsonl(path, [{"prompt": "next"}])  # would otherwise be glued onto the last row
    assert common.read_jsonl(path) == ROWS + [{"prompt": "next"}]


CORRUPT_MIDDLE = {
    "not_json": (b"this is not json\n", "not valid JSON"),
    "truncated_object": (b'{"prompt": "x", \n', "not valid JSON"),
    "not_utf8": (b'{"prompt": "caf\xe9"}\n', "not UTF-8"),
    "a_list_not_an_object": (b"[1, 2]\n", "not a JSON object"),
    "nul_bytes": (b"\x00\x00\x00\n", "not valid JSON"),
}


@pytest.mark.parametrize("name", sorted(CORRUPT_MIDDLE))
def test_a_corrupt_line_before_the_end_is_one_file_line_error_and_the_file_is_left_alone(tmp_path, name):
    bad, words = CORRUPT_MIDDLE[name]
    path = tmp_path / "generations.jsonl"
    data = jsonl(ROWS[:1]) + b"\n" + bad + jsonl(ROWS[1:])  # a blank line 2 still counts: the bad one is line 3
    path.write_bytes(data)
    with pytest.raises(SystemExit) as exit_info:
        common.read_jsonl(path)
    message = str(exit_info.value.code)
    assert message.startswith(f"error: {path}:3: {words}") and "\n" not in message
    assert path.read_bytes() == data


def test_blank_lines_are_harmless_and_a_missing_file_is_empty(tmp_path, capsys):
    path = tmp_path / "answers.jsonl"
    path.write_bytes(b"\n" + jsonl(ROWS[:1]) + b"\n  \n" + jsonl(ROWS[1:]))
    assert common.read_jsonl(path) == ROWS
    assert common.read_jsonl(tmp_path / "missing.jsonl") == []
    assert capsys.readouterr().err == ""


def test_a_folder_in_place_of_the_file_is_one_line(tmp_path):
    (tmp_path / "answers.jsonl").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        common.read_jsonl(tmp_path / "answers.jsonl")
    assert "answers.jsonl cannot be read" in str(exit_info.value.code)

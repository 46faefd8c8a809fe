"""01_make_dataset.py against raw files as people really produce them. Malformed ones (other encodings, binary data,
control characters, oversized fields, broken quoting, a folder) end in one or a few `FILE:LINE: problem` lines, no
traceback and nothing written; unusual but valid ones (ZWJ sequences, flags, keycaps, skin tones, quoted newlines,
CRLF, a byte-order mark) are accepted with their rows intact. Every file is written byte by byte here."""
import json
import re

import pytest

from lib import prompts, rawdata, settings, store
from conftest import run_script

MAX_EMOJIS = 5  # 01_make_dataset.py's default (the run below uses it; exactly_max_emojis is at it)
SMALL = ["--min-test", "10"]  # the default of 40 test pairs needs more rows than a test wants to write
# Enough ordinary pairs for the three splits, plus the KNOWN prompts 01 insists on.
BASE = [(f"Ordinary sentence {i} about the weather.", "☀️🌧️") for i in range(40)] + [(s, "⭐") for s in prompts.KNOWN]


def csv_bytes(rows, newline="\n", header="text,emoji"):
    """The rows as CSV text (fields quoted where needed, quotes doubled) in UTF-8, with `newline` between records."""
    def field(text):
        return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\r\n') else text
    lines = [header] + [f"{field(text)},{field(target)}" for text, target in rows]
    return (newline.join(lines) + newline).encode("utf-8")


def head(n=3):
    """The first lines of a file: header and n ordinary rows (so a bad row lands on line n + 2)."""
    return csv_bytes(BASE[:n])


def problem_lines(stderr):
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("error: ")]


# ---------------------------------------------------------------- malformed files
# name -> (bytes, the line the problem must be reported at, a word the message must hold)
MALFORMED = {
    "latin1": (head() + "Café au lait,☕\n".encode("latin-1", errors="replace"), 5, "CSV UTF-8"),
    "cp1252_smart_quotes": (head() + "\u201cQuoted\u201d words,!\n".encode("cp1252"), 5, "Windows-1252"),
    "invalid_utf8_continuation": (head() + b"Bad \x80 byte,\xf0\x9f\x98\x80\n", 5, "not UTF-8"),
    "truncated_emoji_at_end": (head() + b"Cut off emoji,\xf0\x9f\x98", 5, "cut off"),
    "overlong_utf8": (head() + b"Overlong \xc0\xaf slash,\xf0\x9f\x98\x80\n", 5, "not UTF-8"),
    "utf16_le_bom": ("\ufefftext,emoji\nHello,👋\n".encode("utf-16-le"), 1, "UTF-16"),
    "utf16_be_bom": (b"\xfe\xff" + "text,emoji\nHello,👋\n".encode("utf-16-be"), 1, "UTF-16"),
    "utf16_le_no_bom": ("text,emoji\nHello,👋\n".encode("utf-16-le"), 1, "UTF-16"),
    "utf32_bom": ("text,emoji\nHello,👋\n".encode("utf-32"), 1, "UTF-32"),
    "png_image": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10" + bytes(range(256)), 3, "NUL"),
    "xlsx_workbook": (b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00" + b"[Content_Types].xml" + bytes(64), 1,
                      "workbook"),
    "xls_workbook": (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(64), 1, "workbook"),
    "nul_in_sentence": (head() + b"Null\x00byte here,\xf0\x9f\x98\x80\n", 5, "NUL"),
    "bell_in_sentence": (head() + "Ring \x07 ring,🔔\n".encode(), 5, "U+0007"),
    "escape_in_target": (head() + "Colours,\x1b[31m🔴\n".encode(), 5, "U+001B"),
    "next_line_char": (head() + "Next\x85line,➡️\n".encode(), 5, "U+0085"),
    "replacement_char": (head() + "Lost \ufffd character,❓\n".encode(), 5, "U+FFFD"),
    "stray_bom_mid_file": (head() + "\ufefftext,emoji\n".encode() + csv_bytes(BASE[3:5])[11:], 5, "byte-order mark"),
    "field_over_csv_limit": (head() + b'"' + b"a" * 140_000 + b'",\xf0\x9f\x98\x80\n', 5, "characters"),
    "sentence_too_long": (head() + ("word " * 300 + ",📚\n").encode(), 5, "at most"),
    "unclosed_quote": (head() + b'"This quote never closes,\xf0\x9f\x98\x80\nMore text,\xf0\x9f\x8d\x95\n', 5,
                       "quote"),
    "text_after_closing_quote": (head() + b'"Quoted" tail,\xf0\x9f\x98\x80\n', 5, "closing quote"),
    "bad_target_in_multiline_row": (head() + b'"First line\nsecond line\nthird line",pizza\n', 5, "not purely emoji"),
    "three_columns_multiline": (head() + b'"Spans\ntwo lines",\xf0\x9f\x98\x80,\xf0\x9f\x8e\x89\n', 5, "2 columns"),
    "empty_file": (b"", 1, "empty"),
    "only_bom": (b"\xef\xbb\xbf", 1, "empty"),
    "wrong_header": (b"sentence,emoji\nHello,\xf0\x9f\x91\x8b\n", 1, "header"),
    "semicolon_separated": ("text;emoji\nHello;👋\n".encode(), 1, "';'"),
    "words_as_target": (head() + b"Pizza night,pizza\n", 5, "not purely emoji"),
    "too_many_emojis": (head() + "Party,🎉🎊🥳🎈🎁🍰\n".encode(), 5, "at most"),
    "empty_target": (head() + b"No emoji here,\n", 5, "empty emoji target"),
    "conflicting_duplicate": (head() + f"{BASE[1][0]},🍕\n".encode(), 5, "same text as line 3"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_malformed_raw_file_is_one_clear_error_at_its_line_and_nothing_is_written(tmp_path, name):
    data, line, word = MALFORMED[name]
    raw = tmp_path / f"{name}.csv"
    raw.write_bytes(data)
    out = tmp_path / "out"
    result = run_script("01_make_dataset.py", "--raw-csv", raw, *SMALL, out=out, timeout=120)
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    problems = problem_lines(result.stderr)
    assert 1 <= len(problems) <= 3, result.stderr
    assert problems[0].startswith(f"{raw}:{line}: "), result.stderr
    assert word in problems[0], problems[0]
    assert not out.exists() or not any(out.iterdir())


def test_a_folder_given_as_the_raw_file_is_refused_in_one_line(tmp_path):
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    out = tmp_path / "out"
    result = run_script("01_make_dataset.py", "--raw-csv", folder, out=out, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        f"error: {folder} is a folder, not a file - give the path of the file itself."]
    assert not out.exists()


# ---------------------------------------------------------------- valid unusual files
# name -> (bytes of the whole file, the unusual (sentence, emojis) pairs that must reach the dataset as written)
def with_base(extra, newline="\n", bom=False):
    return (b"\xef\xbb\xbf" if bom else b"") + csv_bytes(BASE + extra, newline=newline), extra


VALID = {
    "zwj_family": with_base([("The whole family came over.", "👨‍👩‍👧‍👦")]),
    "zwj_professions": with_base([("The doctor and the coder met.", "👩‍⚕️🧑‍💻")]),
    "zwj_with_skin_tone": with_base([("She flew to space.", "👩🏽‍🚀🚀")]),
    "flags": with_base([("From Japan to France.", "🇯🇵✈️🇫🇷")]),
    "subdivision_flag": with_base([("Bagpipes in the highlands.", "🏴󠁧󠁢󠁳󠁣󠁴󠁿🎶")]),
    "keycaps": with_base([("Count to three.", "1️⃣2️⃣3️⃣"), ("Trending hashtag.", "#️⃣🔥")]),
    "skin_tones": with_base([("High five!", "🙌🏽"), ("Waving goodbye.", "👋🏿👍🏻")]),
    "exactly_max_emojis": with_base([("Everything at once.", "🎉🎊🥳🎈🎁")]),
    "quoted_newline": with_base([("First line of the note\nand its second line.", "📝"), ("After it.", "👇")]),
    "quotes_and_commas": with_base([('She said "hi, there", then left.', "👋🚪")]),
    "crlf": with_base([("Windows line ends.", "🪟")], newline="\r\n"),
    "bom": with_base([("Saved as CSV UTF-8.", "💾")], bom=True),
    "bom_crlf_quoted_newline": with_base([("Excel on Windows,\r\nwith a line break.", "📊")], newline="\r\n",
                                         bom=True),
    "old_mac_cr": with_base([("Classic Mac line ends.", "🍎")], newline="\r"),
    "non_latin_scripts": with_base([("東京で寿司を食べた。", "🍣🇯🇵"), ("مرحبا بالعالم", "👋🌍"),
                                    ("Cafe\u0301 with combining accent.", "☕")]),
    "variation_selectors": with_base([("I love you.", "❤️"), ("Snowy day.", "❄")]),
    "spaced_emojis": with_base([("Pizza and beer.", "🍕 🍺")]),
    "tab_in_sentence": with_base([("Column\tseparated thoughts.", "🤔")]),
    "emoji_inside_sentence": with_base([("I love 🍕 so much.", "🍕❤️")]),
}


def with_blank_lines_and_no_final_newline():
    extra = [("Blank lines around me.", "⬜")]
    data = csv_bytes(BASE[:10]) + b"\n\n" + csv_bytes(BASE[10:] + extra)[len(b"text,emoji\n"):].rstrip(b"\n")
    return data, extra


VALID["blank_lines_no_final_newline"] = with_blank_lines_and_no_final_newline()


@pytest.mark.parametrize("name", sorted(VALID))
def test_an_unusual_but_valid_raw_file_is_accepted_with_its_rows_intact(name):
    # In-process: 01 hands the file's bytes to these two functions; the run below covers 01 itself.
    data, extra = VALID[name]
    rows, problems = rawdata.read_pairs(data, f"{name}.csv", MAX_EMOJIS)
    assert problems == [] and rawdata.unseen_problems(rows, f"{name}.csv") == [], problems
    assert_rows_intact({(row["sentence"], row["emojis"]) for row in rows}, extra)


def test_every_unusual_row_reaches_the_saved_dataset_intact(tmp_path):
    # One 01 run on all the unusual rows above, saved as Excel on Windows does (BOM, CRLF).
    extra = [pair for name in sorted(VALID) for pair in VALID[name][1]]
    raw = tmp_path / "all_unusual.csv"
    raw.write_bytes(with_base(extra, newline="\r\n", bom=True)[0])
    out = tmp_path / "out"
    result = run_script("01_make_dataset.py", "--raw-csv", raw, *SMALL, out=out, timeout=300)
    assert result.returncode == 0, result.stderr
    pairs = set()
    for split in ("train", "validation", "test"):
        for line in (out / "dataset" / f"{split}.jsonl").read_text("utf-8").splitlines():
            row = json.loads(line)
            pairs.add((row["sentence"], row["emojis"]))
    assert_rows_intact(pairs, extra)


def assert_rows_intact(pairs, extra):
    for sentence, emojis in extra:
        assert (sentence.strip(), emojis) in pairs, (sentence, emojis)
    assert len(pairs) == len(BASE) + len(extra)  # no row lost, none made up (a BOM or \r left in a field)
    assert not any("\ufeff" in s or "\ufeff" in e or e != e.strip() for s, e in pairs)


def test_a_bad_row_spanning_lines_is_reported_at_its_first_line_and_later_lines_keep_their_numbers(tmp_path):
    raw = tmp_path / "raw.csv"
    raw.write_bytes(head(2) + b'"Line one\nline two\nline three",words\nFine row.,\xf0\x9f\x98\x80\n'
                    b'"Another\nmultiline",more words\n')
    result = run_script("01_make_dataset.py", "--raw-csv", raw, *SMALL, out=tmp_path / "out", timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert [re.search(r"raw\.csv:(\d+):", line).group(1) for line in problem_lines(result.stderr)] == ["4", "8"]


def test_a_relative_raw_csv_is_taken_from_the_current_directory(tmp_path):
    import subprocess
    import sys

    # A bad last row shows that this very file was read, without building a dataset.
    (tmp_path / "mine.csv").write_bytes(csv_bytes(BASE + [("My own file.", "words")]))
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(store.ROOT / "01_make_dataset.py"), "--raw-csv", "mine.csv", *SMALL],
                            cwd=tmp_path, env={**__import__("os").environ, "EMOJI_OUT": str(out)},
                            capture_output=True, text=True, encoding="utf-8", timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert [re.search(r"mine\.csv:(\d+): .*not purely emoji", line).group(1) for line in problem_lines(result.stderr)] \
        == [str(len(BASE) + 2)], result.stderr
    help_text = subprocess.run([sys.executable, str(store.ROOT / "01_make_dataset.py"), "--help"], cwd=tmp_path,
                               capture_output=True, text=True, timeout=120).stdout
    assert "relative path is taken from the current" in " ".join(help_text.split())

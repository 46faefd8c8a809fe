"""The prompt sets in data/prompt_sets.toml (read by lib/prompts.py): five each, no prompt in two sets, KNOWN in the
train split, NOVEL, EDGE and GENERAL nowhere in the shipped data, every GENERAL question with accepted keyword variants,
and a broken file is one line naming it."""
import csv
import shutil
import subprocess
import sys

import pytest

from lib import prompts
from conftest import ROOT

SETS = {"KNOWN": prompts.KNOWN, "NOVEL": prompts.NOVEL, "EDGE": prompts.EDGE, "GENERAL": list(prompts.GENERAL)}


def test_each_set_has_five_distinct_prompts_and_no_prompt_is_in_two_sets():
    for name, prompts in SETS.items():
        assert len(prompts) == len(set(prompts)) == 5, name
    everything = [p for prompts in SETS.values() for p in prompts]
    assert len(everything) == len(set(everything))


def test_known_prompts_land_in_the_train_split_of_the_shipped_data(shipped_dataset):
    # Another seed: test_make_dataset.py's rebuild test.
    from datasets import load_from_disk

    data = load_from_disk(str(shipped_dataset / "dataset"))
    assert set(prompts.KNOWN) <= set(data["train"]["sentence"])
    assert not set(prompts.KNOWN) & (set(data["validation"]["sentence"]) | set(data["test"]["sentence"]))


def test_novel_edge_and_general_prompts_are_not_in_the_data():
    with open(ROOT / "data" / "emoji_pairs.csv", encoding="utf-8", newline="") as f:
        sentences = {" ".join(row["text"].lower().split()) for row in csv.DictReader(f)}
    for name in ("NOVEL", "EDGE", "GENERAL"):
        assert not {" ".join(p.lower().split()) for p in SETS[name]} & sentences, name


def test_general_questions_accept_variants_of_the_expected_fact():
    assert "Berlin" in prompts.GENERAL["What is the capital of Germany?"]
    assert {"eight", "8"} <= set(prompts.GENERAL["How many legs does a spider have?"])
    assert all(keywords and all(k.strip() for k in keywords) for keywords in prompts.GENERAL.values())


@pytest.mark.parametrize("text, says", [
    ('known = ["a"]\nnovel: ["b"]', "prompt_sets.toml: Expected '=' after a key in a key/value pair (at line 2"),
    ('known = "I overslept."\nnovel = []\nedge = []\n[general]', "every prompt and keyword must be text, in lists"),
    ('known = [1]\nnovel = []\nedge = []\n[general]', "every prompt and keyword must be text, in lists"),
    ('known = []\nnovel = []\nedge = []', "no 'general' entry"),
    ('known = []\nnovel = []\nedge = []\ngeneral = ["Why?"]', "prompt_sets.toml: 'list' object has no attribute"),
])
def test_a_broken_prompt_sets_file_is_one_line_naming_it(tmp_path, text, says):
    # A copy of lib/ beside its own data/: every script imports lib.prompts, so each would stop with this line.
    shutil.copytree(ROOT / "lib", tmp_path / "lib", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "prompt_sets.toml").write_text(text + "\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-c", "import lib.prompts"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.startswith("error: data/prompt_sets.toml: ")
    assert says in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr

"""The prompt sets at the top of 03_generate.py: five each, KNOWN in the train split, NOVEL nowhere in the data,
GENERAL questions with a keyword, and 03 refusing to run when an edited set breaks these rules."""
import ast
import csv
import json

import pytest

from conftest import ROOT, run_script


def constants(script):
    tree = ast.parse((ROOT / script).read_text("utf-8"))
    return {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id.isupper() and isinstance(node.value, (ast.List, ast.Dict, ast.Constant))}


SETS = constants("03_generate.py")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    assert run_script("01_make_dataset.py", out=out).returncode == 0
    split = {name: [json.loads(line) for line in (out / "dataset" / f"{name}.jsonl").read_text("utf-8").splitlines()]
             for name in ("train", "validation")}
    return out, split


def test_each_set_has_five_distinct_prompts_and_no_prompt_is_in_two_sets():
    names = ("KNOWN", "NOVEL", "EDGE", "GENERAL")
    for name in names:
        assert len(SETS[name]) == len(set(SETS[name])) == 5, name
    everything = [p for name in names for p in SETS[name]]
    assert len(everything) == len(set(everything))


def test_known_prompts_are_in_the_train_split(dataset):
    _, split = dataset
    train = {r["sentence"] for r in split["train"]}
    assert set(SETS["KNOWN"]) <= train


def test_novel_edge_and_general_prompts_are_not_in_the_data():
    with open(ROOT / "data" / "emoji_pairs.csv", encoding="utf-8", newline="") as f:
        sentences = {row["text"].lower() for row in csv.DictReader(f)}
    for name in ("NOVEL", "EDGE", "GENERAL"):
        assert not {p.lower() for p in SETS[name]} & sentences, name


def test_general_prompts_carry_a_keyword_and_are_questions_not_emoji_requests():
    assert "What is the capital of Germany?" in SETS["GENERAL"]
    assert SETS["GENERAL"]["What is the capital of Germany?"] == "Berlin"
    assert all(keyword.strip() for keyword in SETS["GENERAL"].values())


def test_generate_refuses_a_known_prompt_outside_the_train_split(dataset, tmp_path):
    out, split = dataset
    # 03 checks its inputs before loading any model: fake adapters are enough to reach the prompt check.
    for epochs in (1, 5):
        folder = out / "adapters" / f"epochs{epochs}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "run.json").write_text(json.dumps({"model": "embedded", "finished_at": "x"}))
    script = (ROOT / "03_generate.py").read_text("utf-8")
    held_out = split["validation"][0]["sentence"]
    edited = tmp_path / "03_generate.py"
    edited.write_text(script.replace(json.dumps(SETS["KNOWN"][0]), json.dumps(held_out, ensure_ascii=False), 1), encoding="utf-8")
    import os
    import subprocess
    import sys

    result = subprocess.run([sys.executable, str(edited)], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "EMOJI_OUT": str(out), "PYTHONPATH": str(ROOT)})
    assert result.returncode != 0
    assert f"KNOWN prompt {held_out!r} is not in the train split" in result.stderr

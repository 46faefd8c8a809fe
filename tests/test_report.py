"""05_report.py on hand-made inputs whose metrics are worked out by hand: the tables, the summary numbers, the loss
plot, and a discussion draft whose numbers are the tables' numbers."""
import json
import re

import pytest

from conftest import report_section as section, run_script, table_rows as rows_of

KNOWN = [("I love pizza.", "🍕😍"), ("Rainy day.", "🌧️☔"), ("Go team!", "🏆🎉"), ("Sleepy.", "😴"),
         ("Beach time.", "🏖️☀️")]
NOVEL = ["New puppy!", "Flight cancelled.", "Baking cookies.", "Power cut.", "Marathon done!"]
EDGE = ["Happy and sad.", "Love rain, hate wet.", "Best worst day.", "Describe nothing.", "Excited to be bored."]
GENERAL = {"What is the capital of Germany?": "Berlin", "Explain gravity.": "mass", "Haiku about autumn.": "leaves",
           "Spider legs?": "eight", "Thank you in French?": "merci"}
VALIDATION = [("Dancing tonight.", "💃🕺🎶"), ("Coffee time.", "☕")]


def answers(model):
    """The answers each model gives, chosen so every metric has a known value."""
    if model == "base":
        return {"known": lambda p, r: "Sure | here you go", "novel": lambda p: "What a nice sentence!",
                "edge": lambda p: "Hmm.", "general": lambda p, k: f"The answer is {k}, of course.",
                "validation": lambda p, r: "I cannot do that."}
    if model == "ft1":
        return {"known": lambda p, r: r, "novel": lambda p: "🐶🎉", "edge": lambda p: "😊😢",
                "general": lambda p, k: f"The answer is {k} 🙂", "validation": lambda p, r: r}  # validation: all exact
    return {"known": lambda p, r: r, "novel": lambda p: "🎉", "edge": lambda p: "🎉",
            "general": lambda p, k: "🎉🎉", "validation": lambda p, r: r[0] + "🎉"}  # 1 of 2 or 1 of 3 right


def write_inputs(out):
    rows = []
    for model in ("base", "ft1", "ft5"):
        a, mine = answers(model), []
        for prompt, ref in KNOWN:
            mine.append(dict(set="known", prompt=prompt, reference=ref, sample=None, output=a["known"](prompt, ref)))
            for k, sample in enumerate([a["known"](prompt, ref), "🤷"]):
                mine.append(dict(set="known", prompt=prompt, reference=ref, sample=k, output=sample))
        mine += [dict(set="novel", prompt=p, reference=None, sample=None, output=a["novel"](p)) for p in NOVEL]
        mine += [dict(set="edge", prompt=p, reference=None, sample=None, output=a["edge"](p)) for p in EDGE]
        mine += [dict(set="general", prompt=p, reference=None, keyword=k, sample=None, output=a["general"](p, k))
                 for p, k in GENERAL.items()]
        mine += [dict(set="validation", prompt=p, reference=r, sample=None, output=a["validation"](p, r))
                 for p, r in VALIDATION]
        rows += [{**row, "model": model} for row in mine]
    for row in rows:
        row.setdefault("keyword", None)
        row.update(decoding={}, version="v")
    out.mkdir(parents=True, exist_ok=True)
    (out / "generations.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", "utf-8")
    curves = {1: [2.0, 1.2], 5: [2.0, 1.1, 0.9, 0.95, 1.05, 1.2]}
    for epochs, val in curves.items():
        folder = out / "adapters" / f"epochs{epochs}"
        folder.mkdir(parents=True)
        losses = {"train": [{"step": s + 1, "epoch": (s + 1) / 4, "loss": 2.0 - 0.05 * s} for s in range(4 * epochs)],
                  "validation": [{"epoch": float(e), "loss": v} for e, v in enumerate(val)]}
        (folder / "losses.json").write_text(json.dumps(losses))
        settings = dict(BATCH_SIZE=8, GRAD_ACCUM=1, LEARNING_RATE=1e-3, LR_SCHEDULER="linear", WEIGHT_DECAY=0.0,
                        LORA_R=16, LORA_ALPHA=32, LORA_DROPOUT=0.05, SEED=42)
        (folder / "run.json").write_text(json.dumps(dict(
            model="embedded", device="cpu (2 threads)", dtype="float32", epochs=epochs, epochs_trained=float(epochs),
            steps=4 * epochs,
            train_seconds=10.0 * epochs, load_seconds=1.0, peak_memory_gib=1.5, train_size=300, validation_size=2,
            final_train_loss=1.0, validation_losses=val, settings=settings, finished_at="v")))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    write_inputs(out)
    result = run_script("05_report.py", out=out)
    assert result.returncode == 0, result.stderr
    return out, (out / "report.md").read_text("utf-8")


def test_generations_rows_are_assigned_to_each_model():
    # Guard on the fixture builder itself: 3 models x (15 known + 5 + 5 + 5 + 2) rows.
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        write_inputs(Path(tmp))
        rows = [json.loads(x) for x in (Path(tmp) / "generations.jsonl").read_text("utf-8").splitlines()]
    assert [sum(r["model"] == m for r in rows) for m in ("base", "ft1", "ft5")] == [32, 32, 32]


def test_summary_numbers_are_the_hand_computed_ones(report):
    _, text = report
    rows = {r[0]: r for r in rows_of(section(text, "Summary"))}
    # columns: model, val emoji-only, val F1, val exact, known F1, same-as-greedy, sample Jaccard, novel, edge,
    # leak, keyword, diversity
    assert rows["Base model"][1:4] == ["0%", "0.00", "0%"]
    assert rows["1-epoch fine-tune"][1:4] == ["100%", "1.00", "100%"]
    # ft5 on validation: 💃🎉 vs 💃🕺🎶 -> P 1/2, R 1/3, F1 0.4; ☕🎉 vs ☕ -> P 1/2, R 1, F1 2/3; mean 0.53
    assert rows["5-epoch fine-tune"][1:4] == ["100%", "0.53", "0%"]
    # samples: one identical to greedy, one 🤷 -> 50 %; Jaccard between r and 🤷 is 0
    assert rows["1-epoch fine-tune"][5:7] == ["50%", "0.00"]
    assert rows["1-epoch fine-tune"][9:11] == ["0%", "100%"]  # 1 emoji among 4 words: no leak
    assert rows["5-epoch fine-tune"][9:11] == ["100%", "0%"]
    assert rows["Base model"][9:11] == ["0%", "100%"]


def test_prompt_tables_have_five_rows_and_escape_pipes(report):
    _, text = report
    for heading in ("2.1 Known prompts", "2.2 Novel prompts", "2.3 Edge cases", "4.2 Emoji prompts",
                    "4.2 Non-emoji prompts"):
        assert len(rows_of(section(text, heading))) == 5, heading
    assert "Sure \\| here you go" in section(text, "2.1 Known prompts")


def test_loss_plot_is_written_and_linked(report):
    out, text = report
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![Training and validation loss](loss.png)" in text


def test_missing_chatgpt_answers_say_how_to_run_them(report):
    _, text = report
    task3 = section(text, "Task 3")
    assert "not run" in task3 and "04_chatgpt.py" in task3


def test_discussion_is_100_to_300_words_and_quotes_the_tables(report):
    _, text = report
    draft = section(text, "4.3 Discussion (draft)")
    body = draft.split("\n\n", 2)[2]
    stated = int(re.search(r"_(\d+) words", draft).group(1))
    assert stated == len(body.split()) and 100 <= stated <= 300
    # the 5-epoch curve bottoms out at 0.900 at epoch 2 and ends at 1.200 at epoch 5
    assert "fell to 0.900 at epoch 2 and then rose to 1.200 at epoch 5" in body
    assert "F1 0.53" in body and "F1 1.00" in body and "F1 0.00" in body
    assert "emoji-leak rate on non-emoji questions of 100% against 0%" in body
    assert "a memorisation gap (F1 1.00 on training prompts against 0.53 held out" in body
    assert "overfitting" in body

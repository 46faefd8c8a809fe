"""05_report.py on hand-made inputs whose metrics are worked out by hand: the tables and their 95% intervals, the
held-out table with the lookup baseline, the loss plot, cut answers, the ChatGPT states, the prompts as sent, and
discussion drafts that claim a difference only where the intervals allow it."""
import json
import os
import re
import resource
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, report_section as section, run_script

SYSTEM = "Reply with emojis only."
KNOWN = [("I love pizza.", "🍕😍"), ("Rainy day.", "🌧️☔"), ("Go team!", "🏆🎉"), ("Sleepy.", "😴"),
         ("Beach time.", "🏖️☀️")]
NOVEL = ["New puppy!", "Flight cancelled.", "Baking cookies.", "Power cut.", "Marathon done!"]
EDGE = ["Happy and sad.", "Love rain, hate wet.", "Best worst day.", "Describe nothing.", "Excited to be bored."]
GENERAL = {"What is the capital of Germany?": ["Berlin"], "Explain gravity.": ["mass", "attraction"],
           "Haiku about autumn.": ["leaves", "leaf"], "Spider legs?": ["eight", "8"], "Thank you in French?": ["merci"]}
# Every reference holds two different emojis, so the 5-epoch answer (first emoji + 🎉) scores F1 exactly 0.5.
TEST = [("Dancing tonight.", "💃🎶"), ("Coffee time.", "☕🥐"), ("Snow day!", "❄️⛄"), ("Lost my keys.", "🔑😩"),
        ("Movie night.", "🎬🍿"), ("New job!", "💼🤝"), ("Gym time.", "🏋️💪"), ("Rainbow!", "🌈😍")]
CUT_PROMPT = "Best worst day."  # the 5-epoch answer to it is cut mid-emoji, as Llama-2's byte tokens can leave it


def answers(model):
    """The answers each model gives, chosen so every metric has a known value."""
    if model == "base":
        return {"known": lambda p, r: "Sure | here you go", "novel": lambda p: "What a nice sentence!",
                "edge": lambda p: "Hmm.", "general": lambda p, k: f"The answer is {k[0]}, of course.",
                "test": lambda p, r: "I cannot do that."}
    if model == "ft1":
        return {"known": lambda p, r: r, "novel": lambda p: "🐶🎉", "edge": lambda p: "😊😢",
                "general": lambda p, k: f"The answer is {k[-1]} 🙂", "test": lambda p, r: r}  # test: all exact
    if model == "ft5":  # novel: 4 of 5 emoji-only; general: 2 emojis beside 1 word = a leak, keyword still there
        return {"known": lambda p, r: r, "novel": lambda p: "Party 🎉 time" if p == NOVEL[0] else "🎉",
                "edge": lambda p: {CUT_PROMPT: "👩\ufffd", EDGE[3]: ""}.get(p, "🎉" if p == EDGE[0] else "😊😢"),
                "general": lambda p, k: f"{k[0]} 🎉🎉", "test": lambda p, r: r[0] + "🎉"}
    return {"known": lambda p, r: r, "novel": lambda p: "🙂", "edge": lambda p: "🙂",  # lookup: test all wrong
            "test": lambda p, r: "🦕"}


def model_input(set_name, prompt):
    """A ChatML prompt as 03 records it: the emoji instruction for emoji requests, none for the general questions."""
    system = "" if set_name == "general" else f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
    return f"{system}<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"


def generation_rows(instructed_general=False):
    rows = []
    for model in ("base", "ft1", "ft5", "lookup"):
        a, mine = answers(model), []
        for prompt, ref in KNOWN:
            mine.append(dict(set="known", prompt=prompt, reference=ref, sample=None, output=a["known"](prompt, ref)))
            if model != "lookup":
                for k, sample in enumerate([a["known"](prompt, ref), "🤷"]):
                    mine.append(dict(set="known", prompt=prompt, reference=ref, sample=k, output=sample))
        mine += [dict(set="novel", prompt=p, sample=None, output=a["novel"](p)) for p in NOVEL]
        mine += [dict(set="edge", prompt=p, sample=None, output=a["edge"](p)) for p in EDGE]
        mine += [dict(set="test", prompt=p, reference=r, sample=None, output=a["test"](p, r)) for p, r in TEST]
        if model != "lookup":
            mine += [dict(set="general", prompt=p, keywords=k, sample=None, output=a["general"](p, k))
                     for p, k in GENERAL.items()]
        for row in mine:
            row.setdefault("reference", None)
            row.setdefault("keywords", None)
            text_in = model_input(row["set"], row["prompt"])
            if instructed_general and row["set"] == "general":
                text_in = model_input("known", row["prompt"])
            row.update(model=model, input=None if model == "lookup" else text_in,
                       truncated=model == "ft5" and row["prompt"] == CUT_PROMPT, decoding={}, fingerprint="f",
                       model_name="embedded")
        rows += mine
    return rows


def write_inputs(out, chatgpt=None, instructed_general=False, ratio=16.0):
    out.mkdir(parents=True, exist_ok=True)
    rows = generation_rows(instructed_general)
    (out / "generations.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", "utf-8")
    if chatgpt is not None:
        (out / "chatgpt.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chatgpt), "utf-8")
    curves = {1: [2.0, 1.2], 5: [2.0, 1.1, 0.9, 0.95, 1.05, 1.2]}
    for epochs, val in curves.items():
        folder = out / "adapters" / f"epochs{epochs}"
        folder.mkdir(parents=True)
        losses = {"train": [{"step": s + 1, "epoch": (s + 1) / 4, "loss": 2.0 - 0.05 * s} for s in range(4 * epochs)],
                  "validation": [{"epoch": float(e), "loss": v} for e, v in enumerate(val)]}
        (folder / "losses.json").write_text(json.dumps(losses))
        # as 02 records them: every "auto" resolved, and the learning rates LoRA+ gives the A and B matrices
        settings = dict(BATCH_SIZE=8, GRAD_ACCUM=1, LEARNING_RATE=1e-3, LORAPLUS_RATIO=ratio, LR_SCHEDULER="linear",
                        WEIGHT_DECAY=0.0, LORA_R=16, LORA_ALPHA=32, LORA_DROPOUT=0.05, SEED=42, MODEL="embedded",
                        TRAIN_PAIRS=300, epochs=epochs)
        (folder / "run.json").write_text(json.dumps(dict(
            model="embedded", device="cpu (2 threads)", dtype="float32", epochs=epochs, epochs_trained=float(epochs),
            steps=4 * epochs, train_seconds=10.0 * epochs, load_seconds=1.0, peak_memory_gib=1.5, train_size=300,
            train_available=400, augmented_size=0, validation_size=20, test_size=len(TEST),
            prompt_format="the model's own chat template", final_train_loss=1.0, validation_losses=val,
            learning_rates=[1e-3, 1e-3 * ratio] if ratio != 1 else [1e-3], settings=settings, finished_at="v")))
    return rows


# These reports are read for their wording and layout, not for the resampling: 100 resamples (the least allowed)
# instead of 2,000 save about a second a run. The module's `report` keeps the default.
FEW_RESAMPLES = ["--bootstrap-samples", "100"]


def make_report(out, *args, **inputs):
    write_inputs(out, **inputs)
    result = run_script("05_report.py", *args, out=out)
    assert result.returncode == 0, result.stderr
    text = (out / "report.md").read_text("utf-8")
    return text


def chatgpt_row(prompt, ok, label="smollm2-135m at 127.0.0.1:8080"):
    return {"prompt": prompt, "sent": prompt, "source": "api", "model": "gpt-4o-mini",
            "served_model": "smollm2-135m" if ok else None, "base_url_host": "127.0.0.1:8080",
            "label": label if ok else None, "status": "ok" if ok else "failed", "answer": "🐶🎉" if ok else None,
            "error": None if ok else "APIConnectionError: Connection refused", "time": "2025-01-01T00:00:00+00:00",
            "fingerprint": "f", "emoji_only": ok, "has_words": False}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return out, make_report(out)


@pytest.fixture(scope="module")
def variant_report(tmp_path_factory):
    """A second report, its inputs changed from `report`'s in three ways that show in separate sections: the general
    questions were sent with the emoji instruction (4.2), every ChatGPT request failed (Task 3), plain LoRA (run
    summary). One 05 run instead of three."""
    out = tmp_path_factory.mktemp("variant_report")
    return make_report(out, *FEW_RESAMPLES, chatgpt=[chatgpt_row(p, ok=False) for p in NOVEL], instructed_general=True,
                       ratio=1)


def tables(text):
    """Every Markdown table in text as (header cells, data rows); pipes escaped as \\| stay inside a cell."""
    found, lines = [], text.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith("|") and re.fullmatch(r"\|[-:| ]+\|", lines[i + 1]):
            body = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                body.append([c.strip() for c in re.split(r"(?<!\\)\|", row.strip())[1:-1]])
            found.append(([c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]], body))
    return found


def by_model(text, heading=None, index=0):
    """The index-th table of a section (of all of text without a heading) as {first cell: row}."""
    return {row[0]: row for row in tables(section(text, heading) if heading else text)[index][1]}


def test_fixture_assigns_rows_to_each_model():
    # Guard on the fixture builder: base/ft: 15 known + 5 + 5 + 8 test + 5 general; lookup: 5 + 5 + 5 + 8, no general.
    rows = generation_rows()
    assert [sum(r["model"] == m for r in rows) for m in ("base", "ft1", "ft5", "lookup")] == [38, 38, 38, 23]
    assert all(SYSTEM not in r["input"] for r in rows if r["set"] == "general")


def test_rates_carry_wilson_intervals_and_means_bootstrap_intervals(report):
    _, text = report
    emoji = by_model(text, "Summary")
    # columns: model, test F1, test emoji-only, known F1, novel emoji-only, edge emoji-only, distinct / total
    # ft5 on the novel prompts: 4 of 5 emoji-only. Wilson 95% for 4/5 is (0.376, 0.964).
    assert emoji["5-epoch fine-tune"][4] == "80% [38–96]"
    # 5 of 5 and 0 of 5: Wilson (0.566, 1) and (0, 0.434)
    assert emoji["1-epoch fine-tune"][4] == "100% [57–100]" and emoji["Base model"][4] == "0% [0–43]"
    # every test answer of ft1 is exact and every ft5 answer has F1 0.5: a bootstrap of equal values has no width
    assert emoji["1-epoch fine-tune"][1] == "1.00 [1.00–1.00]" and emoji["5-epoch fine-tune"][1] == "0.50 [0.50–0.50]"
    # known F1 of the base model: no emojis at all
    assert emoji["Base model"][3] == "0.00 [0.00–0.00]"
    other = by_model(text, "Summary", 1)
    # columns: model, leak, keyword, samples = greedy, sample Jaccard
    assert other["5-epoch fine-tune"][1:3] == ["100% [57–100]", "100% [57–100]"]
    assert other["1-epoch fine-tune"][1:3] == ["0% [0–43]", "100% [57–100]"]  # "8" counts as "eight"
    # samples: one identical to greedy, one 🤷 -> 50 %; the Jaccard of r and 🤷 is 0
    assert other["1-epoch fine-tune"][3:5] == ["0.50 [0.50–0.50]", "0.00 [0.00–0.00]"]


def test_held_out_table_has_the_lookup_baseline_beside_base_and_fine_tunes(report):
    _, text = report
    held = by_model(text, "Held-out test split")
    assert list(held) == ["Base model", "1-epoch fine-tune", "5-epoch fine-tune", "Lookup baseline"]
    # columns: model, emoji-only, mean F1, mean soft F1, exact, n, cut
    assert held["Lookup baseline"][1:] == ["100% [68–100]", "0.00 [0.00–0.00]", "0.00 [0.00–0.00]", "0% [0–32]",
                                           "8", "0"]
    assert held["1-epoch fine-tune"][2:6] == ["1.00 [1.00–1.00]", "1.00 [1.00–1.00]", "100% [68–100]", "8"]
    assert held["Base model"][1] == "0% [0–32]"
    assert f"The {len(TEST)} test pairs" in section(text, "Held-out test split")


def test_no_table_is_wider_than_seven_columns(report):
    _, text = report
    found = tables(text)
    assert len(found) > 15
    assert max(len(header) for header, _ in found) <= 7
    assert all(len(row) == len(header) for header, body in found for row in body)


def test_prompt_tables_have_five_rows_and_escape_pipes(report):
    _, text = report
    for heading in ("2.1 Known prompts", "2.2 Novel prompts", "2.3 Edge cases", "4.2 Non-emoji prompts"):
        answers_table, detail = tables(section(text, heading))[:2]
        assert len(answers_table[1]) == 5 and len(detail[1]) == 5, heading
    assert "Sure \\| here you go" in section(text, "2.1 Known prompts")
    known = by_model(text, "2.1 Known prompts", 1)
    assert known["I love pizza."][1:] == ["❌ 0e 4w · F1 0.00", "✅ 2e · F1 1.00", "✅ 2e · F1 1.00", "✅ 2e · F1 1.00"]


def test_a_cut_answer_is_marked_and_no_replacement_character_reaches_the_report(report):
    _, text = report
    assert "\ufffd" not in text
    edge = section(text, "2.3 Edge cases")
    answers_table, detail = (by_model(edge, index=i) for i in (0, 1))
    assert answers_table[CUT_PROMPT][3] == "👩"
    assert detail[CUT_PROMPT][3] == "✅ 1e · ✂️ cut" and "✂️ cut" not in detail[CUT_PROMPT][2]
    assert "1 answer(s) here hit the token budget" in edge
    assert answers_table[EDGE[3]][3] == "(empty)"


def test_edge_draft_sorts_answers_by_the_stated_rule(report):
    _, text = report
    draft = section(text, "2.3 Edge cases").split("### Task 2.3 notes (draft", 1)[1]
    assert "two or more different emojis" in draft and "single distinct emoji" in draft
    lines = {line.split("**")[1]: line for line in draft.splitlines() if line.startswith("- **")}
    ft5 = lines["5-epoch fine-tune"]
    both, rest = ft5.split("a single distinct emoji", 1)
    assert f'"{EDGE[1]}"' in both and f'"{EDGE[4]}"' in both  # 😊😢
    one, failed = rest.split("failed:", 1)
    assert f'"{EDGE[0]}"' in one  # 🎉 alone
    assert f'"{CUT_PROMPT}" (cut)' in failed and f'"{EDGE[3]}" (empty)' in failed
    assert all(f'"{p}" (words)' in lines["Base model"] for p in EDGE)
    assert "failed" not in lines["1-epoch fine-tune"]


def test_general_section_checks_the_inputs_and_keeps_within_seven_columns(report):
    _, text = report
    general = section(text, "4.2 Non-emoji prompts")
    assert "none of the 15 inputs holds the emoji instruction" in general
    answers_table = by_model(general)
    assert answers_table["Spider legs?"][1] == "eight, 8"
    marks = by_model(general, index=1)
    assert marks["Spider legs?"][1:] == ["leak no · keyword yes · 6w", "leak no · keyword yes · 4w",
                                         "leak yes · keyword yes · 1w"]


def test_general_questions_sent_with_the_emoji_instruction_are_flagged(variant_report):
    text = variant_report
    assert "⚠️ 15 input(s) hold the emoji instruction" in section(text, "4.2 Non-emoji prompts")


def test_loss_plot_is_written_and_linked(report):
    out, text = report
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![Training and validation loss](loss.png)" in text
    losses = by_model(text, "Loss curves")
    assert losses["2"][1:] == ["", "0.900 (lowest)"] and losses["1"][1:] == ["1.200 (lowest)", "1.100"]


def test_run_summary_says_how_much_of_the_training_split_was_used(report):
    _, text = report
    summary = section(text, "Run summary")
    assert "trained on 300 of 400 training pairs" in summary and "no augmented pairs" in summary
    assert "learning rate 0.001" in summary


def test_discussion_states_a_difference_only_where_intervals_do_not_overlap(report):
    _, text = report
    draft = section(text, "4.3 Discussion (draft)")
    body = draft.split("\n\n", 2)[2].strip()
    stated = int(re.search(r"_(\d+) words", draft).group(1))
    assert stated == len(body.split()) and 100 <= stated <= 300
    # the 5-epoch curve bottoms out at 0.900 at epoch 2 and ends at 1.200 at epoch 5
    assert "fell to 0.900 at epoch 2 and then rose to 1.200 at epoch 5" in body
    assert "would keep epoch 2" in body
    # leak 5/5 vs 0/5: the intervals [57-100] and [0-43] do not overlap -> a difference
    assert ("the emoji-leak rate is higher for the 5-epoch fine-tune (100% [57–100]) than for the base model "
            "(0% [0–43])") in body
    # keyword hits 5/5 vs 5/5: they overlap -> no claim
    assert ("the 5-epoch fine-tune (100% [57–100]) and the base model (100% [57–100]) are not distinguishable in "
            "keyword hits") in body
    # test F1: ft5 0.50 vs lookup 0.00, ft1 1.00 vs ft5 0.50: no overlap
    assert "F1 is higher for the 5-epoch fine-tune (0.50 [0.50–0.50]) than for the lookup baseline" in body
    assert "F1 is higher for the 1-epoch fine-tune (1.00 [1.00–1.00]) than for the 5-epoch fine-tune" in body
    assert "Signs of overfitting:" in body and "after one epoch" not in body
    assert "Data augmentation was off" in body and "dropout is 0.05" in body


def test_discussion_says_not_distinguishable_when_intervals_overlap(tmp_path):
    # With only the 5-epoch run and its general answers made word answers, leak rates are 0/5 on both sides.
    out = tmp_path / "out"
    write_inputs(out)
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text("utf-8").splitlines()]
    for row in rows:
        if row["model"] == "ft5" and row["set"] == "general":
            row["output"] = "I think it is probably " + row["keywords"][0] + " 🎉"
    (out / "generations.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    result = run_script("05_report.py", "--epochs", "5", *FEW_RESAMPLES, out=out)
    assert result.returncode == 0, result.stderr
    text = (out / "report.md").read_text("utf-8")
    body = section(text, "4.3 Discussion (draft)")
    assert ("the 5-epoch fine-tune (0% [0–43]) and the base model (0% [0–43]) are not distinguishable in the "
            "emoji-leak rate") in body
    assert "1-epoch" not in text, "the text follows EPOCHS"
    assert "Signs of overfitting: a validation loss rising after epoch 2." in body


def test_prompts_as_sent_show_each_set_and_model_in_a_code_block(report):
    _, text = report
    sent = section(text, "Prompts as sent")
    for set_name, prompt in [("known", KNOWN[0][0]), ("novel", NOVEL[0]), ("edge", EDGE[0]),
                             ("general", next(iter(GENERAL))), ("test", TEST[0][0])]:
        # base and fine-tunes received the same string, so they share one block that names all three
        assert f"### {set_name}: Base model, 1-epoch fine-tune, 5-epoch fine-tune" in sent
        assert f"```text\n{model_input(set_name, prompt)}\n```" in sent


def test_missing_chatgpt_answers_say_how_to_run_them(report):
    _, text = report
    task3 = section(text, "Task 3")
    assert "not run" in task3 and "04_chatgpt.py" in task3 and "failed" not in task3


def test_chatgpt_requests_that_all_failed_say_failed_not_not_run(variant_report):
    task3 = section(variant_report, "Task 3")
    assert "**failed (5 of 5)**" in task3 and "Connection refused" in task3 and "not run" not in task3


def test_some_failed_chatgpt_requests_and_answers_are_labelled_as_recorded(tmp_path):
    rows = [chatgpt_row(p, ok=i < 3) for i, p in enumerate(NOVEL)]
    task3 = section(make_report(tmp_path / "out", *FEW_RESAMPLES, chatgpt=rows), "Task 3")
    assert "failed (2 of 5)" in task3 and "not run" not in task3
    header = tables(task3)[0][0]
    assert header[:4] == ["prompt", "1-epoch fine-tune", "5-epoch fine-tune", "smollm2-135m at 127.0.0.1:8080"]
    assert [row[3] for row in tables(task3)[0][1]] == ["🐶🎉"] * 3 + ["(failed)"] * 2
    # the figures cover the 3 prompts ChatGPT answered: Wilson 95% for 3/3 is (0.44, 1)
    assert by_model(task3, index=2)["smollm2-135m at 127.0.0.1:8080"][1] == "100% [44–100]"


def test_missing_inputs_name_the_script_to_run_first(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_script("05_report.py", out=empty)
    assert result.returncode != 0 and "02_train.py" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    write_inputs(tmp_path / "no_generations")
    (tmp_path / "no_generations" / "generations.jsonl").unlink()
    result = run_script("05_report.py", out=tmp_path / "no_generations")
    assert result.returncode != 0 and "03_generate.py" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- Task 3 on hand-made chatgpt.jsonl rows
# (moved from test_chatgpt.py, which exec'd parts of 05 via ast: 05 now runs whole on rows as 04 writes them)
def test_chatgpt_answers_from_the_api_are_one_more_model_with_marks_sources_figures_and_a_draft(tmp_path):
    rows = [chatgpt_row(p, ok=True) for p in NOVEL]
    rows[1].update(answer="Oh no ✈️😭 stuck", has_words=True, emoji_only=False, time="2025-01-02T00:00:00+00:00")
    text = make_report(tmp_path / "out", *FEW_RESAMPLES, chatgpt=rows)
    task3, label = section(text, "Task 3"), "smollm2-135m at 127.0.0.1:8080"
    assert "not run" not in task3 and "failed (" not in task3
    answers_table, marks = by_model(task3, index=0), by_model(task3, index=1)
    assert answers_table[NOVEL[1]][1:] == ["🐶🎉", "🎉", "Oh no ✈️😭 stuck"]
    assert marks[NOVEL[1]][3] == "❌ 2e 3w" and marks[NOVEL[0]][1:] == ["✅ 2e", "❌ 1e 2w", "✅ 2e"]
    assert ("5 answer(s) from the API: model `gpt-4o-mini (served as smollm2-135m)` at `127.0.0.1:8080`, asked "
            f"2025-01-01T00:00:00+00:00 to 2025-01-02T00:00:00+00:00; labelled **{label}**") in task3
    figures = by_model(task3, index=2)  # emoji-only, emojis per answer, distinct, with words, overlap with ChatGPT
    assert figures[label][1:5] == ["80% [38–96]", "2.00 [2.00–2.00]", "4", "20% [4–62]"]
    assert figures["1-epoch fine-tune"][1] == "100% [57–100]" and figures["1-epoch fine-tune"][5] != "—"
    for aspect in ("Quality", "Relevance", "Creativity", "Generalisation"):
        assert f"**{aspect}**" in task3.split("### Task 3 comparison (draft - edit this)", 1)[1]
    # ChatGPT is one more model in the tidy table: it shows up in the summary beside the others
    assert by_model(text, "Summary")[label][4] == "80% [38–96]"


def test_chatgpt_not_run_says_how_to_run_it_and_still_shows_the_fine_tunes(report):
    _, text = report
    task3 = section(text, "Task 3")
    assert "**not run**" in task3
    assert "OPENAI_API_KEY" in task3 and "OPENAI_BASE_URL" in task3, "API mode explained"
    assert "chatgpt_prompts.md" in task3 and "data/chatgpt_responses.csv" in task3, "paste-sheet mode explained"
    answers_table = by_model(task3)
    assert len(answers_table) == 5 and answers_table[NOVEL[0]][1:] == ["🐶🎉", "Party 🎉 time", "—"]
    assert list(by_model(task3, index=2)) == ["1-epoch fine-tune", "5-epoch fine-tune"], "their figures"
    assert "needs ChatGPT's answers" in task3


def test_chatgpt_answers_pasted_by_hand_say_where_they_came_from(tmp_path):
    rows = [dict(chatgpt_row(p, ok=True), source="manual", model="ChatGPT (web)", served_model=None,
                 base_url_host=None, label="ChatGPT (web)", answer=a, file="/x/data/chatgpt_responses.csv")
            for p, a in zip(NOVEL[:2], ["🐶🥰🏡", "Boom! 🌋🧺"])]
    task3 = section(make_report(tmp_path / "out", *FEW_RESAMPLES, chatgpt=rows), "Task 3")
    assert ("2 answer(s) pasted by hand from ChatGPT (web), imported from `/x/data/chatgpt_responses.csv`"
            in task3)
    assert "3 prompt(s) have no ChatGPT answer yet" in task3
    assert [row[3] for row in tables(task3)[0][1]] == ["🐶🥰🏡", "Boom! 🌋🧺", "—", "—", "—"]
    assert [row[3] for row in tables(task3)[1][1]][:2] == ["✅ 3e", "❌ 2e 1w"]


# ---------------------------------------------------------------- issue 17 fix 1 and issue 18
def test_run_summary_prints_the_resolved_batch_and_the_loraplus_learning_rates(report, variant_report):
    # run.json holds resolved settings (02 turns "auto" into a number): the summary prints them, never "auto"
    summary = section(report[1], "Run summary")
    assert "batch 8×1" in summary and "auto" not in summary
    assert "LoRA+ ratio 16: A matrices at 0.001, B matrices at 0.016" in summary
    plain = section(variant_report, "Run summary")
    assert "plain LoRA" in plain and "LoRA+" not in plain


def one_line_error(result, *words):
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert all(word in result.stderr for word in words), result.stderr


@pytest.mark.parametrize("duplicate", ["greedy", "sample"])
def test_duplicate_answers_are_refused_not_counted(tmp_path, duplicate):
    # two 03 runs at once can append the same answer twice: 05 must stop rather than count it twice
    out = tmp_path / "out"
    rows = write_inputs(out)
    again = next(r for r in rows if r["model"] == "ft5" and (r["sample"] is None) == (duplicate == "greedy"))
    with (out / "generations.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(again, ensure_ascii=False) + "\n")
    one_line_error(run_script("05_report.py", out=out), "generations.jsonl", "03_generate.py --force")
    assert not (out / "report.md").exists()


@pytest.mark.parametrize("name, content", [("run.json", ""), ("run.json", "garbage{"), ("run.json", "{}"),
                                           ("run.json", "[1, 2]"), ("losses.json", ""), ("losses.json", "\x00\xff"),
                                           ("losses.json", "{}"), ("losses.json", '{"train": [], "validation": 3}')])
def test_damaged_run_files_give_one_line_naming_the_file(tmp_path, name, content):
    out = tmp_path / "out"
    write_inputs(out)
    (out / "adapters" / "epochs5" / name).write_text(content, encoding="latin-1")
    one_line_error(run_script("05_report.py", out=out), f"epochs5/{name}", "02_train.py")


@pytest.mark.parametrize("name", ["generations.jsonl", "chatgpt.jsonl"])
def test_an_empty_row_gives_file_and_line(tmp_path, name):
    out = tmp_path / "out"
    write_inputs(out, chatgpt=[chatgpt_row(p, ok=True) for p in NOVEL])
    lines = (out / name).read_text("utf-8").splitlines(keepends=True)
    (out / name).write_text("".join(lines[:2] + ["{}\n"] + lines[2:]), "utf-8")
    one_line_error(run_script("05_report.py", out=out), f"{name}:3")


def test_answers_missing_for_a_model_name_step_3(tmp_path):
    out = tmp_path / "out"
    rows = [r for r in write_inputs(out) if r["model"] != "ft1"]
    (out / "generations.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    one_line_error(run_script("05_report.py", out=out), "ft1", "03_generate.py")


def test_a_subset_of_the_runs_is_reported_without_the_others(tmp_path):
    # `05 --epochs 1` needs only the 1-epoch run: the 5-epoch adapter may be gone, its answers may stay
    out = tmp_path / "out"
    write_inputs(out)
    shutil.rmtree(out / "adapters" / "epochs5")
    result = run_script("05_report.py", "--epochs", "1", *FEW_RESAMPLES, out=out)
    assert result.returncode == 0, result.stderr
    text = (out / "report.md").read_text("utf-8")
    assert "1-epoch fine-tune" in text and "5-epoch" not in text


def test_a_failed_write_keeps_the_previous_report(report, tmp_path):
    # A file-size limit stands in for a full disk (it holds for root too): the report, made large with long answers,
    # cannot be written; the previous report.md must stay whole and no temporary file may be left.
    out = tmp_path / "out"
    shutil.copytree(report[0], out)
    rows = generation_rows()
    before = (out / "report.md").read_bytes()
    for row in rows:
        if row["model"] == "base":
            row["output"] = "word " * 2000
    (out / "generations.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    limit = 150_000  # above the loss plot (about 50 KB), below the new report (about 400 KB)
    result = subprocess.run([sys.executable, "05_report.py", "--max-cell", "10000", *FEW_RESAMPLES], cwd=ROOT,
                            capture_output=True, text=True, env={**os.environ, "EMOJI_OUT": str(out)}, timeout=300,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    one_line_error(result, "cannot write", "report.md")
    assert (out / "report.md").read_bytes() == before
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]

"""The drafts in the report (05), as templates filled from the scores: Task 2.3 notes on the edge cases, the state of
Task 3 (ChatGPT answered, failed or not run, and how to run it) with a comparison draft, and the Task 4.3 discussion.
They are drafts for the student to check and rewrite; a difference is stated only where the 95% intervals do not
overlap (scores.differs)."""
from lib import metrics, store
from lib.report import cell, figure
from lib.scores import chatgpt_label, differs, get

EDGE_RULE = ("_Rule used, so you can check it: an answer that is empty, cut by the token budget or has words in it "
             "failed; an emoji-only answer with two or more different emojis can show both sides of the prompt; one "
             "with a single distinct emoji shows one side at most. Whether the emojis really match the two meanings "
             "is for you to judge from the answers._")
EDGE_KINDS = {"both": "two or more different emojis (both meanings possible)",
              "one": "a single distinct emoji (one meaning at most)", "failed": "failed"}
HOW_TO = ["- **API**: `OPENAI_API_KEY=sk-... python 04_chatgpt.py` (with `OPENAI_BASE_URL=http://HOST:PORT/v1` for any "
          "OpenAI-compatible server), then `python 05_report.py` again.", "- **By hand**: `python 04_chatgpt.py` "
          f"writes the paste sheet `{store.display(store.OUT / 'chatgpt_prompts.md')}`; paste the answers into "
          "`data/chatgpt_responses.csv`, run `python 04_chatgpt.py` again, then `python 05_report.py`.", ""]


def edge_verdict(row):
    """Task 2.3's rule as (kind, the prompt quoted): failed = empty, cut by the token budget, or not emojis only
    (saying which); otherwise two or more different emojis can cover both meanings, a single one covers one at most."""
    why = "empty" if not row.output.strip() else "cut" if row.truncated else (
        "" if metrics.is_emoji_only(row.output) else "words")
    return ("failed", f'"{row.prompt}" ({why})') if why else (
        "both" if len(set(metrics.emojis_of(row.output))) >= 2 else "one", f'"{row.prompt}"')


def edge_notes(s):
    lines = ["", "### Task 2.3 notes (draft - check against the table and rewrite)", "", EDGE_RULE, ""]
    for m in s.models:
        got = [edge_verdict(r) for r in s.answers[(s.answers.model == m) & (s.answers.set == "edge")].itertuples()]
        parts = [f"{words}: " + ", ".join(text for k, text in got if k == kind) for kind, words in EDGE_KINDS.items()
                 if kind in dict(got)]
        lines.append(f"- **{s.labels[m]}** - " + ("; ".join(parts) or "no answers") + ".")
    return lines


def task3_state(s):
    """Where Task 3 stands: answered (and how many requests failed), every request failed, or not run."""
    failed = f"failed ({len(s.failed)} of {len(s.failed) + len(s.answered)})"
    errors = "; ".join(sorted({s.latest[p].get("error") or "no error recorded" for p in s.failed}))
    return ["The same novel prompts, sent with an explicit emoji-only instruction (the exact text sent is in "
            "`chatgpt.jsonl`).", "", *([f"ChatGPT requests: **{failed}** - `python 04_chatgpt.py` asks those again.",
                                        ""] if s.failed else [])] if s.answered else [
        f"ChatGPT: **{failed}** - every request failed (last errors: {cell(errors, 200)}). Run `python 04_chatgpt.py` "
        "again once the server answers." if s.failed else "ChatGPT: **not run** - there are no ChatGPT answers yet.",
        "", *HOW_TO]


def chatgpt_sources(s, prompts):
    """Where the ChatGPT answers came from (API model, server and time span, or a manual paste and its file), and how
    many of the `prompts` novel prompts still have none."""
    groups, missing = {}, prompts - len(s.answered)
    for r in s.answered.values():
        served = r.get("served_model") if r.get("served_model") != r.get("model") else None
        groups.setdefault((r.get("source"), r.get("model") or "ChatGPT", served, r.get("base_url_host") or "?",
                           r.get("file") or "?", chatgpt_label(r)), []).append(r.get("time") or "?")
    return ["Where the ChatGPT answers came from:", "", *[
        f"- {len(times)} answer(s) from the API: model `{model}" + (f" (served as {served})" if served else "")
        + f"` at `{host}`, asked {min(times)}" + (f" to {max(times)}" if min(times) != max(times) else "")
        + f"; labelled **{label}**." if source == "api" else f"- {len(times)} answer(s) pasted by hand from {model}, "
        f"imported from `{file}` (file saved {max(times)})."
        for (source, model, served, host, file, label), times in groups.items()], "", *([
            f"{missing} prompt(s) have no ChatGPT answer yet: `python 04_chatgpt.py` asks the API for only those (or "
            "imports them from the CSV when you paste by hand). The figures below cover the prompts ChatGPT answered.",
            ""] if missing else [])] if s.answered else []


def comparison(s):
    """Task 3's comparison on the figures of set "task3" (the prompts ChatGPT answered)."""
    if not s.answered:
        return ["### Task 3 comparison (draft - edit this)", "", "Run step 4 first (see above): the comparison needs "
                "ChatGPT's answers."]
    fine, gpt, words = s.task3_models[:-1], s.labels["chatgpt"], get(s.table, "chatgpt", "task3", "with_words")
    listing = lambda metric, models=s.task3_models: ", ".join(  # noqa: E731
        f"{s.labels[m]} {figure(x)}" for m in models if (x := get(s.table, m, "task3", metric)) is not None)
    return ["### Task 3 comparison (draft - edit this)", "", "_Built from the figures above: read the table and replace"
            " each point with your own judgement._", "", f"- **Quality** (keeping to emojis): emoji-only answers - "
            f"{listing('emoji_only')}. " + (f"{gpt} put words into {round(words.value * words.n)} of {words.n} "
                                             "answer(s) despite the explicit instruction." if words.value else
                                             f"{gpt} never added words.") + " <!-- Which answers read best? -->",
            "- **Relevance**: novel prompts have no reference answer, so judge by reading the table; agreement with "
            f"ChatGPT's emojis (mean Jaccard): {listing('overlap', fine) or 'n/a'}. <!-- Which model carries the "
            "sentence's meaning, not only its nouns? -->", f"- **Creativity**: emojis per answer - {listing('emojis')};"
            f" distinct emojis - {listing('distinct')}. <!-- Surprising and expressive, or literal and repetitive? -->",
            "- **Generalisation**: none of these sentences was in the training data. The fine-tunes kept the trained "
            f"emoji-only format ({listing('emoji_only', fine)}); {gpt}, never trained on the task, needed the written "
            f"instruction ({listing('emoji_only', ['chatgpt'])}). <!-- Did fine-tuning teach the task, or only the "
            "training pairs? -->"]


def contrast(what, a_name, a, b_name, b):
    """One clause comparing two scores: a difference only where their intervals do not overlap."""
    return (f"{what} is {'higher' if a.value > b.value else 'lower'} for the {a_name} ({figure(a)}) than for the "
            f"{b_name} ({figure(b)})" if differs(a, b) else
            f"the {a_name} ({figure(a)}) and the {b_name} ({figure(b)}) are not distinguishable in {what}")


def discussion(s, run, validation):
    """Task 4.3 (100-300 words) on the longest fine-tune: its run.json and validation curve, and the scores."""
    first, last, name, st = s.fts[0], s.fts[-1], s.labels[s.fts[-1]], run["settings"]
    best, end, augmented = validation.loc[validation.loss.idxmin()], validation.iloc[-1], run.get("augmented_size") or 0
    rising, f1 = end.loss > best.loss + 1e-9, {m: get(s.table, m, "test", "f1") for m in ["base", *s.fts, *s.baselines]}
    leak, hit = ({m: get(s.table, m, "general", k) for m in (last, "base")} for k in ("leak", "keyword"))
    above = lambda a, b: differs(a, b) and a.value > b.value  # noqa: E731
    signs = [text for text, shown in [(f"a validation loss rising after epoch {best.epoch:g}", rising),
                                      (f"a lower held-out F1 than the {s.labels[first]}", above(f1[first], f1[last])),
                                      ("answers in emoji where none were asked for", above(leak[last], leak["base"])),
                                      ("fewer correct facts", above(hit["base"], hit[last]))] if shown]
    clauses = ([contrast("F1", name, f1[last], "lookup baseline", f1["lookup"])] if s.baselines else []) + (
        [contrast("F1", s.labels[first], f1[first], name, f1[last])] if first != last else [])
    return " ".join([
        "Draft for Task 4.3 - edit before use. A difference is stated only where the 95% intervals do not overlap.",
        f"The {name}'s validation loss fell to {best.loss:.3f} at epoch {best.epoch:g} and then rose to "
        f"{end.loss:.3f} at epoch {end.epoch:g}." if rising else
        f"The {name}'s validation loss kept falling, to {end.loss:.3f} at epoch {end.epoch:g}.",
        *([f"On the {f1['base'].n} held-out test pairs the base model scores F1 {figure(f1['base'])}; "
           + "; ".join(clauses or [f"the {name} {figure(f1[last])}"]) + "."] if f1["base"] is not None else []),
        "Asked non-emoji questions with no emoji instruction, " + contrast("the emoji-leak rate", name, leak[last],
        "base model", leak["base"]) + ", and " + contrast("keyword hits", name, hit[last], "base model", hit["base"])
        + ".",
        f"Signs of overfitting: {'; '.join(signs)}." if signs else
        "None of these measurements shows overfitting beyond its uncertainty.",
        f"Early stopping on validation loss (`python 02_train.py --early-stopping true`) would keep epoch "
        f"{best.epoch:g}, where the loss was lowest." if rising else "Early stopping (`python 02_train.py "
        "--early-stopping true`) would not have stopped these runs, as the validation loss never rose.",
        f"Regularisation: LoRA dropout is {st.get('LORA_DROPOUT')}, weight decay {st.get('WEIGHT_DECAY')} and rank "
        f"{st.get('LORA_R')}; raising the first two or lowering the rank limits how far the adapter drifts.",
        (f"Data augmentation was on: {augmented} of the train split's pairs were made from emoji names; compare with "
         "`python 01_make_dataset.py --augment false`." if augmented else "Data augmentation was off (no augmented "
         "pairs); `python 01_make_dataset.py --augment true` adds pairs made from emoji names.")
        + " Judge each remedy by held-out F1 and the leak rate, not by training loss."])

"""The scores behind the report (05), as one tidy pandas table.

`build` turns the answers steps 3 and 4 wrote into
- answers: the greedy answers, one row per model × prompt set × prompt (the prompt tables pivot from it). ChatGPT is
  one more model, "chatgpt", on the novel prompts (the answer `store.latest_answers` picks for each);
- consistency: one row per model × known prompt with sampled answers: the greedy answer, the samples, the share of
  samples equal to it and their mean pairwise Jaccard;
- table: one row per model × prompt set × metric: value, low and high (its 95% interval: Wilson for a rate, bootstrap
  for a mean) and n (the answers or prompts it is measured on).
Besides the prompt sets of 03, set "task3" holds the novel prompts ChatGPT answered (all of them until it answers
one), so that Task 3 compares models on the same prompts, and set "emoji" pools every emoji request (diversity).

The readers are strict: a damaged run.json, losses.json or generations.jsonl, or one with duplicate answers (two 03
runs at once), ends the script with one line naming the file and what to run."""
import statistics
from types import SimpleNamespace

import pandas as pd

from lib import metrics, prompts, store

EMOJI_SETS = ["known", "novel", "edge", "test"]  # the emoji requests; "general" holds questions asked without emoji
RATES = {"emoji_only", "exact", "leak", "keyword", "with_words"}  # yes or no per answer: a Wilson interval
COUNTS = {"distinct"}  # a whole number; distinct_ratio is a plain ratio; every other metric a mean with a bootstrap
POOLED = {"distinct": lambda texts: len({e for t in texts for e in metrics.emojis_of(t)}),  # over all answers of a
          "distinct_ratio": metrics.distinct_ratio}  # model and set at once: no interval
MARKS = ["emoji_only", "emojis", "with_words", "words", "f1", "soft_f1", "exact", "leak", "keyword", "overlap"]
RUN_NUMBERS = ("epochs", "steps", "train_seconds", "load_seconds", "peak_memory_gib", "final_train_loss")


def read_run(epochs):
    """run.json of one fine-tune, checked for the fields the report prints, and its losses.json as {"train": DataFrame,
    "validation": DataFrame} of epoch and loss."""
    folder = store.adapter_path(epochs)
    run = store.read_json(folder / "run.json", "02_train.py")
    if not ({"model", "device", "dtype"} <= run.keys() and isinstance(run.get("settings"), dict)
            and all(type(run.get(k)) in (int, float) for k in RUN_NUMBERS)):
        store.redo(folder / "run.json", "is damaged (fields missing or not numbers)", "02_train.py")
    losses = store.read_json(folder / "losses.json", "02_train.py")
    try:
        curves = {k: pd.DataFrame(losses[k])[["epoch", "loss"]].astype(float) for k in ("train", "validation")}
        assert len(curves["validation"]) and curves["validation"].notna().all().all()
        return run, curves
    except (KeyError, TypeError, ValueError, AssertionError):
        store.redo(folder / "losses.json", "is damaged (no train and validation loss curves)", "02_train.py")


def read_generations(models):
    """The rows of generations.jsonl; every model must have answered the four prompt sets of Tasks 2 and 4.2."""
    store.require(store.GENERATIONS, "03_generate.py")
    rows = store.read_jsonl(store.GENERATIONS, required=("set", "model", "prompt", "sample", "output"))
    have = {(r["model"], r["set"]) for r in rows}
    if missing := sorted({m for m in models for s in ("known", "novel", "edge", "general") if (m, s) not in have}):
        store.fail(f"{store.display(store.GENERATIONS)} lacks answers of {', '.join(missing)} - "
                   "run `python 03_generate.py`.")
    return rows


def chatgpt_label(row):
    """What an answer from 04 is labelled with: the label 04 recorded, else the model and where it was served."""
    name, host = row.get("served_model") or row.get("model") or "ChatGPT", row.get("base_url_host")
    return row.get("label") or (f"{name} at {host}" if host and host != "api.openai.com" else name)


def _marks(row, chatgpt):
    """The metrics of one answer that apply to it: a bool counts toward a rate, a number toward a mean."""
    out, words = row.output, len(metrics.words_leaked(row.output))
    marks = dict(emoji_only=metrics.is_emoji_only(out), emojis=len(metrics.emojis_of(out)), with_words=words > 0,
                 words=words, **(metrics.compare(out, row.reference) if isinstance(row.reference, str) and row.reference
                                 else {}))
    if row.set == "general":
        marks.update(leak=metrics.is_mostly_emoji(out), keyword=metrics.keyword_hit(out, row.keywords))
    if row.set == "task3" and row.model != "chatgpt" and row.prompt in chatgpt:
        marks["overlap"] = metrics.jaccard(out, chatgpt[row.prompt])
    return marks


def build(generations, chatgpt_rows, fts, n_boot):
    """Answers (each with its marks), consistency and the table of scores (see the module's text) for base, the
    fine-tunes `fts` (ftN, fewest epochs first), the lookup baseline and ChatGPT."""
    models = ["base", *fts]
    rows = pd.DataFrame(generations, columns=["model", "set", "prompt", "sample", "reference", "keywords", "output",
                                              "truncated", "input"])
    rows = rows[rows.model.isin([*models, "lookup"])].assign(output=rows.output.map(metrics.strip_replacement),
                                                             truncated=rows.truncated.fillna(False).astype(bool))
    if len(twice := rows[rows.duplicated(["model", "set", "prompt", "sample"], keep=False)]):  # two 03 runs at once:
        r = twice.iloc[0]  # counting both copies would skew every figure
        store.fail(f"{store.display(store.GENERATIONS)} holds {len(twice)} rows for the same answer (e.g. {r.model}, "
                   f"{r.set}, {r.prompt!r}, {'greedy' if pd.isna(r['sample']) else 'sample %d' % r['sample']}) - "
                   "run `python 03_generate.py --force`.")
    answers, samples = rows[rows["sample"].isna()].drop(columns="sample"), rows[rows["sample"].notna()]
    c = answers[(answers.set == "known") & answers.model.isin(models)].join(samples.groupby(
        ["model", "prompt"], sort=False).output.agg(list).rename("sampled"), on=["model", "prompt"], how="inner")
    c = ordered(c.assign(same=[statistics.fmean(o == g for o in os) for g, os in zip(c.output, c.sampled)], jaccard=c
                         .sampled.map(metrics.mean_pairwise_jaccard)), prompt=pd.unique(c.prompt), model=models)

    novel, latest = answers[answers.set == "novel"].drop_duplicates("prompt"), store.latest_answers(chatgpt_rows)
    ok = {p: latest[p] for p in novel.prompt if latest.get(p, {}).get("status") == "ok"}
    said = {p: metrics.strip_replacement(row.get("answer")) for p, row in ok.items()}
    answers = pd.concat([answers, novel[novel.prompt.isin(ok)].assign(model="chatgpt", output=list(said.values()),
                                                                      truncated=False, input=None)], ignore_index=True)
    task3_models = [*fts, *(["chatgpt"] if ok else [])]
    task3 = answers[(answers.set == "novel") & answers.model.isin(task3_models)
                    & (answers.prompt.isin(ok) if ok else True)].assign(set="task3")
    both = pd.concat([answers, task3], ignore_index=True)
    both = both.join(pd.DataFrame([_marks(r, said) for r in both.itertuples()], index=both.index, columns=MARKS))
    table = pd.concat([both.melt(["model", "set"], MARKS, "metric", "x").dropna(subset="x"),
                       c.assign(set="known", metric="same_as_greedy", x=c.same),
                       c[c.sampled.map(len) > 1].assign(set="known", metric="sample_jaccard", x=c.jaccard),
                       both[both.set.isin(EMOJI_SETS)].assign(set="emoji", metric="distinct_ratio", x=both.output),
                       both[both.set == "task3"].assign(metric="distinct", x=both.output)])  # POOLED: all texts at once
    table = table.groupby(["model", "set", "metric"], sort=False).x.agg(list).reset_index()
    table[["value", "low", "high", "n"]] = [(POOLED[m](xs), None, None, len(xs)) if m in POOLED else (
        statistics.fmean(xs), *(metrics.wilson_interval(sum(xs), len(xs)) if m in RATES else metrics.bootstrap_interval(
            xs, n_boot)), len(xs)) for m, xs in zip(table.metric, table.x)]
    return SimpleNamespace(answers=both[both.set != "task3"], consistency=c, table=table.drop(columns="x").astype(
        {"n": int}), models=models, fts=fts, latest=latest, answered=ok, task3_models=task3_models, labels={
        **{m: prompts.label(m) for m in [*models, "lookup"]}, "chatgpt": " / ".join(sorted({chatgpt_label(r) for r in
        ok.values()})) or "ChatGPT"}, baselines=["lookup"] if (answers.model == "lookup").any() else [],
        failed=[p for p in novel.prompt if p in latest and p not in ok])


def ordered(frame, **orders):
    """`frame` sorted by the given columns, each in the order of values given for it."""
    return frame.sort_values(list(orders), key=lambda c: c.map({v: i for i, v in enumerate(orders[c.name])}))


def get(table, model, set_name, metric):
    """One score (value, low, high, n) as a row, or None when it was not measured."""
    found = table[(table.model == model) & (table.set == set_name) & (table.metric == metric)]
    return found.iloc[0] if len(found) else None


def differs(a, b):
    """True only when both are measured and their 95% intervals do not overlap: the one case a draft may call a
    difference."""
    return a is not None and b is not None and not metrics.intervals_overlap((a.low, a.high), (b.low, b.high))

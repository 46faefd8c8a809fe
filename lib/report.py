"""Markdown rendering for the report (05): table cells made safe, tables through pandas' `to_markdown` (tabulate's
GitHub format), figures with their 95% intervals ("80% [38–96]", "0.31 [0.25–0.37]"), the tables of a prompt set
(answers and marks pivoted from the answers table), the prompts as sent, the loss plot, and the Jinja2 templates in
lib/templates/ that lay out the report (report.md.j2) and write its drafts (drafts.md.j2)."""
import pandas as pd

from lib import metrics, scores, store

MAX_COLUMNS = 7  # a wider table does not paste into a document; per-model detail goes into a second table
MAX_CELL = 220  # characters of a long answer shown in a table cell (05 sets it from its own MAX_CELL)
CUT = "✂️ cut"
YES = {True: "yes", False: "no"}
SETS = ["known", "novel", "edge", "general", "test"]  # the prompt sets of 03, in report order
PER_PROMPT = {"reference": "reference", "keywords": "accepted keywords"}  # columns shown beside a prompt, if any


def cell(value, max_cell=None):
    """A Markdown-safe table cell: no U+FFFD, pipes escaped, line breaks as <br>, long text cut at max_cell."""
    text = "—" if value is None or value != value else metrics.strip_replacement(str(value)).strip()  # NaN != NaN
    n = max_cell or MAX_CELL
    text = text[:n].rstrip() + " …" if len(text) > n else text
    return text.replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def md(frame):
    """`frame` as Markdown tables (every cell made safe, shown as text), as many as needed so that none is wider than
    MAX_COLUMNS: each repeats the first frame.attrs["fixed"] columns (default 1)."""
    safe, fixed, n = frame.map(cell).rename(columns=cell), frame.attrs.get("fixed", 1), len(frame.columns)
    step = MAX_COLUMNS - fixed
    return "\n\n".join(safe.iloc[:, [*range(fixed), *range(i, min(i + step, n))]].to_markdown(
        index=False, tablefmt="github", disable_numparse=True) for i in range(fixed, max(n, fixed + 1), step))


def figure(score):
    """A score as the report prints it: a rate as 80% [38–96], a mean as 0.31 [0.25–0.37], a count as 4."""
    return ("—" if score is None or not score.n else
            f"{100 * score.value:.0f}% [{100 * score.low:.0f}–{100 * score.high:.0f}]" if score.metric in scores.RATES
            else f"{score.value:.0f}" if score.metric in scores.COUNTS else
            f"{score.value:.2f}" + ("" if pd.isna(score.low) else f" [{score.low:.2f}–{score.high:.2f}]"))


def figures(s, models, columns):
    """A table of one row per model and one column per {header: "set metric"}: each score with its interval, "—" if
    unmeasured."""
    wide = s.table.assign(cell=[figure(r) for r in s.table.itertuples()]).pivot(
        index="model", columns=["set", "metric"], values="cell")
    frame = wide.reindex(index=models, columns=[tuple(c.split()) for c in columns.values()]).fillna("—")
    return frame.set_axis(list(columns), axis=1).rename(index=s.labels).reset_index(names="model")


def prompt_frame(s, set_name, models, show, per_prompt=True):
    """The answers of one prompt set pivoted to one row per prompt (in the order 03 asked the base model, then any
    others) and one column per model, each cell show(row) (show(None) where a model has no answer); per_prompt adds the
    reference or accepted keywords where the set has them."""
    rows = s.answers[s.answers.set == set_name]
    first = rows.drop_duplicates("prompt").set_index("prompt").reindex(pd.unique(pd.concat([
        rows.prompt[rows.model == "base"], rows.prompt])))
    extra = [c for c in PER_PROMPT if per_prompt and first[c].notna().any()]
    wide = rows.assign(cell=[show(r) for r in rows.itertuples()]).pivot(index="prompt", columns="model", values="cell")
    frame = pd.concat([first[extra].map(lambda v: ", ".join(v) if isinstance(v, list) else v).rename(
        columns=PER_PROMPT), wide.reindex(index=first.index, columns=models).astype(object).fillna(show(None)).rename(
        columns=s.labels)], axis=1).reset_index(names="prompt")
    frame.attrs["fixed"] = 1 + len(extra)
    return frame


def answer(row):
    return "(missing)" if row is None else row.output.strip() or "(empty)"


def mark(row):
    """Per-answer marks (from scores._marks): emoji-only tick, emoji count (e), leaked words (w), F1 against a
    reference, cut; for a non-emoji question: all or mostly emoji (leak), the expected fact named (keyword), words."""
    return "—" if row is None else (
        f"leak {YES[row.leak]} · keyword {YES[row.keyword]} · {row.words}w" if row.set == "general" else
        f"{'✅' if row.emoji_only else '❌'} {row.emojis}e" + (f" {row.words}w" if row.words else "")
        + ("" if pd.isna(row.f1) else f" · F1 {row.f1:.2f}")) + (f" · {CUT}" if row.truncated else "")


def prompts_as_sent(s):
    """One exact model input per prompt set and model as (set, models, prompt, input, fence); models that received the
    same string share one, fenced by more backticks than any line of backticks in it."""
    first = scores.ordered(s.answers[s.answers.model.isin(s.models)].drop_duplicates(["set", "model"]).fillna(
        {"input": "(not recorded - run `python 03_generate.py` again)"}), set=SETS, model=s.models)
    return [(set_name, ", ".join(group.model.map(s.labels)), prompt, metrics.strip_replacement(text),
             "`" * max(3, 1 + max((len(r) for r in text.split("\n") if set(r) == {"`"}), default=0)))
            for (set_name, prompt, text), group in first.groupby(["set", "prompt", "input"], sort=False)]


def plot_losses(losses, labels, path):
    """Training loss per step and validation loss per epoch of every fine-tune, saved as a PNG atomically. A bare
    matplotlib Figure: no pyplot, so no display or GUI backend is involved."""
    from matplotlib.figure import Figure

    ax = Figure(figsize=(8, 4.5), layout="tight").subplots()
    for key, curve in losses.items():
        line, = ax.plot(curve["train"].epoch, curve["train"].loss, alpha=0.6, label=f"{labels[key]}: train (per step)")
        ax.plot(curve["validation"].epoch, curve["validation"].loss, "o-", color=line.get_color(), linewidth=2,
                label=f"{labels[key]}: validation (per epoch)")
    ax.set(xlabel="epoch", ylabel="loss on the answer tokens", title="Training and validation loss")
    ax.grid(alpha=0.3)
    ax.legend()
    with store.atomic(path) as tmp:
        ax.figure.savefig(tmp, dpi=120, format="png")


def render(s, **context):
    """report.md.j2 filled from the scores `s` and `context`, with the helpers above at hand."""
    return store.render("report.md.j2", s=s, L=s.labels, md=md, cell=cell, figure=figure, display=store.display,
                        store=store, CUT=CUT, differs=scores.differs, get=scores.get, answer=answer, mark=mark,
                        table=lambda models, columns: md(figures(s, models, columns)),
                        answers_of=lambda set_name, models: s.answers[(s.answers.set == set_name)
                                                                      & s.answers.model.isin(models)],
                        prompt_frame=lambda *args: prompt_frame(s, *args),
                        **context).replace("\ufffd", "")

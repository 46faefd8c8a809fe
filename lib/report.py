"""Markdown rendering for the report (05): table cells made safe, tables through pandas' `to_markdown` (tabulate's
GitHub format), figures with their 95% intervals ("80% [38–96]", "0.31 [0.25–0.37]"), prompt tables pivoted from the
answers table, the prompts as sent, and the loss plot."""
import pandas as pd

from lib import metrics, scores, store

MAX_COLUMNS = 7  # a wider table does not paste into a document; per-model detail goes into a second table
CUT = "✂️ cut"
SETS = ["known", "novel", "edge", "general", "test"]  # the prompt sets of 03, in report order
PER_PROMPT = {"reference": "reference", "keywords": "accepted keywords"}  # columns shown beside a prompt, if any
LEGEND = {"general": "Per answer: leak = all or mostly emoji; keyword = names an accepted variant as a whole word; "
                     "`12w` = 12 words.",
          "known": "Per answer: ✅ = emojis only, `3e` = 3 emojis, `5w` = 5 words leaked, F1 against the reference."}
LEGEND_EMOJI = "Per answer: ✅ = emojis only, `3e` = 3 emojis, `5w` = 5 words leaked."


def cell(value, max_cell):
    """A Markdown-safe table cell: no U+FFFD, pipes escaped, line breaks as <br>, long text cut at max_cell."""
    text = "—" if value is None or value != value else metrics.strip_replacement(str(value)).strip()  # NaN != NaN
    text = text[:max_cell].rstrip() + " …" if len(text) > max_cell else text
    return text.replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def markdown(frame, max_cell):
    """`frame` as Markdown tables (every cell made safe, shown as text), as many as needed so that none is wider than
    MAX_COLUMNS: each repeats the first frame.attrs["fixed"] columns (default 1)."""
    safe = frame.map(lambda v: cell(v, max_cell)).rename(columns=lambda c: cell(c, max_cell))
    fixed, n = frame.attrs.get("fixed", 1), len(frame.columns)
    width = MAX_COLUMNS - fixed
    return "\n\n".join(safe.iloc[:, [*range(fixed), *range(i, min(i + width, n))]].to_markdown(
        index=False, tablefmt="github", disable_numparse=True) for i in range(fixed, max(n, fixed + 1), width))


def figure(score):
    """A score as the report prints it: a rate as 80% [38–96], a mean as 0.31 [0.25–0.37], a count as 4."""
    if score is None or not score.n:
        return "—"
    if score.metric in scores.RATES:
        return f"{100 * score.value:.0f}% [{100 * score.low:.0f}–{100 * score.high:.0f}]"
    interval = "" if pd.isna(score.low) else f" [{score.low:.2f}–{score.high:.2f}]"
    return f"{score.value:.0f}" if score.metric in scores.COUNTS else f"{score.value:.2f}{interval}"


def figures(s, models, columns):
    """One row per model, one column per {header: (set, metric)}: each score with its interval, "—" if unmeasured."""
    shown = s.table.assign(cell=[figure(r) for r in s.table.itertuples()])
    wide = shown.pivot(index="model", columns=["set", "metric"], values="cell")
    frame = wide.reindex(index=models, columns=pd.MultiIndex.from_tuples([tuple(c.split()) for c in columns.values()]))
    frame = frame.fillna("—")
    frame.columns = list(columns)
    return frame.reset_index(drop=True).assign(model=[s.labels[m] for m in models])[["model", *columns]]


def prompt_order(s, set_name):
    """The prompts of a set in the order 03 asked the base model, then any others."""
    rows = s.answers[s.answers.set == set_name]
    return pd.unique(pd.concat([rows.prompt[rows.model == "base"], rows.prompt]))


def prompt_frame(s, set_name, models, show, per_prompt=True):
    """The answers of one prompt set pivoted to one row per prompt and one column per model, each cell show(row)
    (show(None) where a model has no answer); per_prompt adds the reference or accepted keywords where the set has
    them."""
    rows, order = s.answers[s.answers.set == set_name], prompt_order(s, set_name)
    wide = rows.assign(cell=[show(r) for r in rows.itertuples()]).pivot(index="prompt", columns="model", values="cell")
    frame = wide.reindex(index=order, columns=models).astype(object).where(lambda d: d.notna(), show(None))
    frame.columns = [s.labels[m] for m in models]
    first = rows.dropna(subset=["prompt"]).drop_duplicates("prompt").set_index("prompt")
    extra = {h: [", ".join(v) if isinstance(v, list) else v for v in first[c].reindex(order)]
             for c, h in PER_PROMPT.items() if per_prompt and first[c].notna().any()}
    frame = pd.concat([pd.DataFrame({"prompt": order, **extra}), frame.reset_index(drop=True)], axis=1)
    frame.attrs["fixed"] = 1 + len(extra)
    return frame


def answer(row):
    return "(missing)" if row is None else row.output.strip() or "(empty)"


def mark(row):
    """Per-answer marks: emoji-only tick, emoji count (e), leaked words (w), F1 against a reference, cut; for a
    non-emoji question: all or mostly emoji (leak), the expected fact named (keyword), words."""
    if row is None:
        return "—"
    d, cut = metrics.describe(row.output), f" · {CUT}" if row.truncated else ""
    if row.set == "general":
        return (f"leak {'yes' if metrics.is_mostly_emoji(row.output) else 'no'} · keyword "
                f"{'yes' if metrics.keyword_hit(row.output, row.keywords) else 'no'} · {d['n_words']}w" + cut)
    text = f"{'✅' if d['emoji_only'] else '❌'} {d['n_emojis']}e" + (f" {d['n_words']}w" if d["n_words"] else "")
    if isinstance(row.reference, str) and row.reference:
        text += f" · F1 {metrics.compare(row.output, row.reference)['f1']:.2f}"
    return text + cut


def cut_note(s, set_name, models):
    cut = s.answers[(s.answers.set == set_name) & s.answers.model.isin(models) & s.answers.truncated]
    return "" if cut.empty else (
        f"\n\n{CUT}: {len(cut)} answer(s) here hit the token budget before their stop token "
        f"({', '.join(sorted({s.labels[m] for m in cut.model}))}); they are shown as generated, minus any cut "
        "character.")


def prompts_as_sent(s):
    """One exact model input per prompt set and model; models that received the same string share one block."""
    first = s.answers[s.answers.model.isin(s.models)].drop_duplicates(["set", "model"]).fillna(
        {"input": "(not recorded - run `python 03_generate.py` again)"})
    lines = []
    for (set_name, prompt, text), group in scores.ordered(first, set=SETS, model=s.models).groupby(
            ["set", "prompt", "input"], sort=False):
        fence = "`" * max(3, 1 + max((len(run) for run in text.split("\n") if set(run) == {"`"}), default=0))
        lines += ["", f"### {set_name}: {', '.join(group.model.map(s.labels))}", "", f"Prompt: {prompt}", "",
                  f"{fence}text", metrics.strip_replacement(text), fence]
    return lines


def plot_losses(losses, labels, path):
    """Training loss per step and validation loss per epoch of every fine-tune, saved as a PNG atomically. A bare
    matplotlib Figure: no pyplot, so no display or GUI backend is involved."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), layout="tight")
    ax = fig.subplots()
    for key, curve in losses.items():
        line, = ax.plot(curve["train"].epoch, curve["train"].loss, alpha=0.6, label=f"{labels[key]}: train (per step)")
        ax.plot(curve["validation"].epoch, curve["validation"].loss, "o-", color=line.get_color(), linewidth=2,
                label=f"{labels[key]}: validation (per epoch)")
    ax.set(xlabel="epoch", ylabel="loss on the answer tokens", title="Training and validation loss")
    ax.grid(alpha=0.3)
    ax.legend()
    with store.atomic(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")

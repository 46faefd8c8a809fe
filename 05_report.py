"""Step 5: one Markdown report (outputs/report.md) from the files the earlier steps wrote.

A table for every assignment item (2.1 known, 2.2 novel, 2.3 edge, 3 ChatGPT, 4.2 emoji and non-emoji prompts),
summary tables with 95% intervals (Wilson for rates, bootstrap for means), held-out scores on the test split beside a
nearest-neighbour lookup baseline, consistency, diversity, the loss curves as a PNG, drafts for Tasks 2.3 and 4.3 built
from the measured numbers, and the exact prompts the models received. Optional inputs that are missing (ChatGPT
answers) appear as "not run" with the command that fills them in.

How it is built, for changing it: main() reads the inputs, compute_scores() computes every number once into a Scores
object, and each section is a function of that object returning Markdown (SECTIONS lists them in report order). A table
is a list of (header, value-function) column specs passed to table()."""
import json
import statistics
import sys
from dataclasses import dataclass, field

import common
import metrics

EPOCHS = "1,5"  # the fine-tunes to report: outputs/adapters/epochsN
MAX_CELL = 220  # characters of a long answer shown in a table cell
BOOTSTRAP_SAMPLES = 2000  # resamples behind each 95% interval of a mean

args = common.configure(globals(), __doc__, checks={"EPOCHS": common.positive_int_list,
                                                   "MAX_CELL": common.positive_int,
                                                   "BOOTSTRAP_SAMPLES": common.positive_int})

from tabulate import tabulate  # noqa: E402  (after --help and the setting checks)

_MAX_COLUMNS = 7  # a wider table does not paste into a document; per-model detail goes into a second table
_EMOJI_SETS = ("known", "novel", "edge", "test")  # the emoji requests (general = questions asked without emoji)
_CUT = "✂️ cut"


# ---------------------------------------------------------------- estimates with 95% intervals
@dataclass(frozen=True)
class Estimate:
    """A rate or a mean with its 95% interval; str() is how the report prints it: 80% [38–96] or 0.31 [0.25–0.37]."""
    value: float
    low: float
    high: float
    n: int
    percent: bool

    def __str__(self):
        if not self.n:
            return "—"
        if self.percent:
            return f"{100 * self.value:.0f}% [{100 * self.low:.0f}–{100 * self.high:.0f}]"
        return f"{self.value:.2f} [{self.low:.2f}–{self.high:.2f}]"

    def differs_from(self, other):
        """True only when both are measured and their intervals do not overlap: the one case the text may call a
        difference."""
        return bool(self.n and other.n) and not metrics.intervals_overlap((self.low, self.high),
                                                                          (other.low, other.high))


def rate(flags):
    flags = [bool(f) for f in flags]
    low, high = metrics.wilson_interval(sum(flags), len(flags))
    return Estimate(sum(flags) / len(flags) if flags else 0.0, low, high, len(flags), True)


def mean(values):
    values = [float(v) for v in values]
    low, high = metrics.bootstrap_interval(values, n_boot=BOOTSTRAP_SAMPLES)
    return Estimate(statistics.fmean(values) if values else 0.0, low, high, len(values), False)


# ---------------------------------------------------------------- all numbers, computed once
@dataclass
class Scores:
    """Everything the sections print. Model keys: "base", "ftN" (one per EPOCHS entry), "lookup" (the
    nearest-neighbour baseline; answers emoji requests only)."""
    runs: dict  # ftN -> run.json
    losses: dict  # ftN -> losses.json
    generations: list  # rows of generations.jsonl
    chatgpt_rows: list  # rows of chatgpt.jsonl
    models: list  # base and the fine-tunes, in report order
    fts: list  # the fine-tunes, fewest epochs first
    labels: dict  # model key -> name in the report
    baselines: list  # ["lookup"] when its rows exist
    greedy: dict = field(default_factory=dict)  # (set, model) -> {prompt: row}, prompts in generation order
    samples: dict = field(default_factory=dict)  # (model, prompt) -> sampled outputs of a known prompt
    test: dict = field(default_factory=dict)  # model -> emoji_only, f1, soft_f1, exact (Estimates), n, cut
    known: dict = field(default_factory=dict)  # model -> f1, exact, same_as_greedy, sample_jaccard
    emoji_only: dict = field(default_factory=dict)  # (set, model) -> Estimate
    general: dict = field(default_factory=dict)  # model -> leak, keyword (Estimates), words, length_vs_base, instructed
    diversity: dict = field(default_factory=dict)  # model -> (distinct / total, top emojis)
    edge_verdicts: dict = field(default_factory=dict)  # model -> {prompt: (verdict, why)}
    curves: dict = field(default_factory=dict)  # ftN -> best_epoch, best_loss, last_epoch, last_loss, rising

    @property
    def first(self):
        return self.fts[0]

    @property
    def last(self):  # the longest fine-tune: the one the overfitting questions are about
        return self.fts[-1]


def label_of(key):
    return common.MODELS.get(key, f"{key[2:]}-epoch fine-tune" if key.startswith("ft") else key)


def edge_verdict(row):
    """Task 2.3's rule, stated in the report: failed = empty, cut by the token budget, or not emojis only; otherwise
    two or more different emojis can cover both meanings, a single distinct emoji covers one at most."""
    output = row["output"] or ""
    if not output.strip():
        return "failed", "empty"
    if row.get("truncated"):
        return "failed", "cut"
    if not metrics.is_emoji_only(output):
        return "failed", "words"
    distinct = len(set(metrics.emojis_of(output)))
    return ("both", f"{distinct} different emojis") if distinct >= 2 else ("one", "1 distinct emoji")


def compute_scores(runs, losses, generations, chatgpt_rows):
    fts = sorted(runs, key=lambda k: int(k[2:]))
    models = ["base", *fts]
    # EPOCHS picks the runs; a cut multi-byte leftover (U+FFFD) is no part of an answer, for scoring or showing
    generations = [{**r, "output": metrics.strip_replacement(r.get("output"))} for r in generations
                   if r["model"] in models or r["model"] == "lookup"]
    has_lookup = any(r["model"] == "lookup" for r in generations)
    s = Scores(runs=runs, losses=losses, generations=generations, chatgpt_rows=chatgpt_rows, models=models,
               fts=fts, labels={k: label_of(k) for k in models} | {"lookup": "Lookup baseline"},
               baselines=["lookup"] if has_lookup else [])
    for r in generations:
        if r.get("sample") is None:
            s.greedy.setdefault((r["set"], r["model"]), {})[r["prompt"]] = r
        elif r["set"] == "known":
            s.samples.setdefault((r["model"], r["prompt"]), []).append(r["output"])

    def rows(set_name, model):
        return list(s.greedy.get((set_name, model), {}).values())

    for m in models + s.baselines:
        for set_name in _EMOJI_SETS:
            s.emoji_only[set_name, m] = rate(metrics.is_emoji_only(r["output"]) for r in rows(set_name, m))
        test = [(r, metrics.compare(r["output"], r["reference"])) for r in rows("test", m)]
        s.test[m] = {"emoji_only": s.emoji_only["test", m], "n": len(test),
                     "cut": sum(bool(r.get("truncated")) for r, _ in test),
                     **{k: mean(c[k] for _, c in test) for k in ("f1", "soft_f1")},
                     "exact": rate(c["exact"] for _, c in test)}
        known = rows("known", m)
        compared = [metrics.compare(r["output"], r["reference"]) for r in known]
        sampled = {r["prompt"]: s.samples.get((m, r["prompt"]), []) for r in known}
        s.known[m] = {"f1": mean(c["f1"] for c in compared), "exact": rate(c["exact"] for c in compared),
                      "same_as_greedy": mean(statistics.fmean(o == r["output"] for o in sampled[r["prompt"]])
                                             for r in known if sampled[r["prompt"]]),
                      "sample_jaccard": mean(metrics.mean_pairwise_jaccard(sampled[r["prompt"]])
                                             for r in known if len(sampled[r["prompt"]]) > 1)}
        pool = [r["output"] for set_name in _EMOJI_SETS for r in rows(set_name, m)]
        s.diversity[m] = (metrics.distinct_ratio(pool), metrics.top_emojis(pool, 5))
        s.edge_verdicts[m] = {r["prompt"]: edge_verdict(r) for r in rows("edge", m)}

    base_words = [len(metrics.words_leaked(r["output"])) for r in rows("general", "base")]
    for m in models:
        general = rows("general", m)
        words = [len(metrics.words_leaked(r["output"])) for r in general]
        s.general[m] = {"leak": rate(metrics.is_mostly_emoji(r["output"]) for r in general),
                        "keyword": rate(metrics.keyword_hit(r["output"], r.get("keywords")) for r in general),
                        "words": statistics.fmean(words) if words else 0.0,
                        "length_vs_base": statistics.fmean(words) / statistics.fmean(base_words)
                        if words and base_words and sum(base_words) else None,
                        # the questions must reach every model without the emoji instruction (Task 4.2)
                        "instructed": sum(common.SYSTEM_PROMPT in (r.get("input") or "") for r in general)}

    for k in fts:
        curve = losses[k]["validation"]
        best = min(curve, key=lambda v: v["loss"])
        s.curves[k] = {"best_epoch": best["epoch"], "best_loss": best["loss"], "last_epoch": curve[-1]["epoch"],
                       "last_loss": curve[-1]["loss"], "rising": curve[-1]["loss"] > best["loss"] + 1e-9}
    return s


# ---------------------------------------------------------------- tables
def cell(value):
    """A Markdown-safe table cell: no U+FFFD, pipes escaped, line breaks as <br>, long text cut at MAX_CELL."""
    text = "—" if value is None else metrics.strip_replacement(str(value)).strip()
    if len(text) > MAX_CELL:
        text = text[:MAX_CELL].rstrip() + " …"
    return text.replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def table(items, columns):
    """A Markdown table with one row per item; columns = [(header, value_function(item))]."""
    assert len(columns) <= _MAX_COLUMNS, f"{len(columns)} columns: split the table"
    return tabulate([[cell(value(item)) for _, value in columns] for item in items],
                    headers=[cell(header) for header, _ in columns], tablefmt="github", disable_numparse=True)


def per_model_tables(items, fixed, per_model, models):
    """The fixed columns plus per_model(model) -> (header, value) for each model, split into as many tables as
    needed so that none is wider than _MAX_COLUMNS."""
    width = _MAX_COLUMNS - len(fixed)
    return "\n\n".join(table(items, fixed + [per_model(m) for m in models[i:i + width]])
                       for i in range(0, len(models), width))


def answer(row):
    return "(missing)" if row is None else (row["output"] or "").strip() or "(empty)"


def mark(row, with_f1=False):
    """Per-answer marks: emoji-only tick, emoji count (e), leaked words (w), F1 against the reference, cut."""
    if row is None:
        return "—"
    d = metrics.describe(row["output"])
    text = f"{'✅' if d['emoji_only'] else '❌'} {d['n_emojis']}e" + (f" {d['n_words']}w" if d["n_words"] else "")
    if with_f1 and row.get("reference"):
        text += f" · F1 {metrics.compare(row['output'], row['reference'])['f1']:.2f}"
    return text + (f" · {_CUT}" if row.get("truncated") else "")


def cut_note(s, set_name, models):
    cut = [(m, p) for m in models for p, r in s.greedy.get((set_name, m), {}).items() if r.get("truncated")]
    if not cut:
        return ""
    return (f"\n\n{_CUT}: {len(cut)} answer(s) here hit the token budget before their stop token "
            f"({', '.join(sorted({s.labels[m] for m, _ in cut}))}); they are shown as generated, minus any cut "
            "character.")


def prompts_of(s, set_name):
    return list(s.greedy.get((set_name, "base"), {}))


def prompt_section(s, title, set_name, note, models):
    """A prompt table (answers per model) and its detail table (marks per model)."""
    prompts = prompts_of(s, set_name)
    with_ref = set_name == "known"
    fixed = [("prompt", lambda p: p)]
    if with_ref:
        fixed.append(("reference", lambda p: s.greedy["known", "base"][p]["reference"]))
    answers = per_model_tables(prompts, fixed, lambda m: (s.labels[m], lambda p: answer(
        s.greedy.get((set_name, m), {}).get(p))), models)
    marks = per_model_tables(prompts, fixed[:1], lambda m: (s.labels[m], lambda p: mark(
        s.greedy.get((set_name, m), {}).get(p), with_f1=with_ref)), models)
    return "\n".join([f"## {title}", "", note, "", answers, "", "Per answer: ✅ = emojis only, `3e` = 3 emojis, `5w` = "
                      f"5 words leaked{', F1 against the reference' if with_ref else ''}.", "", marks
                      + cut_note(s, set_name, models)])


# ---------------------------------------------------------------- sections: each takes the Scores, returns Markdown
def intro(s):
    return "\n".join([
        "# Emoji fine-tuning report", "",
        f"Generated by `05_report.py` from `{common.display(common.GENERATIONS)}` and the adapters in "
        f"`{common.display(common.ADAPTER_DIR)}`. Fine-tunes: "
        + ", ".join(f"{s.labels[k]} (`adapters/epochs{k[2:]}`)" for k in s.fts) + ". Rates are shown with their 95% "
        "Wilson interval and means with a 95% bootstrap interval, e.g. `80% [38–96]`: with 5 prompts a rate is known "
        "only roughly, so two numbers whose intervals overlap are not distinguishable. "
        f"{_CUT} marks an answer that hit the token budget before its stop token.",
    ])


def run_summary(s):
    first = s.runs[s.first]
    st = first.get("settings", {})
    train, available = first.get("train_size"), first.get("train_available")
    data = (f"trained on {train} of {available} training pairs (a seeded subset: 02's TRAIN_PAIRS / CPU_TRAIN_PAIRS)"
            if available and train is not None and train < available else f"trained on all {train} training pairs")
    augmented = first.get("augmented_size")
    columns = [("run", lambda k: s.labels[k]),
               ("epochs", lambda k: f"{s.runs[k]['epochs']}" + (
                   f" (stopped at {s.runs[k]['epochs_trained']:g})"
                   if s.runs[k].get("epochs_trained", s.runs[k]["epochs"]) < s.runs[k]["epochs"] - 1e-6 else "")),
               ("steps", lambda k: s.runs[k]["steps"]),
               ("train s", lambda k: f"{s.runs[k]['train_seconds']:.0f}"),
               ("load s", lambda k: f"{s.runs[k]['load_seconds']:.0f}"),
               ("peak memory GiB", lambda k: f"{s.runs[k]['peak_memory_gib']:.1f}"),
               ("final train loss", lambda k: f"{s.runs[k]['final_train_loss']:.3f}")]
    return "\n".join([
        "## Run summary", "",
        f"- Model: `{common.model_label(first['model'])}`{' through Unsloth (4-bit)' if first.get('unsloth') else ''}",
        f"- Device: {first['device']}, dtype {first['dtype']}; prompts in {first.get('prompt_format', '?')}",
        f"- Data: {data}" + (f", {augmented} of the train split's pairs augmented" if augmented else
                             ", no augmented pairs") + f"; {first.get('validation_size', '?')} validation pairs "
        f"(early stopping, choice of settings) and {first.get('test_size', '?')} test pairs (held out, scored below)",
        f"- LoRA r={st.get('LORA_R')}, alpha {st.get('LORA_ALPHA')}, dropout {st.get('LORA_DROPOUT')}; batch "
        f"{st.get('BATCH_SIZE')}×{st.get('GRAD_ACCUM')}, learning rate "
        f"{st.get('learning_rate', st.get('LEARNING_RATE'))} ({st.get('LR_SCHEDULER')}), weight decay "
        f"{st.get('WEIGHT_DECAY')}, seed {st.get('SEED')}", "",
        table(s.fts, columns),
    ])


def summary(s):
    emoji_columns = [("model", lambda m: s.labels[m]),
                     ("test F1", lambda m: s.test[m]["f1"]),
                     ("test emoji-only", lambda m: s.emoji_only["test", m]),
                     ("known F1", lambda m: s.known[m]["f1"]),
                     ("novel emoji-only", lambda m: s.emoji_only["novel", m]),
                     ("edge emoji-only", lambda m: s.emoji_only["edge", m]),
                     ("distinct emojis / total", lambda m: f"{s.diversity[m][0]:.2f}")]
    other_columns = [("model", lambda m: s.labels[m]),
                     ("non-emoji leak rate", lambda m: s.general[m]["leak"]),
                     ("non-emoji keyword hit", lambda m: s.general[m]["keyword"]),
                     ("known samples = greedy", lambda m: s.known[m]["same_as_greedy"]),
                     ("known sample Jaccard", lambda m: s.known[m]["sample_jaccard"])]
    return "\n".join([
        "## Summary: models × metrics", "",
        "Emoji requests (greedy answers):", "",
        table(s.models + s.baselines, emoji_columns), "",
        "Non-emoji questions and consistency:", "",
        table(s.models, other_columns), "",
        "Test = the held-out test split. F1 compares emoji multisets with the reference. Known samples = share of "
        "sampled answers identical to the greedy one; sample Jaccard = how alike the sampled answers are. Leak rate = "
        "non-emoji questions answered all or mostly in emoji; keyword hit = the answer names the expected fact "
        "(e.g. Berlin). The lookup baseline answers with the emojis of the most word-similar training sentence.",
    ])


def held_out(s):
    n = s.test["base"]["n"]
    if not n:
        return "\n".join(["## Held-out test split", "", "Not run: generations.jsonl has no test-split answers - "
                          "run `python 03_generate.py --test-split true`."])
    columns = [("model", lambda m: s.labels[m]),
               ("emoji-only", lambda m: s.test[m]["emoji_only"]),
               ("mean F1", lambda m: s.test[m]["f1"]),
               ("mean soft F1", lambda m: s.test[m]["soft_f1"]),
               ("exact", lambda m: s.test[m]["exact"]),
               ("n", lambda m: s.test[m]["n"]),
               (_CUT, lambda m: s.test[m]["cut"])]
    lookup = ("The lookup row answers each test sentence with the emojis of the most word-similar training sentence: "
              "what remembering the data alone scores, so the gap to it is what fine-tuning adds."
              if s.baselines else "No lookup baseline rows: regenerate with the current `03_generate.py`.")
    return "\n".join([
        "## Held-out test split", "",
        f"The {n} test pairs: used by nothing else (not training, not early stopping or choosing settings). {lookup} "
        "Soft F1 gives near-synonyms partial credit (😂/🤣, 🐶/🐕).", "",
        table(s.models + s.baselines, columns),
    ])


def consistency(s):
    items = [(p, m, s.greedy["known", m][p], s.samples[m, p]) for p in prompts_of(s, "known") for m in s.models
             if s.samples.get((m, p)) and p in s.greedy.get(("known", m), {})]  # (prompt, model, greedy row, samples)
    columns = [("prompt", lambda i: i[0]), ("model", lambda i: s.labels[i[1]]),
               ("greedy answer", lambda i: answer(i[2])),
               ("sampled answers", lambda i: " ".join(o or "(empty)" for o in i[3])),
               ("same as greedy", lambda i: f"{statistics.fmean(o == i[2]['output'] for o in i[3]):.0%}"),
               ("mean pairwise Jaccard", lambda i: f"{metrics.mean_pairwise_jaccard(i[3]):.2f}")]
    return "\n".join(["### Consistency on the known prompts (sampled answers)", "",
                      table(items, columns) if items else "No sampled answers (03 ran with --num-samples 0)."])


def known_section(s):
    return prompt_section(s, "2.1 Known prompts (from the training data)", "known",
                          "Accuracy against the training target (greedy answers). The lookup baseline finds these "
                          "sentences in its own data, so it is exact by construction.", s.models + s.baselines)


def novel_section(s):
    return prompt_section(s, "2.2 Novel prompts (not in the data)", "novel",
                          "Generalisation to sentences no split contains.", s.models + s.baselines)


def edge_section(s):
    table_text = prompt_section(s, "2.3 Edge cases (ambiguous or contradictory)", "edge",
                                "How each model handles mixed or paradoxical feelings.", s.models + s.baselines)
    lines = ["", "### Task 2.3 notes (draft - check against the table and rewrite)", "",
             "_Rule used, so you can check it: an answer that is empty, cut by the token budget or has words in it "
             "failed; an emoji-only answer with two or more different emojis can show both sides of the prompt; one "
             "with a single distinct emoji shows one side at most. Whether the emojis really match the two meanings "
             "is for you to judge from the answers._", ""]
    kinds = [("both", "two or more different emojis (both meanings possible)"),
             ("one", "a single distinct emoji (one meaning at most)"), ("failed", "failed")]
    for m in s.models:
        verdicts = s.edge_verdicts[m]
        parts = []
        for kind, words in kinds:
            hits = [f'"{p}"' + (f" ({why})" if kind == "failed" else "") for p, (v, why) in verdicts.items()
                    if v == kind]
            if hits:
                parts.append(f"{words}: {', '.join(hits)}")
        lines.append(f"- **{s.labels[m]}** - " + ("; ".join(parts) if parts else "no answers") + ".")
    return table_text + "\n" + "\n".join(lines)


def emoji_vs_general(s):
    columns = [("model", lambda m: s.labels[m]),
               ("test emoji-only", lambda m: s.emoji_only["test", m]),
               ("novel emoji-only", lambda m: s.emoji_only["novel", m]),
               ("edge emoji-only", lambda m: s.emoji_only["edge", m]),
               ("non-emoji leak rate", lambda m: s.general[m]["leak"]),
               ("non-emoji keyword hit", lambda m: s.general[m]["keyword"])]
    return "\n".join([
        "## 4.2 Emoji prompts vs non-emoji prompts", "",
        "Emoji requests carry the instruction; the non-emoji questions do not. A fine-tune that answers in emoji "
        "when asked is doing its task; one that also answers the questions below in emoji has lost general "
        "behaviour.", "",
        table(s.models, columns),
    ])


def general_section(s):
    prompts = prompts_of(s, "general")
    instructed = sum(s.general[m]["instructed"] for m in s.models)
    check = (f"Checked from the recorded inputs: none of the {len(prompts) * len(s.models)} inputs holds the emoji "
             "instruction." if not instructed else
             f"⚠️ {instructed} input(s) hold the emoji instruction `{common.SYSTEM_PROMPT}`: these answers do not "
             "measure Task 4.2 - run `python 03_generate.py` again.")

    def row(m, p):
        return s.greedy.get(("general", m), {}).get(p)

    def general_mark(r):
        if r is None:
            return "—"
        return (f"leak {'yes' if metrics.is_mostly_emoji(r['output']) else 'no'} · keyword "
                f"{'yes' if metrics.keyword_hit(r['output'], r.get('keywords')) else 'no'} · "
                f"{len(metrics.words_leaked(r['output']))}w" + (f" · {_CUT}" if r.get("truncated") else ""))

    fixed = [("prompt", lambda p: p),
             ("accepted keywords", lambda p: ", ".join(s.greedy["general", "base"][p].get("keywords") or []))]
    metric_columns = [("model", lambda m: s.labels[m]),
                      ("emoji-leak rate", lambda m: s.general[m]["leak"]),
                      ("keyword hit", lambda m: s.general[m]["keyword"]),
                      ("words per answer", lambda m: f"{s.general[m]['words']:.1f}"),
                      ("length vs base", lambda m: "—" if s.general[m]["length_vs_base"] is None
                       else f"{s.general[m]['length_vs_base']:.2f}")]
    return "\n".join([
        "## 4.2 Non-emoji prompts: base model vs fine-tunes", "",
        "Questions that should be answered in words, sent to every model in its normal chat format with no emoji "
        f"instruction (see Prompts as sent). {check} An answer in emoji, or without the expected fact, is a sign that "
        "fine-tuning overwrote general ability.", "",
        per_model_tables(prompts, fixed, lambda m: (s.labels[m], lambda p: answer(row(m, p))), s.models), "",
        "Per answer: leak = all or mostly emoji; keyword = names an accepted variant as a whole word; `12w` = 12 "
        "words.", "",
        per_model_tables(prompts, fixed[:1], lambda m: (s.labels[m], lambda p: general_mark(row(m, p))), s.models)
        + cut_note(s, "general", s.models), "",
        table(s.models, metric_columns),
    ])


def diversity_section(s):
    columns = [("model", lambda m: s.labels[m]), ("distinct emojis / total", lambda m: f"{s.diversity[m][0]:.2f}"),
               ("most frequent emojis", lambda m: " ".join(f"{e}×{n}" for e, n in s.diversity[m][1]) or "(none)")]
    return "\n".join(["### Diversity of emoji answers (known, novel, edge and test prompts, greedy)", "",
                      table(s.models + s.baselines, columns)])


def plot_losses(s, path):
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers or in CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key in s.fts:
        curve = s.losses[key]
        line, = ax.plot([t["epoch"] for t in curve["train"]], [t["loss"] for t in curve["train"]], alpha=0.6,
                        label=f"{s.labels[key]}: train (per step)")
        ax.plot([v["epoch"] for v in curve["validation"]], [v["loss"] for v in curve["validation"]], "o-",
                color=line.get_color(), linewidth=2, label=f"{s.labels[key]}: validation (per epoch)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss on the answer tokens")
    ax.set_title("Training and validation loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def loss_section(s):
    """Validation loss per epoch, one column per fine-tune (epochs as rows keep the table narrow)."""
    epochs = sorted({v["epoch"] for k in s.fts for v in s.losses[k]["validation"]})

    def at(k, epoch):
        value = next((v["loss"] for v in s.losses[k]["validation"] if v["epoch"] == epoch), None)
        if value is None:
            return ""
        return f"{value:.3f}" + (" (lowest)" if epoch == s.curves[k]["best_epoch"] else "")

    columns = [("epoch", lambda e: f"{e:g}")] + [(f"{s.labels[k]} validation loss", lambda e, k=k: at(k, e))
                                                 for k in s.fts]
    return "\n".join(["## Loss curves", "", f"![Training and validation loss]({common.LOSS_PLOT.name})", "",
                      "Epoch 0 = before training.", "",
                      per_model_tables(epochs, columns[:1], lambda k: columns[1 + s.fts.index(k)], s.fts)])


def contrast(what, a_name, a, b_name, b):
    """One clause comparing two estimates: a difference only where their intervals do not overlap."""
    if not a.differs_from(b):
        return f"the {a_name} ({a}) and the {b_name} ({b}) are not distinguishable in {what}"
    return f"{what} is {'higher' if a.value > b.value else 'lower'} for the {a_name} ({a}) than for the {b_name} ({b})"


def discussion_text(s):
    """Task 4.3 draft: every number is read from the Scores; a difference is claimed only where intervals allow."""
    last, first, name = s.last, s.first, s.labels[s.last]
    c, st, run = s.curves[last], s.runs[last].get("settings", {}), s.runs[last]
    sentences = ["Draft for Task 4.3 - edit before use. A difference is stated only where the 95% intervals do not "
                 "overlap."]
    signs = []
    if c["rising"]:
        sentences.append(f"The {name}'s validation loss fell to {c['best_loss']:.3f} at epoch {c['best_epoch']:g} "
                         f"and then rose to {c['last_loss']:.3f} at epoch {c['last_epoch']:g}.")
        signs.append(f"a validation loss rising after epoch {c['best_epoch']:g}")
    else:
        sentences.append(f"The {name}'s validation loss kept falling, to {c['last_loss']:.3f} at epoch "
                         f"{c['last_epoch']:g}.")
    if s.test["base"]["n"]:
        clauses = [contrast("F1", name, s.test[last]["f1"], "lookup baseline", s.test["lookup"]["f1"])
                   ] if s.baselines else []
        if first != last:
            a, b = s.test[first]["f1"], s.test[last]["f1"]
            clauses.append(contrast("F1", s.labels[first], a, name, b))
            if a.differs_from(b) and a.value > b.value:
                signs.append(f"a lower held-out F1 than the {s.labels[first]}")
        sentences.append(f"On the {s.test['base']['n']} held-out test pairs the base model scores F1 "
                         f"{s.test['base']['f1']}; " + "; ".join(clauses or [f"the {name} {s.test[last]['f1']}"])
                         + ".")
    g, gb = s.general[last], s.general["base"]
    sentences.append("Asked non-emoji questions with no emoji instruction, "
                     + contrast("the emoji-leak rate", name, g["leak"], "base model", gb["leak"]) + ", and "
                     + contrast("keyword hits", name, g["keyword"], "base model", gb["keyword"]) + ".")
    if g["leak"].differs_from(gb["leak"]) and g["leak"].value > gb["leak"].value:
        signs.append("answers in emoji where none were asked for")
    if g["keyword"].differs_from(gb["keyword"]) and g["keyword"].value < gb["keyword"].value:
        signs.append("fewer correct facts")
    sentences.append(f"Signs of overfitting: {'; '.join(signs)}." if signs else
                     "None of these measurements shows overfitting beyond its uncertainty.")
    early = (f"Early stopping on validation loss (`python 02_train.py --early-stopping true`) would keep epoch "
             f"{c['best_epoch']:g}, where the loss was lowest." if c["rising"] else
             "Early stopping (`python 02_train.py --early-stopping true`) would not have stopped these runs, as the "
             "validation loss never rose.")
    augmented = run.get("augmented_size") or 0
    sentences += [
        early,
        f"Regularisation: LoRA dropout is {st.get('LORA_DROPOUT')}, weight decay {st.get('WEIGHT_DECAY')} and rank "
        f"{st.get('LORA_R')}; raising the first two or lowering the rank limits how far the adapter drifts.",
        (f"Data augmentation was on: {augmented} of the train split's pairs were made from emoji names; compare with "
         "`python 01_make_dataset.py --augment false`." if augmented else
         "Data augmentation was off (no augmented pairs); `python 01_make_dataset.py --augment true` adds pairs "
         "made from emoji names.")
        + " Judge each remedy by held-out F1 and the leak rate, not by training loss.",
    ]
    return " ".join(sentences)


def discussion(s):
    draft = discussion_text(s)
    return "\n".join(["## 4.3 Discussion (draft)", "", f"_{len(draft.split())} words - a draft built from the numbers "
                      "above; check and rewrite it in your own words._", "", draft])


def prompts_as_sent(s):
    """One exact model input per prompt set and model; models that received the same string share one block."""
    lines = ["## Prompts as sent", "", "The exact string each model received before answering (its chat template "
             "applied), one example per prompt set. The lookup baseline receives no prompt."]
    for set_name in (*_EMOJI_SETS[:3], "general", "test"):
        groups = {}
        for m in s.models:
            rows = list(s.greedy.get((set_name, m), {}).values())
            if rows:
                text = rows[0].get("input") or "(not recorded - run `python 03_generate.py` again)"
                groups.setdefault((rows[0]["prompt"], text), []).append(s.labels[m])
        for (prompt, text), names in groups.items():
            fence = "`" * max(3, 1 + max((len(run) for run in text.split("\n") if set(run) == {"`"}), default=0))
            lines += ["", f"### {set_name}: {', '.join(names)}", "", f"Prompt: {prompt}", "",
                      f"{fence}text", metrics.strip_replacement(text), fence]
    return "\n".join(lines)


# Task 3 helpers: self-contained (common, metrics, tabulate only), so the section can be tested on its own.
def _chatgpt_cell(text, width=80):
    """A table cell on one line, pipes escaped, long answers cut, no U+FFFD."""
    text = " ".join(metrics.strip_replacement(str(text or "")).split()).replace("|", "\\|")
    return (text[: width - 1] + "…" if len(text) > width else text) or "—"


def _chatgpt_label(row):
    """What the answer is labelled with: the label 04 recorded, else the model and where it was served."""
    if row.get("label"):
        return row["label"]
    name = row.get("served_model") or row.get("model") or "ChatGPT"
    host = row.get("base_url_host")
    return f"{name} at {host}" if host and host != "api.openai.com" else name


def _chatgpt_sources(answered):
    """Where the answers came from: API model, server and time span, or a manual paste."""
    lines, groups = [], {}
    for r in answered:
        if r.get("source") == "api":
            served = r.get("served_model")
            name = r.get("model") + (f" (served as {served})" if served and served != r.get("model") else "")
            groups.setdefault((name, r.get("base_url_host") or "?", _chatgpt_label(r)), []).append(r.get("time") or "?")
    for (name, host, label), times in groups.items():
        span = min(times) if min(times) == max(times) else f"{min(times)} to {max(times)}"
        lines.append(f"- {len(times)} answer(s) from the API: model `{name}` at `{host}`, asked {span}; labelled "
                     f"**{label}**.")
    manual = [r for r in answered if r.get("source") == "manual"]
    if manual:
        names = ", ".join(sorted({r.get("model") or "ChatGPT" for r in manual}))
        files = "`, `".join(sorted({r.get("file") or "?" for r in manual}))
        lines.append(f"- {len(manual)} answer(s) pasted by hand from {names}, imported from `{files}` (file saved "
                     f"{max(r.get('time') or '?' for r in manual)}).")
    return lines


def _chatgpt_how_to():
    return [
        "To complete Task 3, run step 4 in either mode, then `python 05_report.py` again:",
        "",
        "- **API**: `OPENAI_API_KEY=sk-... python 04_chatgpt.py` (model `gpt-4o-mini` unless `--model` says "
        "otherwise); with `OPENAI_BASE_URL=http://HOST:PORT/v1` the same command asks llama.cpp's server, vLLM, "
        "Ollama or any other OpenAI-compatible server.",
        f"- **By hand** (no key, the ChatGPT web page): `python 04_chatgpt.py` writes the paste sheet "
        f"`{common.display(common.OUT / 'chatgpt_prompts.md')}` with the exact prompts and a CSV template beside it. "
        "Paste each prompt into ChatGPT, put the answers into `data/chatgpt_responses.csv` (columns `prompt,answer`) "
        "and run `python 04_chatgpt.py` again to import them.",
    ]


def chatgpt_section(generations, chatgpt_rows):
    """Task 3: the novel prompts answered by the fine-tunes and by ChatGPT (or the server 04 asked, named by its
    label), per-model figures, where each answer came from, and a comparison draft to edit. Says "not run" and how to
    run step 4 when there are no rows at all, "failed (n of 5)" when requests failed."""
    greedy = [r for r in generations if r.get("set") == "novel" and r.get("sample") is None]
    prompts = list(dict.fromkeys(r["prompt"] for r in greedy))
    outputs = {(r["model"], r["prompt"]): r for r in greedy}
    references = {r["prompt"]: r["reference"] for r in greedy if r.get("reference")}
    fts = sorted({r["model"] for r in greedy if r["model"].startswith("ft") and r["model"][2:].isdigit()},
                 key=lambda k: int(k[2:]))
    fts = fts if len(fts) <= 3 else [fts[0], fts[-1]]  # at most 7 columns
    latest = common.latest_answers(chatgpt_rows)
    chatgpt = {p: latest[p].get("answer") or "" for p in prompts if latest.get(p, {}).get("status") == "ok"}
    failed = [p for p in prompts if p in latest and p not in chatgpt]
    labels = sorted({_chatgpt_label(latest[p]) for p in chatgpt})
    names = {k: common.MODELS.get(k, f"{k[2:]}-epoch fine-tune") for k in fts} | {
        "chatgpt": " / ".join(labels) or "ChatGPT"}
    failed_text = f"failed ({len(failed)} of {len(prompts)})"

    def ft_text(k, p):
        row = outputs.get((k, p))
        return None if row is None else (row.get("output") or "")

    lines = ["## Task 3: ChatGPT on the novel prompts", ""]
    if not prompts:
        return "\n".join(lines + ["Not run: step 3 wrote no novel prompts (run `python 03_generate.py`)."])
    if chatgpt:
        lines += ["The same novel prompts, sent with an explicit emoji-only instruction (the exact text sent is in "
                  "`chatgpt.jsonl`). ⚠️words marks an answer with words in it; the marks column says which answers "
                  "are emojis only (✅) per model, in column order.", ""]
        if failed:
            lines += [f"ChatGPT requests: **{failed_text}** - `python 04_chatgpt.py` asks those again.", ""]
    elif failed:
        errors = sorted({latest[p].get("error") or "no error recorded" for p in failed})
        lines += [f"ChatGPT: **{failed_text}** - every request failed (last errors: "
                  f"{_chatgpt_cell('; '.join(errors), 200)}). Run `python 04_chatgpt.py` again once the server "
                  "answers.", ""] + _chatgpt_how_to() + [""]
    else:
        lines += ["ChatGPT: **not run** - there are no ChatGPT answers yet.", ""] + _chatgpt_how_to() + [""]

    columns = fts + ["chatgpt"]
    headers = (["prompt"] + (["reference"] if references else []) + [names[k] for k in columns]
               + ["emoji-only, in column order"])
    rows = []
    for p in prompts:
        row, status = latest.get(p, {}), []
        if p in chatgpt:
            answer_cell = _chatgpt_cell(chatgpt[p]) + (" ⚠️words" if row.get("has_words") else "")
        else:
            answer_cell = "(failed)" if row else "—"
        row_cells = [_chatgpt_cell(ft_text(k, p), 40) + (" ✂️cut" if outputs.get((k, p), {}).get("truncated") else "")
                     for k in fts] + [answer_cell]
        for k in columns:
            text = chatgpt.get(p) if k == "chatgpt" else ft_text(k, p)
            status.append("·" if text is None else "✅" if metrics.is_emoji_only(text) else "❌")
        rows.append([_chatgpt_cell(p)] + ([_chatgpt_cell(references.get(p))] if references else []) + row_cells
                    + ["".join(status)])
    lines += [tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True), ""]
    if chatgpt:
        lines += ["Where the ChatGPT answers came from:", ""]
        lines += _chatgpt_sources([latest[p] for p in prompts if p in chatgpt]) + [""]
        missing = len(prompts) - len(chatgpt)
        if missing:
            lines += [f"{missing} prompt(s) have no ChatGPT answer yet: `python 04_chatgpt.py` asks the API for only "
                      "those (or imports them from the CSV when you paste by hand). The figures below cover the "
                      "prompts ChatGPT answered.", ""]

    # Figures per model, on the same prompts: those ChatGPT answered, once it answered any.
    shared = [p for p in prompts if p in chatgpt] or prompts
    stats = {}
    for k in columns:
        texts = {p: (chatgpt.get(p) if k == "chatgpt" else ft_text(k, p)) for p in shared}
        texts = {p: t for p, t in texts.items() if t is not None}
        if not texts:
            continue
        overlap = [metrics.jaccard(t, chatgpt[p]) for p, t in texts.items() if p in chatgpt] if k != "chatgpt" else []
        f1 = [metrics.compare(t, references[p])["f1"] for p, t in texts.items() if p in references]
        stats[k] = {"n": len(texts), "emoji_only": sum(map(metrics.is_emoji_only, texts.values())),
                    "per_answer": sum(len(metrics.emojis_of(t)) for t in texts.values()) / len(texts),
                    "distinct": len({e for t in texts.values() for e in metrics.emojis_of(t)}),
                    "with_words": sum(bool(metrics.words_leaked(t)) for t in texts.values()),
                    "overlap": sum(overlap) / len(overlap) if overlap else None,
                    "f1": sum(f1) / len(f1) if f1 else None}
    figure_rows = [[_chatgpt_cell(names[k]), f"{s['emoji_only']}/{s['n']} ({s['emoji_only'] / s['n']:.0%})",
                    f"{s['per_answer']:.1f}", str(s["distinct"]), str(s["with_words"]),
                    "—" if s["overlap"] is None else f"{s['overlap']:.2f}"]
                   + (["—" if s["f1"] is None else f"{s['f1']:.2f}"] if references else [])
                   for k, s in stats.items()]
    lines += ["Per model, on these prompts: emoji-only = nothing but emojis; distinct = different emojis over all "
              "answers; overlap = mean Jaccard of the emoji sets the model and ChatGPT gave the same prompt.", "",
              tabulate(figure_rows, headers=["model", "emoji-only", "emojis per answer", "distinct emojis",
                                             "answers with words", "overlap with ChatGPT"]
                       + (["F1 vs reference"] if references else []), tablefmt="github", disable_numparse=True),
              ""]

    lines += ["### Task 3 comparison (draft - edit this)", ""]
    if "chatgpt" not in stats:
        return "\n".join(lines + ["Run step 4 first (see above): the comparison needs ChatGPT's answers."])
    c, fine = stats["chatgpt"], [k for k in fts if k in stats]

    def listing(fmt):
        return ", ".join(f"{names[k]} {fmt(stats[k])}" for k in fine + ["chatgpt"])

    lines += ["_Built from the figures above: read the table and replace each point with your own judgement._", ""]
    lines.append("- **Quality** (keeping to emojis): emoji-only answers - "
                 + listing(lambda s: f"{s['emoji_only']}/{s['n']}") + ". "
                 + (f"{names['chatgpt']} put words into {c['with_words']} of {c['n']} answer(s) despite the explicit "
                    "instruction."
                    if c["with_words"] else f"{names['chatgpt']} never added words.")
                 + " <!-- Which answers read best? -->")
    if any(stats[k]["f1"] is not None for k in stats):
        lines.append("- **Relevance**: mean F1 against the reference emojis - "
                     + ", ".join(f"{names[k]} {stats[k]['f1']:.2f}" for k in fine + ["chatgpt"]
                                 if stats[k]["f1"] is not None)
                     + ". <!-- Do the emojis carry the sentence's meaning, or only its nouns? -->")
    else:
        agree = ", ".join(f"{names[k]} {stats[k]['overlap']:.2f}" for k in fine if stats[k]["overlap"] is not None)
        lines.append("- **Relevance**: novel prompts have no reference answer, so judge by reading the table; "
                     f"agreement with ChatGPT's emojis (mean Jaccard): {agree or 'n/a'}. <!-- Which model carries "
                     "the sentence's meaning, not only its nouns? -->")
    lines.append("- **Creativity**: emojis per answer / distinct emojis - "
                 + listing(lambda s: f"{s['per_answer']:.1f} / {s['distinct']}")
                 + ". <!-- Surprising and expressive, or literal and repetitive? -->")
    if fine:
        lines.append("- **Generalisation**: none of these sentences was in the training data. The fine-tunes kept "
                     "the trained emoji-only format on "
                     + " and ".join(f"{stats[k]['emoji_only']}/{stats[k]['n']} ({names[k]})" for k in fine)
                     + f"; {names['chatgpt']}, never trained on the task, needed the written instruction and "
                     f"managed {c['emoji_only']}/{c['n']}. <!-- Did fine-tuning teach the task, or only the training "
                     "pairs? -->")
    return "\n".join(lines)


# ---------------------------------------------------------------- the report, in order
SECTIONS = [intro, run_summary, summary, known_section, consistency, novel_section, held_out, edge_section,
            lambda s: chatgpt_section(s.generations, s.chatgpt_rows), emoji_vs_general, general_section,
            diversity_section, loss_section, discussion, prompts_as_sent]


def read_inputs(epoch_runs):
    """(runs, losses, generations, chatgpt_rows) from steps 2-4; one line naming the step to run when one is
    missing."""
    for e in epoch_runs:
        common.require(common.adapter_path(e) / "run.json", "02_train.py")
        common.require(common.adapter_path(e) / "losses.json", "02_train.py")
    common.require(common.GENERATIONS, "03_generate.py")
    runs = {f"ft{e}": common.read_run(e) for e in epoch_runs}
    losses = {f"ft{e}": json.loads((common.adapter_path(e) / "losses.json").read_text(encoding="utf-8"))
              for e in epoch_runs}
    generations = common.read_jsonl(common.GENERATIONS)
    missing = sorted({m for m in ["base", *runs] for set_name in ("known", "novel", "edge", "general")
                      if not any(r["model"] == m and r["set"] == set_name for r in generations)})
    if missing:
        sys.exit(f"error: {common.display(common.GENERATIONS)} lacks answers of {', '.join(missing)} - "
                 "run `python 03_generate.py`.")
    return runs, losses, generations, common.read_jsonl(common.CHATGPT_ANSWERS)


def main():
    scores = compute_scores(*read_inputs(common.parse_epochs(EPOCHS)))
    plot_losses(scores, common.LOSS_PLOT)
    text = "\n\n".join(section(scores) for section in SECTIONS) + "\n"
    # Safety net: cells and code blocks are already cleaned, but no U+FFFD may reach the report from any path.
    common.REPORT.write_text(text.replace("\ufffd", ""), encoding="utf-8")
    print(f"saved {common.display(common.REPORT)} and {common.display(common.LOSS_PLOT)}")


if __name__ == "__main__":
    main()

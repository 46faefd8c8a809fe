"""Step 5: one Markdown report (outputs/report.md) from the files the earlier steps wrote.

A table for every assignment item (2.1 known, 2.2 novel, 2.3 edge, 3 ChatGPT, 4.2 emoji and non-emoji prompts) with
metric columns, a summary table models x metrics, held-out validation scores, consistency, overfitting signals, the
loss curves as a PNG, and a discussion draft built from the measured numbers. Optional inputs that are missing
(ChatGPT answers) appear as "not run" with the command that fills them in."""
import json
import statistics
import sys

import common
import metrics

EPOCHS = "1,5"  # the fine-tunes to report: outputs/adapters/epochsN
MAX_CELL = 220  # characters of a long answer shown in a table cell

args = common.configure(globals(), __doc__)
epoch_runs = [int(e) for e in EPOCHS.split(",") if e.strip()]
for e in epoch_runs:
    common.require(common.adapter_path(e) / "run.json", "02_train.py")
common.require(common.GENERATIONS, "03_generate.py")

from tabulate import tabulate  # noqa: E402

runs = {f"ft{e}": common.read_run(e) for e in epoch_runs}
losses = {key: json.loads((common.adapter_path(int(key[2:])) / "losses.json").read_text()) for key in runs}
generations = common.read_jsonl(common.GENERATIONS)
chatgpt_rows = common.read_jsonl(common.CHATGPT_ANSWERS)
models = ["base", *runs]
label = {key: common.MODELS.get(key, f"{key[2:]}-epoch fine-tune") for key in models}
last = models[-1]  # the longest fine-tune: the one the overfitting questions are about
missing = [key for key in models for s in ("known", "novel", "edge", "general")
           if not any(r["model"] == key and r["set"] == s for r in generations)]
if missing:
    sys.exit(f"error: {common.display(common.GENERATIONS)} lacks answers of {', '.join(sorted(set(missing)))} - "
             "run `python 03_generate.py`.")


# ---------------------------------------------------------------- lookups and cell formatting
def greedy(set_name, model):
    """prompt -> greedy answer, in the order the prompts were generated."""
    return {r["prompt"]: r["output"] for r in generations
            if r["set"] == set_name and r["model"] == model and r["sample"] is None}


def row_field(set_name, field):
    return {r["prompt"]: r[field] for r in generations if r["set"] == set_name}


def samples(prompt, model):
    return [r["output"] for r in generations if r["set"] == "known" and r["model"] == model
            and r["prompt"] == prompt and r["sample"] is not None]


def cell(text):
    """A Markdown-safe table cell: pipes escaped, line breaks kept as <br>, long answers cut."""
    text = (text or "").strip() or "(empty)"
    if len(text) > MAX_CELL:
        text = text[:MAX_CELL].rstrip() + " …"
    return text.replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def mark(text):
    """Per-output metrics in one short cell: emoji-only tick, emoji count (e), leaked words (w)."""
    d = metrics.describe(text)
    return f"{'✅' if d['emoji_only'] else '❌'} {d['n_emojis']}e" + (f" {d['n_words']}w" if d["n_words"] else "")


def pct(x):
    return f"{100 * x:.0f}%"


def mean(values):
    values = list(values)
    return statistics.fmean(values) if values else 0.0


def table(rows, headers):
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


# ---------------------------------------------------------------- measurements
def emoji_only_rate(answers):
    return mean(metrics.is_emoji_only(a) for a in answers)


def validation_scores(model):
    refs = {r["prompt"]: r["reference"] for r in generations if r["set"] == "validation"}
    answers = greedy("validation", model)
    scores = [metrics.compare(answers[p], refs[p]) for p in answers]
    return {"n": len(scores), "emoji_only": emoji_only_rate(answers.values()),
            "f1": mean(s["f1"] for s in scores), "exact": mean(s["exact"] for s in scores),
            "jaccard": mean(s["jaccard"] for s in scores)}


def known_scores(model):
    refs, answers = row_field("known", "reference"), greedy("known", model)
    scores = [metrics.compare(answers[p], refs[p]) for p in answers]
    same = [mean(s == answers[p] for s in samples(p, model)) for p in answers]
    pairwise = [metrics.mean_pairwise_jaccard(samples(p, model)) for p in answers]
    return {"exact": mean(s["exact"] for s in scores), "f1": mean(s["f1"] for s in scores),
            "same_as_greedy": mean(same), "pairwise_jaccard": mean(pairwise)}


def general_scores(model):
    keywords, answers, base = row_field("general", "keyword"), greedy("general", model), greedy("general", "base")
    base_words = mean(len(metrics.words_leaked(a)) for a in base.values())
    return {"leak": mean(metrics.is_mostly_emoji(a) for a in answers.values()),
            "keyword": mean(metrics.contains_keyword(a, keywords[p]) for p, a in answers.items()),
            "words": mean(len(metrics.words_leaked(a)) for a in answers.values()),
            "length_vs_base": mean(len(metrics.words_leaked(a)) for a in answers.values()) / base_words
            if base_words else 0.0}


def emoji_answers(model):
    """Greedy answers to every emoji request (known, novel, edge, validation): the pool for diversity."""
    return [r["output"] for r in generations if r["model"] == model and r["sample"] is None
            and r["set"] in ("known", "novel", "edge", "validation")]


val = {m: validation_scores(m) for m in models}
known = {m: known_scores(m) for m in models}
general = {m: general_scores(m) for m in models}
novel_rate = {m: emoji_only_rate(greedy("novel", m).values()) for m in models}
edge_rate = {m: emoji_only_rate(greedy("edge", m).values()) for m in models}
diversity = {m: metrics.distinct_ratio(emoji_answers(m)) for m in models}
top = {m: metrics.top_emojis(emoji_answers(m), 5) for m in models}


# ---------------------------------------------------------------- sections
def run_summary():
    first = next(iter(runs.values()))
    rows = [[label[k], r["epochs"], r["steps"], f"{r['train_seconds']:.0f}", f"{r['load_seconds']:.0f}",
             f"{r['peak_memory_gib']:.1f}", f"{r['final_train_loss']:.3f}",
             " → ".join(f"{v:.3f}" for v in r["validation_losses"])] for k, r in runs.items()]
    s = first["settings"]
    return "\n".join([
        "## Run summary", "",
        f"- Model: `{common.model_label(first['model'])}`{' through Unsloth (4-bit)' if first.get('unsloth') else ''}",
        f"- Device: {first['device']}, dtype {first['dtype']}",
        f"- Data: {first['train_size']} training and {first['validation_size']} validation pairs",
        f"- LoRA r={s['LORA_R']}, alpha {s['LORA_ALPHA']}, dropout {s['LORA_DROPOUT']}; batch {s['BATCH_SIZE']}"
        f"×{s['GRAD_ACCUM']}, learning rate {s['LEARNING_RATE']} ({s['LR_SCHEDULER']}), weight decay "
        f"{s['WEIGHT_DECAY']}, seed {s['SEED']}", "",
        table(rows, ["run", "epochs", "steps", "train s", "load s", "peak memory GiB", "final train loss",
                     "validation loss per epoch (epoch 0 = before training)"]),
    ])


def summary_table():
    rows = []
    for m in models:
        rows.append([label[m], pct(val[m]["emoji_only"]), f"{val[m]['f1']:.2f}", pct(val[m]["exact"]),
                     f"{known[m]['f1']:.2f}", pct(known[m]["same_as_greedy"]), f"{known[m]['pairwise_jaccard']:.2f}",
                     pct(novel_rate[m]), pct(edge_rate[m]), pct(general[m]["leak"]), pct(general[m]["keyword"]),
                     f"{diversity[m]:.2f}"])
    return "\n".join([
        "## Summary: models × metrics", "",
        table(rows, ["model", "validation emoji-only", "validation F1", "validation exact", "known F1",
                     "known samples = greedy", "known sample Jaccard", "novel emoji-only", "edge emoji-only",
                     "non-emoji leak rate", "non-emoji keyword hit", "distinct emojis / total"]),
        "",
        f"Validation = the {val['base']['n']} held-out pairs of the validation split (greedy). F1 and Jaccard compare "
        "emoji multisets/sets with the reference; exact = the same emojis in the same order and nothing else. Known "
        "samples = share of sampled answers identical to the greedy one. Leak rate = non-emoji questions answered all "
        "or mostly in emoji. Keyword hit = the answer names the expected fact (e.g. Berlin).",
    ])


def prompt_table(title, set_name, model_keys, note, with_reference=False):
    refs = row_field(set_name, "reference")
    answers = {m: greedy(set_name, m) for m in model_keys}
    headers = ["prompt"] + (["reference"] if with_reference else []) + [label[m] for m in model_keys]
    headers += [f"{label[m]} emoji-only, emojis, words" for m in model_keys]
    if with_reference:
        headers += [f"{label[m]} F1" for m in model_keys]
    rows = []
    for p in answers[model_keys[0]]:
        row = [cell(p)] + ([refs[p]] if with_reference else []) + [cell(answers[m][p]) for m in model_keys]
        row += [mark(answers[m][p]) for m in model_keys]
        if with_reference:
            row += [f"{metrics.compare(answers[m][p], refs[p])['f1']:.2f}" for m in model_keys]
        rows.append(row)
    return "\n".join([f"## {title}", "", note, "", table(rows, headers)])


def consistency_table():
    rows = []
    for p in greedy("known", last):
        for m in runs:
            outs = samples(p, m)
            rows.append([cell(p), label[m], " ".join(outs) or "(none)",
                         pct(mean(o == greedy("known", m)[p] for o in outs)),
                         f"{metrics.mean_pairwise_jaccard(outs):.2f}"])
    return "\n".join(["### Consistency on the known prompts (sampled answers)", "",
                      table(rows, ["prompt", "model", "sampled answers", "same as greedy", "mean pairwise Jaccard"])])


def validation_table():
    rows = [[label[m], val[m]["n"], pct(val[m]["emoji_only"]), f"{val[m]['f1']:.2f}", f"{val[m]['jaccard']:.2f}",
             pct(val[m]["exact"])] for m in models]
    return "\n".join(["## Generalisation on the held-out validation split", "",
                      table(rows, ["model", "prompts", "emoji-only", "mean F1", "mean Jaccard", "exact match"])])


def general_table():
    keywords = row_field("general", "keyword")
    answers = {m: greedy("general", m) for m in ("base", last)}
    rows = [[cell(p), keywords[p], cell(answers["base"][p]), cell(answers[last][p]),
             "yes" if metrics.is_mostly_emoji(answers[last][p]) else "no",
             "yes" if metrics.contains_keyword(answers[last][p], keywords[p]) else "no"] for p in answers["base"]]
    return "\n".join([
        f"## 4.2 Non-emoji prompts: original model vs {label[last]}", "",
        "Questions that should be answered in words. An answer in emojis, or without the expected fact, is a sign "
        "that fine-tuning overwrote general ability (overfitting to the emoji task).", "",
        table(rows, ["prompt", "expected keyword", label["base"], label[last], f"{label[last]} emoji leak",
                     f"{label[last]} has keyword"]),
        "",
        table([[label[m], pct(general[m]["leak"]), pct(general[m]["keyword"]), f"{general[m]['words']:.1f}",
                f"{general[m]['length_vs_base']:.2f}"] for m in models],
              ["model", "emoji-leak rate", "keyword hit", "words per answer", "length vs original"]),
    ])


def diversity_table():
    rows = [[label[m], f"{diversity[m]:.2f}", " ".join(f"{e}×{n}" for e, n in top[m]) or "(none)"] for m in models]
    return "\n".join(["### Diversity of emoji answers (known, novel, edge and validation prompts, greedy)", "",
                      table(rows, ["model", "distinct emojis / total", "most frequent emojis"])])


def loss_section():
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers or in CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key, curve in losses.items():
        line, = ax.plot([t["epoch"] for t in curve["train"]], [t["loss"] for t in curve["train"]], alpha=0.6,
                        label=f"{label[key]}: train (per step)")
        ax.plot([v["epoch"] for v in curve["validation"]], [v["loss"] for v in curve["validation"]], "o-",
                color=line.get_color(), linewidth=2, label=f"{label[key]}: validation (per epoch)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss on the answer tokens")
    ax.set_title("Training and validation loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    common.LOSS_PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(common.LOSS_PLOT, dpi=120)
    plt.close(fig)
    epochs = max(len(c["validation"]) for c in losses.values())
    rows = [[label[k]] + [f"{v['loss']:.3f}" for v in c["validation"]] + [""] * (epochs - len(c["validation"]))
            for k, c in losses.items()]
    return "\n".join(["## Loss curves", "", f"![Training and validation loss]({common.LOSS_PLOT.name})", "",
                      table(rows, ["run"] + [f"epoch {i}" for i in range(epochs)])])


# Task 3 helpers: self-contained (common, metrics, tabulate only), so the section can be tested on its own.
def _chatgpt_cell(text, width=80):
    """A table cell on one line, pipes escaped, long answers cut."""
    text = " ".join(str(text or "").split()).replace("|", "\\|")
    return (text[: width - 1] + "…" if len(text) > width else text) or "—"


def _chatgpt_sources(answered):
    """Where the answers came from: API model, server and time span, or a manual paste."""
    lines, groups = [], {}
    for r in answered:
        if r.get("source") == "api":
            served = r.get("served_model")
            name = r.get("model") + (f" (served as {served})" if served and served != r.get("model") else "")
            groups.setdefault((name, r.get("base_url_host") or "?"), []).append(r.get("time") or "?")
    for (name, host), times in groups.items():
        span = min(times) if min(times) == max(times) else f"{min(times)} to {max(times)}"
        lines.append(f"- {len(times)} answer(s) from the API: model `{name}` at `{host}`, asked {span}.")
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
    """Task 3: the novel prompts answered by the fine-tunes and by ChatGPT, per-model figures, where each ChatGPT
    answer came from, and a comparison draft to edit. Says "not run" and how to run step 4 without answers."""
    greedy = [r for r in generations if r.get("set") == "novel" and r.get("sample") is None]
    prompts = list(dict.fromkeys(r["prompt"] for r in greedy))
    outputs = {(r["model"], r["prompt"]): r.get("output") or "" for r in greedy}
    references = {r["prompt"]: r["reference"] for r in greedy if r.get("reference")}
    fts = sorted({r["model"] for r in greedy if r["model"].startswith("ft") and r["model"][2:].isdigit()},
                 key=lambda k: int(k[2:]))
    names = {k: common.MODELS.get(k, f"{k[2:]}-epoch fine-tune") for k in fts} | {"chatgpt": "ChatGPT"}
    latest = common.latest_answers(chatgpt_rows)
    chatgpt = {p: latest[p].get("answer") or "" for p in prompts if latest.get(p, {}).get("status") == "ok"}

    lines = ["## Task 3: ChatGPT on the novel prompts", ""]
    if not prompts:
        return "\n".join(lines + ["Not run: step 3 wrote no novel prompts (run `python 03_generate.py`)."])
    if chatgpt:
        lines += ["The same novel prompts, sent to ChatGPT with an explicit emoji-only instruction (the exact text "
                  "sent is in `chatgpt.jsonl`). ⚠️words marks an answer with words in it; the marks column says "
                  "which answers are emojis only (✅) per model, in column order.", ""]
    else:
        lines += ["ChatGPT: **not run** - there are no ChatGPT answers yet.", ""] + _chatgpt_how_to() + [""]

    columns = fts + ["chatgpt"]
    headers = (["prompt"] + (["reference"] if references else []) + [names[k] for k in columns]
               + ["emoji-only " + " / ".join(names[k].replace(" fine-tune", "") for k in columns)])
    rows = []
    for p in prompts:
        row, status = latest.get(p, {}), []
        if p in chatgpt:
            answer = _chatgpt_cell(chatgpt[p]) + (" ⚠️words" if row.get("has_words") else "")
        else:
            answer = "(failed)" if row else "—"
        row_cells = [_chatgpt_cell(outputs.get((k, p)), 40) for k in fts] + [answer]
        for k in columns:
            text = chatgpt.get(p) if k == "chatgpt" else outputs.get((k, p))
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
        texts = {p: (chatgpt.get(p) if k == "chatgpt" else outputs.get((k, p))) for p in shared}
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
    figure_rows = [[names[k], f"{s['emoji_only']}/{s['n']} ({s['emoji_only'] / s['n']:.0%})",
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
                 + (f"ChatGPT put words into {c['with_words']} of {c['n']} answer(s) despite the explicit instruction."
                    if c["with_words"] else "ChatGPT never added words.")
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
                     + f"; ChatGPT, never trained on the task, needed the written instruction and managed "
                     f"{c['emoji_only']}/{c['n']}. <!-- Did fine-tuning teach the task, or only the training pairs? -->")
    return "\n".join(lines)


def discussion():
    """Task 4.3 draft: every number in it is read from the measurements above."""
    v_last = losses[last]["validation"]
    best = min(v_last, key=lambda v: v["loss"])
    rising = v_last[-1]["loss"] > best["loss"] + 1e-9
    first_ft = models[1]
    trend = (f"its validation loss fell to {best['loss']:.3f} at epoch {best['epoch']:.0f} and then rose to "
             f"{v_last[-1]['loss']:.3f} at epoch {v_last[-1]['epoch']:.0f}" if rising else
             f"its validation loss kept falling, to {v_last[-1]['loss']:.3f} at epoch {v_last[-1]['epoch']:.0f}")
    leak, leak_base = general[last]["leak"], general["base"]["leak"]
    kw, kw_base = general[last]["keyword"], general["base"]["keyword"]
    signs = []
    if rising:
        signs.append("a rising validation loss")
    if pct(leak) != pct(leak_base) and leak > leak_base:
        signs.append(f"an emoji-leak rate on non-emoji questions of {pct(leak)} against {pct(leak_base)} for the "
                     "original model")
    if pct(kw) != pct(kw_base) and kw < kw_base:
        signs.append(f"fewer correct facts ({pct(kw)} keyword hits against {pct(kw_base)})")
    gap, gap_first = known[last]["f1"] - val[last]["f1"], known[first_ft]["f1"] - val[first_ft]["f1"]
    if round(gap, 2) > round(gap_first, 2) and gap > 0:
        signs.append(f"a memorisation gap (F1 {known[last]['f1']:.2f} on training prompts against "
                     f"{val[last]['f1']:.2f} held out; {known[first_ft]['f1']:.2f} against "
                     f"{val[first_ft]['f1']:.2f} after one epoch)")
    if round(diversity[last], 2) < round(diversity[first_ft], 2):  # compare what the tables show
        signs.append(f"less varied emojis ({diversity[last]:.2f} distinct per emoji against "
                     f"{diversity[first_ft]:.2f} after one epoch)")
    leak_note = (f" The leak is already {pct(general[first_ft]['leak'])} after one epoch, so it comes from training "
                 "on emoji-only answers at all, not only from the extra epochs."
                 if leak > leak_base and general[first_ft]["leak"] >= leak else "")
    verdict = ("shows signs of overfitting: " + "; ".join(signs) + "." if signs else
               "shows no clear sign of overfitting in these measurements.")
    text = " ".join([
        f"Draft for Task 4.3 - edit before use. After {runs[last]['epochs_trained']:g} epochs, {trend}; the "
        f"{runs[first_ft]['epochs']}-epoch run ended at {losses[first_ft]['validation'][-1]['loss']:.3f}.",
        f"On the held-out validation split the {runs[last]['epochs']}-epoch model reaches F1 {val[last]['f1']:.2f} "
        f"and {pct(val[last]['emoji_only'])} emoji-only answers, against F1 {val[first_ft]['f1']:.2f} and "
        f"{pct(val[first_ft]['emoji_only'])} after one epoch and F1 {val['base']['f1']:.2f} for the base model.",
        f"The {runs[last]['epochs']}-epoch model therefore {verdict}{leak_note}",
        "Early stopping on validation loss (`python 02_train.py --early-stopping true`) would keep the epoch with "
        f"the lowest loss, here epoch {best['epoch']:.0f}.",
        f"Regularisation is a cheap second lever: LoRA dropout is {runs[last]['settings']['LORA_DROPOUT']}, weight "
        f"decay {runs[last]['settings']['WEIGHT_DECAY']} and rank {runs[last]['settings']['LORA_R']}, so raising the "
        "first two or lowering the rank limits how far the adapter can drift.",
        "Data augmentation addresses the leak directly: mixing general instruction pairs into training keeps "
        "word answers alive, and paraphrased sentences teach meaning rather than memorised strings.",
        f"With only {runs[last]['train_size']} pairs, hyperparameter tuning (learning rate, epochs, rank) is "
        "affordable and should be judged on validation F1 and the leak rate together, not on training loss.",
    ])
    return text


report_parts = [
    "# Emoji fine-tuning report", "",
    f"Generated by `05_report.py` from `{common.display(common.GENERATIONS)}` and the adapters in "
    f"`{common.display(common.ADAPTER_DIR)}`. In the prompt tables ✅ = the answer is emojis only, `3e` = 3 emojis, `5w` = 5 words leaked.", "",
    run_summary(), "",
    summary_table(), "",
    prompt_table("2.1 Known prompts (from the training data)", "known", models,
                 "Accuracy against the training target (greedy answers).", with_reference=True), "",
    consistency_table(), "",
    prompt_table("2.2 Novel prompts (not in the data)", "novel", models,
                 "Generalisation to sentences the model never saw."), "",
    validation_table(), "",
    prompt_table("2.3 Edge cases (ambiguous or contradictory)", "edge", models,
                 "How each model handles mixed or paradoxical feelings."), "",
    chatgpt_section(generations, chatgpt_rows), "",
    prompt_table(f"4.2 Emoji prompts: {label[last]}", "novel", models[1:],
                 f"The novel prompts again, the {label[last]} beside the shorter run."), "",
    general_table(), "",
    diversity_table(), "",
    loss_section(), "",
]
draft = discussion()
report_parts += ["## 4.3 Discussion (draft)", "", f"_{len(draft.split())} words - a draft built from the numbers "
                 "above; check and rewrite it in your own words._", "", draft, ""]
common.REPORT.write_text("\n".join(report_parts), encoding="utf-8")
print(f"saved {common.display(common.REPORT)} and {common.display(common.LOSS_PLOT)}")

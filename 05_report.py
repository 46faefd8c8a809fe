"""Step 5: one Markdown report (outputs/report.md) from the files the earlier steps wrote.

A table for every assignment item (2.1 known, 2.2 novel, 2.3 edge, 3 ChatGPT, 4.2 non-emoji prompts), summary tables
with 95% intervals (Wilson for rates, bootstrap for means), held-out scores on the test split beside a
nearest-neighbour lookup baseline, consistency, diversity, the loss curves as a PNG, drafts for Tasks 2.3, 3 and 4.3
built from the measured numbers, and the exact prompts the models received. ChatGPT answers that are missing appear as
"not run" with the command that fills them in.

Every number comes from one tidy table of scores (lib/scores.py: model × prompt set × metric, with its interval);
lib/templates/report.md.j2 lays out the sections and their text, lib/templates/drafts.md.j2 writes the drafts, and
lib/report.py renders the tables and the plot."""
from lib import settings, store

EPOCHS = "1,5"  # the fine-tunes to report: outputs/adapters/epochsN
MAX_CELL = 220  # characters of a long answer shown in a table cell
BOOTSTRAP_SAMPLES = 2000  # resamples behind each 95% interval of a mean

settings.configure(globals(), __doc__, checks=dict(EPOCHS=settings.epochs, MAX_CELL=settings.whole(10, 10000),
                                                   BOOTSTRAP_SAMPLES=settings.whole(100, 100000)))
store.lock("05_report")

import pandas as pd  # noqa: E402  (after --help and the setting checks)

from lib import drafts, metrics, prompts, report, scores  # noqa: E402

# ---- read the inputs: every fine-tune's run.json and losses, the answers of steps 3 and 4; then the scores: one row
# per model × prompt set × metric, each with its 95% interval
runs, losses = {}, {}
for e in settings.parse_epochs(EPOCHS):
    runs[f"ft{e}"], losses[f"ft{e}"] = scores.read_run(e)
s = scores.build(scores.read_generations(["base", *runs]), store.read_jsonl(store.CHATGPT_ANSWERS, required=(
    "prompt", "status")), list(runs), BOOTSTRAP_SAMPLES)
L, A, models, report.MAX_CELL = s.labels, s.answers, [*s.models, *s.baselines], MAX_CELL

# ---- the tables that are more than scores (the template adds the score tables, the prompt sets' tables and the text)
run_table = pd.DataFrame([{
    "run": L[k], "epochs": f"{r['epochs']}" + (f" (stopped at {r['epochs_trained']:g})" if r.get(
        "epochs_trained", r["epochs"]) < r["epochs"] - 1e-6 else ""), "steps": r["steps"],
    "train s": f"{r['train_seconds']:.0f}", "load s": f"{r['load_seconds']:.0f}",
    "peak memory GiB": f"{r['peak_memory_gib']:.1f}", "final train loss": f"{r['final_train_loss']:.3f}"}
    for k, r in runs.items()])
c = s.consistency  # 2.1: the sampled answers to the known prompts
consistency = pd.DataFrame({
    "prompt": c.prompt, "model": c.model.map(L), "greedy answer": c.output.str.strip().replace("", "(empty)"),
    "sampled answers": c.sampled.map(lambda os: " ".join(o or "(empty)" for o in os)),
    "same as greedy": c.same.map("{:.0%}".format), "mean pairwise Jaccard": c.jaccard.map("{:.2f}".format)})
test = A[A.set == "test"].groupby("model").agg(n=("prompt", "size"), cut=("truncated", "sum")).reindex(models).fillna(0)
held_out = report.figures(s, models, {"emoji-only": "test emoji_only", "mean F1": "test f1", "mean soft F1":
                                      "test soft_f1", "exact": "test exact"}).assign(
    n=test.n.astype(int).values, **{report.CUT: test.cut.astype(int).values})
task3 = report.prompt_frame(s, "novel", [*s.task3_models, *([] if s.answered else ["chatgpt"])], report.answer)
task3[L["chatgpt"]] = task3[L["chatgpt"]].mask(task3[L["chatgpt"]] == "(missing)",
                                               task3.prompt.map(lambda p: "(failed)" if p in s.failed else "—"))
instructed = A[(A.set == "general") & A.model.isin(s.models)].input.fillna("").str.contains(prompts.SYSTEM_PROMPT,
                                                                                            regex=False)
everyone = [*models, *(["chatgpt"] if s.answered else [])]
pool = A[A.set.isin(scores.EMOJI_SETS)].groupby("model").output.agg(list)
diversity = report.figures(s, everyone, {"distinct emojis / total": "emoji distinct_ratio"}).assign(**{
    "most frequent emojis": [" ".join(f"{e}×{n}" for e, n in metrics.top_emojis(pool[m], 5)) or "(none)"
                             for m in everyone]})
val = pd.concat({f"{L[k]} validation loss": v.loss.map("{:.3f}".format).where(v.index != v.loss.idxmin(), lambda x:
                 x + " (lowest)").set_axis(v.epoch) for k, v in ((k, c["validation"]) for k, c in losses.items())},
                axis=1).sort_index().fillna("").rename(index="{:g}".format).reset_index(names="epoch")

# ---- save both files atomically (a failed write keeps the previous ones), and say what was done
report.plot_losses(losses, L, store.LOSS_PLOT)
store.write_text(store.REPORT, report.render(
    s, drafts=drafts, runs=runs, first=runs[s.fts[0]], models=models, everyone=everyone, run_table=run_table,
    consistency=consistency, n_test=int(test.n["base"]), held_out=held_out, task3=task3, instructed=instructed,
    diversity=diversity, val=val, discussion=drafts.discussion(s, runs[s.fts[-1]], losses[s.fts[-1]]["validation"]),
    sent=report.prompts_as_sent(s), instruction=prompts.SYSTEM_PROMPT))
print(f"saved {store.display(store.REPORT)} and {store.display(store.LOSS_PLOT)}")

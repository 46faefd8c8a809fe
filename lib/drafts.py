"""What the drafts in the report (05) state, worked out from the scores; their words are in lib/templates/drafts.md.j2:
Task 2.3 notes on the edge cases, the state of Task 3 with a comparison draft, and the Task 4.3 discussion. They are
drafts for the student to check and rewrite; a difference is stated only where the 95% intervals do not overlap
(scores.differs)."""
from types import SimpleNamespace

from lib import metrics
from lib.report import figure
from lib.scores import chatgpt_label, differs, get


def edge_verdict(row):
    """Task 2.3's rule as (kind, the prompt quoted): failed = empty, cut by the token budget, or not emojis only
    (saying which); otherwise two or more different emojis can cover both meanings, a single one covers one at most."""
    why = "empty" if not row.output.strip() else "cut" if row.truncated else (
        "" if metrics.is_emoji_only(row.output) else "words")
    return ("failed", f'"{row.prompt}" ({why})') if why else (
        "both" if len(set(metrics.emojis_of(row.output))) >= 2 else "one", f'"{row.prompt}"')


def edge_notes(s):
    """{model: [(kind, [prompts quoted])]} in the order both, one, failed; kinds without prompts left out."""
    got = {m: [edge_verdict(r) for r in s.answers[(s.answers.model == m) & (s.answers.set == "edge")].itertuples()]
           for m in s.models}
    return {m: [(kind, [text for k, text in verdicts if k == kind]) for kind in ("both", "one", "failed")
                if kind in dict(verdicts)] for m, verdicts in got.items()}


def errors(s):
    """The last error of each failed ChatGPT request, each once."""
    return "; ".join(sorted({s.latest[p].get("error") or "no error recorded" for p in s.failed}))


def chatgpt_sources(s):
    """Where the ChatGPT answers came from: {(source, model, served model, host, file, label): [times]}."""
    groups = {}
    for r in s.answered.values():
        served = r.get("served_model") if r.get("served_model") != r.get("model") else None
        groups.setdefault((r.get("source"), r.get("model") or "ChatGPT", served, r.get("base_url_host") or "?",
                           r.get("file") or "?", chatgpt_label(r)), []).append(r.get("time") or "?")
    return groups


def listing(s, metric, models=None):
    """Each model's figure on the prompts ChatGPT answered (set "task3"): "1-epoch fine-tune 80% [38–96], ..."."""
    return ", ".join(f"{s.labels[m]} {figure(x)}" for m in (models or s.task3_models)
                     if (x := get(s.table, m, "task3", metric)) is not None)


def discussion(s, run, validation):
    """Task 4.3's facts on the longest fine-tune: its run.json and validation curve, and the scores."""
    first, last = s.fts[0], s.fts[-1]
    best, end = validation.loc[validation.loss.idxmin()], validation.iloc[-1]
    f1 = {m: get(s.table, m, "test", "f1") for m in ["base", *s.fts, *s.baselines]}
    leak, hit = ({m: get(s.table, m, "general", k) for m in (last, "base")} for k in ("leak", "keyword"))
    above = lambda a, b: differs(a, b) and a.value > b.value  # noqa: E731
    rising = end.loss > best.loss + 1e-9
    signs = [text for text, shown in [(f"a validation loss rising after epoch {best.epoch:g}", rising),
                                      (f"a lower held-out F1 than the {s.labels[first]}", above(f1[first], f1[last])),
                                      ("answers in emoji where none were asked for", above(leak[last], leak["base"])),
                                      ("fewer correct facts", above(hit["base"], hit[last]))] if shown]
    return SimpleNamespace(first=first, last=last, name=s.labels[last], best=best, end=end, rising=rising, f1=f1,
                           leak=leak, hit=hit, signs=signs, settings=run["settings"],
                           augmented=run.get("augmented_size") or 0)

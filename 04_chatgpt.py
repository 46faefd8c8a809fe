"""Step 4: ask ChatGPT (or any OpenAI-compatible server) the same NOVEL prompts the fine-tunes answered in step 3.

Modes (MODE=auto picks):
  api     OPENAI_API_KEY and/or OPENAI_BASE_URL is set. Each prompt is sent through the Chat Completions API and
          every answer is appended to outputs/chatgpt.jsonl the moment it arrives. A re-run asks only for prompts
          without an answer (--force asks again); Ctrl-C keeps everything already received. OPENAI_BASE_URL points
          the same script at llama.cpp's server, vLLM, Ollama or any other OpenAI-compatible endpoint
          (e.g. http://127.0.0.1:8080/v1); a local server without authentication needs no key.
  manual  Neither is set (e.g. you use the ChatGPT web page). The script writes outputs/chatgpt_prompts.md, a paste
          sheet with the exact prompts, and a CSV template; paste ChatGPT's answers into data/chatgpt_responses.csv
          (columns prompt,answer) and run this script again to import them. Exits 0 either way.

Exit status: 0 when nothing failed (in manual mode always), 1 when some prompt has no answer because its request
failed, 2 when the server refused the key, the model or the quota, 130 when interrupted.
The API key is never written anywhere: only the server's host name is recorded next to each answer.
"""
import csv
import os
import random
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import common
import metrics

MODE = "auto"  # auto | api | manual
MODEL = "gpt-4o-mini"  # the ChatGPT model asked through the API (any name your server knows)
TEMPERATURE = 0.7
MAX_TOKENS = 60  # an emoji answer is short; this bounds the cost of a chatty one
# The exact instruction wrapped around each sentence; {sentence} is replaced by the novel prompt.
INSTRUCTION = "Respond only with emojis that capture this sentence: {sentence}"
TIMEOUT_S = 30.0  # per request
MAX_RETRIES = 4  # extra attempts after a rate limit (429), server error (5xx), timeout or lost connection
BACKOFF_S = 1.0  # first retry waits about this long, then 2x, 4x, ... with +-50% jitter
BACKOFF_MAX_S = 30.0
STOP_AFTER_FAILED = 3  # consecutive prompts that fail after all retries before giving up on the server
MANUAL_CSV = str(common.DATA_DIR / "chatgpt_responses.csv")  # answers pasted from the ChatGPT web page
MANUAL_MODEL = "ChatGPT (web)"  # recorded for pasted answers unless the CSV has a model column

args = common.configure(globals(), __doc__)

PASTE_SHEET = common.OUT / "chatgpt_prompts.md"
CSV_TEMPLATE = common.OUT / "chatgpt_responses_template.csv"
API_KEY = os.environ.get("OPENAI_API_KEY", "").strip()
BASE_URL = os.environ.get("OPENAI_BASE_URL", "").strip()


def now_iso():
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def adapt(sentence):
    return INSTRUCTION.replace("{sentence}", sentence) if "{sentence}" in INSTRUCTION else f"{INSTRUCTION} {sentence}"


def redact(text):
    """Remove the key, and anything shaped like an OpenAI key (servers echo masked keys in 401 messages)."""
    text = str(text)
    if API_KEY:
        text = text.replace(API_KEY, "***")
    return re.sub(r"\b(sk|key)-[A-Za-z0-9_*\-.]{3,}", r"\1-***", text)


def host_of(url):
    parts = urlsplit(str(url))
    return parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else ""


def answer_fields(text):
    """The raw answer plus its emoji-only extraction and the words it leaked."""
    text = text or ""
    words = metrics.words_leaked(text)
    return {"answer": text, "emojis": "".join(metrics.emojis_of(text)), "emoji_only": metrics.is_emoji_only(text),
            "has_words": bool(words), "words": words}


def answers_so_far():
    return common.latest_answers(common.read_jsonl(common.CHATGPT_ANSWERS))


def compact(path):
    """Rewrite the answers file with one row per prompt when re-runs superseded some rows. Atomic: an
    interruption leaves either the old or the new file, both valid (readers take the latest row anyway)."""
    rows = common.read_jsonl(path)
    keep = list(common.latest_answers(rows).values())
    if len(keep) != len(rows):
        common.write_jsonl(path, keep)


def short(text, width=60):
    text = " ".join(str(text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


# ---------------------------------------------------------------- the novel prompts from step 3
common.require(common.GENERATIONS, "03_generate.py")
generations = common.read_jsonl(common.GENERATIONS)
prompts = list(dict.fromkeys(r["prompt"] for r in generations if r.get("set") == "novel" and r.get("sample") is None))
if not prompts:
    sys.exit(f"error: {common.display(common.GENERATIONS)} holds no novel prompts - re-run `python 03_generate.py`.")
sent_of = {p: adapt(p) for p in prompts}

# The paste sheet and CSV template are cheap, so they are refreshed on every run, whatever the mode.
PASTE_SHEET.parent.mkdir(parents=True, exist_ok=True)
manual_csv = Path(MANUAL_CSV)
sheet = [
    "# Task 3: the novel prompts for ChatGPT",
    "",
    "Without an API key, ask ChatGPT by hand:",
    "",
    "1. Open ChatGPT in your browser and start a **new chat for each prompt**, so earlier answers don't steer it.",
    "2. Paste the prompt exactly as written below and copy ChatGPT's whole answer, words and all.",
    f"3. Copy `{common.display(CSV_TEMPLATE)}` to `{common.display(manual_csv)}` and paste each answer into the "
    "`answer` column of its row (leave the `prompt` column as it is; optionally write the ChatGPT model you used "
    "into `model`).",
    "4. Run `python 04_chatgpt.py` again to import the answers, then `python 05_report.py`.",
    "",
    f"With a key instead: `OPENAI_API_KEY=... python 04_chatgpt.py` (model `{MODEL}`), or point `OPENAI_BASE_URL` at "
    "any OpenAI-compatible server.",
    "",
]
for i, prompt in enumerate(prompts, 1):
    sheet += [f"## Prompt {i}", "", "```text", sent_of[prompt], "```", ""]
PASTE_SHEET.write_text("\n".join(sheet), encoding="utf-8")
with CSV_TEMPLATE.open("w", encoding="utf-8-sig", newline="") as f:  # BOM so spreadsheet programs read UTF-8
    writer = csv.writer(f)
    writer.writerow(["prompt", "answer", "model"])
    writer.writerows([p, "", ""] for p in prompts)

mode = MODE if MODE != "auto" else ("api" if API_KEY or BASE_URL else "manual")
if mode not in ("api", "manual"):
    sys.exit(f"error: --mode must be auto, api or manual, not {MODE!r}")
done = {p: r for p, r in answers_so_far().items() if r.get("status") == "ok"}


def summary_table():
    by_model = {(r["model"], r["prompt"]): r["output"] for r in generations
                if r.get("set") == "novel" and r.get("sample") is None}
    answers = answers_so_far()
    rows = []
    for prompt in prompts:
        row = answers.get(prompt, {})
        chatgpt = row.get("answer") if row.get("status") == "ok" else ("(failed)" if row else "—")
        rows.append([short(prompt, 40)] + [short(by_model.get((m, prompt), "—"), 20) for m in ("ft1", "ft5")]
                    + [short(chatgpt, 30)])
    from tabulate import tabulate

    return tabulate(rows, headers=["prompt", "ft1", "ft5", "ChatGPT"], tablefmt="github")


# ---------------------------------------------------------------- manual mode
def read_manual(path):
    """{prompt: (answer, model)} from the user's CSV; a prompt cell may hold the sentence or the full adapted text."""
    def key(text):
        return " ".join((text or "").split()).casefold()

    lookup = {key(p): p for p in prompts} | {key(sent_of[p]): p for p in prompts}
    found, unknown = {}, []
    with path.open(encoding="utf-8-sig", newline="") as f:
        for row in csv.DictReader(f):
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            cell = row.get("prompt") or row.get("sentence") or ""
            answer = row.get("answer") or row.get("response") or ""
            if not answer:
                continue
            if key(cell) in lookup:
                found[lookup[key(cell)]] = (answer, row.get("model") or MANUAL_MODEL)
            else:
                unknown.append(cell)
    if unknown:
        print(f"warning: {len(unknown)} row(s) of {common.display(path)} match no novel prompt and were skipped: "
              + "; ".join(short(u, 40) for u in unknown))
    return found


if mode == "manual":
    print(f"mode: manual (no OPENAI_API_KEY / OPENAI_BASE_URL) | paste sheet: {common.display(PASTE_SHEET)}")
    if not manual_csv.exists():
        print(f"no answers yet: paste ChatGPT's answers into {common.display(manual_csv)} "
              f"(template: {common.display(CSV_TEMPLATE)}) and run this script again - or set OPENAI_API_KEY.")
        sys.exit(0)
    found = read_manual(manual_csv)
    file_time = datetime.fromtimestamp(manual_csv.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
    new = []
    for prompt in prompts:
        if prompt not in found:
            continue
        answer, model = found[prompt]
        old = done.get(prompt)
        if old and old.get("source") != "manual" and not args.force:
            continue  # an API answer stays unless --force
        if old and old.get("source") == "manual" and old.get("answer") == answer and not args.force:
            continue  # already imported, unchanged
        new.append({"prompt": prompt, "sent": sent_of[prompt], **answer_fields(answer), "source": "manual",
                    "model": model, "base_url_host": None, "file": common.display(manual_csv), "time": file_time,
                    "status": "ok", "error": None})
    common.append_jsonl(common.CHATGPT_ANSWERS, new)
    compact(common.CHATGPT_ANSWERS)
    have = len(found.keys() & set(prompts))
    print(f"imported {len(new)} new or changed answer(s); {have}/{len(prompts)} prompts have a pasted answer "
          f"-> {common.display(common.CHATGPT_ANSWERS)}")
    print(summary_table())
    sys.exit(0)


# ---------------------------------------------------------------- api mode
import openai  # noqa: E402  (only needed here)


class Fatal(Exception):
    """The server refused something no retry can fix: the key, the model or the quota."""


def retryable(error):
    if isinstance(error, openai.APIConnectionError):  # includes timeouts
        return True
    return isinstance(error, openai.APIStatusError) and (error.status_code in (408, 409, 429)
                                                        or error.status_code >= 500)


def describe_error(error):
    status = getattr(error, "status_code", None)
    what = type(error).__name__ + (f" {status}" if status else "")
    detail = getattr(error, "message", None) or str(error)
    return redact(f"{what}: {short(detail, 160)}")


def ask(client, sent):
    """One answer, retrying transient failures with exponential backoff and jitter. Raises Fatal, or the last
    error once the retries are used up."""
    for attempt in range(MAX_RETRIES + 1):
        try:
            return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": sent}],
                                                  temperature=TEMPERATURE, max_tokens=MAX_TOKENS)
        except openai.AuthenticationError:
            raise Fatal(f"the server at {host} rejected the API key (401) - check OPENAI_API_KEY. Nothing was retried.")
        except openai.PermissionDeniedError:
            raise Fatal(f"the server at {host} refused access (403) - the key may lack access to model {MODEL!r}.")
        except openai.NotFoundError:
            raise Fatal(f"model {MODEL!r} or the chat endpoint was not found at {host} (404) - check --model and "
                        "OPENAI_BASE_URL (it usually ends in /v1).")
        except openai.RateLimitError as error:
            if getattr(error, "code", None) == "insufficient_quota":
                raise Fatal(f"the account behind the key has no quota left at {host} (429 insufficient_quota).")
            last = error
        except openai.OpenAIError as error:
            if not retryable(error):
                raise
            last = error
        if attempt == MAX_RETRIES:
            raise last
        delay = min(BACKOFF_MAX_S, BACKOFF_S * 2 ** attempt) * random.uniform(0.5, 1.5)
        retry_after = getattr(getattr(last, "response", None), "headers", {}).get("retry-after")
        if retry_after and retry_after.replace(".", "", 1).isdigit():
            delay = max(delay, min(float(retry_after), BACKOFF_MAX_S))
        print(f"  {describe_error(last)} - retry {attempt + 1}/{MAX_RETRIES} in {delay:.2f}s", flush=True)
        time.sleep(delay)


client = openai.OpenAI(api_key=API_KEY or "no-key", base_url=BASE_URL or None, timeout=TIMEOUT_S, max_retries=0)
host = host_of(client.base_url)
todo = prompts if args.force else [p for p in prompts if p not in done]
stale = [p for p in prompts if p in done and p not in todo and (done[p].get("sent") != sent_of[p]
                                                                  or done[p].get("model") != MODEL)]
print(f"mode: api | server: {host} | model: {MODEL} | {len(prompts)} novel prompts, "
      f"{sum(p in done for p in prompts)} already answered, asking {len(todo)}", flush=True)
if stale:
    print(f"note: {len(stale)} cached answer(s) came from another model or instruction; --force asks again")

failed, in_a_row, stopped = [], 0, False
try:
    for i, prompt in enumerate(todo, 1):
        start = time.time()
        row = {"prompt": prompt, "sent": sent_of[prompt], "source": "api", "model": MODEL, "base_url_host": host}
        try:
            response = ask(client, sent_of[prompt])
        except Fatal as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        except openai.OpenAIError as error:
            row.update(answer_fields(None), status="failed", error=describe_error(error), time=now_iso())
            common.append_jsonl(common.CHATGPT_ANSWERS, [row])
            failed.append(prompt)
            in_a_row += 1
            print(f"[{i}/{len(todo)}] FAILED {short(prompt, 40)!r}: {row['error']}", flush=True)
            if in_a_row >= STOP_AFTER_FAILED and i < len(todo):
                stopped = True
                print(f"{in_a_row} prompts failed in a row - not asking the other {len(todo) - i}; "
                      "re-run later to ask what is missing.", flush=True)
                break
            continue
        in_a_row = 0
        choice = response.choices[0] if response.choices else None
        row.update(answer_fields(choice.message.content if choice else ""), status="ok", error=None, time=now_iso(),
                   served_model=getattr(response, "model", None), finish_reason=getattr(choice, "finish_reason", None),
                   seconds=round(time.time() - start, 2))
        common.append_jsonl(common.CHATGPT_ANSWERS, [row])
        flag = "" if row["emoji_only"] else f"  (words: {short(' '.join(row['words']), 30)})" if row["has_words"] \
            else "  (no emoji)"
        print(f"[{i}/{len(todo)}] {short(prompt, 40)!r} -> {short(row['answer'], 40)}{flag}", flush=True)
except KeyboardInterrupt:
    compact(common.CHATGPT_ANSWERS)
    kept = sum(1 for r in answers_so_far().values() if r.get("status") == "ok")
    print(f"\ninterrupted: {kept} answer(s) kept in {common.display(common.CHATGPT_ANSWERS)}; "
          "run again to ask only the missing prompts.", file=sys.stderr)
    sys.exit(130)

compact(common.CHATGPT_ANSWERS)
missing = [p for p in prompts if answers_so_far().get(p, {}).get("status") != "ok"]
print(summary_table())
print(f"{len(prompts) - len(missing)}/{len(prompts)} prompts answered -> {common.display(common.CHATGPT_ANSWERS)}")
if missing:
    print(f"{len(missing)} prompt(s) without an answer ({len(failed)} failed this run"
          f"{', the rest not asked' if stopped else ''}); run again to retry only those.", file=sys.stderr)
    sys.exit(1)

"""Step 4: ask ChatGPT (or any OpenAI-compatible server) the NOVEL prompts (common.NOVEL) the fine-tunes answered.

Modes (MODE=auto picks):
  api     OPENAI_API_KEY and/or OPENAI_BASE_URL is set. Each answer is appended to outputs/chatgpt.jsonl the moment
          it arrives; a re-run asks only prompts without an answer made with the current settings (model,
          instruction, temperature, max tokens, server); --force asks again. OPENAI_BASE_URL points the script at
          llama.cpp's server, vLLM, Ollama or any other OpenAI-compatible endpoint (e.g. http://127.0.0.1:8080/v1).
          Rate limits, server errors, timeouts and lost connections are retried by the openai client itself.
  manual  Neither is set (e.g. you use the ChatGPT web page). The script writes outputs/chatgpt_prompts.md, a paste
          sheet with the exact prompts, and a CSV template; paste ChatGPT's answers into data/chatgpt_responses.csv
          (columns prompt,answer; a relative --manual-csv is read from the current directory) and run it again.
Exit status: 0 when every prompt has an answer (in manual mode always), 1 when some request failed (an empty or
unreadable reply counts as failed), 2 when the server refused the key, the model or the quota, 130 when interrupted.
The API key is never written anywhere: only the server's host name is recorded next to each answer.
"""
import csv
import os
import re
import sys
import threading
import time
from concurrent import futures
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
TIMEOUT_S = 30.0  # wall time of one attempt, however slowly the server sends its reply
MAX_RETRIES = 4  # extra attempts after a rate limit (429), server error (5xx), timeout or lost connection
MANUAL_CSV = str(common.DATA_DIR / "chatgpt_responses.csv")  # answers pasted from the ChatGPT web page
MANUAL_MODEL = "ChatGPT (web)"  # recorded for pasted answers unless the CSV has a model column

args = common.configure(globals(), __doc__, checks=dict(
    MODE=common.one_of("auto", "api", "manual"), TEMPERATURE=common.between(0, 2, include_low=True, include_high=True),
    MAX_TOKENS=common.positive_int, TIMEOUT_S=common.positive, MAX_RETRIES=common.non_negative_int,
    MODEL=common.not_empty))

PASTE_SHEET = common.OUT / "chatgpt_prompts.md"
CSV_TEMPLATE = common.OUT / "chatgpt_responses_template.csv"
API_KEY = os.environ.get("OPENAI_API_KEY", "").strip()
BASE_URL = os.environ.get("OPENAI_BASE_URL", "").strip()
common.require(common.GENERATIONS, "03_generate.py")  # the fine-tunes' answers these are compared with
prompts = list(common.NOVEL)
sent_of = {p: INSTRUCTION.replace("{sentence}", p) if "{sentence}" in INSTRUCTION else f"{INSTRUCTION} {p}"
           for p in prompts}
manual_csv = Path(MANUAL_CSV)  # configure() made it absolute (given on the command line: from the current directory)


def now_iso():
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def redact(text):
    """Remove the key, and anything shaped like an OpenAI key (servers echo masked keys in 401 messages)."""
    text = str(text).replace(API_KEY, "***") if API_KEY else str(text)
    return re.sub(r"\b(sk|key)-[A-Za-z0-9_*\-.]{3,}", r"\1-***", text)


def short(text, width=60):
    text = " ".join(str(text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def answer_fields(text):
    """The raw answer plus its emoji-only extraction and the words it leaked."""
    text = text or ""
    words = metrics.words_leaked(text)
    return {"answer": text, "emojis": "".join(metrics.emojis_of(text)), "emoji_only": metrics.is_emoji_only(text),
            "has_words": bool(words), "words": words}


def answers_so_far():
    return common.latest_answers(common.read_jsonl(common.CHATGPT_ANSWERS))


def compact():
    """One row per prompt, atomically; rows of prompts no longer in NOVEL go."""
    rows = common.read_jsonl(common.CHATGPT_ANSWERS)
    keep = [r for p, r in common.latest_answers(rows).items() if p in sent_of]
    if len(keep) != len(rows):
        common.write_jsonl(common.CHATGPT_ANSWERS, keep)


def summary_table():
    from tabulate import tabulate

    generations = common.read_jsonl(common.GENERATIONS)
    by_model = {(r["model"], r["prompt"]): r["output"] for r in generations
                if r.get("set") == "novel" and r.get("sample") is None and r.get("model", "").startswith("ft")}
    fts = sorted({m for m, _ in by_model}, key=lambda m: int(m[2:]) if m[2:].isdigit() else 0)
    answers, rows = answers_so_far(), []
    for prompt in prompts:
        row = answers.get(prompt, {})
        chatgpt = row.get("answer") if row.get("status") == "ok" else ("(failed)" if row else "—")
        rows.append([short(prompt, 40)] + [short(by_model.get((m, prompt), "—"), 20) for m in fts]
                    + [short(chatgpt, 30)])
    return tabulate(rows, headers=["prompt"] + fts + ["ChatGPT"], tablefmt="github")


# ---------------------------------------------------------------- paste sheet and template (cheap: every run)
PASTE_SHEET.parent.mkdir(parents=True, exist_ok=True)
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
    csv.writer(f).writerows([["prompt", "answer", "model"]] + [[p, "", ""] for p in prompts])

mode = MODE if MODE != "auto" else ("api" if API_KEY or BASE_URL else "manual")
done = {p: r for p, r in answers_so_far().items() if r.get("status") == "ok"}


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
            cell, answer = row.get("prompt") or row.get("sentence") or "", row.get("answer") or row.get("response")
            if answer and key(cell) in lookup:
                found[lookup[key(cell)]] = (answer, row.get("model") or MANUAL_MODEL)
            elif answer:
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
    common.require_file(manual_csv, "")  # a folder or an unreadable file: one line
    try:
        found = read_manual(manual_csv)
    except (UnicodeDecodeError, csv.Error) as error:
        sys.exit(f"error: {common.display(manual_csv)} is not a UTF-8 CSV file ({error}) - save it as 'CSV UTF-8'.")
    file_time = datetime.fromtimestamp(manual_csv.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
    new = []
    for prompt, (answer, model) in found.items():
        old = done.get(prompt)
        if old and not args.force and (old.get("source") != "manual" or old.get("answer") == answer):
            continue  # an API answer stays unless --force; an unchanged paste is already imported
        new.append({"prompt": prompt, "sent": sent_of[prompt], **answer_fields(answer), "source": "manual",
                    "model": model, "served_model": None, "base_url_host": None, "label": model, "status": "ok",
                    "error": None, "time": file_time, "file": common.display(manual_csv),
                    "fingerprint": common.fingerprint("manual", INSTRUCTION, model)})
    common.append_jsonl(common.CHATGPT_ANSWERS, new)
    compact()
    print(f"imported {len(new)} new or changed answer(s); {len(found)}/{len(prompts)} prompts have a pasted answer "
          f"-> {common.display(common.CHATGPT_ANSWERS)}")
    print(summary_table())
    sys.exit(0)


# ---------------------------------------------------------------- api mode
import logging  # noqa: E402  (the rest is only needed here)

import httpx2  # noqa: E402  (the HTTP library under the openai client)
import openai  # noqa: E402


class DeadlineClient(openai.DefaultHttpxClient):
    """httpx's timeouts are per read, so a server trickling a byte at a time could hold a request forever. Each attempt
    runs in a worker thread and is abandoned after TIMEOUT_S of wall time, as a timeout the client retries."""

    def send(self, request, **kwargs):
        result, send = futures.Future(), super().send

        def attempt():
            try:
                result.set_result(send(request, **kwargs))
            except BaseException as error:  # handed to the waiting thread, which raises it there
                result.set_exception(error)

        threading.Thread(target=attempt, daemon=True).start()
        deadline = time.monotonic() + TIMEOUT_S
        while True:  # short waits: a Ctrl-C that lands on another thread is seen only when this one runs again
            try:
                return result.result(timeout=min(0.25, max(0.0, deadline - time.monotonic())))
            except futures.TimeoutError:
                if time.monotonic() >= deadline:
                    raise httpx2.ReadTimeout(f"no complete reply within {TIMEOUT_S:g} s", request=request) from None


class Failed(Exception):
    """A 200 reply that holds no answer."""


def ask(prompt):
    """The reply and its answer text; a reply without an answer is a failure, never an empty answer."""
    try:
        response = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": sent_of[prompt]}],
                                                  temperature=TEMPERATURE, max_tokens=MAX_TOKENS)
    except ValueError as error:  # a 200 body of broken JSON (cut short)
        raise Failed(f"the server's reply is not JSON ({error})") from None
    if isinstance(response, str):  # the client hands back the text of a body that is not JSON
        raise Failed(f"the server's reply is not JSON: {short(response, 80)!r}")
    choice = (getattr(response, "choices", None) or [None])[0]
    text = getattr(getattr(choice, "message", None), "content", None)
    if not isinstance(text, str) or not text.strip():
        raise Failed("the server's reply holds no answer: "
                     + ("no choices" if choice is None else f"message content {text!r}"))
    return response, text


def fatal(error):
    """One line for what no retry can fix (key, access, model, quota), else None."""
    if isinstance(error, openai.AuthenticationError):
        return f"the server at {host} rejected the API key (401) - check OPENAI_API_KEY."
    if isinstance(error, openai.PermissionDeniedError):
        return f"the server at {host} refused access (403) - the key may lack access to model {MODEL!r}."
    if isinstance(error, openai.NotFoundError):
        return (f"model {MODEL!r} or the chat endpoint was not found at {host} (404) - check --model and "
                "OPENAI_BASE_URL (it usually ends in /v1).")
    if isinstance(error, openai.RateLimitError) and getattr(error, "code", None) == "insufficient_quota":
        return f"the account behind the key has no quota left at {host} (429 insufficient_quota)."


def describe(error):
    if isinstance(error, Failed):
        return redact(error)
    status = getattr(error, "status_code", None)
    detail = getattr(error, "message", None) or str(error) or repr(error)
    if isinstance(error, openai.APITimeoutError) and error.__cause__:
        detail = f"{detail} ({error.__cause__})"
    return redact(f"{type(error).__name__}{f' {status}' if status else ''}: {short(detail, 160)}")


# The client's own retries (jittered exponential backoff, Retry-After honoured) print one line each.
logging.basicConfig(stream=sys.stdout, format="  %(message)s")
logging.getLogger("openai").setLevel(logging.INFO)
try:
    parts = urlsplit(BASE_URL or "https://api.openai.com/v1")
    host = parts.hostname + (f":{parts.port}" if parts.port else "") if parts.scheme in ("http", "https") else None
    client = openai.OpenAI(api_key=API_KEY or "no-key", base_url=BASE_URL or None, timeout=TIMEOUT_S,
                           max_retries=MAX_RETRIES, http_client=DeadlineClient(timeout=TIMEOUT_S))
except (ValueError, TypeError, httpx2.InvalidURL):  # a bad port or address; no host at all
    host = None
if not host:
    print(f"error: OPENAI_BASE_URL={redact(BASE_URL)!r} is not a server address like http://127.0.0.1:8080/v1",
          file=sys.stderr)
    sys.exit(2)
FINGERPRINT = common.fingerprint(MODEL, INSTRUCTION, TEMPERATURE, MAX_TOKENS, host)
todo = [p for p in prompts if args.force or done.get(p, {}).get("fingerprint") != FINGERPRINT]
stale = sum(p in done for p in todo) if not args.force else 0
print(f"mode: api | server: {host} | model: {MODEL} | {len(prompts)} novel prompts, {len(prompts) - len(todo)} "
      f"already answered, asking {len(todo)}" + (f" ({stale} answered with other settings)" if stale else ""),
      flush=True)

failed = []
for i, prompt in enumerate(todo, 1):
    row = {"prompt": prompt, "sent": sent_of[prompt], "source": "api", "model": MODEL, "base_url_host": host,
           "fingerprint": FINGERPRINT}
    try:
        response, text = ask(prompt)
    except (openai.OpenAIError, Failed) as error:
        if fatal(error):
            compact()
            print(f"error: {fatal(error)}", file=sys.stderr)
            sys.exit(2)
        row.update(answer_fields(None), served_model=None, label=None, status="failed", time=now_iso(),
                   error=describe(error))
        common.append_jsonl(common.CHATGPT_ANSWERS, [row])
        failed.append(prompt)
        print(f"[{i}/{len(todo)}] FAILED {short(prompt, 40)!r}: {row['error']}", flush=True)
        continue
    served = str(getattr(response, "model", None) or MODEL)
    row.update(answer_fields(text), served_model=served, status="ok", error=None, time=now_iso(),
               label=f"ChatGPT {served}" if host == "api.openai.com" else f"{served} at {host}")
    common.append_jsonl(common.CHATGPT_ANSWERS, [row])
    flag = "" if row["emoji_only"] else f"  (words: {short(' '.join(row['words']), 30)})" if row["has_words"] \
        else "  (not emoji-only)"
    print(f"[{i}/{len(todo)}] {short(prompt, 40)!r} -> {short(row['answer'], 40)}{flag}", flush=True)

compact()
current = {p for p, r in answers_so_far().items() if r.get("status") == "ok" and r.get("fingerprint") == FINGERPRINT}
print(summary_table())
print(f"{len(current)}/{len(prompts)} prompts answered -> {common.display(common.CHATGPT_ANSWERS)}")
if len(current) < len(prompts):
    print(f"{len(prompts) - len(current)} prompt(s) without an answer ({len(failed)} failed this run); "
          "run again to ask only those.", file=sys.stderr)
    sys.exit(1)

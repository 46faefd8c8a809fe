"""Asking an OpenAI-compatible server (04): the client, what counts as an answer, what a failure says, the key kept
out of everything, and the manual route (a paste sheet, a CSV of pasted answers).

- The client is the openai package's own, with its retries (jittered exponential backoff, Retry-After honoured, one
  log line each) and one addition: a wall-time deadline per attempt, however slowly the server sends its reply.
- A 200 reply without an answer (no choices, empty content, a body that is not JSON) is a failure, never an empty
  answer. A failure is one line naming its cause, e.g. `APIConnectionError: Connection error. ([SSL: ...] ...)`.
- The key: checked before anything is sent, and masked as *** in every line printed and every row written.
- openai is imported only in API mode (it takes seconds to import); the manual route does without it.
"""
import csv
import io
import re
import sys
import signal
import unicodedata
from urllib.parse import urlsplit

from lib import metrics, prompts, store

SHORT_KEY = 8  # a key shorter than this is a local server's dummy (e.g. `x`), not a secret: it is not masked
COLUMNS = ("prompt", "sentence"), ("answer", "response"), ("model",)  # of the manual CSV; the first name is written
_key = ""


def short(text, width=60):
    text = " ".join(str(text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


# ---------------------------------------------------------------- the key
def protect(key):
    """Check the key before anything is sent: an HTTP header holds plain ASCII, and a key pasted with quotes (curly
    ones from a word processor) or a stray character ends the script with one line that names the characters, never
    the key (exit 2). Then mask it in everything printed (this script's lines, errors, the client's log) and, through
    clean(), in every row written. A key under SHORT_KEY characters is left alone, with one note: masking a one-letter
    dummy (`x`, for a local server) would garble every message."""
    global _key
    if odd := sorted({c for c in key if not (c.isascii() and c.isprintable()) or c in " \"'`\\"}):
        store.fail(f"OPENAI_API_KEY holds {', '.join(unicodedata.name(c, repr(c)) for c in odd)}, which no key has - "
                   "paste the key again as plain text; nothing was sent.", 2)
    if 0 < len(key) < SHORT_KEY:
        print(f"note: OPENAI_API_KEY has under {SHORT_KEY} characters (a local server's dummy key?): it is not masked.")
    elif _key := key:
        for stream in sys.stdout, sys.stderr:  # each text written to them, the client's log and tracebacks included
            stream.write = lambda text, write=stream.write: write(redact(text))


def redact(text):
    return str(text).replace(_key, "***") if _key else str(text)


def clean(row):
    """A row with the key masked in every text it holds: answer, words, error, label, served model."""
    return {k: redact(v) if type(v) is str else [*map(redact, v)] if type(v) is list else v for k, v in row.items()}


def compact(novel):
    """{prompt: its latest answer} for the prompts of `novel` (store.latest_answers), and chatgpt.jsonl rewritten to
    hold just those rows, in prompt order, key masked: atomically, and only when that changes it. Earlier attempts
    and prompts no longer asked go."""
    latest = store.latest_answers(rows := store.read_jsonl(store.CHATGPT_ANSWERS))
    if (keep := [clean(latest[p]) for p in novel if p in latest]) != rows:
        store.write_jsonl(store.CHATGPT_ANSWERS, keep)
    return {row["prompt"]: row for row in keep}


# ---------------------------------------------------------------- asking
def connect(key, base_url, timeout_s, max_retries):
    """(the openai client, the server's host[:port] recorded with each answer). The client's own retries are logged
    to stdout; each attempt is abandoned after timeout_s of wall time (httpx's timeouts are per read, so a server
    trickling a byte at a time could hold a request forever), as a timeout the client retries. A base_url that is no
    server address ends the script with one line."""
    try:  # another scheme (KeyError), no host (TypeError), a port out of range or a broken IPv6 address (ValueError)
        url = urlsplit(base_url or "https://api.openai.com/v1")
        host = {"http": url.hostname, "https": url.hostname}[url.scheme] + (f":{url.port}" if url.port else "")
    except (KeyError, TypeError, ValueError):
        store.fail(f"OPENAI_BASE_URL={base_url!r} is not a server address like http://127.0.0.1:8080/v1", 2)
    import logging

    import httpx2  # the HTTP library under the openai client
    import openai

    class DeadlineClient(openai.DefaultHttpxClient):
        def send(self, request, **kwargs):  # a timer signal ends the attempt wherever it waits (main thread only)
            def expire(*_):
                raise httpx2.ReadTimeout(f"no complete reply within {timeout_s:g} s", request=request)

            signal.signal(signal.SIGALRM, expire)
            signal.setitimer(signal.ITIMER_REAL, timeout_s)
            try:
                return super().send(request, **kwargs)  # the whole reply is read in here
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)

    logging.basicConfig(stream=sys.stdout, format="  %(message)s")
    logging.getLogger("openai").setLevel(logging.INFO)
    return openai.OpenAI(api_key=key or "no-key", base_url=base_url or None, timeout=timeout_s,
                         max_retries=max_retries, http_client=DeadlineClient(timeout=timeout_s)), host


def ask(client, host, model, text, temperature, max_tokens):
    """The fields of one answer: the server's answer and the model it names, or a failure (never an answer) with one
    line naming its cause: an error ("Connection error." keeps the SSL or DNS failure beneath it), or a 200 reply with
    no choices, empty content or a body that is not JSON. What no retry or re-run can fix (the key, access, the model,
    the quota) ends the script with one line (exit 2)."""
    import openai

    try:
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}],
                                               temperature=temperature, max_tokens=max_tokens)
        choice = (getattr(reply, "choices", None) or [None])[0]
        answer = getattr(getattr(choice, "message", None), "content", None)
        if isinstance(answer, str) and answer.strip():
            served = str(getattr(reply, "model", None) or model)  # "ChatGPT" only for api.openai.com
            return outcome(answer, served, f"ChatGPT {served}" if host == "api.openai.com" else f"{served} at {host}")
        # the client hands back the text of a body that is not JSON as a str
        line = f"the server's reply is not JSON ({short(reply, 80)!r})" if isinstance(reply, str) else \
            "the server's reply holds no answer: " + (f"message content {answer!r}" if choice else "no choices")
    except openai.OpenAIError as error:
        cause = f" ({str(error.__cause__) or type(error.__cause__).__name__})" if error.__cause__ else ""
        status = f" {error.status_code}" if getattr(error, "status_code", None) else ""
        line = f"{type(error).__name__}{status}: {short((str(error) or repr(error)) + cause, 200)}"
        refused = {
            openai.AuthenticationError: f"the server at {host} rejected the API key (401) - check OPENAI_API_KEY.",
            openai.PermissionDeniedError: f"the server at {host} refused access (403) - the key may lack access to "
                                          f"model {model!r}.",
            openai.NotFoundError: f"model {model!r} or the chat endpoint was not found at {host} (404) - check --model "
                                  "and OPENAI_BASE_URL (it usually ends in /v1).",
            "insufficient_quota": f"the account behind the key has no quota left at {host} (429 insufficient_quota)."}
        if fatal := refused.get(type(error)) or isinstance(error, openai.RateLimitError) and refused.get(error.code):
            store.fail(fatal, 2)
    except ValueError as error:  # a 200 body that is not JSON, or cut short
        line = f"the server's reply is not JSON ({error})"
    return outcome("", error=re.sub(r"\b(sk|key)-[A-Za-z0-9_*\-.]{3,}", r"\1-***", redact(line)))  # echoed keys


def outcome(answer, served=None, label=None, error=None):
    """The fields of an answer (with `error`, of a failure, never an answer): the raw answer, its emojis, whether it
    is emoji-only, the words it leaked, the model the server named, the label the report shows."""
    return dict(answer=answer, emojis="".join(metrics.emojis_of(answer)), emoji_only=metrics.is_emoji_only(answer),
                has_words=bool(words := metrics.words_leaked(answer)), words=words, served_model=served, label=label,
                status="failed" if error else "ok", error=error)


def progress(prompt, row):
    """One line for the answer just recorded."""
    note = f"  (words: {short(' '.join(row['words']), 30)})" if row["words"] else "" if row["emoji_only"] else \
        "  (not emoji-only)"
    return f"{short(prompt, 40)!r} -> {short(row['answer'], 40)}{note}" if row["status"] == "ok" else \
        f"FAILED {short(prompt, 40)!r}: {row['error']}"


# ---------------------------------------------------------------- by hand: paste sheet, CSV template, pasted answers
def write_paste_sheet(sent, manual_csv, model):
    """Write the paste sheet for asking ChatGPT by hand and the CSV template to paste its answers into (with a BOM, so
    spreadsheet programs read it as UTF-8); return their paths."""
    sheet, template = store.OUT / "chatgpt_prompts.md", store.OUT / "chatgpt_responses_template.csv"
    store.write_text(sheet, store.render("chatgpt_prompts.md.j2", template=store.display(template),
                                         manual_csv=store.display(manual_csv), model=model, sent=sent.values()))
    csv.writer(text := io.StringIO()).writerows([[names[0] for names in COLUMNS]] + [[p, "", ""] for p in sent])
    store.write_text(template, "\ufeff" + text.getvalue())
    return sheet, template


def read_manual_csv(path, sent, default_model):
    """{prompt: (answer, model)} from the CSV of pasted answers: UTF-8 with or without BOM, separated by commas,
    semicolons or tabs (the one that splits the header into known columns). A prompt cell may hold the sentence or the
    whole text sent, matched with prompts.key. A file that can't be read, or lacks a prompt or answer column, ends the
    script with one line saying which columns it has."""
    name, lookup = store.display(path), {prompts.key(text): p for p, s in sent.items() for text in (p, s)}
    try:
        head, _, body = path.read_text(encoding="utf-8-sig").partition("\n")
        heads = {sep: [c.strip().lower() for c in next(csv.reader([head], delimiter=sep), [])] for sep in ",;\t"}
        sep = max(heads, key=lambda s: len({n for names in COLUMNS for n in names}.intersection(heads[s])))
        rows = [dict(zip(heads[sep], map(str.strip, row))) for row in csv.reader(io.StringIO(body), delimiter=sep)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        store.fail(f"{name} cannot be read as a CSV file ({getattr(error, 'strerror', None) or error})"
                   + (" - save it as 'CSV UTF-8'." if isinstance(error, UnicodeDecodeError) else "."))
    if not all(set(names) & set(heads[sep]) for names in COLUMNS[:2]):
        store.fail(f"{name} has the column(s) {', '.join(repr(c) for c in heads[sep] if c) or 'none'}; needed: prompt "
                   "(or sentence) and answer (or response), optionally model, separated by commas, semicolons or tabs.")
    found = [[next((row[c] for c in names if row.get(c)), "") for names in COLUMNS] for row in rows]
    if unknown := [cell for cell, answer, _ in found if answer and prompts.key(cell) not in lookup]:
        print(f"warning: {len(unknown)} row(s) of {name} match no novel prompt and were skipped: "
              + "; ".join(short(u, 40) for u in unknown))
    return {lookup[k]: (a, m or default_model) for c, a, m in found if a and (k := prompts.key(c)) in lookup}


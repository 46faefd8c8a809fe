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
import threading
import unicodedata
from concurrent import futures
from urllib.parse import urlsplit

from lib import metrics, prompts, store

SHORT_KEY = 8  # a key shorter than this is a local server's dummy (e.g. `x`), not a secret: it is not masked
_key = ""


def short(text, width=60):
    text = " ".join(str(text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


# ---------------------------------------------------------------- the key
class _Masked:
    """A stream (stdout, stderr) that masks the key in whatever is written to it."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        return self.stream.write(redact(text))

    def __getattr__(self, name):
        return getattr(self.stream, name)


def protect(key):
    """Check the key before anything is sent: an HTTP header holds plain ASCII, and a key pasted with quotes (curly
    ones from a word processor) or a stray character ends the script with one line that names the characters, never
    the key (exit 2). Then mask it in everything printed (this script's lines, errors, the client's log) and, through
    clean(), in every row written. A key under SHORT_KEY characters is left alone, with one note: masking a one-letter
    dummy (`x`, for a local server) would garble every message."""
    global _key
    odd = sorted({c for c in key if not (c.isascii() and c.isprintable()) or c in " \"'`\\"})
    if odd:
        store.fail(f"OPENAI_API_KEY holds {', '.join(unicodedata.name(c, repr(c)) for c in odd)}, which no key has - "
                   "paste the key again as plain text; nothing was sent.", 2)
    if key and len(key) < SHORT_KEY:
        print(f"note: OPENAI_API_KEY has under {SHORT_KEY} characters (a local server's dummy key?): it is not masked.")
    elif key:
        _key = key
        sys.stdout, sys.stderr = _Masked(sys.stdout), _Masked(sys.stderr)


def redact(text):
    return str(text).replace(_key, "***") if _key else str(text)


def clean(row):
    """A row with the key masked in every text it holds: answer, words, error, label, served model."""
    return {k: redact(v) if isinstance(v, str) else [*map(redact, v)] if isinstance(v, list) else v
            for k, v in row.items()}


def compact(novel):
    """{prompt: its latest answer} for the prompts of `novel` (store.latest_answers), and chatgpt.jsonl rewritten to
    hold just those rows, in prompt order, key masked: atomically, and only when that changes it. Earlier attempts
    and prompts no longer asked go."""
    rows = store.read_jsonl(store.CHATGPT_ANSWERS)
    latest = store.latest_answers(rows)
    keep = [clean(latest[p]) for p in novel if p in latest]
    if keep != rows:
        store.write_jsonl(store.CHATGPT_ANSWERS, keep)
    return {row["prompt"]: row for row in keep}


# ---------------------------------------------------------------- asking
def connect(key, base_url, timeout_s, max_retries):
    """(the openai client, the server's host[:port] recorded with each answer). The client's own retries are logged
    to stdout; each attempt is abandoned after timeout_s of wall time (httpx's timeouts are per read, so a server
    trickling a byte at a time could hold a request forever), as a timeout the client retries. A base_url that is no
    server address ends the script with one line."""
    try:
        parts = urlsplit(base_url or "https://api.openai.com/v1")
        host = parts.hostname + (f":{parts.port}" if parts.port else "") if parts.scheme in ("http", "https") else ""
    except (ValueError, TypeError):  # a port out of range, a broken IPv6 address, no host at all
        host = ""
    if not host:
        store.fail(f"OPENAI_BASE_URL={base_url!r} is not a server address like http://127.0.0.1:8080/v1", 2)
    import logging

    import httpx2  # the HTTP library under the openai client
    import openai

    class DeadlineClient(openai.DefaultHttpxClient):
        def send(self, request, **kwargs):
            reply, send = futures.Future(), super().send

            def attempt():
                try:
                    reply.set_result(send(request, **kwargs))
                except BaseException as error:  # raised again in the waiting thread
                    reply.set_exception(error)

            threading.Thread(target=attempt, daemon=True).start()
            try:
                return reply.result(timeout=timeout_s)  # Ctrl-C still ends the wait
            except futures.TimeoutError:
                raise httpx2.ReadTimeout(f"no complete reply within {timeout_s:g} s", request=request) from None

    logging.basicConfig(stream=sys.stdout, format="  %(message)s")
    logging.getLogger("openai").setLevel(logging.INFO)
    return openai.OpenAI(api_key=key or "no-key", base_url=base_url or None, timeout=timeout_s,
                         max_retries=max_retries, http_client=DeadlineClient(timeout=timeout_s)), host


class Failed(Exception):
    """No answer: str() is the line recorded; `fatal` is set when no retry or re-run can help (key, model, quota)."""

    def __init__(self, line, fatal=None):
        super().__init__(re.sub(r"\b(sk|key)-[A-Za-z0-9_*\-.]{3,}", r"\1-***", redact(line)))  # echoed key shapes
        self.fatal = fatal


def ask(client, host, model, text, temperature, max_tokens):
    """(served model, answer) for one prompt. No answer raises Failed: an error (with its cause: "Connection error."
    hides an SSL or DNS failure), or a 200 reply with no choices, empty content or a body that is not JSON."""
    import openai

    try:
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}],
                                               temperature=temperature, max_tokens=max_tokens)
    except openai.OpenAIError as error:
        detail = getattr(error, "message", None) or str(error) or repr(error)
        cause = f" ({str(error.__cause__) or type(error.__cause__).__name__})" if error.__cause__ else ""
        status = f" {error.status_code}" if getattr(error, "status_code", None) else ""
        raise Failed(f"{type(error).__name__}{status}: {short(detail + cause, 200)}", fatal(error, host, model)) \
            from None
    except ValueError as error:  # a 200 body of broken JSON (cut short)
        raise Failed(f"the server's reply is not JSON ({error})") from None
    if isinstance(reply, str):  # the client hands back the text of a body that is not JSON
        raise Failed(f"the server's reply is not JSON: {short(reply, 80)!r}")
    choice = (getattr(reply, "choices", None) or [None])[0]
    answer = getattr(getattr(choice, "message", None), "content", None)
    if not isinstance(answer, str) or not answer.strip():
        raise Failed("the server's reply holds no answer: "
                     + ("no choices" if choice is None else f"message content {answer!r}"))
    return str(getattr(reply, "model", None) or model), answer


def fatal(error, host, model):
    """One line for what no retry can fix (key, access, model, quota), else None."""
    import openai

    quota = isinstance(error, openai.RateLimitError) and getattr(error, "code", None) == "insufficient_quota"
    return {openai.AuthenticationError: f"the server at {host} rejected the API key (401) - check OPENAI_API_KEY.",
            openai.PermissionDeniedError: f"the server at {host} refused access (403) - the key may lack access to "
                                          f"model {model!r}.",
            openai.NotFoundError: f"model {model!r} or the chat endpoint was not found at {host} (404) - check "
                                  "--model and OPENAI_BASE_URL (it usually ends in /v1)."}.get(type(error)) \
        or (f"the account behind the key has no quota left at {host} (429 insufficient_quota)." if quota else None)


def answer_fields(text):
    """The raw answer, its emojis, whether it is emoji-only, and the words it leaked."""
    words = metrics.words_leaked(text)
    return {"answer": text, "emojis": "".join(metrics.emojis_of(text)), "emoji_only": metrics.is_emoji_only(text),
            "has_words": bool(words), "words": words}


def progress(prompt, row):
    """One line for the answer just recorded."""
    if row["status"] != "ok":
        return f"FAILED {short(prompt, 40)!r}: {row['error']}"
    note = "" if row["emoji_only"] else f"  (words: {short(' '.join(row['words']), 30)})" if row["words"] \
        else "  (not emoji-only)"
    return f"{short(prompt, 40)!r} -> {short(row['answer'], 40)}{note}"


# ---------------------------------------------------------------- by hand: paste sheet, CSV template, pasted answers
PROMPT_COLUMNS, ANSWER_COLUMNS = ("prompt", "sentence"), ("answer", "response")


def paste_sheet(sent, template, manual_csv, model):
    head = ("# Task 3: the novel prompts for ChatGPT\n\nWithout an API key, ask ChatGPT by hand:\n\n"
            "1. Open ChatGPT in your browser and start a **new chat for each prompt**, so earlier answers don't steer "
            "it.\n2. Paste the prompt exactly as written below and copy ChatGPT's whole answer, words and all.\n"
            f"3. Copy `{store.display(template)}` to `{store.display(manual_csv)}` and paste each answer into the "
            "`answer` column of its row (leave the `prompt` column as it is; optionally write the ChatGPT model you "
            "used into `model`).\n4. Run `python 04_chatgpt.py` again to import the answers, then `python "
            f"05_report.py`.\n\nWith a key instead: `OPENAI_API_KEY=... python 04_chatgpt.py` (model `{model}`), or "
            "point `OPENAI_BASE_URL` at any OpenAI-compatible server.\n")
    return head + "".join(f"\n## Prompt {i}\n\n```text\n{text}\n```\n" for i, text in enumerate(sent.values(), 1))


def csv_template(novel):
    """The CSV to paste answers into; with a BOM, so spreadsheet programs read it as UTF-8."""
    text = io.StringIO()
    csv.writer(text).writerows([["prompt", "answer", "model"]] + [[p, "", ""] for p in novel])
    return "\ufeff" + text.getvalue()


def read_manual_csv(path, sent, default_model):
    """{prompt: (answer, model)} from the CSV of pasted answers: UTF-8 with or without BOM, separated by commas,
    semicolons or tabs (the one that splits the header into known columns). A prompt cell may hold the sentence or the
    whole text sent, matched with prompts.key. A file that can't be read, or lacks a prompt or answer column, ends the
    script with one line saying which columns it has."""
    name, lookup = store.display(path), {prompts.key(text): p for p, s in sent.items() for text in (p, s)}
    try:
        text = path.read_text(encoding="utf-8-sig")
        heads = {sep: [c.strip().lower() for c in next(csv.reader([text.partition("\n")[0]], delimiter=sep), [])]
                 for sep in ",;\t"}
        sep = max(heads, key=lambda s: len({*PROMPT_COLUMNS, *ANSWER_COLUMNS, "model"}.intersection(heads[s])))
        rows = [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k is not None}
                for row in csv.DictReader(io.StringIO(text), delimiter=sep)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        store.fail(f"{name} cannot be read as a CSV file ({getattr(error, 'strerror', None) or error})"
                   + (" - save it as 'CSV UTF-8'." if isinstance(error, UnicodeDecodeError) else "."))
    found = [c for c in heads[sep] if c]
    if not all(set(names) & set(found) for names in (PROMPT_COLUMNS, ANSWER_COLUMNS)):
        store.fail(f"{name} has the column(s) {', '.join(map(repr, found)) or 'none'}; needed: prompt (or sentence) "
                   "and answer (or response), optionally model, separated by commas, semicolons or tabs.")
    answers, unknown = {}, []
    for row in rows:
        cell, answer = (next((row[c] for c in names if row.get(c)), "") for names in (PROMPT_COLUMNS, ANSWER_COLUMNS))
        if answer and prompts.key(cell) in lookup:
            answers[lookup[prompts.key(cell)]] = (answer, row.get("model") or default_model)
        elif answer:
            unknown.append(cell)
    if unknown:
        print(f"warning: {len(unknown)} row(s) of {name} match no novel prompt and were skipped: "
              + "; ".join(short(u, 40) for u in unknown))
    return answers


def table(generations, answers, novel):
    """The fine-tunes' greedy answers beside the server's, one row per prompt."""
    from tabulate import tabulate

    theirs = {(r.get("model"), r.get("prompt")): r.get("output") for r in generations
              if r.get("set") == "novel" and r.get("sample") is None and str(r.get("model", "")).startswith("ft")}
    fts = sorted({m for m, _ in theirs}, key=lambda m: int(m[2:]) if m[2:].isdigit() else 0)
    said = {p: r.get("answer") if r.get("status") == "ok" else "(failed)" for p, r in answers.items()}
    rows = [[short(p, 40), *(short(theirs.get((m, p), "—"), 20) for m in fts), short(said.get(p, "—"), 30)]
            for p in novel]
    return tabulate(rows, headers=["prompt", *fts, "ChatGPT"], tablefmt="github")

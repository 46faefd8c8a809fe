"""Task 3: ask ChatGPT the five NOVEL prompts (data/prompt_sets.toml), each with an explicit emoji-only instruction.

Modes (MODE=auto picks):
  api     OPENAI_API_KEY and/or OPENAI_BASE_URL is set. Each answer is appended to outputs/chatgpt.jsonl the moment
          it arrives; a re-run asks only prompts without an answer made with the current settings (model,
          instruction, temperature, max tokens, server); --force asks again. OPENAI_BASE_URL points the script at
          llama.cpp's server, vLLM, Ollama or any other OpenAI-compatible endpoint (e.g. http://127.0.0.1:8080/v1).
          Rate limits, server errors, timeouts and lost connections are retried by the openai client itself.
  manual  Neither is set (e.g. you use the ChatGPT web page). The script writes outputs/chatgpt_prompts.md, a paste
          sheet with the exact prompts, and a CSV template; paste ChatGPT's answers into data/chatgpt_responses.csv
          (columns prompt,answer, separated by commas, semicolons or tabs; a relative --manual-csv is read from the
          current directory) and run it again.
Exit status: 0 when every prompt has an answer (in manual mode: whenever the CSV, if any, can be read), 1 when some
request failed (an empty or unreadable reply counts as failed) or the CSV can't be read or lacks its columns, 2 when
the key, the server address, the model or the quota is refused, 130 when interrupted. The API key is never written or
printed: it is masked as *** in every answer, error and line (a key under 8 characters, a local server's dummy, is left
as it is, with a note); only the server's host name is recorded.
"""
import os
import sys
import time
from pathlib import Path

from lib import api, prompts, settings, store

MODE = "auto"  # auto | api | manual
MODEL = "gpt-4o-mini"  # the ChatGPT model asked through the API (any name your server knows)
TEMPERATURE = 0.7
MAX_TOKENS = 60  # an emoji answer is short; this bounds the cost of a chatty one
# The exact instruction wrapped around each sentence; {sentence} is replaced by the novel prompt.
INSTRUCTION = "Respond only with emojis that capture this sentence: {sentence}"
TIMEOUT_S = 30.0  # wall time of one attempt, however slowly the server sends its reply
MAX_RETRIES = 4  # extra attempts after a rate limit (429), server error (5xx), timeout or lost connection
MANUAL_CSV = str(store.DATA_DIR / "chatgpt_responses.csv")  # answers pasted from the ChatGPT web page
MANUAL_MODEL = "ChatGPT (web)"  # recorded for pasted answers unless the CSV has a model column

args = settings.configure(globals(), __doc__, checks=dict(
    MODE=settings.one_of("auto", "api", "manual"), MODEL=settings.not_empty, TEMPERATURE=settings.between(0, 2),
    MAX_TOKENS=settings.whole(1, 4096), INSTRUCTION=settings.not_empty, TIMEOUT_S=settings.between(1, 600),
    MAX_RETRIES=settings.whole(0, 10), MANUAL_MODEL=settings.not_empty))
store.lock("04_chatgpt")
store.require(store.GENERATIONS, "03_generate.py")  # the fine-tunes' answers these are compared with

KEY, BASE_URL = (os.environ.get(name, "").strip() for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"))
mode = MODE if MODE != "auto" else "api" if KEY or BASE_URL else "manual"
api.protect(KEY if mode == "api" else "")  # checked before anything is sent, then masked in all printed and written
novel, manual_csv = prompts.NOVEL, Path(MANUAL_CSV)
sent = {p: INSTRUCTION.replace("{sentence}", p) if "{sentence}" in INSTRUCTION else f"{INSTRUCTION} {p}" for p in novel}


def record(row, when=None):  # appended the moment it arrives, so an interrupted run keeps it; key masked
    when = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(when))  # UTC, now unless given
    store.append_jsonl(store.CHATGPT_ANSWERS, [api.clean({"time": when, **row})])


sheet, template = api.write_paste_sheet(sent, manual_csv, MODEL)  # the paste sheet and CSV template (cheap: each run)
done = {p: r for p, r in api.compact(novel).items() if r.get("status") == "ok"}  # answers already made

# ---- by hand: import the answers pasted into the CSV
if mode == "manual":
    print(f"mode: manual (no OPENAI_API_KEY / OPENAI_BASE_URL) | paste sheet: {store.display(sheet)}")
    if not manual_csv.exists():
        print(f"no answers yet: paste ChatGPT's answers into {store.display(manual_csv)} (template: "
              f"{store.display(template)}) and run this script again - or set OPENAI_API_KEY.")
        sys.exit(0)
    found = api.read_manual_csv(manual_csv, sent, MANUAL_MODEL)
    new = {p: found[p] for p, (answer, _) in found.items() if args.force or p not in done
           or done[p].get("source") == "manual" and done[p].get("answer") != answer}  # an API answer stays
    for prompt, (answer, model) in new.items():
        record({"prompt": prompt, "sent": sent[prompt], "source": "manual", "model": model, "base_url_host": None,
                "fingerprint": store.fingerprint("manual", INSTRUCTION, model), "file": store.display(manual_csv),
                **api.outcome(answer, label=model)}, manual_csv.stat().st_mtime)
    api.compact(novel)  # one row per prompt
    summary = f"imported {len(new)} new or changed answer(s); {len(found)}/{len(novel)} prompts have a pasted answer"

# ---- through the API: ask each prompt that has no answer made with these settings
else:
    client, host = api.connect(KEY, BASE_URL, TIMEOUT_S, MAX_RETRIES)
    FINGERPRINT = store.fingerprint(MODEL, INSTRUCTION, TEMPERATURE, MAX_TOKENS, host)
    todo = [p for p in novel if args.force or done.get(p, {}).get("fingerprint") != FINGERPRINT]
    stale = 0 if args.force else sum(p in done for p in todo)
    print(f"mode: api | server: {host} | model: {MODEL} | {len(novel)} novel prompts, {len(novel) - len(todo)} already "
          f"answered, asking {len(todo)}" + (f" ({stale} answered with other settings)" if stale else ""), flush=True)
    try:
        for i, prompt in enumerate(todo, 1):  # a refused key, model or quota ends the script: no prompt can succeed
            result = api.ask(client, host, MODEL, sent[prompt], TEMPERATURE, MAX_TOKENS)  # a failure is no answer
            record({"prompt": prompt, "sent": sent[prompt], "source": "api", "model": MODEL, "base_url_host": host,
                    "fingerprint": FINGERPRINT, "file": None, **result})
            print(f"[{i}/{len(todo)}] {api.progress(prompt, result)}", flush=True)
    finally:  # one row per prompt, whatever ended the run
        latest = api.compact(novel)
    answered = sum(r.get("status") == "ok" and r.get("fingerprint") == FINGERPRINT for r in latest.values())
    summary = f"{answered}/{len(novel)} prompts answered"

# ---- what was done
print(f"{summary} -> {store.display(store.CHATGPT_ANSWERS)}")
if mode == "api" and answered < len(novel):
    print(f"{len(novel) - answered} prompt(s) without an answer (asked this run, and failed); run again to ask only "
          "those.", file=sys.stderr)
    sys.exit(1)

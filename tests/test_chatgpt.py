"""04_chatgpt.py run as a user runs it, against a real OpenAI-compatible server (llama.cpp serving SmolLM2, from
conftest.py), with a small fault-injecting proxy in front of it: rate limits, server errors, stalls, a server that goes
away, 200 replies without an answer (empty choices, null or empty content, cut-off JSON, a captive portal's HTML page)
and a reply trickled one byte at a time. Every test works in its own EMOJI_OUT folder holding a hand-made
generations.jsonl; the prompts asked are lib.prompts.NOVEL. Tests marked slow need the llama.cpp server;
the others (settings, key checks, the manual CSV, a fake server made of the proxy alone) run in seconds."""
import csv
import http.client
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import run_many
from lib import metrics, prompts

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "04_chatgpt.py"
INSTRUCTION_START = "Respond only with emojis"
INTERRUPTED = "interrupted - finished work is kept; run again to continue"

PROMPTS = list(prompts.NOVEL)
# (prompt, 1-epoch answer, 5-epoch answer): hand-made step-3 outputs for the summary table and the report section
NOVEL = list(zip(PROMPTS, ["🐶😊", "✈️❌", "🍪🎂👵", "⛈️🔌💡", "🏃🏅🎉"],
                  ["🐶❤️🏠", "✈️😭🧳", "🍪🎉", "⛈️💡😱", "Marathon 🏅 done"]))
FAST = ["--max-tokens", "24"]  # keep the small model's answers quick


# ---------------------------------------------------------------- fixtures and helpers
def write_generations(out):
    rows = [{"set": "known", "model": "ft1", "prompt": "I love pizza", "reference": "🍕", "sample": None,
             "output": "🍕", "decoding": {}}]
    for model, column in (("base", None), ("ft1", 1), ("ft5", 2)):
        for entry in NOVEL:
            output = "Sure! Here are emojis: 🐶" if column is None else entry[column]
            rows.append({"set": "novel", "model": model, "prompt": entry[0], "reference": None, "sample": None,
                         "output": output, "decoding": {"do_sample": False}})
            # a sampled answer for the same prompt: must not make the prompt appear twice
            rows.append({"set": "novel", "model": model, "prompt": entry[0], "reference": None, "sample": 0,
                         "output": output, "decoding": {"do_sample": True}})
    rows.append({"set": "edge", "model": "ft1", "prompt": "", "reference": None, "sample": None, "output": "🤷",
                 "decoding": {}})
    with (out / "generations.jsonl").open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


@pytest.fixture
def out(tmp_path):
    folder = tmp_path / "outputs"
    folder.mkdir()
    write_generations(folder)
    return folder


def env_for(out, key=None, base_url=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(EMOJI_OUT=str(out), PYTHONUNBUFFERED="1")
    if key is not None:
        env["OPENAI_API_KEY"] = key
    if base_url is not None:
        env["OPENAI_BASE_URL"] = base_url
    return env


def run(out, *args, key=None, base_url=None, timeout=240, cwd=None):
    # never let a real data/chatgpt_responses.csv of the user leak into a test
    args = ["--manual-csv", str(out.parent / "no_such_responses.csv"), *args]
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env_for(out, key, base_url),
                          cwd=cwd or out.parent, capture_output=True, text=True, timeout=timeout)


def answers(out):
    path = out / "chatgpt.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def assert_no_key(out, key, *texts):
    """The key appears in no file under the outputs folder and in nothing the script printed."""
    for path in out.rglob("*"):
        if path.is_file():
            assert key not in path.read_bytes().decode("utf-8", "replace"), f"API key leaked into {path}"
    for text in texts:
        assert key not in text, "API key leaked into the script's output"


def assert_complete(out):
    rows = answers(out)
    assert [r["prompt"] for r in rows] == PROMPTS, "one row per prompt, in prompt order, no duplicates"
    for row in rows:
        assert row["status"] == "ok" and row["error"] is None
        assert row["sent"].startswith(INSTRUCTION_START) and row["sent"].endswith(row["prompt"])
        assert row["source"] == "api" and row["model"] and row["time"].endswith("+00:00")
        assert row["base_url_host"].startswith("127.0.0.1:") and row["label"].endswith(f" at {row['base_url_host']}")
        assert isinstance(row["answer"], str) and row["answer"].strip() and isinstance(row["has_words"], bool)
        assert isinstance(row["fingerprint"], str) and row["fingerprint"]
    return rows


def assert_failed(row, *words):
    assert row["status"] == "failed" and row["answer"] == "" and row["label"] is None
    for word in words:
        assert word in row["error"], row["error"]


CAPTIVE_PORTAL = (b"<!DOCTYPE html><html><head><title>Sign in to Hotel-WiFi</title></head>"
                  b"<body>Accept the terms to continue</body></html>")


class FaultProxy:
    """A threaded HTTP proxy in front of the real server. `plan` lists what to do with the first requests, one entry
    each; requests past the plan are forwarded unchanged.
      "ok"             forward
      "429" / "500"    answer that error (a 429 says Retry-After: 1); "quota": 429 insufficient_quota
      "sleep"          stall past the client's timeout, then drop the request (the real server never sees it)
      "down"           close the connection and stop listening (the server went away)
      "empty_choices" / "null_content" / "empty_content"   forward, then answer 200 with that answer removed
      "truncated"      forward, then send only the first half of the JSON body
      "html"           200 with a captive portal's login page
      "trickle"        forward, then send the reply one byte every `trickle_s` seconds
      "echo_key"       400 whose message quotes the Authorization header, as some servers do
      "echo_key_200"   200 made up here (no upstream needed): an emoji answer and a model name that quote the
                       Authorization header, as a misbehaving server might
    `served_model`, when set, replaces the model name in every forwarded reply (the name the server reports).
    `port`: listen where an earlier proxy did (the server's address is part of an answer's provenance)."""

    def __init__(self, upstream, plan=(), sleep_s=3.0, trickle_s=0.5, served_model=None, port=0):
        self.upstream = urlsplit(upstream)
        self.plan, self.sleep_s, self.trickle_s, self.served_model = list(plan), sleep_s, trickle_s, served_model
        self.requests, self.lock = [], threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                self.handle_request(None)

            def do_POST(self):
                self.handle_request(self.rfile.read(int(self.headers.get("Content-Length", 0))))

            def handle_request(self, body):
                with proxy.lock:
                    index = len(proxy.requests)
                    proxy.requests.append(self.path)
                action = proxy.plan[index] if index < len(proxy.plan) else "ok"
                try:
                    self.act(action, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting

            def act(self, action, body):
                if action == "down":
                    self.close_connection = True
                    threading.Thread(target=proxy.stop, daemon=True).start()
                    self.connection.close()
                    return
                if action in ("429", "500", "quota", "echo_key"):
                    status = {"500": 500, "echo_key": 400}.get(action, 429)
                    code = {"429": "rate_limit_exceeded", "500": "server_error", "quota": "insufficient_quota",
                            "echo_key": "invalid_request"}[action]
                    message = f"injected {action} for {self.headers.get('Authorization')}"
                    data = json.dumps({"error": {"message": message, "type": code, "code": code}}).encode()
                    return self.reply(status, data, headers={"Retry-After": "1"} if action == "429" else {})
                if action == "sleep":  # stall, then drop the request: the client has given up by then
                    time.sleep(proxy.sleep_s)
                    self.close_connection = True
                    return
                if action == "html":
                    return self.reply(200, CAPTIVE_PORTAL, "text/html; charset=utf-8")
                if action == "echo_key_200":
                    said = self.headers.get("Authorization")
                    message = {"role": "assistant", "content": f"🐶🎉 extra text for {said}"}
                    data = {"id": "fake", "object": "chat.completion", "created": 0, "model": f"echo-{said}",
                            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
                    return self.reply(200, json.dumps(data, ensure_ascii=False).encode())
                status, data, content_type = self.forward(body)
                if status == 200 and action in ("empty_choices", "null_content", "empty_content") or \
                        status == 200 and proxy.served_model:
                    reply = json.loads(data)
                    if action == "empty_choices":
                        reply["choices"] = []
                    elif action in ("null_content", "empty_content"):
                        reply["choices"][0]["message"]["content"] = None if action == "null_content" else ""
                    if proxy.served_model:
                        reply["model"] = proxy.served_model
                    data = json.dumps(reply).encode()
                if action == "truncated":
                    data = data[: len(data) // 2]
                if action == "trickle":
                    return self.reply(status, data, content_type, trickle=True)
                self.reply(status, data, content_type)

            def forward(self, body):
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                result = response.status, response.read(), response.getheader("Content-Type", "application/json")
                conn.close()
                return result

            def reply(self, status, data, content_type="application/json", headers=(), trickle=False):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in dict(headers).items():
                    self.send_header(name, value)
                self.end_headers()
                if not trickle:
                    return self.wfile.write(data)
                for i in range(len(data)):
                    self.wfile.write(data[i: i + 1])
                    self.wfile.flush()
                    time.sleep(proxy.trickle_s)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        # a short poll: stop() waits for it, once per test
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.stopped = False

    @property
    def count(self):
        return len(self.requests)

    def stop(self):
        if not self.stopped:
            self.stopped = True
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def proxy(llama_server):
    made = []

    def make(plan=(), **options):
        made.append(FaultProxy(llama_server.base_url, plan, **options))
        return made[-1]

    yield make
    for p in made:
        p.stop()


@pytest.fixture
def fake():
    """A FaultProxy with no server behind it, for plans that never forward (made-up replies, errors, no request)."""
    made = []

    def make(plan=(), **options):
        made.append(FaultProxy("http://127.0.0.1:9/v1", plan, **options))
        return made[-1]

    yield make
    for p in made:
        p.stop()


# ---------------------------------------------------------------- API mode: the happy path
@pytest.mark.slow
def test_happy_path_caches_five_answers_and_rerun_sends_nothing(out, llama_server, proxy):
    server = proxy()
    first = run(out, *FAST, key=llama_server.api_key, base_url=server.url)
    assert first.returncode == 0, first.stderr + first.stdout
    assert server.count == 5, first.stdout
    assert all(path.endswith("/chat/completions") for path in server.requests)
    rows = assert_complete(out)
    assert "asking 5" in first.stdout and "5/5 prompts answered" in first.stdout

    again = run(out, *FAST, key=llama_server.api_key, base_url=server.url)
    assert again.returncode == 0, again.stderr
    assert server.count == 5, "a re-run must send no request"
    assert "asking 0" in again.stdout
    assert answers(out) == rows

    forced = run(out, *FAST, "--force", key=llama_server.api_key, base_url=server.url)
    assert forced.returncode == 0, forced.stderr
    assert server.count == 10, "--force asks every prompt again"
    assert_complete(out)  # the new answers replaced the old ones: still one row per prompt
    assert_no_key(out, llama_server.api_key, first.stdout, first.stderr, again.stdout, forced.stdout, forced.stderr)


@pytest.mark.slow
def test_direct_to_server_without_proxy(out, llama_server):
    """The documented command: OPENAI_API_KEY=... OPENAI_BASE_URL=http://127.0.0.1:PORT/v1 python 04_chatgpt.py"""
    result = run(out, *FAST, key=llama_server.api_key, base_url=llama_server.base_url)
    assert result.returncode == 0, result.stderr + result.stdout
    rows = assert_complete(out)
    assert {r["base_url_host"] for r in rows} == {f"127.0.0.1:{llama_server.port}"}
    for row in rows:  # the extraction is consistent with the raw answer
        assert row["emojis"] == "".join(metrics.emojis_of(row["answer"]))
        assert row["has_words"] == bool(metrics.words_leaked(row["answer"]))
    assert_no_key(out, llama_server.api_key, result.stdout, result.stderr)


@pytest.mark.slow
def test_label_names_the_served_model_and_the_host(out, llama_server, proxy):
    """llama.cpp echoes whatever model name it is asked for; the label must say what the server reports and where it
    runs, never "ChatGPT" for a server that is not api.openai.com."""
    server = proxy(served_model="smollm2-135m-q4")
    result = run(out, *FAST, key=llama_server.api_key, base_url=server.url)
    assert result.returncode == 0, result.stderr + result.stdout
    for row in assert_complete(out):
        assert row["model"] == "gpt-4o-mini", "the requested model is kept beside the served one"
        assert row["served_model"] == "smollm2-135m-q4"
        assert row["label"] == f"smollm2-135m-q4 at 127.0.0.1:{server.port}"
        assert "ChatGPT" not in row["label"]


@pytest.mark.slow
def test_changed_settings_ask_again_and_dropped_prompts_go(out, llama_server, proxy):
    server = proxy()
    assert run(out, *FAST, key=llama_server.api_key, base_url=server.url).returncode == 0
    before = {r["prompt"]: r["fingerprint"] for r in assert_complete(out)}
    with (out / "chatgpt.jsonl").open("a", encoding="utf-8") as f:  # an answer to a prompt NOVEL no longer holds
        f.write(json.dumps({"prompt": "A prompt from an older NOVEL set", "status": "ok", "answer": "🦕"}) + "\n")

    changed = run(out, *FAST, "--temperature", "0.2", key=llama_server.api_key, base_url=server.url)
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert server.count == 10, "answers made with another temperature are asked again, not merely noted"
    assert "asking 5 (5 answered with other settings)" in changed.stdout
    after = {r["prompt"]: r["fingerprint"] for r in assert_complete(out)}  # also: the old prompt's row is gone
    assert all(after[p] != before[p] for p in PROMPTS)

    other_server = proxy()  # the same settings at another address is another source
    assert run(out, *FAST, "--temperature", "0.2", key=llama_server.api_key, base_url=other_server.url).returncode == 0
    assert other_server.count == 5 and server.count == 10


# ---------------------------------------------------------------- API mode: faults become retries or failures
@pytest.mark.slow
@pytest.mark.parametrize("fault, words", [
    ("empty_choices", ["no choices"]),
    ("null_content", ["no answer", "None"]),
    ("empty_content", ["no answer", "''"]),
    ("truncated", ["not JSON"]),
    ("html", ["not JSON", "Sign in to Hotel-WiFi"]),
])
def test_200_reply_without_an_answer_is_a_failure_and_asked_again(out, llama_server, proxy, fault, words):
    server = proxy(plan=[fault])
    first = run(out, *FAST, key=llama_server.api_key, base_url=server.url)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "Traceback" not in first.stderr and "4/5 prompts answered" in first.stdout
    rows = answers(out)
    assert_failed(rows[0], *words)
    assert [r["status"] for r in rows[1:]] == ["ok"] * 4, "the other prompts are still asked"

    rerun = run(out, *FAST, key=llama_server.api_key, base_url=server.url)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert server.count == 6, "the re-run asks only the prompt without an answer"
    assert_complete(out)
    assert_no_key(out, llama_server.api_key, first.stdout, first.stderr, rerun.stdout, rerun.stderr)


@pytest.mark.slow
def test_trickling_reply_is_cut_at_the_deadline(out, llama_server, proxy):
    """One byte every 0.5 s resets a per-read timeout forever (a reply of a few hundred bytes takes minutes); each
    attempt must end at --timeout-s of wall time, as a timeout the client retries."""
    server = proxy(plan=["trickle", "trickle"], trickle_s=0.5)
    start = time.time()
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *FAST, "--timeout-s", "3", "--max-retries", "1",
                             "--manual-csv", str(out.parent / "none.csv")],
                            env=env_for(out, llama_server.api_key, server.url), cwd=out.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    failed_after = None
    for line in proc.stdout:
        if "FAILED" in line and failed_after is None:
            failed_after = time.time() - start
    proc.wait(timeout=120)
    assert proc.returncode == 1
    # two attempts of 3 s and one backoff (at most 0.5 s), plus the interpreter's start
    assert failed_after is not None and 6 <= failed_after <= 6.5 + 5, failed_after
    rows = answers(out)
    assert_failed(rows[0], "APITimeoutError", "within 3 s")
    assert [r["status"] for r in rows[1:]] == ["ok"] * 4

    rerun = run(out, *FAST, "--timeout-s", "3", key=llama_server.api_key, base_url=server.url)  # now healthy
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert server.count == 2 + 4 + 1, "the re-run asks the prompt that timed out, and only it"
    assert_complete(out)


@pytest.mark.slow
def test_server_stops_mid_run_then_rerun_asks_only_missing(out, llama_server, proxy):
    dying = proxy(plan=["ok", "ok", "down"])
    first = run(out, *FAST, "--max-retries", "1", key=llama_server.api_key, base_url=dying.url)
    assert first.returncode == 1, first.stdout + first.stderr
    rows = answers(out)
    ok = [r for r in rows if r["status"] == "ok"]
    assert [r["prompt"] for r in ok] == PROMPTS[:2]
    failed = [r for r in rows if r["status"] == "failed"]
    assert [r["prompt"] for r in failed] == PROMPTS[2:], "every prompt asked gets a row"
    assert all("Connection" in r["error"] for r in failed)
    assert "run again" in first.stderr

    server = proxy(port=dying.port)  # the server is back at the same address
    second = run(out, *FAST, key=llama_server.api_key, base_url=server.url)
    assert second.returncode == 0, second.stdout + second.stderr
    assert server.count == 3, "only the three missing prompts are asked"
    final = assert_complete(out)
    assert final[:2] == ok, "answers received before the server went away are kept unchanged"
    assert_no_key(out, llama_server.api_key, first.stdout, first.stderr, second.stdout, second.stderr)


@pytest.mark.slow
def test_all_requests_fail_exit_nonzero_and_every_row_failed(out, llama_server, proxy):
    server = proxy(plan=["500"] * 10)
    result = run(out, *FAST, "--max-retries", "1", key=llama_server.api_key, base_url=server.url)
    assert result.returncode == 1, result.stdout + result.stderr
    assert server.count == 10, "each prompt: one try and one retry"
    assert "0/5 prompts answered" in result.stdout and "5 prompt(s) without an answer" in result.stderr
    rows = answers(out)
    assert [r["prompt"] for r in rows] == PROMPTS
    for row in rows:
        assert_failed(row, "InternalServerError 500")
    assert_no_key(out, llama_server.api_key, result.stdout, result.stderr)


@pytest.mark.slow
def test_rate_limit_is_retried_after_the_servers_delay(out, llama_server, proxy):
    server = proxy(plan=["429", "429"])
    result = run(out, *FAST, key=llama_server.api_key, base_url=server.url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert server.count == 7
    assert "Retrying request in 1.000000 seconds (retry 1 of 4)" in result.stdout, "Retry-After: 1 is honoured"
    assert "(retry 2 of 4)" in result.stdout
    assert_complete(out)


@pytest.mark.slow
def test_server_errors_exhaust_retries_record_failure_and_move_on(out, llama_server, proxy):
    server = proxy(plan=["500"] * 3)
    result = run(out, *FAST, "--max-retries", "2", key=llama_server.api_key, base_url=server.url)
    assert result.returncode == 1, "a failed prompt makes the exit code non-zero"
    assert server.count == 3 + 4, "three tries for the first prompt, one for each of the others"
    delays = [float(line.split(" in ")[1].split()[0]) for line in result.stdout.splitlines() if "Retrying" in line]
    assert len(delays) == 2 and delays[1] > delays[0], f"exponential backoff: {delays}"
    rows = answers(out)
    assert rows[0]["prompt"] == PROMPTS[0]
    assert_failed(rows[0], "500")
    assert [r["status"] for r in rows[1:]] == ["ok"] * 4

    rerun = run(out, *FAST, key=llama_server.api_key, base_url=server.url)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert server.count == 8, "the re-run asks only the failed prompt"
    final = {r["prompt"]: r for r in assert_complete(out)}  # the success superseded the failure
    assert [final[p] for p in PROMPTS[1:]] == rows[1:]


@pytest.mark.slow
def test_timeout_is_retried(out, llama_server, proxy):
    server = proxy(plan=["sleep"], sleep_s=6)
    # 3 s: well past a real answer of the small model (under a second), well short of the stall
    result = run(out, *FAST, "--timeout-s", "3", key=llama_server.api_key, base_url=server.url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(retry 1 of 4)" in result.stdout
    assert server.count == 6
    assert_complete(out)


@pytest.mark.slow
def test_bad_key_one_clear_line_no_retries(out, llama_server, proxy):
    server = proxy()
    wrong = "sk-wrong-0123456789abcdef"
    result = run(out, *FAST, key=wrong, base_url=server.url)
    assert result.returncode == 2
    assert server.count == 1, "a rejected key is not retried"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "401" in lines[0] and "OPENAI_API_KEY" in lines[0], result.stderr
    assert answers(out) == []
    assert_no_key(out, wrong, result.stdout, result.stderr)


@pytest.mark.slow
def test_no_quota_one_clear_line(out, llama_server, proxy):
    server = proxy(plan=["quota"] * 2)
    result = run(out, *FAST, "--max-retries", "1", key=llama_server.api_key, base_url=server.url)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "insufficient_quota" in lines[0], result.stderr
    assert answers(out) == []


@pytest.mark.slow
def test_key_quoted_by_the_server_is_never_stored_or_printed(out, llama_server, proxy):
    server = proxy(plan=["echo_key"])
    result = run(out, *FAST, key=llama_server.api_key, base_url=server.url)
    assert result.returncode == 1, result.stdout + result.stderr
    assert_failed(answers(out)[0], "BadRequestError 400", "injected echo_key for Bearer ***")
    assert_no_key(out, llama_server.api_key, result.stdout, result.stderr)


BAD_SETTINGS = [
    ("--max-retries", "-1"), ("--timeout-s", "0"), ("--mode", "web"),
    # upper bounds that make sense (issue 18): a 1e300 s timeout or a million retries is a typo, not a setting
    ("--timeout-s", "1e300"), ("--timeout-s", "nan"), ("--timeout-s", "inf"), ("--max-retries", "1000"),
    ("--max-tokens", "100000000"), ("--max-tokens", "1.5"),
    ("--time", "5"),  # flags are never abbreviated (--time is not taken as --timeout-s)
]


@pytest.fixture(scope="module")
def refused(tmp_path_factory):
    """What each of BAD_SETTINGS made 04 do, all run in one process; and the outputs folder they shared."""
    folder = tmp_path_factory.mktemp("refused") / "outputs"
    folder.mkdir()
    write_generations(folder)
    cases = [("04_chatgpt.py", ["--manual-csv", folder.parent / "no_such_responses.csv", flag, value])
             for flag, value in BAD_SETTINGS]
    results = run_many(cases, out=folder, env={"OPENAI_API_KEY": "sk-unused-123456",
                                               "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    return folder, dict(zip(BAD_SETTINGS, results))


@pytest.mark.parametrize("flag, value", BAD_SETTINGS)
def test_bad_setting_is_one_line_exit_2(refused, flag, value):
    folder, results = refused
    result = results[flag, value]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and flag in result.stderr
    assert answers(folder) == []


@pytest.mark.parametrize("base_url", ["http://127.0.0.1:99999/v1", "127.0.0.1:8080", "http://[::1/v1"])
def test_bad_base_url_is_one_line_exit_2(out, base_url):
    result = run(out, key="sk-unused-123456", base_url=base_url)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "OPENAI_BASE_URL" in result.stderr
    assert answers(out) == []


def test_https_to_an_http_server_records_the_ssl_cause(out, fake):
    """"Connection error." alone does not say that the URL's https meets a plain-http server: the cause is kept."""
    server = fake()
    url = server.url.replace("http://", "https://")
    result = run(out, *FAST, "--max-retries", "0", key="sk-unused-123456789", base_url=url)
    assert result.returncode == 1, result.stdout + result.stderr
    rows = answers(out)
    assert [r["prompt"] for r in rows] == PROMPTS
    for row in rows:
        assert_failed(row, "APIConnectionError", "Connection error.", "SSL")
    failed_lines = [line for line in result.stdout.splitlines() if "FAILED" in line]
    assert len(failed_lines) == 5 and all("SSL" in line for line in failed_lines), result.stdout


@pytest.mark.parametrize("key", ["\u201csk-test-7d3f9a61c2e84b05a1f0\u201d",  # curly quotes, as a word processor pastes
                                 '"sk-test-7d3f9a61c2e84b05a1f0"', "'sk-test-7d3f9a61c2e84b05a1f0'",
                                 "sk-t\u00e9st-7d3f9a61c2e84b05a1f0", "sk-test-7d3f9a61\u200bc2e84b05a1f0",
                                 "sk-test 7d3f9a61c2e84b05a1f0"])
def test_pasted_key_with_quotes_or_odd_characters_is_refused_before_sending(out, fake, key):
    server = fake()
    result = run(out, key=key, base_url=server.url)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "OPENAI_API_KEY" in lines[0] and "Traceback" not in result.stderr, result.stderr
    assert server.count == 0, "nothing is sent with a key the server can't read"
    assert answers(out) == []
    assert_no_key(out, "7d3f9a61", result.stdout, result.stderr)


def test_key_echoed_in_a_200_answer_is_masked_everywhere(out, fake):
    key = "sk-test-7d3f9a61c2e84b05a1f0"
    server = fake(plan=["echo_key_200"] * 5)
    result = run(out, key=key, base_url=server.url)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = answers(out)
    assert len(rows) == 5
    for row in rows:
        assert row["status"] == "ok" and row["answer"] == "🐶🎉 extra text for Bearer ***"
        assert row["served_model"] == "echo-Bearer ***" and row["label"] == f"echo-Bearer *** at 127.0.0.1:{server.port}"
    assert "not masked" not in result.stdout
    assert_no_key(out, key, result.stdout, result.stderr)


def test_short_dummy_key_is_not_masked_and_says_so_once(out, fake):
    """A local server's dummy key `x` is no secret: masking every x would garble every answer and message."""
    server = fake(plan=["500"] + ["echo_key_200"] * 4)
    result = run(out, "--max-retries", "0", key="x", base_url=server.url)
    assert result.returncode == 1, result.stdout + result.stderr
    rows = answers(out)
    assert_failed(rows[0], "InternalServerError 500", "injected 500 for Bearer x")
    assert [r["answer"] for r in rows[1:]] == ["🐶🎉 extra text for Bearer x"] * 4
    assert result.stdout.count("not masked") == 1 and "***" not in result.stdout + result.stderr


@pytest.mark.slow
def test_ctrl_c_keeps_received_answers(out, llama_server, proxy):
    server = proxy(plan=["ok", "sleep"], sleep_s=30)
    # As in a terminal: a background job of a non-interactive shell (a CI runner's) inherits SIGINT ignored.
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *FAST], env=env_for(out, llama_server.api_key, server.url),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while server.count < 2 and time.time() < deadline:  # the first answer is in, the second request hangs
        time.sleep(0.1)
    assert server.count == 2
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stdout + stderr
    assert stderr.strip() == INTERRUPTED
    kept = answers(out)
    assert [(r["prompt"], r["status"]) for r in kept] == [(PROMPTS[0], "ok")]

    rerun = run(out, *FAST, key=llama_server.api_key, base_url=server.url)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert server.count == 2 + 4
    assert assert_complete(out)[0] == kept[0]


# ---------------------------------------------------------------- no key: paste sheet and manual CSV
def test_no_key_writes_paste_sheet_and_exits_zero(out):
    result = run(out)
    assert result.returncode == 0, result.stderr
    assert "mode: manual" in result.stdout
    sheet = (out / "chatgpt_prompts.md").read_text(encoding="utf-8")
    for prompt in PROMPTS:
        assert f"{INSTRUCTION_START} that capture this sentence: {prompt}" in sheet
    assert sheet.count("```text") == 5
    with (out / "chatgpt_responses_template.csv").open(encoding="utf-8-sig", newline="") as f:
        assert [row["prompt"] for row in csv.DictReader(f)] == PROMPTS
    assert answers(out) == []


def test_manual_csv_is_imported_once_and_updates_replace(out):
    responses = out.parent / "responses.csv"

    def write(rows):
        with responses.open("w", encoding="utf-8-sig", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["prompt", "answer", "model"])
            writer.writerows(rows)

    write([[PROMPTS[0], "🐶🥰🏡", "GPT-4o"],
           [f"{INSTRUCTION_START} that capture this sentence: {PROMPTS[1]}", "Sure! 🌋🧺😱", ""],  # full text pasted
           [PROMPTS[2], "", ""]])  # not answered yet
    first = run(out, "--manual-csv", str(responses))
    assert first.returncode == 0, first.stderr
    rows = answers(out)
    assert [r["prompt"] for r in rows] == PROMPTS[:2]
    assert all(r["source"] == "manual" and r["status"] == "ok" and r["base_url_host"] is None for r in rows)
    assert rows[0]["model"] == "GPT-4o" and rows[1]["model"] == "ChatGPT (web)"
    assert [r["label"] for r in rows] == ["GPT-4o", "ChatGPT (web)"]
    assert rows[0]["emojis"] == "🐶🥰🏡" and rows[0]["has_words"] is False and rows[0]["emoji_only"] is True
    assert rows[1]["answer"] == "Sure! 🌋🧺😱" and rows[1]["emojis"] == "🌋🧺😱" and rows[1]["has_words"] is True
    assert rows[1]["words"] == ["Sure"]

    again = run(out, "--manual-csv", str(responses))
    assert again.returncode == 0 and answers(out) == rows, "re-importing the same file adds nothing"

    write([[PROMPTS[0], "🐕🎉", ""], [PROMPTS[1], "Sure! 🌋🧺😱", ""], [PROMPTS[2], "💻🔋❌", ""]])
    third = run(out, "--manual-csv", str(responses))
    assert third.returncode == 0, third.stderr
    final = {r["prompt"]: r for r in answers(out)}
    assert len(answers(out)) == 3
    assert final[PROMPTS[0]]["answer"] == "🐕🎉" and final[PROMPTS[2]]["emojis"] == "💻🔋❌"


@pytest.mark.parametrize("sep", [";", "\t"])
def test_manual_csv_separated_by_semicolons_or_tabs_is_imported(out, sep):
    """Spreadsheets in many locales save CSV with ';'; a tab-separated paste is common too."""
    responses = out.parent / "responses.csv"
    with responses.open("w", encoding="utf-8-sig", newline="") as f:
        csv.writer(f, delimiter=sep).writerows([["Prompt", "Answer"], [PROMPTS[0], "🐶🥰, 🏡"], [PROMPTS[1], "✈️❌"]])
    result = run(out, "--manual-csv", str(responses))
    assert result.returncode == 0, result.stderr
    assert [(r["prompt"], r["answer"]) for r in answers(out)] == [(PROMPTS[0], "🐶🥰, 🏡"), (PROMPTS[1], "✈️❌")]
    assert "imported 2 new" in result.stdout


@pytest.mark.parametrize("content, found", [
    (f"text,answer\n{PROMPTS[0]},🐶\n", "'text', 'answer'"),
    (f"prompt,emojis\n{PROMPTS[0]},🐶\n", "'prompt', 'emojis'"),
    ("", "none"),
])
def test_manual_csv_without_its_columns_says_which_it_has(out, content, found):
    responses = out.parent / "responses.csv"
    responses.write_text(content, encoding="utf-8")
    result = run(out, "--manual-csv", str(responses))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and found in lines[0] and "needed: prompt" in lines[0] and "answer" in lines[0], lines
    assert answers(out) == []


def test_paste_sheet_and_template_are_replaced_whole(out):
    """Written to a temporary file and renamed into place, never truncated and rewritten where they stand."""
    sheet, template = out / "chatgpt_prompts.md", out / "chatgpt_responses_template.csv"
    sheet.write_text("old sheet", encoding="utf-8")
    template.write_text("old template", encoding="utf-8")
    before = {path: path.stat().st_ino for path in (sheet, template)}
    links = {path: out.parent / f"link-{path.name}" for path in before}
    for path, link in links.items():
        os.link(path, link)  # a second name for the old file: it must keep the old content
    assert run(out).returncode == 0
    for path, link in links.items():
        assert path.stat().st_ino != before[path] and link.read_text(encoding="utf-8").startswith("old ")
    assert sheet.read_text(encoding="utf-8").startswith("# Task 3")
    assert template.read_bytes().startswith(b"\xef\xbb\xbfprompt,answer,model"), "a BOM, for spreadsheet programs"


def test_relative_manual_csv_is_read_from_the_current_directory(out, tmp_path):
    here = tmp_path / "somewhere" / "else"
    here.mkdir(parents=True)
    (here / "mine.csv").write_text(f"prompt,answer\n{PROMPTS[3]},⛈️🔦\n", encoding="utf-8")
    result = run(out, "--manual-csv", "mine.csv", cwd=here)
    assert result.returncode == 0, result.stderr
    assert [(r["prompt"], r["answer"]) for r in answers(out)] == [(PROMPTS[3], "⛈️🔦")]
    assert answers(out)[0]["file"] == str(here / "mine.csv")


def test_missing_generations_names_step_3(tmp_path):
    empty = tmp_path / "outputs"
    empty.mkdir()
    result = run(empty)
    assert result.returncode != 0
    assert "03_generate.py" in result.stderr and len(result.stderr.strip().splitlines()) == 1


"""04_chatgpt.py run as a user runs it, against a real OpenAI-compatible server (llama.cpp serving SmolLM2, from
conftest.py), with a small fault-injecting proxy in front of it for rate limits, server errors, timeouts and a
server that goes away mid-run. Every test works in its own EMOJI_OUT folder holding a hand-made generations.jsonl."""
import ast
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

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "04_chatgpt.py"
INSTRUCTION_START = "Respond only with emojis"

NOVEL = [
    ("I just adopted a puppy and I'm so happy", "🐶😊", "🐶❤️🏠"),
    ("The volcano erupted during our picnic", "🌋🧺", "🌋🔥😱"),
    ("My laptop died right before the deadline", "💻💀⏰", "💻😭"),
    ("We celebrated grandma's 90th birthday at the beach", "👵🎂🏖️", "🎂🎉🌊"),
    ("Rain ruined the football match but we still won", "🌧️⚽🏆", "Rain ⚽ won"),
]
PROMPTS = [p for p, _, _ in NOVEL]
FAST = ["--backoff-s", "0.01", "--max-tokens", "24"]  # keep retries and the small model's answers quick


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


def run(out, *args, key=None, base_url=None, timeout=240):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["EMOJI_OUT"] = str(out)
    env["PYTHONUNBUFFERED"] = "1"
    if key is not None:
        env["OPENAI_API_KEY"] = key
    if base_url is not None:
        env["OPENAI_BASE_URL"] = base_url
    # never let a real data/chatgpt_responses.csv of the user leak into a test
    args = ["--manual-csv", str(out.parent / "no_such_responses.csv"), *args]
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, cwd=out.parent, capture_output=True,
                          text=True, timeout=timeout)


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
        assert row["base_url_host"].startswith("127.0.0.1:")
        assert isinstance(row["answer"], str) and isinstance(row["has_words"], bool)
    return rows


class FaultProxy:
    """A threaded HTTP proxy in front of the real server. `plan` lists what to do with the first requests, one entry
    each: "ok" forwards, "429"/"500" answer that error, "sleep" stalls past the client's timeout and then drops the
    request (the real server never sees it), "down" closes the connection and stops listening (the server went
    away). Requests past the plan are forwarded."""

    def __init__(self, upstream, plan=(), sleep_s=3.0):
        self.upstream = urlsplit(upstream)
        self.plan, self.sleep_s = list(plan), sleep_s
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
                if action == "down":
                    self.close_connection = True
                    threading.Thread(target=proxy.stop, daemon=True).start()
                    self.connection.close()
                    return
                if action in ("429", "500"):
                    kind = "rate_limit_exceeded" if action == "429" else "server_error"
                    return self.reply(int(action), json.dumps({"error": {"message": f"injected {action}",
                                                                         "type": kind, "code": kind}}).encode())
                if action == "sleep":  # stall, then drop the request: the client has given up by then
                    time.sleep(proxy.sleep_s)
                    self.close_connection = True
                    return
                try:
                    self.forward(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting

            def forward(self, body):
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                self.reply(response.status, response.read(), response.getheader("Content-Type", "application/json"))
                conn.close()

            def reply(self, status, data, content_type="application/json"):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
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

    def make(plan=(), sleep_s=3.0):
        made.append(FaultProxy(llama_server.base_url, plan, sleep_s))
        return made[-1]

    yield make
    for p in made:
        p.stop()


# ---------------------------------------------------------------- API mode
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


def test_direct_to_server_without_proxy(out, llama_server):
    """The documented command: OPENAI_API_KEY=... OPENAI_BASE_URL=http://127.0.0.1:PORT/v1 python 04_chatgpt.py"""
    result = run(out, *FAST, key=llama_server.api_key, base_url=llama_server.base_url)
    assert result.returncode == 0, result.stderr + result.stdout
    rows = assert_complete(out)
    assert {r["base_url_host"] for r in rows} == {f"127.0.0.1:{llama_server.port}"}
    for row in rows:  # the extraction is consistent with the raw answer
        import metrics

        assert row["emojis"] == "".join(metrics.emojis_of(row["answer"]))
        assert row["has_words"] == bool(metrics.words_leaked(row["answer"]))
    assert_no_key(out, llama_server.api_key, result.stdout, result.stderr)


def test_server_stops_mid_run_then_rerun_asks_only_missing(out, llama_server, proxy):
    dying = proxy(plan=["ok", "ok", "down"])
    first = run(out, *FAST, key=llama_server.api_key, base_url=dying.url)
    assert first.returncode == 1, first.stdout + first.stderr
    rows = answers(out)
    ok = [r for r in rows if r["status"] == "ok"]
    assert [r["prompt"] for r in ok] == PROMPTS[:2]
    failed = [r for r in rows if r["status"] == "failed"]
    assert failed and all(r["error"] and "Connection" in r["error"] for r in failed)
    assert "run again" in first.stderr

    server = proxy()
    second = run(out, *FAST, key=llama_server.api_key, base_url=server.url)
    assert second.returncode == 0, second.stdout + second.stderr
    assert server.count == 3, "only the three missing prompts are asked"
    final = assert_complete(out)
    assert final[:2] == ok, "answers received before the server went away are kept unchanged"
    assert_no_key(out, llama_server.api_key, first.stdout, first.stderr, second.stdout, second.stderr)


def test_rate_limit_is_retried_with_backoff(out, llama_server, proxy):
    server = proxy(plan=["429", "429"])
    result = run(out, *FAST, key=llama_server.api_key, base_url=server.url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert server.count == 7
    assert result.stdout.count("RateLimitError 429") == 2
    assert "retry 1/4" in result.stdout and "retry 2/4" in result.stdout
    assert_complete(out)


def test_server_errors_exhaust_retries_record_failure_and_move_on(out, llama_server, proxy):
    server = proxy(plan=["500"] * 3)
    result = run(out, *FAST, "--max-retries", "2", "--backoff-s", "0.2", key=llama_server.api_key,
                 base_url=server.url)
    assert result.returncode == 1, "a failed prompt makes the exit code non-zero"
    assert server.count == 3 + 4, "three tries for the first prompt, one for each of the others"
    delays = [float(line.rsplit(" in ", 1)[1].rstrip("s")) for line in result.stdout.splitlines() if "retry " in line]
    assert len(delays) == 2
    assert 0.1 <= delays[0] <= 0.3 and 0.2 <= delays[1] <= 0.6, f"exponential backoff with jitter: {delays}"
    rows = answers(out)
    assert rows[0]["prompt"] == PROMPTS[0] and rows[0]["status"] == "failed" and "500" in rows[0]["error"]
    assert [r["status"] for r in rows[1:]] == ["ok"] * 4

    rerun = run(out, *FAST, key=llama_server.api_key, base_url=server.url)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert server.count == 8, "the re-run asks only the failed prompt"
    final = {r["prompt"]: r for r in assert_complete(out)}  # the success superseded the failure
    assert [final[p] for p in PROMPTS[1:]] == rows[1:]


def test_timeout_is_retried(out, llama_server, proxy):
    server = proxy(plan=["sleep"], sleep_s=6)
    # 3 s: well past a real answer of the small model (under a second), well short of the stall
    result = run(out, *FAST, "--timeout-s", "3", key=llama_server.api_key, base_url=server.url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "APITimeoutError" in result.stdout and "retry 1/4" in result.stdout
    assert server.count == 6
    assert_complete(out)


def test_bad_key_one_clear_line_no_retries(out, llama_server, proxy):
    server = proxy()
    wrong = "sk-wrong-0123456789abcdef"
    result = run(out, *FAST, key=wrong, base_url=server.url)
    assert result.returncode == 2
    assert server.count == 1, "a rejected key is not retried"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "401" in lines[0] and "OPENAI_API_KEY" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert answers(out) == []
    assert_no_key(out, wrong, result.stdout, result.stderr)


def test_ctrl_c_keeps_received_answers(out, llama_server, proxy):
    server = proxy(plan=["ok", "sleep"], sleep_s=30)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(EMOJI_OUT=str(out), OPENAI_API_KEY=llama_server.api_key, OPENAI_BASE_URL=server.url,
               PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *FAST], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while server.count < 2 and time.time() < deadline:  # the first answer is in, the second request hangs
        time.sleep(0.1)
    assert server.count == 2
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stdout + stderr
    assert "interrupted: 1 answer(s) kept" in stderr
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


def test_missing_generations_names_step_3(tmp_path):
    empty = tmp_path / "outputs"
    empty.mkdir()
    result = run(empty)
    assert result.returncode != 0
    assert "03_generate.py" in result.stderr and len(result.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- the report's Task 3 section
def report_section():
    """chatgpt_section and its _chatgpt_* helpers from 05_report.py, without running the whole script (which needs
    trained adapters); they use only common, metrics and tabulate."""
    import common
    import metrics
    from tabulate import tabulate

    tree = ast.parse((ROOT / "05_report.py").read_text(encoding="utf-8"))
    wanted = [node for node in tree.body if isinstance(node, ast.FunctionDef)
              and (node.name == "chatgpt_section" or node.name.startswith("_chatgpt"))]
    namespace = {"common": common, "metrics": metrics, "tabulate": tabulate}
    exec(compile(ast.Module(body=wanted, type_ignores=[]), "05_report.py", "exec"), namespace)
    return namespace["chatgpt_section"]


def section_of(out):
    generations = [json.loads(line) for line in (out / "generations.jsonl").read_text(encoding="utf-8").splitlines()]
    text = report_section()(generations, answers(out))
    (out / "report_task3.md").write_text(text, encoding="utf-8")  # so assert_no_key checks the report too
    return text


def table_rows(text):
    """The body rows of every Markdown table in text, as lists of stripped cells (no escaped pipes in these)."""
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith(("| prompt", "| model"))]


def test_report_section_with_api_answers(out, llama_server):
    result = run(out, *FAST, key=llama_server.api_key, base_url=llama_server.base_url)
    assert result.returncode == 0, result.stderr
    text = section_of(out)
    assert text.startswith("## Task 3") and "not run" not in text
    rows = {r["prompt"]: r for r in answers(out)}
    body = table_rows(text)
    for (prompt, ft1, ft5), cells in zip(NOVEL, body):
        assert cells[:3] == [prompt, ft1, ft5]
        assert cells[3].startswith(" ".join(rows[prompt]["answer"].split())[:40])
        assert cells[3].endswith("⚠️words") == rows[prompt]["has_words"]
    assert "5 answer(s) from the API: model `gpt-4o-mini`" in text and f"127.0.0.1:{llama_server.port}" in text
    figures = {cells[0]: cells[1:] for cells in body[5:]}
    assert figures["1-epoch fine-tune"][:3] == ["5/5 (100%)", "2.6", "13"]
    assert figures["5-epoch fine-tune"][:4] == ["4/5 (80%)", "2.4", "12", "1"]
    chatgpt_only = sum(r["emoji_only"] for r in rows.values())
    assert figures["ChatGPT"][0] == f"{chatgpt_only}/5 ({chatgpt_only / 5:.0%})"
    assert figures["ChatGPT"][3] == str(sum(r["has_words"] for r in rows.values()))
    assert "### Task 3 comparison (draft - edit this)" in text
    for aspect in ("Quality", "Relevance", "Creativity", "Generalisation"):
        assert f"**{aspect}**" in text
    assert_no_key(out, llama_server.api_key, text, result.stdout)


def test_report_section_not_run_says_how(out):
    assert run(out).returncode == 0
    text = section_of(out)
    assert "**not run**" in text
    assert "OPENAI_API_KEY" in text and "OPENAI_BASE_URL" in text, "API mode explained"
    assert "chatgpt_prompts.md" in text and "data/chatgpt_responses.csv" in text, "paste-sheet mode explained"
    assert len(table_rows(text)) == 5 + 2, "the fine-tunes' answers are still shown, plus their figures"


def test_report_section_with_manual_answers(out):
    responses = out.parent / "responses.csv"
    responses.write_text(f"prompt,answer\n{PROMPTS[0]},🐶🥰🏡\n{PROMPTS[1]},Boom! 🌋🧺\n", encoding="utf-8")
    assert run(out, "--manual-csv", str(responses)).returncode == 0
    text = section_of(out)
    assert "2 answer(s) pasted by hand from ChatGPT (web)" in text
    assert "3 prompt(s) have no ChatGPT answer yet" in text
    body = table_rows(text)
    assert [cells[3] for cells in body[:5]] == ["🐶🥰🏡", "Boom! 🌋🧺 ⚠️words", "—", "—", "—"]
    assert [cells[4] for cells in body[:2]] == ["✅✅✅", "✅✅❌"]

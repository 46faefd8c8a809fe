"""lib/export.py with the embedded model: a small LoRA adapter (a few optimizer steps on emoji pairs, saved the way 02
saves one) exported as merged weights and as a GGUF served by llama-cpp-python's real server on 127.0.0.1. Both must
give the adapter's own greedy answers (computed as 03 computes them) to the KNOWN prompts, asked in the training
format."""
import csv
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone

import pytest
from conftest import LLAMA_SERVER_START_S, ROOT, free_port

from lib import export, metrics, models, prompts, store

MAX_NEW_TOKENS = 24  # 03's MAX_NEW_TOKENS
TRAIN_STEPS, BATCH, PAIRS = 16, 4, 16  # enough for emoji answers to the KNOWN prompts, ~30 s on the busy 2-core machine


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """On the shared 2-core machine two torch threads spin waiting for each other: with other jobs running, making
    the adapter took 165 s with two threads and 31 s with one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """An adapter folder shaped like 02's outputs/adapters/epochs1 (PEFT files, tokenizer, run.json with a stamp)."""
    import torch
    torch.manual_seed(0)
    model, tokenizer, _ = models.load(models.EMBEDDED)
    with store.RAW_CSV.open(encoding="utf-8") as f:
        pairs = [(row["text"], row["emoji"]) for row in csv.DictReader(f)]
    pairs = [p for p in pairs if p[0] in prompts.KNOWN] + [p for p in pairs if p[0] not in prompts.KNOWN][:PAIRS - 5]
    # The adapters 02 adds (models.add_lora), on every linear layer of every block.
    model = models.add_lora(model, models.EMBEDDED, r=8, alpha=16, dropout=0.0,
                            targets="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                            layers=None, seed=0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    model.train()
    for step in range(TRAIN_STEPS):
        batch = [pairs[(step * BATCH + k) % len(pairs)] for k in range(BATCH)]
        ids, labels = [], []
        for sentence, emojis in batch:  # loss on the answer only, as 02 trains
            prompt = tokenizer(prompts.render(tokenizer, prompts.emoji_messages(sentence)),
                               add_special_tokens=False)["input_ids"]
            full = tokenizer(tokenizer.apply_chat_template(prompts.emoji_messages(sentence, emojis), tokenize=False),
                             add_special_tokens=False)["input_ids"]
            ids.append(full)
            labels.append([-100] * len(prompt) + full[len(prompt):])
        width = max(map(len, ids))
        pad = lambda rows, value: torch.tensor([r + [value] * (width - len(r)) for r in rows])  # noqa: E731
        mask = pad([[1] * len(r) for r in ids], 0)
        loss = model(input_ids=pad(ids, tokenizer.pad_token_id), attention_mask=mask, labels=pad(labels, -100)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    path = tmp_path_factory.mktemp("adapters") / "epochs1"
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    write_run(path, "first")
    return path


def write_run(path, tag):
    """run.json as 02 writes it, as far as the export reads it: the model, whether Unsloth trained it, the finish
    time and the stamp (resolved settings, dataset fingerprint, the sizes of the adapter's files)."""
    stamp = store.make_stamp({"MODEL": models.EMBEDDED, "test": tag}, {"dataset": "none"}, folder=path,
                             skip=("run.json",))
    store.write_json(path / "run.json", {"model": models.EMBEDDED, "unsloth": False, "stamp": stamp,
                                         "settings": stamp["settings"],
                                         "finished_at": datetime.now(timezone.utc).isoformat()})


@pytest.fixture(scope="module")
def reference(adapter):
    """03's greedy answers from the adapter: base model + PeftModel, the chat template, models.generate."""
    from peft import PeftModel

    model, tokenizer, _ = models.load(models.EMBEDDED)
    model = PeftModel.from_pretrained(model, str(adapter))
    models.for_inference(model)
    texts = [prompts.render(tokenizer, prompts.emoji_messages(p)) for p in prompts.KNOWN]
    answers = [a for a, _ in models.generate(model, tokenizer, texts, MAX_NEW_TOKENS)]  # sample=None: greedy
    # The comparison means something only if the fine-tune answers in emojis.
    assert sum(bool(metrics.emojis_of(a)) for a in answers) >= 4, answers
    return dict(zip(prompts.KNOWN, answers))


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def merged(adapter, export_dir):
    return export.export_run(adapter, "merged", export_dir=export_dir)


@pytest.fixture(scope="module")
def gguf_file(adapter, export_dir):
    return export.export_run(adapter, "gguf", export_dir=export_dir)


def start_server(gguf, log_path):
    """llama-cpp-python's OpenAI-compatible server on a free loopback port (as conftest's llama_server)."""
    port = free_port()
    log = log_path.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                             "--port", str(port), "--n_ctx", "512", "--n_threads", "1", "--n_threads_batch", "1"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + LLAMA_SERVER_START_S
    while True:
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"llama.cpp server did not start:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(base_url + "/models", timeout=2):
                return proc, log, base_url
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.3)


def ask(base_url, messages):
    # Greedy: temperature 0, and no repeat penalty (llama-cpp-python's server defaults to 1.1; transformers to none).
    body = {"model": "export", "messages": messages, "temperature": 0, "repeat_penalty": 1.0,
            "max_tokens": MAX_NEW_TOKENS}
    request = urllib.request.Request(base_url + "/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)


def same_or_close(answer, expected):
    """The same answer, or (where 16-bit rounding changed a token) emoji-only with F1 >= 0.8 against it."""
    return answer == expected or (metrics.is_emoji_only(answer) and metrics.compare(answer, expected)["f1"] >= 0.8)


# ---------------------------------------------------------------- tests (slow: they need the trained adapter)
@pytest.mark.slow  # trains the adapter fixture, starts a llama.cpp server
def test_gguf_export_served_by_llama_cpp_answers_like_the_adapter(adapter, reference, gguf_file, tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python[server] is not installed (requirements-test.txt)")
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    gguf = gguf_file
    assert gguf.suffix == ".gguf" and store.read_stamp(export.stamp_path(gguf)) is not None
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    fields = GGUFReader(str(gguf)).fields
    assert fields["tokenizer.chat_template"].contents() == tokenizer.chat_template
    assert fields["tokenizer.ggml.model"].contents() == "gpt2"  # SmolLM2's byte-level BPE, not a SentencePiece vocab

    proc, log, base_url = start_server(gguf, tmp_path / "server.log")
    try:
        served = {}
        for prompt in prompts.KNOWN:
            messages = prompts.emoji_messages(prompt)  # the training format: system instruction + sentence
            reply = ask(base_url, messages)
            # The server renders the embedded template into exactly the prompt the adapter was trained and asked with.
            expected_tokens = len(tokenizer(prompts.render(tokenizer, messages), add_special_tokens=False)
                                  ["input_ids"])
            assert reply["usage"]["prompt_tokens"] == expected_tokens, prompt
            served[prompt] = reply["choices"][0]["message"]["content"].strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
    assert all(same_or_close(served[p], reference[p]) for p in prompts.KNOWN), (served, reference)


@pytest.mark.slow  # trains the adapter fixture
def test_merged_export_loads_with_plain_transformers_and_answers_like_the_adapter(adapter, reference, merged):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(merged)
    tokenizer = AutoTokenizer.from_pretrained(merged)
    assert str(model.dtype) == f"torch.{export.MERGED_DTYPE}"
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(adapter).chat_template
    # The saved generation config alone makes generation stop at the end of the answer.
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    texts = [prompts.render(tokenizer, prompts.emoji_messages(p)) for p in prompts.KNOWN]
    answers = [a for a, _ in models.generate(model, tokenizer, texts, MAX_NEW_TOKENS)]
    assert answers == [reference[p] for p in prompts.KNOWN]


@pytest.mark.slow  # trains the adapter fixture
def test_merged_tokenizer_tokenizes_and_decodes_like_the_adapters(adapter, merged):
    """export._plain_byte_level drops a byte-fallback flag from the tokenizer: it must change no token and no text."""
    from transformers import AutoTokenizer

    before, after = AutoTokenizer.from_pretrained(adapter), AutoTokenizer.from_pretrained(merged)
    assert json.loads((merged / "tokenizer.json").read_text())["model"]["byte_fallback"] is False
    with store.RAW_CSV.open(encoding="utf-8") as f:
        texts = [prompts.render(before, prompts.emoji_messages(r["text"], r["emoji"])) for r in csv.DictReader(f)]
    for text in texts:
        ids = before(text, add_special_tokens=False)["input_ids"]
        assert after(text, add_special_tokens=False)["input_ids"] == ids
        assert after.decode(ids) == before.decode(ids)


@pytest.mark.slow  # trains the adapter fixture
def test_export_is_skipped_while_its_adapter_is_unchanged_and_redone_after_a_retrain(adapter, tmp_path, capsys):
    run = tmp_path / "adapters" / "epochs1"
    shutil.copytree(adapter, run)
    target = export.export_run(run, "merged", export_dir=tmp_path / "export")
    weights = target / "model.safetensors"
    first = weights.stat().st_mtime_ns
    assert export.export_run(run, "merged", export_dir=tmp_path / "export") == target
    assert "up to date" in capsys.readouterr().out and weights.stat().st_mtime_ns == first
    write_run(run, "retrained")  # a new run.json stamp and finish time: a retrained adapter
    export.export_run(run, "merged", export_dir=tmp_path / "export")
    assert weights.stat().st_mtime_ns != first
    assert store.read_stamp(target / "export.json")["inputs"]["adapter_fingerprint"] == \
        json.loads((run / "run.json").read_text())["stamp"]["fingerprint"]
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["epochs1-merged"]


def one_error_line(capsys, exit_info):
    """The one error line store.fail printed (last on stderr, after any progress bars of a model load), after exit 1."""
    assert exit_info.value.code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error")]
    assert len(errors) == 1 and lines[-1] == errors[0], lines
    return errors[0]


def test_missing_adapter_names_the_step_to_run_and_writes_nothing(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export.export_run(tmp_path / "adapters" / "epochs5", "gguf", export_dir=tmp_path / "export")
    assert "02_train.py" in one_error_line(capsys, exit_info)
    assert not (tmp_path / "export").exists()


@pytest.mark.parametrize("damage", [b"", b"{not json", b"[1, 2]"])
def test_a_damaged_run_json_names_the_file_and_the_step_to_run_and_writes_nothing(tmp_path, capsys, damage):
    run = tmp_path / "adapters" / "epochs1"
    run.mkdir(parents=True)
    (run / "adapter_config.json").write_text("{}")
    (run / "run.json").write_bytes(damage)
    with pytest.raises(SystemExit) as exit_info:
        export.export_run(run, "gguf", export_dir=tmp_path / "export")
    line = one_error_line(capsys, exit_info)
    assert "run.json" in line and "02_train.py --force" in line
    assert not (tmp_path / "export").exists()


@pytest.mark.slow  # trains the adapter fixture
def test_failed_conversion_is_one_line_and_keeps_the_previous_export(adapter, gguf_file, tmp_path, monkeypatch,
                                                                     capsys):
    """A converter that dies half-way: its error is reported in one line, and neither its partial file nor a temporary
    file or folder (store.atomic's per-process .NAME.PID.tmp, the converter's .export-* work folder) is left; the
    previous complete export and its stamp stay in place."""
    fake = tmp_path / "llama.cpp"
    fake.mkdir()
    (fake / "convert_hf_to_gguf.py").write_text(
        "import sys\nout = sys.argv[sys.argv.index('--outfile') + 1]\nopen(out, 'wb').write(b'GGUF half')\n"
        "sys.exit('ValueError: broken tensor blk.0.attn_q.weight')\n")
    monkeypatch.setattr(export, "LLAMA_CPP_DIR", fake)
    before = gguf_file.read_bytes()[:4096], gguf_file.stat().st_size
    stamp = export.stamp_path(gguf_file).read_bytes()
    listing = sorted(p.name for p in gguf_file.parent.iterdir())
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        export.export_run(adapter, "gguf", export_dir=gguf_file.parent, force=True)
    message = one_error_line(capsys, exit_info)
    assert message.startswith("error: convert_hf_to_gguf.py failed") and "broken tensor" in message
    assert (gguf_file.read_bytes()[:4096], gguf_file.stat().st_size) == before
    assert export.stamp_path(gguf_file).read_bytes() == stamp
    assert sorted(p.name for p in gguf_file.parent.iterdir()) == listing
    assert not [p for p in gguf_file.parent.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp")]


def test_default_kind_is_gguf_on_this_cpu_and_none_for_the_7b_on_cuda(monkeypatch, tmp_path):
    assert export.converter() is not None, "setup.sh did not unpack llama.cpp's converter into .venv/llama.cpp"
    assert export.default_kind(models.EMBEDDED) == "gguf"
    monkeypatch.setattr(export, "LLAMA_CPP_DIR", tmp_path)  # no converter: merged weights need nothing else
    assert export.default_kind(models.EMBEDDED) == "merged"
    monkeypatch.setattr(models, "cuda", lambda: True)
    assert export.default_kind("auto") == "none"
    assert export.default_kind(models.EMBEDDED) == "merged"  # the embedded model is small on any machine


def test_a_gguf_type_the_converter_cannot_write_is_one_line_naming_the_ones_it_can(tmp_path):
    """k-quants need llama.cpp's compiled quantizer (README: llama-quantize on the f16 file), not this export."""
    result = subprocess.run([sys.executable, "-m", "lib.export", "--gguf-type", "q4_k_m"], cwd=ROOT, text=True,
                            capture_output=True, env={**__import__("os").environ, "EMOJI_OUT": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "'q4_k_m'" in result.stderr and "'f16'" in result.stderr
    assert not list(tmp_path.iterdir())

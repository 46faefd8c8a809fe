"""colab.ipynb, executed cell by cell in a real IPython kernel as a student runs it, on the CPU with the embedded model
and tiny settings: the notebook's own calls of the five scripts, so it cannot drift from them. Only the install cell
(GPU packages for a Colab runtime) is left out. Colab's secrets store is stood in for by a module that hands out the
local test server's key, so step 4 really asks an API, and the key must show up nowhere it was not handed to."""
import base64
import json
import os
import re

import pytest

from conftest import ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = ROOT / "colab.ipynb"
TINY = {  # through the Settings cell's flag variables; CPU time
    "DATA_ARGS": "--min-test 10 --test-fraction 0.001 --validation-fraction 0.01",
    "TRAIN_ARGS": "--max-steps 2 --batch-size 4 --export none",  # the export has its own tests
    "GENERATE_ARGS": "--num-samples 1 --general-max-new-tokens 8 --answer-margin 2",
    "CHATGPT_ARGS": "--max-tokens 24",
}


def tagged(nb, tag):
    return [i for i, cell in enumerate(nb.cells) if tag in cell.metadata.get("tags", [])]


def fake_colab(folder, key):
    """A google.colab package with only `userdata.get`, whose one secret is `key`."""
    package = folder / "google" / "colab"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "userdata.py").write_text(
        f"def get(name):\n    return {key!r} if name == 'OPENAI_API_KEY' else None\n")
    return folder


@pytest.fixture(scope="module")
def executed(tmp_path_factory, llama_server):
    tmp = tmp_path_factory.mktemp("notebook")
    out = tmp / "outputs"
    nb = nbformat.read(NOTEBOOK, as_version=4)
    del nb.cells[tagged(nb, "install")[0]]
    settings = dict(TINY, CHATGPT_ARGS=f"{TINY['CHATGPT_ARGS']} --manual-csv {tmp / 'no_such_responses.csv'}")
    at = tagged(nb, "parameters")[0] + 1
    nb.cells.insert(at, nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in settings.items())))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}  # the key comes from "secrets" only
    env.update(EMOJI_OUT=str(out), OPENAI_BASE_URL=llama_server.base_url,
               PYTHONPATH=os.pathsep.join(filter(None, [str(fake_colab(tmp / "fake", llama_server.api_key)),
                                                        env.get("PYTHONPATH")])))
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT)}})
    client.execute(env=env)
    return nb, out, llama_server.api_key


def outputs_of(cell):
    text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
    shown = [o.data for o in cell.outputs if o.output_type == "display_data"]
    return text, shown


@pytest.mark.slow  # runs the notebook: trains, generates, asks the llama.cpp server
def test_the_notebook_runs_all_five_steps_into_the_chosen_outputs(executed):
    nb, out, _ = executed
    for path in ["dataset/dataset_dict.json", "adapters/epochs1/run.json", "adapters/epochs5/run.json",
                 "generations.jsonl", "chatgpt.jsonl", "report.md", "loss.png"]:
        assert (out / path).exists(), path
    steps = [s for cell in nb.cells if cell.cell_type == "code"
             for s in re.findall(r"^\$ python (\S+)", outputs_of(cell)[0], re.M)]
    assert steps == ["01_make_dataset.py", "02_train.py", "03_generate.py", "04_chatgpt.py", "05_report.py"]
    for epochs in (1, 5):
        assert json.loads((out / "adapters" / f"epochs{epochs}" / "run.json").read_text())["steps"] == 2


@pytest.mark.slow  # runs the notebook: trains, generates, asks the llama.cpp server
def test_the_report_and_the_loss_plot_are_shown_inline(executed):
    nb, out, _ = executed
    shown = [d for cell in nb.cells if cell.cell_type == "code" for d in outputs_of(cell)[1]]
    assert any(base64.b64decode(d.get("image/png", "")) == (out / "loss.png").read_bytes() for d in shown)
    assert any(d.get("text/markdown") == (out / "report.md").read_text(encoding="utf-8") for d in shown)


@pytest.mark.slow  # runs the notebook: trains, generates, asks the llama.cpp server
def test_step_4_asks_the_api_with_the_key_from_colab_secrets_and_never_shows_it(executed):
    nb, out, key = executed
    rows = [json.loads(line) for line in (out / "chatgpt.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows and all(r["source"] == "api" and r["status"] == "ok" for r in rows)
    assert any("OPENAI_API_KEY: from Colab's Secrets" in outputs_of(c)[0] for c in nb.cells if c.cell_type == "code")
    assert key not in nbformat.writes(nb), "the key leaked into the notebook's outputs"
    for path in out.rglob("*"):
        if path.is_file():
            assert key not in path.read_bytes().decode("utf-8", "replace"), f"the key leaked into {path}"


def test_the_colab_install_pins_what_requirements_txt_pins():
    pinned = lambda text: dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.M))
    main, colab = pinned((ROOT / "requirements.txt").read_text()), pinned((ROOT / "requirements-colab.txt").read_text())
    for name in ("transformers", "trl", "peft", "datasets"):
        assert colab.get(name) == main[name], name
    assert {k: v for k, v in colab.items() if k in main} == {k: main[k] for k in colab if k in main}
    nb = nbformat.read(NOTEBOOK, as_version=4)
    (install,) = tagged(nb, "install")
    assert "requirements-colab.txt" in nb.cells[install].source and "keep-torch" in nb.cells[install].source

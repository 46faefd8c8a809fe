"""models.answer_only_loss: 02 makes TRL's chunked loss run the output layer on the answer tokens, not on the whole
batch. It must give the loss of the plain cross-entropy over the answer tokens, and touch far fewer rows."""
import inspect

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from trl.trainer import sft_trainer

from lib import models

pytestmark = pytest.mark.slow  # it imports torch and transformers, ~10 s on 2 cores (conftest.SLOW_MODULES)


@pytest.fixture
def chunk_rows(monkeypatch):
    """The number of rows of each output-layer chunk TRL computes, recorded."""
    monkeypatch.setattr(sft_trainer, "_CHUNKED_LM_HEAD_CHUNK_SIZE", sft_trainer._CHUNKED_LM_HEAD_CHUNK_SIZE)
    rows, chunk = [], sft_trainer._chunk

    def recording_chunk(h, *args):
        rows.append(h.shape[0])
        return chunk(h, *args)
    monkeypatch.setattr(sft_trainer, "_chunk", recording_chunk)
    return rows


def tiny_batch():
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=500, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2))
    ids = torch.randint(3, 500, (8, 40))  # 8 examples of 40 tokens, the answer the last 6 of each
    labels = torch.full_like(ids, -100)
    labels[:, -6:] = ids[:, -6:]
    return model, ids, labels


def test_trl_still_reads_the_chunk_size_that_answer_only_loss_sets():
    # A TRL upgrade that renames the constant would leave 02's setting without effect, silently.
    assert "_CHUNKED_LM_HEAD_CHUNK_SIZE" in inspect.getsource(sft_trainer.SFTTrainer.__init__)


def test_the_output_layer_runs_on_answer_rows_only_with_the_same_loss(chunk_rows):
    model, ids, labels = tiny_batch()
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    reference = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 500), labels[:, 1:].reshape(-1))

    sft_trainer._patch_chunked_ce_lm_head(model, chunk_size=256)  # TRL's own chunk size
    trl_default = model(input_ids=ids, labels=labels).loss
    rows_default = sum(chunk_rows)
    chunk_rows.clear()

    model, ids, labels = tiny_batch()
    models.answer_only_loss()
    sft_trainer._patch_chunked_ce_lm_head(model, chunk_size=sft_trainer._CHUNKED_LM_HEAD_CHUNK_SIZE)
    ours = model(input_ids=ids, labels=labels).loss

    answer_rows = int((labels[:, 1:] != -100).sum())  # 48 of the 312 shifted positions
    assert rows_default == 256  # one chunk of 256 rows: the 48 answer rows and 208 prompt rows
    assert sum(chunk_rows) == 64 and sum(chunk_rows) < 2 * answer_rows  # two chunks of 32 rows
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(trl_default, reference, rtol=1e-5, atol=1e-5)

"""models.full_batches: with CUDA graphs, 02 fills an epoch's short last batch up to the batch size so that the graphs
see one shape. The filled batch must train exactly as the short one: same loss, same gradient, every real row kept."""
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lib import models

pytestmark = pytest.mark.slow  # it imports torch and transformers, ~10 s on 2 cores (conftest.SLOW_MODULES)


class StepRecorder:
    """Stands in for the trainer: its training_step computes the loss and the gradient of whatever batch it gets."""

    def __init__(self):
        self.shapes = []

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.shapes.append(tuple(inputs["input_ids"].shape))
        model.zero_grad()
        loss = model(**inputs).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def short_batch(rows=4, width=12):
    ids = torch.randint(3, 64, (rows, width))
    mask = torch.ones_like(ids)
    mask[1, 8:] = mask[3, 5:] = 0  # right padding, as TRL's collator pads
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :3] = -100  # the prompt: no loss, as with completion_only_loss
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def test_a_filled_batch_has_the_short_batchs_loss_and_gradient():
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64))
    batch = short_batch()
    plain = StepRecorder()
    loss, grads = plain.training_step(model, batch)
    filled = StepRecorder()
    models.full_batches(filled, 8)
    filled_loss, filled_grads = filled.training_step(model, batch)
    assert plain.shapes == [(4, 12)] and filled.shapes == [(8, 12)]
    assert torch.isfinite(filled_loss) and torch.allclose(filled_loss, loss, rtol=1e-6, atol=0)
    for name, grad in grads.items():
        assert torch.allclose(filled_grads[name], grad, rtol=1e-5, atol=1e-7), name
    assert batch["input_ids"].shape == (4, 12), "the caller's batch is left as it was"


def test_full_batches_pass_through_unchanged():
    recorder = StepRecorder()
    seen = []
    recorder.training_step = lambda model, inputs, *args: seen.append(inputs)
    models.full_batches(recorder, 4)
    batch = short_batch(rows=4)
    recorder.training_step(None, batch)
    assert seen == [batch] and seen[0] is batch
    unchanged = StepRecorder()
    models.full_batches(unchanged, 0)  # 02 without CUDA graphs
    assert "training_step" not in vars(unchanged)

"""models.adapter_reset: 02 loads the model once and starts every run (1 and 5 epochs) from the same initial adapter.
The reset must restore every LoRA weight exactly, in the same tensors (CUDA graphs hold their addresses)."""
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lib import models

pytestmark = pytest.mark.slow  # it imports torch and transformers, ~10 s on 2 cores (conftest.SLOW_MODULES)


def test_reset_restores_the_initial_adapter_in_place():
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=4))
    model = models.add_lora(model, "tiny", 4, 8, 0.0, "q_proj,v_proj", None, 0)
    reset = models.adapter_reset(model)
    lora = {n: p for n, p in model.named_parameters() if p.requires_grad}
    initial = {n: (p.detach().clone(), p.data_ptr()) for n, p in lora.items()}
    with torch.no_grad():
        for p in lora.values():
            p.add_(1.0)  # what a run's training does to them
    reset()
    assert len(lora) == 8  # lora_A and lora_B of q_proj and v_proj in 2 blocks
    for name, p in lora.items():
        assert torch.equal(p, initial[name][0]) and p.data_ptr() == initial[name][1], name

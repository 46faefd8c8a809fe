"""02 on a CPU with bf16 matrix instructions (AMX) keeps the frozen weights in bf16 and trains more pairs (issue 19).
This box may lack AMX, so the hardware's answer is set; the arithmetic is real either way (bf16 is emulated here)."""
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lib import models

pytestmark = pytest.mark.slow  # it imports torch and transformers, ~10 s on 2 cores (conftest.SLOW_MODULES)


@pytest.fixture(params=[True, False], ids=["amx", "no-amx"])
def amx(request, monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: request.param)
    monkeypatch.delenv("EMOJI_CPU_BF16", raising=False)
    return request.param


def test_frozen_weights_are_bf16_only_for_training_on_a_cpu_with_amx(amx):
    assert models.train_dtype(training=True) == (torch.bfloat16 if amx else torch.float32)
    assert models.train_dtype() == torch.float32  # 03 generates with the weights as they are
    assert models.auto_settings(models.EMBEDDED)["TRAIN_PAIRS"] == (1100 if amx else 800)


def test_emoji_cpu_bf16_0_turns_bf16_weights_and_the_larger_subset_off(amx, monkeypatch):
    monkeypatch.setenv("EMOJI_CPU_BF16", "0")
    assert models.train_dtype(training=True) == torch.float32
    assert models.auto_settings(models.EMBEDDED)["TRAIN_PAIRS"] == 800


def tiny(dtype):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    return LlamaForCausalLM(config).to(dtype)


def test_lora_on_bf16_weights_trains_fp32_adapters_with_the_loss_of_fp32_weights():
    ids = torch.randint(3, 300, (4, 24), generator=torch.Generator().manual_seed(1))
    losses = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = models.add_lora(tiny(dtype), "tiny", 8, 16, 0.0, "q_proj,v_proj,down_proj", None, 0)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # what 02 trains under on such a CPU
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        lora = [p for n, p in model.named_parameters() if "lora_" in n]
        assert lora and all(p.dtype == torch.float32 and p.grad is not None for p in lora)
        assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
        losses[dtype] = loss.item()
    # autocast rounds fp32 weights to bf16 before each product, so only the norms' arithmetic differs
    assert losses[torch.bfloat16] == pytest.approx(losses[torch.float32], rel=1e-2)

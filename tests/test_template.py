"""The Llama-2 chat format and the answer-only loss mask, with the embedded model's real tokenizer."""
import pytest

import common


@pytest.fixture(scope="module")
def smollm():
    return common.load_model(common.EMBEDDED)


def test_llama2_text_has_the_special_tokens_in_order():
    text = common.llama2_text("Let's go dancing tonight.", "💃🕺🎶")
    assert text == ("<s>[INST] <<SYS>>\nReply with emojis only.\n<</SYS>>\n\n"
                    "Let's go dancing tonight. [/INST] 💃🕺🎶 </s>")
    assert text.startswith(common.llama2_prompt("Let's go dancing tonight."))


def test_embedded_tokenizer_stops_on_the_token_generation_stops_on(smollm):
    model, tokenizer = smollm
    # The GGUF tokenizer says eos is <|im_start|>; generation stops on <|im_end|>. They must agree after loading.
    assert tokenizer.eos_token == "<|im_end|>"
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert tokenizer.pad_token_id is not None


def test_loss_mask_covers_the_answer_and_the_stop_token_only(smollm):
    _, tokenizer = smollm
    example = common.tokenize_example(tokenizer, "Let's go dancing tonight.", "💃🕺🎶")
    ids, mask = example["input_ids"], example["completion_mask"]
    assert len(ids) == len(mask)
    answer = [i for i, m in zip(ids, mask) if m]
    prompt = [i for i, m in zip(ids, mask) if not m]
    assert mask == sorted(mask)  # zeros (prompt) then ones (answer), never interleaved
    assert tokenizer.decode(prompt) == common.llama2_prompt("Let's go dancing tonight.", tokenizer.bos_token)
    assert tokenizer.decode(answer) == " 💃🕺🎶 <|im_end|>"
    assert answer[-1] == tokenizer.eos_token_id


def test_finetuned_prompt_is_the_training_prompt_and_base_gets_its_chat_template(smollm):
    _, tokenizer = smollm
    example = common.tokenize_example(tokenizer, "Rainy Sunday.", "🌧️")
    prompt_ids = [i for i, m in zip(example["input_ids"], example["completion_mask"]) if not m]
    assert tokenizer(common.finetuned_prompt(tokenizer, "Rainy Sunday."), add_special_tokens=False)["input_ids"] \
        == prompt_ids
    native = common.native_prompt(tokenizer, "Rainy Sunday.")
    assert "<|im_start|>user\nRainy Sunday.<|im_end|>" in native and native.endswith("<|im_start|>assistant\n")
    assert "[INST]" not in native


def test_sft_trainer_keeps_only_the_answer_in_the_labels(smollm, tmp_path):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = smollm
    examples = [common.tokenize_example(tokenizer, s, e) for s, e in [("Hi.", "👋"), ("A long day at work.", "💼😩")]]
    trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=Dataset.from_list(examples),
                         args=SFTConfig(output_dir=str(tmp_path), completion_only_loss=True, report_to=[], bf16=False))
    for row, example in zip(trainer.train_dataset, examples):
        kept = [t for t in row["labels"] if t != -100]
        assert kept == [i for i, m in zip(example["input_ids"], example["completion_mask"]) if m]
        assert tokenizer.decode(kept).endswith("<|im_end|>")

"""Prompt formats and the answer-only loss mask, with the embedded model's real tokenizer: Task 1's Llama-2 string, the
Llama-2 fallback chat template that renders exactly that string, and TRL's prompt/completion labels."""
import jinja2
import pytest

import common

SENTENCE, EMOJIS = "Let's go dancing tonight.", "💃🕺🎶"


@pytest.fixture(scope="module")
def smollm():
    return common.load_model(common.EMBEDDED)


def test_llama2_text_has_the_special_tokens_in_order():
    assert common.llama2_text(SENTENCE, EMOJIS) == ("<s>[INST] <<SYS>>\nReply with emojis only.\n<</SYS>>\n\n"
                                                    "Let's go dancing tonight. [/INST] 💃🕺🎶 </s>")


def test_llama2_fallback_template_renders_task_1_text_exactly():
    template = jinja2.Template(common.LLAMA2_CHAT_TEMPLATE)
    full = template.render(messages=common.emoji_messages(SENTENCE, EMOJIS), bos_token="<s>", eos_token="</s>")
    assert full == common.llama2_text(SENTENCE, EMOJIS)
    prompt = template.render(messages=common.emoji_messages(SENTENCE), bos_token="<s>", eos_token="</s>",
                             add_generation_prompt=True)
    assert full.startswith(prompt) and prompt.endswith("[/INST]")
    # Without a system message there is no <<SYS>> block (the non-emoji questions of Task 4.2).
    plain = template.render(messages=common.plain_messages("What is the capital of Germany?"), bos_token="<s>",
                            eos_token="</s>", add_generation_prompt=True)
    assert plain == "<s>[INST] What is the capital of Germany? [/INST]"


def test_a_tokenizer_without_a_template_gets_the_llama2_one(smollm):
    _, tokenizer = smollm
    own = tokenizer.chat_template
    try:
        tokenizer.chat_template = None
        assert "Llama-2" in common.ensure_chat_template(tokenizer)
        assert "[/INST]" in common.render_prompt(tokenizer, common.emoji_messages(SENTENCE))
    finally:
        tokenizer.chat_template = own
    assert common.ensure_chat_template(tokenizer) == "the model's own chat template"


def test_embedded_tokenizer_stops_on_the_token_generation_stops_on(smollm):
    model, tokenizer = smollm
    # The GGUF tokenizer says eos is <|im_start|>; generation stops on <|im_end|>. They must agree after loading,
    # because <|im_end|> is what ends every trained answer in SmolLM2's chat template.
    assert tokenizer.eos_token == "<|im_end|>"
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert tokenizer.pad_token_id is not None


def test_emoji_requests_carry_the_instruction_and_general_questions_do_not(smollm):
    _, tokenizer = smollm
    emoji_prompt = common.render_prompt(tokenizer, common.emoji_messages(SENTENCE))
    general = common.render_prompt(tokenizer, common.plain_messages("What is the capital of Germany?"))
    assert common.SYSTEM_PROMPT in emoji_prompt and emoji_prompt.endswith("<|im_start|>assistant\n")
    assert common.SYSTEM_PROMPT not in general and "[INST]" not in general


def test_sft_trainer_keeps_only_the_answer_and_its_stop_token_in_the_labels(smollm, tmp_path):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = smollm
    pairs = [("Hi.", "👋"), (SENTENCE, EMOJIS)]
    data = Dataset.from_list([{"prompt": common.emoji_messages(s), "completion": [{"role": "assistant", "content": e}]}
                              for s, e in pairs])
    trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=data,
                         args=SFTConfig(output_dir=str(tmp_path), completion_only_loss=True, report_to=[], bf16=False))
    for row, (sentence, emojis) in zip(trainer.train_dataset, pairs):
        labels = row["labels"] if "labels" in row else [i if m else -100 for i, m in
                                                        zip(row["input_ids"], row["completion_mask"])]
        n_prompt = next(i for i, t in enumerate(labels) if t != -100)
        prompt = tokenizer.decode(row["input_ids"][:n_prompt])
        assert prompt == common.render_prompt(tokenizer, common.emoji_messages(sentence))
        answer = tokenizer.decode([t for t in labels if t != -100])
        assert answer.startswith(emojis + "<|im_end|>")  # the emojis, then the token generation stops on
        assert all(t != -100 for t in labels[n_prompt:])

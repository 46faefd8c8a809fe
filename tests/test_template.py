"""Prompt formats and the answer-only loss mask, with the embedded model's real tokenizer: Task 1's Llama-2 string, the
Llama-2 fallback chat template that renders exactly that string, and TRL's prompt/completion labels."""
import jinja2
import pytest

from lib import models, prompts

SENTENCE, EMOJIS = "Let's go dancing tonight.", "💃🕺🎶"


@pytest.fixture(scope="module")
def smollm():
    return models.load(models.EMBEDDED)


def test_llama2_text_has_the_special_tokens_in_order():
    assert prompts.llama2_text(SENTENCE, EMOJIS) == ("<s>[INST] <<SYS>>\nReply with emojis only.\n<</SYS>>\n\n"
                                                     "Let's go dancing tonight. [/INST] 💃🕺🎶 </s>")


def test_llama2_fallback_template_renders_task_1_text_exactly():
    template = jinja2.Template(prompts.LLAMA2_CHAT_TEMPLATE)
    full = template.render(messages=prompts.emoji_messages(SENTENCE, EMOJIS), bos_token="<s>", eos_token="</s>")
    assert full == prompts.llama2_text(SENTENCE, EMOJIS)
    prompt = template.render(messages=prompts.emoji_messages(SENTENCE), bos_token="<s>", eos_token="</s>",
                             add_generation_prompt=True)
    assert full.startswith(prompt) and prompt.endswith("[/INST]")
    # Without a system message there is no <<SYS>> block (the non-emoji questions of Task 4.2).
    plain = template.render(messages=prompts.plain_messages("What is the capital of Germany?"), bos_token="<s>",
                            eos_token="</s>", add_generation_prompt=True)
    assert plain == "<s>[INST] What is the capital of Germany? [/INST]"


@pytest.mark.slow  # loads the embedded model (~15 s)
def test_a_tokenizer_without_a_template_gets_the_llama2_one(smollm):
    _, tokenizer, _ = smollm
    own = tokenizer.chat_template
    try:
        tokenizer.chat_template = None
        assert "Llama-2" in prompts.ensure_chat_template(tokenizer)
        assert "[/INST]" in prompts.render(tokenizer, prompts.emoji_messages(SENTENCE))
    finally:
        tokenizer.chat_template = own
    assert prompts.ensure_chat_template(tokenizer) == "the model's own chat template"


@pytest.mark.slow  # loads the embedded model (~15 s)
def test_embedded_tokenizer_stops_on_the_token_generation_stops_on(smollm):
    model, tokenizer, prompt_format = smollm
    assert prompt_format == "the model's own chat template"  # SmolLM2's ChatML, not the Llama-2 fallback
    # The GGUF tokenizer says eos is <|im_start|>; generation stops on <|im_end|>. They must agree after loading,
    # because <|im_end|> is what ends every trained answer in SmolLM2's chat template.
    assert tokenizer.eos_token == "<|im_end|>"
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert tokenizer.pad_token_id is not None


@pytest.mark.slow  # loads the embedded model (~15 s)
def test_emoji_requests_carry_the_instruction_and_general_questions_do_not(smollm):
    _, tokenizer, _ = smollm
    emoji_prompt = prompts.render(tokenizer, prompts.emoji_messages(SENTENCE))
    general = prompts.render(tokenizer, prompts.plain_messages("What is the capital of Germany?"))
    assert prompts.SYSTEM_PROMPT in emoji_prompt and emoji_prompt.endswith("<|im_start|>assistant\n")
    assert prompts.SYSTEM_PROMPT not in general and "[INST]" not in general


@pytest.mark.slow  # loads the embedded model (~15 s)
def test_sft_trainer_keeps_only_the_answer_and_its_stop_token_in_the_labels(smollm, tmp_path):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, tokenizer, _ = smollm
    pairs = [("Hi.", "👋"), (SENTENCE, EMOJIS)]
    data = Dataset.from_list([{"prompt": prompts.emoji_messages(s), "completion": [{"role": "assistant", "content": e}]}
                              for s, e in pairs])
    trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=data,
                         args=SFTConfig(output_dir=str(tmp_path), completion_only_loss=True, report_to=[], bf16=False))
    for row, (sentence, emojis) in zip(trainer.train_dataset, pairs):
        labels = row["labels"] if "labels" in row else [i if m else -100 for i, m in
                                                        zip(row["input_ids"], row["completion_mask"])]
        n_prompt = next(i for i, t in enumerate(labels) if t != -100)
        prompt = tokenizer.decode(row["input_ids"][:n_prompt])
        assert prompt == prompts.render(tokenizer, prompts.emoji_messages(sentence))
        answer = tokenizer.decode([t for t in labels if t != -100])
        assert answer.startswith(emojis + "<|im_end|>")  # the emojis, then the token generation stops on
        assert all(t != -100 for t in labels[n_prompt:])

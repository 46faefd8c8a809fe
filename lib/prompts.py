"""The prompt sets of Tasks 2 and 4.2 and the chat format every model is trained and asked in.

Here rather than in 03 because 01 needs them too: it keeps KNOWN in the train split whatever the seed, and refuses data
that holds a NOVEL, EDGE or GENERAL prompt (they must be unseen). Every script matches prompts with `key()`."""
from pathlib import Path

# The instruction every emoji request carries (training and the emoji prompt sets); short, because every token costs
# CPU time. The non-emoji questions (GENERAL) are asked without it: Task 4.2 asks whether fine-tuning made the model
# answer in emojis where nobody asked for them.
SYSTEM_PROMPT = "Reply with emojis only."

KNOWN = [  # from the data (accuracy and consistency)
    "I overslept again this morning.",
    "This soup is way too spicy!",
    "I just landed in Tokyo.",
    "Happy birthday to you!",
    "We played volleyball on the beach.",
]
NOVEL = [  # in no split (generalisation)
    "I just adopted a puppy and I'm so excited!",
    "My flight got cancelled and I'm stuck at the airport.",
    "We're baking cookies for grandma's birthday.",
    "The thunderstorm knocked out our power last night.",
    "I finally finished my marathon training!",
]
EDGE = [  # ambiguous or contradictory
    "I'm happy and sad at the same time.",
    "I love rainy days but I hate getting wet.",
    "This is the best worst day ever.",
    "Can you describe nothing at all?",
    "I'm excited to be bored.",
]
GENERAL = {  # not emoji requests: a healthy model answers in words; any listed variant marks the expected fact
    "Explain the concept of gravity.": ["mass", "masses", "attract", "attraction", "attracts"],
    "What is the capital of Germany?": ["Berlin"],
    "Write a haiku about autumn.": ["leaves", "leaf", "autumn", "fall"],
    "How many legs does a spider have?": ["eight", "8"],
    "Translate 'thank you' into French.": ["merci"],
}

# Model keys used in every output file, and their names in the report.
MODELS = {"base": "Base model", "ft1": "1-epoch fine-tune", "ft5": "5-epoch fine-tune", "lookup": "Lookup baseline"}


def label(key):
    return MODELS.get(key) or (f"{key[2:]}-epoch fine-tune" if key.startswith("ft") else key)


def key(sentence):
    """How every script matches a sentence to a prompt: case and spacing ignored."""
    return " ".join(str(sentence).casefold().split())


def is_known(sentence):
    return key(sentence) in {key(s) for s in KNOWN}


# Every model is trained and asked in its own chat format (tokenizer.apply_chat_template): SmolLM2 gets the ChatML it
# was instruction-tuned on, Llama-2-chat its [INST] format. A model without a chat template gets the one in
# lib/templates/llama2_chat.jinja, which renders exactly Task 1's Llama-2 string (the dataset's `text` column).
LLAMA2_CHAT_TEMPLATE = (Path(__file__).parent / "templates" / "llama2_chat.jinja").read_text(encoding="utf-8")


def llama2_text(sentence, emojis, system=SYSTEM_PROMPT, bos="<s>", eos="</s>"):
    """Task 1's training string: `<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{sentence} [/INST] {emojis} </s>`."""
    return f"{bos}[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{sentence} [/INST] {emojis} {eos}"


def emoji_messages(sentence, emojis=None):
    """An emoji request as chat messages: the instruction, the sentence and (for training) the answer."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": sentence}]
    return messages + ([{"role": "assistant", "content": emojis}] if emojis is not None else [])


def plain_messages(question):
    """A question in the model's normal chat format, with no instruction (the template's own default, if any)."""
    return [{"role": "user", "content": question}]


def ensure_chat_template(tokenizer):
    """Give a tokenizer without a chat template the Llama-2 one; returns how prompts are formatted, in words."""
    if not tokenizer.chat_template:
        tokenizer.chat_template = LLAMA2_CHAT_TEMPLATE
    if tokenizer.chat_template == LLAMA2_CHAT_TEMPLATE:
        return "Llama-2 chat format (the model has no chat template of its own)"
    return "the model's own chat template"


def render(tokenizer, messages):
    """The exact string a model receives before it answers: its chat template with the assistant turn opened."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

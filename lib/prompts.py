"""The prompt sets of Tasks 2 and 4.2 and the chat format every model is trained and asked in.

The sets are data, in data/prompt_sets.toml; they are read here because 01 needs them too: it keeps KNOWN in the train
split whatever the seed, and refuses data that holds a NOVEL, EDGE or GENERAL prompt (they must be unseen). Every
script matches prompts with `key()`."""
import tomllib
from pathlib import Path

from lib import store

# The instruction every emoji request carries (training and the emoji prompt sets); short, because every token costs
# CPU time. The non-emoji questions (GENERAL) are asked without it: Task 4.2 asks whether fine-tuning made the model
# answer in emojis where nobody asked for them.
SYSTEM_PROMPT = "Reply with emojis only."

PROMPT_SETS = store.DATA_DIR / "prompt_sets.toml"


def _read_sets():
    """(KNOWN, NOVEL, EDGE, GENERAL) from data/prompt_sets.toml; a file that is not what it should be is one line."""
    try:
        sets = tomllib.loads(PROMPT_SETS.read_text(encoding="utf-8"))
        found = [sets[name] for name in ("known", "novel", "edge", "general")]
        texts = [t for group in found[:3] for t in group] + [*found[3]] + [w for v in found[3].values() for w in v]
        if all(type(g) is list for g in found[:3]) and all(isinstance(t, str) and t.strip() for t in texts):
            return found
        error = "every prompt and keyword must be text, in lists"
    except KeyError as problem:
        error = f"no {problem} entry"
    except (OSError, ValueError, TypeError, AttributeError) as problem:  # TOMLDecodeError is a ValueError
        error = getattr(problem, "strerror", None) or problem
    store.fail(f"{store.display(PROMPT_SETS)}: {error} - it holds the lists known, novel and edge and the table "
               "general (question = [keywords]).")


KNOWN, NOVEL, EDGE, GENERAL = _read_sets()

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

"""Emoji parsing and scoring, built on the `emoji` package (no hand-written emoji regex)."""
import emoji

VARIATION_SELECTOR = "\ufe0f"


def split(text):
    """Split text into (emoji graphemes, leftover text). ZWJ sequences, flags, keycaps and skin tones are one
    grapheme each; U+FE0F is dropped so that ❤ and ❤️ compare equal."""
    text = text or ""
    found = emoji.emoji_list(text)
    emojis = [m["emoji"].replace(VARIATION_SELECTOR, "") for m in found]
    leftover, last = [], 0
    for m in found:
        leftover.append(text[last: m["match_start"]])
        last = m["match_end"]
    leftover.append(text[last:])
    return emojis, "".join(leftover).replace(VARIATION_SELECTOR, "").strip()


def emojis_of(text):
    return split(text)[0]


def is_emoji_only(text):
    """True when the text holds at least one emoji and nothing else but whitespace."""
    emojis, rest = split(text)
    return bool(emojis) and not rest

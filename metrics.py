"""Emoji parsing and scoring, built on the `emoji` package (no hand-written emoji regex).

Every emoji is a grapheme as the `emoji` package sees it (ZWJ sequences, flags, keycaps, skin tones are one
each) with its variation selectors removed, so ❤ and ❤️ are the same emoji. Functions accept None as "".
"""
from collections import Counter
from itertools import combinations

import emoji

VARIATION_SELECTOR = "\ufe0f"
# Invisible "glue" that only shapes how an emoji renders. FE0E/FE0F choose text or emoji style and must not
# make two emojis differ; a ZWJ left over between two emojis the package doesn't know as one sequence is
# not text the model wrote, so none of them may count as leftover.
_SELECTORS = ("\ufe0e", VARIATION_SELECTOR)
_GLUE = _SELECTORS + ("\u200d",)


def _normalise(grapheme):
    for selector in _SELECTORS:
        grapheme = grapheme.replace(selector, "")
    return grapheme


def _parse(text):
    """(emoji graphemes, leftover pieces): the pieces are the stretches of text between emojis, uncleaned."""
    text = text or ""
    emojis, pieces, last = [], [], 0
    for match in emoji.emoji_list(text):
        grapheme = _normalise(match["emoji"])
        # Some emoji data lists bare '0'-'9', '#', '*' as emoji (they are keycap bases); plain ASCII is always
        # text here, so leave it in the leftover. Real keycaps such as 1⃣ are not ASCII and stay emojis.
        if grapheme.isascii():
            continue
        pieces.append(text[last:match["match_start"]])
        emojis.append(grapheme)
        last = match["match_end"]
    pieces.append(text[last:])
    return emojis, pieces


def _clean(piece):
    for char in _GLUE:
        piece = piece.replace(char, "")
    return piece


def split(text):
    """Split text into (emoji graphemes, leftover text). ZWJ sequences, flags, keycaps and skin tones are one
    grapheme each; variation selectors are dropped so that ❤ and ❤️ compare equal."""
    emojis, pieces = _parse(text)
    return emojis, _clean("".join(pieces)).strip()


def emojis_of(text):
    """The emoji graphemes of text, in order, normalised as in `split`."""
    return split(text)[0]


def is_emoji_only(text):
    """True when the text holds at least one emoji and nothing else but whitespace."""
    emojis, rest = split(text)
    return bool(emojis) and not rest


def words_leaked(text):
    """Word-like tokens left once emojis are removed: whitespace-separated tokens with their outer punctuation
    trimmed, kept only if they hold a letter or digit ("Sure!" -> "Sure", "don't" stays whole, "!" is dropped)."""
    words = []
    # Tokenise each stretch between emojis on its own, so "I🍕you" gives two words, not "Iyou".
    for piece in _parse(text)[1]:
        for token in _clean(piece).split():
            start, end = 0, len(token)
            while start < end and not token[start].isalnum():
                start += 1
            while end > start and not token[end - 1].isalnum():
                end -= 1
            if start < end:
                words.append(token[start:end])
    return words


def describe(text):
    """Per-output summary: emoji_only, n_emojis, n_words (leaked words) and the emojis joined into one string."""
    emojis = emojis_of(text)
    return {
        "emoji_only": is_emoji_only(text),
        "n_emojis": len(emojis),
        "n_words": len(words_leaked(text)),
        "emojis": "".join(emojis),
    }


def _ratio(numerator, denominator):
    # Undefined ratios (nothing predicted, nothing to recall, empty union) score 0: no credit without emojis.
    return numerator / denominator if denominator else 0.0


def _set_jaccard(a, b):
    return _ratio(len(a & b), len(a | b))


def compare(output, reference):
    """Score an output against a reference answer.

    exact: the output is emoji-only and its emoji sequence (order and repeats) equals the reference's.
    precision/recall/f1: on emoji multisets, so a repeated emoji is matched at most as often as the other side
    has it. jaccard: on emoji sets. Any of them is 0.0 when its denominator is empty, e.g. an output without
    emojis scores 0 everywhere (references are never empty in this project).
    """
    out, ref = emojis_of(output), emojis_of(reference)
    common = sum((Counter(out) & Counter(ref)).values())
    precision, recall = _ratio(common, len(out)), _ratio(common, len(ref))
    return {
        "exact": is_emoji_only(output) and out == ref,
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "jaccard": _set_jaccard(set(out), set(ref)),
    }


def jaccard(a, b):
    """Jaccard index of the emoji sets of two texts; 0.0 when neither has an emoji."""
    return _set_jaccard(set(emojis_of(a)), set(emojis_of(b)))


def mean_pairwise_jaccard(texts):
    """Mean Jaccard over all unordered pairs of texts: how alike a model's answers are (1.0 = always the same
    emoji set). With fewer than two texts there is no pair and it returns 0.0, like the other empty cases."""
    sets = [set(emojis_of(text)) for text in texts]
    scores = [_set_jaccard(a, b) for a, b in combinations(sets, 2)]
    return _ratio(sum(scores), len(scores))


def distinct_ratio(texts):
    """Distinct emojis / total emojis over all texts (1.0 = no emoji ever repeated); 0.0 when there are none."""
    emojis = [e for text in texts for e in emojis_of(text)]
    return _ratio(len(set(emojis)), len(emojis))


def top_emojis(texts, n=5):
    """The n most frequent emojis over all texts as (emoji, count), most frequent first; ties keep the order
    of first appearance."""
    return Counter(e for text in texts for e in emojis_of(text)).most_common(n)


def is_mostly_emoji(text):
    """Emoji-leak check for answers to non-emoji questions: True when the answer is emoji-only or emojis are at
    least half of its tokens (emojis + leaked words). An answer without emojis is never mostly emoji."""
    n_emojis = len(emojis_of(text))
    # An emoji-only answer has no leaked words, so the half-of-tokens test already covers it.
    return n_emojis > 0 and 2 * n_emojis >= n_emojis + len(words_leaked(text))


def contains_keyword(text, keyword):
    """Case-insensitive substring test; False for an empty or None keyword (there is nothing to look for)."""
    if not keyword:
        return False
    return keyword.casefold() in (text or "").casefold()

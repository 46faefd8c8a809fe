"""Emoji parsing and scoring, built on the `emoji` package (no hand-written emoji regex).

Every emoji is a grapheme as the `emoji` package sees it (ZWJ sequences, flags, keycaps, skin tones are one
each) with its variation selectors removed, so ❤ and ❤️ are the same emoji. Functions accept None as "".

Metrics: is_emoji_only, words_leaked, compare (exact, multiset precision/recall/F1, set Jaccard, soft F1 with
near-synonym credit from emoji_similarity), jaccard / mean_pairwise_jaccard / distinct_ratio / top_emojis
(consistency and diversity), is_mostly_emoji and keyword_hit (non-emoji questions), wilson_interval /
bootstrap_interval / intervals_overlap (uncertainty), nearest_neighbour (the lookup baseline) and
strip_replacement (clean decoded output).
"""
import math
import random
import re
import tomllib
from collections import Counter
from functools import lru_cache
from itertools import combinations
from pathlib import Path

import emoji

VARIATION_SELECTOR = "\ufe0f"
# Invisible "glue" that only shapes how an emoji renders. FE0E/FE0F choose text or emoji style and must not
# make two emojis differ; a ZWJ left over between two emojis the package doesn't know as one sequence is
# not text the model wrote, so none of them may count as leftover.
_SELECTORS = str.maketrans("", "", "\ufe0e" + VARIATION_SELECTOR)
_GLUE = str.maketrans("", "", "\ufe0e\u200d" + VARIATION_SELECTOR)


def _parse(text):
    """(emoji graphemes, leftover pieces): the pieces are the stretches of text between emojis, uncleaned."""
    text = text or ""
    emojis, pieces, last = [], [], 0
    for match in emoji.emoji_list(text):
        grapheme = match["emoji"].translate(_SELECTORS)
        # Some emoji data lists bare '0'-'9', '#', '*' as emoji (they are keycap bases); plain ASCII is always
        # text here, so leave it in the leftover. Real keycaps such as 1⃣ are not ASCII and stay emojis.
        if grapheme.isascii():
            continue
        pieces.append(text[last:match["match_start"]])
        emojis.append(grapheme)
        last = match["match_end"]
    pieces.append(text[last:])
    return emojis, pieces


def split(text):
    """Split text into (emoji graphemes, leftover text). ZWJ sequences, flags, keycaps and skin tones are one
    grapheme each; variation selectors are dropped so that ❤ and ❤️ compare equal."""
    emojis, pieces = _parse(text)
    return emojis, "".join(pieces).translate(_GLUE).strip()


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
    # Each stretch between emojis is tokenised on its own, so "I🍕you" gives two words, not "Iyou". [^\W_] is a letter
    # or digit (str.isalnum): a token is trimmed to the span from its first to its last one.
    return [word.group() for piece in _parse(text)[1] for token in piece.translate(_GLUE).split()
            if (word := re.search(r"[^\W_](.*[^\W_])?", token))]


def _ratio(numerator, denominator):
    # Undefined ratios (nothing predicted, nothing to recall, empty union) score 0: no credit without emojis.
    return numerator / denominator if denominator else 0.0


def _set_jaccard(a, b):
    return _ratio(len(a & b), len(a | b))


def _singular(word):
    """A plural 's' dropped ("hearts" -> "heart", "cookies" -> "cookie"), but not from short words or "-ss"."""
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


# ---------------------------------------------------------------- near-synonyms (soft F1)
# The word lists and emoji families are data, in lib/word_lists.toml (what each list is for is written there).
_WORDS = tomllib.loads(Path(__file__).with_name("word_lists.toml").read_text(encoding="utf-8"))
_NAME_STOP_WORDS, _SPANISH_STOP_WORDS, _SENTENCE_STOP_WORDS = (
    set(_WORDS[k].split()) for k in ("name_stop_words", "spanish_stop_words", "sentence_stop_words"))
_FAMILIES = list(_WORDS["families"].values())
# Skin tones (U+1F3FB-U+1F3FF) and a gender sign after a ZWJ (♀ / ♂; selectors are already gone).
_TONE_OR_GENDER = re.compile("[\U0001F3FB-\U0001F3FF]|\u200d[\u2640\u2642]")
_GENDERED_LEADS = ("\U0001F468\u200d", "\U0001F469\u200d")  # 👨 ZWJ / 👩 ZWJ, e.g. 👩‍⚕️ -> 🧑‍⚕️
FAMILY_CREDIT = 0.5  # the credit of two emojis of one family (see emoji_similarity)
# Normalised emoji -> its data, so that ❤ finds ❤️'s names.
emoji.config.load_language("es")  # adds the Spanish names ("es") to emoji.EMOJI_DATA
_EMOJI_DATA = {key.translate(_SELECTORS): value for key, value in emoji.EMOJI_DATA.items()}
_FAMILY_SETS = [set(emojis_of(members)) for members in _FAMILIES]


def _base(grapheme):
    """The emoji with skin tones and gender dropped (👍🏽 -> 👍, 🏃‍♀️ -> 🏃, 👩‍⚕️ -> 🧑‍⚕️)."""
    base = _TONE_OR_GENDER.sub("", grapheme)
    if base.startswith(_GENDERED_LEADS) and "\U0001F9D1" + base[1:] in _EMOJI_DATA:
        base = "\U0001F9D1" + base[1:]
    return base


@lru_cache(maxsize=None)
def _name_words(grapheme, language="en"):
    """Words of the emoji's name (English: name and aliases), lowercased, letters only, without stop words or a
    plural 's' ("hearts" -> "heart")."""
    data = _EMOJI_DATA.get(_base(grapheme)) or _EMOJI_DATA.get(grapheme) or {}
    names = [data.get(language, "")] + (data.get("alias", []) if language == "en" else [])
    # letters only: "dog2" -> "dog", "+1" -> nothing
    words = {_singular(word) for name in names for word in re.findall(r"[^\W\d_]+", name.lower())}
    return words - (_NAME_STOP_WORDS if language == "en" else _SPANISH_STOP_WORDS)


def emoji_similarity(a, b):
    """How close two single emojis are in meaning, in [0, 1].

    1.0 when they are equal after normalisation or the same base emoji in another skin tone or gender (👍/👍🏽,
    🏃/🏃‍♀️, 👨‍⚕️/👩‍⚕️). Otherwise the larger of two credits, 0 when neither applies:
    - name words: the Jaccard index of the words of their English names and aliases in `emoji.EMOJI_DATA`, without
      stop words (lib/word_lists.toml), e.g. 🐶 "dog face" / 🐕 "dog" -> 1.0, 🌲 "evergreen tree" / 🌳 "deciduous
      tree" -> 1/3. It counts only if the Spanish names share a word too, which drops English puns (🌽 "ear of corn"
      / 👂 "ear", 🌭 "hot dog" / 🐕 "dog" score 0). A heuristic: pictures that share a word in both languages still
      get credit (🍹 "tropical drink" / 🐠 "tropical fish" -> 1/3).
    - families: FAMILY_CREDIT when both are in one of the hand-written families of lib/word_lists.toml (😂 "face
      with tears of joy" / 🤣 "rolling on the floor laughing" share no name word).
    """
    a, b = (a or "").translate(_SELECTORS), (b or "").translate(_SELECTORS)
    if not a or not b:
        return 0.0
    if a == b or _base(a) == _base(b):
        return 1.0
    words = _set_jaccard(_name_words(a), _name_words(b)) if _name_words(a, "es") & _name_words(b, "es") else 0.0
    family = any(_base(a) in members and _base(b) in members for members in _FAMILY_SETS)
    return max(words, FAMILY_CREDIT if family else 0.0)


def _soft_matches(out, ref):
    """Total credit of a one-to-one matching of out to ref emojis: exact matches first (as in F1, so soft F1 is
    never below F1), then greedily the most similar remaining pair until no pair scores above 0."""
    exact = Counter(out) & Counter(ref)
    rest_out, rest_ref = list((Counter(out) - exact).elements()), list((Counter(ref) - exact).elements())
    pairs = sorted(((emoji_similarity(o, r), i, j) for i, o in enumerate(rest_out) for j, r in enumerate(rest_ref)),
                   key=lambda pair: -pair[0])  # stable: ties keep output order, then reference order
    used_out, used_ref, credit = set(), set(), float(sum(exact.values()))
    for score, i, j in pairs:
        if score > 0 and i not in used_out and j not in used_ref:
            used_out.add(i)
            used_ref.add(j)
            credit += score
    return credit


def compare(output, reference):
    """Score an output against a reference answer.

    exact: the output is emoji-only and its emoji sequence (order and repeats) equals the reference's.
    precision/recall/f1: on emoji multisets, so a repeated emoji is matched at most as often as the other side
    has it. jaccard: on emoji sets. soft_f1: F1 where a matched pair earns emoji_similarity instead of 1, on the
    matching of _soft_matches (exact matches, then greedy near-synonyms); it equals f1 when no near-synonym is
    involved and is never below it. Any of them is 0.0 when its denominator is empty, e.g. an output without
    emojis scores 0 everywhere (references are never empty in this project).
    """
    out, ref = emojis_of(output), emojis_of(reference)
    common = sum((Counter(out) & Counter(ref)).values())
    precision, recall = _ratio(common, len(out)), _ratio(common, len(ref))
    credit = _soft_matches(out, ref)
    soft_precision, soft_recall = _ratio(credit, len(out)), _ratio(credit, len(ref))
    return dict(exact=is_emoji_only(output) and out == ref, precision=precision, recall=recall,
                f1=_ratio(2 * precision * recall, precision + recall), jaccard=_set_jaccard(set(out), set(ref)),
                soft_f1=_ratio(2 * soft_precision * soft_recall, soft_precision + soft_recall))


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


def keyword_hit(text, keywords):
    """True when any accepted variant (a string or a list of strings) occurs in text as a whole word or phrase,
    ignoring case: "mass" is found in "Mass attracts" but not in "massive", "8" in "8 legs". Empty variants
    never match."""
    variants = [keywords] if isinstance(keywords, str) else keywords or []
    # Lookarounds instead of \b so a variant that starts or ends with punctuation ("C++") still needs a boundary.
    return any(re.search(rf"(?<!\w){re.escape(variant)}(?!\w)", text or "", re.IGNORECASE)
               for variant in variants if variant)


# ---------------------------------------------------------------- uncertainty
def wilson_interval(k, n, z=1.96):
    """Wilson score interval for k successes in n trials (z=1.96: 95%); (0.0, 1.0) when n is 0 (nothing known)."""
    if n == 0:
        return 0.0, 1.0
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_interval(values, n_boot=2000, seed=0, level=0.95):
    """Percentile bootstrap interval of the mean of values: n_boot resamples with replacement drawn by
    random.Random(seed), so the same call gives the same interval. (0.0, 0.0) for no values, like the other empty
    scores here."""
    values = list(values)
    if not values:
        return 0.0, 0.0
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(values, k=len(values))) / len(values) for _ in range(n_boot))
    tail = (1 - level) / 2
    return float(means[int(tail * n_boot)]), float(means[min(n_boot - 1, int((1 - tail) * n_boot))])


def intervals_overlap(a, b):
    """True when the closed intervals a = (low, high) and b share at least one point (touching counts)."""
    return a[0] <= b[1] and b[0] <= a[1]


# ---------------------------------------------------------------- lookup baseline
def _sentence_words(sentence):
    """Lowercased word set without stop words or a plural 's' ("cookies" -> "cookie", "grandma's" -> "grandma")."""
    words = re.findall(r"[a-z0-9]+(?:'[a-z]+)?", (sentence or "").lower().replace("\u2019", "'"))
    return {_singular(word.removesuffix("'s")) for word in words} - _SENTENCE_STOP_WORDS


def nearest_neighbour(sentence, pairs):
    """The lookup baseline: the emojis of the (sentence, emojis) pair whose sentence is most word-similar to
    sentence, by Jaccard index of their word sets (_sentence_words). Ties, including no shared word at all, go to
    the earliest pair; "" only when pairs is empty."""
    words = _sentence_words(sentence)
    # max keeps the first of equal scores
    return max(pairs, key=lambda pair: _set_jaccard(words, _sentence_words(pair[0])), default=("", ""))[1]


def strip_replacement(text):
    """Text without U+FFFD, the replacement character a decoder leaves for a cut multi-byte character; whitespace
    before a trailing run of them goes too ("🎉 " + U+FFFD -> "🎉")."""
    text = re.sub(r"\s*\ufffd[\ufffd\s]*$", "", text or "")
    return text.replace("\ufffd", "")

"""Edge cases of metrics.py, with scores worked out by hand."""
import sys
from pathlib import Path

import pytest

# metrics.py sits at the repository root, which plain `pytest` does not put on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import metrics  # noqa: E402

FAMILY = "\U0001F468\u200d\U0001F469\u200d\U0001F467"  # 👨‍👩‍👧, three people joined by ZWJ
FLAG_FR = "\U0001F1EB\U0001F1F7"  # 🇫🇷, two regional indicators
KEYCAP_1 = "1\ufe0f\u20e3"  # 1️⃣
KEYCAP_1_BARE = "1\u20e3"  # 1⃣, the same keycap without U+FE0F
THUMBS_MEDIUM = "\U0001F44D\U0001F3FD"  # 👍🏽, thumbs up + skin tone
HEART = "\u2764"  # ❤
HEART_FE0F = "\u2764\ufe0f"  # ❤️
RAINBOW_FLAG = "\U0001F3F3\ufe0f\u200d\U0001F308"  # 🏳️‍🌈, ZWJ sequence with a selector inside


# ---------------------------------------------------------------- split: one grapheme per emoji
@pytest.mark.parametrize("grapheme", [FAMILY, FLAG_FR, KEYCAP_1, KEYCAP_1_BARE, THUMBS_MEDIUM, HEART,
                                      HEART_FE0F, RAINBOW_FLAG])
def test_tricky_grapheme_counts_as_one_emoji(grapheme):
    emojis, rest = metrics.split(grapheme)
    assert len(emojis) == 1
    assert rest == ""
    assert metrics.is_emoji_only(grapheme)
    assert metrics.describe(grapheme)["n_emojis"] == 1


def test_tricky_graphemes_in_a_row_are_counted_separately():
    text = FAMILY + FLAG_FR + KEYCAP_1 + THUMBS_MEDIUM + HEART_FE0F
    assert metrics.emojis_of(text) == [FAMILY, FLAG_FR, "1\u20e3", THUMBS_MEDIUM, HEART]


def test_skin_tone_is_part_of_the_emoji_not_dropped():
    assert metrics.emojis_of(THUMBS_MEDIUM) == [THUMBS_MEDIUM]
    assert metrics.emojis_of(THUMBS_MEDIUM) != metrics.emojis_of("\U0001F44D")


def test_two_flags_are_two_emojis_not_four_letters():
    assert metrics.emojis_of(FLAG_FR + "\U0001F1E9\U0001F1EA") == [FLAG_FR, "\U0001F1E9\U0001F1EA"]


def test_heart_with_and_without_variation_selector_are_equal():
    assert metrics.emojis_of(HEART) == metrics.emojis_of(HEART_FE0F) == [HEART]
    assert metrics.compare(HEART_FE0F, HEART)["exact"] is True
    assert metrics.jaccard(HEART, HEART_FE0F) == 1.0


def test_keycap_with_and_without_variation_selector_are_equal():
    assert metrics.emojis_of(KEYCAP_1) == metrics.emojis_of(KEYCAP_1_BARE)


def test_unknown_zwj_combination_is_separate_emojis_without_leftover():
    # 😀 ZWJ 😀 is no Unicode sequence: two emojis, and the stray joiner is not text.
    text = "\U0001F600\u200d\U0001F600"
    assert metrics.split(text) == (["\U0001F600", "\U0001F600"], "")
    assert metrics.is_emoji_only(text) is True


def test_plain_digits_and_words_stay_in_leftover():
    emojis, rest = metrics.split("1 2024 # * abc")
    assert emojis == []
    assert rest == "1 2024 # * abc"
    # A digit is text, its keycap is an emoji.
    assert metrics.split("1 " + KEYCAP_1) == (["1\u20e3"], "1")


def test_bare_digit_stays_text_even_if_the_emoji_package_lists_it(monkeypatch):
    # Some emoji data counts '0'-'9', '#', '*' as emoji; simulate that, the digit must still be leftover text.
    def emoji_list(text):
        return [{"emoji": "7", "match_start": 0, "match_end": 1},
                {"emoji": "\U0001F355", "match_start": 2, "match_end": 3}]
    monkeypatch.setattr(metrics.emoji, "emoji_list", emoji_list)
    assert metrics.split("7 \U0001F355") == (["\U0001F355"], "7")


def test_split_keeps_leftover_text_and_strips_it():
    assert metrics.split("  I love \U0001F355 so much ") == (["\U0001F355"], "I love  so much")


@pytest.mark.parametrize("empty", [None, "", "   "])
def test_empty_or_none_output(empty):
    assert metrics.split(empty) == ([], "")
    assert metrics.is_emoji_only(empty) is False
    assert metrics.words_leaked(empty) == []
    assert metrics.describe(empty) == {"emoji_only": False, "n_emojis": 0, "n_words": 0, "emojis": ""}
    assert metrics.compare(empty, "\U0001F600") == {"exact": False, "precision": 0.0, "recall": 0.0,
                                                    "f1": 0.0, "jaccard": 0.0}


def test_text_only_output():
    text = "I cannot answer with emojis."
    assert metrics.split(text) == ([], text)
    assert metrics.is_emoji_only(text) is False
    assert metrics.describe(text) == {"emoji_only": False, "n_emojis": 0, "n_words": 5, "emojis": ""}
    scores = metrics.compare(text, "\U0001F600\U0001F389")
    assert scores["exact"] is False
    assert scores["precision"] == scores["recall"] == scores["f1"] == scores["jaccard"] == 0.0


def test_emoji_with_any_text_is_not_emoji_only():
    assert metrics.is_emoji_only("\U0001F355!") is False
    assert metrics.is_emoji_only("ok \U0001F355") is False
    assert metrics.is_emoji_only(" \U0001F355 \U0001F389\n") is True


# ---------------------------------------------------------------- words_leaked / describe
def test_words_leaked_trims_punctuation_around_words():
    assert metrics.words_leaked("Sure! \U0001F355 here you go") == ["Sure", "here", "you", "go"]


def test_words_leaked_ignores_punctuation_alone_and_keeps_inner_apostrophes():
    assert metrics.words_leaked("\U0001F600 ... !! -- don't 3.5") == ["don't", "3.5"]


def test_words_on_either_side_of_an_emoji_are_not_glued_together():
    assert metrics.words_leaked("I\U0001F355you") == ["I", "you"]


def test_describe_normalises_and_joins_emojis():
    assert metrics.describe("Yes " + HEART_FE0F + FAMILY + HEART) == {
        "emoji_only": False, "n_emojis": 3, "n_words": 1, "emojis": HEART + FAMILY + HEART}


# ---------------------------------------------------------------- compare: exact, multiset P/R/F1, Jaccard
def test_repeated_emojis_count_in_multiset_precision_and_recall():
    # Output 😀😀🎉 vs reference 😀🎉🎉: the common multiset is {😀, 🎉}, 2 of 3 on each side.
    scores = metrics.compare("\U0001F600\U0001F600\U0001F389", "\U0001F600\U0001F389\U0001F389")
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 / 3)
    assert scores["jaccard"] == 1.0  # same set {😀, 🎉}
    assert scores["exact"] is False


def test_repeats_matched_on_both_sides_all_count():
    # Output 😀😀🎉 vs reference 😀😀🎉🎉: the common multiset is {😀, 😀, 🎉}, 3 items (a set overlap would
    # give only 2); P = 3/3, R = 3/4, F1 = 2·(3/4)/(7/4) = 6/7.
    scores = metrics.compare("\U0001F600\U0001F600\U0001F389", "\U0001F600\U0001F600\U0001F389\U0001F389")
    assert scores["precision"] == pytest.approx(1.0)
    assert scores["recall"] == pytest.approx(3 / 4)
    assert scores["f1"] == pytest.approx(6 / 7)
    assert scores["jaccard"] == 1.0


def test_f1_and_jaccard_by_hand_partial_overlap():
    # Output 🍕🍺 vs reference 🍕🎉⚽: 1 in common; P = 1/2, R = 1/3, F1 = 2·(1/6)/(5/6) = 2/5;
    # sets share 1 of 4 distinct emojis, Jaccard = 1/4.
    scores = metrics.compare("\U0001F355\U0001F37A", "\U0001F355\U0001F389\u26BD")
    assert scores["precision"] == pytest.approx(1 / 2)
    assert scores["recall"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx(2 / 5)
    assert scores["jaccard"] == pytest.approx(1 / 4)


def test_f1_and_jaccard_by_hand_output_repeats_one_reference_emoji():
    # Output 🎉🎉🎉🎉 vs reference 🎉🍰: 1 in common; P = 1/4, R = 1/2, F1 = 2·(1/8)/(3/4) = 1/3;
    # sets {🎉} and {🎉, 🍰}, Jaccard = 1/2.
    scores = metrics.compare("\U0001F389" * 4, "\U0001F389\U0001F370")
    assert scores["precision"] == pytest.approx(1 / 4)
    assert scores["recall"] == pytest.approx(1 / 2)
    assert scores["f1"] == pytest.approx(1 / 3)
    assert scores["jaccard"] == pytest.approx(1 / 2)


def test_disjoint_emojis_score_zero():
    scores = metrics.compare("\U0001F355", "\U0001F389")
    assert scores == {"exact": False, "precision": 0.0, "recall": 0.0, "f1": 0.0, "jaccard": 0.0}


def test_exact_match_requires_same_order():
    assert metrics.compare("\U0001F355 \U0001F389", "\U0001F355\U0001F389")["exact"] is True
    swapped = metrics.compare("\U0001F389\U0001F355", "\U0001F355\U0001F389")
    assert swapped["exact"] is False
    assert swapped["f1"] == 1.0


def test_exact_match_requires_emoji_only_output():
    scores = metrics.compare("Here: \U0001F355", "\U0001F355")
    assert scores["exact"] is False
    assert scores["f1"] == 1.0


def test_exact_match_treats_tricky_graphemes_as_wholes():
    assert metrics.compare(FAMILY + FLAG_FR, FAMILY + FLAG_FR)["exact"] is True
    # The man alone is not the family, even though the family starts with him.
    assert metrics.compare("\U0001F468", FAMILY)["f1"] == 0.0


# ---------------------------------------------------------------- jaccard across outputs, diversity
def test_jaccard_of_two_texts_by_hand():
    # {😀, 🎉, 🍕} vs {🎉, 🍕, ⚽}: 2 shared of 4 distinct.
    assert metrics.jaccard("\U0001F600\U0001F389\U0001F355", "\U0001F389\U0001F355\u26BD") == pytest.approx(1 / 2)


def test_jaccard_ignores_repeats_and_text():
    assert metrics.jaccard("wow \U0001F600\U0001F600", "\U0001F600") == 1.0


def test_jaccard_of_two_texts_without_emojis_is_zero():
    assert metrics.jaccard("", None) == 0.0
    assert metrics.jaccard("hello", "world") == 0.0


def test_mean_pairwise_jaccard_by_hand():
    # A = {😀}, B = {😀, 🎉}, C = {🍕}: J(A,B) = 1/2, J(A,C) = 0, J(B,C) = 0; mean = 1/6.
    texts = ["\U0001F600", "\U0001F600\U0001F389", "\U0001F355"]
    assert metrics.mean_pairwise_jaccard(texts) == pytest.approx(1 / 6)


def test_mean_pairwise_jaccard_of_identical_answers_is_one():
    assert metrics.mean_pairwise_jaccard(["\U0001F600\U0001F389"] * 3) == 1.0


def test_mean_pairwise_jaccard_needs_two_texts():
    assert metrics.mean_pairwise_jaccard([]) == 0.0
    assert metrics.mean_pairwise_jaccard(["\U0001F600"]) == 0.0


def test_distinct_ratio():
    # 😀😀🎉 and 🎉🍕: 5 emojis, 3 distinct.
    assert metrics.distinct_ratio(["\U0001F600\U0001F600\U0001F389", "\U0001F389\U0001F355"]) == pytest.approx(3 / 5)
    assert metrics.distinct_ratio([HEART, HEART_FE0F]) == pytest.approx(1 / 2)
    assert metrics.distinct_ratio(["no emojis", ""]) == 0.0
    assert metrics.distinct_ratio([]) == 0.0


def test_top_emojis_counts_across_texts():
    texts = ["\U0001F389\U0001F600\U0001F600", "\U0001F600 " + HEART_FE0F, HEART + "\U0001F355"]
    assert metrics.top_emojis(texts, n=2) == [("\U0001F600", 3), (HEART, 2)]
    assert metrics.top_emojis(texts) == [("\U0001F600", 3), (HEART, 2), ("\U0001F389", 1), ("\U0001F355", 1)]
    assert metrics.top_emojis([]) == []


# ---------------------------------------------------------------- emoji leak, keywords
@pytest.mark.parametrize("text, expected", [
    ("\U0001F1EB\U0001F1F7\U0001F5FC", True),  # emoji-only
    ("Paris \U0001F5FC", True),  # 1 word, 1 emoji: exactly half
    ("Paris \U0001F5FC\U0001F950", True),  # 1 word, 2 emojis
    ("The capital is Paris \U0001F5FC", False),  # 4 words, 1 emoji
    ("The capital of France is Paris.", False),  # no emojis
    ("!!! \U0001F5FC ???", True),  # punctuation is not a word
    ("", False),
    (None, False),
])
def test_is_mostly_emoji(text, expected):
    assert metrics.is_mostly_emoji(text) is expected


def test_contains_keyword_is_case_insensitive():
    assert metrics.contains_keyword("The capital is PARIS \U0001F5FC", "paris") is True
    assert metrics.contains_keyword("the capital is paris", "Paris") is True
    assert metrics.contains_keyword("The capital is Lyon", "Paris") is False


def test_contains_keyword_with_missing_text_or_keyword():
    assert metrics.contains_keyword(None, "Paris") is False
    assert metrics.contains_keyword("Paris", "") is False
    assert metrics.contains_keyword("Paris", None) is False

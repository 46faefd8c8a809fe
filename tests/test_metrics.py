"""Edge cases of lib/metrics.py, with scores worked out by hand."""
import pytest

from lib import metrics

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
    assert len(metrics.emojis_of(grapheme)) == 1


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
    assert metrics.emojis_of(empty) == []
    assert metrics.compare(empty, "\U0001F600") == {"exact": False, "precision": 0.0, "recall": 0.0,
                                                    "f1": 0.0, "jaccard": 0.0, "soft_f1": 0.0}


def test_text_only_output():
    text = "I cannot answer with emojis."
    assert metrics.split(text) == ([], text)
    assert metrics.is_emoji_only(text) is False
    assert metrics.emojis_of(text) == [] and len(metrics.words_leaked(text)) == 5
    scores = metrics.compare(text, "\U0001F600\U0001F389")
    assert scores["exact"] is False
    assert scores["precision"] == scores["recall"] == scores["f1"] == scores["jaccard"] == scores["soft_f1"] == 0.0


def test_emoji_with_any_text_is_not_emoji_only():
    assert metrics.is_emoji_only("\U0001F355!") is False
    assert metrics.is_emoji_only("ok \U0001F355") is False
    assert metrics.is_emoji_only(" \U0001F355 \U0001F389\n") is True


# ---------------------------------------------------------------- words_leaked
def test_words_leaked_trims_punctuation_around_words():
    assert metrics.words_leaked("Sure! \U0001F355 here you go") == ["Sure", "here", "you", "go"]


def test_words_leaked_ignores_punctuation_alone_and_keeps_inner_apostrophes():
    assert metrics.words_leaked("\U0001F600 ... !! -- don't 3.5") == ["don't", "3.5"]


def test_words_on_either_side_of_an_emoji_are_not_glued_together():
    assert metrics.words_leaked("I\U0001F355you") == ["I", "you"]


def test_emojis_are_normalised_beside_words():
    text = "Yes " + HEART_FE0F + FAMILY + HEART
    assert metrics.emojis_of(text) == [HEART, FAMILY, HEART] and metrics.words_leaked(text) == ["Yes"]
    assert not metrics.is_emoji_only(text)


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
    assert scores == {"exact": False, "precision": 0.0, "recall": 0.0, "f1": 0.0, "jaccard": 0.0, "soft_f1": 0.0}


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


@pytest.mark.parametrize("text, keywords, expected", [
    ("Mass attracts mass.", "mass", True),
    ("Massive objects attract each other.", ["mass"], False),  # a word boundary is needed on both sides
    ("Objects with masses attract.", ["mass", "masses"], True),  # any accepted variant
    ("Eight.", ["eight", "8"], True),
    ("A spider has 8 legs.", ["eight", "8"], True),
    ("It has 18 legs, or eighty.", ["eight", "8"], False),
    ("The capital is BERLIN \U0001F1E9\U0001F1EA", ["Berlin"], True),
    ("Merci beaucoup!", ["merci"], True),
    ("In French you say: thank you", ["thank you"], True),  # a phrase is matched as a whole
    (None, ["Berlin"], False),
    ("Berlin", [], False),
    ("Berlin", ["", None], False),
    ("Berlin", None, False),
])
def test_keyword_hit_on_word_boundaries(text, keywords, expected):
    assert metrics.keyword_hit(text, keywords) is expected


# ---------------------------------------------------------------- near-synonyms, soft F1
JOY, ROFL = "\U0001F602", "\U0001F923"  # 😂 face with tears of joy, 🤣 rolling on the floor laughing
DOG_FACE, DOG = "\U0001F436", "\U0001F415"  # 🐶, 🐕
PIZZA, PARTY = "\U0001F355", "\U0001F389"  # 🍕, 🎉


@pytest.mark.parametrize("a, b", [
    (HEART, HEART_FE0F),  # the same emoji with a selector
    ("\U0001F44D", THUMBS_MEDIUM),  # 👍 / 👍🏽: skin tone
    ("\U0001F3C3", "\U0001F3C3\u200d\u2640\ufe0f"),  # 🏃 / 🏃‍♀️: gender sign
    ("\U0001F468\u200d\u2695\ufe0f", "\U0001F469\U0001F3FD\u200d\u2695\ufe0f"),  # 👨‍⚕️ / 👩🏽‍⚕️
    (DOG_FACE, DOG),  # "dog face" / "dog": the same name words
    (HEART, "\U0001F499"),  # ❤ red heart / 💙 blue heart: colours are stop words
])
def test_emoji_similarity_full_credit(a, b):
    assert metrics.emoji_similarity(a, b) == 1.0
    assert metrics.emoji_similarity(b, a) == 1.0


def test_emoji_similarity_partial_credit():
    # 😂/🤣 share no name word; both are in the hand-written laughing family.
    assert metrics.emoji_similarity(JOY, ROFL) == metrics.FAMILY_CREDIT == 0.5
    # 🌲 "evergreen tree" / 🌳 "deciduous tree": {evergreen, tree} vs {deciduou(s), tree}, 1 shared of 3.
    assert metrics.emoji_similarity("\U0001F332", "\U0001F333") == pytest.approx(1 / 3)


@pytest.mark.parametrize("a, b", [
    (PIZZA, PARTY),
    (DOG_FACE, "\U0001F697"),  # 🐶 / 🚗
    ("\U0001F44D", "\U0001F44E"),  # 👍 / 👎 share only "thumb", a stop word
    ("\U0001F33D", "\U0001F442"),  # 🌽 "ear of corn" / 👂 "ear": the Spanish names share nothing
    ("\U0001F32D", DOG),  # 🌭 "hot dog" / 🐕 "dog": same
    ("\U0001F1EB\U0001F1F7", "\U0001F1E9\U0001F1EA"),  # two flags share only "flag"
    (PIZZA, ""),
    (None, PIZZA),
])
def test_emoji_similarity_unrelated_is_zero(a, b):
    assert metrics.emoji_similarity(a, b) == 0.0


@pytest.mark.parametrize("output, reference, soft_f1", [
    (ROFL, JOY, 0.5),  # one pair worth 0.5: soft P = soft R = 0.5
    (DOG, DOG_FACE, 1.0),
    (DOG + PIZZA, DOG_FACE + PARTY, 0.5),  # 1 credit of 2 on each side
    # 😂😂 vs 😂🤣: the exact 😂 first (1), then 😂/🤣 (0.5): soft P = soft R = 1.5 / 2.
    (JOY + JOY, JOY + ROFL, 0.75),
    # 😂🤣 vs 🤣: the exact 🤣 takes the only reference emoji; soft P = 1/2, R = 1, F1 = 2/3.
    (JOY + ROFL, ROFL, 2 / 3),
])
def test_soft_f1_by_hand(output, reference, soft_f1):
    scores = metrics.compare(output, reference)
    assert scores["soft_f1"] == pytest.approx(soft_f1)
    assert scores["soft_f1"] >= scores["f1"]


def test_soft_f1_beats_f1_for_near_synonyms_only():
    assert metrics.compare(ROFL, JOY)["f1"] == 0.0
    assert metrics.compare(DOG, DOG_FACE)["f1"] == 0.0
    assert metrics.compare(PIZZA, PARTY)["soft_f1"] == 0.0


@pytest.mark.parametrize("output, reference", [
    ("\U0001F600\U0001F600\U0001F389", "\U0001F600\U0001F389\U0001F389"),
    ("\U0001F355\U0001F37A", "\U0001F355\U0001F389\u26BD"),
    (FAMILY + FLAG_FR, FAMILY + FLAG_FR),
    ("Here: \U0001F355", "\U0001F355"),
])
def test_soft_f1_equals_f1_without_near_synonyms(output, reference):
    scores = metrics.compare(output, reference)
    assert scores["soft_f1"] == pytest.approx(scores["f1"])


# ---------------------------------------------------------------- intervals
def test_wilson_interval_by_hand():
    # k=4, n=5, z=1.96: p=0.8, z²/n=0.76832; centre=(0.8+0.38416)/1.76832=0.669653;
    # half=1.96·sqrt(0.032+0.038416)/1.76832=0.294124 -> (0.37553, 0.96378).
    low, high = metrics.wilson_interval(4, 5)
    assert low == pytest.approx(0.37553, abs=1e-4)
    assert high == pytest.approx(0.96378, abs=1e-4)


def test_wilson_interval_edges():
    # k=0: centre = half = 0.38416/1.76832 = 0.217246, so (0, 0.434492), never below 0.
    assert metrics.wilson_interval(0, 5) == pytest.approx((0.0, 0.434492), abs=1e-5)
    assert metrics.wilson_interval(5, 5) == pytest.approx((1 - 0.434492, 1.0), abs=1e-5)
    assert metrics.wilson_interval(0, 0) == (0.0, 1.0)


def test_bootstrap_interval_is_deterministic_and_holds_the_mean():
    values = [0, 1, 1, 0, 1, 1, 1, 0, 1, 1] * 2  # mean 0.7, standard error sqrt(0.21/20) = 0.10
    interval = metrics.bootstrap_interval(values)
    assert interval == metrics.bootstrap_interval(values, seed=0)
    low, high = interval
    # About mean ± 2 standard errors: (0.5, 0.9).
    assert 0.45 < low < 0.7 < high < 0.95


def test_bootstrap_interval_narrows_with_a_lower_level():
    values = [0.1, 0.4, 0.35, 0.8, 0.55, 0.2]
    wide, narrow = metrics.bootstrap_interval(values), metrics.bootstrap_interval(values, level=0.5)
    assert wide[0] <= narrow[0] <= narrow[1] <= wide[1]
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


def test_bootstrap_interval_of_constant_and_empty_values():
    assert metrics.bootstrap_interval([0.25] * 4) == (0.25, 0.25)
    assert metrics.bootstrap_interval([]) == (0.0, 0.0)


@pytest.mark.parametrize("a, b, expected", [
    ((0.0, 0.5), (0.5, 1.0), True),  # closed: touching counts
    ((0.0, 0.4), (0.5, 1.0), False),
    ((0.1, 0.9), (0.3, 0.4), True),  # nested
])
def test_intervals_overlap(a, b, expected):
    assert metrics.intervals_overlap(a, b) is expected
    assert metrics.intervals_overlap(b, a) is expected


# ---------------------------------------------------------------- lookup baseline, decoding leftovers
PAIRS = [
    ("I love my cat.", "\U0001F431\u2764"),
    ("The dog is barking at the mailman.", "\U0001F415\U0001F4EC"),
    ("We baked cookies all afternoon.", "\U0001F36A\U0001F469\u200d\U0001F373"),
]


def test_nearest_neighbour_picks_the_most_word_similar_pair():
    # {dog, barking} shares both words with pair 2; "my" alone would point at pair 1 but is a stop word.
    assert metrics.nearest_neighbour("My dogs are barking!", PAIRS) == PAIRS[1][1]
    # Plural and possessive are normalised: "cookies" = "cookie", "grandma's" -> "grandma".
    assert metrics.nearest_neighbour("Baking a cookie for grandma's birthday", PAIRS) == PAIRS[2][1]


def test_nearest_neighbour_ties_and_empty():
    assert metrics.nearest_neighbour("Quantum chromodynamics", PAIRS) == PAIRS[0][1]  # no shared word: first pair
    twins = [("A sunny day", "\u2600"), ("A sunny day", "\U0001F60E")]
    assert metrics.nearest_neighbour("sunny day", twins) == "\u2600"
    assert metrics.nearest_neighbour("anything", []) == ""


@pytest.mark.parametrize("text, expected", [
    ("\U0001F389 \ufffd", "\U0001F389"),  # a cut emoji at the end, and the space before it
    ("\ufffd\ufffd", ""),
    ("ok\ufffd fine", "ok fine"),
    ("hi ", "hi "),  # whitespace not left by a U+FFFD stays
    (None, ""),
])
def test_strip_replacement(text, expected):
    assert metrics.strip_replacement(text) == expected

"""Tests for the embedded default corpus: grammar literals, bait counts, determinism, writers."""

from __future__ import annotations

import csv
import re

import pytest

from pipeline import default_corpus as corpus
from pipeline import default_corpus_grammar as grammar
from pipeline import default_corpus_lexicon as lex
from pipeline import features, text
from pipeline.default_corpus_grammar import Clause
from pipeline.default_corpus_lexicon import NounPhrase

NP = NounPhrase


@pytest.fixture(scope="module")
def pairs() -> list[tuple[str, str]]:
    return corpus.translation_pairs()


@pytest.fixture(scope="module")
def reviews() -> list[tuple[str, int]]:
    return corpus.reviews()


def _normalized(pairs):
    return [(text.normalize(en), text.normalize(de)) for en, de in pairs]


def _word_ratio(pair: tuple[str, str]) -> float:
    lengths = [len(side.split()) for side in pair]
    return max(lengths) / min(lengths)


# --- grammar literals ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "clause, english, german",
    [
        (
            Clause(NP("man"), "see", obj=NP("dog")),
            "The man sees the dog.",
            "Der Mann sieht den Hund.",
        ),
        (
            Clause("I", "see", obj=NP("dog", "a", adj="big")),
            "I see a big dog.",
            "Ich sehe einen großen Hund.",
        ),
        (
            Clause(NP("dog", "a", adj="big"), "sleep", pp=("in", NP("park"))),
            "A big dog sleeps in the park.",
            "Ein großer Hund schläft im Park.",
        ),
        (
            Clause(NP("woman"), "play", pp=("with", NP("child", plural=True))),
            "The woman plays with the children.",
            "Die Frau spielt mit den Kindern.",
        ),
        (
            Clause("you", "wait", pp=("in", NP("kitchen", "my"))),
            "You wait in my kitchen.",
            "Du wartest in meiner Küche.",
        ),
        (
            Clause(NP("woman"), "give", obj=NP("apple", "a"), iobj=NP("child")),
            "The woman gives the child an apple.",
            "Die Frau gibt dem Kind einen Apfel.",
        ),
        (
            Clause(NP("cat", "", plural=True), "play", pp=("under", NP("tree", adj="old"))),
            "Cats play under the old tree.",
            "Katzen spielen unter dem alten Baum.",
        ),
        (
            Clause(
                "he", "buy", obj=NP("car", "a", adj="expensive"), pp=("for", NP("sister", "your"))
            ),
            "He buys an expensive car for your sister.",
            "Er kauft ein teures Auto für deine Schwester.",
        ),
        (
            Clause(NP("girl"), "run", pp=("without", NP("dog", "my"))),
            "The girl runs without my dog.",
            "Das Mädchen läuft ohne meinen Hund.",
        ),
        (
            Clause(
                "we",
                "show",
                obj=NP("bird", "", plural=True, adj="white"),
                iobj=NP("mouse", plural=True),
            ),
            "We show the mice white birds.",
            "Wir zeigen den Mäusen weiße Vögel.",
        ),
        (
            Clause("she", "buy", obj=NP("book", "my"), tense="past"),
            "She bought my book.",
            "Sie hat mein Buch gekauft.",
        ),
        (
            Clause(NP("horse", plural=True), "swim", pp=("in", NP("lake")), tense="past"),
            "The horses swam in the lake.",
            "Die Pferde sind im See geschwommen.",
        ),
        (
            Clause(NP("man"), "see", obj=NP("dog"), negated=True),
            "The man does not see the dog.",
            "Der Mann sieht den Hund nicht.",
        ),
        (
            Clause("they", "open", obj=NP("door"), tense="past", negated=True),
            "They did not open the door.",
            "Sie haben die Tür nicht geöffnet.",
        ),
        (
            Clause(NP("house", plural=True), "be", adj="big", negated=True),
            "The houses are not big.",
            "Die Häuser sind nicht groß.",
        ),
        (
            Clause("I", "be", adj="tired", tense="past"),
            "I was tired.",
            "Ich war müde.",
        ),
    ],
)
def test_statement_literals(clause, english, german):
    assert grammar.statement(clause) == (english, german)


def test_fronted_adverb_inverts_the_german_verb():
    clause = Clause(NP("child", plural=True), "eat", obj=NP("apple", "", plural=True))
    assert grammar.statement(clause, adverb="today") == (
        "Today the children eat apples.",
        "Heute essen die Kinder Äpfel.",
    )
    past = Clause("I", "read", obj=NP("newspaper"), tense="past")
    assert grammar.statement(past, adverb="yesterday")[1] == "Gestern habe ich die Zeitung gelesen."


def test_questions_put_the_finite_verb_first():
    assert grammar.question(Clause("you", "sleep", pp=("in", NP("garden")))) == (
        "Do you sleep in the garden?",
        "Schläfst du im Garten?",
    )
    assert grammar.question(Clause(NP("doctor"), "find", obj=NP("key"), tense="past")) == (
        "Did the doctor find the key?",
        "Hat der Arzt den Schlüssel gefunden?",
    )
    assert grammar.question(Clause(NP("cow"), "be", adj="hungry")) == (
        "Is the cow hungry?",
        "Ist die Kuh hungrig?",
    )


def test_subordinate_clauses_are_verb_final():
    sees = Clause(NP("man"), "see", obj=NP("dog"))
    assert grammar.subordinated(Clause(NP("dog"), "sleep"), "because", sees) == (
        "The dog sleeps because the man sees the dog.",
        "Der Hund schläft, weil der Mann den Hund sieht.",
    )
    assert grammar.reported("I", "know", sees) == (
        "I know that the man sees the dog.",
        "Ich weiß, dass der Mann den Hund sieht.",
    )
    ran = Clause(NP("girl"), "run", pp=("in", NP("forest")), tense="past")
    assert grammar.reported("she", "think", ran) == (
        "She thinks that the girl ran in the forest.",
        "Sie glaubt, dass das Mädchen im Wald gelaufen ist.",
    )
    not_eaten = Clause("we", "eat", obj=NP("cake"), tense="past", negated=True)
    assert grammar.subordinated(Clause("you", "work"), "although", not_eaten)[1] == (
        "Du arbeitest, obwohl wir den Kuchen nicht gegessen haben."
    )


def test_coordinated_clauses_stay_verb_second():
    assert grammar.coordinated(
        Clause("I", "work"), "but", Clause(NP("bird", plural=True), "sleep")
    ) == (
        "I work, but the birds sleep.",
        "Ich arbeite, aber die Vögel schlafen.",
    )
    assert grammar.coordinated(Clause("he", "sing"), "and", Clause("she", "wait"))[1] == (
        "Er singt und sie wartet."
    )


@pytest.mark.parametrize(
    "verb, forms",
    [
        ("see", ["sehe", "siehst", "sieht", "sehen", "sehen"]),
        ("wait", ["warte", "wartest", "wartet", "warten", "warten"]),
        ("read", ["lese", "liest", "liest", "lesen", "lesen"]),
        ("open", ["öffne", "öffnest", "öffnet", "öffnen", "öffnen"]),
        ("sit", ["sitze", "sitzt", "sitzt", "sitzen", "sitzen"]),
        ("run", ["laufe", "läufst", "läuft", "laufen", "laufen"]),
        ("like", ["mag", "magst", "mag", "mögen", "mögen"]),
        ("have", ["habe", "hast", "hat", "haben", "haben"]),
    ],
)
def test_german_conjugation(verb, forms):
    assert [lex.german_present(lex.VERBS[verb], person) for person in range(5)] == forms


def test_english_noun_phrases():
    assert lex.english_np(NP("umbrella", "a")) == "an umbrella"
    assert lex.english_np(NP("egg", "a", adj="big")) == "a big egg"
    assert lex.english_np(NP("apple", "a", adj="old")) == "an old apple"
    assert lex.english_np(NP("woman", plural=True)) == "the women"
    assert lex.english_np(NP("mouse", "", plural=True)) == "mice"


def test_german_noun_phrases_decline():
    assert [lex.german_np(NP("dog", adj="big"), case) for case in ("nom", "acc", "dat")] == [
        "der große Hund",
        "den großen Hund",
        "dem großen Hund",
    ]
    assert [lex.german_np(NP("dog", "a", adj="big"), case) for case in ("nom", "acc", "dat")] == [
        "ein großer Hund",
        "einen großen Hund",
        "einem großen Hund",
    ]
    assert lex.german_np(NP("car", "", plural=True), "dat") == "Autos"
    assert lex.german_np(NP("girl", "my", plural=True), "dat") == "meinen Mädchen"
    assert lex.german_pp("next to", NP("street", "a")) == "neben einer Straße"


def test_determiner_and_number_must_agree():
    with pytest.raises(ValueError, match="does not go with plural=True"):
        NP("dog", "a", plural=True)
    with pytest.raises(ValueError, match="does not go with plural=False"):
        NP("dog", "")


# --- the generated translation corpus --------------------------------------------------------


def test_translation_pairs_are_deterministic(pairs):
    assert corpus.translation_pairs() == pairs
    assert corpus.translation_pairs(600, seed=1) != pairs[:600]
    assert corpus.translation_pairs(300, seed=7) == corpus.translation_pairs(300, seed=7)


def test_translation_sizes_and_characters(pairs):
    assert len(pairs) == corpus.TRANSLATION_SIZE == 6000
    assert len(corpus.translation_pairs(50, seed=3)) == 50
    for en, de in pairs:
        assert not re.search(r"[\t\n\r]", en + de), (en, de)


def test_filter_bait_counts(pairs):
    assert corpus.FILTER_BAIT == {"duplicate": 60, "empty_side": 5, "length_ratio": 6}
    assert corpus.NORMALIZE_BAIT == 6
    assert sum(raw != norm for raw, norm in zip(pairs, _normalized(pairs))) == corpus.NORMALIZE_BAIT

    normalized = _normalized(pairs)
    nonempty = [pair for pair in normalized if all(pair)]
    assert len(normalized) - len(nonempty) == corpus.FILTER_BAIT["empty_side"]
    assert sum(en == "" for en, _ in normalized) == 1
    assert len(nonempty) - len(set(nonempty)) == corpus.FILTER_BAIT["duplicate"]
    ratio_outliers = [pair for pair in set(nonempty) if _word_ratio(pair) > 3]
    assert len(ratio_outliers) == corpus.FILTER_BAIT["length_ratio"]
    assert all(_word_ratio(pair) > 8 for pair in ratio_outliers)


def test_translation_bait_scales_and_vanishes_for_small_n():
    assert corpus.translation_bait(100) == dict.fromkeys(corpus.translation_bait(6000), 0)
    small = corpus.translation_pairs(100, seed=2)
    assert len(set(small)) == 100 and all(all(pair) for pair in small)
    assert corpus.translation_bait(12000)["duplicate"] == 120


def test_clean_pairs_are_short_capitalized_and_punctuated(pairs):
    clean = [p for p in set(_normalized(pairs)) if all(p) and _word_ratio(p) <= 3]
    assert len(clean) == 6000 - 60 - 5 - 6
    for en, de in clean:
        assert 3 <= len(en.split()) <= 15, en
        assert en[0].isupper() and de[0].isupper(), (en, de)
        assert en[-1] == de[-1] and en[-1] in ".?", (en, de)
    german = " ".join(de for _, de in clean)
    for word in ("Vögel", "Mädchen", "Großmutter", "grün", "den", "dem", "im", "dass", "weil"):
        assert re.search(rf"\b{word}\b", german), word


def test_held_out_pairs_are_clean_and_unseen(pairs):
    held_out = corpus.held_out_translation_pairs()
    assert len(held_out) == 200
    assert held_out == _normalized(held_out) and all(all(p) for p in held_out)
    assert len({en for en, _ in held_out}) == 200
    assert not {en for en, _ in held_out} & {en for en, _ in pairs}


# --- reviews -------------------------------------------------------------------------------


def test_opinions_and_negation_flip_polarity():
    assert lex.opinion("the plot", "good") == ("The plot was good.", 1)
    assert lex.opinion("the plot", "good", negation="not") == ("The plot was not good.", -1)
    assert lex.opinion("the acting", "bad", negation="not") == ("The acting was not bad.", 1)
    assert lex.opinion("the jokes", "boring", negation="never") == (
        "The jokes were never boring.",
        1,
    )
    assert lex.opinion("this film", "good", negation="not at all") == (
        "This film was not good at all.",
        -1,
    )
    assert lex.opinion("the music", "great", intensifier="very", negation="not") == (
        "The music was not very great.",
        -1,
    )
    assert lex.feeling("enjoy", negated=True) == ("I did not enjoy this movie.", -1)
    assert lex.feeling("hate", obj="it") == ("I hated it.", -1)
    assert lex.verdict(0, negated=True) == ("I would not recommend it to my friends.", -1)
    assert lex.rating(8) == ("I give it 8 out of 10.", 1)
    with pytest.raises(ValueError, match="ratings are 1-4"):
        lex.rating(5)
    with pytest.raises(ValueError, match="negation 'never' with intensifier 'very'"):
        lex.opinion("the plot", "good", intensifier="very", negation="never")


def test_the_clause_after_but_decides():
    great, dull = lex.opinion("the acting", "great"), lex.opinion("the plot", "dull")
    assert lex.mixed(great, dull) == ("The acting was great, but the plot was dull.", -1)
    assert lex.mixed(dull, great)[1] == 1


def test_review_label_is_the_sign_of_the_sum():
    assert corpus.review_label([1, -1, 1, 0]) == 1
    assert corpus.review_label([-1, 0]) == 0
    with pytest.raises(ValueError, match="sum to zero"):
        corpus.review_label([1, -1])


def _score(review: str) -> int:
    """An independent reading of the documented rule, from the text alone."""
    polarities = []
    for sentence in re.split(r"(?<=\.) ", review.replace("<br /><br />", " ")):
        sentence = sentence.split(", but ")[-1].rstrip(".")
        words = sentence.split()
        if match := re.fullmatch(r"I give it (\d+) out of 10", sentence):
            polarities.append(1 if int(match[1]) >= 7 else -1)
            continue
        positive = set(lex.POSITIVE_WORDS) | {"loved", "enjoyed", "liked", "love", "enjoy", "like"}
        positive |= {"recommend", "worth", "again"}
        negative = set(lex.NEGATIVE_WORDS) | {"hated", "disliked", "hate", "dislike", "waste"}
        negative |= {"asleep"}
        polarity = sum((w in positive) - (w in negative) for w in words)
        if "not" in words or "never" in words:
            polarity = -polarity
        polarities.append(polarity)
    return corpus.review_label(polarities)


def test_generated_reviews_follow_the_rule(reviews):
    for review, label in reviews:
        if review:
            assert _score(review) == label, review


def test_reviews_are_balanced_deterministic_and_baited(reviews):
    assert corpus.reviews() == reviews
    assert corpus.reviews(seed=1) != reviews
    assert len(reviews) == corpus.REVIEW_SIZE == 2000
    assert corpus.REVIEW_FILTER_BAIT == {"duplicate": 20, "empty": 1}
    firsts = {text.normalize(review): label for review, label in reviews if review}
    assert len(firsts) == 2000 - 20 - 1
    positives = sum(firsts.values())
    assert abs(positives - (len(firsts) - positives)) <= 1
    assert sum(review == "" for review, _ in reviews) == 1
    assert sum("<br /><br />" in review for review, _ in reviews) > 200
    for review, _ in reviews:
        assert not re.search(r"[\t\n\r]", review)
        assert review.count(".") <= 6


# --- writers -------------------------------------------------------------------------------


def test_write_translation_files_round_trips(tmp_path):
    prefix = corpus.write_translation_files(str(tmp_path / "data"), n=300, seed=4, name="demo")
    assert prefix == str(tmp_path / "data" / "demo")
    sides = []
    for suffix in ("en", "de"):
        with open(f"{prefix}.{suffix}", encoding="utf-8", newline="") as f:
            content = f.read()
        assert content.endswith("\n") and "\r" not in content
        sides.append(content.split("\n")[:-1])
    assert list(zip(*sides)) == corpus.translation_pairs(300, seed=4)


def test_write_review_csv_round_trips(tmp_path):
    path = corpus.write_review_csv(str(tmp_path / "imdb" / "reviews.csv"), n=300, seed=5)
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["review", "sentiment"]
    expected = corpus.reviews(300, seed=5)
    assert [(r["review"], r["sentiment"]) for r in rows] == [
        (review, features.CLASS_NAMES[label]) for review, label in expected
    ]
    assert {r["sentiment"] for r in rows} == {"positive", "negative"}

"""The embedded default corpus: English–German pairs and movie reviews generated in code.

No data files and no downloads: the preprocessing job falls back to this when it runs
without ``--input``, and the README demo trains a tiny Transformer on it in minutes.
To get files: ``python -c "from pipeline import default_corpus as c;
c.write_translation_files('/tmp/ende'); c.write_review_csv('/tmp/imdb.csv')"``.

Translation pairs are clauses drawn at random and rendered by a small grammar
(``default_corpus_grammar``) over the words of ``default_corpus_lexicon``: German gender,
number and case (nominative, accusative, dative) on articles, possessives and adjective
endings ("den großen Hund", "mit einem alten Freund", "im Park"), conjugation by person,
present and perfect (haben/sein), verb-second main clauses, fronted adverbs with
inversion, verb-first questions, verb-final clauses after "dass", "weil" and "obwohl",
and "nicht". Each English sentence has exactly one German translation; clean
sentences have 3 to 15 English words.

``translation_pairs`` also holds records for the job's filters, at positions drawn from
the seed (``translation_bait(n)`` counts them; none below 200 pairs): copies of earlier
pairs ("duplicate"), pairs with one side "" ("empty_side", the job's "empty" drops: one
with an empty English side, the rest with an empty German side), a one- or two-word
sentence against three sentences of the other language ("length_ratio"), and pairs with
doubled or padding spaces or a ``<br />`` ("normalize": kept, only normalized). All other
pairs are unique on each side, also after normalization, so the job's drop counts on the
default corpus equal ``FILTER_BAIT``. ``held_out_translation_pairs`` has no bait and no
English sentence of the training pairs.

Reviews are labelled 1 (positive) or 0 (negative) by one rule: each sentence has a
polarity of +1, -1 or 0; "not" and "never" flip it ("not bad" is +1, "never boring" is
+1, "I did not enjoy it" is -1); in "A, but B" the clause after "but" wins; ratings of
7-10 are +1 and 1-4 are -1; the label is the sign of the sum, which the generator never
lets be zero. ``REVIEW_FILTER_BAIT`` counts the duplicate and empty reviews injected.

Everything is a function of ``(n, seed)`` through ``random.Random`` instances, so the
output is identical on every machine and Python process.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import random
from collections.abc import Iterator

from pipeline import default_corpus_lexicon as lex
from pipeline import features
from pipeline.default_corpus_grammar import (
    Clause,
    coordinated,
    question,
    reported,
    statement,
    subordinated,
)
from pipeline.default_corpus_lexicon import NounPhrase
from pipeline.text import normalize

TRANSLATION_SIZE = 6000
REVIEW_SIZE = 2000
MIN_WORDS, MAX_WORDS = 3, 15


def translation_bait(n: int) -> dict[str, int]:
    """How many filter-exercising records ``translation_pairs(n)`` injects, by kind."""
    if n < 200:  # too few pairs to spare any
        return dict.fromkeys(("duplicate", "empty_side", "length_ratio", "normalize"), 0)
    return {"duplicate": n // 100, "empty_side": 1 + n // 1500,
            "length_ratio": n // 1000, "normalize": n // 1000}  # fmt: skip


def review_bait(n: int) -> dict[str, int]:
    """How many duplicate and empty reviews ``reviews(n)`` injects."""
    if n < 200:
        return {"duplicate": 0, "empty": 0}
    # One empty review only: two would also be duplicates of each other.
    return {"duplicate": n // 100, "empty": 1}


# Records the job drops, by the filter that drops them, in the default corpus.
FILTER_BAIT = {k: v for k, v in translation_bait(TRANSLATION_SIZE).items() if k != "normalize"}
NORMALIZE_BAIT = translation_bait(TRANSLATION_SIZE)["normalize"]
REVIEW_FILTER_BAIT = review_bait(REVIEW_SIZE)

# --- random translation pairs --------------------------------------------------------------


def _fits(noun: lex.Noun, allowed: frozenset[str]) -> bool:
    return noun.category in allowed or noun.en in allowed


class _Grammar:
    """Draws clauses and sentences from the grammar with one ``random.Random``."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def noun_phrase(self, allowed, *, p_adj: float, plural_ok: bool = True) -> NounPhrase:
        noun = self.rng.choice([n for n in lex.NOUNS.values() if _fits(n, allowed)])
        plural = plural_ok and self.chance(0.3)
        dets = ["the"] * 5 + ([""] * 2 if plural else ["a"] * 3)
        dets += [] if noun.en in lex.NO_POSSESSIVE else ["my", "your"]
        adjectives = [a for a in lex.ADJECTIVES.values() if _fits(noun, a.applies_to)]
        adj = self.rng.choice(adjectives).en if self.chance(p_adj) else None
        return NounPhrase(noun.en, self.rng.choice(dets), plural, adj)

    def subject(self, allowed, *, p_adj: float) -> NounPhrase | str:
        if lex.PERSON in allowed and self.chance(0.3):
            return self.rng.choice(list(lex.PRONOUNS))
        return self.noun_phrase(allowed, p_adj=p_adj)

    def prepositional(self, verb: lex.Verb, *, p_adj: float) -> tuple[str, NounPhrase]:
        roll = self.rng.random()
        if roll < 0.1 and verb.benefactive:
            return lex.BENEFACTIVE[0], self.noun_phrase(lex.ANIMATE, p_adj=p_adj)
        if roll < 0.3 and not verb.needs_place:
            preposition = self.rng.choice(lex.COMPANIONS)[0]
            return preposition, self.noun_phrase(lex.ANIMATE, p_adj=p_adj)
        if verb.places:
            preposition, places = "in", verb.places
        else:
            preposition, _, places = self.rng.choice(lex.LOCATIONS)
        place = self.noun_phrase(frozenset(places), p_adj=p_adj, plural_ok=False)
        return preposition, place

    def clause(self, *, simple: bool = False) -> Clause:
        p_adj = 0.1 if simple else 0.25
        tense = "past" if self.chance(0.35) else "present"
        kind = self.rng.choices(["trans", "intrans", "be", "ditrans"], [42, 25, 15, 18])[0]
        if kind == "be":
            subject = self.subject(lex.ANIMATE | lex.THINGS | {lex.PLACE}, p_adj=p_adj)
            taken = None if isinstance(subject, str) else subject.adj
            noun = lex.NOUNS["man" if isinstance(subject, str) else subject.noun]
            options = [
                a.en for a in lex.ADJECTIVES.values() if _fits(noun, a.applies_to) and a.en != taken
            ]
            negated = self.chance(0.2)
            return Clause(subject, "be", adj=self.rng.choice(options), tense=tense, negated=negated)
        verb = self.rng.choice([v for v in lex.VERBS.values() if v.kind == kind])
        if tense == "past" and verb.en_past == verb.en:
            tense = "present"  # "I read the book" would not say which tense to translate
        subject = self.subject(verb.subjects, p_adj=p_adj)
        obj = self.noun_phrase(verb.objects, p_adj=p_adj) if kind != "intrans" else None
        iobj = self.noun_phrase(lex.ANIMATE, p_adj=p_adj) if kind == "ditrans" else None
        p_pp = {"intrans": 0.75, "trans": 0.3, "ditrans": 0.15}[kind] * (0.5 if simple else 1)
        pp = None
        if verb.needs_place or self.chance(p_pp):
            pp = self.prepositional(verb, p_adj=p_adj / 2)
        # Next to a prepositional phrase "nicht" could stand on either side of it, and an
        # indefinite object would need "kein": negating neither keeps one translation each.
        negatable = pp is None and all(
            np is None or np.det in ("the", "my", "your") for np in (obj, iobj)
        )
        negated = negatable and self.chance(0.2)
        return Clause(subject, verb.en, obj, iobj, pp, tense=tense, negated=negated)

    def sentence(self) -> tuple[str, str]:
        kind = self.rng.choices(
            ["statement", "question", "reported", "sub", "coord"], [42, 12, 16, 14, 16]
        )[0]
        if kind == "statement":
            clause = self.clause()
            adverbs = [a for a, (_, tenses) in lex.ADVERBS.items() if clause.tense in tenses]
            return statement(clause, adverb=self.rng.choice(adverbs) if self.chance(0.15) else None)
        if kind == "question":
            clause = self.clause()
            subject = "you" if clause.subject == "I" else clause.subject  # not "Do I see ...?"
            return question(dataclasses.replace(clause, subject=subject, negated=False))
        if kind == "reported":
            speaker = self.rng.choice(list(lex.PRONOUNS))
            verb = self.rng.choice(list(lex.REPORTING_VERBS))
            return reported(speaker, verb, self.clause(simple=True))
        first, second = self.clause(simple=True), self.clause(simple=True)
        if kind == "sub":
            return subordinated(first, self.rng.choice(list(lex.SUBORDINATORS)), second)
        return coordinated(first, self.rng.choice(list(lex.COORDINATORS)), second)


def _unique_pairs(
    rng: random.Random, skip_english: frozenset[str] = frozenset()
) -> Iterator[tuple[str, str]]:
    """Endless stream of pairs, no side repeated, English lengths in [MIN_WORDS, MAX_WORDS]."""
    grammar = _Grammar(rng)
    # Compared as the job compares them (normalized, and lowercased if it is asked to).
    seen_en = {normalize(en, lowercase=True) for en in skip_english}
    seen_de = set()
    while True:
        en, de = grammar.sentence()
        key_en, key_de = normalize(en, lowercase=True), normalize(de, lowercase=True)
        if not MIN_WORDS <= len(en.split()) <= MAX_WORDS or key_en in seen_en or key_de in seen_de:
            continue
        seen_en.add(key_en)
        seen_de.add(key_de)
        yield en, de


_SHORT = (
    ("Yes.", "Ja."), ("No.", "Nein."), ("Thanks.", "Danke."), ("Hello.", "Hallo."),
    ("Goodbye.", "Tschüss."), ("Of course.", "Natürlich."), ("Good night.", "Gute Nacht."),
)  # fmt: skip


def _bait_slots(rng: random.Random, n: int, counts: dict[str, int]) -> dict[int, str]:
    """Position -> bait kind; the first 20 positions stay clean so copies have an original."""
    kinds = [kind for kind, count in counts.items() for _ in range(count)]
    rng.shuffle(kinds)
    return dict(zip(sorted(rng.sample(range(20, n), len(kinds))), kinds))


def _spaced(text: str, variant: int) -> str:
    """``text`` with whitespace or a line-break tag that normalization removes again."""
    words = text.split(" ")
    middle = len(words) // 2
    if variant == 0:
        return "  ".join(words)
    if variant == 1:
        return " ".join(words[:middle]) + " <br /> " + " ".join(words[middle:])
    return f"  {text} "


def translation_pairs(n: int = TRANSLATION_SIZE, *, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` (English, German) pairs, filter bait included (see the module docstring)."""
    rng = random.Random(seed)
    slots = _bait_slots(rng, n, translation_bait(n))
    stream = _unique_pairs(rng)
    pairs: list[tuple[str, str]] = []
    originals: list[tuple[str, str]] = []
    empties = ratios = normalized = 0
    for position in range(n):
        kind = slots.get(position)
        if kind == "duplicate":
            pairs.append(rng.choice(originals))
        elif kind == "empty_side":
            en, de = next(stream)
            pairs.append(("", de) if empties == 0 else (en, ""))
            empties += 1
        elif kind == "length_ratio":
            short = _SHORT[ratios % len(_SHORT)]
            side = ratios % 2  # alternate which side is the long one
            long = " ".join(next(stream)[1 - side] for _ in range(3))
            pairs.append((short[0], long) if side == 0 else (long, short[1]))
            ratios += 1
        elif kind == "normalize":
            en, de = next(stream)
            variant = normalized % 3
            pairs.append(
                (_spaced(en, variant), de) if normalized % 2 else (en, _spaced(de, variant))
            )
            normalized += 1
        else:
            pairs.append(next(stream))
            originals.append(pairs[-1])
    return pairs


def held_out_translation_pairs(
    n: int = 200, *, seed: int = 1, train_n: int = TRANSLATION_SIZE, train_seed: int = 0
) -> list[tuple[str, str]]:
    """``n`` clean pairs from the same grammar for measuring BLEU.

    None of their English sentences occurs in ``translation_pairs(train_n, seed=train_seed)``,
    so the score is on unseen sentences (their words and constructions are all seen).
    """
    train_english = frozenset(en for en, _ in translation_pairs(train_n, seed=train_seed))
    stream = _unique_pairs(random.Random(seed), skip_english=train_english)
    return [next(stream) for _ in range(n)]


# --- movie reviews -------------------------------------------------------------------------


def review_label(polarities: list[int]) -> int:
    """The labelling rule: 1 when the sentence polarities sum above zero, 0 below."""
    total = sum(polarities)
    if total == 0:
        raise ValueError("polarities sum to zero: the review has no label")
    return int(total > 0)


class _Reviewer:
    def __init__(self, rng: random.Random):
        self.rng = rng

    def opinion(self, polarity: int) -> tuple[str, int]:
        negation = self.rng.choices(lex.NEGATIONS, [6, 2, 1, 1])[0]
        base = polarity * (-1 if negation else 1)
        word = self.rng.choice(lex.POSITIVE_WORDS if base > 0 else lex.NEGATIVE_WORDS)
        intensifier = None
        if negation in (None, "not") and self.rng.random() < 0.4:
            intensifier = self.rng.choice(lex.INTENSIFIERS)
        aspect = self.rng.choice(lex.REVIEW_ASPECTS)
        return lex.opinion(aspect, word, intensifier=intensifier, negation=negation)

    def neutral_sentences(self) -> list[str]:
        """One of each neutral sentence, in random order (a review uses each at most once)."""
        rng = self.rng
        sentences = [
            f"I watched it {rng.choice(lex.NEUTRAL_WHEN)} with {rng.choice(lex.NEUTRAL_WHO)}.",
            f"The film is about {rng.choice(lex.NEUTRAL_TOPICS)}.",
            f"It came out in {rng.randint(1970, 2020)}.",
            f"It runs for about {rng.randrange(85, 160, 5)} minutes.",
            *lex.NEUTRAL_REMARKS,
        ]
        rng.shuffle(sentences)
        return sentences

    def sentence(self, polarity: int) -> tuple[str, int]:
        """An opinion of ``polarity`` (+1 or -1)."""
        rng = self.rng
        kind = rng.choices(["opinion", "mixed", "feeling", "verdict", "rating"], [9, 3, 3, 3, 2])[0]
        if kind == "opinion":
            return self.opinion(polarity)
        if kind == "mixed":
            return lex.mixed(self.opinion(-polarity), self.opinion(polarity))
        negated = rng.random() < 0.3
        if kind == "feeling":
            base = polarity * (-1 if negated else 1)
            verb = rng.choice([v for v, _, p in lex.FEELINGS if p == base])
            return lex.feeling(verb, obj=rng.choice(lex.FEELING_OBJECTS), negated=negated)
        if kind == "verdict":
            base = polarity * (-1 if negated else 1)
            index = rng.choice([i for i, v in enumerate(lex.VERDICTS) if v[2] == base])
            return lex.verdict(index, negated=negated)
        return lex.rating(rng.choice([7, 8, 9, 10] if polarity > 0 else [1, 2, 3, 4]))

    def review(self, label: int) -> str:
        """1-6 sentences, at least half opinions, most of those agreeing with ``label``."""
        rng, sign = self.rng, 1 if label else -1
        count = rng.randint(1, 6)
        opinions = rng.randint((count + 1) // 2, count)  # at least half carry an opinion
        against = rng.randint(0, (opinions - 1) // 2)
        polarities = [sign] * (opinions - against) + [-sign] * against + [0] * (count - opinions)
        rng.shuffle(polarities)
        neutral = self.neutral_sentences()
        sentences = [self.sentence(p) if p else (neutral.pop(), 0) for p in polarities]
        assert review_label([p for _, p in sentences]) == label
        text = sentences[0][0]
        for sentence, _ in sentences[1:]:
            text += ("<br /><br />" if rng.random() < 0.25 else " ") + sentence
        return text


def reviews(n: int = REVIEW_SIZE, *, seed: int = 0) -> list[tuple[str, int]]:
    """``n`` (review, label) pairs, label 1 positive / 0 negative; bait as in ``review_bait``."""
    rng = random.Random(seed)
    bait = review_bait(n)
    slots = _bait_slots(rng, n, bait)
    clean = n - len(slots)
    labels = [i % 2 for i in range(clean)]
    rng.shuffle(labels)
    reviewer, seen = _Reviewer(rng), set()
    out: list[tuple[str, int]] = []
    originals: list[tuple[str, int]] = []
    for position in range(n):
        kind = slots.get(position)
        if kind == "duplicate":
            out.append(rng.choice(originals))
        elif kind == "empty":
            out.append(("", 1))  # the label is arbitrary: the job drops it as empty
        else:
            label = labels[len(originals)]
            review = reviewer.review(label)
            # Unique as the job compares them: "<br /><br />" and " " normalize alike.
            while (key := normalize(review, lowercase=True)) in seen:
                review = reviewer.review(label)
            seen.add(key)
            out.append((review, label))
            originals.append(out[-1])
    return out


# --- files ---------------------------------------------------------------------------------


def write_translation_files(
    directory: str, *, n: int = TRANSLATION_SIZE, seed: int = 0, name: str = "train"
) -> str:
    """Writes line-aligned ``DIRECTORY/NAME.en`` and ``.de`` (UTF-8); returns ``DIRECTORY/NAME``."""
    os.makedirs(directory, exist_ok=True)
    prefix = os.path.join(directory, name)
    pairs = translation_pairs(n, seed=seed)
    for side, suffix in ((0, "en"), (1, "de")):
        with open(f"{prefix}.{suffix}", "w", encoding="utf-8", newline="\n") as f:
            f.writelines(pair[side] + "\n" for pair in pairs)
    return prefix


def write_review_csv(path: str, *, n: int = REVIEW_SIZE, seed: int = 0) -> str:
    """Writes ``review,sentiment`` rows (sentiment "positive"/"negative"); returns ``path``."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "sentiment"])
        writer.writerows(
            (text, features.CLASS_NAMES[label]) for text, label in reviews(n, seed=seed)
        )
    return path


def write_held_out_files(directory: str, *, n: int = 200) -> str:
    """Writes the held-out pairs as ``DIRECTORY/held_out.en`` and ``.de``; returns the prefix."""
    os.makedirs(directory, exist_ok=True)
    prefix = os.path.join(directory, "held_out")
    pairs = held_out_translation_pairs(n)
    for column, lang in enumerate(("en", "de")):
        with open(f"{prefix}.{lang}", "w", encoding="utf-8") as f:
            f.writelines(pair[column] + "\n" for pair in pairs)
    return prefix

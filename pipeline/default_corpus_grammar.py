"""The default corpus's grammar: one clause -> its English sentence and its German translation.

    clause = Clause(NounPhrase("dog", "a", adj="big"), "sleep", pp=("in", NounPhrase("park")))
    statement(clause)  # ("A big dog sleeps in the park.", "Ein großer Hund schläft im Park.")

German gender, number and case on articles, possessives and adjective endings come from
``default_corpus_lexicon``; here are person and tense (present, perfect with haben/sein),
verb-second main clauses, fronted adverbs with inversion, verb-first questions, verb-final
clauses after "dass", "weil" and "obwohl", and "nicht". ``default_corpus`` draws the
clauses at random.
"""

from __future__ import annotations

import dataclasses

from pipeline import default_corpus_lexicon as lex
from pipeline.default_corpus_lexicon import NounPhrase

_THIRD_SINGULAR, _THIRD_PLURAL = 2, 4  # indices into the five German person forms


@dataclasses.dataclass(frozen=True)
class Clause:
    subject: NounPhrase | str  # a noun phrase or a key of lex.PRONOUNS
    verb: str  # key of lex.VERBS, or "be" with ``adj``
    obj: NounPhrase | None = None  # accusative object
    iobj: NounPhrase | None = None  # dative object (ditransitive verbs)
    pp: tuple[str, NounPhrase] | None = None  # (English preposition, noun phrase)
    adj: str | None = None  # predicate adjective of "be"
    tense: str = "present"  # "present" | "past" (German perfect, or "war")
    negated: bool = False


def _person(subject: NounPhrase | str) -> int:
    if isinstance(subject, str):
        return lex.PRONOUNS[subject][2]
    return _THIRD_PLURAL if subject.plural else _THIRD_SINGULAR


def _english_clause(clause: Clause, *, question: bool = False) -> str:
    person = _person(clause.subject)
    s = clause.subject
    subject = lex.PRONOUNS[s][0] if isinstance(s, str) else lex.english_np(s)
    past = clause.tense == "past"
    if clause.verb == "be":
        if past:
            be = "was" if person in (0, _THIRD_SINGULAR) else "were"
        else:
            be = {0: "am", _THIRD_SINGULAR: "is"}.get(person, "are")
        adj = lex.ADJECTIVES[clause.adj].en
        if question:
            return f"{be} {subject} {adj}"
        return " ".join([subject, be, *["not"] * clause.negated, adj])
    verb = lex.VERBS[clause.verb]
    tail = [lex.english_np(np) for np in (clause.iobj, clause.obj) if np]
    if clause.pp:
        tail.append(f"{clause.pp[0]} {lex.english_np(clause.pp[1])}")
    if question or clause.negated:
        do = "did" if past else ("does" if person == _THIRD_SINGULAR else "do")
        head = [do, subject, verb.en] if question else [subject, do, "not", verb.en]
        return " ".join(head + tail)
    present = verb.en_s if person == _THIRD_SINGULAR else verb.en
    return " ".join([subject, verb.en_past if past else present, *tail])


def _german_fields(clause: Clause) -> tuple[str, str, list[str], list[str]]:
    """(subject, finite verb, middle field, right bracket) of a German clause."""
    person = _person(clause.subject)
    s = clause.subject
    subject = lex.PRONOUNS[s][1] if isinstance(s, str) else lex.german_np(s, "nom")
    negation = ["nicht"] if clause.negated else []
    if clause.verb == "be":
        finite = lex.GERMAN_FORMS["war" if clause.tense == "past" else "sein"][person]
        return subject, finite, [*negation, lex.ADJECTIVES[clause.adj].de], []
    verb = lex.VERBS[clause.verb]
    middle = [lex.german_np(clause.iobj, "dat")] if clause.iobj else []
    middle += [lex.german_np(clause.obj, "acc")] if clause.obj else []
    middle += negation
    middle += [lex.german_pp(*clause.pp)] if clause.pp else []
    if clause.tense == "past":
        return subject, lex.GERMAN_FORMS[verb.aux][person], middle, [verb.participle]
    return subject, lex.german_present(verb, person), middle, []


def _main_order(clause: Clause) -> str:
    subject, finite, middle, final = _german_fields(clause)
    return " ".join([subject, finite, *middle, *final])


def _verb_final(clause: Clause) -> str:
    subject, finite, middle, final = _german_fields(clause)
    return " ".join([subject, *middle, *final, finite])


def _finish(text: str, mark: str = ".") -> str:
    return text[0].upper() + text[1:] + mark


def statement(clause: Clause, *, adverb: str | None = None) -> tuple[str, str]:
    """A main clause; a fronted ``adverb`` (key of lex.ADVERBS) inverts the German verb."""
    english = _english_clause(clause)
    if adverb is None:
        return _finish(english), _finish(_main_order(clause))
    subject, finite, middle, final = _german_fields(clause)
    german = " ".join([lex.ADVERBS[adverb][0], finite, subject, *middle, *final])
    return _finish(f"{adverb} {english}"), _finish(german)


def question(clause: Clause) -> tuple[str, str]:
    """A yes/no question: do-support in English, the finite verb first in German."""
    subject, finite, middle, final = _german_fields(clause)
    german = " ".join([finite, subject, *middle, *final])
    return _finish(_english_clause(clause, question=True), "?"), _finish(german, "?")


def reported(speaker: str, verb: str, clause: Clause) -> tuple[str, str]:
    """ "I know that ..." -> "Ich weiß, dass ..." (``verb``: key of lex.REPORTING_VERBS)."""
    en_s, forms = lex.REPORTING_VERBS[verb]
    person = lex.PRONOUNS[speaker][2]
    english = f"{lex.PRONOUNS[speaker][0]} {en_s if person == _THIRD_SINGULAR else verb}"
    german = f"{lex.PRONOUNS[speaker][1]} {forms[person]}"
    return (
        _finish(f"{english} that {_english_clause(clause)}"),
        _finish(f"{german}, dass {_verb_final(clause)}"),
    )


def subordinated(main: Clause, conjunction: str, clause: Clause) -> tuple[str, str]:
    """ "... because ..." -> "..., weil ... <verb>" (``conjunction``: "because" | "although")."""
    english = f"{_english_clause(main)} {conjunction} {_english_clause(clause)}"
    german = f"{_main_order(main)}, {lex.SUBORDINATORS[conjunction]} {_verb_final(clause)}"
    return _finish(english), _finish(german)


def coordinated(first: Clause, conjunction: str, second: Clause) -> tuple[str, str]:
    """Two main clauses joined by "and" / "but"; both keep verb-second order in German."""
    comma = "," if conjunction == "but" else ""
    de = lex.COORDINATORS[conjunction]
    return (
        _finish(f"{_english_clause(first)}{comma} {conjunction} {_english_clause(second)}"),
        _finish(f"{_main_order(first)}{comma} {de} {_main_order(second)}"),
    )

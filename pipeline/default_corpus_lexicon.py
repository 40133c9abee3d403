"""Words of the embedded default corpus and their forms (see ``pipeline/default_corpus.py``).

English–German nouns, verbs and adjectives with what inflection needs (irregular plurals,
gender, vowel-changing stems, participles and auxiliaries), the German article and
adjective-ending tables with the functions that apply them to a noun phrase, and the
phrase lists and sentence makers of the movie reviews (each returns a sentence with its
polarity). Word order (main, question, subordinate clause), sampling and the labelling
rule live in ``default_corpus``.
"""

from __future__ import annotations

import dataclasses


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


PERSON, ANIMAL, OBJECT, FIXTURE, FOOD, PLACE = _words("person animal object fixture food place")
ANIMATE = frozenset({PERSON, ANIMAL})
THINGS = frozenset({OBJECT, FIXTURE, FOOD})
# "meine Frau" is "my wife": these take no possessive, so each English phrase has one German.
NO_POSSESSIVE = frozenset({"man", "woman"})


@dataclasses.dataclass(frozen=True)
class Noun:
    en: str
    en_plural: str
    gender: str  # "m" | "f" | "n"
    de: str
    de_plural: str
    category: str


@dataclasses.dataclass(frozen=True)
class Verb:
    en: str  # base form: "see"
    en_s: str  # third person singular present: "sees"
    en_past: str
    de: str  # infinitive: "sehen"
    participle: str
    aux: str  # "haben" | "sein"
    kind: str  # "trans" | "ditrans" | "intrans"
    subjects: frozenset[str]  # categories or noun keys
    objects: frozenset[str] = frozenset()
    forms: tuple[str, ...] = ()  # ich, du, er, wir, sie when wholly irregular
    stem2: str = ""  # du/er stem when the vowel changes: "sieh"
    e_insert: bool = False  # "öffnest", "zeichnet": an -e- before -st/-t
    places: tuple[str, ...] = ()  # the only nouns it takes with "in"; () means any location
    needs_place: bool = False  # "live" alone would read as "be alive"
    benefactive: bool = False  # takes "for the child" (für + accusative)


@dataclasses.dataclass(frozen=True)
class Adjective:
    en: str
    de: str  # predicative form: "teuer"
    stem: str  # the form endings attach to: "teur"
    applies_to: frozenset[str]  # categories or noun keys


def _nouns(rows: str, category: str) -> dict[str, Noun]:
    out = {}
    for row in rows.strip().splitlines():
        en, en_plural, gender, de, de_plural = row.split()
        out[en] = Noun(en, en_plural, gender, de, de_plural, category)
    return out


NOUNS: dict[str, Noun] = {
    **_nouns(
        """
        man men m Mann Männer
        woman women f Frau Frauen
        child children n Kind Kinder
        girl girls n Mädchen Mädchen
        teacher teachers m Lehrer Lehrer
        doctor doctors m Arzt Ärzte
        friend friends m Freund Freunde
        sister sisters f Schwester Schwestern
        brother brothers m Bruder Brüder
        grandmother grandmothers f Großmutter Großmütter
        cook cooks m Koch Köche
        """,
        PERSON,
    ),
    **_nouns(
        """
        dog dogs m Hund Hunde
        cat cats f Katze Katzen
        bird birds m Vogel Vögel
        horse horses n Pferd Pferde
        mouse mice f Maus Mäuse
        cow cows f Kuh Kühe
        owl owls f Eule Eulen
        frog frogs m Frosch Frösche
        """,
        ANIMAL,
    ),
    **_nouns(
        """
        book books n Buch Bücher
        letter letters m Brief Briefe
        key keys m Schlüssel Schlüssel
        box boxes f Kiste Kisten
        ball balls m Ball Bälle
        umbrella umbrellas m Regenschirm Regenschirme
        newspaper newspapers f Zeitung Zeitungen
        picture pictures n Bild Bilder
        bag bags f Tasche Taschen
        """,
        OBJECT,
    ),
    **_nouns(
        """
        table tables m Tisch Tische
        chair chairs m Stuhl Stühle
        car cars n Auto Autos
        door doors f Tür Türen
        window windows n Fenster Fenster
        tree trees m Baum Bäume
        """,
        FIXTURE,
    ),
    **_nouns(
        """
        apple apples m Apfel Äpfel
        cake cakes m Kuchen Kuchen
        egg eggs n Ei Eier
        banana bananas f Banane Bananen
        orange oranges f Orange Orangen
        """,
        FOOD,
    ),
    **_nouns(
        """
        park parks m Park Parks
        garden gardens m Garten Gärten
        house houses n Haus Häuser
        kitchen kitchens f Küche Küchen
        city cities f Stadt Städte
        river rivers m Fluss Flüsse
        street streets f Straße Straßen
        school schools f Schule Schulen
        forest forests m Wald Wälder
        lake lakes m See Seen
        room rooms n Zimmer Zimmer
        """,
        PLACE,
    ),
}

# Location prepositions (all take the dative here): English, German, allowed nouns.
LOCATIONS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("in", "in", ("park", "garden", "house", "kitchen", "city", "school", "forest", "room")),
    ("on", "auf", ("street", "table")),
    ("under", "unter", ("table", "tree", "chair")),
    ("next to", "neben", ("house", "school", "tree", "car", "door", "river", "lake")),
)
# Companion prepositions: English, German, German case.
COMPANIONS: tuple[tuple[str, str, str], ...] = (("with", "mit", "dat"), ("without", "ohne", "acc"))
BENEFACTIVE = ("for", "für", "acc")
PREPOSITIONS: dict[str, tuple[str, str]] = {
    **{en: (de, "dat") for en, de, _ in LOCATIONS},
    **{en: (de, case) for en, de, case in COMPANIONS},
    BENEFACTIVE[0]: BENEFACTIVE[1:],
}

_CATEGORIES = {
    "animate": ANIMATE,
    "things": THINGS,
    "all": ANIMATE | THINGS | {PLACE},
    "readable": {"book", "letter", "newspaper"},
    "openable": {"door", "window", "box", "book", "bag", "letter", "umbrella"},
    "portable": {OBJECT, FOOD, "cat", "mouse", "frog"},
    "washable": {ANIMAL, FIXTURE, FOOD, "child", "ball", "bag"},
    "visitable": {PERSON, "park", "city", "school", "garden", "lake"},
    # Places for verbs that take only some locations (with "in"):
    "outdoors": ("park", "garden", "forest", "city"),
    "water": ("river", "lake"),
    "home": ("house", "city"),
}
# Wholly irregular presents (ich, du, er, wir, sie), and the past of the copula.
GERMAN_FORMS: dict[str, tuple[str, ...]] = {
    "haben": ("habe", "hast", "hat", "haben", "haben"),
    "sein": ("bin", "bist", "ist", "sind", "sind"),
    "mögen": ("mag", "magst", "mag", "mögen", "mögen"),
    "war": ("war", "warst", "war", "waren", "waren"),
}


def _verbs(table: str) -> dict[str, Verb]:
    """Rows of: English forms | German forms | kind | subjects | objects | options."""
    out = {}
    for row in table.strip().splitlines():
        en, de, kind, subjects, objects, options = (cell.split() for cell in row.split("|"))
        extra: dict = {}
        for option in options:
            key, _, value = option.partition("=")
            extra[key] = tuple(_CATEGORIES[value]) if key == "places" else value or True

        def categories(names: list[str]) -> frozenset[str]:
            return frozenset().union(*(_CATEGORIES.get(name, {name}) for name in names))

        forms = GERMAN_FORMS.get(de[0], ())
        verb = Verb(*en, *de, kind[0], categories(subjects), categories(objects), forms, **extra)
        out[verb.en] = verb
    return out


VERBS: dict[str, Verb] = _verbs(
    """
    see sees saw | sehen gesehen haben | trans | animate | all | stem2=sieh
    like likes liked | mögen gemocht haben | trans | animate | all |
    buy buys bought | kaufen gekauft haben | trans | person | object food | benefactive
    find finds found | finden gefunden haben | trans | animate | object food animal |
    need needs needed | brauchen gebraucht haben | trans | person | things |
    have has had | haben gehabt haben | trans | person | object animal |
    read reads read | lesen gelesen haben | trans | person | readable | stem2=lies
    eat eats ate | essen gegessen haben | trans | animate | food | stem2=iss
    carry carries carried | tragen getragen haben | trans | person | portable | stem2=träg benefactive
    hear hears heard | hören gehört haben | trans | animate | animate |
    visit visits visited | besuchen besucht haben | trans | person | visitable |
    draw draws drew | zeichnen gezeichnet haben | trans | person | all | e_insert benefactive
    wash washes washed | waschen gewaschen haben | trans | person | washable | stem2=wäsch
    open opens opened | öffnen geöffnet haben | trans | person | openable | e_insert
    write writes wrote | schreiben geschrieben haben | trans | person | letter book | benefactive
    give gives gave | geben gegeben haben | ditrans | person | object food | stem2=gib
    show shows showed | zeigen gezeigt haben | ditrans | person | object food animal |
    bring brings brought | bringen gebracht haben | ditrans | person | object food |
    sleep sleeps slept | schlafen geschlafen haben | intrans | animate |  | stem2=schläf
    play plays played | spielen gespielt haben | intrans | animate |  |
    run runs ran | laufen gelaufen sein | intrans | animate |  | stem2=läuf places=outdoors
    wait waits waited | warten gewartet haben | intrans | animate |  |
    sit sits sat | sitzen gesessen haben | intrans | animate |  |
    live lives lived | wohnen gewohnt haben | intrans | person |  | places=home needs_place
    work works worked | arbeiten gearbeitet haben | intrans | person |  |
    sing sings sang | singen gesungen haben | intrans | person |  |
    swim swims swam | schwimmen geschwommen sein | intrans | animate |  | places=water
    """
)
# Verbs that introduce a "that" clause: English base, 3sg, German ich/du/er/wir/sie.
REPORTING_VERBS: dict[str, tuple[str, tuple[str, ...]]] = {
    "know": ("knows", ("weiß", "weißt", "weiß", "wissen", "wissen")),
    "think": ("thinks", ("glaube", "glaubst", "glaubt", "glauben", "glauben")),
    "say": ("says", ("sage", "sagst", "sagt", "sagen", "sagen")),
    "hope": ("hopes", ("hoffe", "hoffst", "hofft", "hoffen", "hoffen")),
}
# English, German, person (index into the five German forms).
PRONOUNS: dict[str, tuple[str, str, int]] = {
    "I": ("I", "ich", 0),
    "you": ("you", "du", 1),
    "he": ("he", "er", 2),
    "she": ("she", "sie", 2),
    "we": ("we", "wir", 3),
    "they": ("they", "sie", 4),
}
# Fronted time adverbs: English, German, tenses they go with.
ADVERBS: dict[str, tuple[str, tuple[str, ...]]] = {
    "today": ("heute", ("present", "past")),
    "now": ("jetzt", ("present",)),
    "yesterday": ("gestern", ("past",)),
}
# Subordinating conjunctions (verb-final in German) and coordinating ones (verb-second).
SUBORDINATORS = {"because": "weil", "although": "obwohl"}
COORDINATORS = {"and": "und", "but": "aber"}


def _adjectives(table: str) -> dict[str, Adjective]:
    """Rows of: English German [stem] | what it applies to."""
    out = {}
    for row in table.strip().splitlines():
        words, applies_to = row.split("|")
        en, de, *stem = words.split()
        categories = frozenset().union(*(_CATEGORIES.get(n, {n}) for n in applies_to.split()))
        out[en] = Adjective(en, de, stem[0] if stem else de, categories)
    return out


ADJECTIVES: dict[str, Adjective] = _adjectives(
    """
    big groß            | all
    small klein         | all
    old alt             | all
    beautiful schön     | all
    young jung          | animate
    tired müde müd      | animate
    hungry hungrig      | animate
    happy glücklich     | animate
    new neu             | things
    expensive teuer teur | things
    heavy schwer        | things
    red rot             | things
    green grün          | things
    white weiß          | animal car
    black schwarz       | animal car
    fast schnell        | animal car
    """
)

# --- German noun phrases -------------------------------------------------------------------

_DEFINITE = {
    "nom": {"m": "der", "f": "die", "n": "das", "pl": "die"},
    "acc": {"m": "den", "f": "die", "n": "das", "pl": "die"},
    "dat": {"m": "dem", "f": "der", "n": "dem", "pl": "den"},
}
_EIN_WORDS = {"a": "ein", "my": "mein", "your": "dein"}
_EIN_ENDINGS = {
    "nom": {"m": "", "f": "e", "n": "", "pl": "e"},
    "acc": {"m": "en", "f": "e", "n": "", "pl": "e"},
    "dat": {"m": "em", "f": "er", "n": "em", "pl": "en"},
}
# Adjective endings after a definite article (weak), after an ein-word (mixed), and with
# no article at all (strong; only plurals go without one here).
_WEAK = {
    "nom": {"m": "e", "f": "e", "n": "e", "pl": "en"},
    "acc": {"m": "en", "f": "e", "n": "e", "pl": "en"},
    "dat": {"m": "en", "f": "en", "n": "en", "pl": "en"},
}
_MIXED = {
    "nom": {"m": "er", "f": "e", "n": "es", "pl": "en"},
    "acc": {"m": "en", "f": "e", "n": "es", "pl": "en"},
    "dat": {"m": "en", "f": "en", "n": "en", "pl": "en"},
}
_STRONG_PLURAL = {"nom": "e", "acc": "e", "dat": "en"}


@dataclasses.dataclass(frozen=True)
class NounPhrase:
    noun: str  # key of NOUNS (the English singular)
    det: str = "the"  # "the" | "a" | "my" | "your" | "" (bare plural)
    plural: bool = False
    adj: str | None = None  # key of ADJECTIVES

    def __post_init__(self):
        if (self.det == "a" and self.plural) or (self.det == "" and not self.plural):
            raise ValueError(f"determiner {self.det!r} does not go with plural={self.plural}")


def english_np(np: NounPhrase) -> str:
    noun = NOUNS[np.noun]
    words = [ADJECTIVES[np.adj].en] if np.adj else []
    words.append(noun.en_plural if np.plural else noun.en)
    det = "an" if np.det == "a" and words[0][0] in "aeiou" else np.det
    return " ".join([det, *words] if det else words)


def german_np(np: NounPhrase, case: str) -> str:
    """``case``: "nom" | "acc" | "dat"."""
    noun = NOUNS[np.noun]
    slot = "pl" if np.plural else noun.gender
    word = noun.de_plural if np.plural else noun.de
    if np.plural and case == "dat" and not word.endswith(("n", "s")):
        word += "n"  # dative plural: "den Kindern", but "den Autos", "den Mädchen"
    if np.det == "the":
        article, ending = _DEFINITE[case][slot], _WEAK[case][slot]
    elif np.det in _EIN_WORDS:
        article, ending = _EIN_WORDS[np.det] + _EIN_ENDINGS[case][slot], _MIXED[case][slot]
    else:
        article, ending = "", _STRONG_PLURAL[case]
    adjective = ADJECTIVES[np.adj].stem + ending if np.adj else ""
    return " ".join(w for w in (article, adjective, word) if w)


def german_pp(preposition: str, np: NounPhrase) -> str:
    """``preposition``: English key of PREPOSITIONS; "in dem" contracts to "im"."""
    german, case = PREPOSITIONS[preposition]
    phrase = german_np(np, case)
    if german == "in" and phrase.startswith("dem "):
        return "im " + phrase[4:]
    return f"{german} {phrase}"


def german_present(verb: Verb, person: int) -> str:
    """``person``: 0 ich, 1 du, 2 er/sie, 3 wir, 4 sie (plural)."""
    if verb.forms:
        return verb.forms[person]
    if person >= 3:
        return verb.de
    stem = verb.de[:-2] if verb.de.endswith("en") else verb.de[:-1]
    if person == 0:
        return stem + "e"
    changed = verb.stem2 or stem
    e = "e" if not verb.stem2 and (stem.endswith(("d", "t")) or verb.e_insert) else ""
    if person == 1 and not (changed.endswith(("s", "ß", "z", "x")) and not e):
        return changed + e + "st"
    return changed + e + "t"


# --- movie reviews -------------------------------------------------------------------------

REVIEW_ASPECTS = (
    "the acting", "the plot", "the story", "the script", "the music", "the ending",
    "the dialogue", "the camera work", "the soundtrack", "the lead actor", "this movie",
    "this film", "the characters", "the special effects", "the jokes",
)  # fmt: skip
PLURAL_ASPECTS = frozenset({"the characters", "the special effects", "the jokes"})
POSITIVE_WORDS = _words(
    "good great excellent wonderful brilliant amazing funny beautiful moving clever superb fantastic"
)
NEGATIVE_WORDS = _words(
    "bad terrible awful boring dull weak stupid predictable poor annoying silly lazy"
)
INTENSIFIERS = _words("very really extremely truly incredibly quite so")
# Base form, past tense, polarity.
FEELINGS: tuple[tuple[str, str, int], ...] = (
    ("love", "loved", 1), ("enjoy", "enjoyed", 1), ("like", "liked", 1),
    ("hate", "hated", -1), ("dislike", "disliked", -1),
)  # fmt: skip
FEELING_OBJECTS = ("this movie", "this film", "it", "the whole thing")
# Plain form, negated form, polarity of the plain form.
VERDICTS: tuple[tuple[str, str, int], ...] = (
    ("I would recommend it to my friends.", "I would not recommend it to my friends.", 1),
    ("It is worth watching.", "It is not worth watching.", 1),
    ("I will watch it again.", "I will never watch it again.", 1),
    ("It was a waste of time.", "It was not a waste of time.", -1),
    ("I fell asleep halfway through.", "I did not fall asleep for a second.", -1),
)
NEUTRAL_WHEN = ("last weekend", "on Sunday", "last night", "on a plane", "at the cinema")
NEUTRAL_WHO = ("my sister", "my brother", "my friends", "my parents", "my wife", "my husband")
NEUTRAL_REMARKS = ("I saw the trailer first.", "The director also wrote the script.")
NEUTRAL_TOPICS = (
    "a family in a small town", "two brothers", "a detective in London",
    "a young woman in Paris", "a group of friends", "a soldier after the war",
    "a teacher and her students",
)  # fmt: skip

_WORD_POLARITY = {**dict.fromkeys(POSITIVE_WORDS, 1), **dict.fromkeys(NEGATIVE_WORDS, -1)}
NEGATIONS = (None, "not", "never", "not at all")


def opinion(
    aspect: str, word: str, *, intensifier: str | None = None, negation: str | None = None
) -> tuple[str, int]:
    """ "The plot was not very good." -> -1. ``negation``: None | "not" | "never" | "not at all"."""
    if negation not in NEGATIONS or (intensifier and negation not in (None, "not")):
        raise ValueError(f"negation {negation!r} with intensifier {intensifier!r}")
    words = [aspect, "were" if aspect in PLURAL_ASPECTS else "was"]
    words += [negation.split()[0]] if negation else []
    words += [intensifier, word] if intensifier else [word]
    words += ["at all"] if negation == "not at all" else []
    text = " ".join(words)
    return text[0].upper() + text[1:] + ".", _WORD_POLARITY[word] * (-1 if negation else 1)


def mixed(first: tuple[str, int], second: tuple[str, int]) -> tuple[str, int]:
    """Two opinions joined by "but": the clause after "but" decides the polarity."""
    text = f"{first[0][:-1]}, but {second[0][0].lower()}{second[0][1:]}"
    return text, second[1]


def feeling(verb: str, *, obj: str = "this movie", negated: bool = False) -> tuple[str, int]:
    """ "I loved this movie." / "I did not enjoy it." (``verb``: a base form in FEELINGS)."""
    past, polarity = {base: (past, p) for base, past, p in FEELINGS}[verb]
    text = f"I did not {verb} {obj}." if negated else f"I {past} {obj}."
    return text, -polarity if negated else polarity


def verdict(index: int, *, negated: bool = False) -> tuple[str, int]:
    plain, negative, polarity = VERDICTS[index]
    return (negative, -polarity) if negated else (plain, polarity)


def rating(score: int) -> tuple[str, int]:
    if 5 <= score <= 6 or not 1 <= score <= 10:
        raise ValueError(f"score {score}: ratings are 1-4 (negative) or 7-10 (positive)")
    return f"I give it {score} out of 10.", 1 if score >= 7 else -1

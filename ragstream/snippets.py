"""Snippets of what matched: a window of a chunk's text around the query's terms, with the
spans of the matches (for the API's ``highlights`` and the CLI's bold).

Terms are the query's words (lower-cased, stop words and one-letter words dropped) and its
verbatim identifiers and quoted phrases (:func:`consumers.milvus.exact_terms`), whose parts
are not marked on their own (``E1234-X`` does not mark the ``E1234`` of ``E1234-Y``). A word of
four letters or more also marks longer words it begins (``install`` → ``installation``),
since that is how people read a match; an identifier marks only itself. Matching ignores
case and never starts or ends inside a word.

    >>> snippet("Submit expenses within 30 days with a receipt.", "expense receipt")
    ('Submit expenses within 30 days with a receipt.', [(7, 15), (38, 45)])
"""

from __future__ import annotations

import re

from consumers.milvus import exact_terms

STOP_WORDS = frozenset("""a an and are as at be by can do does for from how i if in is it its my of on or so that
the their there this to was we what when where which who why will with you your""".split())
_WORD = re.compile(r"\w+")
ELLIPSIS = "…"


def query_terms(query: str) -> list[str]:
    """The terms a snippet marks, longest first (so a phrase wins over its words)."""
    exact = exact_terms(query)
    rest = query
    for term in exact:  # an identifier's parts are not terms of their own (E1234 of E1234-X)
        rest = rest.replace(term, " ")
    words = [w.lower() for w in _WORD.findall(rest) if len(w) > 1 and w.lower() not in STOP_WORDS]
    terms = dict.fromkeys([*exact, *words])
    return sorted(terms, key=lambda t: (-len(t), t))


def match_spans(text: str, query: str) -> list[tuple[int, int]]:
    """Where the query's terms occur in ``text``: sorted, non-overlapping (start, end) spans."""
    spans: list[tuple[int, int]] = []
    for term in query_terms(query):
        tail = r"\w*" if term.isalpha() and len(term) >= 4 else ""
        for m in re.finditer(rf"(?<!\w){re.escape(term)}{tail}(?!\w)", text, re.IGNORECASE):
            if all(m.end() <= s or m.start() >= e for s, e in spans):
                spans.append((m.start(), m.end()))
    return sorted(spans)


def snippet(text: str, query: str, width: int = 240) -> tuple[str, list[tuple[int, int]]]:
    """A window of at most ``width`` characters (plus ellipses) of ``text`` (whitespace
    collapsed) holding as many distinct query terms as one window can, and the spans of the
    matches inside it (offsets into the returned string)."""
    flat = " ".join(text.split())
    spans = match_spans(flat, query)
    if len(flat) <= width:
        return flat, spans
    start = _best_window(flat, spans, width)
    end = min(len(flat), start + width)
    if start > 0:  # begin at a word
        nxt = flat.find(" ", start)
        start = nxt + 1 if 0 <= nxt < start + 20 else start
    if end < len(flat):  # end at a word
        prev = flat.rfind(" ", start, end)
        end = prev if prev > end - 20 else end
    prefix = ELLIPSIS if start > 0 else ""
    suffix = ELLIPSIS if end < len(flat) else ""
    shift = len(prefix) - start
    inside = [(s + shift, e + shift) for s, e in spans if s >= start and e <= end]
    return prefix + flat[start:end] + suffix, inside


def _best_window(flat: str, spans: list[tuple[int, int]], width: int) -> int:
    """The start of the window with the most distinct terms (then the most matches), a
    little context kept before its first match; the text's start when nothing matched."""
    if not spans:
        return 0
    best, best_key = 0, (-1, -1)
    for s, _ in spans:
        start = max(0, s - width // 5)
        inside = [flat[a:b].lower() for a, b in spans if a >= start and b <= start + width]
        key = (len(set(inside)), len(inside))
        if key > best_key:
            best, best_key = start, key
    return best

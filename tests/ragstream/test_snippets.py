"""Snippets: a window around what matched, and the spans of the matches."""

from __future__ import annotations

from ragstream.snippets import match_spans, query_terms, snippet


def marked(text: str, spans: list[tuple[int, int]]) -> list[str]:
    return [text[s:e] for s, e in spans]


def test_short_text_is_whole_and_words_are_marked_case_insensitively():
    text, spans = snippet("Submit EXPENSES within 30 days\nwith a   receipt.", "expenses receipt")
    assert text == "Submit EXPENSES within 30 days with a receipt."
    assert marked(text, spans) == ["EXPENSES", "receipt"]


def test_stop_words_are_not_marked_and_a_stem_marks_longer_words():
    text, spans = snippet("How the installation of a package works", "how to install a package")
    assert marked(text, spans) == ["installation", "package"]


def test_identifiers_match_whole_and_never_inside_a_word():
    text = "Error E1234-X is not E1234-XY nor XE1234-X; retry E1234-X."
    spans = match_spans(text, "E1234-X")
    assert marked(text, spans) == ["E1234-X", "E1234-X"]
    assert query_terms('see "disk quota" E1234-X')[0] == "disk quota"  # the phrase before its words


def test_a_long_text_is_cut_around_the_densest_matches():
    text = "filler words here. " * 40 + "The backup failed with E1234-X on the storage node. " + "more filler. " * 40
    snip, spans = snippet(text, "backup E1234-X storage", width=120)
    assert snip.startswith("…") and snip.endswith("…")
    assert len(snip) <= 122
    assert marked(snip, spans) == ["backup", "E1234-X", "storage"]


def test_no_match_gives_the_start_of_the_text_and_no_spans():
    snip, spans = snippet("alpha beta gamma " * 30, "zeta", width=50)
    assert snip.startswith("alpha beta") and snip.endswith("…") and spans == []

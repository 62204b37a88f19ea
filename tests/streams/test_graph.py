"""The graph stage's extraction: entities from the redacted text and the metadata, links, co-occurrence."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from consumers.graph import GraphDoc, entity_key
from schemas.events import Acl, DocMetadata, DocumentRecord, InlineContent, Op
from streams.graph import GraphStage, blank_placeholders, clean_name, co_occurrences, extract, resolve_links, \
    text_entities

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def record(text: str, *, doc_id: str = "docs:notes/today.md", version: int = 1, author: str | None = None,
           extra: dict[str, str] | None = None, uri: str | None = None, acl: Acl | None = None,
           op: Op = Op.upsert) -> DocumentRecord:
    content = InlineContent.of(text) if op is Op.upsert else None
    return DocumentRecord(source="docs", source_kind="filesystem", doc_id=doc_id, op=op, version=version,
                          changed_at=NOW, content=content, content_hash=content.sha256 if content else None,
                          metadata=DocMetadata(title="Today", author=author, extra=extra or {}, uri=uri),
                          acl=acl or Acl(principals=("group:eng",)))


def test_placeholders_never_become_entities() -> None:
    text = ("[PERSON] met [PERSON:0a1b2c3d4e] at [ORGANIZATION] in [LOCATION]. [PERSON] called ****1234 "
            "and wrote to [EMAIL_ADDRESS].")
    found, skipped = text_entities(text)
    assert found == [] and skipped == 7
    blanked, spans = blank_placeholders("Hi [PERSON], bye")
    assert blanked == "Hi         , bye" and spans == [(3, 11)]


def test_people_organisations_and_places_are_found_next_to_placeholders() -> None:
    found, skipped = text_entities("Ada Lovelace met [PERSON] at Acme Corporation in London.")
    assert {(kind, name) for _, _, kind, name in found} == {
        ("PERSON", "Ada Lovelace"), ("ORGANIZATION", "Acme Corporation"), ("LOCATION", "London")}
    assert skipped == 1


def test_markdown_emphasis_is_not_a_mask() -> None:
    text = "**Ada Lovelace** joined *Acme Corporation*; card ****-****-****-1234, SSN ***-**-6789."
    _, spans = blank_placeholders(text)
    assert [text[s:e] for s, e in spans] == ["****-****-****-1234", "***-**-6789"]


def test_a_span_touching_a_placeholder_is_dropped() -> None:
    def ner(_text: str) -> list[tuple[int, int, str]]:
        return [(0, 14, "PERSON"), (20, 24, "ORGANIZATION")]  # "[PERSON] Smith" as one span

    found, _ = text_entities("[PERSON] Smith from Acme", ner)
    assert [name for *_, name in found] == ["Acme"]


def test_names_are_cleaned() -> None:
    assert clean_name(" the  Acme Corporation's ") == "Acme Corporation"
    assert clean_name("**Ada Lovelace**") == "Ada Lovelace"
    assert clean_name("x") is None and clean_name("1234") is None and clean_name("a*b") is None
    found, _ = text_entities("**Ada Lovelace** met Bob Stone in London.")
    assert "Ada Lovelace" in {name for *_, name in found}


def test_links_name_other_documents_by_id_path_or_url() -> None:
    text = ("See [setup](../guide/setup.md#install), docs:handbook/intro.md, ./today.md, "
            "http://wiki.example.com/docs/notes/other.md and https://elsewhere.example.org/x.md; "
            "at 12:30 note:this is not a link; mailto:a@b.c")
    links = resolve_links(text, "docs:notes/today.md", "docs", "http://wiki.example.com/docs/notes/today.md")
    assert links == ["docs:guide/setup.md", "docs:handbook/intro.md", "docs:notes/other.md"]


def test_co_occurrence_counts_chunks_naming_both() -> None:
    surfaces = {"ada": {"person:ada"}, "acme": {"organization:acme"}, "bob": {"person:bob"}}
    pairs = co_occurrences(["Ada at Acme.", "Ada and Acme again, with Bob.", "Bob alone."], surfaces, {})
    assert pairs == {("organization:acme", "person:ada"): 2, ("organization:acme", "person:bob"): 1,
                     ("person:ada", "person:bob"): 1}


def test_extract_adds_metadata_entities_and_pairs_per_chunk() -> None:
    doc = record("Ada Lovelace works at Acme Corporation.\n\nCharles Babbage lives in London.",
                 author="Grace Hopper", extra={"library": "Engineering"})
    g = extract(doc, doc.content.text, chunks=lambda _d, t: t.split("\n\n"),
                ref_of=lambda _s, name: f"person:{name.lower()}")
    keys = {m.key: m for m in g.mentions}
    assert keys[entity_key("PERSON", "Grace Hopper")].roles == ("author",)
    assert keys[entity_key("PERSON", "Ada Lovelace")].ref == "person:ada lovelace"
    assert keys["source:docs"].type == "SOURCE" and keys["space:docs/engineering"].name == "Engineering"
    ada, acme = entity_key("PERSON", "Ada Lovelace"), entity_key("ORGANIZATION", "Acme Corporation")
    babbage, london = entity_key("PERSON", "Charles Babbage"), entity_key("LOCATION", "London")
    assert set((a, b) for a, b, _ in g.pairs) == {tuple(sorted((ada, acme))), tuple(sorted((babbage, london)))}
    assert g.acl == ("group:eng",) and g.version == 1


def test_an_erased_subject_is_left_out_even_as_author() -> None:
    doc = record("Ada Lovelace wrote this.", author="Ada Lovelace")
    g = extract(doc, doc.content.text, ref_of=lambda _s, name: f"person:{name.lower()}",
                erased=frozenset({"person:ada lovelace"}))
    assert [m.type for m in g.mentions] == ["SOURCE"]


def test_an_unknown_acl_is_nobody() -> None:
    doc = record("Ada Lovelace.", acl=Acl.unknown())
    assert extract(doc, doc.content.text).acl == ()


class FakeStore:
    def __init__(self) -> None:
        self.applied: list[GraphDoc] = []
        self.deleted: list[tuple[str, int, int]] = []
        self.state: dict[str, Any] | None = None

    def doc_state(self, doc_id: str) -> dict[str, Any] | None:
        return self.state

    def apply(self, doc: GraphDoc) -> bool:
        self.applied.append(doc)
        return True

    def delete(self, doc_id: str, version: int, revision: int = 0, source: str = "") -> bool:
        self.deleted.append((doc_id, version, revision))
        return True


def test_the_stage_applies_upserts_and_deletes_and_skips_stale_versions() -> None:
    from ragstream.blobs import BlobStore
    from pathlib import Path

    store = FakeStore()
    stage = GraphStage(store, BlobStore(Path("/nonexistent")))  # type: ignore[arg-type]
    assert stage.process(record("Ada Lovelace met Bob Stone.", version=2)) is True
    assert store.applied[0].version == 2
    store.state = {"version": 2, "revision": 0, "stub": False, "deleted": False}
    assert stage.process(record("Older text.", version=1)) is False and len(store.applied) == 1
    assert stage.process(record("", version=3, op=Op.delete)) is True
    assert store.deleted == [("docs:notes/today.md", 3, 0)]

"""The graph stage: rag.documents → the knowledge graph (Neo4j, :mod:`consumers.graph`).

It reads the compliant documents — the text as the compliance stage left it, redacted — and
writes, per document version, what the document contributes:

* **entities from the text**: people, organisations and places found by the named-entity
  model the PII detection uses (:mod:`streams.ner`, spaCy ``en_core_web_sm``);
* **entities from the metadata**: the author (a person; only when the policy kept it, by
  default it is minimised away), the source, and the space (``space``, ``site``, ``library``
  or ``bucket`` in the metadata's extras);
* **links**: other documents the text names — a doc_id (``<source>:<path>``), a relative path
  or Markdown link target (resolved against this document's path, same source), or a URL
  under the same base as this document's own URI;
* **co-occurrence**: two entities named in the same chunk (the pipeline's chunker), counted
  per chunk, with this document as evidence.

Redaction placeholders (``[PERSON]``, ``[EMAIL_ADDRESS:1a2b3c4d5e]``, masked values such as
``****1234``) are blanked before the model reads the text, and a span touching one is
dropped: a placeholder never becomes an entity. A person whose subject ref (computed as
compliance does, with the tenant's key) is on the erased-subjects list is left out too,
so an author kept in metadata cannot bring an erased subject back.

The version guard is the graph's own (the document node's version and revision, checked in
the write transaction, as the index does with its registry): older versions are dropped.
Permission-only changes arrive on ``rag.acl`` (``apply_acl``), as for the index.
"""

from __future__ import annotations

import posixpath
import re
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Iterable

from consumers.graph import GraphDoc, GraphStore, Mention, entity_key, normalize_name
from ragstream.logging import get_logger
from ragstream.metrics import GRAPH_DOCS_APPLIED, GRAPH_MENTIONS_WRITTEN, GRAPH_PLACEHOLDERS_SKIPPED
from schemas import topics
from schemas.events import AclChange, DocumentRecord, Op

if TYPE_CHECKING:
    from ragstream.blobs import BlobStore
    from ragstream.settings import Settings
    from streams.chunking import Chunker

log = get_logger(__name__)

#: The model's types the graph keeps (NRP — nationalities, religious and political groups — is not kept).
TEXT_TYPES = ("PERSON", "ORGANIZATION", "LOCATION")
#: Metadata extras naming the space a document lives in, first found wins.
SPACE_KEYS = ("space", "site", "library", "bucket")
MAX_MENTIONS = 500  # per document: the most frequent
MAX_PER_CHUNK = 25  # entities per chunk taken into co-occurrence pairs (the most frequent)

#: What the compliance stage writes instead of a value: ``[TYPE]``, ``[TYPE:<hex>]`` and masks
#: (asterisks for characters, separators kept; the last four characters kept only after at
#: least four asterisks: ``***-**-1234``), but not Markdown emphasis (``**Acme**``).
PLACEHOLDER = re.compile(r"\[[A-Z][A-Z0-9_]*(?::[0-9a-f]{4,64})?\]"
                         r"|(?<![\w*])(?:(?:\*[-./@() ]?){4,}\w{1,4}|(?:\*[-./@() ]?){2,}(?!\w))(?![\w*])")
_EDGE = re.compile(r"^[\W_]+|[\W_]+$")
_POSSESSIVE = re.compile(r"['’]s$")
_SCHEMES = frozenset({"http", "https", "ftp", "file", "mailto", "urn", "data", "tel", "javascript", "git", "ssh"})
_MD_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_URL = re.compile(r"\b(?:https?|file)://[^\s<>\"'`)\]]+")
_DOC_REF = re.compile(r"(?<![\w/.:@-])([a-z0-9][a-z0-9_.-]{0,63}):(?!//)([^\s<>\"'`)\]]+)")
_PATH = re.compile(r"(?<![\w/:.@-])((?:\.{1,2}/|/)?(?:[\w.-]+/)*[\w-][\w.-]*\.(?:md|markdown|txt|rst|adoc|html?|pdf|docx))"
                   r"(?![\w/])")


# -- extraction (plain functions) --------------------------------------------------------------


def blank_placeholders(text: str) -> tuple[str, list[tuple[int, int]]]:
    """``text`` with every placeholder replaced by spaces (offsets kept), and their spans."""
    spans = [m.span() for m in PLACEHOLDER.finditer(text)]
    if not spans:
        return text, []
    out, pos = [], 0
    for s, e in spans:
        out += [text[pos:s], " " * (e - s)]
        pos = e
    out.append(text[pos:])
    return "".join(out), spans


def clean_name(raw: str) -> str | None:
    """A usable entity name, or None (too short or long, no letters, a placeholder's remains)."""
    name = _POSSESSIVE.sub("", _EDGE.sub("", " ".join(raw.split())))  # "**Acme's**" → "Acme"
    if name.lower().startswith("the "):
        name = name[4:]
    name = _EDGE.sub("", name)
    if any(c in name for c in "[]*@|<>{}"):  # a placeholder's or a mask's remains inside
        return None
    if not 2 <= len(name) <= 100 or not any(c.isalpha() for c in name) or len(name.split()) > 8:
        return None
    return name


def text_entities(text: str, ner: Callable[[str], Iterable[tuple[int, int, str]]] | None = None
                  ) -> tuple[list[tuple[int, int, str, str]], int]:
    """(start, end, type, name) of the entities in redacted ``text``, and how many
    placeholders were kept out."""
    if ner is None:
        from streams.ner import entities as ner
    clean, holes = blank_placeholders(text)
    found = []
    for start, end, kind in ner(clean):
        if kind not in TEXT_TYPES:
            continue
        if any(s < end + 1 and start - 1 < e for s, e in holes):  # touches a placeholder
            continue
        name = clean_name(text[start:end])
        if name is not None:
            found.append((start, end, kind, name))
    return found, len(holes)


def _native(doc_id: str, source: str) -> str:
    return doc_id[len(source) + 1:] if doc_id.startswith(f"{source}:") else doc_id


def resolve_links(text: str, doc_id: str, source: str, uri: str | None) -> list[str]:
    """doc_ids of other documents that ``text`` names (see the module docstring)."""
    native = _native(doc_id, source)
    here = posixpath.dirname(native)
    base = uri[: -len(native)] if uri and native and uri.endswith(native) and "://" in uri else None
    out: set[str] = set()

    def path_target(target: str) -> None:
        target = target.split("#", 1)[0].split("?", 1)[0]
        if not target or target.startswith("//"):
            return
        from urllib.parse import unquote

        target = unquote(target)
        resolved = posixpath.normpath(target.lstrip("/") if target.startswith("/") else posixpath.join(here, target))
        if resolved not in (".", "") and not resolved.startswith("../") and resolved != "..":
            out.add(f"{source}:{resolved}")

    def url_target(url: str) -> None:
        url = url.rstrip(".,;:!?")
        if base and url.startswith(base) and len(url) > len(base):
            path_target("/" + url[len(base):])

    for m in _MD_LINK.finditer(text):
        target = m.group(1)
        scheme = target.split(":", 1)[0].lower() if ":" in target else ""
        if scheme in ("http", "https", "file"):
            url_target(target)
        elif not scheme or "/" in scheme:
            path_target(target)
    for m in _URL.finditer(text):
        url_target(m.group(0))
    for m in _DOC_REF.finditer(text):
        src, rest = m.group(1), m.group(2).rstrip(".,;:!?")
        if src in _SCHEMES or not rest:
            continue
        if src == source or "/" in rest or "." in rest:
            out.add(f"{src}:{rest}")
    for m in _PATH.finditer(text):
        path_target(m.group(1))
    out.discard(doc_id)
    return sorted(out)


def co_occurrences(chunks: Iterable[str], surfaces: dict[str, set[str]], weight: dict[str, int]
                   ) -> dict[tuple[str, str], int]:
    """(key a, key b) → chunks naming both, from each chunk's text and the entities'
    surface forms (casefolded surface → keys)."""
    if not surfaces:
        return {}
    pattern = re.compile(r"(?<!\w)(" + "|".join(re.escape(s) for s in sorted(surfaces, key=len, reverse=True))
                         + r")(?!\w)", re.IGNORECASE)
    pairs: Counter[tuple[str, str]] = Counter()
    for chunk in chunks:
        keys: set[str] = set()
        for m in pattern.finditer(chunk):
            keys |= surfaces.get(m.group(1).casefold(), set())
        top = sorted(keys, key=lambda k: (-weight.get(k, 0), k))[:MAX_PER_CHUNK]
        top.sort()
        for i, a in enumerate(top):
            for b in top[i + 1:]:
                pairs[(a, b)] += 1
    return dict(pairs)


def extract(doc: DocumentRecord, text: str, *, chunks: Callable[[str, str], list[str]] | None = None,
            ref_of: Callable[[str, str], str | None] = lambda _source, _name: None,
            erased: frozenset[str] = frozenset(),
            ner: Callable[[str], Iterable[tuple[int, int, str]]] | None = None) -> GraphDoc:
    """What ``doc`` (an upsert, its redacted ``text``) contributes to the graph."""
    found, placeholders = text_entities(text, ner)
    GRAPH_PLACEHOLDERS_SKIPPED.inc(placeholders)
    counts: Counter[str] = Counter()
    info: dict[str, tuple[str, str]] = {}
    roles: dict[str, set[str]] = {}
    surfaces: dict[str, set[str]] = {}
    refs: dict[str, str | None] = {}

    def add(kind: str, name: str, role: str) -> None:
        key = entity_key(kind, name)
        if key not in refs:
            refs[key] = ref_of(doc.source, name) if kind == "PERSON" else None
        if refs[key] is not None and refs[key] in erased:
            return  # an erased subject never comes back
        info.setdefault(key, (kind, name))
        roles.setdefault(key, set()).add(role)
        if role == "text":
            counts[key] += 1
            surfaces.setdefault(name.casefold(), set()).add(key)

    for start, end, kind, name in found:
        add(kind, name, "text")
    author = clean_name(doc.metadata.author or "")
    if author and not PLACEHOLDER.search(doc.metadata.author or ""):
        add("PERSON", author, "author")
    add("SOURCE", doc.source, "source")
    space = next((doc.metadata.extra[k] for k in SPACE_KEYS if doc.metadata.extra.get(k)), None)
    if space:
        key = f"space:{normalize_name(doc.source)}/{normalize_name(space)}"
        info.setdefault(key, ("SPACE", space))
        roles.setdefault(key, set()).add("space")
        refs.setdefault(key, None)
    keep = sorted(info, key=lambda k: (-counts.get(k, 0), k))[:MAX_MENTIONS]
    mentions = tuple(Mention(key=k, type=info[k][0], name=info[k][1], count=max(1, counts.get(k, 0)),
                             roles=tuple(sorted(roles[k])), ref=refs.get(k)) for k in sorted(keep))
    kept = set(keep)
    surfaces = {s: ks & kept for s, ks in surfaces.items() if ks & kept}
    chunk_texts = chunks(doc.doc_id, text) if chunks is not None else [text]
    pairs = co_occurrences(chunk_texts, surfaces, dict(counts))
    acl = tuple(sorted(doc.acl.principals)) if doc.acl.known else ()
    return GraphDoc(doc_id=doc.doc_id, source=doc.source, version=doc.version, revision=doc.revision, acl=acl,
                    title=doc.metadata.title or "", uri=doc.metadata.uri or "", mentions=mentions,
                    links=tuple(resolve_links(text, doc.doc_id, doc.source, doc.metadata.uri)),
                    pairs=tuple((a, b, n) for (a, b), n in sorted(pairs.items())))


# -- the stage -------------------------------------------------------------------------------------


class GraphStage:
    """rag.documents → Neo4j: one transaction per document version (a sink: ``process`` returns
    whether it applied the version; False for a stale or redelivered one)."""

    name = "graph"
    input_topic = topics.DOCUMENTS
    contract = DocumentRecord

    def __init__(self, store: GraphStore, blobs: "BlobStore", *, chunker: "Chunker | None" = None,
                 ref_of: Callable[[str, str], str | None] = lambda _source, _name: None,
                 erased: Callable[[], frozenset[str]] | None = None,
                 ner: Callable[[str], Iterable[tuple[int, int, str]]] | None = None) -> None:
        self.store = store
        self.blobs = blobs
        self.chunker = chunker
        self.ref_of = ref_of
        self.erased = erased or (lambda: frozenset())
        self.ner = ner

    @classmethod
    def from_settings(cls, settings: "Settings") -> "GraphStage":
        from ragstream.blobs import BlobStore
        from streams.chunking import Chunker
        from streams.dsr import ErasedSubjects
        from streams.embedding import token_counter
        from streams.policy import KeyRing, load_policy, subject_ref

        policy, keys = load_policy(settings.policy_file), KeyRing(settings.home / "keys")

        def ref_of(source: str, name: str) -> str | None:
            return subject_ref(keys.key(policy.for_source(source).tenant), "PERSON", name)

        store = GraphStore.from_settings(settings)
        store.ensure()
        chunker = Chunker(count=token_counter(settings), max_tokens=settings.chunk_max_tokens,
                          overlap_tokens=settings.chunk_overlap_tokens)
        return cls(store, BlobStore(settings.blob_dir), chunker=chunker, ref_of=ref_of,
                   erased=ErasedSubjects(settings).start())

    def _chunks(self, doc_id: str, text: str) -> list[str]:
        if self.chunker is None:
            return [text]
        return [c.text for c in self.chunker.chunk(doc_id, text)]

    def text(self, doc: DocumentRecord) -> str:
        from streams.stages import content_text

        return content_text(self.blobs, doc)

    def process(self, doc: DocumentRecord) -> bool:
        if doc.op is Op.delete:
            applied = self.store.delete(doc.doc_id, doc.version, doc.revision, doc.source)
            if applied:
                GRAPH_DOCS_APPLIED.labels("delete").inc()
            return applied
        state = self.store.doc_state(doc.doc_id)  # cheap early guard: skip extraction for a stale version
        if GraphStore._stale(state, doc.version, doc.revision):
            return False
        graph_doc = extract(doc, self.text(doc), chunks=self._chunks, ref_of=self.ref_of, erased=self.erased(),
                            ner=self.ner)
        applied = self.store.apply(graph_doc)  # guarded again inside its transaction
        if applied:
            GRAPH_DOCS_APPLIED.labels("upsert").inc()
            for m in graph_doc.mentions:
                GRAPH_MENTIONS_WRITTEN.labels(m.type).inc()
        return applied

    def apply_acl(self, change: AclChange) -> bool:
        principals = change.acl.principals if change.acl.known else ()
        return self.store.apply_acl(change.doc_id, change.version, principals)


# -- erasure (streams.dsr calls these) ------------------------------------------------------------


def graph_contributions(settings: "Settings", refs: Iterable[str]) -> dict[str, int]:
    """The subjects' entities, their mentions and co-occurrences in the graph (zeros when the
    graph is not enabled)."""
    if not settings.graph_enabled:
        return {"entities": 0, "mentions": 0, "relations": 0}
    store = GraphStore.from_settings(settings)
    try:
        return store.subject_contributions(refs)
    finally:
        store.close()


def erase_from_graph(settings: "Settings", refs: Iterable[str], before: dict[str, int], *,
                     wait_s: float = 60.0) -> dict[str, Any]:
    """After an erasure's rewrites: give the graph stage up to ``wait_s`` to apply them (each
    rewritten version replaces the document's contributions, without the subject), then
    remove whatever of the subjects is still there (entities with every relation they take
    part in). The receipt's graph part: what was there before, what had to be removed
    directly, what is left."""
    import time

    out: dict[str, Any] = {"enabled": settings.graph_enabled, **{f"{k}_before": v for k, v in before.items()},
                           "removed_directly": 0, "after": 0}
    if not settings.graph_enabled:
        return out
    refs = sorted(set(refs))
    store = GraphStore.from_settings(settings)
    try:
        deadline = time.monotonic() + wait_s
        while sum(store.subject_contributions(refs).values()) and time.monotonic() < deadline:
            time.sleep(1.0)
        out["removed_directly"] = store.erase_subjects(refs)["entities"]
        out["after"] = sum(store.subject_contributions(refs).values())
    finally:
        store.close()
    return out

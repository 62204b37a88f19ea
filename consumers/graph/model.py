"""What one document version contributes to the graph: plain data, no database."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Entity types the graph holds. PERSON, ORGANIZATION and LOCATION come from the text (the
#: named-entity model); SOURCE and SPACE from the document's metadata (an author is a PERSON).
ENTITY_TYPES = ("PERSON", "ORGANIZATION", "LOCATION", "SOURCE", "SPACE")
#: How a document mentions an entity: in its text, as its author, as its source or space.
ROLES = ("text", "author", "source", "space")


def normalize_name(name: str) -> str:
    """The comparable form of a name: whitespace collapsed, case folded."""
    return " ".join(name.split()).casefold()


def entity_key(kind: str, name: str) -> str:
    """An entity's identity: its type and normalised name (``person:ada lovelace``)."""
    return f"{kind.lower()}:{normalize_name(name)}"


@dataclass(frozen=True)
class Mention:
    """A document mentions an entity ``count`` times (text occurrences; at least 1)."""

    key: str
    type: str
    name: str
    count: int
    roles: tuple[str, ...] = ("text",)
    #: The pseudonymous data-subject ref of a PERSON (``person:<hmac>``, as compliance
    #: computes it): what an erasure matches. None for other types, or without a key.
    ref: str | None = None

    def as_param(self) -> dict[str, object]:
        return {"key": self.key, "type": self.type, "name": self.name, "name_lc": normalize_name(self.name),
                "count": self.count, "roles": list(self.roles), "ref": self.ref}


@dataclass(frozen=True)
class GraphDoc:
    """Everything one document version contributes; applying it replaces the previous one's."""

    doc_id: str
    source: str
    version: int
    revision: int = 0
    #: Principals that may read the document; empty for an unknown ACL (nobody).
    acl: tuple[str, ...] = ()
    title: str = ""
    uri: str = ""
    mentions: tuple[Mention, ...] = ()
    #: doc_ids this document's text points at (other documents only).
    links: tuple[str, ...] = ()
    #: Entity pairs (key a < key b) co-occurring in a chunk, and in how many chunks.
    pairs: tuple[tuple[str, str, int], ...] = field(default=())

    def __post_init__(self) -> None:
        keys = {m.key for m in self.mentions}
        if len(keys) != len(self.mentions):
            raise ValueError(f"{self.doc_id}: one mention per entity")
        for a, b, n in self.pairs:
            if not (a < b and a in keys and b in keys and n > 0):
                raise ValueError(f"{self.doc_id}: pair {a!r}-{b!r} must join two mentioned entities in key order")

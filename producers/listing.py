"""The "full listing" capability of a source: what it holds now, document by document.

``ragstream verify`` compares a full listing with the index. A source that can list itself
implements :class:`FullListing`; issue 13's connector contract makes this one of its
capabilities. Each entry is either a :class:`ListedDocument` (the source holds it and it
should be searchable) or an :class:`Excluded` document (the source holds it but it is, on
purpose, not indexed: skipped with a reason, or dead-lettered at ingestion).

Example::

    for entry in source.full_listing():
        if isinstance(entry, ListedDocument):
            print(entry.doc_id, entry.version, entry.acl)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol, runtime_checkable


@dataclass(frozen=True)
class ListedDocument:
    doc_id: str
    #: The version the source last published for this document; None if it never did.
    version: int | None
    #: The principals the source grants read access to, as published (fail closed: () = nobody).
    acl: tuple[str, ...]
    #: The source changed since it last published this document (content or permissions):
    #: the index cannot be current until the source publishes again.
    changed_since_published: bool = False


@dataclass(frozen=True)
class Excluded:
    doc_id: str
    #: ``skipped`` (too large, unsupported, unreadable) or ``dead_lettered`` (ingestion failed).
    kind: str
    reason: str


@runtime_checkable
class FullListing(Protocol):
    source_id: str

    def full_listing(self) -> Iterator[ListedDocument | Excluded]:
        """Every document the source holds now, by reading the source (not its cursor)."""
        ...

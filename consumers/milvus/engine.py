"""What the Milvus engine behind a URI can do, read from its version (a part of MilvusIndex).

Index and scalar-index types, and full-text search, differ by server version:

============================  ==================  =====================  ===================
engine (``get_server_version``)  VARCHAR scalar index  BM25 ``Function``     ``sparse`` field
============================  ==================  =====================  ===================
milvus-lite 3 (``milvus_lite-3.x``)  ``INVERTED``      yes                    yes
Milvus >= 2.5 (``v2.5.x``)     ``INVERTED``         yes                    yes
Milvus 2.4                     ``INVERTED``         no                     (not created)
Milvus 2.3 (``v2.3.5-lite``:   ``Trie``             no                     (not created)
the ``milvus`` PyPI package)
============================  ==================  =====================  ===================

Milvus 2.3 refuses ``INVERTED`` ("index type not match: expected=Trie") and has no BM25
functions: it creates a collection with an analyzed ``text`` and a ``sparse`` field but then
refuses the sparse index ("create index on 104 field is not supported"), leaving a half-made
collection behind. The choice is therefore made *before* creating anything, from the version,
not by trying and reading error messages. Milvus 2.3 also refuses infix ``like`` patterns
(:attr:`Engine.infix_like`): there, data-subject queries by subject ref fail as invalid input. An engine without BM25 gets the dense-only schema
(:meth:`MilvusIndex._create_dense_only`) and searches fall back to dense with a logged warning
(:meth:`MilvusIndex.effective_mode`), the documented fallback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Engine:
    """An engine's name and version, and what follows from them."""

    name: str  # "milvus-lite" or "milvus"
    version: tuple[int, int, int]
    raw: str  # what the server said

    @property
    def full_text(self) -> bool:
        """BM25 functions (``FunctionType.BM25``, analyzers, ``SPARSE_INVERTED_INDEX`` with metric BM25)."""
        return self.name == "milvus-lite" or self.version >= (2, 5, 0)

    @property
    def varchar_index(self) -> str | None:
        """The scalar index type for VARCHAR fields filtered by equality or ``in`` (``acl_key``, ``doc_id``)."""
        if self.name == "milvus-lite" or self.version >= (2, 4, 0):
            return "INVERTED"
        return "Trie"

    @property
    def infix_like(self) -> bool:
        """``like "%x%"`` filters. Milvus 2.3 parses only prefix patterns (``x%``) and refuses the
        rest ("unsupported pattern ... only prefix pattern match"): the subject index of
        data-subject requests (``subjects like "%|person:…|%"``), the ``acl like`` filter of a
        caller with very many ACL sets and the verbatim leg's fallback scan need >= 2.4."""
        return self.name == "milvus-lite" or self.version >= (2, 4, 0)

    def __str__(self) -> str:
        return f"{self.name} {'.'.join(map(str, self.version))}"


def parse_version(raw: str) -> Engine:
    """``milvus_lite-3.2.2`` → milvus-lite 3.2.2; ``v2.3.5-lite`` / ``v2.5.4`` / ``2.6.0`` → milvus.

    An unparsable answer is taken as the newest known server (the schema then asks for the
    most; a server that cannot do it refuses loudly at collection creation)."""
    text = (raw or "").strip()
    name = "milvus-lite" if text.lower().startswith("milvus_lite") or text.lower().startswith("milvus-lite") \
        else "milvus"
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if m is None:
        return Engine(name, (9, 9, 9), text)
    return Engine(name, (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)), text)

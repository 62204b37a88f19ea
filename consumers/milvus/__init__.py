"""The Milvus sink and search: one collection of chunks, read through an alias.

    schema.py   connection, limits, field names, errors
    acl.py      ACL encoding and filters, the in-memory dictionary of ACL sets
    search.py   hits, filters, rank fusion, the search legs (SearchMixin)
    writer.py   writes: a document version replaces its previous rows (WriterMixin)
    index.py    MilvusIndex: collections, document registry, ACL sets, DSR queries


Row = one chunk of one document version: ``chunk_id`` (primary key, content-addressed),
``doc_id``, ``source``, ``source_kind``, ``version``, ``heading``, ``title``, ``uri``,
``text``, ``acl``, ``classification``, ``subjects`` (the document's pseudonymous subject
refs, ``|person:ab12…|``: the subject index data-subject requests query), ``retain_until``
(epoch seconds, 0 = kept; the retention sweep's query), ``modified`` (the document's
modification time at its source, epoch seconds, 0 = unknown; the date filter), ``model``,
the vector, and ``sparse`` (BM25 of ``text``, computed by Milvus; see "Hybrid search").

ACLs are dictionary-encoded. A row stores its document's principal set as one VARCHAR,
``acl`` = ``|group:eng|user:alice|`` (sorted, for reading back), and ``acl_key`` = a 128-bit
hash of that string, scalar-INVERTED-indexed. Each distinct set is stored once in
``<collection>_acls`` (written before any row that uses it). A searching process holds those
sets in memory (:class:`AclSets`: principal → keys of the sets naming it; sets registered
later are fetched every ``acl_refresh_s``), so a search is one Milvus call filtered by
``acl_key in [...]`` — an index lookup inside Milvus (pre-filter, not post-filter).

Why: milvus-lite 3 evaluates ``acl like "%|p|%"`` by scanning every row, ~7 ms per
principal per 100k rows (a caller in 20 groups paid ~150 ms on top of the search); an
ARRAY/JSON ``contains_any`` costs ~40x more (../shared/notes/local-stack.md); resolving the
keys with a Milvus query per search would add 30-60 ms (a query's fixed cost). A caller
whose principals name so many sets that the key list would cost more than the ``like``
scan gets the ``like`` filter instead; both are exact.

Security of the cache: a set never changes (its key is its hash), and a permission change
gives the document's rows a new set and key. A stale dictionary can therefore only lack
keys — hide a document whose set is brand new for up to ``acl_refresh_s`` — never reveal
one. Sets registered by this process are known at once.

Fail closed: a caller with no principals is denied before Milvus is asked (an empty OR
must never match everything); an unknown ACL is stored as ``""`` with key ``""``, which no
set resolves to.

Selective callers: milvus-lite's HNSW applies the filter inside the graph walk, which finds
few of the visible chunks, and not the nearest, when they are rare (measured: 1.6 of 10
results for a caller who may see 50 of 100k chunks, recall@10 0.49 for one who sees 2%).
The beam (``ef``) therefore grows as the caller's visible share shrinks (see
:data:`EF_PER_SELECTIVITY`), and a search that still comes back short is repeated at
:data:`EF_MAX`. A caller who may see much (at least ``schema.POSTFILTER_MIN_SHARE``) gets the
unfiltered walk instead, their own rows kept in this process (post-filter), and the filtered
search when too few remain. Both choices read :meth:`AclSets.share`: the caller's share of
the sets at first, then of the rows their unfiltered walks saw (one set may hold most rows).

Search reads the alias (``RAGSTREAM_COLLECTION``); a reindex fills a new collection and
moves the alias, so readers never see a half-built index.

Hybrid search (``mode``): a **dense** leg (the HNSW walk above) and a **lexical** leg — BM25
over ``text``, computed by Milvus itself: ``text`` is analyzed (:data:`ANALYZER`) and a BM25
``Function`` fills the ``sparse`` field on every insert and upsert, so writers never write
it (and must not: :meth:`MilvusIndex.writable_fields`). The legs' candidates are fused by
reciprocal rank (:func:`rrf`), in Python rather than with ``hybrid_search`` (the two legs run
at once, the dense one in a worker thread): the dense leg
keeps its widen-the-beam retry and a third, **exact** leg can join — identifiers in the
query (``E1234-X``, ``JIRA-4711``, ``4.2.1``, anything in double quotes) are looked up
verbatim (first among the chunks the legs found, then among the VERBATIM_CANDIDATES chunks
BM25 ranks best for the identifier alone — an index lookup — and a ``text like "%…%"`` scan
of every visible chunk only when none of those holds it as written), because the analyzer splits ``E1234-X``
into ``e1234`` and ``x`` and BM25 then also ranks ``E1234-Y``. Every leg carries the same ACL expression from
:meth:`MilvusIndex.search_plan`; filters (source, classification, modified time) are ANDed
to it. A collection made before hybrid search (no ``sparse`` field) is searched dense-only
with a logged warning (:attr:`MilvusIndex.lexical`); an engine without BM25 functions
(Milvus < 2.5) gets such a collection from :meth:`MilvusIndex.create`, with the same warning.
"""

from consumers.milvus.acl import (
    AclSets, acl_filter, acl_key, check_acl, decode_acl, encode_acl, escape_like, escape_literal, keys_filter,
    stored_acl, subjects_filter,
)
from consumers.milvus.index import MilvusIndex
from consumers.milvus.schema import (
    DEFAULT_MODE, MODES, REQUIRED_FIELDS, IndexInputError, IndexSchemaError, TransientIndexError, milvus_client,
)
from consumers.milvus.search import Hit, SearchFilters, exact_terms, rrf

__all__ = [
    "AclSets", "DEFAULT_MODE", "Hit", "IndexInputError", "IndexSchemaError", "MODES", "MilvusIndex", "REQUIRED_FIELDS",
    "SearchFilters", "TransientIndexError", "acl_filter", "acl_key", "check_acl", "decode_acl", "encode_acl",
    "escape_like", "escape_literal", "exact_terms", "keys_filter", "milvus_client", "rrf", "stored_acl",
    "subjects_filter",
]

"""PostgreSQL source: the rows of the tables a CDC mapping names, as documents.

The changes themselves do **not** come from this package: Debezium on Kafka Connect reads
them from the write-ahead log and the ``normalize`` stage turns them into change events
(docs/cdc.md). This connector exists so that the runtime can treat the database like any
other source — ``ragstream verify`` compares what the tables hold now with the index — and
it declares only what it can do:

* **full listing** (``full_listing``): every row of every mapped table, read in one
  read-only snapshot, mapped by the same code as normalize (:mod:`ragstream.cdc_mapping`,
  :class:`~ragstream.cdc_mapping.RowMapper`): the same doc_id
  (``<source>:<schema>.<table>/<key>``) and the same readers (an ACL column, a join table
  read in the same snapshot, or fixed principals; none or NULL → nobody). A row the mapping
  cannot handle (a NULL key, an invalid principal, a NULL column the uri template needs) is
  listed as excluded (``dead_lettered``) with the reason normalize dead-letters it with.
  The listing carries **no version**: normalize's versions are the LSNs of the records it
  read, which the table does not keep; ``verify`` then checks presence, chunk ids and ACL
  but not the version (a lost UPDATE of a row's text is not detected this way).
* **sync publishes nothing** (no ``incremental``, ``deletes`` or ``permission_sync``):
  inserts, updates, permission changes and deletes arrive through Debezium. ``reread``
  (DLQ replay of ``ingest``, DSR rectification) refuses with the way to do it instead:
  correct the row in the database, and the change flows; replay ``rag.dlq.normalize``.

The cursor (``<home>/sources/<source>.json``) records the mapping file (its identity); it
holds no items. ``ragstream connect apply`` (and ``connect up``) writes it with
:meth:`PostgresSource.register`; the database is the mapping's ``[lookup] dsn`` or
``RAGSTREAM_CDC_DSN``.
"""

from producers.postgres.source import PostgresSource

CONNECTOR = PostgresSource

__all__ = ["CONNECTOR", "PostgresSource"]

"""File-system producer: a folder's files as change events on ``rag.changes``.

Two ways in, one code path (:meth:`FilesystemSource.sync`):

* a **reconciliation scan** at start-up compares the folder with the persisted scan state
  (path → sha256, size, mtime, version), so changes made while ragstream was down —
  deletes and renames included — are published;
* **watchdog** reports live changes; bursts (an editor's save dance) are debounced and
  synced together.

The state is saved only after the broker acknowledged the events it records, so a crash
can repeat an event (harmless downstream) but never lose one. A rename is a delete of the
old ``doc_id`` and an upsert of the new one.

Unsupported or unreadable files are skipped with a logged, counted reason, and so are
files above ``RAGSTREAM_MAX_DOCUMENT_BYTES`` (not even read) and texts above
``RAGSTREAM_MAX_TEXT_BYTES``; a supported file that cannot be read (a corrupt PDF) is
dead-lettered to ``rag.dlq.ingest`` so that ``ragstream dlq replay ingest`` retries it once
fixed. Neither stops the watcher. The reasons stay in the scan state (``skipped``), where
``ragstream verify`` reads them. A file that was indexed and is now skipped is deleted from
the index: what is searchable is never older than what the source holds.

``doc_id`` is ``<source_id>:<relative path>``. A path with control characters (a newline
in a file name) cannot be an id as it is; it becomes ``<source_id>:/<percent-encoded
path>`` — a relative path never starts with ``/``, so the two forms cannot collide.

ACLs come from ownership and mode bits: ``user:<owner>`` if the owner may read,
``group:<group>`` if the group may; "others may read" maps to ``public`` only when
``world_readable_is_public`` is set. A file nobody may read gets an empty ACL: fail closed.
"""

from producers.filesystem.source import DEFAULT_EXCLUDE, FilesystemSource, group_name, user_name

CONNECTOR = FilesystemSource

__all__ = ["CONNECTOR", "DEFAULT_EXCLUDE", "FilesystemSource", "group_name", "user_name"]

"""S3 source: the objects of a bucket (under a prefix) as change events on ``rag.changes``.

Two ways in, one code path (:meth:`S3Source.sync`):

* a **reconciliation pass** lists the bucket (``ListObjectsV2``, or ``ListObjectVersions``
  on a versioned bucket) page by page and compares each object's ETag with the cursor: an
  unchanged object is not downloaded; a key that is no longer listed is published as
  deleted. The cursor is committed after each page, with the last key the page covered, so
  a pass that is interrupted resumes after it (``StartAfter``) instead of listing again; a
  position that does not fit (another prefix or selection, or garbage) starts the pass over,
  which republishes nothing unchanged;
* **S3 → SQS bucket notifications** (``sqs_queue_url``) carry live changes: each batch of
  messages is synced by key (the object is looked at as it is now, so order and duplicates
  do not matter) and the messages are deleted only once the broker acknowledged every event
  they caused. ``watch`` reconciles first and every ``reconcile_interval_s`` anyway, since
  notifications can be lost or expire.

An object's content is named by its ETag (and, on a versioned bucket, read by its version id,
so the bytes are those of the version that was listed); rewritten with the same bytes (a new
ETag from a multipart upload, a new version) nothing is published. A rename is a copy and a
delete: a new ``doc_id`` and a deleted one.

Text comes from :mod:`producers.extract`. Objects of a type that is not indexed (not even
downloaded), above ``RAGSTREAM_MAX_DOCUMENT_BYTES`` or whose text is above
``RAGSTREAM_MAX_TEXT_BYTES`` are skipped with the reason kept in the cursor (``verify``
reads it); a supported object that cannot be read (a corrupt PDF) is dead-lettered to
``rag.dlq.ingest``, and ``ragstream dlq replay ingest`` reads it again from the bucket.

``doc_id`` is ``<source_id>:<key>``. ACLs come from the configuration (``acl`` rules on key
prefixes and tags, ``acl_principals_tag``): an object no rule matches has an empty ACL —
fail closed. A tag or mapping change publishes only the new ACL to ``rag.acl``.

Throttling (``SlowDown``, 503) and connection errors are retried within
``RAGSTREAM_RETRY_BUDGET_S``; refused credentials raise a ConnectorError that says which
and what to check (see :mod:`producers.s3.client`).
"""

from producers.s3.config import AclRule, S3Config
from producers.s3.source import S3Object, S3Source

CONNECTOR = S3Source

__all__ = ["CONNECTOR", "AclRule", "S3Config", "S3Object", "S3Source"]

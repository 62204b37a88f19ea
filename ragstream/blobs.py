"""Claim-check blob store: large texts travel through Kafka as a reference.

Content-addressed files under ``RAGSTREAM_HOME/blobs/<sha[:2]>/<sha>``: writing the same
text twice stores it once, and a reference can be verified by hashing what it points to.
The store is a local directory (``file://``); a shared file system or an object store
behind the same two calls serves several machines.

Blobs of unredacted content are raw PII at rest: they follow the raw-content retention
(``RAGSTREAM_RAW_RETENTION_DAYS``) — see :meth:`BlobStore.expire`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

from schemas.events import BlobRef


class BlobError(Exception):
    """A reference that cannot be resolved (missing, tampered, unsupported scheme)."""


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, text: str) -> BlobRef:
        return self.put_bytes(text.encode("utf-8"))

    def put_bytes(self, data: bytes, namespace: str = "") -> BlobRef:
        """Store ``data`` (once: content-addressed) under an optional namespace folder
        (``claims`` for whole messages too large for their topic)."""
        sha = hashlib.sha256(data).hexdigest()
        path = (self.root / namespace if namespace else self.root) / sha[:2] / sha
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)  # atomic: a reader never sees half a blob
        return BlobRef(uri=path.as_uri(), sha256=sha, size=len(data))

    def get(self, ref: BlobRef) -> str:
        data = self.get_bytes(ref)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BlobError(f"blob {ref.uri} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None

    def get_bytes(self, ref: BlobRef) -> bytes:
        parsed = urlparse(ref.uri)
        if parsed.scheme != "file":
            raise BlobError(f"unsupported blob URI scheme {parsed.scheme!r} in {ref.uri}")
        try:
            data = Path(unquote(parsed.path)).read_bytes()
        except OSError as exc:
            raise BlobError(f"blob {ref.uri} cannot be read: {exc.strerror}") from None
        if hashlib.sha256(data).hexdigest() != ref.sha256:
            raise BlobError(f"blob {ref.uri} does not match its sha256: it was altered")
        return data

    def expire(self, older_than_s: float) -> int:
        cutoff, removed = time.time() - older_than_s, 0
        for path in [*self.root.glob("*/*"), *self.root.glob("claims/*/*")]:
            if not path.is_file():
                continue
            if path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

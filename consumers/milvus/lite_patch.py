"""The milvus-lite release ragstream's patches of it were written against.

lite_bm25.py (BM25 scored with numpy), lite_live.py (live-row checks without a Python step
per row) and lite_hnsw.py (exact search under a narrow filter) replace internals of that
release; each installs only on it (pyproject pins it) and, on another, leaves milvus-lite
as it is with a warning that says what is lost.
"""

from __future__ import annotations

from ragstream.logging import get_logger

log = get_logger(__name__)

#: The milvus-lite release whose internals the patches read and replace.
FOR_RELEASE = "3.2.2"


def on_written_release(patch: str, consequence: str) -> bool:
    """True on :data:`FOR_RELEASE`; otherwise a warning ``milvus_lite.<patch>_not_installed``
    naming the release and ``consequence``, and False."""
    import milvus_lite

    release = getattr(milvus_lite, "__version__", "?")
    if release == FOR_RELEASE:
        return True
    log.warning(f"milvus_lite.{patch}_not_installed", release=release, written_for=FOR_RELEASE, consequence=consequence)
    return False

"""The console log handler follows sys.stderr: a replaced-and-closed stderr (pytest's capture
between tests, a redirected CLI) must not turn every later line into a logging traceback."""

import io
import logging
import sys

from ragstream.logging import configure_logging


def test_lines_go_to_the_current_stderr_after_the_old_one_is_closed(monkeypatch):
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    errors: list[str] = []
    monkeypatch.setattr(logging.Handler, "handleError", lambda self, record: errors.append(record.getMessage()))
    try:
        first = io.StringIO()
        monkeypatch.setattr(sys, "stderr", first)
        configure_logging("INFO", "console")
        logging.getLogger("ragstream.test").warning("before the swap")
        assert "before the swap" in first.getvalue()
        first.close()
        second = io.StringIO()
        monkeypatch.setattr(sys, "stderr", second)
        logging.getLogger("ragstream.test").warning("after the swap")
        assert "after the swap" in second.getvalue()
        assert errors == []
    finally:
        root.handlers[:] = saved
        root.setLevel(level)


def test_pymilvus_lines_go_through_ragstream_s_handler_and_the_mvcc_notice_is_dropped(monkeypatch):
    import consumers.milvus  # noqa: F401 - importing it adopts pymilvus' loggers

    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    try:
        out = io.StringIO()
        monkeypatch.setattr(sys, "stderr", out)
        configure_logging("INFO", "json")
        logging.getLogger("pymilvus.decorators").warning("retry of a call")
        logging.getLogger("pymilvus.client.iterator.query_iterator").warning(
            "failed to get mvccTs from milvus server, use client-side ts instead")
        lines = [line for line in out.getvalue().splitlines() if line.strip()]
        assert len(lines) == 1 and '"event": "retry of a call"' in lines[0], lines  # rendered by ours (JSON)
        assert '"logger": "pymilvus.decorators"' in lines[0]
    finally:
        root.handlers[:] = saved
        root.setLevel(level)

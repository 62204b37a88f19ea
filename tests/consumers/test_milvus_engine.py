"""What ragstream asks of the Milvus behind a URI follows its version (no server needed)."""

from __future__ import annotations

import pytest

from consumers.milvus.engine import parse_version
from ragstream.settings import SettingsError, load_settings


@pytest.mark.parametrize("raw, name, version, full_text, varchar_index, infix_like", [
    ("milvus_lite-3.2.2", "milvus-lite", (3, 2, 2), True, "INVERTED", True),
    ("v2.3.5-lite", "milvus", (2, 3, 5), False, "Trie", False),  # the `milvus` PyPI package
    ("v2.4.15", "milvus", (2, 4, 15), False, "INVERTED", True),
    ("v2.5.4", "milvus", (2, 5, 4), True, "INVERTED", True),
    ("2.6.0", "milvus", (2, 6, 0), True, "INVERTED", True),
    ("something new", "milvus", (9, 9, 9), True, "INVERTED", True),  # unknown: the newest
])
def test_capabilities_by_version(raw, name, version, full_text, varchar_index, infix_like):
    e = parse_version(raw)
    assert (e.name, e.version, e.full_text, e.varchar_index, e.infix_like) == \
        (name, version, full_text, varchar_index, infix_like)


def test_the_engine_setting_is_validated_at_start_up(monkeypatch):
    monkeypatch.setenv("RAGSTREAM_MILVUS_ENGINE", "postgres")
    with pytest.raises(SettingsError, match="RAGSTREAM_MILVUS_ENGINE='postgres'"):
        load_settings()
    monkeypatch.setenv("RAGSTREAM_MILVUS_ENGINE", "server")
    assert load_settings().milvus_engine == "server"  # the `milvus` package is installed here
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "milvus" else real(n, *a))
    with pytest.raises(SettingsError, match=r"needs the `milvus` package"):
        load_settings()
    # A Milvus you run (a URI) needs no local package.
    assert load_settings(milvus_uri="http://milvus:19530").milvus_engine == "server"

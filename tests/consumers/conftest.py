"""Fixtures of the sink tests: the Milvus integration tests run against both engines.

Each Milvus test module runs once per engine (``milvus_engine``, module-scoped): milvus-lite
(embedded, a file per index) and a real Milvus server (the ``milvus`` package's standalone
binary, 2.3.5), started once for the whole session and shared (``milvus_server``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.stack import Stack, isolated_settings


# -- Milvus engines: the Milvus integration tests run against milvus-lite and a real Milvus server --

MILVUS_ENGINES = ("lite", "server")


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory) -> Iterator[str]:
    """A real Milvus server (the ``milvus`` package's standalone binary, 2.3.5; the stack's
    ``RAGSTREAM_MILVUS_ENGINE=server``) shared by the whole session: started once (~15-60 s),
    stopped at the end. Tests keep apart by their aliases (:func:`open_index`)."""
    import importlib.util

    if importlib.util.find_spec("milvus") is None:
        pytest.skip("the `milvus` package (extra 'server') is not installed: ./dev setup installs it")
    s = isolated_settings(tmp_path_factory.mktemp("milvus-server") / "home", milvus_engine="server",
                          start_timeout_s=300)
    stack = Stack(s, ("milvus",))
    stack.up()
    try:
        yield s.resolved_milvus_uri
    finally:
        stack.down()


@pytest.fixture(scope="module", params=MILVUS_ENGINES)
def milvus_engine(request) -> str:
    """The engine a Milvus test module runs against (each module runs once per engine)."""
    return request.param


def open_index(request: pytest.FixtureRequest, engine: str, folder: Path, name: str, dim: int, **kw):
    """A fresh :class:`MilvusIndex` named ``name`` on ``engine``: milvus-lite embedded in a file
    of ``folder``, or the session's server under an alias of its own."""
    from consumers.milvus import MilvusIndex

    if engine == "lite":
        return MilvusIndex(str(folder / f"{name}.db"), name, dim, **kw)
    uri = request.getfixturevalue("milvus_server")
    return MilvusIndex(uri, f"{name}_{uuid.uuid4().hex[:8]}", dim, **kw)

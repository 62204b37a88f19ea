"""The stack's real Milvus server (RAGSTREAM_MILVUS_ENGINE=server): started, restarted on the
same port right after a stop (its connections still in TIME_WAIT), stopped with its binary."""

from __future__ import annotations

import importlib.util

import pytest

from infra.milvus_standalone import MilvusStandalone
from infra.service import pid_alive
from infra.stack import Stack, isolated_settings

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(importlib.util.find_spec("milvus") is None,
                                 reason="the `milvus` package (extra 'server') is not installed: ./dev setup")]


def test_the_server_starts_restarts_on_its_port_and_stops(tmp_path):
    s = isolated_settings(tmp_path / "home", milvus_engine="server", start_timeout_s=300)
    stack = Stack(s, ("milvus",))
    milvus = stack["milvus"]
    assert isinstance(milvus, MilvusStandalone)
    try:
        assert stack.up() == {"milvus": True}
        from consumers.milvus import milvus_client

        client = milvus_client(milvus.address, timeout=30)
        assert client.get_server_version().startswith("v2.3")
        status = milvus.status()
        binary = milvus.server_pid()
        assert status.ready and status.child_pid == binary and status.rss and status.rss > 50 * 2**20
        client.close()
        assert stack.down() == {"milvus": True}
        assert not pid_alive(binary), "down returns once the Milvus binary is gone"
        assert stack.up() == {"milvus": True}  # same port again, at once
        assert milvus.ready()
    finally:
        stack.down()

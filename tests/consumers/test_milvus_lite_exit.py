"""A process that used the embedded milvus-lite server exits, even with clients still polling.

At interpreter exit concurrent.futures shuts the gRPC server's executor down before atexit's
hooks run; an RPC arriving then kills gRPC's serving thread, and waiting for the server's
shutdown without a bound hung a finished pytest run (consumers/milvus/lite_server.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import os, sys, threading, time
sys.path.insert(0, {root!r})
from pymilvus import MilvusClient
from consumers.milvus.lite_server import embedded
uri, token = embedded(os.path.join({tmp!r}, "x.db"))
client = MilvusClient(uri=uri, token=token)
def poll():
    while True:
        try:
            client.list_collections()
        except Exception:
            pass
for _ in range(4):
    threading.Thread(target=poll, daemon=True).start()
time.sleep(1)
print("leaving", flush=True)
"""


def test_exit_is_not_held_up_by_clients_still_polling(tmp_path: Path) -> None:
    code = SCRIPT.format(root=str(ROOT), tmp=str(tmp_path))
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=45)
    except subprocess.TimeoutExpired:
        raise AssertionError("the process did not exit within 45 s of its last line") from None
    assert "leaving" in out.stdout

"""Foundation measurements: set-up time, broker start time, broker memory.

    .venv/bin/python bench/foundation.py          # writes bench/results/foundation.json

1. clones this repository (HEAD) into a temporary folder and times ``./dev setup`` there
   (a new .venv and pip install; system packages and the Maven cache are what the machine
   already has) followed by the first test file: "fresh clone to first green test";
2. on free ports with a fresh home, times ``ragstream stack up --service kafka`` from the
   command to the broker answering (first start, which formats storage, and a restart);
3. reads the broker's resident memory (VmRSS) when idle and after ``ragstream check -n 20000``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from infra.stack import free_port  # noqa: E402


def timed(cmd: list[str], **kw) -> float:
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, **kw)
    return time.monotonic() - t0


def rss_mib(home: Path) -> float:
    pid = int((home / "run" / "kafka.pid").read_text())
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> None:
    results: dict[str, object] = {"machine": f"{os.cpu_count()} cores, {platform.platform()}"}
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "clone"
        t0 = time.monotonic()
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        subprocess.run([str(clone / "dev"), "setup"], check=True)
        setup_s = time.monotonic() - t0
        timed([str(clone / ".venv/bin/pytest"), "-q", "tests/schemas/test_events.py"], cwd=clone,
              stdout=subprocess.DEVNULL)
        results["fresh_clone_to_first_green_test_s"] = round(time.monotonic() - t0, 1)
        results["fresh_clone_setup_s"] = round(setup_s, 1)

        home = Path(tmp) / "home"
        kafka_port = free_port()
        env = {**os.environ, "RAGSTREAM_HOME": str(home), "RAGSTREAM_KAFKA_PORT": str(kafka_port),
               "RAGSTREAM_KAFKA_CONTROLLER_PORT": str(free_port()), "RAGSTREAM_MILVUS_PORT": str(free_port()),
               "RAGSTREAM_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}"}
        cli = str(ROOT / ".venv/bin/ragstream")
        try:
            results["stack_up_to_broker_ready_first_start_s"] = round(
                timed([cli, "stack", "up", "-s", "kafka"], env=env, stderr=subprocess.DEVNULL), 2)
            results["broker_rss_idle_mib"] = round(rss_mib(home), 0)
            subprocess.run([cli, "stack", "down", "-s", "kafka"], env=env, check=True, stderr=subprocess.DEVNULL)
            results["stack_up_to_broker_ready_restart_s"] = round(
                timed([cli, "stack", "up", "-s", "kafka"], env=env, stderr=subprocess.DEVNULL), 2)
            subprocess.run([cli, "topics", "ensure"], env=env, check=True, stderr=subprocess.DEVNULL)
            subprocess.run([cli, "check", "-n", "20000"], env=env, check=True)
            results["broker_rss_after_20k_events_mib"] = round(rss_mib(home), 0)
        finally:
            subprocess.run([cli, "stack", "down"], env=env, stderr=subprocess.DEVNULL)
    out = ROOT / "bench" / "results" / "foundation.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(main())

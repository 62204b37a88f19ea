"""No configured secret in what the running pipeline shows: every stage worker's metrics page
and health answer, and `stack status` / `status` (issue 14: "never in logs, errors, metrics").

The secrets are the pipeline home's (tests/leaks.py: the Kafka passwords of every principal,
the Milvus token, the keys); logs and captured output are checked at the end of the session.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests import leaks

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent


def test_metrics_health_and_status_show_no_secret(pipeline):
    from infra.stack import WORKERS, Stack

    from ragstream.kafka import credentials_path

    secrets = leaks.Secrets()
    secrets.from_home(pipeline.home)
    # The broker's credentials may live outside the home: the session's `settings` fixture sets
    # RAGSTREAM_KAFKA_CREDENTIALS_FILE, which every later Settings (this pipeline's too) reads.
    secrets.from_kafka_credentials(credentials_path(pipeline))
    labels = set(secrets.labels.values())
    assert any("Kafka password of stage-index" in label for label in labels)
    assert any("Milvus token" in label for label in labels)
    shown: list[tuple[str, str]] = []
    for svc in Stack(pipeline, WORKERS).services:
        for page in ("metrics", "healthz"):
            r = httpx.get(f"http://127.0.0.1:{svc.port}/{page}", timeout=10)
            assert r.status_code in (200, 503), (svc.name, page, r.status_code)
            shown.append((f"{svc.name} /{page}", r.text))
    assert sum("ragstream_" in text for _, text in shown) >= len(WORKERS)  # real metrics pages
    for command in (("stack", "status"), ("status",)):
        out = subprocess.run([sys.executable, "-m", "ragstream.cli", "--home", str(pipeline.home), *command],
                             cwd=ROOT.parent, capture_output=True, text=True, timeout=180,
                             env={**os.environ, **_settings_env(pipeline)})
        shown.append((f"ragstream {' '.join(command)} (exit {out.returncode})", out.stdout + out.stderr))
        assert "milvus" in out.stdout.lower() or "index" in out.stdout.lower(), (command, out.stdout, out.stderr)
    assert leaks.find(secrets, [], shown) == []


def _settings_env(settings) -> dict[str, str]:  # type: ignore[no-untyped-def]
    from infra.service import settings_env

    env = settings_env(settings)
    return {k: v for k, v in env.items() if k.startswith("RAGSTREAM_")}

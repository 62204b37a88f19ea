"""Shared fixtures: real services, found or started.

Each service comes, in this order, from
1. an environment variable (``RAGSTREAM_KAFKA_BOOTSTRAP``, ``RAGSTREAM_MILVUS_URI``),
2. testcontainers, when a Docker daemon answers,
3. a broker already answering on the default port (your own ``ragstream stack up``),
4. the project's own local stack (``infra.stack``), started here and stopped afterwards.

Tests that need to stop or break a broker use ``private_stack``: their own broker on free
ports in a temporary home, never the shared one.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.stack import Stack, isolated_settings
from ragstream.settings import Settings, load_settings


def docker_available() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:  # noqa: BLE001 - no client, no socket, no daemon: all mean "no"
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    if os.environ.get("RAGSTREAM_KAFKA_BOOTSTRAP"):
        yield os.environ["RAGSTREAM_KAFKA_BOOTSTRAP"]
        return
    if docker_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    stack = Stack(load_settings(), ("kafka",))
    if stack["kafka"].ready():  # a broker you already run on the default port is reused
        yield stack["kafka"].address
        return
    started = stack.up()
    yield stack["kafka"].address
    if started["kafka"]:
        stack.down()


@pytest.fixture(scope="session")
def settings(kafka_bootstrap: str) -> Settings:
    """Settings pointing at the session's broker, with the catalog applied."""
    from ragstream.admin import ensure_topics

    from ragstream.kafka import credentials_path

    s = load_settings(kafka_bootstrap=kafka_bootstrap)
    ensure_topics(s)
    if credentials_path(s).exists():
        # The broker requires credentials (RAGSTREAM_KAFKA_LOCAL_AUTH): CLI commands a test
        # runs in a home of their own reach the session's broker with its credentials.
        os.environ.setdefault("RAGSTREAM_KAFKA_CREDENTIALS_FILE", str(credentials_path(s)))
    return s


@pytest.fixture
def topic(settings: Settings) -> Iterator[str]:
    """A fresh 6-partition topic for one test (auto-creation is off on our broker)."""
    from ragstream.admin import admin_client, ensure_topics
    from schemas.topics import TopicSpec

    name = f"test.{uuid.uuid4().hex[:10]}"
    ensure_topics(settings, (TopicSpec(name, 6, {"cleanup.policy": "delete"}, None, "test"),))
    yield name
    admin_client(settings).delete_topics([name])


@pytest.fixture
def private_stack(tmp_path: Path) -> Iterator[Settings]:
    """Settings for a stack of this test's own: temporary home, free ports. Stopped at the end."""
    s = isolated_settings(tmp_path / "home")
    yield s
    Stack(s).down()


#: The pipeline's policy: GDPR defaults; for sources named ``seeded-*`` every entity type
#: redacted (the "seeded PII appears nowhere downstream" test); ``open-*`` sources keep names
#: and email addresses as they are (so an erasure has something to find in clear text);
#: ``expiring-*`` documents leave the index a second after their last change, unless the
#: source is under a legal hold (``held-*``).
PIPELINE_POLICY = """
[default]
frameworks = ["GDPR"]

[sources."seeded-*"]
frameworks = ["GDPR", "HIPAA"]
actions = { %s }

[sources."open-*"]
frameworks = ["GDPR"]
actions = { PERSON = "allow", EMAIL_ADDRESS = "allow" }

[sources."expiring-*"]
retention_days = 0.00001

[sources."held-*"]
retention_days = 0.00001
legal_hold = true
"""


def _start_pipeline(tmp_path_factory, name: str):
    from infra.stack import running_pipeline
    from streams.pii import ENTITIES

    home = tmp_path_factory.mktemp(name) / "home"
    home.mkdir(parents=True)
    policy = home / "policy.toml"
    policy.write_text(PIPELINE_POLICY % ", ".join(f'{e} = "redact"' for e in ENTITIES), encoding="utf-8")
    # Compaction bounded to ~7 s and a retention sweep every 2 s, so erasure and retention
    # finish within a test; production defaults are 24 h and 1 h.
    s = isolated_settings(home, partitions=3, start_timeout_s=180, policy_file=policy,
                          compaction_lag_hours=0.002, retention_sweep_s=2, dsr_verify_timeout_s=180,
                          stall_after_s=10)  # /healthz reports a stuck partition within a test
    return s, running_pipeline(s)


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory) -> Iterator[Settings]:
    """A private full pipeline (broker, milvus-lite, the stage workers) shared by the
    end-to-end modules; own home and ports."""
    s, running = _start_pipeline(tmp_path_factory, "pipeline")
    with running:
        yield s


@pytest.fixture(scope="module")
def own_pipeline(tmp_path_factory) -> Iterator[Settings]:
    """A full pipeline of the module's own, for modules whose work grows with what the shared
    one holds: a reindex replays whole topics, which in the shared pipeline carry every earlier
    module's documents (minutes of re-embedding, more with every module added)."""
    s, running = _start_pipeline(tmp_path_factory, "own-pipeline")
    with running:
        yield s


# -- No configured secret in any log or error output of the suite (tests/leaks.py) -------------

_SESSION_START = time.time()
_CAPTURED: list[tuple[str, str]] = []


def pytest_configure(config: pytest.Config) -> None:
    from tests import leaks

    leaks.record_credentials()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for title, text in report.sections:  # captured stdout, stderr and log records, every phase
        if text:
            _CAPTURED.append((f"{report.nodeid} [{title}]", text))
    if report.failed:
        _CAPTURED.append((f"{report.nodeid} [{report.when} failure report]", report.longreprtext))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session if a configured secret appears in a log file of the test homes or in
    captured output; say where and which secret, never the secret."""
    import logging

    from tests import leaks

    # The tests are over: pymilvus clients some tests left open keep trying to reconnect to
    # servers the teardown stops, and would fill the end of the output with tracebacks.
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)

    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None or getattr(session.config.option, "collectonly", False):
        for home in leaks.OUTSIDE:
            shutil.rmtree(home, ignore_errors=True)
        return
    base = factory.getbasetemp()
    try:
        shared: Path | None = load_settings().home
    except SystemExit:  # invalid settings in the environment: the tests said so already
        shared = None
    modules = {item.module for item in session.items if getattr(item, "module", None) is not None}
    secrets = leaks.collect(base, shared, modules, dict(os.environ))
    files = leaks.log_files(base)
    for home in leaks.OUTSIDE:
        files += leaks.log_files(home)
    if shared is not None and shared.is_dir():
        files += leaks.log_files(shared, since=_SESSION_START)
    found = leaks.find(secrets, files, _CAPTURED)
    for home in leaks.OUTSIDE:
        shutil.rmtree(home, ignore_errors=True)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if found:
        if reporter is not None:
            reporter.write_sep("=", "configured secrets found in logs or test output (tests/leaks.py)", red=True)
            for line in found:
                reporter.write_line(line)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif reporter is not None:
        reporter.write_sep("-", f"leak check: {len(secrets.labels)} secret forms, {len(files)} log files, "
                            f"{len(_CAPTURED)} captured outputs: none found")

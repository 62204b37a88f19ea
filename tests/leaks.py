"""No configured secret in any log or error output of the test suite (issue 14).

At the end of every pytest session (``pytest_sessionfinish`` in tests/conftest.py) the
secrets the session configured are collected and every log file under the test homes and
every captured output (stdout, stderr, log records, failure reports) is searched for them.
A find fails the session, naming the file or test and which secret it was, never the
secret itself.

Secrets collected:

* from every home under the session's base temporary folder, the homes tests made
  elsewhere (:data:`OUTSIDE`) and the shared home when it was used: the local broker's SCRAM passwords (``secrets/kafka.json``), the milvus-lite
  token (``secrets/milvus.token``), the local PostgreSQL's passwords and the Connect REST
  password (``secrets/*.properties``), Neo4j's password (``neo4j/password``), the session
  signing key and tenant pseudonym keys (``keys/*.key``: raw bytes, hex and base64);
* every API key, session and refresh token the ``AuthStore`` handed out in this process
  (their secret part);
* ``RAGSTREAM_*`` secrets in the environment (``ragstream.settings.SECRET_FIELDS``, and the
  file ``RAGSTREAM_KAFKA_PASSWORD_FILE`` names);
* the test modules' own constants named ``SECRET``, ``PASSWORD``, ``*_SECRET``,
  ``*_PASSWORD``, ``*_TOKEN``, ``*_API_KEY`` (the embedding key, LDAP passwords of the test
  directory, ...).

Not covered: what a test's subprocess printed into a pipe the test kept to itself.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Iterable

#: Shorter values are too likely to occur by chance (and are not secrets worth the name).
MIN_LEN = 8
#: Log files: anything under a ``logs`` folder, and these suffixes anywhere under a home.
LOG_SUFFIXES = (".log", ".out", ".err")
#: Files that hold secrets by design (never "leaks").
SECRET_FILES = ("kafka.json", "milvus.token", "server.properties", "worker.properties", "password",
                "postgres.properties", "postgres-superuser.properties", "connect-rest.properties")
CONSTANT = re.compile(r"^(SECRET|PASSWORD|.*_(SECRET|PASSWORD|TOKEN|API_KEY))$")


class Secrets:
    """secret bytes -> a label that says what it is and where it came from (never the value)."""

    def __init__(self) -> None:
        self.labels: dict[bytes, str] = {}

    def add(self, value: str | bytes | None, label: str) -> None:
        if not value:
            return
        raw = value.encode() if isinstance(value, str) else value
        if len(raw) < MIN_LEN:
            return
        self.labels.setdefault(raw, label)

    def add_key_bytes(self, raw: bytes, label: str) -> None:
        """A binary key: its raw bytes and the text forms a log could show."""
        self.add(raw, label)
        self.add(raw.hex(), f"{label} (hex)")
        self.add(base64.b64encode(raw).rstrip(b"="), f"{label} (base64)")
        self.add(base64.urlsafe_b64encode(raw).rstrip(b"="), f"{label} (base64url)")

    def from_kafka_credentials(self, kafka: Path) -> None:
        """The passwords of a local broker's credentials file (``<home>/secrets/kafka.json``,
        or the file ``RAGSTREAM_KAFKA_CREDENTIALS_FILE`` names)."""
        try:
            creds = json.loads(kafka.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            creds = {}
        self.add(creds.get("controller"), f"Kafka controller password ({kafka})")
        for user, password in (creds.get("users") or {}).items():
            self.add(password, f"Kafka password of {user} ({kafka})")

    def from_home(self, home: Path) -> None:
        self.from_kafka_credentials(home / "secrets" / "kafka.json")
        for name, label in (("secrets/milvus.token", "Milvus token"), ("neo4j/password", "Neo4j password")):
            path = home / name
            try:
                self.add(path.read_text(encoding="utf-8").strip(), f"{label} ({path})")
            except (OSError, UnicodeDecodeError):
                pass
        for path in sorted((home / "secrets").glob("*.properties")) if (home / "secrets").is_dir() else ():
            try:  # <key>=<password> lines (ragstream.keyfile.ensure_token_file with a key)
                for line in path.read_text(encoding="utf-8").splitlines():
                    self.add(line.partition("=")[2].strip(), f"password in {path}")
            except (OSError, UnicodeDecodeError):
                pass
        for path in sorted((home / "keys").glob("*.key")) if (home / "keys").is_dir() else ():
            try:
                self.add_key_bytes(path.read_bytes(), f"key {path}")
            except OSError:
                pass

    def from_environment(self, environ: dict[str, str]) -> None:
        from ragstream.settings import SECRET_FIELDS

        for field in SECRET_FIELDS:
            self.add(environ.get(f"RAGSTREAM_{field.upper()}"), f"RAGSTREAM_{field.upper()}")
        if environ.get("RAGSTREAM_KAFKA_CREDENTIALS_FILE"):
            self.from_kafka_credentials(Path(environ["RAGSTREAM_KAFKA_CREDENTIALS_FILE"]))
        pw_file = environ.get("RAGSTREAM_KAFKA_PASSWORD_FILE")
        if pw_file:
            try:
                self.add(Path(pw_file).read_text(encoding="utf-8").splitlines()[0].strip(), f"password in {pw_file}")
            except (OSError, IndexError):
                pass

    def from_modules(self, modules: Iterable[ModuleType]) -> None:
        for module in modules:
            for name, value in vars(module).items():
                if isinstance(value, str) and CONSTANT.match(name):
                    self.add(value, f"{module.__name__}.{name}")


def homes(root: Path) -> list[Path]:
    """Folders under ``root`` that look like a ragstream home (they hold secrets/ or keys/)."""
    found = set()
    for marker in ("secrets", "keys", "neo4j"):
        for path in root.rglob(marker):
            if path.is_dir():
                found.add(path.parent)
    return sorted(found)


def log_files(root: Path, since: float | None = None) -> list[Path]:
    out = []
    for path in root.rglob("*"):
        try:
            if not path.is_file() or path.name in SECRET_FILES:
                continue
            parts = path.relative_to(root).parts[:-1]
            if any(a == "kafka" and b == "data" for a, b in zip(parts, parts[1:])):
                continue  # the broker's segment files (*.log) are topics' data, not logs
            if "logs" in parts or path.suffix in LOG_SUFFIXES:
                if since is None or path.stat().st_mtime >= since:
                    out.append(path)
        except OSError:
            continue
    return sorted(out)


def find(secrets: Secrets, files: Iterable[Path], texts: Iterable[tuple[str, str]]) -> list[str]:
    """One line per (place, secret) found: the place and the secret's label, not its value."""
    found = []
    for path in files:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        found += [f"{path}: {label}" for raw, label in secrets.labels.items() if raw in data]
    for where, text in texts:
        data = text.encode(errors="replace")
        found += [f"{where}: {label}" for raw, label in secrets.labels.items() if raw in data]
    return found


#: What the patched ``AuthStore`` handed out in this process (see :func:`record_credentials`).
_RECORDED = Secrets()


def record_credentials() -> None:
    """Wrap ``AuthStore.create_key``, ``open_session`` and ``refresh`` so the secrets they hand
    out in this process are recorded (their secret part: the ids before it are not secret)."""
    from ragstream.store import AuthStore

    if getattr(AuthStore, "_leak_recording", False):
        return

    def secret_part(token: str) -> str:  # rsk_<id>_<secret>, rsr_<sid>_<secret>
        return token.split("_", 2)[2] if token.count("_") >= 2 else token

    create_key, open_session, refresh = AuthStore.create_key, AuthStore.open_session, AuthStore.refresh

    def _create_key(self, *a, **kw):  # type: ignore[no-untyped-def]
        key = create_key(self, *a, **kw)
        _RECORDED.add(secret_part(key), "an API key created by a test")
        return key

    def _open_session(self, *a, **kw):  # type: ignore[no-untyped-def]
        session, token = open_session(self, *a, **kw)
        _RECORDED.add(secret_part(token), "a refresh token")
        return session, token

    def _refresh(self, *a, **kw):  # type: ignore[no-untyped-def]
        session, token = refresh(self, *a, **kw)
        _RECORDED.add(secret_part(token), "a refresh token")
        return session, token

    AuthStore.create_key, AuthStore.open_session, AuthStore.refresh = _create_key, _open_session, _refresh  # type: ignore[method-assign]
    AuthStore._leak_recording = True  # type: ignore[attr-defined]


#: Homes a test made outside the session's base temporary folder (PostgreSQL runs as the
#: ``postgres`` user, which cannot enter pytest's 0700 folders): their secrets and logs are
#: checked at the session's end like the others, and only then removed (tests/conftest.py).
OUTSIDE: list[Path] = []


def check_then_remove(home: Path) -> None:
    """Hand a test's home outside the base folder to the session-end check (instead of
    removing it at the test's teardown, when its logs would go unread)."""
    OUTSIDE.append(home)


def collect(base: Path, shared_home: Path | None, modules: Iterable[ModuleType], environ: dict[str, str]) -> Secrets:
    secrets = Secrets()
    for home in homes(base) + [h for h in OUTSIDE if h.is_dir()] + (
            [shared_home] if shared_home and shared_home.is_dir() else []):
        secrets.from_home(home)
    secrets.from_environment(environ)
    secrets.from_modules(modules)
    for raw, label in _RECORDED.labels.items():
        secrets.labels.setdefault(raw, label)
    return secrets


__all__ = ["Secrets", "collect", "find", "homes", "log_files", "record_credentials"]

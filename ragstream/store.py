"""The API's credential store: API keys and sessions in one SQLite database.

``<home>/keys/auth.db`` (mode 0600, its folder 0700), in WAL mode. Every change is one
``BEGIN IMMEDIATE`` transaction, so any number of processes — two admins running
``ragstream apikey`` while the API serves requests — see either the state before or the
state after, never a half-written file: a revoked key cannot come back and a reader never
sees an empty or truncated store (the JSON file this replaces was truncated and rewritten
in place under a lock that covered one process).

Revocation keeps the row (``revoked_at``), so nothing — not a replayed migration, not a
concurrent create — can make a revoked key valid again. Secrets are never stored: API keys
and refresh tokens as SHA-256 of a 32-byte random secret (high entropy needs no slow hash),
compared in constant time.

An ``api_keys.json`` left by an older version is imported once (a flag in ``meta`` records
it, and the file is renamed ``api_keys.json.migrated``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

API_KEY_PREFIX = "rsk_"
REFRESH_PREFIX = "rsr_"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY, name TEXT NOT NULL, roles TEXT NOT NULL, groups TEXT NOT NULL,
    sha256 TEXT NOT NULL, created_at INTEGER NOT NULL, revoked_at INTEGER);
CREATE TABLE IF NOT EXISTS sessions (
    sid TEXT PRIMARY KEY, subject TEXT NOT NULL, provider TEXT NOT NULL, roles TEXT NOT NULL,
    principals TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
    refresh_sha256 TEXT NOT NULL, refresh_expires_at INTEGER NOT NULL, revoked_at INTEGER);
CREATE INDEX IF NOT EXISTS sessions_subject ON sessions (subject);
"""


class StoreError(Exception):
    """A credential was not accepted; the message is safe to show (it names no secret)."""


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) for its owner only; tighten it if it is ours and looser."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o077:
        path.chmod(0o700)
    return path


def private_home(home: Path) -> None:
    """Close the home to other local users (``ragstream``'s ``main`` also sets umask 077,
    so what it and the processes it starts create is its owner's only).

    The home holds the index's data files, the Kafka log, keys and logs: at 0700 nothing
    under it can be reached by another local user, whatever mode an older version left on a
    file inside. One exception: a home that holds a folder owned by another account (the
    local PostgreSQL runs as ``postgres`` when ragstream runs as root, and must reach its
    data folder) may stay 0711 — others pass through but list nothing — and then what we
    own inside loses its group and other bits (once; marker ``.private``), so nothing is
    reachable by name either. A home owned by someone else, ``/`` and the folders above
    the user's home directory are never changed."""
    home = home.resolve()
    try:
        st = home.stat()
    except FileNotFoundError:
        return
    me = os.geteuid()
    if st.st_uid != me or home == Path("/") or home in Path.home().resolve().parents:
        return
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077 == 0:
        return
    serves_others = any(child.stat(follow_symlinks=False).st_uid != me for child in home.iterdir())
    if not (serves_others and mode & 0o077 == 0o011):
        home.chmod(0o700)
        return
    marker = home / ".private"
    if marker.exists() or home == Path.home().resolve():
        return
    for root, dirs, files in os.walk(home):
        for name in dirs + files:
            path = Path(root) / name
            try:
                pst = path.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if pst.st_uid == me and not stat.S_ISLNK(pst.st_mode) and stat.S_IMODE(pst.st_mode) & 0o077:
                path.chmod(stat.S_IMODE(pst.st_mode) & ~0o077)
        dirs[:] = [d for d in dirs if (Path(root) / d).stat(follow_symlinks=False).st_uid == me]
    marker.touch(mode=0o600)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    roles: tuple[str, ...]
    groups: tuple[str, ...]
    created_at: int
    revoked_at: int | None


@dataclass(frozen=True)
class Session:
    sid: str
    subject: str
    provider: str
    roles: tuple[str, ...]
    principals: tuple[str, ...]
    created_at: int
    expires_at: int


class AuthStore:
    """API keys and sessions; safe to share between threads and processes."""

    def __init__(self, keys_dir: Path) -> None:
        self.dir = private_dir(keys_dir)
        self.path = keys_dir / "auth.db"
        if not self.path.exists():
            try:  # created 0600 before SQLite opens it; its -wal and -shm files take this mode
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                pass
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
        self._migrate_json(keys_dir / "api_keys.json")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=30000")
            yield db
        finally:
            db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction that holds the write lock from its start (no lost updates)."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _migrate_json(self, legacy: Path) -> None:
        if not legacy.exists():
            return
        with self._write() as db:
            if db.execute("SELECT 1 FROM meta WHERE k = 'api_keys_json_migrated'").fetchone():
                return
            entries = json.loads(legacy.read_text() or "{}")
            for key_id, e in entries.items():
                db.execute("INSERT OR IGNORE INTO api_keys VALUES (?, ?, ?, ?, ?, ?, NULL)",
                           (key_id, e["name"], json.dumps(list(e["roles"])), json.dumps(list(e.get("groups", []))),
                            e["sha256"], int(e.get("created_at", time.time()))))
            db.execute("INSERT INTO meta VALUES ('api_keys_json_migrated', ?)", (str(int(time.time())),))
        legacy.rename(legacy.with_name("api_keys.json.migrated"))

    # -- API keys ----------------------------------------------------------------------------
    def create_key(self, name: str, roles: tuple[str, ...], groups: tuple[str, ...] = ()) -> str:
        """A new key for service account ``name``: ``rsk_<id>_<secret>``, returned once."""
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        with self._write() as db:
            db.execute("INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, NULL)",
                       (key_id, name, json.dumps(list(roles)), json.dumps(list(groups)), _digest(secret),
                        int(time.time())))
        return f"{API_KEY_PREFIX}{key_id}_{secret}"

    def revoke_key(self, key_id: str) -> bool:
        with self._write() as db:
            cur = db.execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                             (int(time.time()), key_id))
            return cur.rowcount == 1

    def keys(self, include_revoked: bool = False) -> list[ApiKey]:
        with self._connect() as db:
            rows = db.execute("SELECT key_id, name, roles, groups, created_at, revoked_at FROM api_keys "
                              + ("" if include_revoked else "WHERE revoked_at IS NULL ") + "ORDER BY key_id").fetchall()
        return [ApiKey(k, n, tuple(json.loads(r)), tuple(json.loads(g)), c, rv) for k, n, r, g, c, rv in rows]

    def check_key(self, key: str) -> ApiKey:
        try:
            key_id, secret = key.removeprefix(API_KEY_PREFIX).split("_", 1)
        except ValueError:
            raise StoreError("malformed API key") from None
        with self._connect() as db:
            row = db.execute("SELECT name, roles, groups, sha256, created_at FROM api_keys "
                             "WHERE key_id = ? AND revoked_at IS NULL", (key_id,)).fetchone()
        # Hash and compare even when the id is unknown: the answer takes the same time.
        ok = hmac.compare_digest(_digest(secret), row[3] if row else "0" * 64)
        if row is None or not ok:
            raise StoreError("unknown or revoked API key")
        return ApiKey(key_id, row[0], tuple(json.loads(row[1])), tuple(json.loads(row[2])), row[4], None)

    # -- sessions ----------------------------------------------------------------------------
    def open_session(self, subject: str, provider: str, roles: tuple[str, ...], principals: tuple[str, ...],
                     max_age_s: int, refresh_ttl_s: int) -> tuple[Session, str]:
        """Record a session; returns it and its first refresh token (``rsr_<sid>_<secret>``)."""
        now = int(time.time())
        sid, secret = secrets.token_hex(12), secrets.token_urlsafe(32)
        s = Session(sid, subject, provider, roles, principals, now, now + max_age_s)
        with self._write() as db:
            db.execute("DELETE FROM sessions WHERE expires_at < ?", (now - 86400,))  # forget long-dead ones
            db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                       (sid, subject, provider, json.dumps(list(roles)), json.dumps(list(principals)), now,
                        s.expires_at, _digest(secret), min(now + refresh_ttl_s, s.expires_at)))
        return s, f"{REFRESH_PREFIX}{sid}_{secret}"

    def session(self, sid: str) -> Session:
        """The live session ``sid``; :class:`StoreError` if unknown, revoked or past its age."""
        with self._connect() as db:
            row = db.execute("SELECT subject, provider, roles, principals, created_at, expires_at FROM sessions "
                             "WHERE sid = ? AND revoked_at IS NULL AND expires_at > ?",
                             (sid, int(time.time()))).fetchone()
        if row is None:
            raise StoreError("session revoked or expired: log in again")
        return Session(sid, row[0], row[1], tuple(json.loads(row[2])), tuple(json.loads(row[3])), row[4], row[5])

    def refresh(self, token: str, refresh_ttl_s: int) -> tuple[Session, str]:
        """Trade a refresh token for the next one (each is good once). Presenting a used
        one again revokes the session: someone else holds a copy."""
        try:
            sid, secret = token.removeprefix(REFRESH_PREFIX).split("_", 1)
        except ValueError:
            raise StoreError("malformed refresh token") from None
        now = int(time.time())
        with self._write() as db:
            row = db.execute("SELECT refresh_sha256, refresh_expires_at, revoked_at, expires_at FROM sessions "
                             "WHERE sid = ?", (sid,)).fetchone()
            if row is None or row[2] is not None or row[3] <= now:
                raise StoreError("session revoked or expired: log in again")
            if not hmac.compare_digest(_digest(secret), row[0]):
                db.execute("UPDATE sessions SET revoked_at = ? WHERE sid = ?", (now, sid))
                return_error = StoreError("refresh token already used: the session is revoked, log in again")
            elif row[1] <= now:
                return_error = StoreError("refresh token expired: log in again")
            else:
                return_error = None
                new_secret = secrets.token_urlsafe(32)
                db.execute("UPDATE sessions SET refresh_sha256 = ?, refresh_expires_at = ? WHERE sid = ?",
                           (_digest(new_secret), min(now + refresh_ttl_s, row[3]), sid))
        if return_error is not None:  # raised after COMMIT, so a revocation sticks
            raise return_error
        return self.session(sid), f"{REFRESH_PREFIX}{sid}_{new_secret}"

    def revoke_sessions(self, *, sid: str | None = None, subject: str | None = None) -> int:
        if (sid is None) == (subject is None):
            raise ValueError("give sid or subject")
        with self._write() as db:
            cur = db.execute("UPDATE sessions SET revoked_at = ? WHERE revoked_at IS NULL AND "
                             + ("sid = ?" if sid else "subject = ?"), (int(time.time()), sid or subject))
            return cur.rowcount

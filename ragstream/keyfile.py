"""Key files created atomically (foundation: the session key, tenant pseudonym keys).

Creating a key file and then writing it lets a concurrent reader see it empty and cache
an empty key. :func:`create_key_file` writes the key under a temporary name and links it
into place only if the name is free.
"""

from __future__ import annotations

import os
import secrets
import uuid
from pathlib import Path


def create_key_file(path: Path, size: int = 32) -> None:
    """Create ``path`` holding ``size`` random bytes, mode 0600, atomically: the key is
    written under a temporary name and linked into place only if ``path`` does not exist,
    so a concurrent reader sees no file or the whole key (never an empty one), and of two
    processes creating it at once one wins and both use its key."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _link_new(path, secrets.token_bytes(size))


def _link_new(path: Path, data: bytes) -> None:
    """Write ``data`` under a temporary name (0600) and link it to ``path`` unless that exists."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)


def ensure_token_file(path: Path, key: str | None = None) -> str:
    """The token in ``path``; created first if missing (random, 256 bits, URL-safe text, mode
    0600 in a 0700 folder, atomically as :func:`create_key_file`). A local service's
    credential: the milvus-lite server's token, the local PostgreSQL's passwords, the local
    Kafka Connect REST API's password.

    With ``key`` the file is one Java properties line ``<key>=<token>``: the form Kafka
    Connect's ``FileConfigProvider`` (``${file:<path>:<key>}``) and its basic-auth
    ``PropertyFileLoginModule`` (user name = key) read; the token's characters
    (``A-Z a-z 0-9 - _``) need no escaping there."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path.parent, 0o700)
        token = secrets.token_urlsafe(32)
        _link_new(path, (f"{key}={token}\n" if key else token + "\n").encode("utf-8"))
    os.chmod(path, 0o600)
    token = read_token_file(path, key)
    if token is None or len(token) < 32:
        raise RuntimeError(f"{path} holds no usable token (too short): remove it and start the stack again")
    return token


def read_token_file(path: Path, key: str | None = None) -> str | None:
    """The token :func:`ensure_token_file` wrote into ``path`` (for ``key``), or None if the
    file does not exist (yet) or holds nothing for ``key``. Clients read; only the service
    that checks the token creates it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RuntimeError(f"cannot read {path}: {type(exc).__name__}") from None
    if key is None:
        return text.strip() or None
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == key:
            return value.strip() or None
    return None

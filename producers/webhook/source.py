"""The webhook connector (see the package docstring)."""

from __future__ import annotations

import hashlib
import hmac
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ragstream.connector import Connector, ConnectorError, UpdateStats
from ragstream.logging import get_logger
from ragstream.publisher import Publisher
from ragstream.settings import Settings
from schemas import topics
from schemas.events import ChangeEvent, InlineContent, Op
from schemas.serde import SerdeError, decode

log = get_logger(__name__)

TIMESTAMP_HEADER = "x-ragstream-timestamp"
SIGNATURE_HEADER = "x-ragstream-signature"
IDEMPOTENCY_HEADER = "idempotency-key"


class WebhookConfig(BaseModel):
    """``[sources.<id>] kind = "webhook"``: where the shared secret is, and the timestamp window."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    secret_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    secret_file: Path | None = None
    tolerance_s: int = Field(300, ge=30, le=3600)

    @model_validator(mode="after")
    def _one_secret(self) -> WebhookConfig:
        if (self.secret_env is None) == (self.secret_file is None):
            raise ValueError("give the shared secret's location: secret_env (a variable name) or secret_file")
        return self

    def secret(self) -> bytes:
        if self.secret_env is not None:
            value = os.environ.get(self.secret_env, "")
            where = f"environment variable {self.secret_env}"
        else:
            assert self.secret_file is not None
            try:
                value = self.secret_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConnectorError(f"cannot read the webhook secret file {self.secret_file}: {exc.strerror}") from None
            where = f"secret file {self.secret_file}"
        if len(value) < 16:
            raise ConnectorError(f"the webhook secret in {where} is missing or shorter than 16 characters; "
                                 "set a long random value shared with the sender")
        return value.encode("utf-8")


class WebhookRefused(Exception):
    """A request the webhook refuses: ``status`` is the HTTP status, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def sign(secret: bytes, timestamp: int | str, body: bytes) -> str:
    """The signature header value a sender computes (``v1=<hex>``)."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


class SeenKeys:
    """Idempotency keys received, kept past the timestamp window (SQLite: every API process
    of this home shares it)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, expires REAL NOT NULL)")

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10, isolation_level=None)

    def claim(self, keys: list[str], keep_s: float, now: float) -> str | None:
        """Take every key, or none: returns the first key received before (None: all new)."""
        db = self._db()
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM seen WHERE expires < ?", (now,))
            for key in keys:
                if db.execute("SELECT 1 FROM seen WHERE key = ?", (key,)).fetchone():
                    db.execute("ROLLBACK")
                    return key
            db.executemany("INSERT INTO seen (key, expires) VALUES (?, ?)", [(k, now + keep_s) for k in keys])
            db.execute("COMMIT")
            return None
        finally:
            db.close()

    def release(self, keys: list[str]) -> None:
        """Forget the keys of an event that could not be published, so the sender's retry is accepted."""
        db = self._db()
        try:
            db.executemany("DELETE FROM seen WHERE key = ?", [(k,) for k in keys])
        finally:
            db.close()


class WebhookSource(Connector):
    """A source that pushes: it receives, verifies and publishes; it reads nothing."""

    kind = "webhook"
    capabilities = frozenset()
    Config = WebhookConfig

    def __init__(self, settings: Settings, source_id: str, secret: bytes | None, tolerance_s: int = 300,
                 publisher: Publisher | None = None) -> None:
        super().__init__(settings, source_id, {}, publisher)
        self._secret, self.tolerance_s = secret, tolerance_s
        self.seen = SeenKeys(settings.home / "webhooks" / f"{source_id}.sqlite")
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, settings: Settings, source_id: str, config: WebhookConfig,
                    publisher: Publisher | None = None) -> WebhookSource:
        return cls(settings, source_id, config.secret(), config.tolerance_s, publisher)

    @classmethod
    def open(cls, settings: Settings, source_id: str, identity: dict, publisher: Publisher | None = None
             ) -> WebhookSource:
        return cls(settings, source_id, None, publisher=publisher)

    def sync(self, native_ids: Iterable[str] | None = None, *, force: bool = False,
             progress: Callable[[int], None] | None = None,
             on_publish: Callable[[str, int], None] | None = None) -> UpdateStats:
        if native_ids is not None:
            raise ConnectorError(f"{self.source_id} is a webhook source: it cannot read a document again; "
                                 "ask the sender to push it again")
        return UpdateStats()  # nothing to pull: the sender pushes

    def test_connection(self) -> str:
        return f"receives pushes at POST /v1/webhooks/{self.source_id}; secret loaded, window {self.tolerance_s}s"

    # -- receiving ----------------------------------------------------------------------------
    def receive(self, body: bytes, headers: Mapping[str, str], now: float | None = None) -> ChangeEvent:
        """Verify, dedupe and publish one pushed event; returns it once the broker acknowledged.
        Raises :class:`WebhookRefused` (nothing published) otherwise."""
        now = time.time() if now is None else now
        if self._secret is None:
            raise WebhookRefused(503, f"webhook source {self.source_id} has no secret configured")
        headers = {k.lower(): v for k, v in headers.items()}
        stamp, signature = headers.get(TIMESTAMP_HEADER), headers.get(SIGNATURE_HEADER)
        if not stamp or not signature:
            raise WebhookRefused(401, f"unsigned: send {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} "
                                      "(v1=HMAC-SHA256 of '<timestamp>.<body>')")
        try:
            ts = int(stamp)
        except ValueError:
            raise WebhookRefused(401, f"{TIMESTAMP_HEADER} must be unix seconds") from None
        expected = sign(self._secret, ts, body)
        offered = [s.strip() for s in signature.split(",")]
        if not any(hmac.compare_digest(expected, s) for s in offered):
            raise WebhookRefused(401, "signature does not match the body and timestamp (check the shared secret)")
        if abs(now - ts) > self.tolerance_s:
            raise WebhookRefused(401, f"timestamp is {int(now - ts)}s away from now; the window is "
                                      f"±{self.tolerance_s}s (check the sender's clock, or do not replay)")
        try:
            event = decode(ChangeEvent, body)
        except SerdeError as exc:
            raise WebhookRefused(422, f"the body is not a ChangeEvent: {exc}") from None
        except ValidationError as exc:  # pragma: no cover - decode wraps validation errors
            raise WebhookRefused(422, f"the body is not a ChangeEvent: {exc}") from None
        if event.source != self.source_id or not event.doc_id.startswith(f"{self.source_id}:"):
            raise WebhookRefused(422, f"the event belongs to source {event.source!r} ({event.doc_id!r}); this "
                                      f"webhook accepts source {self.source_id!r} and doc_ids '{self.source_id}:…'")
        if event.op is Op.upsert and not isinstance(event.content, InlineContent):
            raise WebhookRefused(422, "an upsert must carry its content inline (content.kind = 'inline')")
        # Replay protection: the same signed request (its signature) is accepted once; so is
        # an idempotency key (the header, or the event_id the sender gave the event).
        keys = [f"signature:{expected}"]
        if headers.get(IDEMPOTENCY_HEADER):
            keys.append(f"key:{headers[IDEMPOTENCY_HEADER][:200]}")
        if b'"event_id"' in body:
            keys.append(f"event:{event.event_id}")
        seen = self.seen.claim(keys, keep_s=2 * self.tolerance_s + 60, now=now)
        if seen is not None:
            what = "this signed request" if seen.startswith("signature:") else seen.replace(":", " ", 1)
            raise WebhookRefused(409, f"already received ({what[:100]}); nothing was published again")
        try:
            with self._lock:
                entry = {"version": event.version, "acl": list(event.acl.principals)} if event.op is Op.upsert else None
                staged, acked = self.cursor.stage(self.native_id(event.doc_id), entry), []

                def delivered(err: Any, msg: Any) -> None:
                    staged(err, msg)
                    acked.append(err is None)
                self.publisher.publish(topics.CHANGES, event, on_delivery=delivered)
                self.finish(UpdateStats())
            if not (acked and acked[0]):
                raise RuntimeError("the broker did not acknowledge the event")
        except Exception as exc:
            self.seen.release(keys)
            log.error("webhook event not published", source=self.source_id, doc_id=event.doc_id, error=str(exc))
            raise WebhookRefused(503, "the event could not be published now; retry later") from exc
        self._published(event.doc_id, event.version, str(event.op), event.event_id)
        return event

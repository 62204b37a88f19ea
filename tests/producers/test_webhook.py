"""Signed webhooks: every way a request can be wrong is refused, and nothing is published."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from fastapi.testclient import TestClient

from producers.webhook import sign
from ragstream.api import create_app
from ragstream.settings import load_settings
from schemas.events import InlineContent

SECRET = "s3cr3t-shared-with-the-crm-0123456789"


class Spy:
    """Records what would be published and acknowledges it (the real path: tests/test_webhook_pipeline.py)."""

    def __init__(self) -> None:
        self.sent: list = []

    def publish(self, topic, event, *, on_delivery=None, **_kw):
        self.sent.append((topic, event))
        if on_delivery:
            on_delivery(None, None)

    def flush(self, *_a):
        return 0


@pytest.fixture
def client(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("CRM_SECRET", SECRET)
    sources = tmp_path / "sources.toml"
    sources.write_text('[sources.crm]\nkind = "webhook"\nsecret_env = "CRM_SECRET"\ntolerance_s = 120\n')
    app = create_app(settings.model_copy(update={"home": tmp_path / "home", "sources_file": sources}))
    spy = Spy()
    app.state.services.webhooks["crm"].publisher = spy
    with TestClient(app) as c:
        c.spy = spy
        yield c


def event(doc: str = "crm:account-7", **kw) -> bytes:
    body = {"schema_version": 1, "source": "crm", "source_kind": "webhook", "doc_id": doc, "op": "upsert", "version": 3,
            "changed_at": "2026-11-20T10:00:00Z", "content": InlineContent.of("Renewal notes.").model_dump(mode="json"),
            "acl": {"principals": ["group:sales"]}, **kw}
    return json.dumps(body).encode()


def post(client, body: bytes, ts: int | None = None, secret: str = SECRET, **headers):
    ts = int(time.time()) if ts is None else ts
    h = {"X-Ragstream-Timestamp": str(ts), "X-Ragstream-Signature": sign(secret.encode(), ts, body),
         "Content-Type": "application/json", **headers}
    return client.post("/v1/webhooks/crm", content=body, headers={k: v for k, v in h.items() if v is not None})


def test_a_valid_push_is_published_once_and_a_replay_is_refused(client):
    body, ts = event(), int(time.time())
    first = post(client, body, ts=ts)
    assert first.status_code == 202, first.text
    assert first.json()["doc_id"] == "crm:account-7"
    # the same request replayed: the same timestamp, so the same signature (signed again in
    # the next second it would be a new request, and accepted: the body has no event_id)
    again = post(client, body, ts=ts)
    assert again.status_code == 409 and "already received (this signed request)" in again.json()["error"]
    keyed = post(client, event(event_id=str(uuid.uuid4())), **{"Idempotency-Key": "crm-42"})
    assert keyed.status_code == 202
    same_key = post(client, event(event_id=str(uuid.uuid4()), version=4), **{"Idempotency-Key": "crm-42"})
    assert same_key.status_code == 409 and "key crm-42" in same_key.json()["error"]
    eid = str(uuid.uuid4())
    assert post(client, event(event_id=eid, version=5)).status_code == 202
    resent = post(client, event(event_id=eid, version=5), ts=int(time.time()) - 1)  # signed anew, same event
    assert resent.status_code == 409 and f"event {eid}" in resent.json()["error"]
    assert len(client.spy.sent) == 3


@pytest.mark.parametrize("case, status, says", [
    ("unsigned", 401, "unsigned"),
    ("wrong secret", 401, "signature does not match"),
    ("body changed after signing", 401, "signature does not match"),
    ("stale timestamp", 401, "the window is ±120s"),
    ("future timestamp", 401, "the window is ±120s"),
    ("not a ChangeEvent", 422, "not a ChangeEvent"),
    ("another source's document", 422, "accepts source 'crm'"),
    ("content by reference", 422, "inline"),
])
def test_each_bad_request_is_refused_with_a_reason_and_nothing_is_published(client, case, status, says):
    body, now = event(), int(time.time())
    if case == "unsigned":
        r = client.post("/v1/webhooks/crm", content=body)
    elif case == "wrong secret":
        r = post(client, body, secret="another-secret-of-enough-length")
    elif case == "body changed after signing":
        r = client.post("/v1/webhooks/crm", content=body.replace(b"Renewal", b"Hacked!"),
                        headers={"X-Ragstream-Timestamp": str(now), "X-Ragstream-Signature": sign(SECRET.encode(), now, body)})
    elif case == "stale timestamp":
        r = post(client, body, ts=now - 600)
    elif case == "future timestamp":
        r = post(client, body, ts=now + 600)
    elif case == "not a ChangeEvent":
        r = post(client, b'{"hello": "world"}')
    elif case == "another source's document":
        r = post(client, event(doc="hr:payroll", source="hr"))
    else:
        r = post(client, event(content={"kind": "ref", "uri": "file:///etc/passwd", "sha256": "0" * 64, "size": 1}))
    assert r.status_code == status, r.text
    assert says in r.json()["error"]
    assert client.spy.sent == []


def test_an_undeclared_source_is_404_and_the_payload_schema_is_served(client):
    assert client.post("/v1/webhooks/nobody", content=event()).status_code == 404
    schema = client.get("/v1/webhooks/schema").json()
    assert "doc_id" in schema["properties"] and "doc_id" in schema["required"]


def test_a_missing_or_short_secret_fails_at_start_up(tmp_path, monkeypatch):
    from ragstream.connector import ConnectorError

    sources = tmp_path / "sources.toml"
    sources.write_text('[sources.crm]\nkind = "webhook"\nsecret_env = "NOT_SET_ANYWHERE"\n')
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(ConnectorError, match="NOT_SET_ANYWHERE is missing or shorter than 16"):
        create_app(load_settings(home=tmp_path / "home", sources_file=sources))

"""Signed webhooks: a system that pushes its changes to ragstream instead of being read.

A webhook source is declared in the sources file with its shared secret's location::

    [sources.crm]
    kind = "webhook"
    secret_env = "CRM_WEBHOOK_SECRET"   # or secret_file = "/run/secrets/crm-webhook"
    tolerance_s = 300                   # how old a timestamp may be (default 5 minutes)

and the sender POSTs one ChangeEvent (JSON; its JSON Schema is ``schemas/json/
ChangeEvent.schema.json``, also served at ``GET /v1/webhooks/schema``) to
``/v1/webhooks/<source id>`` on the API with two headers::

    X-Ragstream-Timestamp: <unix seconds>
    X-Ragstream-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>

and optionally ``Idempotency-Key`` (default: the event's ``event_id``). The API refuses —
publishing nothing — a request without a valid signature (401), with a timestamp outside
the tolerance (401), whose idempotency key was already received (409: replay protection;
a sender's retry of an accepted request gets the same 409 and can treat it as done), or
whose body is not a ChangeEvent of this source with inline content (422). An accepted
event is published to ``rag.changes`` and acknowledged by the broker before the API answers
202.

Capabilities: none. A webhook source cannot list its documents (``verify`` says so) nor
read one again (DLQ replay and DSR rectification report it as pending at the source: the
sender must push it again).
"""

from producers.webhook.source import WebhookConfig, WebhookRefused, WebhookSource, sign

CONNECTOR = WebhookSource

__all__ = ["CONNECTOR", "WebhookConfig", "WebhookRefused", "WebhookSource", "sign"]

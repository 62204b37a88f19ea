"""S3 event notifications as SQS delivers them: which keys of which bucket changed.

Three shapes are read: S3's own (``{"Records": [{"eventName": "ObjectCreated:Put", "s3":
{"bucket": {"name"}, "object": {"key", "versionId"}}}]}``, keys URL-encoded with ``+`` for
a blank), the same wrapped by SNS (``{"Type": "Notification", "Message": "<json>"}``), and
EventBridge's (``{"detail-type": "Object Created", "detail": {"bucket": {"name"}, "object":
{"key"}}}``, keys as they are). ``s3:TestEvent`` (sent when the notification is configured)
names no key. The event's kind is not trusted for what to publish: the connector looks at
the object as it is now, so duplicated or reordered events (S3 guarantees neither order nor
uniqueness) do no harm.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from urllib.parse import unquote_plus


@dataclass
class Parsed:
    #: Keys of this bucket that changed (created, overwritten, deleted, re-tagged).
    keys: set[str] = field(default_factory=set)
    #: A test event, another bucket's records, or nothing to do.
    ignored: int = 0
    #: A body that is not a notification: something may have been missed (reconcile).
    unreadable: int = 0


def parse(bodies: list[str], bucket: str) -> Parsed:
    out = Parsed()
    for body in bodies:
        try:
            msg = json.loads(body)
            if isinstance(msg, dict) and msg.get("Type") == "Notification" and isinstance(msg.get("Message"), str):
                msg = json.loads(msg["Message"])  # SNS fan-out
        except ValueError:
            out.unreadable += 1
            continue
        if not isinstance(msg, dict):
            out.unreadable += 1
        elif msg.get("Event") == "s3:TestEvent":
            out.ignored += 1
        elif isinstance(msg.get("Records"), list):
            for rec in msg["Records"]:
                try:
                    if rec["s3"]["bucket"]["name"] != bucket:
                        out.ignored += 1
                        continue
                    out.keys.add(unquote_plus(rec["s3"]["object"]["key"]))
                except (KeyError, TypeError):
                    out.unreadable += 1
        elif isinstance(msg.get("detail"), dict) and msg.get("source") == "aws.s3":
            try:
                if msg["detail"]["bucket"]["name"] != bucket:
                    out.ignored += 1
                else:
                    out.keys.add(msg["detail"]["object"]["key"])
            except (KeyError, TypeError):
                out.unreadable += 1
        else:
            out.unreadable += 1
    return out

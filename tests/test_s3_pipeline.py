"""The S3 source end to end: a bucket on moto's S3 server (IAM checks on), its SQS bucket
notifications, the real pipeline, DLQ replay and ``ragstream verify`` — drift 0 after each
scenario: initial sync; create, modify, rename and delete followed live from the queue; a tag
change published as an ACL only; a dead-lettered object replayed once fixed; a restart
that reads nothing again; a lost cursor resynced without duplicates.

Few, small documents: the whole module takes about a minute once the pipeline runs.
"""

from __future__ import annotations

import io
import threading
import uuid

import pytest

from producers.s3 import S3Source
from ragstream.admin import wait_drained
from ragstream.connector import open_source
from ragstream.dlq import replay
from tests.producers.test_s3_source import (  # noqa: F401 - moto_s3 and bucket are fixtures
    CORRUPT_PDF,
    bucket,
    config,
    count_calls,
    moto_s3,
    notified_bucket,
    put,
    until,
    waiting,
)
from tests.test_verify_pipeline import findings, paragraphs, verify

pytestmark = pytest.mark.integration


def a_pdf(text: str) -> bytes:
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    page = canvas.Canvas(buf)
    page.drawString(72, 720, text)
    page.save()
    return buf.getvalue()


def checked(settings, monkeypatch, source_id: str, indexed: int) -> dict:
    assert wait_drained(settings, timeout=300)
    code, report = verify(settings, monkeypatch, source_id)
    assert (code, report["drift"], report["sources"][0]["indexed"]) == (0, 0, indexed), findings(report)
    return report


def test_an_s3_bucket_through_the_pipeline_notifications_dlq_replay_and_verify(pipeline, moto_s3, bucket,
                                                                                 monkeypatch):
    s = pipeline
    c = moto_s3.client()
    # Not versioned: moto 5.2.5 sends no ObjectRemoved notification for a delete marker (AWS
    # sends ObjectRemoved:DeleteMarkerCreated); versions are covered by tests/producers/test_s3_source.py.
    queue = notified_bucket(moto_s3, bucket)
    put(moto_s3, bucket, "a.md", "# Alpha\n\n" + paragraphs(11, 3), Tagging="readers=user:ann")
    put(moto_s3, bucket, "b.txt", paragraphs(12, 3))
    put(moto_s3, bucket, "c.html", f"<h1>Charlie</h1><p>{paragraphs(13, 2)}</p>")
    put(moto_s3, bucket, "report.pdf", CORRUPT_PDF)
    put(moto_s3, bucket, "photo.png", bytes(range(256)))
    cfg = config(moto_s3, bucket, sqs_queue_url=queue, acl_principals_tag="readers",
                 acl=[{"prefix": "", "principals": ["group:staff"]}])
    src = S3Source(s, cfg, f"s3-{uuid.uuid4().hex[:6]}")

    # initial sync
    stats = src.sync()
    assert (stats.added, stats.failed, stats.skipped_by_reason) == (3, 1, {"unsupported": 1})
    report = checked(s, monkeypatch, src.source_id, 3)
    assert findings(report)[src.doc_id("report.pdf")][0] == "dead_lettered"
    assert findings(report)[src.doc_id("photo.png")][0] == "skipped"

    # create, modify, rename (copy + delete), delete: followed live from the SQS queue
    stop = threading.Event()
    watcher = threading.Thread(target=src.watch, args=(stop,), daemon=True)
    src.poll_wait_s = 1
    watcher.start()
    try:
        assert until(lambda: waiting(moto_s3, queue) == 0, timeout=60)  # the start-up pass and old events
        lists = count_calls(src, "ListObjectsV2")
        put(moto_s3, bucket, "d.md", "# Delta\n\n" + paragraphs(14, 2))
        put(moto_s3, bucket, "a.md", "# Alpha\n\n" + paragraphs(15, 3), Tagging="readers=user:ann")
        c.copy_object(Bucket=bucket, Key="b2.txt", CopySource={"Bucket": bucket, "Key": "b.txt"})
        c.delete_object(Bucket=bucket, Key="b.txt")
        c.delete_object(Bucket=bucket, Key="c.html")
        assert until(lambda: set(src.cursor.items) == {"a.md", "b2.txt", "d.md"}
                     and waiting(moto_s3, queue) == 0, timeout=60)
        assert lists == []  # from the notifications, not from listing the bucket again
    finally:
        stop.set()
        watcher.join(timeout=30)
    assert not watcher.is_alive()
    checked(s, monkeypatch, src.source_id, 3)

    # a permission change (a tag) reaches the index as an ACL only: nothing re-read or re-embedded
    c.put_object_tagging(Bucket=bucket, Key="a.md", Tagging={"TagSet": [{"Key": "readers",
                                                                        "Value": "user:ann user:bob"}]})
    gets = count_calls(src, "GetObject")
    stats = src.sync()
    assert (stats.permission_only, stats.added + stats.changed + stats.deleted, gets) == (1, 0, [])
    checked(s, monkeypatch, src.source_id, 3)  # verify compares the index's ACL with the bucket's

    # the dead-lettered object, fixed at the source, is replayed from rag.dlq.ingest
    put(moto_s3, bucket, "report.pdf", a_pdf("Quarterly report: revenue and margin by region."))
    replayed, _ = replay(s, "ingest")
    assert replayed >= 1
    report = checked(s, monkeypatch, src.source_id, 4)
    assert src.doc_id("report.pdf") not in findings(report)

    # a restart resumes from the saved cursor: nothing is downloaded or published again
    again = open_source(s, src.source_id)
    gets = count_calls(again, "GetObject")
    stats = again.sync()
    assert (stats.published, stats.unchanged, gets) == (0, 4, [])
    checked(s, monkeypatch, src.source_id, 4)

    # the cursor is lost (an expired state, a new home): a full resync, each object once
    (s.home / "sources" / f"{src.source_id}.json").unlink()
    fresh = S3Source(s, cfg, src.source_id)
    stats = fresh.sync()
    assert (stats.added, stats.published) == (4, 4)
    report = checked(s, monkeypatch, src.source_id, 4)  # 4 documents indexed, none twice
    assert set(findings(report)) == {src.doc_id("photo.png")}

"""The S3 source against a real S3 API: moto's server (infra/moto.py) with IAM checks on, so a
wrong key or secret is refused as AWS refuses it. The broker is replaced by a publisher
that acknowledges at flush (or not, where a test says so); the pipeline test is
tests/test_s3_pipeline.py."""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.moto import MotoServer, create_access_key
from infra.stack import isolated_settings
from producers.s3 import S3Config, S3Source
from producers.s3.client import S3Unavailable
from ragstream.connector import ConnectorError, declared_sources, open_source
from ragstream.settings import load_settings
from schemas import topics

KEY_ENV, SECRET_ENV = "RAGSTREAM_TEST_S3_KEY", "RAGSTREAM_TEST_S3_SECRET"


@dataclass
class Moto:
    endpoint: str
    key: str
    secret: str

    def client(self, service: str = "s3"):
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.key, aws_secret_access_key=self.secret)


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory):
    """A moto server on a free loopback port, IAM checks on, and the one access key allowed."""
    home = tmp_path_factory.mktemp("moto") / "home"
    home.mkdir()
    server = MotoServer(isolated_settings(home), enforce_auth=True)
    server.start()
    try:
        key, secret = create_access_key(server.address)
        yield Moto(server.address, key, secret)
    finally:
        server.stop()


class RecordingPublisher:
    """Acknowledges every event at flush, like the broker would (``fail``: refuses them)."""

    def __init__(self):
        self.events, self.letters, self._callbacks, self.fail = [], [], [], False

    def publish(self, topic, event, on_delivery=None):
        self.events.append((topic, event))
        if on_delivery:
            self._callbacks.append(on_delivery)

    def dead_letter(self, stage, **kw):
        self.letters.append((stage, kw))

    def flush(self):
        for cb in self._callbacks:
            cb("broker down" if self.fail else None, None)
        self._callbacks.clear()

    def take(self):
        out, self.events = self.events, []
        return out


@pytest.fixture
def bucket(moto_s3, monkeypatch):
    monkeypatch.setenv(KEY_ENV, moto_s3.key)
    monkeypatch.setenv(SECRET_ENV, moto_s3.secret)
    name = f"docs-{uuid.uuid4().hex[:10]}"
    moto_s3.client().create_bucket(Bucket=name)
    return name


def config(moto_s3, bucket, **kw) -> S3Config:
    base = dict(bucket=bucket, endpoint_url=moto_s3.endpoint, access_key_id_env=KEY_ENV,
                secret_access_key_env=SECRET_ENV)
    return S3Config.model_validate({**base, **kw})


def make(tmp_path, moto_s3, bucket, source_id="s3-docs", settings=None, **kw):
    pub = RecordingPublisher()
    s = settings or load_settings(home=tmp_path / "home")
    return S3Source(s, config(moto_s3, bucket, **kw), source_id, publisher=pub), pub


def count_calls(src, operation):
    """Every ``operation`` request the source's client sends (what it downloads, lists, ...)."""
    calls = []
    src.client.s3.meta.events.register(f"before-parameter-build.s3.{operation}", lambda params, **_: calls.append(dict(params)))
    return calls


def put(moto_s3, bucket, key, body, **kw):
    return moto_s3.client().put_object(Bucket=bucket, Key=key, Body=body.encode() if isinstance(body, str) else body,
                                       **kw)


def ops(events):
    return sorted((t.split(".")[-1], e.doc_id, getattr(getattr(e, "op", None), "value", "acl")) for t, e in events)


CORRUPT_PDF = b"%PDF-1.4\n1 0 obj not a pdf at all\n"


# -- initial sync, create, modify, rename, delete --------------------------------------------
def test_initial_sync_then_create_modify_rename_delete(tmp_path, moto_s3, bucket):
    put(moto_s3, bucket, "a.md", "# Alpha\n\nfirst text")
    put(moto_s3, bucket, "sub/b.txt", "bravo text")
    put(moto_s3, bucket, "c.html", "<h1>Charlie</h1><p>page</p>")
    put(moto_s3, bucket, "photo.png", bytes(range(256)))
    put(moto_s3, bucket, "report.pdf", CORRUPT_PDF)
    put(moto_s3, bucket, "big.txt", "x" * 5000)
    put(moto_s3, bucket, "folder/", b"")  # a console "folder": not a document
    s = load_settings(home=tmp_path / "home", max_document_bytes=4096)
    src, pub = make(tmp_path, moto_s3, bucket, settings=s, acl=[{"prefix": "", "principals": ["group:staff"]}])
    gets = count_calls(src, "GetObject")
    stats = src.sync()
    assert (stats.added, stats.failed, stats.skipped_by_reason) == (3, 1, {"too_large": 1, "unsupported": 1})
    assert sorted(g["Key"] for g in gets) == ["a.md", "c.html", "report.pdf", "sub/b.txt"]  # png, big: not read
    events = pub.take()
    assert {e.doc_id for _, e in events} == {"s3-docs:a.md", "s3-docs:sub/b.txt", "s3-docs:c.html"}
    a = next(e for _, e in events if e.doc_id == "s3-docs:a.md")
    assert (a.metadata.title, a.metadata.uri, a.acl.principals) == ("Alpha", f"s3://{bucket}/a.md", ("group:staff",))
    assert a.content.text.startswith("# Alpha")
    assert pub.letters and pub.letters[0][1]["key"] == "s3-docs:report.pdf"
    assert src.cursor.skipped["report.pdf"]["reason"] == "extraction_failed"

    # nothing changed: nothing read, nothing published
    gets.clear()
    stats = src.sync()
    assert (stats.published, stats.unchanged, gets) == (0, 3, [])

    c = moto_s3.client()
    put(moto_s3, bucket, "d.md", "delta, new")  # create
    put(moto_s3, bucket, "a.md", "# Alpha\n\nsecond text")  # modify
    c.copy_object(Bucket=bucket, Key="sub/b2.txt", CopySource={"Bucket": bucket, "Key": "sub/b.txt"})  # rename
    c.delete_object(Bucket=bucket, Key="sub/b.txt")
    c.delete_object(Bucket=bucket, Key="c.html")  # delete
    stats = src.sync()
    assert (stats.added, stats.changed, stats.deleted, stats.unchanged) == (2, 1, 2, 0)
    assert ops(pub.take()) == [("changes", "s3-docs:a.md", "upsert"), ("changes", "s3-docs:c.html", "delete"),
                               ("changes", "s3-docs:d.md", "upsert"), ("changes", "s3-docs:sub/b.txt", "delete"),
                               ("changes", "s3-docs:sub/b2.txt", "upsert")]
    assert sorted(g["Key"] for g in gets) == ["a.md", "d.md", "sub/b2.txt"]
    assert set(src.cursor.items) == {"a.md", "d.md", "sub/b2.txt"}


def test_prefix_include_exclude_select_keys(tmp_path, moto_s3, bucket):
    for key in ("team/a.md", "team/drafts/b.md", "team/c.txt", "other/d.md"):
        put(moto_s3, bucket, key, f"text of {key}")
    src, pub = make(tmp_path, moto_s3, bucket, prefix="team/", include=["**/*.md"], exclude=["team/drafts/*"])
    assert src.sync().added == 1
    assert [e.doc_id for _, e in pub.take()] == ["s3-docs:team/a.md"]
    assert not src.selected("team/") and not src.selected("other/d.md")


# -- permissions ----------------------------------------------------------------------------
def test_a_tag_change_publishes_only_the_acl_and_reads_no_object(tmp_path, moto_s3, bucket):
    put(moto_s3, bucket, "hr/pay.md", "salaries", Tagging="readers=user:ann")
    put(moto_s3, bucket, "hr/policy.md", "policy", Tagging="class=public")
    put(moto_s3, bucket, "misc/x.md", "no rule matches this one")
    src, pub = make(tmp_path, moto_s3, bucket, acl_principals_tag="readers",
                    acl=[{"prefix": "hr/", "principals": ["group:hr"]},
                         {"tag": "class=public", "principals": ["public"]}])
    src.sync()
    acls = {e.doc_id: e.acl.principals for _, e in pub.take()}
    assert acls == {"s3-docs:hr/pay.md": ("group:hr", "user:ann"), "s3-docs:hr/policy.md": ("group:hr", "public"),
                    "s3-docs:misc/x.md": ()}  # fail closed: no rule, nobody

    moto_s3.client().put_object_tagging(Bucket=bucket, Key="hr/pay.md", Tagging={"TagSet": [
        {"Key": "readers", "Value": "user:ann user:bob not-a-principal"}]})
    gets = count_calls(src, "GetObject")
    stats = src.sync()
    assert (stats.permission_only, stats.added + stats.changed, stats.unchanged, gets) == (1, 0, 2, [])
    [(topic, change)] = pub.take()
    assert (topic, change.doc_id, change.acl.principals) == (topics.ACL, "s3-docs:hr/pay.md",
                                                             ("group:hr", "user:ann", "user:bob"))
    assert src.cursor.items["hr/pay.md"]["acl"] == ["group:hr", "user:ann", "user:bob"]

    # the mapping itself changes (the sources file): permission-only as well
    again, pub2 = make(tmp_path, moto_s3, bucket, acl_principals_tag="readers",
                       acl=[{"prefix": "hr/", "principals": ["group:hr-staff"]}])
    stats = again.sync()
    assert (stats.permission_only, stats.added + stats.changed) == (2, 0)
    assert {t for t, _ in pub2.take()} == {topics.ACL}


# -- restart and cursor ---------------------------------------------------------------------
def test_restart_resumes_from_the_saved_cursor_without_reading_objects_again(tmp_path, moto_s3, bucket):
    for i in range(5):
        put(moto_s3, bucket, f"k{i}.md", f"text {i}")
    src, _ = make(tmp_path, moto_s3, bucket, page_size=2)
    assert src.sync().added == 5
    # a new process: the source reopened from its cursor (as verify and DLQ replay do)
    s = load_settings(home=tmp_path / "home")
    again = open_source(s, "s3-docs", publisher=RecordingPublisher())
    assert isinstance(again, S3Source) and again.config.page_size == 2
    gets = count_calls(again, "GetObject")
    stats = again.sync()
    assert (stats.published, stats.unchanged, gets) == (0, 5, [])


def test_an_interrupted_pass_resumes_after_the_last_committed_page(tmp_path, moto_s3, bucket):
    for i in range(5):
        put(moto_s3, bucket, f"k{i}.md", f"text {i}")
    src, pub = make(tmp_path, moto_s3, bucket, page_size=2)
    calls = count_calls(src, "GetObject")

    def crash(params, **_):
        if len(calls) == 3:  # the first page (k0, k1) was committed; k2 is being read
            raise KeyboardInterrupt("the process dies")
    src.client.s3.meta.events.register("before-parameter-build.s3.GetObject", crash)
    with pytest.raises(KeyboardInterrupt):
        src.sync()
    assert set(src.cursor.items) == {"k0.md", "k1.md"}
    assert src.cursor.position["listing"]["after"] == "k1.md"

    again, pub2 = make(tmp_path, moto_s3, bucket, page_size=2)
    lists, gets = count_calls(again, "ListObjectsV2"), count_calls(again, "GetObject")
    stats = again.sync()
    assert lists[0]["StartAfter"] == "k1.md"  # resumed, not listed from the start
    assert (stats.added, sorted(g["Key"] for g in gets)) == (3, ["k2.md", "k3.md", "k4.md"])
    assert again.cursor.position["listing"]["after"] is None  # the pass is complete
    assert set(again.cursor.items) == {f"k{i}.md" for i in range(5)}
    # the next pass starts from the beginning again (deletions anywhere are found)
    moto_s3.client().delete_object(Bucket=bucket, Key="k0.md")
    assert again.sync().deleted == 1


def test_deletions_are_found_in_every_page_range(tmp_path, moto_s3, bucket):
    for i in range(7):
        put(moto_s3, bucket, f"k{i}.md", f"text {i}")
    src, pub = make(tmp_path, moto_s3, bucket, page_size=2)
    src.sync()
    for key in ("k0.md", "k3.md", "k6.md"):  # first page, middle page, after the last listed key
        moto_s3.client().delete_object(Bucket=bucket, Key=key)
    pub.take()
    stats = src.sync()
    assert stats.deleted == 3
    assert sorted(e.doc_id for _, e in pub.take()) == ["s3-docs:k0.md", "s3-docs:k3.md", "s3-docs:k6.md"]


def test_an_invalid_position_or_a_lost_cursor_leads_to_a_full_resync_without_duplicates(tmp_path, moto_s3, bucket):
    for i in range(4):
        put(moto_s3, bucket, f"k{i}.md", f"text {i}")
    src, pub = make(tmp_path, moto_s3, bucket, page_size=3)
    src.sync()
    pub.take()
    # a position that does not belong to this listing (garbage, another selection)
    src.cursor.position["listing"] = {"scope": {"bucket": "elsewhere"}, "after": "zzz"}
    src.cursor.save()
    again, pub2 = make(tmp_path, moto_s3, bucket, page_size=3)
    lists = count_calls(again, "ListObjectsV2")
    stats = again.sync()
    assert "StartAfter" not in lists[0]  # from the start
    assert (stats.published, stats.unchanged) == (0, 4)  # nothing twice

    # the cursor is gone (a new home, an expired state): every object once, and only once
    cursor_file = tmp_path / "home" / "sources" / "s3-docs.json"
    cursor_file.unlink()
    fresh, pub3 = make(tmp_path, moto_s3, bucket, page_size=3)
    stats = fresh.sync()
    events = pub3.take()
    assert stats.added == 4 and len(events) == 4 and len({e.doc_id for _, e in events}) == 4


def test_unacknowledged_events_leave_the_cursor_where_it_was(tmp_path, moto_s3, bucket):
    put(moto_s3, bucket, "a.md", "alpha")
    src, pub = make(tmp_path, moto_s3, bucket)
    pub.fail = True
    src.sync()
    assert src.cursor.items == {} and src.cursor.position.get("listing") is None
    pub.fail = False
    assert src.sync().added == 1  # sent again


# -- versions -------------------------------------------------------------------------------
def test_a_versioned_bucket_is_read_by_version_and_delete_markers_delete(tmp_path, moto_s3, bucket):
    c = moto_s3.client()
    c.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    v1 = put(moto_s3, bucket, "a.md", "version one")["VersionId"]
    src, pub = make(tmp_path, moto_s3, bucket)
    gets = count_calls(src, "GetObject")
    assert src.sync().added == 1
    assert gets[-1]["VersionId"] == v1
    assert src.cursor.items["a.md"]["version_id"] == v1
    [(_, event)] = pub.take()
    assert event.metadata.extra["version_id"] == v1

    v2 = put(moto_s3, bucket, "a.md", "version two")["VersionId"]
    assert src.sync().changed == 1 and gets[-1]["VersionId"] == v2
    v3 = put(moto_s3, bucket, "a.md", "version two")["VersionId"]  # same bytes, a new version
    pub.take()
    gets.clear()
    stats = src.sync()
    assert (stats.published, gets) == (0, [])  # same ETag: not read, not published
    assert src.cursor.items["a.md"]["version_id"] == v3

    c.delete_object(Bucket=bucket, Key="a.md")  # a delete marker; older versions stay
    assert src.sync().deleted == 1
    assert [e.doc_id for _, e in pub.take()] == ["s3-docs:a.md"]


# -- DLQ replay ----------------------------------------------------------------------------
def test_reread_reads_a_dead_lettered_object_again_once_fixed(tmp_path, moto_s3, bucket):
    put(moto_s3, bucket, "report.docx", b"PK not a zip at all")
    src, pub = make(tmp_path, moto_s3, bucket)
    assert src.sync().failed == 1
    assert src.sync().failed == 0  # the same bytes are not read again
    import io

    from docx import Document

    doc, buf = Document(), io.BytesIO()
    doc.add_paragraph("the fixed report")
    doc.save(buf)
    put(moto_s3, bucket, "report.docx", buf.getvalue())
    stats = open_source(load_settings(home=tmp_path / "home"), "s3-docs", publisher=pub).reread(["s3-docs:report.docx"])
    assert stats.added == 1
    assert "the fixed report" in pub.events[-1][1].content.text
    # a document deleted at the source is published as deleted by a reread
    moto_s3.client().delete_object(Bucket=bucket, Key="report.docx")
    assert open_source(load_settings(home=tmp_path / "home"), "s3-docs",
                       publisher=pub).reread(["s3-docs:report.docx"]).deleted == 1


# -- full listing (verify) -----------------------------------------------------------------
def test_full_listing_reports_changes_and_exclusions_without_reading_objects(tmp_path, moto_s3, bucket):
    put(moto_s3, bucket, "a.md", "alpha", Tagging="readers=user:ann")
    put(moto_s3, bucket, "b.pdf", CORRUPT_PDF)
    put(moto_s3, bucket, "c.png", b"\x89PNG")
    src, _ = make(tmp_path, moto_s3, bucket, acl_principals_tag="readers")
    src.sync()
    gets = count_calls(src, "GetObject")
    listing = {d.doc_id: d for d in src.full_listing()}
    assert gets == []
    assert listing["s3-docs:a.md"].changed_since_published is False
    assert listing["s3-docs:a.md"].acl == ("user:ann",)
    assert (listing["s3-docs:b.pdf"].kind, listing["s3-docs:c.png"].kind) == ("dead_lettered", "skipped")
    put(moto_s3, bucket, "a.md", "alpha 2", Tagging="readers=user:ann")
    put(moto_s3, bucket, "d.md", "new")
    listing = {d.doc_id: d for d in src.full_listing()}
    assert listing["s3-docs:a.md"].changed_since_published and listing["s3-docs:d.md"].version is None


# -- live: SQS notifications ---------------------------------------------------------------
def notified_bucket(moto_s3, bucket):
    sqs = moto_s3.client("sqs")
    url = sqs.create_queue(QueueName=f"{bucket}-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    moto_s3.client().put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*",
                                                             "s3:ObjectTagging:*"]}]})
    return url


def waiting(moto_s3, url) -> int:
    attrs = moto_s3.client("sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
    return sum(int(v) for v in attrs["Attributes"].values())


def until(cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    return False


def test_watch_follows_sqs_notifications_and_deletes_them_only_once_acknowledged(tmp_path, moto_s3, bucket):
    url = notified_bucket(moto_s3, bucket)  # the queue now holds S3's test event
    put(moto_s3, bucket, "before.md", "made while nothing watched")
    src, pub = make(tmp_path, moto_s3, bucket, sqs_queue_url=url, acl_principals_tag="readers")
    src.poll_wait_s = 1
    lists = count_calls(src, "ListObjectsV2")
    stop, syncs = threading.Event(), []
    thread = threading.Thread(target=src.watch, args=(stop, syncs.append), daemon=True)
    thread.start()
    try:
        assert until(lambda: "before.md" in src.cursor.items)  # the reconciliation at start
        assert until(lambda: waiting(moto_s3, url) == 0)  # test event and before.md's notification consumed
        c = moto_s3.client()
        put(moto_s3, bucket, "dir/new doc+1.md", "created live")  # a key S3 URL-encodes
        put(moto_s3, bucket, "before.md", "modified live")
        assert until(lambda: "dir/new doc+1.md" in src.cursor.items
                     and any(e.doc_id == "s3-docs:before.md" and e.op.value == "upsert"
                             for _, e in pub.events[1:]))
        c.put_object_tagging(Bucket=bucket, Key="before.md", Tagging={"TagSet": [{"Key": "readers",
                                                                                "Value": "user:ann"}]})
        c.copy_object(Bucket=bucket, Key="renamed.md", CopySource={"Bucket": bucket, "Key": "dir/new doc+1.md"})
        c.delete_object(Bucket=bucket, Key="dir/new doc+1.md")
        assert until(lambda: set(src.cursor.items) == {"before.md", "renamed.md"}
                     and src.cursor.items["before.md"]["acl"] == ["user:ann"])
        assert until(lambda: waiting(moto_s3, url) == 0)  # every notification deleted once acknowledged
        assert len(lists) == 1  # live changes came from the queue, not from listing again
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    kinds = [(t.split(".")[-1], e.doc_id) for t, e in pub.events]
    assert ("acl", "s3-docs:before.md") in kinds and ("changes", "s3-docs:dir/new doc+1.md") in kinds


def test_notifications_whose_events_were_not_acknowledged_stay_in_the_queue(tmp_path, moto_s3, bucket):
    url = notified_bucket(moto_s3, bucket)
    sqs = moto_s3.client("sqs")
    src, pub = make(tmp_path, moto_s3, bucket, sqs_queue_url=url)
    put(moto_s3, bucket, "a.md", "alpha")
    msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=1)["Messages"]
    pub.fail = True
    src._notified({"a.md"}, msgs)
    assert "a.md" not in src.cursor.items
    assert waiting(moto_s3, url) == len(msgs)  # still there (the test event too): redelivered after the timeout
    time.sleep(1.2)
    msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=2)["Messages"]
    pub.fail = False
    src._notified({"a.md"}, msgs)
    assert "a.md" in src.cursor.items and waiting(moto_s3, url) == 0


def test_watch_falls_back_to_listing_when_the_queue_does_not_exist(tmp_path, moto_s3, bucket):
    src, pub = make(tmp_path, moto_s3, bucket, sqs_queue_url=f"{moto_s3.endpoint}/123456789012/no-such-queue")
    stop = threading.Event()
    thread = threading.Thread(target=src.watch, args=(stop,), kwargs={"interval_s": 0.5}, daemon=True)
    thread.start()
    try:
        put(moto_s3, bucket, "late.md", "found by a reconciliation pass")
        assert until(lambda: "late.md" in src.cursor.items, timeout=20)
    finally:
        stop.set()
        thread.join(timeout=10)


# -- throttling and errors -------------------------------------------------------------------
class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_):
        yield self.body


def throttle(src, operation, times, status=503, code="SlowDown", headers=None):
    """S3 answers ``operation`` with ``status``/``code`` ``times`` times (as AWS throttles)."""
    from botocore.awsrequest import AWSResponse

    left = [times]

    def hook(request, **_):
        if left[0] > 0:
            left[0] -= 1
            body = f"<Error><Code>{code}</Code><Message>Please reduce your request rate.</Message></Error>".encode()
            return AWSResponse(request.url, status, {"Content-Type": "application/xml", **(headers or {})}, _Raw(body))
        return None
    src.client.s3.meta.events.register(f"before-send.s3.{operation}", hook)
    return left


def test_throttling_is_retried_with_backoff_within_the_budget(tmp_path, moto_s3, bucket):
    put(moto_s3, bucket, "a.md", "alpha")
    src, _ = make(tmp_path, moto_s3, bucket)
    slept = []
    src.client.sleep = slept.append
    throttle(src, "ListObjectsV2", 2)
    throttle(src, "GetObject", 1, headers={"Retry-After": "3"})
    assert src.sync().added == 1
    assert [(op, code) for op, code, _ in src.client.retries] == [
        ("list_objects_v2", "SlowDown"), ("list_objects_v2", "SlowDown"), ("GetObject", "SlowDown")]
    assert slept == [0.5, 1.0, 3.0]  # exponential backoff; Retry-After honoured


def test_throttling_beyond_the_budget_fails_the_sync_with_the_reason(tmp_path, moto_s3, bucket):
    clock = [0.0]
    s = load_settings(home=tmp_path / "home", retry_budget_s=5)
    src, _ = make(tmp_path, moto_s3, bucket, settings=s)
    src.client.sleep = lambda d: clock.__setitem__(0, clock[0] + d)
    src.client.clock = lambda: clock[0]
    throttle(src, "ListObjectsV2", 100)
    with pytest.raises(S3Unavailable, match=r"SlowDown.*RAGSTREAM_RETRY_BUDGET_S"):
        src.sync()
    assert 3 <= len(src.client.retries) <= 5 and clock[0] <= 5


def test_an_unreachable_endpoint_is_retried_then_reported(tmp_path, moto_s3, bucket, monkeypatch):
    from infra.stack import free_port

    s = load_settings(home=tmp_path / "home", retry_budget_s=2)
    src, _ = make(tmp_path, moto_s3, bucket, settings=s, endpoint_url=f"http://127.0.0.1:{free_port()}")
    src.client.sleep = lambda d: None
    with pytest.raises(S3Unavailable, match="EndpointConnectionError|Could not connect"):
        src.sync()
    assert src.client.retries and src.client.retries[0][1] == "EndpointConnectionError"


@pytest.mark.parametrize("broken, code", [("secret", "SignatureDoesNotMatch"), ("key", "InvalidAccessKeyId")])
def test_wrong_credentials_give_a_clear_error(tmp_path, moto_s3, bucket, monkeypatch, broken, code):
    wrong = "wrong-" + uuid.uuid4().hex
    monkeypatch.setenv(SECRET_ENV if broken == "secret" else KEY_ENV, wrong)
    src, pub = make(tmp_path, moto_s3, bucket)
    for attempt in (src.sync, src.test_connection):
        with pytest.raises(ConnectorError) as err:
            attempt()
        msg = str(err.value)
        assert code in msg and KEY_ENV in msg and SECRET_ENV in msg  # where they come from
        assert wrong not in msg and moto_s3.secret not in msg  # never the values
        assert ("secret access key" if broken == "secret" else "access key id") in msg
    assert src.client.retries == []  # not retried: waiting does not fix a wrong key


def test_missing_credentials_and_bucket_are_clear_errors(tmp_path, moto_s3, bucket, monkeypatch):
    monkeypatch.delenv(SECRET_ENV)
    src, _ = make(tmp_path, moto_s3, bucket)
    with pytest.raises(ConnectorError, match=f"{SECRET_ENV}.*not set"):
        src.test_connection()
    monkeypatch.setenv(SECRET_ENV, moto_s3.secret)
    src, _ = make(tmp_path, moto_s3, "no-such-bucket-here", source_id="s3-other")
    with pytest.raises(ConnectorError, match="no-such-bucket-here.*does not exist"):
        src.test_connection()


def test_test_connection_says_what_it_found(tmp_path, moto_s3, bucket):
    put(moto_s3, bucket, "a.md", "alpha")
    url = notified_bucket(moto_s3, bucket)
    src, _ = make(tmp_path, moto_s3, bucket, sqs_queue_url=url)
    out = src.test_connection()
    assert f"s3://{bucket}/" in out and "1 object(s)" in out and "versioning off" in out and url in out


def test_credentials_from_a_secret_file(tmp_path, moto_s3, bucket, monkeypatch):
    secret = tmp_path / "s3.credentials"
    secret.write_text(f"[ragstream]\naws_access_key_id = {moto_s3.key}\naws_secret_access_key = {moto_s3.secret}\n")
    put(moto_s3, bucket, "a.md", "alpha")
    cfg = S3Config(bucket=bucket, endpoint_url=moto_s3.endpoint, credentials_file=secret,
                   credentials_profile="ragstream")
    src = S3Source(load_settings(home=tmp_path / "home"), cfg, "s3-file", publisher=RecordingPublisher())
    assert src.sync().added == 1
    assert moto_s3.secret not in json.dumps(json.loads((tmp_path / "home" / "sources" / "s3-file.json").read_text()))


# -- the sources file -----------------------------------------------------------------------
def test_declared_in_the_sources_file(tmp_path, moto_s3, bucket):
    path = tmp_path / "sources.toml"
    path.write_text(f"""
[sources.team-s3]
kind = "s3"
bucket = "{bucket}"
endpoint_url = "{moto_s3.endpoint}"
access_key_id_env = "{KEY_ENV}"
secret_access_key_env = "{SECRET_ENV}"
acl_principals_tag = "readers"

[[sources.team-s3.acl]]
prefix = "hr/"
principals = ["group:hr"]
""")
    s = load_settings(home=tmp_path / "home", sources_file=path)
    [src] = declared_sources(s, publisher=RecordingPublisher())
    assert isinstance(src, S3Source) and src.config.acl[0].principals == ("group:hr",)
    put(moto_s3, bucket, "hr/a.md", "alpha")
    assert src.sync().added == 1
    assert open_source(s, "team-s3", publisher=RecordingPublisher()).config == src.config


def test_config_errors_name_the_field_and_never_echo_a_secret(tmp_path):
    from ragstream.connector import SourcesFileError

    path = tmp_path / "sources.toml"
    path.write_text("""
[sources.bad-s3]
kind = "s3"
bucket = "B"
access_key_id_env = "AKIA_LIKE_NAME"
secret_access_key_env = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
aws_secret_access_key = "inline-secret-value"

[[sources.bad-s3.acl]]
principals = ["everyone"]
""")
    with pytest.raises(SourcesFileError) as err:
        declared_sources(load_settings(home=tmp_path / "home", sources_file=path))
    msg = str(err.value)
    for field in ("bucket", "secret_access_key_env", "aws_secret_access_key", "acl.0"):
        assert f"[sources.bad-s3] {field}" in msg, msg
    assert "wJalrXUtnFEMI" not in msg and "inline-secret-value" not in msg
    with pytest.raises(ValueError, match="go together"):
        S3Config(bucket="docs", access_key_id_env="K")


def test_notification_bodies_of_every_shape():
    from producers.s3.notifications import parse

    s3_record = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "docs"},
                                                                     "object": {"key": "a+dir%2F%C3%A9+x%2By.md"}}},
                             {"eventName": "ObjectRemoved:Delete", "s3": {"bucket": {"name": "other"},
                                                                        "object": {"key": "b.md"}}}]}
    sns = {"Type": "Notification", "Message": json.dumps({"Records": [
        {"eventName": "ObjectTagging:Put", "s3": {"bucket": {"name": "docs"}, "object": {"key": "c.md"}}}]})}
    bridge = {"source": "aws.s3", "detail-type": "Object Deleted",
              "detail": {"bucket": {"name": "docs"}, "object": {"key": "d e.md"}}}
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "docs"}
    parsed = parse([json.dumps(s3_record), json.dumps(sns), json.dumps(bridge), json.dumps(test_event),
                    "not json", json.dumps({"Records": [{"s3": {}}]})], "docs")
    assert parsed.keys == {"a dir/é x+y.md", "c.md", "d e.md"}
    assert (parsed.ignored, parsed.unreadable) == (2, 2)


def test_an_object_the_credentials_may_not_read_is_skipped_and_a_denied_bucket_is_a_clear_error(
        tmp_path, moto_s3, bucket, monkeypatch):
    iam = moto_s3.client("iam")
    user = f"limited-{uuid.uuid4().hex[:6]}"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "*", "Resource": "*"},
        {"Effect": "Deny", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/secret/*"},
        {"Effect": "Deny", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::locked-*"}]}))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    monkeypatch.setenv(KEY_ENV, key["AccessKeyId"])
    monkeypatch.setenv(SECRET_ENV, key["SecretAccessKey"])
    put(moto_s3, bucket, "open.md", "readable")
    put(moto_s3, bucket, "secret/plan.md", "not for this reader")
    src, _ = make(tmp_path, moto_s3, bucket)
    stats = src.sync()
    assert (stats.added, stats.skipped_by_reason) == (1, {"unreadable": 1})
    assert "access denied" in src.cursor.skipped["secret/plan.md"]["detail"]
    assert {d.doc_id: d.kind for d in src.full_listing() if hasattr(d, "kind")} == {"s3-docs:secret/plan.md": "skipped"}
    assert src.sync().skipped_by_reason == {"unreadable": 1}  # tried again: a policy may change

    locked = f"locked-{uuid.uuid4().hex[:6]}"
    moto_s3.client().create_bucket(Bucket=locked)
    other, _ = make(tmp_path, moto_s3, locked, source_id="s3-locked")
    with pytest.raises(ConnectorError, match=r"AccessDenied.*s3:ListBucket"):
        other.sync()

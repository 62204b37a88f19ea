"""The publisher and the consumer loop against a real broker."""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict

import pytest
from confluent_kafka import TopicPartition

from infra.jvm import java_tool
from infra.stack import Stack
from ragstream.publisher import Publisher
from ragstream.kafka import write_java_client_config
from ragstream.admin import admin_client, ensure_topics
from ragstream.consumer import consume, make_consumer
from ragstream.selfcheck import sample_event
from schemas.events import ChangeEvent
from schemas.serde import dead_letter_from_headers, decode
from schemas.topics import TopicSpec, dlq_topic

pytestmark = pytest.mark.integration


def read_all(settings, topic: str, expected: int, timeout: float = 60) -> list:
    """Every message of ``topic`` from offset 0, by assignment (no group)."""
    reader = make_consumer(settings, f"reader-{uuid.uuid4().hex}", **{"enable.auto.commit": False})
    parts = reader.list_topics(topic, timeout=10).topics[topic].partitions
    reader.assign([TopicPartition(topic, p, 0) for p in parts])
    out, deadline = [], time.monotonic() + timeout
    while len(out) < expected and time.monotonic() < deadline:
        msg = reader.poll(0.5)
        if msg is not None and not msg.error():
            out.append(msg)
    # Linger briefly: anything beyond `expected` would be a duplicate.
    end = time.monotonic() + 2
    while time.monotonic() < end:
        msg = reader.poll(0.2)
        if msg is not None and not msg.error():
            out.append(msg)
    reader.close()
    return out


def test_ten_thousand_events_none_lost_none_duplicated_order_kept(settings, topic):
    run, n, keys = uuid.uuid4().hex[:8], 10_000, 100
    with Publisher(settings) as pub:
        for i in range(n):
            pub.publish(topic, sample_event(run, i % keys, i // keys))

    seen: dict[str, list[int]] = defaultdict(list)
    handled = []

    def handle(event, _msg):
        seen[event.doc_id].append(event.version)
        handled.append(1)

    stats = consume(settings, topics=[topic], contract=ChangeEvent, stage="index",
                    group_id=f"g-{run}", publisher=Publisher(settings), handle=handle,
                    stop=lambda: len(handled) >= n, idle_timeout=30)

    assert stats.handled == n
    assert len(seen) == keys
    for doc_id, versions in seen.items():
        assert versions == list(range(n // keys)), f"{doc_id} lost, duplicated or reordered events"


def test_consumer_group_offsets_are_committed(settings, topic, tmp_path):
    """After the loop, Kafka's own consumer-groups tool (a Java client) sees no lag."""
    run, n = uuid.uuid4().hex[:8], 300
    with Publisher(settings) as pub:
        for i in range(n):
            pub.publish(topic, sample_event(run, i % 7, i // 7))
    group = f"g-{run}"
    got = []
    consume(settings, topics=[topic], contract=ChangeEvent, stage="index", group_id=group,
            publisher=Publisher(settings), handle=lambda ev, _m: got.append(ev), stop=lambda: len(got) >= n,
            idle_timeout=30)
    assert len(got) == n
    out = java_tool(settings, "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
                    ["--bootstrap-server", settings.kafka_bootstrap, "--describe", "--group", group,
                     "--command-config", str(write_java_client_config(settings, tmp_path / "client.properties"))])
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith(group)]
    header = next(line.split() for line in out.stdout.splitlines() if "LAG" in line)
    committed = [int(r[header.index("CURRENT-OFFSET")]) for r in rows if r[header.index("CURRENT-OFFSET")] != "-"]
    assert sum(committed) == n, out.stdout  # every message's offset committed, across partitions
    assert sum(int(r[header.index("LAG")]) for r in rows if r[header.index("LAG")] != "-") == 0, out.stdout


def test_java_console_consumer_reads_what_python_wrote(settings, topic, tmp_path):
    run, n = uuid.uuid4().hex[:8], 50
    with Publisher(settings) as pub:
        for i in range(n):
            pub.publish(topic, sample_event(run, i, 0))
    out = java_tool(settings, "org.apache.kafka.tools.consumer.ConsoleConsumer", [
        "--bootstrap-server", settings.kafka_bootstrap, "--topic", topic, "--from-beginning",
        "--command-config", str(write_java_client_config(settings, tmp_path / "client.properties")),
        "--max-messages", str(n), "--timeout-ms", "30000",
        "--formatter-property", "print.key=true", "--formatter-property", "key.separator=\t",
    ])
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == n, out.stdout + out.stderr
    for line in lines:
        key, value = line.split("\t", 1)
        event = decode(ChangeEvent, value.encode())
        assert event.doc_id == key
        assert event.doc_id.startswith(f"selftest:{run}-")


def test_consumer_loop_dead_letters_bad_input_and_goes_on(settings, topic):
    run = uuid.uuid4().hex[:8]
    good = [sample_event(run, k, 0) for k in range(5)]
    bad = {
        b"not json at all": "not JSON",
        b'{"schema_version": 42, "doc_id": "x:y"}': "schema_version 42 is not supported",
        b'{"schema_version": 1, "source": "s", "op": "upsert"}': "field 'doc_id': Field required",
    }
    with Publisher(settings) as pub:
        for i, payload in enumerate(bad):
            pub.publish_raw(topic, f"bad-{i}", payload)
            pub.publish(topic, good[i])
        for event in good[len(bad):]:
            pub.publish(topic, event)

    dlq = dlq_topic("chunk")
    before = _end_offsets(settings, dlq)
    got = []
    stats = consume(settings, topics=[topic], contract=ChangeEvent, stage="chunk", group_id=f"g-{run}",
                    publisher=Publisher(settings), handle=lambda ev, _m: got.append(ev.doc_id),
                    idle_timeout=5)  # partitions are read in any order: run until all is quiet
    assert sorted(got) == sorted(e.doc_id for e in good)
    assert stats.dead_lettered == len(bad)

    letters = [m for m in _read_from(settings, dlq, before, len(bad)) if m.value() in bad]
    assert len(letters) == len(bad)
    for msg in letters:
        letter = dead_letter_from_headers(msg.headers())
        assert letter.stage == "chunk" and letter.topic == topic
        assert letter.error_type == "SerdeError"
        assert bad[msg.value()] in letter.error_message  # the reason names the problem


def _end_offsets(settings, topic):
    c = make_consumer(settings, "offsets")
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    c.close()
    return ends


def _read_from(settings, topic, starts, at_least, timeout=30):
    c = make_consumer(settings, f"r-{uuid.uuid4().hex}", **{"enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, o) for p, o in starts.items()])
    out, deadline = [], time.monotonic() + timeout
    while len(out) < at_least and time.monotonic() < deadline:
        msg = c.poll(0.5)
        if msg is not None and not msg.error():
            out.append(msg)
    c.close()
    return out


@pytest.mark.parametrize("how", ["graceful", "kill -9"])
def test_broker_restart_while_publishing_keeps_every_acknowledged_event_once(private_stack, how):
    settings = private_stack
    stack = Stack(settings, ("kafka",))
    stack.up()
    name = "restart"
    ensure_topics(settings, (TopicSpec(name, 3, {"cleanup.policy": "delete"}, None, "test"),))

    run, n, keys = uuid.uuid4().hex[:8], 6000, 30
    acked: list[tuple[str, int]] = []
    failed: list[str] = []
    pub = Publisher(settings, delivery_timeout_ms=180_000)

    def on_delivery(err, msg):
        if err is None:
            event = decode(ChangeEvent, msg.value())
            acked.append((event.doc_id, event.version))
        else:
            failed.append(err.str())

    stopped = threading.Event()

    def produce():
        for i in range(n):
            if i == n // 2:
                # The second half is published only once the broker is down, so the restart
                # always lands mid-stream (acknowledgements can arrive in one late burst).
                # Serve delivery callbacks meanwhile: they only run inside poll().
                while not stopped.wait(timeout=0.05):
                    pub.poll(0)
            pub.publish(name, sample_event(run, i % keys, i // keys), on_delivery=on_delivery)
            if i % 100 == 0:
                time.sleep(0.02)
        pub.flush()

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    deadline = time.monotonic() + 120
    while len(acked) < 1000 and time.monotonic() < deadline:
        time.sleep(0.01)
    if len(acked) < 1000:
        stopped.set()
        pytest.fail("the broker acknowledged fewer than 1,000 events in 120 s before the restart")
    if how == "graceful":
        stack["kafka"].stop()
    else:
        stack["kafka"].kill()
    stopped.set()
    stack.up()
    producer.join(timeout=240)
    assert not producer.is_alive()
    # No check that the restart landed mid-stream is needed: by construction the second half
    # (n // 2 events) was published while the broker was down.
    assert failed == []
    assert len(acked) == n

    messages = read_all(settings, name, n)
    log = [(m.key().decode(), decode(ChangeEvent, m.value()).version) for m in messages]
    assert len(log) == len(set(log)) == n, "duplicates or losses in the log"
    assert set(log) == set(acked)
    per_key: dict[str, list[int]] = defaultdict(list)
    for key, version in log:
        per_key[key].append(version)
    assert all(v == sorted(v) for v in per_key.values()), "per-document order broken"
    admin_client(settings).delete_topics([name])


def test_a_message_over_the_limit_travels_as_a_claim_check_and_reads_back(settings, topic, tmp_path):
    """A value larger than RAGSTREAM_MAX_MESSAGE_BYTES is stored in the blob store; the topic
    gets a small envelope; the plain consumer loop resolves it to the very same event."""
    from ragstream.publisher import CLAIM_HEADER
    from schemas.events import InlineContent

    s = settings.model_copy(update={"home": tmp_path / "home", "max_message_bytes": 65_536})
    big = sample_event("claim", 0, 1).model_copy(update={"content": InlineContent.of("lorem ipsum " * 50_000)})  # ~600 KB
    with Publisher(s) as pub:
        pub.publish(topic, big)
    c = make_consumer(s, f"t-{uuid.uuid4().hex[:6]}")
    c.subscribe([topic])
    msg = None
    deadline = time.monotonic() + 30
    while msg is None and time.monotonic() < deadline:
        m = c.poll(1)
        if m is not None and not m.error():
            msg = m
    c.close()
    assert msg is not None
    assert len(msg.value()) < 1000 and dict(msg.headers())[CLAIM_HEADER] == b"1"
    assert list((tmp_path / "home" / "blobs" / "claims").rglob("*"))
    from ragstream.consumer import blob_claims

    assert decode(ChangeEvent, msg.value(), claims=blob_claims(s)) == big


def test_a_fatal_producer_error_recreates_the_producer(settings, topic):
    """After a fatal error (e.g. the idempotent producer's sequence lost) the client is
    replaced on the next publish; what it still held was never acknowledged."""
    from confluent_kafka import KafkaError

    pub = Publisher(settings)
    first = pub._producer
    pub._on_error(KafkaError(KafkaError._FATAL, "test: idempotence sequence lost", fatal=True))
    acked = []
    pub.publish(topic, sample_event("fatal", 1, 1), on_delivery=lambda err, _m: acked.append(err))
    pub.flush()
    assert pub._producer is not first and acked == [None]

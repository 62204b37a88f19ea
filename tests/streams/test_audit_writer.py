"""The audit chain has one fenced writer: a second writer fences the first, which can then
commit nothing; the chain read back (transaction markers and aborted records skipped) stays
valid, whoever wrote which part."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from infra.stack import Stack, free_port, settings_env
from ragstream.publisher import Publisher
from ragstream.admin import ensure_topics, wait_drained
from schemas import topics
from schemas.events import AuditEvent
from schemas.serde import encode
from streams.audit import (AuditStage, ChainVerifier, ChainWriter, Checkpoints, WriterFenced, chain, read_chain,
                           tail, verify)

pytestmark = pytest.mark.integration


def test_a_second_writer_fences_the_first_and_the_chain_stays_valid(private_stack, tmp_path):
    s = private_stack
    Stack(s, ("kafka",)).up()
    ensure_topics(s)
    first = AuditStage(None, Checkpoints(s.home), writer=ChainWriter(s))
    for i in range(3):
        first.process(AuditEvent(actor="test", action="test.first", target=f"t{i}"))
    second = AuditStage(None, Checkpoints(s.home), writer=ChainWriter(s))
    second.process(AuditEvent(actor="test", action="test.second", target="s0"))  # fences the first
    assert second.seq == 4  # it read the committed tail before appending
    with pytest.raises(WriterFenced):
        first.process(AuditEvent(actor="test", action="test.first", target="stale"))
    second.process(AuditEvent(actor="test", action="test.second", target="s1"))
    records = list(read_chain(s))
    assert [r.target for r in records] == ["t0", "t1", "t2", "s0", "s1"]
    assert verify(records, Checkpoints(s.home)).ok
    assert tail(s).seq == 4  # the last record, found behind the commit markers

    # The worker's own watch: incremental, and it catches a forged record.
    from ragstream.metrics import AUDIT_CHAIN_BROKEN, AUDIT_CHAIN_VERIFIED

    second.checkpoint()
    watch = ChainVerifier(s, Checkpoints(s.home), max_records=2, step_s=0)
    assert watch.step().ok and watch.seq == 2, "at most max_records per read"
    while watch.seq < 5:
        assert watch.step().ok
    assert watch.checked == {4} and AUDIT_CHAIN_VERIFIED._value.get() == 5
    second.process(AuditEvent(actor="test", action="test.second", target="s2"))
    assert watch.step().ok and watch.seq == 6, "only the new record was read"
    assert ChainVerifier(s, Checkpoints(s.home), max_records=2).step().records == 6, "a step reads on to the end"

    # Records removed at the end: a signed checkpoint vouches for more than the chain holds.
    signed = Checkpoints(tmp_path / "other-home")
    signed.write(9, "f" * 64)  # validly signed, but the chain ends at seq 5
    short = ChainVerifier(s, signed, max_records=4, step_s=0)
    assert short.step().ok and short.seq == 4, "not at the end yet: a checkpoint ahead is pending"
    verdict = short.step()
    assert not verdict.ok and "records were removed" in verdict.problem

    # A record that cannot even be canonicalized (an integer past 2**53) is a break, not skipped.
    bad = chain(AuditEvent(actor="intruder", action="test.forged", target="x"), 6, watch.prev)
    bad_json = encode(bad).replace(b'"details":{}', b'"details":{"n":1152921504606846976}')
    assert bad_json != encode(bad)
    with Publisher(s) as pub:
        pub.publish_raw(topics.AUDIT, b"6", bad_json)
    verdict = watch.step()
    assert not verdict.ok and "not a verifiable audit record" in verdict.problem and verdict.seq == 6
    assert watch.step().problem == verdict.problem, "the break sticks"
    assert AUDIT_CHAIN_BROKEN._value.get() == 1
    AUDIT_CHAIN_BROKEN.set(0)  # the gauge is process-wide; other tests start clean


@pytest.mark.slow
def test_two_audit_workers_started_at_once_keep_one_valid_chain(pipeline):
    """A second audit worker joins the pipeline's group while events flow; rebalances move
    the one partition between them, each new holder fences the old one: the chain verifies,
    and every event is in it."""
    port = free_port()
    env = {**settings_env(pipeline), "RAGSTREAM_LOG_FORMAT": "json"}
    log = open(pipeline.home / "logs" / f"worker-audit-{port}.log", "ab")
    second = subprocess.Popen([sys.executable, "-m", "ragstream.cli", "--home", str(pipeline.home), "worker", "audit",
                               "--metrics-port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        events = [AuditEvent(actor="test", action="test.two-writers", target=f"e{i}") for i in range(300)]
        with Publisher(pipeline) as pub:
            for i, e in enumerate(events):
                pub.publish(topics.AUDIT_EVENTS, e, key=e.event_id)
                if i % 50 == 0:
                    pub.flush()
                    time.sleep(0.5)
        assert wait_drained(pipeline, timeout=300, stages=("audit",))
        # The second worker took part: it is still running, or it was fenced (exit 75) after
        # the supervised first worker took the partition back.
        assert second.poll() in (None, 75), f"the second audit worker failed (exit {second.poll()})"
    finally:
        second.terminate()
        second.wait(30)
    records = list(read_chain(pipeline))
    verdict = verify(records, Checkpoints(pipeline.home))
    assert verdict.ok, verdict.problem
    chained = {r.event_id for r in records}
    assert all(e.event_id in chained for e in events)

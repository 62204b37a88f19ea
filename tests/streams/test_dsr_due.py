"""The dsr worker exports how many requests are open and the earliest due date among them,
read from rag.dsr behind its group's committed offset (the alert RagstreamDsrDeadlineNear)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from confluent_kafka import KafkaException, TopicPartition

from ragstream.consumer import make_consumer
from ragstream.metrics import DSR_NEXT_DUE, DSR_OPEN
from ragstream.publisher import Publisher
from schemas import topics
from schemas.events import DsrKind, DsrRequest, utcnow
from streams.dsr import DsrStage

pytestmark = pytest.mark.integration


def watch(stage: DsrStage) -> None:
    """watch_due as the worker's timer runs it: a failure (the group coordinator of a fresh
    broker not ready yet) is retried at the next tick."""
    for _ in range(30):
        try:
            return stage.watch_due()
        except KafkaException:
            time.sleep(1)
    stage.watch_due()  # a 31st failure is the test's, with its reason


def commit_dsr_group(s, offset: int) -> None:
    """Move the dsr group's offset (retried while a fresh broker loads its coordinator)."""
    c = make_consumer(s, "ragstream-dsr", **{"enable.auto.commit": False})
    try:
        for attempt in range(30):
            try:
                c.commit(offsets=[TopicPartition(topics.DSR, 0, offset)], asynchronous=False)
                return
            except KafkaException:
                if attempt == 29:
                    raise
                time.sleep(1)
    finally:
        c.close()


def test_open_requests_and_the_earliest_due_date(settings):
    """On the session's broker (no dsr worker runs there): the group's offset is moved by hand."""
    s = settings
    c = make_consumer(s, "ragstream-lag-probe")
    try:
        _low, start = c.get_watermark_offsets(TopicPartition(topics.DSR, 0), timeout=10)
    finally:
        c.close()
    commit_dsr_group(s, start)  # whatever was there before counts as done
    stage = DsrStage.__new__(DsrStage)  # only watch_due is exercised: it needs the settings alone
    stage.settings = s
    watch(stage)
    assert (DSR_OPEN._value.get(), DSR_NEXT_DUE._value.get()) == (0, 0)

    now = utcnow()
    reqs = [DsrRequest(kind=DsrKind.erasure, framework=fw, subject_refs=("person:0123456789abcdef",),
                       received_at=now - age, due_at=now - age + timedelta(days=days), requested_by="test")
            for fw, days, age in (("CCPA", 45, timedelta(days=1)), ("GDPR", 30, timedelta(days=25)),
                                  ("GDPR", 30, timedelta(0)))]
    with Publisher(s) as pub:
        for r in reqs:
            pub.publish(topics.DSR, r, key=r.request_id)
        pub.flush()
    watch(stage)
    assert DSR_OPEN._value.get() == 3
    assert DSR_NEXT_DUE._value.get() == pytest.approx(reqs[1].due_at.timestamp())  # 5 days left

    commit_dsr_group(s, start + 2)  # the dsr group completed the first two: only the third is open
    watch(stage)
    assert DSR_OPEN._value.get() == 1
    assert DSR_NEXT_DUE._value.get() == pytest.approx(reqs[2].due_at.timestamp())

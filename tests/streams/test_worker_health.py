"""PartitionHealth: a partition with input waiting and no progress is reported, with its
document; idle is not stalled."""

from __future__ import annotations

from types import SimpleNamespace

from streams.worker import PartitionHealth


def event(partition: int, offset: int) -> SimpleNamespace:
    tp = SimpleNamespace(topic="rag.vectors", partition=partition)
    return SimpleNamespace(message=SimpleNamespace(tp=tp, offset=offset))


def test_stalled_partition_is_named_with_its_document_and_recovers() -> None:
    now = [100.0]
    health = PartitionHealth("index", stall_after_s=30, clock=lambda: now[0])
    tp0, tp1 = event(0, 0).message.tp, event(1, 0).message.tp
    hw = {0: 10, 1: 0}
    snap = lambda: health.snapshot(lambda tp: hw[tp.partition], [tp0, tp1])  # noqa: E731

    assert health.verdict(snap()) is None  # nothing in hand yet
    e = event(0, 4)
    health.begin([e], ["fs:big.txt"])
    health.retrying([e], "TransientIndexError: Milvus unreachable")
    now[0] += 29
    assert health.verdict(snap()) is None  # not yet past the threshold
    now[0] += 2
    bad = health.verdict(snap())
    assert bad is not None and bad["doc_id"] == "fs:big.txt" and bad["partition"] == 0
    assert "Milvus unreachable" in bad["reason"] and bad["stalled_s"] >= 31
    health.end(e)
    assert health.verdict(snap()) is None  # it moved
    # Input waits behind the last processed offset, nothing in hand (e.g. the fetcher stopped).
    now[0] += 40
    assert health.verdict(snap())["reason"].startswith("partition rag.vectors[0]")
    hw[0] = 5  # caught up: idle is not stalled
    assert health.verdict(snap()) is None
    now[0] += 1000
    assert health.verdict(snap()) is None


def test_a_long_document_that_keeps_moving_is_not_stalled() -> None:
    now = [0.0]
    health = PartitionHealth("embed", stall_after_s=30, clock=lambda: now[0])
    e = event(2, 7)
    health.begin([e], ["fs:big.txt"])
    snap = lambda: health.snapshot(lambda tp: 8, [e.message.tp])  # noqa: E731
    for _ in range(10):  # 200 s of embedding, a slice done every 20 s
        now[0] += 20
        health.touch()
        assert health.verdict(snap()) is None
    now[0] += 31  # then nothing for longer than the threshold
    assert health.verdict(snap())["doc_id"] == "fs:big.txt"

"""``ragstream status`` and ``GET /v1/admin/status``: the pipeline at a glance, and advice.

For each stage of the registry: its consumer-group lag (committed offsets against the
partitions' ends), throughput and busy share over a short window (two scrapes of the
workers' own ``/metrics`` — the stage's port and those of the extra workers ``ragstream
scale`` runs on this host: events read per second, and seconds spent processing per second
per worker — near 1.0 means the workers never wait for input), errors and retries in that window, the
dead letters waiting in ``rag.dlq.<stage>``, its ``/healthz`` verdict, and the time it would
take to drain its lag at the current rate. Plus the index's size.

Recommendations are computed from those numbers, not guessed: the bottleneck is the busiest
stage that has lag; when a stage needs longer than :data:`DRAIN_TARGET_S` to drain, the
advice is how many workers of it would drain in time (never more than its partitions, the
most a consumer group can use); dead letters and unhealthy workers are named with the
command that shows why.
"""

from __future__ import annotations

import math
import re
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any

from ragstream.settings import Settings

#: A stage that needs longer than this to drain its lag should get more workers.
DRAIN_TARGET_S = 60.0
#: Busy share above which a stage is saturated (it hardly ever waits for input).
SATURATED = 0.8

_SAMPLE = re.compile(r'^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\}\s+(?P<value>[-+0-9.eE]+|NaN)$')


@dataclass
class StageStatus:
    stage: str
    health: str  # ok | degraded | failed | down
    reason: str | None = None
    lag: int | None = None
    workers: int = 0
    partitions: int | None = None
    events_per_s: float | None = None
    busy: float | None = None  # seconds processing per second of the window, per worker
    errors: float = 0
    retries: float = 0
    dead_letters: int | None = None
    drain_s: float | None = None


@dataclass
class Status:
    stages: list[StageStatus]
    index_rows: int | None
    window_s: float
    recommendations: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_metrics(text: str, stage: str) -> dict[str, float]:
    """Sums of this stage's series we use, by metric name."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m or f'stage="{stage}"' not in m["labels"]:
            continue
        name = m["name"]
        if name in ("ragstream_stage_events_in_total", "ragstream_stage_processing_seconds_sum",
                    "ragstream_stage_errors_total", "ragstream_stage_retries_total"):
            out[name] = out.get(name, 0.0) + float(m["value"])
    return out


def _scrape(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.read().decode("utf-8", errors="replace")
    except OSError:
        return None


def collect(settings: Settings, window_s: float = 5.0, stages: tuple[str, ...] | None = None) -> Status:
    from infra.service import fetch_health
    from ragstream.admin import STAGE_INPUTS, admin_client, stage_lag
    from streams.registry import PIPELINE, replica_port

    names = stages or PIPELINE
    # Every worker of a stage on this host: its own port and those of `ragstream scale`'s
    # extra workers (streams.registry.replica_port), as many as a group can use.
    urls = {s: [f"http://127.0.0.1:{replica_port(settings, s, i)}" for i in range(1, settings.partitions + 1)]
            for s in names}
    first = {s: {u: _scrape(f"{u}/metrics") for u in us} for s, us in urls.items()}
    t0 = time.monotonic()
    time.sleep(window_s)
    second = {s: {u: _scrape(f"{u}/metrics") for u in us} for s, us in urls.items()}
    elapsed = time.monotonic() - t0
    try:
        lags: dict[str, int] = stage_lag(settings, tuple(s for s in names if s in STAGE_INPUTS))
    except Exception:  # noqa: BLE001 - the broker is down: say so per stage
        lags = {}
    admin = admin_client(settings)
    out = []
    rank = {"ok": 0, "degraded": 1, "failed": 2}
    for s in names:
        st = StageStatus(stage=s, health="down")
        a: dict[str, float] = {}
        b: dict[str, float] = {}
        for u in urls[s]:
            body = fetch_health(f"{u}/healthz") if second[s][u] is not None else None
            if body is not None:
                status = body.get("status", "ok")
                if st.workers == 0 or rank.get(status, 1) > rank.get(st.health, 0):
                    st.health, st.reason = status, body.get("reason")
                st.workers += 1
            if first[s][u] is not None and second[s][u] is not None:
                for mine, text in ((a, first[s][u]), (b, second[s][u])):
                    for name, value in parse_metrics(text or "", s).items():
                        mine[name] = mine.get(name, 0.0) + value
        if any(first[s][u] is not None and second[s][u] is not None for u in urls[s]):
            def delta(name: str) -> float:
                return max(b.get(name, 0.0) - a.get(name, 0.0), 0.0)
            st.events_per_s = round(delta("ragstream_stage_events_in_total") / elapsed, 2)
            st.busy = round(min(delta("ragstream_stage_processing_seconds_sum") / elapsed / max(st.workers, 1), 1.0),
                            2)
            st.errors, st.retries = delta("ragstream_stage_errors_total"), delta("ragstream_stage_retries_total")
        st.lag = lags.get(s)
        st.partitions = _partitions(admin, STAGE_INPUTS.get(s, ()))
        st.dead_letters = _dead_letters(settings, admin, s)
        if st.lag and st.events_per_s:
            st.drain_s = round(st.lag / st.events_per_s, 1)
        out.append(st)
    status = Status(out, _index_rows(settings), round(elapsed, 1))
    status.recommendations = recommend(status)
    return status


def _partitions(admin: Any, topics: tuple[str, ...]) -> int | None:
    try:
        return max(len(admin.list_topics(t, timeout=5).topics[t].partitions) for t in topics) if topics else None
    except Exception:  # noqa: BLE001
        return None


def _dead_letters(settings: Settings, admin: Any, stage: str) -> int | None:
    """Messages in rag.dlq.<stage> (all time, within retention): high minus low watermarks."""
    from confluent_kafka import TopicPartition

    from ragstream.consumer import make_consumer
    from schemas.topics import dlq_topic

    topic = dlq_topic(stage)
    reader = make_consumer(settings, "ragstream-status-probe")
    try:
        parts = admin.list_topics(topic, timeout=5).topics[topic].partitions
        return sum(hi - lo for lo, hi in (reader.get_watermark_offsets(TopicPartition(topic, p), timeout=5)
                                          for p in parts))
    except Exception:  # noqa: BLE001
        return None
    finally:
        reader.close()


def _index_rows(settings: Settings) -> int | None:
    try:
        from consumers.milvus import milvus_client

        client = milvus_client(settings.resolved_milvus_uri, timeout=5)
        try:
            return int(client.get_collection_stats(settings.collection)["row_count"])
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - Milvus down or no collection yet
        return None


def recommend(status: Status) -> list[str]:
    """Advice from the numbers (see the module docstring)."""
    advice = []
    for st in status.stages:
        if st.health == "down":
            advice.append(f"{st.stage}: no worker answers; start it (`ragstream stack up -s worker-{st.stage}`) "
                          "or read its log (`ragstream stack status`)")
        elif st.health != "ok":
            advice.append(f"{st.stage}: {st.health} — {st.reason or 'see /healthz'}")
    lagging = [st for st in status.stages if st.lag and st.busy is not None]
    if lagging:
        bottleneck = max(lagging, key=lambda st: (st.busy or 0.0, st.lag or 0))
        if (bottleneck.busy or 0) >= SATURATED:
            advice.append(f"bottleneck: {bottleneck.stage} (busy {bottleneck.busy:.0%} of the time, "
                          f"lag {bottleneck.lag:,})")
    for st in status.stages:
        if st.drain_s is None or st.drain_s <= DRAIN_TARGET_S or not st.workers:
            continue
        want = math.ceil(st.workers * st.drain_s / DRAIN_TARGET_S)
        cap = st.partitions or want
        if want > cap:
            advice.append(f"{st.stage}: {st.lag:,} behind, {st.drain_s:.0f}s to drain at {st.events_per_s}/s; "
                          f"{want} workers would drain it within {DRAIN_TARGET_S:.0f}s but the input has only "
                          f"{cap} partition(s): run {cap} workers and raise RAGSTREAM_PARTITIONS for more")
        else:
            advice.append(f"{st.stage}: {st.lag:,} behind, {st.drain_s:.0f}s to drain at {st.events_per_s}/s; "
                          f"run {want} workers (`ragstream scale {st.stage} {want}`, "
                          f"{want - st.workers} more) to drain within {DRAIN_TARGET_S:.0f}s")
    for st in status.stages:
        if st.lag and not st.events_per_s and st.health == "ok":
            advice.append(f"{st.stage}: {st.lag:,} behind and it read nothing in {status.window_s}s; "
                          f"see `ragstream stack status` and its log")
        if st.dead_letters:
            advice.append(f"{st.stage}: {st.dead_letters} dead letter(s) in rag.dlq.{st.stage}; "
                          f"`ragstream dlq list {st.stage}` shows why, `dlq replay {st.stage}` once fixed")
    return advice


def format_status(status: Status) -> list[str]:
    lines = [f"{'stage':<11} {'health':<9} {'lag':>8} {'in/s':>8} {'busy':>5} {'errors':>6} {'DLQ':>5} {'drain':>7}"]
    for st in status.stages:
        def n(v: Any, fmt: str = "{:,}") -> str:
            return "-" if v is None else fmt.format(v)
        lines.append(f"{st.stage:<11} {st.health:<9} {n(st.lag):>8} {n(st.events_per_s, '{:.1f}'):>8} "
                     f"{n(st.busy, '{:.0%}'):>5} {n(st.errors, '{:.0f}'):>6} {n(st.dead_letters):>5} "
                     f"{n(st.drain_s, '{:.0f}s'):>7}")
    lines.append(f"index: {status.index_rows:,} rows" if status.index_rows is not None else "index: unknown (Milvus "
                 "not reachable or no collection yet)")
    lines += [f"→ {r}" for r in status.recommendations] or ["→ nothing to do"]
    return lines

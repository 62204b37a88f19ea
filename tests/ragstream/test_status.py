"""`ragstream status`: numbers from the running workers, advice computed from them."""

from __future__ import annotations

import pytest

from ragstream.status import Status, StageStatus, collect, format_status, parse_metrics, recommend


def test_metrics_of_one_stage_are_summed_over_their_labels():
    text = "\n".join([
        '# TYPE ragstream_stage_errors_total counter',
        'ragstream_stage_errors_total{stage="embed",error_type="Timeout"} 2.0',
        'ragstream_stage_errors_total{stage="embed",error_type="OSError"} 1.0',
        'ragstream_stage_errors_total{stage="chunk",error_type="OSError"} 7.0',
        'ragstream_stage_events_in_total{stage="embed"} 40.0',
    ])
    assert parse_metrics(text, "embed") == {"ragstream_stage_errors_total": 3.0,
                                            "ragstream_stage_events_in_total": 40.0}


def test_advice_names_the_bottleneck_and_the_workers_that_drain_it_in_time():
    stages = [
        StageStatus("chunk", "ok", lag=10, workers=1, partitions=3, events_per_s=50.0, busy=0.1, dead_letters=0,
                    drain_s=0.2),
        StageStatus("embed", "ok", lag=3000, workers=1, partitions=3, events_per_s=20.0, busy=0.97, dead_letters=2,
                    drain_s=150.0),
        StageStatus("index", "degraded", reason="partition 1 stalled 400s on doc x", lag=0, workers=1),
    ]
    advice = recommend(Status(stages, 1000, 5.0))
    assert "bottleneck: embed (busy 97% of the time, lag 3,000)" in advice
    assert any("embed: 3,000 behind, 150s to drain at 20.0/s; run 3 workers" in a for a in advice)
    assert any("rag.dlq.embed" in a for a in advice)
    assert "index: degraded — partition 1 stalled 400s on doc x" in advice


def test_advice_stops_at_the_partition_count():
    st = StageStatus("embed", "ok", lag=100_000, workers=1, partitions=3, events_per_s=20.0, busy=1.0, drain_s=5000.0)
    [_, cap] = recommend(Status([st], None, 5.0))
    assert "only 3 partition(s): run 3 workers and raise RAGSTREAM_PARTITIONS" in cap


def test_an_idle_pipeline_needs_nothing():
    st = StageStatus("chunk", "ok", lag=0, workers=1, partitions=3, events_per_s=0.0, busy=0.0, dead_letters=0)
    assert recommend(Status([st], 0, 5.0)) == []
    assert format_status(Status([st], 0, 5.0))[-1] == "→ nothing to do"


@pytest.mark.integration
def test_status_of_the_running_pipeline(pipeline):
    result = collect(pipeline, window_s=1.0)
    assert [s.stage for s in result.stages] == ["compliance", "chunk", "embed", "index", "audit", "dsr"]
    assert all(s.health in ("ok", "degraded") and s.lag is not None and s.dead_letters is not None
               for s in result.stages), result
    assert result.index_rows is not None

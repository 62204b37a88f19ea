"""The stage registry drives the worker, `up`, the topic catalog check and the docs."""

from __future__ import annotations

from ragstream.settings import PROJECT_ROOT, load_settings
from schemas.topics import STAGES as DLQ_STAGES, catalog
from streams.registry import PIPELINE, PRODUCER_PORT_OFFSET, STAGES, metrics_port, table


def test_every_stage_has_its_own_port_and_none_takes_the_producers():
    offsets = [s.port_offset for s in STAGES]
    assert len(set(offsets)) == len(offsets)
    assert PRODUCER_PORT_OFFSET not in offsets
    s = load_settings(metrics_port_base=9300)
    assert metrics_port(s, "normalize") == 9307


def test_every_stage_topic_and_dead_letter_topic_is_in_the_catalog():
    names = {t.name for t in catalog(load_settings())}
    for spec in STAGES:
        assert spec.name in DLQ_STAGES, f"rag.dlq.{spec.name} is missing from schemas/topics.py"
        for topic in spec.inputs + spec.outputs + tuple(e.topic for e in spec.extra_inputs):
            assert topic == "cdc.*" or topic in names, f"{spec.name}: {topic} is not in the topic catalog"


def test_the_pipeline_runs_the_non_optional_stages_in_order():
    assert PIPELINE == ("compliance", "chunk", "embed", "index", "audit", "dsr")


def test_the_architecture_page_shows_the_registry_as_it_is():
    page = (PROJECT_ROOT / "docs" / "architecture.md").read_text()
    missing = [row for row in table() if row not in page]
    assert not missing, "docs/architecture.md's stage table is stale; paste `python -m streams.registry`:\n" + \
        "\n".join(missing)


def test_the_lag_probe_reads_the_inputs_the_registry_declares():
    """ragstream.admin (foundation) cannot import the registry: its copy is checked here."""
    from ragstream.admin import STAGE_INPUTS
    from streams.registry import BY_NAME

    declared = {name: spec.inputs + tuple(e.topic for e in spec.extra_inputs) for name, spec in BY_NAME.items()
                if "*" not in "".join(spec.inputs)}  # normalize reads a pattern (cdc.*): not probed
    assert STAGE_INPUTS == declared


def test_stages_that_read_raw_content_keep_their_dead_letters_only_the_raw_retention():
    from schemas.topics import RAW_STAGES
    from streams.registry import STAGES as SPECS

    assert {s.name for s in SPECS if s.raw} | {"ingest"} == set(RAW_STAGES)

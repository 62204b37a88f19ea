from ragstream.settings import load_settings
from schemas.topics import AUDIT, CHANGES, DOCUMENTS, RAW_STAGES, STAGES, catalog, dlq_topic


def by_name(**overrides):
    return {s.name: s for s in catalog(load_settings(**overrides))}


def test_stage_topics_share_one_partition_count():
    topics = by_name(partitions=12)
    keyed = [s for s in topics.values() if s.key == "doc_id"]
    assert {s.partitions for s in keyed} == {12}
    assert len(keyed) >= 5


def test_audit_is_one_ordered_partition_kept_seven_years():
    audit = by_name()[AUDIT]
    assert audit.partitions == 1
    assert audit.config["cleanup.policy"] == "delete"
    assert int(audit.config["retention.ms"]) >= 7 * 365 * 86_400_000


def test_documents_are_compacted_with_bounded_lag():
    docs = by_name(compaction_lag_hours=6)[DOCUMENTS]
    assert docs.config["cleanup.policy"] == "compact"
    assert docs.config["max.compaction.lag.ms"] == str(6 * 3600 * 1000)


def test_raw_content_is_kept_only_briefly():
    topics = by_name(raw_retention_days=2)
    two_days = str(2 * 86_400_000)
    assert topics[CHANGES].config["retention.ms"] == two_days
    for stage in RAW_STAGES:
        assert topics[dlq_topic(stage)].config["retention.ms"] == two_days


def test_every_stage_has_a_dead_letter_topic():
    topics = by_name()
    assert all(dlq_topic(stage) in topics for stage in STAGES)

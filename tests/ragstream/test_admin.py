import uuid

import pytest
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

from ragstream.admin import AdminError, admin_client, ensure_topics
from ragstream.settings import load_settings
from schemas.topics import TopicSpec

pytestmark = pytest.mark.integration


def test_ensure_is_idempotent_and_repairs_drift(settings):
    name = f"test.admin.{uuid.uuid4().hex[:8]}"
    spec = TopicSpec(name, 3, {"cleanup.policy": "compact", "max.compaction.lag.ms": "3600000"}, None, "t")
    assert [c.action for c in ensure_topics(settings, (spec,))] == ["created"]
    assert [c.action for c in ensure_topics(settings, (spec,))] == ["unchanged"]

    admin = admin_client(settings)
    drift = ConfigResource(ConfigResource.Type.TOPIC, name, incremental_configs=[
        ConfigEntry("max.compaction.lag.ms", "999999", incremental_operation=AlterConfigOpType.SET)])
    for fut in admin.incremental_alter_configs([drift]).values():
        fut.result(10)
    [change] = ensure_topics(settings, (spec,))
    assert change.action == "updated" and "max.compaction.lag.ms=3600000" in change.detail

    grown = TopicSpec(name, 4, spec.config, None, "t")
    [change] = ensure_topics(settings, (grown,))
    assert change.action == "updated" and "partitions 3→4" in change.detail
    assert len(admin.list_topics(name, timeout=10).topics[name].partitions) == 4

    [change] = ensure_topics(settings, (spec,))
    assert change.action == "warning" and "cannot shrink" in change.detail
    admin.delete_topics([name])


def test_the_whole_catalog_is_applied(settings):
    from schemas.topics import catalog

    changes = ensure_topics(settings)
    assert {c.topic for c in changes} == {s.name for s in catalog(settings)}
    assert all(c.action == "unchanged" for c in changes)


def test_unreachable_broker_gives_a_clear_error():
    with pytest.raises(AdminError, match="ragstream stack up"):
        ensure_topics(load_settings(kafka_bootstrap="127.0.0.1:1"))

"""Apply the topic catalog (:mod:`schemas.topics`) to a cluster, idempotently.

``ensure_topics`` creates missing topics, raises partition counts that are too low, and
brings each topic's configuration in line with the catalog using incremental config
changes (only the keys the catalog owns are touched). Running it again changes nothing.
A topic with *more* partitions than the catalog asks for is reported, never shrunk
(Kafka cannot), and a partition increase is reported because it moves keys between
partitions: do it only with the pipeline drained.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

from ragstream.kafka import client_config
from ragstream.settings import Settings
from schemas.topics import TopicSpec, catalog


class AdminError(RuntimeError):
    pass


@dataclass(frozen=True)
class TopicChange:
    topic: str
    action: str  # created | updated | unchanged | warning
    detail: str = ""


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient(client_config(settings))


def _wait(futures: dict, what: str) -> None:
    for name, fut in futures.items():
        try:
            fut.result(timeout=30)
        except KafkaException as exc:
            raise AdminError(f"{what} {name} failed: {exc.args[0].str()}") from None


def _wait_for_leaders(admin: AdminClient, names: list[str], timeout: float = 30) -> None:
    """A created topic is usable only once each partition has a leader; until then clients
    see NOT_LEADER_FOR_PARTITION. Wait here so callers never do."""
    deadline = time.monotonic() + timeout
    while True:
        topics = admin.list_topics(timeout=10).topics
        waiting = [n for n in names if n not in topics or topics[n].error is not None
                   or any(p.leader < 0 or p.error is not None for p in topics[n].partitions.values())]
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise AdminError(f"topics {waiting} have no partition leader after {timeout:.0f}s; check the broker log")
        time.sleep(0.1)


def ensure_topics(settings: Settings, specs: tuple[TopicSpec, ...] | None = None) -> list[TopicChange]:
    specs = specs if specs is not None else catalog(settings)
    admin = admin_client(settings)
    try:
        existing = admin.list_topics(timeout=10).topics
    except KafkaException as exc:
        raise AdminError(
            f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc.args[0].str()}. "
            "Start it with `ragstream stack up` or set RAGSTREAM_KAFKA_BOOTSTRAP."
        ) from None

    changes: list[TopicChange] = []
    missing = [s for s in specs if s.name not in existing]
    if missing:
        _wait(admin.create_topics([
            NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication_factor, config=s.config)
            for s in missing
        ]), "creating topic")
        changes += [TopicChange(s.name, "created", f"{s.partitions} partitions, {s.config['cleanup.policy']}")
                    for s in missing]

    present = [s for s in specs if s.name in existing]
    grow = {}
    warnings: dict[str, str] = {}
    for s in present:
        have = len(existing[s.name].partitions)
        if have < s.partitions:
            grow[s.name] = (have, s.partitions)
        elif have > s.partitions:
            warnings[s.name] = f"has {have} partitions, catalog says {s.partitions}; Kafka cannot shrink"
    if grow:
        _wait(admin.create_partitions([NewPartitions(t, n) for t, (_, n) in grow.items()]), "adding partitions to")

    if present:
        resources = [ConfigResource(ConfigResource.Type.TOPIC, s.name) for s in present]
        described = admin.describe_configs(resources)
        alter = []
        diffs: dict[str, list[str]] = {}
        for s, res in zip(present, resources):
            try:
                current = described[res].result(timeout=30)
            except KafkaException as exc:
                raise AdminError(f"describing {s.name} failed: {exc.args[0].str()}") from None
            entries = []
            for k, v in s.config.items():
                if current.get(k) is None or current[k].value != v:
                    entries.append(ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET))
                    diffs.setdefault(s.name, []).append(f"{k}={v}")
            if entries:
                alter.append(ConfigResource(ConfigResource.Type.TOPIC, s.name, incremental_configs=entries))
        if alter:
            _wait(admin.incremental_alter_configs(alter), "updating config of")
        for s in present:
            notes = []
            if s.name in grow:
                have, want = grow[s.name]
                notes.append(f"partitions {have}→{want} (keys move: drain the pipeline first)")
            notes += diffs.get(s.name, [])
            if s.name in warnings:
                changes.append(TopicChange(s.name, "warning", ", ".join([warnings[s.name], *notes])))
            else:
                changes.append(TopicChange(s.name, "updated" if notes else "unchanged", ", ".join(notes)))
    touched = [s.name for s in missing] + list(grow)
    if touched:
        _wait_for_leaders(admin, touched)
    order = {s.name: i for i, s in enumerate(specs)}
    return sorted(changes, key=lambda c: (order[c.topic], c.action))


#: Each pipeline stage's input topics (its consumer group is ragstream-<stage>), as streams/registry.py declares them (the foundation cannot
#: import the registry; tests/streams/test_registry.py keeps the two equal).
STAGE_INPUTS = {
    "compliance": ("rag.changes",),
    "chunk": ("rag.documents",),
    "embed": ("rag.chunks",),
    "index": ("rag.vectors", "rag.acl"),
    "audit": ("rag.audit.events",),
    "dsr": ("rag.dsr",),
    "graph": ("rag.documents", "rag.acl"),  # optional (RAGSTREAM_GRAPH_ENABLED): only when asked for by name
}
#: Optional stages: counted only when named (a stopped or absent optional worker is not lag the
#: pipeline must wait for; its own group catches up when it runs).
OPTIONAL_LAG = frozenset({"graph"})


def stage_lag(settings: Settings, stages: tuple[str, ...] | None = None) -> dict[str, int]:
    """Messages each stage's consumer group has not yet committed, summed over partitions.

    A group that never committed counts its whole topic as lag."""
    from ragstream.consumer import make_consumer

    admin = admin_client(settings)
    reader = make_consumer(settings, "ragstream-lag-probe")
    try:
        return {stage: _group_lag(admin, reader, f"ragstream-{stage}", inputs)
                for stage, inputs in STAGE_INPUTS.items()
                if ((stage in stages) if stages is not None else (stage not in OPTIONAL_LAG))}
    finally:
        reader.close()


def group_lag(settings: Settings, group: str, topics: Iterable[str]) -> int:
    """Messages of ``topics`` consumer group ``group`` has not committed yet (a reindex's group)."""
    from ragstream.consumer import make_consumer

    reader = make_consumer(settings, "ragstream-lag-probe")
    try:
        return _group_lag(admin_client(settings), reader, group, tuple(topics))
    finally:
        reader.close()


def _group_lag(admin: AdminClient, reader: Any, group: str, topics: tuple[str, ...]) -> int:
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

    lag = 0
    for topic in topics:
        parts = admin.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in parts}
        req = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in parts])
        committed = {tp.partition: tp.offset for tp in
                     admin.list_consumer_group_offsets([req])[req.group_id].result(timeout=10).topic_partitions}
        for p, (low, high) in ends.items():
            c = committed.get(p, -1)
            lag += high - (c if c >= 0 else low)
    return lag


def offsets_at(settings: Settings, topic: str, when_ms: int) -> dict[int, int]:
    """Per partition of ``topic``: the first offset whose timestamp is at or after ``when_ms``
    (the end of the partition when none is), via the broker's time index (offsets_for_times)."""
    from confluent_kafka import TopicPartition

    from ragstream.consumer import make_consumer

    reader = make_consumer(settings, "ragstream-lag-probe")
    try:
        parts = admin_client(settings).list_topics(topic, timeout=10).topics[topic].partitions
        found = reader.offsets_for_times([TopicPartition(topic, p, when_ms) for p in parts], timeout=10)
        out = {}
        for tp in found:
            if tp.error is not None:
                raise AdminError(f"offsets for times of {topic}[{tp.partition}] failed: {tp.error}")
            out[tp.partition] = tp.offset if tp.offset >= 0 else reader.get_watermark_offsets(
                TopicPartition(topic, tp.partition), timeout=10)[1]
        return out
    finally:
        reader.close()


def wait_drained(settings: Settings, timeout: float = 300, on_tick: Callable[[dict[str, int]], None] | None = None,
                 stages: tuple[str, ...] | None = None) -> bool:
    """Wait until every stage (or those named) has caught up (twice in a row, so nothing is
    in flight between)."""
    deadline = time.monotonic() + timeout
    zero_streak = 0
    while time.monotonic() < deadline:
        lag = stage_lag(settings, stages)
        if on_tick:
            on_tick(lag)
        zero_streak = zero_streak + 1 if not any(lag.values()) else 0
        if zero_streak >= 2:
            return True
        time.sleep(0.5)
    return False


# --------------------------------------------------------------------------------------
# Principals and ACLs (the local broker's StandardAuthorizer; docs/security.md, "Kafka")
# --------------------------------------------------------------------------------------

@dataclass(frozen=True, order=True)
class Grant:
    """One ALLOW ACL: ``principal`` (a user name, without ``User:``) may ``operation`` on
    the ``resource`` (topic, group, transactional_id) ``name`` — the exact name, or every
    name starting with it when ``prefixed``."""

    principal: str
    resource: str
    name: str
    operation: str
    prefixed: bool = False

    def __str__(self) -> str:
        return f"User:{self.principal} {self.operation} {self.resource} {self.name}{'*' if self.prefixed else ''}"


def _binding(g: Grant) -> Any:
    from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourcePatternType, ResourceType

    return AclBinding(ResourceType[g.resource.upper()], g.name,
                      ResourcePatternType.PREFIXED if g.prefixed else ResourcePatternType.LITERAL,
                      f"User:{g.principal}", "*", AclOperation[g.operation], AclPermissionType.ALLOW)


def _grant(b: Any) -> Grant:
    from confluent_kafka.admin import ResourcePatternType

    return Grant(b.principal.removeprefix("User:"), b.restype.name.lower(), b.name, b.operation.name,
                 b.resource_pattern_type == ResourcePatternType.PREFIXED)


def ensure_scram_users(settings: Settings, credentials: dict[str, Any]) -> list[str]:
    """Create the SCRAM-SHA-512 users of ``credentials`` the broker does not know yet (as admin)."""
    from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

    admin = admin_client(settings)
    users = credentials["users"]
    try:
        known = set(admin.describe_user_scram_credentials(request_timeout=30).result(timeout=30))
    except KafkaException as exc:
        raise AdminError(f"describing the broker's SCRAM users failed: {exc.args[0].str()}") from None
    missing = [u for u in users if u not in known]
    if missing:
        futures = admin.alter_user_scram_credentials([
            UserScramCredentialUpsertion(u, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), users[u].encode())
            for u in missing])
        _wait(futures, "creating SCRAM user")
    return missing


def ensure_acls(settings: Settings, grants: Iterable[Grant], principals: Iterable[str]
                ) -> tuple[list[Grant], list[Grant]]:
    """Bring the broker's ACLs of ``principals`` in line with ``grants`` (for ragstream's, see
    :func:`ragstream.kafka_acls.acl_bindings`): create the missing ones, remove those of these
    principals that are no longer wanted. Returns (created, removed)."""
    from confluent_kafka.admin import (AclBindingFilter, AclOperation, AclPermissionType, ResourcePatternType,
                                       ResourceType)

    wanted = set(grants)
    admin = admin_client(settings)
    ours = {f"User:{p}" for p in principals}
    try:
        existing = admin.describe_acls(AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                                        AclOperation.ANY, AclPermissionType.ANY)).result(timeout=30)
    except KafkaException as exc:
        raise AdminError(f"describing ACLs failed: {exc.args[0].str()}") from None
    have = {_grant(b): b for b in existing if b.principal in ours}
    create = sorted(wanted - set(have))
    remove = sorted(set(have) - wanted)
    if create:
        for fut in admin.create_acls([_binding(g) for g in create]).values():
            try:
                fut.result(timeout=30)
            except KafkaException as exc:
                raise AdminError(f"creating ACLs failed: {exc.args[0].str()}") from None
    if remove:
        filters = [AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation,
                                    b.permission_type) for g, b in have.items() if g in set(remove)]
        for fut in admin.delete_acls(filters).values():
            fut.result(timeout=30)
    return create, remove


"""The local broker's principals and ACLs, derived from the stage registry and the topic
catalog (docs/security.md, "Kafka"), and applying them (``stack up``).

Kept out of the foundation (:mod:`ragstream.kafka`, :mod:`ragstream.admin`), which must not
import the stages: those apply what is computed here.
"""

from __future__ import annotations

from typing import Callable

from ragstream.admin import STAGE_INPUTS, Grant, ensure_acls, ensure_scram_users
from ragstream.kafka import ADMIN, API, CONNECT, PRODUCER, local_credentials, stage_principal
from ragstream.settings import Settings
from schemas import topics as t
from streams.audit import WRITER_ID
from streams.dsr import DERIVED, DOWNSTREAM
from streams.registry import STAGES


def local_principals() -> tuple[str, ...]:
    """Every SCRAM user of the local broker: one per component, one per registered stage."""
    return (ADMIN, PRODUCER, API, CONNECT, *(stage_principal(s.name) for s in STAGES))


def secure_broker(settings: Settings, progress: Callable[[str], None] = lambda _m: None) -> None:
    """As admin: every principal's SCRAM user (credentials generated if missing) and the ACLs."""
    creds = local_credentials(settings, create=True, principals=local_principals())
    assert creds is not None
    added = ensure_scram_users(settings, creds)
    created, removed = ensure_acls(settings, acl_bindings(settings), local_principals())
    if added or created or removed:
        progress(f"kafka: {len(added)} SCRAM user(s) added, {len(created)} ACL(s) created, {len(removed)} removed")


#: The stages whose lag an erasure waits on (streams/dsr/erasure.py, wait_drained).
DRAINED = ("compliance", "chunk", "embed", "index")


#: What a stage does beyond reading its inputs and writing its outputs, by stage name.
#: Groups: besides ``ragstream-<stage>`` every stage may use ``ragstream-<stage>-*``.
def _stage_extras(stage: str) -> list[tuple[str, str, str, bool]]:
    scan_groups = ("group", "ragstream-scan-", "READ", True)  # ragstream.consumer.scan_topic
    erased = [("topic", t.DSR_ERASED, "READ", False), ("group", "ragstream-erased-", "READ", True)]
    if stage == "compliance" or stage == "graph":  # the suppression list of erased subjects
        return erased
    if stage == "audit":  # the chain's tail and its fenced transactional writer
        return [("topic", t.AUDIT, "READ", False), ("group", "ragstream-audit-reader", "READ", False),
                ("transactional_id", WRITER_ID, "WRITE", False), ("transactional_id", WRITER_ID, "DESCRIBE", False)]
    if stage == "dsr":  # erasure: find the subject downstream, truncate derived topics behind their readers
        return ([("topic", name, "READ", False) for name in DOWNSTREAM] + [scan_groups]
                + [("topic", name, "DELETE", False) for name, _group in DERIVED]
                + [("group", group, "DESCRIBE", False) for _name, group in DERIVED]
                # wait_drained: the lag of the stages an erasure waits for
                + [("group", f"ragstream-{s}", "DESCRIBE", False) for s in DRAINED]
                + [("topic", name, "DESCRIBE", False) for s in DRAINED for name in STAGE_INPUTS[s]]
                + [("group", "ragstream-lag-probe", "DESCRIBE", False)]
                + [("topic", t.AUDIT, "READ", False), ("group", "ragstream-audit-reader", "READ", False)])
    return []


def acl_bindings(settings: Settings) -> tuple[Grant, ...]:
    """Every ACL of the local broker, derived from the stage registry and the topic catalog.

    * stage ``<name>`` (principal ``stage-<name>``): READ its inputs and extra inputs with
      group ``ragstream-<name>`` (and ``ragstream-<name>-*``); WRITE its outputs,
      ``rag.dlq.<name>`` and ``rag.audit.events``; Faust's internal topics
      ``ragstream-<name>-*``; plus what :func:`_stage_extras` names (audit's transactional
      id, the dsr stage's deletes and group descriptions).
    * ``producer`` (sources, ``ragstream up``): WRITE rag.changes, rag.acl, rag.dlq.ingest,
      rag.audit.events.
    * ``api``: WRITE rag.dsr and rag.audit.events; READ the dead letters, rag.dsr and
      rag.audit (listings, receipts); DESCRIBE the stages' groups and inputs (admin status).
    * ``connect`` (Kafka Connect, Debezium): its ``connect.*`` topics and group, the ``cdc.*``
      change topics it creates and writes.
    * ``admin`` and the broker's ``controller`` are super users (no ACLs).
    """
    grants: set[Grant] = set()

    def topic(who: str, name: str, *ops: str) -> None:
        pre = name.endswith("*")
        for op in ops:
            grants.add(Grant(who, "topic", name.rstrip("*") if pre else name, op, pre))

    def group(who: str, name: str, op: str = "READ", prefixed: bool = False) -> None:
        grants.add(Grant(who, "group", name, op, prefixed))

    for spec in STAGES:
        who = stage_principal(spec.name)
        for name in (*spec.inputs, *(e.topic for e in spec.extra_inputs)):
            topic(who, name, "READ", "DESCRIBE")
        for name in (*spec.outputs, t.AUDIT_EVENTS, *([t.dlq_topic(spec.name)] if spec.name in t.STAGES else [])):
            topic(who, name, "WRITE", "DESCRIBE")
        group(who, f"ragstream-{spec.name}")
        group(who, f"ragstream-{spec.name}-", prefixed=True)
        topic(who, f"ragstream-{spec.name}-*", "CREATE", "READ", "WRITE", "DESCRIBE")  # Faust's own topics
        for resource, name, op, prefixed in _stage_extras(spec.name):
            grants.add(Grant(who, resource, name, op, prefixed))

    for name in (t.CHANGES, t.ACL, t.dlq_topic("ingest"), t.AUDIT_EVENTS):
        topic(PRODUCER, name, "WRITE", "DESCRIBE")

    for name in (t.DSR, t.AUDIT_EVENTS):
        topic(API, name, "WRITE", "DESCRIBE")
    for name in ("rag.dlq.*", t.DSR, t.AUDIT):
        topic(API, name, "READ", "DESCRIBE")
    group(API, "ragstream-dlq-", prefixed=True)  # ragstream.dlq's listing and replay readers
    group(API, "ragstream-scan-", prefixed=True)
    group(API, "ragstream-audit-reader")
    # GET /v1/admin/status (ragstream.status): every stage's lag and dead letters
    for st, inputs in STAGE_INPUTS.items():
        group(API, f"ragstream-{st}", "DESCRIBE")
        for name in inputs:
            topic(API, name, "DESCRIBE")
    group(API, "ragstream-lag-probe", "DESCRIBE")
    group(API, "ragstream-status-probe", "DESCRIBE")

    topic(CONNECT, "connect.*", "CREATE", "READ", "WRITE", "DESCRIBE", "DESCRIBE_CONFIGS")
    topic(CONNECT, "cdc.*", "CREATE", "WRITE", "DESCRIBE", "DESCRIBE_CONFIGS")
    topic(CONNECT, "__debezium-heartbeat.cdc", "CREATE", "WRITE", "DESCRIBE", "DESCRIBE_CONFIGS")
    group(CONNECT, "ragstream-connect")
    return tuple(sorted(grants))

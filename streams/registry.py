"""The stage registry: one declaration per stage.

Everything that needs to know the stages reads them here — the worker runtime
(:mod:`streams.worker`), ``ragstream up`` and ``stack`` (which workers to start, where
their metrics and ``/healthz`` are), the topic catalog check (every stage's topics and
dead-letter topic exist) and ``docs/architecture.md``'s table (``python -m
streams.registry`` prints it). A new stage is one :class:`StageSpec` here and its logic in
its own module.

The logic object a stage's ``build`` returns is plain, unit-testable code; the runtime
calls only these members of it:

* ``contract`` (the schemas class its input decodes to) or ``decode(bytes)`` (a foreign
  format, e.g. Debezium JSON), and ``input_topics`` / ``input_topic``;
* ``process(item) -> list[Output]`` — or, for a sink, ``-> bool`` (False: stale, dropped) —
  and ``process_batch(items)`` when the stage is batched;
* optionally, for stages that take one item at a time, ``stale(item) -> bool`` (a version
  guard before processing) and ``after_publish(item)`` (outputs acknowledged); for every
  stage ``on_progress`` (set by the runtime),
  ``timers() -> [(seconds, fn)]`` (periodic work; ``fn`` may return outputs to publish),
  and for each ``extra_inputs`` entry the method it names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from schemas import topics

if TYPE_CHECKING:
    from ragstream.settings import Settings
    from streams.stages import Output

#: ``ragstream up``'s own metrics page (the producer side) sits at base + this offset.
PRODUCER_PORT_OFFSET = 6

Publish = Callable[[list["Output"]], None]


@dataclass(frozen=True)
class ExtraInput:
    """A second input of a stage, consumed by the same group and applied by ``method``."""

    topic: str
    contract: str  # a class name in schemas.events
    method: str


@dataclass(frozen=True)
class StageSpec:
    name: str
    summary: str
    #: Topics read and written (documentation and the catalog check; a stage whose inputs
    #: depend on configuration, like normalize's cdc.* topics, reads them from its logic).
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    #: Metrics and /healthz at ``RAGSTREAM_METRICS_PORT_BASE`` + this offset.
    port_offset: int
    build: Callable[[Settings, Publish], Any]
    #: Items taken together (None: one by one); a callable reads it from the settings.
    batch: Callable[[Settings], int] | None = None
    #: Writes a store instead of topics: ``process`` returns whether it applied the item.
    sink: bool = False
    #: The store a sink writes (documentation).
    store: str = ""
    extra_inputs: tuple[ExtraInput, ...] = ()
    #: Started by ``ragstream up`` only when configured (normalize: when CDC is).
    optional: bool = False
    #: Reads unredacted source content: its dead letters keep only the raw retention.
    raw: bool = False
    health: str = field(default="/healthz")

    def metrics_port(self, settings: Settings) -> int:
        return settings.metrics_port_base + self.port_offset


# -- builders (imports are local: a worker loads only its own stage's dependencies) ---------
def _normalize(settings: Settings, publish: Publish) -> Any:
    from streams.normalize import NormalizeStage

    return NormalizeStage.from_settings(settings)


def _compliance(settings: Settings, publish: Publish) -> Any:
    from ragstream.blobs import BlobStore
    from streams.dsr import ErasedSubjects
    from streams.policy import KeyRing, load_policy
    from streams.stages import ComplianceStage

    return ComplianceStage(BlobStore(settings.blob_dir), settings.inline_max_bytes,
                           policy=load_policy(settings.policy_file), keys=KeyRing(settings.home / "keys"),
                           erased=ErasedSubjects(settings).start())


def _chunk(settings: Settings, publish: Publish) -> Any:
    from ragstream.blobs import BlobStore
    from streams.chunking import Chunker
    from streams.embedding import token_counter
    from streams.stages import ChunkStage

    return ChunkStage(Chunker(count=token_counter(settings), max_tokens=settings.chunk_max_tokens,
                              overlap_tokens=settings.chunk_overlap_tokens), BlobStore(settings.blob_dir))


def _index_of(settings: Settings, dim: int) -> Any:
    from consumers.milvus import MilvusIndex

    index = MilvusIndex(settings.resolved_milvus_uri, settings.collection, dim)
    index.ensure()
    return index


def _embed(settings: Settings, publish: Publish) -> Any:
    from streams.embedding import make_embedder
    from streams.stages import EmbedStage

    embedder = make_embedder(settings)
    return EmbedStage(embedder, _index_of(settings, embedder.dim))


def _index(settings: Settings, publish: Publish) -> Any:
    from streams.embedding import model_dim
    from streams.stages import IndexStage

    return IndexStage(_index_of(settings, model_dim(settings)))


def _audit(settings: Settings, publish: Publish) -> Any:
    from streams.audit import AuditStage, ChainVerifier, ChainWriter, Checkpoints

    checkpoints = Checkpoints(settings.home)
    return AuditStage(None, checkpoints, writer=ChainWriter(settings), verifier=ChainVerifier(settings, checkpoints))


def _dsr(settings: Settings, publish: Publish) -> Any:
    from streams.dsr import DsrStage
    from streams.embedding import model_dim
    from streams.policy import KeyRing, load_policy

    return DsrStage(settings, publish, policy=load_policy(settings.policy_file),
                    keys=KeyRing(settings.home / "keys"), index=_index_of(settings, model_dim(settings)))


def _graph(settings: Settings, publish: Publish) -> Any:
    from streams.graph import GraphStage

    return GraphStage.from_settings(settings)


def _graph_enabled() -> bool:
    """RAGSTREAM_GRAPH_ENABLED: the graph stage joins the pipeline ``ragstream up`` runs."""
    from ragstream.settings import load_settings

    try:
        return load_settings().graph_enabled
    except SystemExit:  # invalid settings: the command that reads them says what is wrong
        return False


STAGES: tuple[StageSpec, ...] = (
    StageSpec("compliance", "PII detection and redaction, policy, classification, retention",
              (topics.CHANGES,), (topics.DOCUMENTS, topics.AUDIT_EVENTS), 0, _compliance, raw=True),
    StageSpec("chunk", "split compliant documents into content-addressed chunks",
              (topics.DOCUMENTS,), (topics.CHUNKS,), 1, _chunk, batch=lambda s: 64),
    StageSpec("embed", "embed new chunks (reusing vectors of unchanged ones)",
              (topics.CHUNKS,), (topics.VECTORS,), 2, _embed, batch=lambda s: s.embed_batch_size),
    StageSpec("index", "apply a document version to Milvus atomically; permission-only changes",
              (topics.VECTORS,), (), 3, _index, batch=lambda s: 32, sink=True, store="Milvus",
              extra_inputs=(ExtraInput(topics.ACL, "AclChange", "apply_acl"),)),
    StageSpec("audit", "hash-chain audit events into the tamper-evident log",
              (topics.AUDIT_EVENTS,), (topics.AUDIT,), 4, _audit),
    StageSpec("dsr", "data-subject requests across every store; retention sweeps",
              (topics.DSR,), (topics.DOCUMENTS, topics.DSR_ERASED, topics.AUDIT_EVENTS), 5, _dsr),
    StageSpec("normalize", "Debezium change events (cdc.*) to change events by a per-table mapping",
              ("cdc.*",), (topics.CHANGES, topics.ACL), 7, _normalize, optional=True, raw=True),
    StageSpec("graph", "entities, links and co-occurrences of the compliant documents into the knowledge graph "
                       "(Neo4j); permission-only changes", (topics.DOCUMENTS,), (), 8, _graph, sink=True, store="Neo4j",
              extra_inputs=(ExtraInput(topics.ACL, "AclChange", "apply_acl"),), optional=not _graph_enabled()),
)

BY_NAME = {s.name: s for s in STAGES}
#: The stages ``ragstream up`` always runs, in pipeline order.
PIPELINE = tuple(s.name for s in STAGES if not s.optional)


def stage(name: str) -> StageSpec:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}; stages are {', '.join(BY_NAME)}") from None


def metrics_port(settings: Settings, name: str) -> int:
    return stage(name).metrics_port(settings)


#: Extra workers of a stage on one host (``ragstream scale``): worker ``i`` (1 is the stage's
#: own, at base + offset) serves metrics and /healthz at base + offset + STRIDE * (i - 1).
REPLICA_PORT_STRIDE = 10
assert max(s.port_offset for s in STAGES) < REPLICA_PORT_STRIDE, "a port offset would collide with a replica's"


def replica_port(settings: Settings, name: str, i: int) -> int:
    """Metrics port of worker ``i`` (1-based) of stage ``name`` on this host."""
    if i < 1:
        raise ValueError("workers are numbered from 1")
    return metrics_port(settings, name) + REPLICA_PORT_STRIDE * (i - 1)


def table() -> list[str]:
    """The registry as a Markdown table (docs/architecture.md embeds it)."""
    rows = ["| stage | reads | writes | port | batch | notes |", "|---|---|---|---|---|---|"]
    for s in STAGES:
        notes = ", ".join(filter(None, ["sink" if s.sink else "", "optional" if s.optional else "",
                                        "raw content" if s.raw else ""]
                                 + [f"also {e.topic} → {e.method}" for e in s.extra_inputs]))
        rows.append(f"| {s.name} | {', '.join(s.inputs)} | {', '.join(s.outputs) or s.store} | "
                    f"base+{s.port_offset} | {'yes' if s.batch else 'no'} | {notes} |")
    return rows


if __name__ == "__main__":  # the table docs/architecture.md embeds
    print("\n".join(table()))

"""The knowledge graph end to end on the session's private pipeline.

A Neo4j (from Maven Central jars) and a graph worker join the pipeline for this module,
and the dsr worker is restarted with the graph enabled (restored afterwards). A folder of
an ``open-*`` source (names stay in clear text) is created, edited, partly deleted, a
subject erased through ``ragstream dsr erase``; after each step the graph is compared with
``rag.documents`` (drift 0) and the change itself is looked up. Neo4j is killed and
restarted while a change is in flight: nothing is lost, nothing dead-lettered.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Iterator

import pytest
from click.testing import CliRunner

from consumers.graph import GraphStore, check_graph, entity_key, expected_documents
from infra.service import free_port
from infra.stack import Stack, _worker
from producers.filesystem import FilesystemSource
from ragstream.admin import wait_drained
from ragstream.cli import cli
from ragstream.consumer import scan_topic
from ragstream.settings import Settings
from schemas import topics

pytestmark = pytest.mark.integration

# Names of their own: test_dsr_pipeline erases Margaret Holloway from the session's pipeline, and
# an erased subject stays suppressed in every later document.
NAME, OTHER = "Eleanor Whitfield", "Daniel Brooks"
DOCS = {
    "review.md": f"# Vendor review\n\n{NAME} met {OTHER} at Acme Corporation in Lisbon.\n\n"
                 "The plan is in [the plan](plan.md).\n",
    "plan.md": f"# Plan\n\n{OTHER} drafted the plan with Globex Industries in Berlin.\n",
    "canteen.md": "# Canteen\n\nLentil soup on Monday, grilled fish on Friday.\n",
}


@pytest.fixture(scope="module")
def graph(pipeline: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, GraphStore]]:
    with_graph = pipeline.model_copy(update={"graph_enabled": True, "neo4j_port": free_port()})
    # The graph worker's metrics port is base + 8, outside the block the fixture reserved.
    worker_settings = with_graph.model_copy(update={"metrics_port_base": free_port() - 8})
    neo4j = Stack(with_graph, ("neo4j",))
    neo4j.up()
    worker = _worker("graph")(worker_settings)
    old_dsr, new_dsr = _worker("dsr")(pipeline), _worker("dsr")(with_graph)
    store = GraphStore.from_settings(with_graph)
    try:
        worker.start()
        old_dsr.stop()
        new_dsr.start()  # erasure now reaches the graph
        yield with_graph, store
    finally:
        store.close()
        new_dsr.stop()
        old_dsr.start()
        worker.stop()
        neo4j["neo4j"].kill()


def converge(settings: Settings, store: GraphStore, source: str, timeout: float = 240) -> None:
    """Wait until the graph holds exactly the source's live documents (drift 0), or fail with the drift.

    rag.documents must hold the change first (compliance drained), or the graph would be
    compared with the previous state."""
    assert wait_drained(settings, timeout=300, stages=("compliance",))
    deadline = time.monotonic() + timeout
    while True:
        drift = check_graph(store, expected_documents(settings), source=source)
        if drift.total == 0:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"the graph did not converge: {drift.summary()} {drift}")
        time.sleep(1.0)


def keys_of(store: GraphStore, doc_id: str) -> set[str]:
    return set(store.contributions(doc_id)["mentions"])


def test_create_edit_restart_delete_and_erasure_reach_the_graph(pipeline, graph, tmp_path_factory):
    settings, store = graph
    folder = tmp_path_factory.mktemp("graph-docs")
    for name, text in DOCS.items():
        (folder / name).write_text(text, encoding="utf-8")
    src = FilesystemSource(pipeline, folder, source_id=f"open-graph-{uuid.uuid4().hex[:6]}")
    sid = src.source_id
    review, plan, canteen = (f"{sid}:{n}" for n in ("review.md", "plan.md", "canteen.md"))
    margaret, tobias = entity_key("PERSON", NAME), entity_key("PERSON", OTHER)
    globex = entity_key("ORGANIZATION", "Globex Industries")

    # -- create -------------------------------------------------------------------------------
    src.sync()
    assert wait_drained(pipeline, timeout=300)
    converge(settings, store, sid)
    assert {margaret, tobias, entity_key("ORGANIZATION", "Acme Corporation")} <= keys_of(store, review)
    assert store.contributions(review)["links"] == [plan]
    assert tuple(sorted((margaret, tobias))) in store.contributions(review)["pairs"]
    acl = expected_documents(settings)[review].acl
    assert acl, "the file-system source gives the files an ACL"
    assert {r["doc_id"] for r in store.related([review], acl)} >= {plan}
    assert store.entity(margaret, ["user:nobody-here"]) is None, "invisible without a readable document"

    # -- edit: Globex leaves the plan; it has no other evidence, so it leaves the graph ---------
    (folder / "plan.md").write_text(f"# Plan\n\n{OTHER} drafted the plan with Initech in Berlin.\n", encoding="utf-8")
    src.sync()
    converge(settings, store, sid)
    assert globex not in keys_of(store, plan)
    assert not store._read("MATCH (e:Entity {key: $k}) RETURN e", k=globex)

    # -- Neo4j killed and restarted while a change is in flight: nothing lost -------------------
    (folder / "notes.md").write_text(f"# Notes\n\n{OTHER} visited Initech in Berlin again.\n", encoding="utf-8")
    (folder / "canteen.md").write_text("# Canteen\n\nLentil soup on Tuesday now.\n", encoding="utf-8")
    canteen_before = store.documents()[canteen]
    svc = Stack(settings, ("neo4j",))["neo4j"]
    svc.kill()
    src.sync()
    time.sleep(3)
    svc.start()
    converge(settings, store, sid, timeout=300)
    assert f"{sid}:notes.md" in store.documents() and store.documents()[canteen] > canteen_before
    assert not [m for m in scan_topic(pipeline, topics.dlq_topic("graph"))
                if (m.key() or b"").decode().startswith(sid)], "nothing dead-lettered"

    # -- delete: exactly that document's contributions go -----------------------------------------
    (folder / "canteen.md").unlink()
    src.sync()
    converge(settings, store, sid)
    assert canteen not in store.documents() and store.contributions(canteen)["mentions"] == {}

    # -- erasure: the subject leaves the graph, and the receipt counts it ------------------------
    env = {"RAGSTREAM_KAFKA_BOOTSTRAP": pipeline.kafka_bootstrap}
    res = CliRunner().invoke(cli, ["--home", str(pipeline.home), "dsr", "erase", "--name", NAME, "--timeout", "400"],
                             env=env)
    assert res.exit_code == 0, res.output
    receipt = json.loads(res.output[res.output.index("{"):])
    assert receipt["graph"]["enabled"] is True and receipt["graph"]["entities_before"] >= 1, receipt["graph"]
    assert receipt["graph"]["after"] == 0 and receipt["remaining"]["graph"] == 0
    assert receipt["verified"] is True, receipt
    converge(settings, store, sid)
    assert not store._read("MATCH (e:Entity {key: $k}) RETURN e", k=margaret)
    assert margaret not in keys_of(store, review) and tobias in keys_of(store, review)
    assert store.documents()[review][1] >= 1, "the rewritten revision is what the graph holds"
    assert store.integrity() == {"entities_without_evidence": 0, "relations_without_evidence": 0,
                                 "deleted_documents_contributing": 0}

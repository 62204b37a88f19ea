"""The graph sink against a real Neo4j (started here from Maven Central jars, or RAGSTREAM_NEO4J_URI)."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from consumers.graph import GraphDoc, GraphStore, Mention, check_graph, entity_key
from consumers.graph.check import Expected
from ragstream.settings import Settings, load_settings


@pytest.fixture(scope="module")
def neo4j(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    if os.environ.get("RAGSTREAM_NEO4J_URI"):
        yield load_settings()
        return
    from infra.service import free_port
    from infra.stack import Stack

    home: Path = tmp_path_factory.mktemp("neo4j") / "home"
    s = load_settings(home=home, neo4j_port=free_port(), start_timeout_s=120)
    stack = Stack(s, ("neo4j",))
    stack.up()
    yield s
    stack["neo4j"].kill()  # its data is thrown away with the temporary home


@pytest.fixture
def store(neo4j: Settings) -> Iterator[GraphStore]:
    g = GraphStore.from_settings(neo4j)
    g.ensure()
    g.wipe()
    yield g
    g.close()


def person(name: str, count: int = 1, roles: tuple[str, ...] = ("text",), ref: str | None = None) -> Mention:
    return Mention(entity_key("PERSON", name), "PERSON", name, count, roles, ref)


def org(name: str, count: int = 1) -> Mention:
    return Mention(entity_key("ORGANIZATION", name), "ORGANIZATION", name, count)


ADA, BOB, ACME = person("Ada Lovelace", 2, ref="person:ada"), person("Bob Stone"), org("Acme")
A, B, C = ADA.key, BOB.key, ACME.key


def doc(doc_id: str, version: int, mentions: tuple[Mention, ...] = (), pairs: tuple = (), links: tuple = (),
        acl: tuple[str, ...] = ("group:eng",), revision: int = 0) -> GraphDoc:
    return GraphDoc(doc_id=doc_id, source="s", version=version, revision=revision, acl=acl, title=doc_id,
                    mentions=mentions, pairs=pairs, links=links)


def entities(store: GraphStore) -> set[str]:
    return {r["key"] for r in store._read("MATCH (e:Entity) RETURN e.key AS key")}


def test_apply_is_idempotent_and_guarded_by_version(store: GraphStore) -> None:
    d1 = doc("s:1", 1, (ADA, ACME), ((C, A, 1) if C < A else (A, C, 1),))
    assert store.apply(d1) is True
    assert store.apply(d1) is False  # a redelivery writes nothing
    assert store.contributions("s:1")["mentions"] == {A: 2, C: 1}
    assert store.apply(doc("s:1", 0, (BOB,))) is False  # older: dropped
    assert entities(store) == {A, C}
    assert store.integrity() == {"entities_without_evidence": 0, "relations_without_evidence": 0,
                                 "deleted_documents_contributing": 0}


def test_an_edit_replaces_and_an_entity_without_evidence_disappears(store: GraphStore) -> None:
    pair = tuple(sorted((A, C)))
    store.apply(doc("s:1", 1, (ADA, ACME), ((*pair, 2),)))
    store.apply(doc("s:2", 1, (ACME, BOB), ((*sorted((B, C)), 1),)))
    store.apply(doc("s:1", 2, (BOB,)))  # Ada and the Ada-Acme co-occurrence lose their only evidence
    assert entities(store) == {B, C}
    assert store.contributions("s:1") == {"mentions": {B: 1}, "links": [], "pairs": {}}
    assert store.contributions("s:2")["pairs"] == {tuple(sorted((B, C))): 1}
    assert not store._read("MATCH ()-[c:CO_OCCURS]->() WHERE 's:1' IN c.evidence RETURN c")


def test_co_occurrence_carries_each_documents_evidence(store: GraphStore) -> None:
    pair = tuple(sorted((A, C)))
    store.apply(doc("s:1", 1, (ADA, ACME), ((*pair, 2),)))
    store.apply(doc("s:2", 1, (ADA, ACME), ((*pair, 3),)))
    rel = store._read("MATCH (:Entity)-[c:CO_OCCURS]->(:Entity) RETURN c.evidence AS ev, c.counts AS n")
    assert len(rel) == 1 and dict(zip(rel[0]["ev"], rel[0]["n"])) == {"s:1": 2, "s:2": 3}
    assert store.delete("s:1", 2) is True
    rel = store._read("MATCH (:Entity)-[c:CO_OCCURS]->(:Entity) RETURN c.evidence AS ev, c.counts AS n")
    assert rel == [{"ev": ["s:2"], "n": [3]}]
    assert store.delete("s:1", 1) is False  # older than the delete: stale
    assert store.apply(doc("s:1", 1, (BOB,))) is False  # a late older version cannot resurrect it
    store.delete("s:2", 2)
    assert entities(store) == set()
    assert store.documents() == {}


def test_links_point_at_stubs_until_the_target_arrives(store: GraphStore) -> None:
    store.apply(doc("s:1", 1, links=("s:2",)))
    assert store.documents() == {"s:1": (1, 0)}  # the stub is not a document
    assert store.related(["s:1"], ["group:eng"]) == []  # nor visible
    store.apply(doc("s:2", 1))
    assert [r["doc_id"] for r in store.related(["s:1"], ["group:eng"])] == ["s:2"]
    store.apply(doc("s:1", 2))  # the link is gone; the target stays (it is a document)
    assert store.related(["s:1"], ["group:eng"]) == []
    store.apply(doc("s:3", 1, links=("s:9",)))
    store.apply(doc("s:3", 2))
    assert not store._read("MATCH (d:Document {doc_id: 's:9'}) RETURN d")  # an unused stub is collected


def test_a_newer_permission_change_wins_over_older_content(store: GraphStore) -> None:
    assert store.apply_acl("s:1", 5, ["group:hr"]) is True  # before any content
    store.apply(doc("s:1", 3, (ADA,), acl=("group:eng",)))
    assert store.entity(A, ["group:eng"]) is None
    assert store.entity(A, ["group:hr"])["documents"] == 1
    assert store.apply_acl("s:1", 4, ["group:eng"]) is False  # older than what was applied
    store.apply(doc("s:1", 6, (ADA,), acl=("group:eng",)))  # newer content brings its own ACL
    assert store.entity(A, ["group:hr"]) is None and store.entity(A, ["group:eng"]) is not None
    assert store.apply_acl("s:1", 7, []) is True  # revoked from everyone
    assert store.entity(A, ["group:eng"]) is None


def test_erasing_a_subject_removes_the_entity_and_its_relations(store: GraphStore) -> None:
    store.apply(doc("s:1", 1, (ADA, ACME), ((*sorted((A, C)), 1),)))
    before = store.subject_contributions(["person:ada"])
    assert before == {"entities": 1, "mentions": 1, "relations": 1}
    assert store.erase_subjects(["person:ada"]) == before
    assert entities(store) == {C}
    assert store.subject_contributions(["person:ada"]) == {"entities": 0, "mentions": 0, "relations": 0}
    assert store.integrity()["relations_without_evidence"] == 0


def test_the_drift_check_finds_missing_stale_orphaned_and_acl_drift(store: GraphStore) -> None:
    store.apply(doc("s:1", 1, (ADA,)))
    store.apply(doc("s:2", 1))
    store.apply(doc("s:3", 1))
    expected = {"s:1": Expected(1, 0, ("group:eng",)), "s:2": Expected(2, 0, ("group:eng",)),
                "s:3": Expected(1, 0, ("group:hr",)), "s:4": Expected(1, 0, ())}
    store.apply(doc("s:5", 1))
    drift = check_graph(store, expected)
    assert (drift.missing, [s.split(":")[0] + ":" + s.split(":")[1] for s in drift.stale], drift.orphaned,
            drift.acl) == (["s:4"], ["s:2"], ["s:5"], ["s:3"])
    assert drift.total == 4
    store.delete("s:5", 2)
    store.apply(doc("s:2", 2))
    store.apply(doc("s:4", 1, acl=()))
    store.apply_acl("s:3", 2, ["group:hr"])
    assert check_graph(store, {**expected, "s:3": Expected(1, 0, ("group:hr",), 2)}).total == 0


def test_nothing_for_a_caller_without_principals(store: GraphStore) -> None:
    store.apply(doc("s:1", 1, (ADA, ACME), ((*sorted((A, C)), 1),), acl=("public",)))
    assert store.find_entities("", []) == [] and store.entity(A, []) is None
    assert store.neighbours(A, []) is None and store.related(["s:1"], []) == []
    assert store.entity(A, ["public"]) is not None


def test_neo4j_unavailable_is_transient(neo4j: Settings) -> None:
    from ragstream.failures import Kind, classify

    from infra.service import free_port

    g = GraphStore(f"bolt://127.0.0.1:{free_port()}", ("neo4j", "x"), retry_s=0)
    try:
        with pytest.raises(Exception) as info:
            g.doc_state("s:1")
        assert classify(info.value) is Kind.transient
    finally:
        g.close()


# -- ACL property: no query shows what the caller may not read ----------------------------------

PRINCIPALS = ("user:a", "user:b", "group:x", "public")
NAMES = ("Ada", "Bob", "Cy", "Dee", "Eve")
CALLERS = [frozenset(c) for n in range(len(PRINCIPALS) + 1) for c in itertools.combinations(PRINCIPALS, n)]


@st.composite
def corpora(draw: st.DrawFn) -> list[GraphDoc]:
    n = draw(st.integers(1, 5))
    out = []
    for i in range(n):
        acl = tuple(sorted(draw(st.sets(st.sampled_from(PRINCIPALS), max_size=2))))
        names = sorted(draw(st.sets(st.sampled_from(NAMES), max_size=4)))
        mentions = tuple(person(nm, draw(st.integers(1, 3))) for nm in names)
        keys = sorted(m.key for m in mentions)
        pairs = tuple((a, b, draw(st.integers(1, 2))) for a, b in itertools.combinations(keys, 2)
                      if draw(st.booleans()))
        others = [f"s:{j}" for j in range(n) if j != i]
        links = tuple(sorted(draw(st.sets(st.sampled_from(others), max_size=2)))) if others else ()
        out.append(doc(f"s:{i}", 1, mentions, pairs, links, acl=acl))
    return out


@hsettings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(corpus=corpora())
def test_acl_property_no_query_leaks(store: GraphStore, corpus: list[GraphDoc]) -> None:
    store.wipe()
    for d in corpus:
        store.apply(d)
    for caller in CALLERS:
        readable = {d.doc_id: d for d in corpus if caller and set(d.acl) & caller}
        # the reference: what the caller may see, computed from the documents alone
        seen = {m.key: 0 for d in readable.values() for m in d.mentions}
        for d in readable.values():
            for m in d.mentions:
                seen[m.key] += m.count
        found = store.find_entities("", sorted(caller), limit=100)
        assert {r["key"]: r["mentions"] for r in found} == seen
        for key in {m.key for d in corpus for m in d.mentions}:
            ent = store.entity(key, sorted(caller))
            if key not in seen:
                assert ent is None and store.neighbours(key, sorted(caller)) is None
                continue
            assert {x["doc_id"] for x in ent["mentioned_in"]} == {
                d.doc_id for d in readable.values() if key in {m.key for m in d.mentions}}
            expected_nb: dict[str, int] = {}
            for d in readable.values():
                for a, b, n in d.pairs:
                    if key in (a, b):
                        other = b if a == key else a
                        expected_nb[other] = expected_nb.get(other, 0) + n
            got = store.neighbours(key, sorted(caller), limit=100)
            assert {r["key"]: r["chunks"] for r in got} == expected_nb
            assert all(set(r["evidence"]) <= set(readable) for r in got)
        for d in corpus:
            related = store.related([d.doc_id], sorted(caller), limit=100)
            assert {r["doc_id"] for r in related} <= set(readable) - {d.doc_id}
            if d.doc_id not in readable:
                assert related == []


# -- the API: the same filtering through the HTTP endpoints --------------------------------------


def test_api_endpoints_are_acl_filtered(neo4j: Settings, store: GraphStore, tmp_path: Path) -> None:
    from urllib.parse import quote

    from fastapi.testclient import TestClient

    from ragstream.api import create_app

    store.apply(doc("s:1", 1, (ADA, BOB), ((*sorted((A, B)), 1),), acl=("group:eng",)))
    store.apply(doc("s:2", 1, (ADA, ACME), ((*sorted((A, C)), 2),), acl=("group:hr",)))
    home = tmp_path / "api-home"
    home.mkdir()
    from pydantic import SecretStr

    from consumers.graph import neo4j_password

    api = neo4j.model_copy(update={"graph_enabled": True, "home": home,
                                   "neo4j_password": SecretStr(neo4j_password(neo4j))})
    app = create_app(api)
    keys = app.state.services.auth.api_keys
    eng, hr, nobody = (keys.create(n, ("user",), g) for n, g in (("eng", ("eng",)), ("hr", ("hr",)), ("x", ())))
    client = TestClient(app)

    def get(path: str, key: str) -> tuple[int, object]:
        r = client.get(path, headers={"X-API-Key": key})
        return r.status_code, r.json()

    status, body = get("/v1/graph/entities?q=ada", eng)
    assert status == 200 and [(e["key"], e["documents"]) for e in body] == [(A, 1)]
    status, body = get(f"/v1/graph/entities/{quote(A)}", hr)
    assert status == 200 and [m["doc_id"] for m in body["mentioned_in"]] == ["s:2"]
    assert [n["key"] for n in get(f"/v1/graph/neighbours/{quote(A)}", eng)[1]] == [B]
    assert [n["key"] for n in get(f"/v1/graph/neighbours/{quote(A)}", hr)[1]] == [C]
    assert get(f"/v1/graph/entities/{quote(A)}", nobody)[0] == 404
    assert get(f"/v1/graph/neighbours/{quote(B)}", hr)[0] == 404, "invisible looks absent"
    assert get("/v1/graph/entities?q=", nobody) == (200, [])
    assert client.get("/v1/graph/entities?q=ada").status_code == 401

    off = TestClient(create_app(api.model_copy(update={"graph_enabled": False})))
    assert off.get("/v1/graph/entities?q=ada", headers={"X-API-Key": eng}).status_code == 404

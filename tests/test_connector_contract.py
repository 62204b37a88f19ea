"""A source plugs in through the connector contract alone (issue 13).

``tests/toy_source`` is a connector of a few lines, loaded the way a plugin is
(``RAGSTREAM_CONNECTOR_MODULES``). Its documents flow through the real pipeline, a note it
cannot read is dead-lettered and replayed once fixed, and ``ragstream verify`` checks the
index against its full listing — with no change outside its package.
"""

from __future__ import annotations

import json
import uuid

import pytest

from ragstream.admin import wait_drained
from ragstream.connector import connector_classes, open_source
from ragstream.dlq import replay
from tests.test_verify_pipeline import findings, paragraphs, verify
from tests.toy_source import Notes

pytestmark = pytest.mark.integration


def test_a_toy_source_flows_through_pipeline_dlq_replay_and_verify(pipeline, tmp_path, monkeypatch):
    s = pipeline.model_copy(update={"connector_modules": "tests.toy_source"})
    assert connector_classes(s)["toy_notes"] is Notes
    path = tmp_path / "notes.json"
    notes = {"alpha": {"text": paragraphs(1, 3), "readers": ["user:ann"]},
             "beta": {"text": paragraphs(2, 3), "readers": ["group:ops"]},
             "broken": {"text": None, "readers": ["user:ann"]}}
    path.write_text(json.dumps(notes))
    src = Notes(s, path, source_id=f"notes-{uuid.uuid4().hex[:6]}")
    stats = src.sync()
    assert (stats.added, stats.failed) == (2, 1)
    assert wait_drained(s, timeout=300)
    code, report = verify(s, monkeypatch, src.source_id)
    assert (code, report["drift"]) == (0, 0), report
    assert findings(report)[src.doc_id("broken")][0] == "dead_lettered"
    assert report["sources"][0]["indexed"] == 2

    # Fixed at the source, the dead letter is replayed: the runtime reopens the source by
    # the kind its cursor records and reads the note again.
    notes["broken"]["text"] = paragraphs(3, 2)
    path.write_text(json.dumps(notes))
    replayed, _ = replay(s, "ingest")
    assert replayed >= 1
    assert wait_drained(s, timeout=300)
    code, report = verify(s, monkeypatch, src.source_id)
    assert (code, report["drift"], report["sources"][0]["indexed"]) == (0, 0, 3), report
    assert src.doc_id("broken") not in findings(report)

    # A deletion and a permission-only change, through a source reopened from its cursor.
    del notes["alpha"]
    notes["beta"]["readers"] = ["group:ops", "user:bob"]
    path.write_text(json.dumps(notes))
    again = open_source(s, src.source_id).sync()
    assert (again.deleted, again.permission_only, again.added + again.changed) == (1, 1, 0)
    assert wait_drained(s, timeout=300)
    code, report = verify(s, monkeypatch, src.source_id)
    assert (code, report["drift"], report["sources"][0]["indexed"]) == (0, 0, 2), report

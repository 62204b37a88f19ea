import json

import jsonschema

from schemas import export
from schemas.events import CONTRACTS
from schemas.serde import encode
from tests.schemas.test_serde import EVENT


def test_committed_json_schema_is_current():
    stale = export.stale()
    assert stale == [], f"stale JSON Schema files {stale}: run `ragstream schemas export` and commit"


def test_every_contract_is_exported():
    names = {p.name for p in export.JSON_DIR.glob("*.schema.json")}
    assert names == {f"{m.__name__}.schema.json" for m in CONTRACTS}


def test_a_python_event_validates_against_its_exported_schema():
    schema = json.loads((export.JSON_DIR / "ChangeEvent.schema.json").read_text())
    jsonschema.validate(json.loads(encode(EVENT)), schema)
    bad = json.loads(encode(EVENT))
    del bad["doc_id"]
    try:
        jsonschema.validate(bad, schema)
    except jsonschema.ValidationError as exc:
        assert "doc_id" in exc.message
    else:
        raise AssertionError("a ChangeEvent without doc_id passed the exported schema")


def test_stale_detection_notices_an_edit(tmp_path):
    export.export(tmp_path)
    assert export.stale(tmp_path) == []
    (tmp_path / "ChangeEvent.schema.json").write_text("{}")
    assert export.stale(tmp_path) == ["ChangeEvent.schema.json"]

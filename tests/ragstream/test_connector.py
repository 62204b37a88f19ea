"""The connector contract's cursor and registry, without a broker."""

from __future__ import annotations

import json

import pytest

from ragstream.connector import ConnectorError, Cursor, UpdateStats, connector_classes, known_sources, open_source
from ragstream.settings import load_settings


@pytest.fixture
def settings(tmp_path):
    return load_settings(home=tmp_path / "home")


def test_the_cursor_keeps_only_what_the_broker_acknowledged(settings):
    cursor = Cursor(settings, "src", "toy_notes", {"path": "/x"})
    ok, lost = cursor.stage("a", {"version": 1}), cursor.stage("b", {"version": 1})
    cursor.advance("token", "t1")
    ok(None, None)
    lost("broker down", None)
    cursor.commit()
    again = Cursor(settings, "src", "toy_notes", {"path": "/x"})
    assert again.items == {"a": {"version": 1}}
    assert again.position == {}  # a message before the token was not acknowledged: the token stays
    again.stage("b", {"version": 2})(None, None)
    again.advance("token", "t2")
    again.commit()
    assert Cursor(settings, "src", "toy_notes", {"path": "/x"}).position == {"token": "t2"}


def test_a_cursor_of_another_source_is_refused(settings):
    Cursor(settings, "src", "toy_notes", {"path": "/x"}).save()
    with pytest.raises(ConnectorError, match="not of this toy_notes source"):
        Cursor(settings, "src", "toy_notes", {"path": "/elsewhere"})


def test_a_file_system_cursor_from_before_the_contract_is_read(settings, tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    (settings.home / "sources").mkdir(parents=True)
    (settings.home / "sources" / "fs-docs.json").write_text(json.dumps(
        {"root": str(root), "files": {"a.md": {"version": 3}}, "skipped": {}}))
    assert known_sources(settings) == {"fs-docs": "filesystem"}
    source = open_source(settings, "fs-docs", publisher=object())
    assert source.kind == "filesystem" and source.cursor.items == {"a.md": {"version": 3}}


def test_unknown_sources_and_kinds_say_what_to_do(settings):
    with pytest.raises(ConnectorError, match="no source 'nope' is known here"):
        open_source(settings, "nope")
    Cursor(settings, "x", "toy_notes", {"path": "/x"}).save()
    with pytest.raises(ConnectorError, match="RAGSTREAM_CONNECTOR_MODULES"):
        open_source(settings, "x")
    assert "toy_notes" in connector_classes(settings.model_copy(update={"connector_modules": "tests.toy_source"}))
    with pytest.raises(ConnectorError, match="cannot load the connector package 'no.such'"):
        connector_classes(settings.model_copy(update={"connector_modules": "no.such"}))


def test_update_stats_add_up_and_read_well():
    a, b = UpdateStats(added=2, deleted=1), UpdateStats(changed=1, failed=1)
    a.skip("too_large")
    total = a + b
    assert (total.published, total.skipped_by_reason) == (4, {"too_large": 1})
    assert str(total) == ("2 added, 1 changed, 0 permission-only, 1 deleted, 0 unchanged, "
                          "1 skipped (1 too_large), 1 dead-lettered")


def test_a_sources_file_is_validated_whole_with_errors_that_name_the_field(settings, tmp_path):
    from ragstream.connector import SourcesFileError, declared_sources

    path = tmp_path / "sources.toml"
    path.write_text('[sources.Bad]\nkind = "filesystem"\n[sources.x]\nkind = "nosuch"\n')
    s = settings.model_copy(update={"sources_file": path})
    with pytest.raises(SourcesFileError) as err:
        declared_sources(s)
    assert "[sources.Bad]: the id must be lower case" in str(err.value)
    assert "[sources.x] kind: 'nosuch' is not a kind of source that can be declared" in str(err.value)
    path.write_text("title = 1\n")
    with pytest.raises(SourcesFileError, match=r"declare each source as a \[sources.<id>\] table"):
        declared_sources(s)
    assert declared_sources(settings) == []  # no file: nothing declared


def test_a_folder_declared_in_the_sources_file_is_a_file_system_source(settings, tmp_path):
    from ragstream.connector import declared_sources

    (tmp_path / "docs").mkdir()
    path = tmp_path / "sources.toml"
    path.write_text(f'[sources.team-docs]\nkind = "filesystem"\nroot = "{tmp_path / "docs"}"\nexclude = ["*.log"]\n')
    [source] = declared_sources(settings.model_copy(update={"sources_file": path}), publisher=object())
    assert (source.source_id, source.kind, source.root) == ("team-docs", "filesystem", tmp_path / "docs")
    assert not source.selected("debug.log") and source.selected("a.md")
    path.write_text('[sources.team-docs]\nkind = "filesystem"\nrot = "/x"\n')
    with pytest.raises(SystemExit, match=r"\[sources.team-docs\] root: Field required"):
        declared_sources(settings.model_copy(update={"sources_file": path}))

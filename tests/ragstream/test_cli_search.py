"""`ragstream search` with its options, against a real milvus-lite (embedded file) and model."""

from __future__ import annotations

from datetime import datetime, timezone

import click
import pytest
from click.testing import CliRunner

from consumers.milvus import MilvusIndex
from ragstream.cli import cli
from ragstream.settings import get_settings, load_settings
from schemas.events import Acl, Classification, DocMetadata, EmbeddedChunk, Op, SourceKind, VectorSet
from streams.embedding import make_embedder

DOCS = {  # doc → (text, classification, modified)
    "restore": ("To restore a backup after error E1234-X, stop the replication job first.", Classification.internal,
                datetime(2026, 5, 1, tzinfo=timezone.utc)),
    "similar": ("To restore a backup after error E1234-Y, stop the replication job first.", Classification.internal,
                datetime(2026, 1, 1, tzinfo=timezone.utc)),
    "holiday": ("Holiday requests go to your manager two weeks ahead.", Classification.public,
                datetime(2026, 5, 1, tzinfo=timezone.utc)),
}


@pytest.fixture
def indexed(tmp_path, monkeypatch):
    uri = str(tmp_path / "lite.db")
    embedder = make_embedder(load_settings())
    idx = MilvusIndex(uri, "cli_search", embedder.dim)
    idx.ensure()
    for (doc, (text, cls, modified)), vec in zip(DOCS.items(), embedder.embed([t for t, _, _ in DOCS.values()])):
        idx.apply(VectorSet(source="kb", source_kind=SourceKind.filesystem, doc_id=f"kb:{doc}", op=Op.upsert,
                            version=1, acl=Acl(principals=("public",), known=True), classification=cls,
                            metadata=DocMetadata(title=doc, modified_at=modified), chunker="t", model="m",
                            dim=embedder.dim, chunks=(EmbeddedChunk(chunk_id=f"c-{doc}", ordinal=0, text=text,
                                                                    tokens=12, vector=tuple(vec)),)))
    idx.client.close()  # one process at a time opens an embedded file: the CLI next
    monkeypatch.setenv("RAGSTREAM_MILVUS_URI", uri)
    monkeypatch.setenv("RAGSTREAM_COLLECTION", "cli_search")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def titles(output: str) -> list[str]:
    return [line.split("] ", 1)[1].split("  (")[0] for line in output.splitlines() if line[:1].isdigit()]


def test_search_modes_filters_and_bold_matches(indexed):
    run = CliRunner().invoke
    out = run(cli, ["search", "E1234-X", "--as", "public", "-n", "3"], color=True)
    assert out.exit_code == 0, out.output
    assert titles(out.output)[0] == "restore"
    assert click.style("E1234-X", bold=True) in out.output
    out = run(cli, ["search", "E1234-X", "--as", "public", "--mode", "lexical", "--modified-before", "2026-03-01"])
    assert out.exit_code == 0, out.output
    assert titles(out.output) == ["similar"]
    out = run(cli, ["search", "time off", "--as", "public", "--classification", "public", "--mode", "dense"])
    assert titles(out.output) == ["holiday"]
    out = run(cli, ["search", "backup", "--as", "public", "--source", "elsewhere"])
    assert out.exit_code == 0 and "no results" in out.output

"""The parts of ragstream/reindex.py that need no stack: the swap gate, profiles, --since."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from ragstream import reindex as ri
from ragstream.settings import load_settings


def rounds(*findings: list[str]):
    """A check that returns these rounds of findings, then the last one forever."""
    seq = list(findings)

    def check():
        f = seq.pop(0) if len(seq) > 1 else seq[0]
        return len(f), {"src": 3}, f
    return check


def test_the_gate_passes_a_clean_round():
    assert ri.settled_drift(rounds([]), timeout=5, pause=0) == ({"src": 3}, [])


def test_the_gate_passes_edits_in_flight_that_move_on():
    # Each round another document (or another version) is on its way: nothing repeats.
    check = rounds(["stale a: v2 listed, v1 indexed"], ["stale b: v5 listed, v4 indexed"])
    assert ri.settled_drift(check, timeout=5, pause=0) == ({"src": 3}, [])


def test_the_gate_stops_on_drift_that_stays():
    check = rounds(["stale a: other chunk ids", "stale b: v2 listed, v1 indexed"],
                   ["stale a: other chunk ids", "stale b: v3 listed, v2 indexed"])
    listed, stayed = ri.settled_drift(check, timeout=0, pause=0)
    assert stayed == ["stale a: other chunk ids"]


def test_a_source_that_cannot_be_opened_never_passes_the_gate():
    """Round one finds 100 documents missing; in round two the source cannot be opened (a
    network blip): nothing was looked at, so that is no sign the drift moved on."""
    missing = [f"missing d{i}: listed, not indexed" for i in range(100)]
    blip = [f"{ri.UNVERIFIABLE} src: cannot be opened: timed out"]
    check = rounds(missing, blip, missing)
    listed, stayed = ri.settled_drift(check, timeout=0.05, pause=0.01)
    assert stayed and set(stayed) <= set(missing) | set(blip)
    listed, stayed = ri.settled_drift(rounds(blip, [f"{ri.UNVERIFIABLE} src: cannot be opened: refused"]),
                                      timeout=0.05, pause=0.01)
    assert stayed, "an unverifiable source whose error text changes is still no pass"


def test_a_profile_is_checked_like_the_settings(tmp_path):
    s = load_settings(home=tmp_path)
    assert ri.with_profile(s, {"chunk_max_tokens": 96, "chunk_overlap_tokens": 12}).chunk_max_tokens == 96
    with pytest.raises(ri.ReindexError, match="overlap"):
        ri.with_profile(s, {"chunk_max_tokens": 40})  # the default overlap 24 is over half of 40
    with pytest.raises(ri.ReindexError, match="EMBED_URL"):
        ri.with_profile(s, {"embed_backend": "openai", "embed_model": "m"})


def test_the_catalog_records_profiles_and_swaps(tmp_path):
    s = load_settings(home=tmp_path)
    cat = ri.Catalog(s)
    cat.record("c_1", ri.profile_of(s), "live")
    cat.record("c_2", {**ri.profile_of(s), "chunk_max_tokens": 96}, "reindex")
    cat.swapped("c", "c_1", "c_2")
    cat.save()
    again = ri.Catalog(s)
    assert again.profile("c_2")["chunk_max_tokens"] == 96
    assert again.last_swap("c")["from"] == "c_1" and again.last_swap("other") is None


def test_since_takes_a_time_or_a_duration_ago():
    from ragstream.cli.reindex import _when

    assert _when("2026-01-31T08:00") == datetime(2026, 1, 31, 8, tzinfo=timezone.utc)
    assert abs(_when("2h") - (datetime.now(timezone.utc) - timedelta(hours=2))).total_seconds() < 5


def test_a_named_source_that_cannot_be_opened_is_drift_an_implicit_one_is_skipped(tmp_path, monkeypatch):
    """`reindex --source-id X` with X unopenable must not pass as "no drift"; of all the
    sources a home remembers, one removed since (its folder gone) is skipped with a warning."""
    import ragstream.connector as connector

    def unopenable(settings, sid, publisher=None):
        raise FileNotFoundError(f"the folder of {sid} is gone")

    monkeypatch.setattr(connector, "open_source", unopenable)
    monkeypatch.setattr(connector, "known_sources", lambda settings: ["fs-gone"])
    s = load_settings(home=tmp_path / "home", milvus_uri=str(tmp_path / "lite.db"))
    drift, listed, findings = ri.verify_collection(s, "ragstream_chunks_1", ["fs-gone"])
    assert drift == 1 and listed == {} and findings[0].startswith(f"{ri.UNVERIFIABLE} fs-gone: FileNotFoundError")
    assert ri.verify_collection(s, "ragstream_chunks_1") == (0, {}, [])

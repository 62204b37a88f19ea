"""The share-of-rows estimate of a caller's ACL sets (consumers.milvus.acl.AclSets.share):
by sets until enough rows have been seen, then by the rows seen; it only ever picks a search
strategy and a beam width (tests/consumers/test_milvus_filters.py checks what callers get)."""

from __future__ import annotations

import pytest

from consumers.milvus import acl as acl_module
from consumers.milvus.acl import AclSets
from consumers.milvus.schema import SHARE_OBSERVED_MIN, SHARE_OBSERVED_ROWS, SHARE_OBSERVED_TTL_S


@pytest.fixture
def sets():
    rows = [(f"k{i}", f"|group:g{i}|", 0) for i in range(4)]
    s = AclSets(lambda since: rows if since is None else [], refresh_s=3600)
    s.keys_for(["group:g0"])  # loads the four sets
    return s


def test_by_sets_until_enough_rows_were_seen_then_by_rows(sets):
    mine = {"k0"}
    assert sets.share(mine) == 0.25
    sets.observe(mine, SHARE_OBSERVED_MIN - 1, 0)
    assert sets.share(mine) == 0.25  # too few rows seen yet
    sets.observe(mine, 1, 0)
    assert 0 < sets.share(mine) == pytest.approx(1 / (SHARE_OBSERVED_MIN + 1))  # never 0
    assert sets.share({"k1"}) == 0.25  # another caller's sets keep their own estimate
    assert sets.share({"k0", "k1"}) == 0.5


def test_newer_rows_count_more(sets):
    mine = {"k0"}
    sets.observe(mine, SHARE_OBSERVED_ROWS, 0)  # none visible
    for _ in range(SHARE_OBSERVED_ROWS // 100):
        sets.observe(mine, 100, 100)  # then all visible, as many rows again
    assert 0.5 < sets.share(mine) < 0.9  # the old rows fade, not at once
    for _ in range(2 * SHARE_OBSERVED_ROWS // 100):
        sets.observe(mine, 100, 100)
    assert sets.share(mine) > 0.9


def test_an_observation_is_forgotten_after_its_time(sets):
    mine = {"k0"}
    now = [1000.0]
    sets.clock = lambda: now[0]
    sets.observe(mine, 2 * SHARE_OBSERVED_MIN, 0)
    assert sets.share(mine) < 0.01
    now[0] += SHARE_OBSERVED_TTL_S + 1
    assert sets.share(mine) == 0.25


def test_one_search_with_more_rows_than_are_kept_counts_alone(sets):
    sets.observe({"k0"}, SHARE_OBSERVED_ROWS + 500, 0)  # never 0 / 0 when nothing was seen before
    assert sets.share({"k0"}) < 0.01


def test_at_most_so_many_estimates_are_kept(sets, monkeypatch):
    monkeypatch.setattr(acl_module, "SHARE_OBSERVED_KEPT", 2)
    for k in ("k0", "k1", "k2"):
        sets.observe({k}, 2 * SHARE_OBSERVED_MIN, 0)
    assert sets.share({"k0"}) == 0.25  # the oldest went
    assert sets.share({"k1"}) < 0.01 and sets.share({"k2"}) < 0.01

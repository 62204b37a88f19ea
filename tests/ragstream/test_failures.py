"""The one failure classification and the retry budget."""

from __future__ import annotations

import httpx
import pytest
from confluent_kafka import KafkaError, KafkaException
from pymilvus.exceptions import MilvusException, ParamError

from consumers.milvus import IndexInputError, TransientIndexError, check_acl
from consumers.milvus.writer import _clip_list, _clip_utf8
from ragstream.publisher import PublishError
from ragstream.failures import BudgetExhausted, Kind, Permanent, RetryBudget, as_permanent, classify
from schemas.serde import SerdeError
from streams.embedding import TransientEmbeddingError


@pytest.mark.parametrize("exc", [
    TransientIndexError("down"), TransientEmbeddingError("503"), ConnectionError("refused"), TimeoutError(),
    KafkaException(KafkaError(KafkaError._TRANSPORT)), KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT)),
    PublishError("1 event(s) still unacknowledged"),
    PublishError("not acknowledged", KafkaError(KafkaError._ALL_BROKERS_DOWN)),
    MilvusException(2, "Fail connecting to server"), MilvusException(8, "rate limit exceeded"),
    httpx.ConnectError("refused"),
])
def test_unavailable_dependencies_are_transient(exc: BaseException) -> None:
    assert classify(exc) is Kind.transient


@pytest.mark.parametrize("exc", [
    Permanent("corrupt"), SerdeError("X", "not JSON", "hint"), RecursionError("maximum recursion depth"),
    ValueError("bad"), UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), KeyError("x"),
    PublishError("not acknowledged", KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)),
    KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)),
    MilvusException(6, "vector field 'vector' expected dim 384, got 8"),  # milvus-lite's invalid input
    MilvusException(1100, "invalid parameter", is_input_error=True),  # a Milvus 2.x server's
    ParamError(message="wrong type"), IndexInputError("acl too long"),
])
def test_the_input_itself_is_permanent(exc: BaseException) -> None:
    assert classify(exc) is Kind.permanent


def test_http_status_codes() -> None:
    request = httpx.Request("POST", "http://model/embeddings")
    for code, kind in ((503, Kind.transient), (429, Kind.transient), (400, Kind.permanent), (413, Kind.permanent)):
        exc = httpx.HTTPStatusError("x", request=request, response=httpx.Response(code, request=request))
        assert classify(exc) is kind, code


def test_budget_allows_retries_until_spent_then_says_why() -> None:
    now = [0.0]
    budget = RetryBudget(10, first_delay_s=1, max_delay_s=4, clock=lambda: now[0])
    delays = []
    while budget.spend():
        delays.append(budget.next_delay())
        now[0] += delays[-1]
    assert delays == [1, 2, 4]  # the next wait (4 s at t=7) would overrun 10 s
    assert budget.attempts == 4
    failed = as_permanent(TransientIndexError("Milvus unreachable"), budget)
    assert isinstance(failed, BudgetExhausted)
    assert "retry budget 10 s spent" in str(failed) and "Milvus unreachable" in str(failed)
    # A permanent error stays what it is; anything else is wrapped with its type.
    assert as_permanent(ValueError("bad"), budget).args[0] == "ValueError: bad"


def test_milvus_fields_are_clipped_by_bytes_and_acls_never() -> None:
    assert len(_clip_utf8("é" * 1000, 1024).encode()) <= 1024
    assert _clip_utf8("é" * 1000, 1024) == "é" * 512
    refs = [f"person:{i:016x}" for i in range(2000)]
    clipped = _clip_list(refs, 16384)
    assert len(clipped.encode()) <= 16384 and clipped.startswith("|") and clipped.endswith("|")
    assert all(len(r) == 23 for r in clipped.strip("|").split("|"))  # whole references only
    check_acl("|user:alice|")
    with pytest.raises(IndexInputError, match="groups instead"):
        check_acl("|" + "|".join(f"user:u{i:06d}" for i in range(2000)) + "|")

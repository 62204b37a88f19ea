"""The one failure classification: every external call's error is transient or permanent.

* **Transient** — a dependency is unavailable or busy (the broker, Milvus, the model
  server, a source system): the same input will succeed later. The stage pauses the
  partition and retries with backoff, within a **budget** (:class:`RetryBudget`,
  ``RAGSTREAM_RETRY_BUDGET_S``); when the budget is spent the input is dead-lettered with
  the reason and stays replayable. Nothing is retried forever.
* **Permanent** — this input will never succeed as it is (too large, invalid for the
  store's schema, undecodable, a corrupt file, a bug our code hits on this data): dead-letter
  it at once and go on with the next one.

:func:`classify` is the only place that decides, for errors from every client library
ragstream uses (confluent-kafka, pymilvus, httpx, the OS). Anything it does not recognise
is permanent: an unknown error retried blindly would stall a partition, while a dead
letter is visible, counted and replayable once the cause is fixed.

Example::

    budget = RetryBudget(settings.retry_budget_s)
    while True:
        try:
            return call()
        except Exception as exc:
            if classify(exc) is Kind.permanent or not budget.spend():
                raise as_permanent(exc, budget)
            time.sleep(budget.next_delay())
"""

from __future__ import annotations

import time
from enum import StrEnum

from schemas.serde import SerdeError


class Kind(StrEnum):
    transient = "transient"
    permanent = "permanent"


class Permanent(Exception):
    """This input cannot be processed as it is; dead-letter it with this reason."""


class Transient(Exception):
    """A dependency is unavailable or busy; retry later (within the budget)."""


class BudgetExhausted(Permanent):
    """A transient failure outlived its retry budget: the input is dead-lettered (replayable)."""


#: Kafka error codes that no retry can fix (the message itself is the problem).
_KAFKA_PERMANENT = {
    "MSG_SIZE_TOO_LARGE", "_MSG_SIZE_TOO_LARGE", "RECORD_LIST_TOO_LARGE", "INVALID_RECORD", "INVALID_MSG",
    "CORRUPT_MESSAGE", "_INVALID_ARG", "_BAD_MSG", "_KEY_SERIALIZATION", "_VALUE_SERIALIZATION",
    "INVALID_MSG_SIZE",
}
#: Milvus status codes for a request the server rejected as invalid (milvus-lite answers 6;
#: a Milvus 2.x server uses merr's 1100-range parameter errors and flags is_input_error).
_MILVUS_INVALID = {6, 1100, 1101, 1102}
#: Milvus 2.3 (the stack's server engine) rejects some invalid rows with the catch-all code
#: 65535 ("unexpected error"); these messages say the input is at fault, not the server.
_MILVUS_INVALID_MESSAGES = ("should divide the dim", "exceeds max length", "cannot parse expression")


def classify(exc: BaseException) -> Kind:
    """Transient (retry within the budget) or permanent (dead-letter now)."""
    kafka = _kafka_error(exc)
    if kafka is not None:
        if kafka.name() in _KAFKA_PERMANENT:
            return Kind.permanent
        return Kind.transient  # broker down, timeouts, leader moves, fatal producer state (recreated)
    if isinstance(exc, Transient):
        return Kind.transient
    if isinstance(exc, (Permanent, SerdeError)):
        return Kind.permanent
    milvus = _milvus(exc)
    if milvus is not None:
        return milvus
    http = _http(exc)
    if http is not None:
        return http
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return Kind.transient
    # RecursionError, ValueError, UnicodeError, KeyError, ... : this input, this code.
    return Kind.permanent


def _kafka_error(exc: BaseException):  # -> KafkaError | None
    from confluent_kafka import KafkaError, KafkaException

    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    err = getattr(exc, "kafka_error", None)
    return err if isinstance(err, KafkaError) else None


def _milvus(exc: BaseException) -> Kind | None:
    try:
        from pymilvus import exceptions as mx
    except ImportError:  # pragma: no cover - pymilvus is a dependency
        return None
    if not isinstance(exc, mx.MilvusException):
        return None
    invalid = (mx.ParamError, mx.DataTypeNotMatchException, mx.DataNotMatchException, mx.PrimaryKeyException,
               mx.FieldTypeException, mx.FieldsTypeException, mx.DataTypeNotSupportException)
    if isinstance(exc, invalid) or exc.is_input_error or exc.code in _MILVUS_INVALID \
            or any(m in str(exc.message) for m in _MILVUS_INVALID_MESSAGES):
        return Kind.permanent
    # Unavailable (code 2), rate limited (8), collection released or being loaded after a
    # restart, unexpected server errors: the server's state, not the input.
    return Kind.transient


def _http(exc: BaseException) -> Kind | None:
    try:
        import httpx
    except ImportError:  # pragma: no cover
        return None
    if isinstance(exc, httpx.TransportError):
        return Kind.transient
    if isinstance(exc, httpx.HTTPStatusError):
        code = exc.response.status_code
        return Kind.transient if code in (408, 425, 429) or code >= 500 else Kind.permanent
    return None


def reason(exc: BaseException) -> str:
    """One line for logs and dead letters: the error's type and message, never a traceback."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:2000] if text else type(exc).__name__


class RetryBudget:
    """How long one input may keep failing transiently before it is dead-lettered.

    Exponential backoff from ``first_delay_s`` to ``max_delay_s``; ``spend()`` says whether
    another attempt is allowed (the budget counts from the first failure).
    """

    def __init__(self, budget_s: float, first_delay_s: float = 0.5, max_delay_s: float = 30.0,
                 clock=time.monotonic) -> None:
        self.budget_s = budget_s
        self.max_delay_s = max_delay_s
        self._clock = clock
        self._delay = first_delay_s
        self._started: float | None = None
        self.attempts = 0

    def spend(self) -> bool:
        """Record a failed attempt; True while the budget allows another one."""
        now = self._clock()
        if self._started is None:
            self._started = now
        self.attempts += 1
        return now - self._started + self._delay <= self.budget_s

    def next_delay(self) -> float:
        delay = self._delay
        self._delay = min(self._delay * 2, self.max_delay_s)
        return delay

    @property
    def elapsed_s(self) -> float:
        return 0.0 if self._started is None else self._clock() - self._started


def as_permanent(exc: BaseException, budget: RetryBudget | None = None) -> Permanent:
    """What a dead letter records: a Permanent as it is; a transient whose budget is spent
    as :class:`BudgetExhausted`; anything else wrapped with its type."""
    if isinstance(exc, Permanent):
        return exc
    if budget is not None and classify(exc) is Kind.transient:
        return BudgetExhausted(f"transient failure for {budget.elapsed_s:.0f} s over {budget.attempts} attempt(s), "
                               f"retry budget {budget.budget_s:.0f} s spent (RAGSTREAM_RETRY_BUDGET_S); "
                               f"last error: {reason(exc)}. Replay it once the dependency is back.")
    return Permanent(reason(exc))

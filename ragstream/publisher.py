"""The one publisher: every event ragstream writes to Kafka goes through :class:`Publisher`.

It wraps confluent-kafka's idempotent producer (``enable.idempotence``, ``acks=all``), so a
broker restart or a retried send never duplicates or reorders a document's events. Keys
are ``doc_id``. Delivery is asynchronous: pass ``on_delivery`` to learn when the broker has
acknowledged an event (producers persist their cursors only then), and call :meth:`flush`
(also done on ``close``/``with`` exit) to wait for everything outstanding.

Example::

    with Publisher(settings) as pub:
        pub.publish(topics.CHANGES, event)
"""

from __future__ import annotations

import time
from typing import Any, Callable

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from ragstream.blobs import BlobStore
from ragstream.failures import Transient
from ragstream.kafka import client_config
from ragstream.logging import get_logger
from ragstream.metrics import DEAD_LETTERS, PUBLISH_ERRORS, PUBLISH_LATENCY, PUBLISHED
from ragstream.settings import Settings
from schemas.events import Contract, DeadLetter
from schemas.serde import claim_envelope, dead_letter_headers, encode
from schemas.topics import MESSAGE_HEADROOM, dlq_topic

log = get_logger(__name__)

DeliveryCallback = Callable[[KafkaError | None, Message], None]
Headers = list[tuple[str, bytes]]


#: Header set on a claim-check message (its value is ``{"claim_check": <BlobRef>}``).
CLAIM_HEADER = "ragstream.claim-check"


class PublishError(Transient):
    """Events were not acknowledged by the broker. ``kafka_error`` (the first failure's
    KafkaError, if any) lets :func:`ragstream.failures.classify` tell a broker outage
    (transient) from a message the broker will never take (permanent)."""

    def __init__(self, message: str, kafka_error: KafkaError | None = None) -> None:
        super().__init__(message)
        self.kafka_error = kafka_error


class Publisher:
    def __init__(
        self,
        settings: Settings,
        *,
        client_id: str = "ragstream",
        delivery_timeout_ms: int = 300_000,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self._max_bytes = settings.max_message_bytes
        self._claims = BlobStore(settings.blob_dir)
        conf = client_config(settings, **{
            "client.id": client_id,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "zstd",
            "linger.ms": 5,
            # How long librdkafka keeps retrying one event (broker restarts included)
            # before reporting it failed. Idempotence keeps retries free of duplicates.
            "delivery.timeout.ms": delivery_timeout_ms,
            "message.max.bytes": settings.max_message_bytes + MESSAGE_HEADROOM,
            "error_cb": self._on_error,
            **(config or {}),
        })
        self._conf = conf
        self._producer = Producer(conf)
        self._failures: list[tuple[str, str, KafkaError]] = []
        self._fatal: KafkaError | None = None
        self._broker_down = False  # log an outage once, not once per reconnect attempt

    # -- writing --------------------------------------------------------------------------
    def publish(
        self,
        topic: str,
        event: Contract,
        *,
        key: str | None = None,
        headers: Headers | None = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> None:
        """Queue ``event`` for ``topic``, keyed by its ``doc_id`` unless ``key`` is given."""
        if key is None:
            key = getattr(event, "doc_id", None)
            if key is None:
                raise ValueError(f"{type(event).__name__} has no doc_id; pass key= explicitly")
        self.publish_raw(topic, key, encode(event), headers=headers, on_delivery=on_delivery)

    def publish_raw(
        self,
        topic: str,
        key: str | bytes | None,
        value: bytes | None,
        *,
        headers: Headers | None = None,
        on_delivery: DeliveryCallback | None = None,
        partition: int | None = None,
    ) -> None:
        """Queue bytes as they are: tombstones (``value=None``), replays, dead letters.
        ``partition`` overrides the key's partition (only for control records).

        A value larger than ``RAGSTREAM_MAX_MESSAGE_BYTES`` is stored in the blob store and
        travels as a claim check (``{"claim_check": <BlobRef>}``, header
        ``ragstream.claim-check``), so no input a producer accepts makes a message the broker
        refuses; :func:`schemas.serde.decode` with ``claims=`` reads either form."""
        if self._fatal is not None:
            self._recreate()
        if value is not None and len(value) + len(key or b"") > self._max_bytes:
            ref = self._claims.put_bytes(value, namespace="claims")
            value = claim_envelope(ref.model_dump(mode="json"))
            headers = [*(headers or []), (CLAIM_HEADER, b"1")]
        started = time.monotonic()

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is None:
                if self._broker_down:
                    self._broker_down = False
                    log.info("broker reachable again; deliveries resumed")
                PUBLISHED.labels(topic).inc()
                PUBLISH_LATENCY.labels(topic).observe(time.monotonic() - started)
            else:
                PUBLISH_ERRORS.labels(topic, err.name()).inc()
                self._failures.append((topic, _key_text(msg.key()), err))
                log.error("publish failed", topic=topic, error=err.str())
            if on_delivery is not None:
                on_delivery(err, msg)

        while True:
            try:
                extra = {} if partition is None else {"partition": partition}
                self._producer.produce(topic, value=value, key=key, headers=headers, on_delivery=delivered, **extra)
                break
            except BufferError:
                # The local queue is full: serve delivery reports until there is room.
                self._producer.poll(0.1)
            except KafkaException as exc:
                raise PublishError(f"cannot publish to {topic}: {exc.args[0].str()}", exc.args[0]) from None
        self._producer.poll(0)

    def dead_letter(
        self,
        stage: str,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | str | None,
        value: bytes | None,
        error: BaseException,
        attempts: int = 1,
    ) -> DeadLetter:
        """Send a message that failed permanently to ``rag.dlq.<stage>``: payload intact,
        the reason in headers (see :class:`schemas.events.DeadLetter`)."""
        letter = DeadLetter(
            stage=stage, topic=topic, partition=partition, offset=offset,
            error_type=type(error).__name__, error_message=str(error)[:4000], attempts=attempts,
        )
        DEAD_LETTERS.labels(stage, letter.error_type).inc()
        log.warning("dead-lettered", stage=stage, topic=topic, partition=partition, offset=offset,
                    error_type=letter.error_type, error=letter.error_message)
        self.publish_raw(dlq_topic(stage), key, value, headers=dead_letter_headers(letter))
        return letter

    # -- waiting --------------------------------------------------------------------------
    def poll(self, timeout: float = 0) -> int:
        return self._producer.poll(timeout)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every queued event is acknowledged or failed; raise if any failed."""
        remaining = self._producer.flush(-1 if timeout is None else timeout)
        failures, self._failures = self._failures, []
        if remaining:
            raise PublishError(f"{remaining} event(s) still unacknowledged after {timeout}s; is the broker up?")
        if failures:
            topic, key, err = failures[0]
            raise PublishError(
                f"{len(failures)} event(s) were not acknowledged; first: topic={topic} key={key}: {err.str()}", err
            )

    def _recreate(self) -> None:
        """After a fatal error (e.g. the idempotent producer's sequence was lost) the client
        is unusable: replace it. Whatever it still held was never acknowledged, so the
        callers' retries (which resend only unacknowledged outputs) lose nothing."""
        fatal, self._fatal = self._fatal, None
        log.warning("recreating the producer after a fatal error", error=fatal.str() if fatal else "")
        try:
            self._producer.purge()
        except KafkaException:
            pass
        self._failures = []
        self._producer = Producer(self._conf)

    def __len__(self) -> int:
        return len(self._producer)

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err
            log.error("producer fatal error", error=err.str())
        elif err.code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN):
            if not self._broker_down:
                self._broker_down = True
                log.warning("broker unreachable; events stay queued and are retried", error=err.str())
        else:
            log.warning("producer error", error=err.str())


def _key_text(key: bytes | str | None) -> str:
    if isinstance(key, bytes):
        return key.decode("utf-8", errors="replace")
    return str(key)

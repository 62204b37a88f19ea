"""Configuration shared by every confluent-kafka client ragstream creates (one place)."""

from __future__ import annotations

import logging
from typing import Any

from ragstream.settings import Settings

#: librdkafka's own log lines go through Python logging (and so structlog), not raw stderr.
LIBRDKAFKA_LOG = logging.getLogger("librdkafka")


def client_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "logger": LIBRDKAFKA_LOG,
    }
    conf.update(overrides)
    return conf

"""Prometheus metrics: every metric ragstream exports is defined here, once.

Names follow Prometheus conventions (``ragstream_`` prefix, ``_total`` for counters,
base units in the name). Labels are bounded sets (topic, stage, error type): never a
doc_id, a path or anything that could carry personal data.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

PUBLISHED = Counter(
    "ragstream_published_total", "Events acknowledged by the broker (acks=all).", ["topic"]
)
PUBLISH_ERRORS = Counter(
    "ragstream_publish_errors_total", "Events the broker did not acknowledge, by error.", ["topic", "error"]
)
CONSUMED = Counter(
    "ragstream_consumed_total", "Messages read and handled, by stage.", ["stage", "topic"]
)
DEAD_LETTERS = Counter(
    "ragstream_dead_letters_total", "Messages sent to rag.dlq.<stage>, by error type.", ["stage", "error_type"]
)
PUBLISH_LATENCY = Histogram(
    "ragstream_publish_latency_seconds", "Time from produce() to the broker's acknowledgement.", ["topic"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

"""Prometheus metrics: every metric ragstream exports is defined here, once.

Names follow Prometheus conventions (``ragstream_`` prefix, ``_total`` for counters,
base units in the name). Labels are bounded sets (topic, stage, error type): never a
doc_id, a path or anything that could carry personal data.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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

# --- stages -------------------------------------------------------------------------------
EVENTS_IN = Counter("ragstream_stage_events_in_total", "Messages a stage read.", ["stage"])
EVENTS_OUT = Counter("ragstream_stage_events_out_total", "Messages a stage published.", ["stage", "topic"])
STAGE_ERRORS = Counter("ragstream_stage_errors_total", "Failures in a stage, by error type.", ["stage", "error_type"])
PROCESSING = Histogram(
    "ragstream_stage_processing_seconds", "Time to process one batch of messages.", ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
BATCH_SIZE = Histogram("ragstream_stage_batch_size", "Messages per processed batch.", ["stage"],
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
CONSUMER_LAG = Gauge("ragstream_consumer_lag_messages", "Messages behind the partition's end.", ["stage", "partition"])
STAGE_RETRIES = Counter("ragstream_stage_retries_total",
                        "Transient failures retried (within RAGSTREAM_RETRY_BUDGET_S).", ["stage"])
SECONDS_SINCE_PROGRESS = Gauge(
    "ragstream_stage_seconds_since_progress",
    "Seconds a partition has had input waiting without progress (0 when idle or moving).",
    ["stage", "topic", "partition"])
STALE_DROPPED = Counter("ragstream_stale_events_dropped_total",
                        "Events older than the version already applied for their document.", ["stage"])
CHUNKS_EMBEDDED = Counter("ragstream_chunks_embedded_total", "Chunks sent to the embedding model.", ["model"])
CHUNKS_REUSED = Counter("ragstream_chunks_reused_total",
                        "Chunks not sent to the model: their vector was reused (content unchanged, or a text identical to one already embedded).", ["model"])
INDEX_ROWS_WRITTEN = Counter("ragstream_index_rows_written_total", "Rows upserted into Milvus.")
ACL_ROWS_UPDATED = Counter("ragstream_acl_rows_updated_total",
                           "Milvus rows whose ACL a permission-only change rewrote (no re-embedding).")
INDEX_DOCS_DELETED = Counter("ragstream_index_documents_deleted_total", "Documents removed from Milvus.")

GRAPH_DOCS_APPLIED = Counter("ragstream_graph_documents_applied_total",
                             "Document versions the graph stage applied to Neo4j (stale ones not counted).", ["op"])
GRAPH_MENTIONS_WRITTEN = Counter("ragstream_graph_mentions_written_total",
                                 "Document-mentions-entity relations the graph stage wrote, by entity type.", ["type"])
GRAPH_PLACEHOLDERS_SKIPPED = Counter("ragstream_graph_placeholders_skipped_total",
                                     "Redaction placeholders the graph stage kept out of the entities.")
GRAPH_QUERIES = Counter("ragstream_graph_queries_total", "ACL-filtered graph queries answered, by kind.", ["kind"])

# --- producers ----------------------------------------------------------------------------
SOURCE_EVENTS = Counter("ragstream_source_events_total", "Change events a producer published.", ["source", "op"])
SOURCE_SKIPPED = Counter("ragstream_source_skipped_total", "Source items skipped, by reason.", ["source", "reason"])

PII_FINDINGS = Counter("ragstream_pii_findings_total", "PII spans acted on by the compliance stage.",
                       ["entity_type", "action"])
DOCS_CLASSIFIED = Counter("ragstream_documents_classified_total", "Documents by classification.", ["classification"])
DOCS_BLOCKED = Counter("ragstream_documents_blocked_total", "Documents policy kept out of the index.")
AUDIT_RECORDS = Counter("ragstream_audit_records_total", "Records appended to the audit chain.", ["action"])
AUDIT_CHAIN_VERIFIED = Gauge("ragstream_audit_chain_verified_records",
                             "Records of rag.audit the audit worker has verified (hashes, links, signed checkpoints).")
AUDIT_CHAIN_BROKEN = Gauge("ragstream_audit_chain_broken",
                           "1 once the audit worker found a break in the chain (see its log and `ragstream audit verify`).")
AUDIT_CHAIN_VERIFIED_AT = Gauge("ragstream_audit_chain_last_verified_timestamp_seconds",
                                "When the audit worker last verified the chain up to its end (Unix time).")

# --- data-subject requests and retention ----------------------------------------------------
DSR_REQUESTS = Counter("ragstream_dsr_requests_total", "Data-subject requests completed, by kind and outcome.",
                       ["kind", "outcome"])
DSR_DURATION = Histogram("ragstream_dsr_duration_seconds", "Time to carry out one data-subject request.", ["kind"],
                         buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600))
DSR_OPEN = Gauge("ragstream_dsr_open_requests",
                 "Data-subject requests filed and not yet completed (waiting in rag.dsr or in hand).")
DSR_NEXT_DUE = Gauge("ragstream_dsr_next_due_timestamp_seconds",
                     "The earliest legal due date of the open data-subject requests (Unix time; 0: none open).")
RETENTION_DELETED = Counter("ragstream_retention_deleted_total", "Documents removed because their retention ended.")
RETENTION_HELD = Gauge("ragstream_retention_held_documents",
                       "Documents past their retention kept because of a legal hold (last sweep).")


# --- supervision ------------------------------------------------------------------------------
class _SupervisorRestarts:
    """``ragstream_worker_restarts_total{stage}`` in a supervised worker: read at scrape time
    from its supervisor's state file (infra/supervise.py names it in the environment), so
    the count survives the worker's own restarts."""

    def __init__(self, path: str) -> None:
        self.path = path

    def describe(self) -> list:
        return []  # collected lazily: the file may not exist at registration time

    def collect(self):  # noqa: ANN201 - a prometheus_client collector
        import json

        from prometheus_client.core import CounterMetricFamily

        try:
            state = json.loads(open(self.path, encoding="utf-8").read())
        except (OSError, ValueError):
            return
        family = CounterMetricFamily("ragstream_worker_restarts",
                                     "Times the supervisor restarted this worker after it exited.", labels=["stage"])
        family.add_metric([str(state.get("stage", ""))], float(state.get("restarts", 0)))
        yield family


def _register_supervisor_restarts() -> None:
    import os

    from prometheus_client import REGISTRY

    path = os.environ.get("RAGSTREAM_SUPERVISOR_STATE")
    if path:
        REGISTRY.register(_SupervisorRestarts(path))


_register_supervisor_restarts()

# --- progress and convergence -------------------------------------------------------------------
INDEX_DOCS_APPLIED = Counter(
    "ragstream_index_documents_applied_total",
    "Document versions the index stage finished applying (upserts and deletes; stale ones not counted).", ["op"])
VERIFY_DRIFT = Gauge(
    "ragstream_verify_drift_documents",
    "Documents whose index state differs from the source at the last `ragstream verify`, by kind "
    "(missing, stale, orphan).", ["source", "kind"])
VERIFY_LAST_RUN = Gauge("ragstream_verify_last_run_timestamp_seconds",
                        "When `ragstream verify` last compared this source with the index.", ["source"])

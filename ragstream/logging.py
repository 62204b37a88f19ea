"""Structured logging set-up, shared by the CLI, producers and every stage.

Log lines are JSON (``RAGSTREAM_LOG_FORMAT=json``) or readable key=value for a terminal.
Context such as ``doc_id``, ``event_id`` and ``stage`` is bound with
``structlog.contextvars.bound_contextvars`` so every line inside a handler carries it.
"""

from __future__ import annotations

import logging
import sys

import structlog


class CurrentStderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is when a line is emitted.

    ``logging.StreamHandler(sys.stderr)`` keeps the stream it was given; once that stream is
    replaced and closed (pytest's capture between tests, a CLI that redirects stderr), every
    later line becomes a "--- Logging error ---" traceback instead of a log line.
    """

    def __init__(self) -> None:
        super().__init__()
        self._pinned = None  # a stream set later with setStream() is kept

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201 - whatever sys.stderr is, unless pinned
        return self._pinned if self._pinned is not None else sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001 - StreamHandler.__init__/setStream assign it
        self._pinned = value


def configure_logging(level: str = "INFO", fmt: str = "console") -> logging.Handler:
    """Install the structlog renderer on the root logger; return its handler (Faust workers reuse it)."""
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = CurrentStderrHandler()
    # Route stdlib logging (aiokafka, faust, pymilvus) through the same renderer.
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer,
        ])
    )
    handler.setLevel(level)  # also for libraries whose loggers set their own level (pymilvus)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    return handler


#: pymilvus configures these loggers when it is imported: its own console handler (bound to
#: the stderr of that moment) and no propagation, so its lines bypass the structured
#: renderer, the log file of `ragstream up` and the level chosen here.
PYMILVUS_LOGGERS = ("pymilvus", "pymilvus.milvus_client", "pymilvus.bulk_writer")


class _DropMessages(logging.Filter):
    def __init__(self, *messages: str) -> None:
        super().__init__()
        self.messages = messages

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in self.messages


def adopt_pymilvus_logging() -> None:
    """Send pymilvus' log lines through the root logger like every other library's (call it
    once pymilvus is imported: its import configures its loggers)."""
    for name in PYMILVUS_LOGGERS:
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    # milvus-lite keeps no MVCC timestamps: pymilvus' query iterator warns about that on every
    # call and then does the right thing (a client-side timestamp). Nothing to act on.
    iterator = logging.getLogger("pymilvus.client.iterator.query_iterator")
    if not any(isinstance(f, _DropMessages) for f in iterator.filters):
        iterator.addFilter(_DropMessages("failed to get mvccTs from milvus server, use client-side ts instead"))


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)

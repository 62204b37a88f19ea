"""What ``ragstream up`` shows while it loads a folder: progress, not logs.

Counts, and where they come from:

* **published** — the file-system producer, in this process (files considered / events
  handed to the publisher);
* **indexed** — the index's per-document registry (``<collection>_docs``): a published
  document counts once the index applied its version (or a newer one). Exact, and
  independent of any worker's counters;
* **chunks embedded** — the embed worker's ``ragstream_chunks_embedded_total`` +
  ``ragstream_chunks_reused_total``;
* **dead letters** — ``ragstream_dead_letters_total`` of every worker and of this producer.

Worker counters restart from zero when a worker restarts; :class:`Counters` adds what was
counted before, so the display never goes backwards.

On a terminal the display is two live tqdm bars; otherwise (a log file, CI) one plain line
every ``interval`` seconds. Per-file log lines go to ``<home>/logs/up.log``
(:func:`route_logs`), not the console, unless ``--verbose``.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import IO, Callable

from ragstream.settings import Settings

#: Loggers whose lines are per document (one per file published, skipped...).
PER_FILE_LOGGERS = ("producers", "ragstream.connector", "ragstream.dlq")


@dataclass
class Snapshot:
    files_total: int
    files_done: int
    published: int
    indexed: int
    chunks: int
    dead_letters: int
    skipped: int
    elapsed_s: float
    eta_s: float | None


class Counters:
    """Sums of counters scraped from the workers' /metrics pages, robust to restarts."""

    def __init__(self, urls: dict[str, str], fetch: Callable[[str], str] | None = None) -> None:
        self.urls = urls
        self.fetch = fetch or _fetch
        self._last: dict[tuple[str, str], float] = {}
        self._carried: dict[tuple[str, str], float] = {}

    def read(self, names: tuple[str, ...]) -> dict[str, float]:
        """name → total over every worker since the first read, for each sample name."""
        from prometheus_client.parser import text_string_to_metric_families

        out = {n: 0.0 for n in names}
        for worker, url in self.urls.items():
            try:
                text = self.fetch(url)
            except OSError:
                text = None  # a worker restarting: keep what it had counted
            now: dict[str, float] = {}
            if text is not None:
                for family in text_string_to_metric_families(text):
                    for sample in family.samples:
                        if sample.name in out:
                            now[sample.name] = now.get(sample.name, 0.0) + sample.value
            for name in names:
                key = (worker, name)
                if text is None:
                    value = self._last.get(key, 0.0)
                else:
                    value = now.get(name, 0.0)
                    if value < self._last.get(key, 0.0):  # the worker restarted: its counter did too
                        self._carried[key] = self._carried.get(key, 0.0) + self._last[key]
                    self._last[key] = value
                out[name] += self._carried.get(key, 0.0) + value
        return out


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return resp.read().decode("utf-8", errors="replace")


class Progress:
    """The live display of one initial load: feed it, it renders itself."""

    def __init__(self, settings: Settings, source_id: str, files_total: int | None, *, out: IO[str] | None = None,
                 tty: bool | None = None, interval: float = 10.0,
                 registry: Callable[[], dict[str, int]] | None = None,
                 counters: Counters | None = None) -> None:
        self.settings = settings
        self.source_id = source_id
        self.out = out or sys.stderr
        self.tty = self.out.isatty() if tty is None else tty
        self.interval = interval
        self.files_total = files_total
        self.files_done = 0
        self.versions: dict[str, int] = {}  # doc_id → version published in this run
        self.t0 = time.monotonic()
        self._registry = registry or self._registry_from_milvus
        if counters is None:
            from streams.registry import PIPELINE as STAGES, metrics_port

            counters = Counters({stage: f"http://127.0.0.1:{metrics_port(settings, stage)}/metrics"
                                 for stage in STAGES})
        self.counters = counters
        self._baseline = self._scrape()
        self._local_baseline = self._local()
        self._indexed = 0
        self._first_indexed_at: float | None = None
        self._lock = threading.Lock()
        self._last_line = 0.0
        self._last_poll = 0.0
        self._snapshot: Snapshot | None = None
        self._bars: list = []
        if self.tty:
            from tqdm import tqdm

            # Counts are set, not incremented, so tqdm's own rate and ETA would be wrong: ours are in the postfix.
            fmt = "{desc} {percentage:3.0f}%|{bar:30}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"
            self._bars = [
                tqdm(total=files_total, desc="files read", unit="file", file=self.out, position=0, leave=True,
                     bar_format=fmt),
                tqdm(total=0, desc="indexed   ", unit="doc", file=self.out, position=1, leave=True, bar_format=fmt),
            ]

    # -- feeding ---------------------------------------------------------------------------
    def file_done(self, n: int = 1) -> None:
        with self._lock:
            self.files_done += n
        self.tick()

    def published(self, doc_id: str, version: int) -> None:
        with self._lock:
            self.versions[doc_id] = version

    # -- reading ---------------------------------------------------------------------------
    def _scrape(self) -> dict[str, float]:
        return self.counters.read(("ragstream_chunks_embedded_total", "ragstream_chunks_reused_total",
                                   "ragstream_dead_letters_total"))

    def _local(self) -> tuple[float, float]:
        """This process's own counts: ingestion dead letters, files skipped."""
        from ragstream.metrics import DEAD_LETTERS, SOURCE_SKIPPED

        return _local_total(DEAD_LETTERS, stage="ingest"), _local_total(SOURCE_SKIPPED, source=self.source_id)

    def _registry_from_milvus(self) -> dict[str, int]:
        from ragstream.verify import IndexView

        if not hasattr(self, "_index"):
            self._index = IndexView(self.settings)
        return {d: max(doc.version, doc.acl_version) for d, doc in self._index.registry(self.source_id).items()}

    def snapshot(self, poll: bool = True) -> Snapshot:
        """Current counts; ``poll`` reads the workers and the registry (at most every second)."""
        now = time.monotonic()
        if poll and now - self._last_poll >= 1.0 or self._snapshot is None:
            self._last_poll = now
            counts = self._scrape()
            chunks = sum(counts[k] - self._baseline[k] for k in
                         ("ragstream_chunks_embedded_total", "ragstream_chunks_reused_total"))
            worker_letters = counts["ragstream_dead_letters_total"] - self._baseline["ragstream_dead_letters_total"]
            try:
                applied = self._registry()
            except Exception:  # noqa: BLE001 - Milvus busy or restarting: keep the last count
                applied = None
            with self._lock:
                versions = dict(self.versions)
            if applied is not None:
                self._indexed = sum(1 for d, v in versions.items() if applied.get(d, -1) >= v)
                if self._indexed and self._first_indexed_at is None:
                    self._first_indexed_at = now
            producer_letters, skipped = (a - b for a, b in zip(self._local(), self._local_baseline))
            self._chunks, self._letters, self._skipped = int(chunks), int(worker_letters + producer_letters), int(skipped)
        with self._lock:
            published = len(self.versions)
            files_done = self.files_done
        eta = None
        remaining = published - self._indexed
        if self._first_indexed_at is not None and self._indexed and remaining > 0:
            rate = self._indexed / max(now - self._first_indexed_at, 1e-3)
            eta = remaining / rate
        elif remaining == 0 and files_done >= (self.files_total or 0):
            eta = 0.0
        self._snapshot = Snapshot(self.files_total, files_done, published, self._indexed, self._chunks,
                                  self._letters, self._skipped, now - self.t0, eta)
        return self._snapshot

    # -- rendering -------------------------------------------------------------------------
    def tick(self, _lag: object = None) -> None:
        """Refresh the display (cheap to call often: polling and plain lines are rate-limited)."""
        snap = self.snapshot()
        if self.tty:
            files, docs = self._bars
            files.n = snap.files_done
            files.refresh()
            docs.total = max(snap.published, snap.indexed)
            docs.n = snap.indexed
            docs.set_postfix_str(f"chunks embedded {snap.chunks:,} · dead letters {snap.dead_letters} · "
                                 f"skipped {snap.skipped} · ETA {_duration(snap.eta_s)}", refresh=True)
            return
        now = time.monotonic()
        if now - self._last_line >= self.interval:
            self._last_line = now
            self.out.write(plain_line(snap) + "\n")
            self.out.flush()

    def close(self) -> Snapshot:
        self._last_poll = 0.0  # the final counts, not the last rate-limited ones
        snap = self.snapshot()
        if self.tty:
            self.tick()  # uses the snapshot just taken (polling is rate-limited)
            for bar in self._bars:
                bar.close()
        else:
            self.out.write(plain_line(snap) + "\n")
            self.out.flush()
        return snap


def plain_line(s: Snapshot) -> str:
    return (f"progress: {s.files_done}/{s.files_total} files read, {s.published} published, "
            f"{s.indexed}/{s.published} documents indexed, {s.chunks:,} chunks embedded, "
            f"{s.dead_letters} dead letters, {s.skipped} skipped, elapsed {_duration(s.elapsed_s)}, "
            f"ETA {_duration(s.eta_s)}")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def _local_total(metric: object, **match: str) -> float:
    """Sum of an in-process counter's samples whose labels include ``match``."""
    total = 0.0
    for family in metric.collect():  # type: ignore[attr-defined]
        for sample in family.samples:
            if sample.name.endswith("_total") and all(sample.labels.get(k) == v for k, v in match.items()):
                total += sample.value
    return total


def route_logs(settings: Settings, verbose: bool) -> str:
    """Send every log line to ``<home>/logs/up.log`` (JSON); keep per-file lines off the
    console unless ``verbose``. Returns the log file's path."""
    import structlog

    path = settings.home / "logs" / "up.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name,
                           structlog.processors.TimeStamper(fmt="iso", utc=True)],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.JSONRenderer()]))
    root = logging.getLogger()
    if not verbose:
        for console in root.handlers:
            console.addFilter(_NotPerFile())
    root.addHandler(handler)
    return str(path)


class _NotPerFile(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(PER_FILE_LOGGERS) or record.levelno >= logging.ERROR

"""`ragstream up`'s progress display without a terminal, its counters and its log routing."""

from __future__ import annotations

import io
import json
import logging

from ragstream.progress import Counters, Progress, plain_line, route_logs
from ragstream.settings import load_settings

PAGE = """# HELP ragstream_chunks_embedded_total Chunks sent to the embedding model.
# TYPE ragstream_chunks_embedded_total counter
ragstream_chunks_embedded_total{{model="m"}} {embedded}
# HELP ragstream_dead_letters_total Messages sent to rag.dlq.<stage>, by error type.
# TYPE ragstream_dead_letters_total counter
ragstream_dead_letters_total{{stage="embed",error_type="Permanent"}} {letters}
"""


class FakeWorkers:
    """Metrics pages whose counters the test sets; a worker can be down (OSError)."""

    def __init__(self) -> None:
        self.values = {"embed": (0, 0), "index": (0, 0)}
        self.down: set[str] = set()

    def fetch(self, url: str) -> str:
        worker = url.rsplit("/", 1)[-1]
        if worker in self.down:
            raise OSError("connection refused")
        embedded, letters = self.values[worker]
        return PAGE.format(embedded=embedded, letters=letters)


def test_counters_survive_a_worker_restart():
    fake = FakeWorkers()
    counters = Counters({"embed": "http://x/embed"}, fetch=fake.fetch)
    name = ("ragstream_chunks_embedded_total",)
    for value, total in ((5, 5), (8, 8)):
        fake.values["embed"] = (value, 0)
        assert counters.read(name)[name[0]] == total
    fake.down.add("embed")  # restarting: the last count holds
    assert counters.read(name)[name[0]] == 8
    fake.down.clear()
    fake.values["embed"] = (2, 0)  # the new process counts from zero
    assert counters.read(name)[name[0]] == 10
    fake.values["embed"] = (3, 0)
    assert counters.read(name)[name[0]] == 11


def test_plain_lines_without_a_terminal(tmp_path):
    fake = FakeWorkers()
    fake.values["embed"] = (100, 1)  # before the load: the baseline, not counted
    applied: dict[str, int] = {}
    out = io.StringIO()
    progress = Progress(load_settings(home=tmp_path / "home"), "fs-x", files_total=3, out=out, tty=False,
                        interval=0, registry=lambda: dict(applied),
                        counters=Counters({"embed": "http://x/embed", "index": "http://x/index"}, fetch=fake.fetch))
    progress.published("fs-x:a.md", 10)
    progress.published("fs-x:b.md", 20)
    progress.file_done()
    progress.file_done()
    progress.file_done()
    applied.update({"fs-x:a.md": 10, "fs-x:b.md": 19})  # b: the index still has an older version
    fake.values["embed"] = (112, 2)
    progress._last_poll = 0
    snap = progress.snapshot()
    assert (snap.files_done, snap.published, snap.indexed, snap.chunks, snap.dead_letters) == (3, 2, 1, 12, 1)
    assert snap.eta_s is not None and snap.eta_s > 0
    applied["fs-x:b.md"] = 20
    final = progress.close()
    assert (final.indexed, final.eta_s) == (2, 0.0)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 2 and all(line.startswith("progress: ") for line in lines)
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()  # no terminal control codes
    assert lines[-1] == plain_line(final)
    assert "3/3 files read, 2 published, 2/2 documents indexed, 12 chunks embedded, 1 dead letters" in lines[-1]


def test_per_file_lines_go_to_the_log_file_not_the_console(tmp_path):
    from ragstream.logging import configure_logging, get_logger

    settings = load_settings(home=tmp_path / "home")
    root = logging.getLogger()
    saved = root.handlers[:]
    try:
        configure_logging("INFO", "console")
        console = io.StringIO()
        root.handlers[0].setStream(console)
        path = route_logs(settings, verbose=False)
        get_logger("producers.filesystem").info("change published", doc_id="fs-x:a.md")
        get_logger("producers.filesystem").warning("file skipped", doc_id="fs-x:b.bin", reason="unsupported")
        get_logger("ragstream.cli").warning("something for people")
        for h in root.handlers:
            h.flush()
        assert "change published" not in console.getvalue() and "file skipped" not in console.getvalue()
        assert "something for people" in console.getvalue()
        logged = [json.loads(line) for line in open(path, encoding="utf-8")]
        assert [e["event"] for e in logged] == ["change published", "file skipped", "something for people"]
        assert logged[0]["doc_id"] == "fs-x:a.md"
    finally:
        for h in root.handlers:
            if h not in saved:
                h.close()
        root.handlers[:] = saved

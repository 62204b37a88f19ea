"""Workers killed mid-load are restarted by their supervisors, and nothing is lost.

The stage workers of the shared pipeline run under infra/supervise.py, as `ragstream up`
and `ragstream stack up` start them. This test kills (SIGKILL) the worker process of a
random stage 20 times while 500 documents are being loaded — the supervisors, not the
test, start them again — and then uses `ragstream verify` as the oracle: drift 0, every
document in the index with its chunk ids, version and ACL, and no dead letters.
"""

from __future__ import annotations

import os
import random
import re
import signal
import time
import urllib.request

import pytest

from infra.stack import WORKERS, Stack
from producers.filesystem import FilesystemSource
from ragstream.admin import stage_lag, wait_drained
from ragstream.verify import DLQ_STAGES, dead_letters, verify_source

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STAGES = ("compliance", "chunk", "embed", "index")


def paragraphs(seed: int, n: int, words: int = 50) -> str:
    rng = random.Random(seed)
    vocab = ("invoice ledger audit payroll vendor contract budget forecast revenue expense approval "
             "policy quarter region customer renewal churn pipeline margin hiring travel").split()
    return "\n\n".join(f"Paragraph {i} of {seed} says " + " ".join(rng.choice(vocab) for _ in range(words)) + "."
                       for i in range(n))


def wait_for(predicate, timeout: float, what: str):  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def restarts_metric(port: int, stage: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    match = re.search(rf'^ragstream_worker_restarts_total{{stage="{stage}"}} ([0-9.e+]+)$', body, re.M)
    assert match, f"the {stage} worker does not export ragstream_worker_restarts_total"
    return float(match.group(1))


@pytest.mark.timeout(2400)
def test_kill_9_of_a_random_stage_worker_20_times_during_a_500_document_load(pipeline, tmp_path):
    from streams.registry import metrics_port

    rng = random.Random(20261125)
    folder = tmp_path / "load"
    folder.mkdir()
    src = FilesystemSource(pipeline, folder)
    stack = Stack(pipeline, WORKERS)
    restarts_before = {s: stack[f"worker-{s}"].status().restarts or 0 for s in STAGES}
    kills = dict.fromkeys(STAGES, 0)
    in_flight = []
    for round_ in range(20):
        for i in range(25):  # 25 new documents per round: 500 in all, published as the kills go on
            n = round_ * 25 + i
            (folder / f"doc{n:03d}.md").write_text(f"# Document {n}\n\n" + paragraphs(n, 2 + n % 4))
        src.sync()
        time.sleep(rng.uniform(0.3, 2.0))
        stage = rng.choice(STAGES)
        worker = stack[f"worker-{stage}"]
        victim = wait_for(worker.child_pid, 180, f"a running {stage} worker")
        in_flight.append(sum(stage_lag(pipeline, STAGES).values()))
        os.kill(victim, signal.SIGKILL)
        kills[stage] += 1
        # The supervisor, not this test, brings it back; the next kill of this stage then hits
        # a worker that is up again (not one still waiting out its backoff).
        wait_for(lambda: (pid := worker.child_pid()) not in (None, victim) and worker.ready(), 240,
                 f"the supervisor to restart the {stage} worker (kill {round_ + 1})")

    assert sum(1 for lag in in_flight if lag > 0) >= 10, f"too few kills hit work in flight: {in_flight}"
    assert wait_drained(pipeline, timeout=900), "the pipeline did not catch up after the kills"

    report = verify_source(pipeline, src)
    assert (report.listed, len(report.drift)) == (500, 0), [f for f in report.findings][:10]
    assert report.indexed == 500
    assert dead_letters(pipeline, src.source_id) == {}, f"dead letters in {DLQ_STAGES}"

    for stage in STAGES:
        status = stack[f"worker-{stage}"].status()
        assert status.restarts - restarts_before[stage] == kills[stage], (stage, status, kills)
        assert restarts_metric(metrics_port(pipeline, stage), stage) == status.restarts

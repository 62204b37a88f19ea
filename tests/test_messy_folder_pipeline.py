"""Real folders are messy: the load finishes, and every file ends up searchable or set
aside with a reason. `ragstream verify` is the oracle."""

from __future__ import annotations

import io
import random
import sys

import pytest

from producers.filesystem import FilesystemSource
from ragstream.admin import wait_drained
from ragstream.verify import verify_source

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def prose(seed: int, n_paragraphs: int) -> str:
    rng = random.Random(seed)
    vocab = ("invoice ledger audit payroll vendor contract budget forecast revenue expense approval policy "
             "quarter region customer renewal churn pipeline margin hiring travel warehouse freight").split()
    return "\n\n".join(f"Section {i}. " + " ".join(rng.choice(vocab) for _ in range(rng.randint(40, 160))) + "."
                       for i in range(n_paragraphs))


def pdf_of(pages: int) -> bytes:
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf)
    rng = random.Random(300)
    for page in range(pages):
        for line in range(20):
            c.drawString(72, 750 - 30 * line, f"Page {page} line {line}: " + " ".join(
                rng.choice(("freight", "invoice", "customs", "pallet", "carrier")) for _ in range(8)))
        c.showPage()
    c.save()
    return buf.getvalue()


@pytest.mark.timeout(1800)
def test_a_messy_folder_loads_completely_and_verifies_with_no_drift(pipeline, tmp_path):
    folder = tmp_path / "messy"
    folder.mkdir()
    big = prose(3, 4000)
    while len(big.encode()) < 3_000_000:
        big += "\n\n" + prose(len(big), 500)
    (folder / "big.txt").write_text(big)  # 3 MB of text: thousands of chunks
    (folder / "manual.pdf").write_bytes(pdf_of(300))
    (folder / "one-line.txt").write_text("".join(random.Random(1).choice("abcdefghij0123456789")
                                                 for _ in range(1_000_000)))
    (folder / "latin1.txt").write_bytes("Grüße aus Köln: Übermäßige Größe, ça va?".encode("cp1252"))
    (folder / "empty.txt").write_bytes(b"")
    depth = sys.getrecursionlimit() * 2
    (folder / "deep.html").write_text("<html><body>" + "<div>" * depth + "buried freight notes"
                                      + "</div>" * depth + "</body></html>")
    (folder / "line\nbreak ünïcode ✓.md").write_text("# Odd name\n\nA document with an awkward name.")
    (folder / "corrupt.pdf").write_bytes(b"%PDF-1.4\nthis is not a PDF\n")
    (folder / "photo.jpg").write_bytes(bytes(range(256)) * 4)

    src = FilesystemSource(pipeline, folder)
    stats = src.sync()
    assert (stats.upserts, stats.dead_lettered, stats.skipped) == (7, 1, 1), stats
    assert wait_drained(pipeline, timeout=1500), "the load did not finish"

    report = verify_source(pipeline, src)
    by_doc = {f.doc_id: (f.kind, f.reason) for f in report.findings}
    assert report.drift == [], report.drift
    assert report.listed == report.indexed == 7
    assert by_doc[src.doc_id("corrupt.pdf")][0] == "dead_lettered"
    assert by_doc[src.doc_id("photo.jpg")][0] == "skipped"
    assert set(by_doc) == {src.doc_id("corrupt.pdf"), src.doc_id("photo.jpg")}

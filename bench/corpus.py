"""A reproducible corpus of enterprise-like documents (seeded; same seed, same documents).

    .venv/bin/python -m bench.corpus FOLDER [--docs 1000] [--seed 42]

Markdown (45%), HTML (20%), PDF (15%, reportlab), DOCX (10%, python-docx) and plain text (10%)
with headings, realistic paragraph lengths (40-160 words), lists and tables; one document
in five carries a contact paragraph with a person's name, e-mail and phone (the PII the
compliance stage must act on); file modes vary (0600 owner only, 0640 owner and group,
0644 world-readable) so ACLs vary. Text, markdown, HTML and PDF bytes are identical for a
seed; DOCX text is (its zip members carry the time they were written). 100 to 10,000
documents; :func:`edit_paragraph` makes the one-paragraph edits of the incremental benchmark.
"""

from __future__ import annotations

import argparse
import io
import random
import re
from datetime import datetime, timezone
from pathlib import Path

TOPICS = {
    "finance": "invoice ledger accrual forecast budget variance audit revenue margin expense quarter approval".split(),
    "hr": "onboarding benefits leave payroll review promotion hiring policy training manager contract".split(),
    "it": "incident outage deploy server database backup access token firewall patch monitoring latency".split(),
    "legal": "clause liability indemnity contract jurisdiction compliance retention privacy consent breach".split(),
}
GIVEN = "Maria Jonas Aisha Pieter Sofia Liam Chen Fatima Lukas Elena Omar Hannah Ravi Ingrid Mateo Yuki".split()
FAMILY = "Keller Okafor Lindqvist Moreau Novak Haddad Brennan Silva Tanaka Kowalski Dubois Fischer Rossi Berg".split()
FILLER = "the a of to and in for with on by is are was will be that this from as at we our".split()


def paragraph(rng: random.Random, words: list[str]) -> str:
    n = rng.randint(40, 160)
    out, sentence = [], []
    for _ in range(n):
        sentence.append(rng.choice(words) if rng.random() < 0.35 else rng.choice(FILLER))
        if len(sentence) >= rng.randint(8, 20):
            out.append(" ".join(sentence).capitalize() + ".")
            sentence = []
    if sentence:
        out.append(" ".join(sentence).capitalize() + ".")
    return " ".join(out)


def contact(rng: random.Random) -> str:
    """A paragraph with one person's name, e-mail and phone (seeded: the same each run)."""
    given, family = rng.choice(GIVEN), rng.choice(FAMILY)
    phone = f"+1 202-555-{rng.randint(100, 199):04d}"
    return (f"For questions contact {given} {family} at {given.lower()}.{family.lower()}@example.com "
            f"or call {phone}. {given} {family} approved this document.")


def document(rng: random.Random, i: int) -> tuple[str, str | bytes]:
    topic = rng.choice(list(TOPICS))
    words = TOPICS[topic]
    sections = []
    for s in range(rng.randint(2, 5)):
        body = [paragraph(rng, words) for _ in range(rng.randint(1, 4))]
        if rng.random() < 0.3:
            body.append("\n".join(f"- {rng.choice(words)} {rng.choice(words)} item {k}" for k in range(rng.randint(2, 6))))
        if rng.random() < 0.15:
            rows = "\n".join(f"| {rng.choice(words)} | {rng.randint(1, 9999)} |" for _ in range(rng.randint(2, 8)))
            body.append(f"| item | amount |\n|---|---|\n{rows}")
        sections.append((f"{rng.choice(words).title()} {s + 1}", body))
    if rng.random() < 0.2:
        sections[-1][1].append(contact(rng))
    title = f"{topic.upper()} document {i}"
    kind = rng.choices(["md", "html", "pdf", "docx", "txt"], weights=[45, 20, 15, 10, 10])[0]
    if kind == "pdf":
        return f"{topic}/doc{i:05d}.pdf", pdf_bytes(title, sections)
    if kind == "docx":
        return f"{topic}/doc{i:05d}.docx", docx_bytes(title, sections)
    if kind == "md":
        text = f"# {title}\n\n" + "\n\n".join(f"## {h}\n\n" + "\n\n".join(b) for h, b in sections)
    elif kind == "html":
        text = f"<html><body><h1>{title}</h1>" + "".join(
            f"<h2>{h}</h2>" + "".join(f"<p>{p}</p>" for p in b if not p.startswith(("-", "|"))) for h, b in sections
        ) + "</body></html>"
    else:
        text = f"{title}\n\n" + "\n\n".join(p for _, b in sections for p in b if not p.startswith(("-", "|")))
    return f"{topic}/doc{i:05d}.{kind}", text


FIXED_DATE = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _prose(body: list[str]) -> list[str]:
    return [p for p in body if not p.startswith(("-", "|"))]


def pdf_bytes(title: str, sections: list[tuple[str, list[str]]]) -> bytes:
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import Paragraph, SimpleDocTemplate

    styles = getSampleStyleSheet()
    story = [Paragraph(title, styles["Title"])]
    for heading, body in sections:
        story.append(Paragraph(heading, styles["Heading2"]))
        story += [Paragraph(p, styles["BodyText"]) for p in _prose(body)]
    out = io.BytesIO()
    SimpleDocTemplate(out, invariant=True, title=title).build(story)  # invariant: no dates or random ids
    return out.getvalue()


def docx_bytes(title: str, sections: list[tuple[str, list[str]]]) -> bytes:
    import docx

    d = docx.Document()
    d.core_properties.created = d.core_properties.modified = FIXED_DATE.replace(tzinfo=None)
    d.add_heading(title, level=1)
    for heading, body in sections:
        d.add_heading(heading, level=2)
        for p in _prose(body):
            d.add_paragraph(p)
    out = io.BytesIO()
    d.save(out)
    return out.getvalue()


def generate(folder: Path, n: int, seed: int = 42) -> list[Path]:
    rng = random.Random(seed)
    paths = []
    for i in range(n):
        rel, content = document(rng, i)
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        path.chmod(rng.choice([0o600, 0o640, 0o644]))
        paths.append(path)
    return paths


EDITABLE = (".md", ".txt", ".html")


def edit_paragraph(path: Path, rng: random.Random) -> bool:
    """Replace one prose paragraph of a text document with a new one (similar words);
    False for binary formats, which the incremental benchmark does not edit."""
    if path.suffix not in EDITABLE:
        return False
    text = path.read_text()
    if path.suffix == ".html":
        spans = [m.span(1) for m in re.finditer(r"<p>([^<]{200,})</p>", text)]
    else:
        spans, pos = [], 0
        for part in text.split("\n\n"):
            if len(part.split()) >= 40 and not part.startswith(("#", "-", "|")):
                spans.append((pos, pos + len(part)))
            pos += len(part) + 2
    if not spans:
        return False
    start, end = rng.choice(spans)
    words = [w.strip(".").lower() for w in text[start:end].split() if len(w) > 4] or FILLER
    path.write_text(text[:start] + paragraph(rng, words) + text[end:])
    return True


def edit_tenth(paths: list[Path], seed: int = 7) -> list[Path]:
    """The incremental benchmark's edits (the same for ragstream and the peer): one
    paragraph in 10% of the documents, drawn from the text formats; returns those edited."""
    rng = random.Random(seed)
    candidates = [p for p in paths if p.suffix in EDITABLE]
    chosen = rng.sample(candidates, min(len(candidates), max(1, len(paths) // 10)))
    return [p for p in chosen if edit_paragraph(p, rng)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--docs", type=int, default=1000, help="100 to 10,000 (default 1000)")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    if not 1 <= args.docs <= 10_000:
        ap.error("--docs must be between 1 and 10,000")
    paths = generate(args.folder, args.docs, args.seed)
    kinds: dict[str, int] = {}
    for p in paths:
        kinds[p.suffix] = kinds.get(p.suffix, 0) + 1
    print(f"{len(paths)} documents in {args.folder}: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))


if __name__ == "__main__":
    main()

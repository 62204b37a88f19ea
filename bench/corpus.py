"""A reproducible corpus of enterprise-like documents (seeded; same seed, same bytes).

Markdown, HTML and plain text with headings, realistic paragraph lengths (40-160 words),
lists and tables; file modes vary so ACLs vary. PDF/DOCX and seeded PII are to come with
the benchmark suite (see the benchmarks issue).
"""

from __future__ import annotations

import random
from pathlib import Path

TOPICS = {
    "finance": "invoice ledger accrual forecast budget variance audit revenue margin expense quarter approval".split(),
    "hr": "onboarding benefits leave payroll review promotion hiring policy training manager contract".split(),
    "it": "incident outage deploy server database backup access token firewall patch monitoring latency".split(),
    "legal": "clause liability indemnity contract jurisdiction compliance retention privacy consent breach".split(),
}
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


def document(rng: random.Random, i: int) -> tuple[str, str]:
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
    title = f"{topic.upper()} document {i}"
    kind = rng.choices(["md", "html", "txt"], weights=[6, 3, 1])[0]
    if kind == "md":
        text = f"# {title}\n\n" + "\n\n".join(f"## {h}\n\n" + "\n\n".join(b) for h, b in sections)
    elif kind == "html":
        text = f"<html><body><h1>{title}</h1>" + "".join(
            f"<h2>{h}</h2>" + "".join(f"<p>{p}</p>" for p in b if not p.startswith(("-", "|"))) for h, b in sections
        ) + "</body></html>"
    else:
        text = f"{title}\n\n" + "\n\n".join(p for _, b in sections for p in b if not p.startswith(("-", "|")))
    return f"{topic}/doc{i:05d}.{kind}", text


def generate(folder: Path, n: int, seed: int = 42) -> list[Path]:
    rng = random.Random(seed)
    paths = []
    for i in range(n):
        rel, text = document(rng, i)
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(rng.choice([0o600, 0o640, 0o644]))
        paths.append(path)
    return paths

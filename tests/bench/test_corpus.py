"""The benchmark corpus: reproducible, every format extractable, PII present, edits local."""

from __future__ import annotations

import difflib
import random
from collections import Counter

from bench.corpus import EDITABLE, edit_paragraph, edit_tenth, generate
from producers.extract import content_type_for, extract


def texts(paths) -> dict[str, str]:
    return {p.name: extract(p.read_bytes(), content_type_for(p.name)) for p in paths}


def test_same_seed_same_documents_in_every_format(tmp_path):
    first, second = generate(tmp_path / "a", 60), generate(tmp_path / "b", 60)
    assert texts(first) == texts(second)
    assert [p.stat().st_mode for p in first] == [p.stat().st_mode for p in second]
    assert {p.suffix for p in first} == {".md", ".html", ".pdf", ".docx", ".txt"}
    for p, q in zip(first, second):
        if p.suffix != ".docx":  # docx zip members carry their write time; their text is compared above
            assert p.read_bytes() == q.read_bytes(), p.name
    assert texts(first) != texts(generate(tmp_path / "c", 60, seed=1))


def test_documents_carry_pii_and_varied_permissions(tmp_path):
    paths = generate(tmp_path, 100)
    contents = texts(paths).values()
    with_contact = sum("@example.com" in t and "+1 202-555-" in t for t in contents)
    assert 10 <= with_contact <= 35, with_contact  # about one in five
    assert len(Counter(p.stat().st_mode & 0o777 for p in paths)) == 3
    assert all(len(t.split()) > 60 for t in contents)


def test_an_edit_replaces_exactly_one_paragraph(tmp_path):
    paths = generate(tmp_path, 40)
    rng = random.Random(1)
    for p in [p for p in paths if p.suffix in EDITABLE][:10]:
        before = p.read_text()
        assert edit_paragraph(p, rng)
        after = p.read_text()
        sep = "</p>" if p.suffix == ".html" else "\n\n"
        changed = [d for d in difflib.ndiff(before.split(sep), after.split(sep)) if d[:1] in "+-"]
        assert len(changed) == 2, (p.name, changed)  # one paragraph out, one in
    binary = next(p for p in paths if p.suffix == ".pdf")
    assert not edit_paragraph(binary, rng) and binary.read_bytes()


def test_edit_tenth_is_the_same_edit_for_everyone(tmp_path):
    a, b = generate(tmp_path / "a", 50), generate(tmp_path / "b", 50)
    assert [p.name for p in edit_tenth(a)] == [p.name for p in edit_tenth(b)]
    assert texts(a) == texts(b)
    assert len(edit_tenth(generate(tmp_path / "c", 50))) == 5

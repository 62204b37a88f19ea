"""Build the independent PII evaluation sets in tests/data/pii_independent/ (labelled elsewhere).

Neither set was written or labelled by this project; this script only converts them to the
``ragstream pii eval`` format (JSON lines, character spans). The converted files are
committed, so nobody needs these packages to run the evaluation; this script says exactly
where each file came from and rebuilds it:

1. ``presidio_evaluator_1500.jsonl`` — 1,500 texts made by Microsoft's presidio-evaluator
   0.3.2 (PyPI; MIT) with its own templates (``raw_data/templates.txt``, written from real
   NER corpora) and its name/address records (FakeNameGenerator.com, CC BY-SA 3.0 US):
   ``PresidioSentenceFaker(locale="en_US", lower_case_ratio=0.05, random_seed=42)
   .generate_new_fake_sentences(1500)``. Literal ``\\n`` in its templates become newlines.
   Another generator with other templates, other names and 16 entity types.

       pip install --no-deps --target /tmp/pe presidio-evaluator==0.3.2
       pip install --target /tmp/pe presidio-anonymizer==2.2.366 pandas
       PYTHONPATH=/tmp/pe python -m bench.pii_independent presidio

2. ``opennlp_real.jsonl`` — real, human-labelled English from the test resources of Apache
   OpenNLP (Maven Central ``org.apache.opennlp:opennlp-tools:2.5.4:tests``, Apache-2.0):
   ``opennlp/tools/namefind/voa1.train`` and ``voa2.train`` (Voice of America news, a US
   government work, labelled person/location/organization/date) and
   ``AnnotatedSentencesWithTypes.txt`` (short letters and dialogues, people labelled, one
   document per paragraph; ``labelled_types: ["PERSON"]``, so its unlabelled addresses and
   places are not scored). The VOA text is tokenised; it is joined back with the usual
   detokenisation rules (no space before punctuation, ``U . S .`` → ``U.S.``).

       mvn dependency:get -Dartifact=org.apache.opennlp:opennlp-tools:2.5.4:jar:tests -Dtransitive=false
       python -m bench.pii_independent opennlp ~/.m2/repository/org/apache/opennlp/opennlp-tools/2.5.4/opennlp-tools-2.5.4-tests.jar

3. ``presidio_research_synth_v2.jsonl`` — the labelled set Microsoft publishes with
   presidio-research (GitHub ``microsoft/presidio-research``, MIT, ``data/synth_dataset_v2.json``,
   last changed in commit f3ff907e of 2022-02-24): 1,500 texts from an earlier version of the
   presidio-evaluator templates, labelled by that generator (``GPE`` for towns and countries,
   addresses sometimes whole and sometimes split into street, town, region and postcode).
   Nothing here was tuned on it: it is the held-out check beside set 1.

       git clone https://github.com/microsoft/presidio-research /tmp/pr
       python -m bench.pii_independent presidio-research /tmp/pr/data/synth_dataset_v2.json
"""

from __future__ import annotations

import json
import re
import sys
import zipfile
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "pii_independent"
_TAG = re.compile(r"<START(?::([\w-]+))?>\s*(.*?)\s*<END>")
_NO_SPACE_BEFORE = {",", ".", ";", ":", "!", "?", ")", "'s", "’s", "%", "n't", "'"}


def _unescape_newlines(text: str, spans: list[dict]) -> tuple[str, list[dict]]:
    """Replace literal backslash-n with a newline, moving span offsets accordingly."""
    out, shift, mapping = [], 0, []
    i = 0
    while i < len(text):
        mapping.append(i - shift)
        if text.startswith("\\n", i):
            out.append("\n")
            mapping.append(i - shift)  # the second character of the pair
            shift += 1
            i += 2
            continue
        out.append(text[i])
        i += 1
    mapping.append(len(text) - shift)
    return "".join(out), [{**s, "start": mapping[s["start"]], "end": mapping[s["end"]]} for s in spans]


def presidio(n: int = 1500, seed: int = 42) -> Path:
    for m in ("torch", "transformers"):
        sys.modules.setdefault(m, None)  # type: ignore[arg-type]  # not needed to generate text
    from presidio_evaluator.data_generator import PresidioSentenceFaker

    faker = PresidioSentenceFaker(locale="en_US", lower_case_ratio=0.05, random_seed=seed)
    path = OUT / f"presidio_evaluator_{n}.jsonl"
    OUT.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for i, sample in enumerate(faker.generate_new_fake_sentences(n)):
            spans = [{"start": s.start_position, "end": s.end_position, "entity_type": s.entity_type}
                     for s in sample.spans]
            text, spans = _unescape_newlines(sample.full_text, spans)
            fh.write(json.dumps({"id": f"presidio-{i}", "text": text,
                                 "spans": sorted(spans, key=lambda s: s["start"])}, ensure_ascii=False) + "\n")
    return path


def _detokenize(tokens: list[tuple[str, str | None]]) -> tuple[str, list[dict]]:
    """Join (token, entity-or-None) pairs into text; entity runs become spans."""
    text = ""
    spans: list[dict] = []
    prev: list[str] = []
    for tok, ent in tokens:
        if not tok:  # the end of an entity: the next one starts a new span
            if spans:
                spans[-1]["_open"] = False
            continue
        glue = bool(text) and not (
            tok in _NO_SPACE_BEFORE or tok == "-" or (prev and prev[-1] in ("(", "$", "-"))
            or (tok == "s" and prev and prev[-1] == "'")
            or (len(prev) >= 2 and prev[-1] == "." and len(prev[-2]) == 1 and prev[-2].isupper()
                and len(tok) == 1 and tok.isupper()))
        if glue:
            text += " "
        start = len(text)
        text += tok
        if ent:
            if spans and spans[-1]["entity_type"] == ent and spans[-1].get("_open"):
                spans[-1]["end"] = len(text)
            else:
                spans.append({"start": start, "end": len(text), "entity_type": ent, "_open": True})
        elif spans:
            spans[-1]["_open"] = False
        prev.append(tok)
    for s in spans:
        s.pop("_open", None)
    return text, spans


def _tokens(line: str) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    pos = 0
    for m in _TAG.finditer(line):
        out += [(t, None) for t in line[pos:m.start()].split()]
        kind = (m.group(1) or "person").upper()
        out += [(t, kind) for t in m.group(2).split()]
        pos = m.end()
        # close the run so two adjacent entities of one type stay two spans
        out.append(("", None))
    out += [(t, None) for t in line[pos:].split()]
    return out


def opennlp(jar: Path) -> Path:
    path = OUT / "opennlp_real.jsonl"
    OUT.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(jar) as z, path.open("w", encoding="utf-8") as fh:
        for name in ("voa1.train", "voa2.train"):
            raw = z.read(f"opennlp/tools/namefind/{name}").decode("utf-8")
            for i, line in enumerate(raw.splitlines()):
                if not line.strip():
                    continue
                text, spans = _detokenize(_tokens(line))
                fh.write(json.dumps({"id": f"opennlp-{name}-{i}", "source": f"opennlp-tools-2.5.4-tests.jar:{name}",
                                     "text": text, "spans": spans,
                                     "labelled_types": ["PERSON", "LOCATION", "ORGANIZATION", "DATE_TIME"]},
                                    ensure_ascii=False) + "\n")
        raw = z.read("opennlp/tools/namefind/AnnotatedSentencesWithTypes.txt").decode("utf-8")
        for i, block in enumerate(b for b in re.split(r"\n\s*\n", raw) if b.strip()):
            text, spans, pos = "", [], 0
            for m in _TAG.finditer(block):
                text += block[pos:m.start()]
                spans.append({"start": len(text), "end": len(text) + len(m.group(2)),
                              "entity_type": (m.group(1) or "person").upper()})
                text += m.group(2)
                pos = m.end()
            text += block[pos:]
            fh.write(json.dumps({"id": f"opennlp-annotated-{i}",
                                 "source": "opennlp-tools-2.5.4-tests.jar:AnnotatedSentencesWithTypes.txt",
                                 "text": text.strip("\n"), "spans": _shift(spans, len(text) - len(text.lstrip("\n"))),
                                 "labelled_types": ["PERSON"]}, ensure_ascii=False) + "\n")
    return path


def presidio_research(source: Path) -> Path:
    path = OUT / "presidio_research_synth_v2.jsonl"
    OUT.mkdir(parents=True, exist_ok=True)
    samples = json.loads(source.read_text(encoding="utf-8"))
    with path.open("w", encoding="utf-8") as fh:
        for i, sample in enumerate(samples):
            spans = sorted(({"start": s["start_position"], "end": s["end_position"], "entity_type": s["entity_type"]}
                            for s in sample["spans"]), key=lambda s: s["start"])
            fh.write(json.dumps({"id": f"presidio-research-{i}", "source": "presidio-research:data/synth_dataset_v2.json",
                                 "text": sample["full_text"], "spans": spans}, ensure_ascii=False) + "\n")
    return path


def _shift(spans: list[dict], by: int) -> list[dict]:
    return [{**s, "start": s["start"] - by, "end": s["end"] - by} for s in spans]


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("presidio", "opennlp", "presidio-research"):
        raise SystemExit(__doc__)
    if sys.argv[1] == "presidio":
        print(presidio())
    elif sys.argv[1] == "presidio-research":
        print(presidio_research(Path(sys.argv[2]).expanduser()))
    else:
        print(opennlp(Path(sys.argv[2]).expanduser()))


if __name__ == "__main__":
    main()

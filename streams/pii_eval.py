"""Score the PII detector on a labelled set: span-level precision, recall and F2 per type.

Input: JSON lines, each ``{"text": ..., "spans": [{"start", "end", "entity_type"}]}``
(``label``/``type`` and ``labels``/``entities`` are accepted too, and common type names are
mapped: ``EMAIL`` → ``EMAIL_ADDRESS``, ``NAME`` → ``PERSON``, ``SSN`` → ``US_SSN`` …).

A document may name the types it was labelled for (``"labelled_types": ["PERSON"]``): findings
of other types are then not scored (a set that labels only names says nothing about dates).

Matching (``overlap``, the default): a labelled span is found (``tp``) when a finding of its
type overlaps it, otherwise missed (``fn``); a finding is right (``hits``) when it overlaps a
labelled span of its type, otherwise false (``fp``). Precision is hits / findings, recall is
tp / labelled spans. One finding may thus find several labelled spans: some sets split one
postal address into building number, street, unit and postcode, each labelled
``STREET_ADDRESS``, where the detector reports the address once; all of it is hidden.
``one_to_one`` (``--one-to-one``; the scorer before 2026-11) pairs each finding with at most
one labelled span and each labelled span with at most one finding, so the other parts of a
split address count as missed and a second finding inside one name counts as false.
A finding's typed ``parts`` (the town and country lines inside an address) find labelled
spans of their type as well (recall); they are not findings of their own, so they add
neither hits nor false positives. ``exact`` counts labelled spans found with exactly their offsets. Gold types the detector does not cover are reported as
``unsupported`` and count against recall. F2 weighs recall twice as much as precision,
because a missed identifier leaks and a spurious one only hides a word.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

from streams.pii import ENTITIES, Detector

ALIASES = {
    "EMAIL": "EMAIL_ADDRESS", "NAME": "PERSON", "PER": "PERSON", "PERSON_NAME": "PERSON", "SSN": "US_SSN",
    "PHONE": "PHONE_NUMBER", "TELEPHONE": "PHONE_NUMBER", "FAX": "PHONE_NUMBER", "IP": "IP_ADDRESS",
    "DATE": "DATE_TIME", "DATETIME": "DATE_TIME", "DOB": "DATE_TIME", "ZIP": "ZIP_CODE", "ZIPCODE": "ZIP_CODE",
    "POSTCODE": "ZIP_CODE", "IBAN": "IBAN_CODE", "CREDIT_CARD_NUMBER": "CREDIT_CARD", "CC": "CREDIT_CARD",
    "MRN": "MEDICAL_RECORD_NUMBER", "MEDICAL_RECORD": "MEDICAL_RECORD_NUMBER", "HEALTH_PLAN": "HEALTH_PLAN_ID",
    "HEALTH_PLAN_NUMBER": "HEALTH_PLAN_ID", "ACCOUNT": "ACCOUNT_NUMBER", "BANK_ACCOUNT": "ACCOUNT_NUMBER",
    "US_BANK_NUMBER": "ACCOUNT_NUMBER", "LICENSE": "LICENSE_NUMBER", "LICENCE": "LICENSE_NUMBER",
    "LICENCE_NUMBER": "LICENSE_NUMBER", "CERTIFICATE": "LICENSE_NUMBER", "CERTIFICATE_NUMBER": "LICENSE_NUMBER",
    "US_DRIVER_LICENSE": "LICENSE_NUMBER", "MEDICAL_LICENSE": "LICENSE_NUMBER", "DEVICE": "DEVICE_ID",
    "SERIAL_NUMBER": "DEVICE_ID", "MAC_ADDRESS": "DEVICE_ID", "VIN": "VEHICLE_ID", "VEHICLE": "VEHICLE_ID",
    "LICENSE_PLATE": "VEHICLE_ID", "WEB": "URL", "AGE_OVER_89": "AGE", "DOMAIN_NAME": "URL",
    "GPE": "LOCATION", "LOC": "LOCATION", "FAC": "LOCATION", "CITY": "LOCATION", "COUNTRY": "LOCATION",
    "ORG": "ORGANIZATION", "ORGANISATION": "ORGANIZATION", "NORP": "NRP", "BIRTHDATE": "DATE_OF_BIRTH",
}

#: A finding of a finer type counts as its parent when the labelled set does not use the finer one.
PARENT = {"DATE_OF_BIRTH": "DATE_TIME"}

#: Groups the goals of issue 15 are stated for.
NER_TYPES = ("PERSON", "LOCATION", "ORGANIZATION", "NRP")


def canonical(entity: str) -> str:
    e = entity.strip().upper().replace("-", "_").replace(" ", "_")
    return ALIASES.get(e, e)


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    exact: int = 0
    hits: int = 0  # findings that overlap a labelled span of their type

    @property
    def precision(self) -> float:
        return self.hits / (self.hits + self.fp) if self.hits + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    def f(self, beta: float = 2.0) -> float:
        p, r = self.precision, self.recall
        return (1 + beta**2) * p * r / (beta**2 * p + r) if p + r else 0.0

    def row(self) -> dict[str, Any]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "exact": self.exact, "hits": self.hits,
                "precision": round(self.precision, 4), "recall": round(self.recall, 4), "f2": round(self.f(), 4)}


@dataclass
class Report:
    per_type: dict[str, Counts] = field(default_factory=lambda: defaultdict(Counts))
    #: type-blind: a finding is right if it overlaps any labelled span, a span is found if any
    #: finding overlaps it (was the value hidden at all?). Presidio-research reports this one.
    any_pii: Counts = field(default_factory=Counts)
    documents: int = 0
    chars: int = 0
    seconds: float = 0.0

    def total(self, types: Iterable[str] | None = None) -> Counts:
        wanted = set(types) if types is not None else set(self.per_type)
        c = Counts()
        for t, k in self.per_type.items():
            if t in wanted:
                c.tp += k.tp; c.fp += k.fp; c.fn += k.fn; c.exact += k.exact; c.hits += k.hits  # noqa: E702
        return c

    def summary(self) -> dict[str, Any]:
        structured = [t for t in self.per_type if t not in NER_TYPES and t in ENTITIES]
        return {
            "documents": self.documents,
            "chars": self.chars,
            "per_type": {t: self.per_type[t].row() for t in sorted(self.per_type)},
            "structured": self.total(structured).row(),
            "person": self.total(["PERSON"]).row(),
            "location_organization": self.total(["LOCATION", "ORGANIZATION"]).row(),
            "overall": self.total().row(),
            "any_pii": self.any_pii.row(),
            "unsupported_types": sorted(t for t in self.per_type if t not in ENTITIES),
            "throughput_mb_s": round(self.chars / 1e6 / self.seconds, 3) if self.seconds else None,
        }


def load(path: Path) -> list[dict[str, Any]]:
    docs = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
                text = doc["text"]
                raw = doc.get("spans", doc.get("labels", doc.get("entities", [])))
                spans = [(int(s["start"]), int(s["end"]),
                          canonical(s.get("entity_type") or s.get("label") or s.get("type"))) for s in raw]
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"{path}:{n}: not a labelled document ({exc}); expected "
                                 '{"text": ..., "spans": [{"start", "end", "entity_type"}]}') from None
            for s, e, _ in spans:
                if not 0 <= s < e <= len(text):
                    raise ValueError(f"{path}:{n}: span {s}..{e} outside the text (length {len(text)})")
            labelled = doc.get("labelled_types")
            docs.append({"text": text, "spans": spans,
                         "labelled_types": None if labelled is None else {canonical(t) for t in labelled}})
    return docs


def evaluate(docs: list[dict[str, Any]], detector: Detector | None = None, *, match: str = "overlap") -> Report:
    """Score ``detector`` on ``docs``; ``match`` is ``overlap`` or ``one_to_one`` (see the module doc)."""
    import time

    if match not in ("overlap", "one_to_one"):
        raise ValueError(f"match must be 'overlap' or 'one_to_one', not {match!r}")
    detector = detector or Detector()
    detector.analyze("warm-up: load the recognizers before timing")
    report = Report()
    gold_types = {t for doc in docs for _, _, t in doc["spans"]}
    parent = {k: v for k, v in PARENT.items() if k not in gold_types}
    for doc in docs:
        text = doc["text"]
        t0 = time.perf_counter()
        found = detector.analyze(text)
        report.seconds += time.perf_counter() - t0
        report.documents += 1
        report.chars += len(text)
        gold = list(doc["spans"])
        matched = [False] * len(gold)
        scored = doc.get("labelled_types")
        for f in found:
            f = replace(f, entity_type=parent.get(f.entity_type, f.entity_type))
            if scored is not None and f.entity_type not in scored:
                continue
            counts = report.per_type[f.entity_type]
            same = [i for i, (s, e, t) in enumerate(gold) if t == f.entity_type and f.start < e and s < f.end]
            if match == "one_to_one":
                same = [i for i in same if not matched[i]][:1]
            if not same:
                counts.fp += 1
                continue
            counts.hits += 1
            for i in same:
                if (f.start, f.end) == gold[i][:2] and matched[i] is not True:
                    matched[i] = True
                    counts.exact += 1
                elif not matched[i]:
                    matched[i] = 1  # found, not (yet) exactly
        for f in found:  # typed parts of a finding (an address's town and country) find, never count as findings
            for ps, pe, pt in f.parts:
                if scored is not None and pt not in scored:
                    continue
                for i, (s, e, t) in enumerate(gold):
                    if t == pt and ps < e and s < pe and not matched[i]:
                        matched[i] = True if (ps, pe) == (s, e) else 1
                        if (ps, pe) == (s, e):
                            report.per_type[t].exact += 1
                        if match == "one_to_one":
                            break  # one part finds one labelled span
        for (s, e, t), m in zip(gold, matched):
            if m:
                report.per_type[t].tp += 1
            else:
                report.per_type[t].fn += 1
        scored_found = [f for f in found if scored is None or parent.get(f.entity_type, f.entity_type) in scored]
        for f in scored_found:
            if any(f.start < e and s < f.end for s, e, _ in gold):
                report.any_pii.hits += 1
            else:
                report.any_pii.fp += 1
        hidden = sum(1 for s, e, _ in gold if any(f.start < e and s < f.end for f in scored_found))
        report.any_pii.tp += hidden
        report.any_pii.fn += len(gold) - hidden
    return report


def format_table(summary: dict[str, Any]) -> str:
    lines = [f"{'entity type':<24}{'tp':>6}{'fp':>6}{'fn':>6}{'precision':>11}{'recall':>8}{'F2':>8}"]
    def line(name: str, r: dict[str, Any]) -> str:
        return f"{name:<24}{r['tp']:>6}{r['fp']:>6}{r['fn']:>6}{r['precision']:>11.3f}{r['recall']:>8.3f}{r['f2']:>8.3f}"
    for t, r in summary["per_type"].items():
        lines.append(line(t + (" (unsupported)" if t in summary["unsupported_types"] else ""), r))
    lines.append("-" * 69)
    lines.append(line("structured identifiers", summary["structured"]))
    lines.append(line("person names", summary["person"]))
    lines.append(line("locations, organisations", summary["location_organization"]))
    lines.append(line("overall", summary["overall"]))
    lines.append(line("any PII (type-blind)", summary["any_pii"]))
    lines.append(f"{summary['documents']} documents, {summary['chars']:,} characters, "
                 f"{summary['throughput_mb_s']} MB/s detection")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``python -m streams.pii_eval FILE [--phone-regions US,GB,DE] [--json] [--no-ner] [--one-to-one]``"""
    import argparse

    ap = argparse.ArgumentParser(description="Score the PII detector on a labelled JSON-lines set.")
    ap.add_argument("file", type=Path)
    ap.add_argument("--phone-regions", default=None, help="comma-separated ISO 3166 codes (default: US,GB)")
    ap.add_argument("--no-ner", action="store_true", help="without the NER model (cue and gazetteer rules only)")
    ap.add_argument("--one-to-one", action="store_true",
                    help="pair each finding with at most one labelled span (the scorer before 2026-11)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    regions = args.phone_regions.split(",") if args.phone_regions else None
    summary = evaluate(load(args.file), Detector(phone_regions=regions, ner=not args.no_ner),
                       match="one_to_one" if args.one_to_one else "overlap").summary()
    print(json.dumps(summary, indent=2) if args.json else format_table(summary))


if __name__ == "__main__":
    main()

"""Generate the labelled PII evaluation set: synthetic enterprise documents with span labels.

    python -m bench.pii_evalset                     # writes bench/data/pii_eval.jsonl (seed 7, 400 docs)
    python -m bench.pii_evalset --seed 11 --docs 1000 --out /tmp/other.jsonl

One JSON object per line: ``{"id", "kind", "text", "spans": [{"start", "end", "entity_type"}],
"labelled_types"}``; ``labelled_types`` says what the templates label, so findings of other
types (places and organisations in the filler text, which nobody labelled) are not scored.
Documents are built from templates (HR memos, patient notes, invoices, IT tickets, e-mails)
whose slots are filled by Faker (seeded, so the file is reproducible) and labelled as they
are placed. Filler sentences carry numbers, capitalised words and product codes that are *not*
PII, so precision is measured too. ``ragstream pii eval`` scores the detector on this file
or on any file in the same format.

Caveat, stated in the README: person names are drawn from Faker's en_US/en_GB lists, which
are also part of the detector's given-name gazetteer. Names *without* a gazetteer hit or a
cue are measured by the ``unseen`` slice: given names invented here (syllable pairs) behind an
honorific or salutation only.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import json
import random
from datetime import date
from pathlib import Path
from typing import Callable

from faker import Faker

OUT = Path(__file__).parent / "data" / "pii_eval.jsonl"


class Doc:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.spans: list[dict[str, object]] = []
        self.size = 0

    def text(self, s: str) -> "Doc":
        self.parts.append(s)
        self.size += len(s)
        return self

    def pii(self, entity: str, value: str) -> "Doc":
        self.spans.append({"start": self.size, "end": self.size + len(value), "entity_type": entity})
        return self.text(value)

    def build(self) -> tuple[str, list[dict[str, object]]]:
        return "".join(self.parts), self.spans


_WEEKDAY = re.compile(r"\b(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)\b")


def _filler(d: Doc, s: str) -> None:
    """A filler sentence; a day of the week in it is a date element (DATE_TIME), as in the
    independent sets (presidio-evaluator labels "on Tuesday morning")."""
    pos = 0
    for m in _WEEKDAY.finditer(s):
        d.text(s[pos:m.start()]).pii("DATE_TIME", m.group())
        pos = m.end()
    d.text(s[pos:])


_SYL = ["ka", "lo", "mi", "ren", "tha", "vo", "zel", "qui", "dra", "nis", "por", "bel", "sa", "tor", "wyn"]
_FILLER = [
    "Quarterly revenue rose 4.5 percent to 12,400 units in the Northern Region.",
    "Release 3.14.2 fixes 27 defects reported against the Atlas Platform.",
    "The Finance Committee approved Budget Line 7 for the Lisbon Office.",
    "Please review the attached Policy Update before Friday.",
    "Order 55 of Widget Model X200 ships in 3 to 5 business days.",
    "Building C, Room 214 is reserved for the Design Review.",
    "Ticket volume fell from 1,284 to 903 after the migration.",
    "The Customer Success Team meets every Tuesday at 10:30.",
    "Server rack 12 draws 4.2 kW at peak load.",
    "Grant Thornton audited the Pension Plan last year.",
    "Use coupon code SPRING24 for 15 percent off.",
    "Version 2024.10 of the Data Retention Standard replaces version 2023.2.",
]


#: What the templates label. Places, organisations, groups and birth dates as such are not
#: labelled (a birth date is labelled DATE_TIME).
LABELLED_TYPES = ["ACCOUNT_NUMBER", "AGE", "CREDIT_CARD", "DATE_TIME", "DEVICE_ID", "EMAIL_ADDRESS", "HEALTH_PLAN_ID",
                  "IBAN_CODE", "IP_ADDRESS", "LICENSE_NUMBER", "MEDICAL_RECORD_NUMBER", "PERSON", "PHONE_NUMBER",
                  "STREET_ADDRESS", "URL", "US_SSN", "VEHICLE_ID", "ZIP_CODE"]


def _unseen_name(rng: random.Random) -> str:
    first = (rng.choice(_SYL) + rng.choice(_SYL)).capitalize()
    last = (rng.choice(_SYL) + rng.choice(_SYL) + rng.choice(["son", "ez", "ini", "ova", "ford"])).capitalize()
    return f"{first} {last}"


def _phone(f: Faker) -> str:
    return f.phone_number()


def _card(f: Faker, rng: random.Random) -> str:
    n = f.credit_card_number(card_type=rng.choice(["visa16", "mastercard", "amex", "discover"]))
    if rng.random() < 0.4 and len(n) == 16:
        n = " ".join(n[i:i + 4] for i in range(0, 16, 4))
    return n


def _date(f: Faker, rng: random.Random) -> str:
    # Fixed bounds: Faker's date() draws up to *now*, which would change the file daily.
    day = f.date_between_dates(date(1950, 1, 1), date(2020, 12, 31))
    return day.strftime(rng.choice(["%Y-%m-%d", "%m/%d/%Y", "%B %d, %Y", "%d.%m.%Y"]))


def hr_memo(f: Faker, rng: random.Random, d: Doc) -> None:
    name = f.name()
    d.text("HR memo\n\nEmployee: ").pii("PERSON", name).text("\nSSN: ").pii("US_SSN", f["en_US"].ssn())
    d.text("\nStart date: ").pii("DATE_TIME", _date(f, rng)).text("\n\n")
    _filler(d, rng.choice(_FILLER) + " ")
    d.text("Salary is paid to account number ").pii("ACCOUNT_NUMBER", str(f.random_number(digits=10, fix_len=True)))
    d.text(" at IBAN ").pii("IBAN_CODE", f.iban()).text(". ")
    d.text("Questions go to ").pii("PERSON", f.name()).text(" (").pii("EMAIL_ADDRESS", f.email())
    d.text(", phone ").pii("PHONE_NUMBER", _phone(f)).text(").\n")


def patient_note(f: Faker, rng: random.Random, d: Doc) -> None:
    d.text("Clinical note\n\nPatient: ").pii("PERSON", f.name()).text(", aged ")
    d.pii("AGE", str(rng.randint(90, 104))).text(". MRN: ").pii("MEDICAL_RECORD_NUMBER", f"{rng.randint(10**6, 10**8)}")
    d.text("\nAdmitted on ").pii("DATE_TIME", _date(f, rng)).text(" by Dr. ").pii("PERSON", f.last_name())
    d.text(".\nMember ID: ").pii("HEALTH_PLAN_ID", f.bothify("???#########").upper())
    d.text("\nAddress: ").pii("STREET_ADDRESS", f.street_address()).text(", " + f.city() + ", ")
    state = f.state_abbr()
    d.text(state + " ").pii("ZIP_CODE", f.zipcode()).text("\n")
    d.text("Pacemaker serial number: ").pii("DEVICE_ID", f.bothify("??########").upper()).text(". ")
    _filler(d, rng.choice(_FILLER) + "\n")
    d.text("Referring physician licence no. ").pii("LICENSE_NUMBER", f.bothify("?#######").upper()).text(".\n")


def invoice(f: Faker, rng: random.Random, d: Doc) -> None:
    d.text(f"Invoice {rng.randint(1000, 99999)}\n\nBill to: ").pii("PERSON", f.name()).text("\n")
    _filler(d, rng.choice(_FILLER) + "\n")
    d.text("Paid by card ").pii("CREDIT_CARD", _card(f, rng)).text(" on ").pii("DATE_TIME", _date(f, rng))
    d.text(".\nRemittance to IBAN ").pii("IBAN_CODE", f.iban()).text(f". Total: {rng.randint(10, 9999)}.{rng.randint(10, 99)} EUR.\n")
    d.text("Vehicle on file: VIN ").pii("VEHICLE_ID", f.vin()).text(", plate ").pii("VEHICLE_ID", f.license_plate().replace(" ", "-")).text(".\n")


def it_ticket(f: Faker, rng: random.Random, d: Doc) -> None:
    d.text(f"Ticket INC{rng.randint(100000, 999999)}\n\nReporter: ").pii("EMAIL_ADDRESS", f.company_email()).text("\n")
    d.text("Source host ").pii("IP_ADDRESS", f.ipv4() if rng.random() < 0.7 else f.ipv6()).text(" hit ")
    d.pii("URL", f.url() + f.uri_path()).text(" repeatedly.\n")
    d.text("Laptop MAC ").pii("DEVICE_ID", f.mac_address()).text(", asset tag ").pii("DEVICE_ID", f.bothify("AT-######")).text(".\n")
    _filler(d, rng.choice(_FILLER) + " ")
    d.text("Assigned to ").pii("PERSON", f.name()).text(".\n")


def email(f: Faker, rng: random.Random, d: Doc) -> None:
    first = f.first_name()
    d.text("Dear ").pii("PERSON", first).text(",\n\n")
    a, b = rng.choice(_FILLER), rng.choice(_FILLER)
    _filler(d, a + " " + b + "\n")
    d.text("You can reach me on ").pii("PHONE_NUMBER", _phone(f)).text(" or at ").pii("EMAIL_ADDRESS", f.free_email())
    d.text(". My colleague ").pii("PERSON", f.name()).text(" joins on ").pii("DATE_TIME", _date(f, rng)).text(".\n\n")
    d.text("Best regards,\n").pii("PERSON", f.name()).text("\n")


def unseen(f: Faker, rng: random.Random, d: Doc) -> None:
    d.text(rng.choice(["Dear Ms. ", "Attn: Dr. ", "Meeting with Mr. "])).pii("PERSON", _unseen_name(rng)).text(".\n")
    _filler(d, rng.choice(_FILLER) + "\n")


def negatives(f: Faker, rng: random.Random, d: Doc) -> None:
    for s in rng.sample(_FILLER, 4):
        _filler(d, s + " ")
    d.text(f"\nMeeting room {rng.randint(100, 999)}, extension {rng.randint(1000, 9999)}, build {rng.randint(10**5, 10**6)}.\n")


KINDS: dict[str, Callable[[Faker, random.Random, Doc], None]] = {
    "hr_memo": hr_memo, "patient_note": patient_note, "invoice": invoice, "it_ticket": it_ticket,
    "email": email, "unseen": unseen, "negatives": negatives,
}


def generate(seed: int, docs: int) -> list[dict[str, object]]:
    Faker.seed(seed)
    f = Faker(["en_US", "en_GB"])
    rng = random.Random(seed)
    kinds = list(KINDS)
    out = []
    for i in range(docs):
        kind = kinds[i % len(kinds)]
        d = Doc()
        KINDS[kind](f, rng, d)
        text, spans = d.build()
        out.append({"id": f"{kind}-{i}", "kind": kind, "text": text, "spans": spans,
                    "labelled_types": LABELLED_TYPES})
    return out


def main() -> None:
    if os.environ.get("PYTHONHASHSEED") != "0":
        # Some Faker providers iterate sets: string hashing must be fixed for the file to repeat.
        os.execve(sys.executable, [sys.executable, "-m", "bench.pii_evalset", *sys.argv[1:]],
                  {**os.environ, "PYTHONHASHSEED": "0"})
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--docs", type=int, default=420)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as fh:
        for doc in generate(args.seed, args.docs):
            fh.write(json.dumps(doc, ensure_ascii=False) + "\n")
    print(f"wrote {args.docs} documents to {args.out}")


if __name__ == "__main__":
    main()

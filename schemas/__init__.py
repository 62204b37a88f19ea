"""Event contracts, the topic catalog and the serde: the project's shared vocabulary."""

from schemas.events import (
    CONTRACTS,
    Acl,
    AuditRecord,
    BlobRef,
    ChangeEvent,
    Chunk,
    ChunkSet,
    Classification,
    Contract,
    DeadLetter,
    DocMetadata,
    DocumentRecord,
    EmbeddedChunk,
    InlineContent,
    Op,
    SourceKind,
    VectorSet,
)
from schemas.serde import SerdeError, decode, encode

__all__ = [
    "CONTRACTS", "Acl", "AuditRecord", "BlobRef", "ChangeEvent", "Chunk", "ChunkSet",
    "Classification", "Contract", "DeadLetter", "DocMetadata", "DocumentRecord",
    "EmbeddedChunk", "InlineContent", "Op", "SerdeError", "SourceKind", "VectorSet",
    "decode", "encode",
]

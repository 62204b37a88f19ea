"""One serde for every contract, used by producers, stages and tools alike.

Values are UTF-8 JSON objects. Decoding checks, in order: that there is a value, that it
is JSON, that it is an object, that its ``schema_version`` is one this code reads, and then
the contract itself. Each failure is a :class:`SerdeError` whose message says what was
wrong and what to do; a consumer catches it and dead-letters the message instead of dying.
"""

from __future__ import annotations

import json
from typing import Any, Callable, TypeVar

from pydantic import ValidationError

from schemas.events import Contract, DeadLetter

T = TypeVar("T", bound=Contract)


class SerdeError(ValueError):
    """A message that cannot become a contract. Permanent: retrying will not help."""

    def __init__(self, contract: str, problem: str, hint: str) -> None:
        self.contract = contract
        self.problem = problem
        self.hint = hint
        super().__init__(f"cannot decode {contract}: {problem}. {hint}")


def encode(event: Contract) -> bytes:
    return event.model_dump_json(exclude_none=False).encode("utf-8")


def encode_key(doc_id: str) -> bytes:
    return doc_id.encode("utf-8")


#: A message too large for its topic travels as ``{"claim_check": <BlobRef>}``: the payload
#: sits in the blob store (see :class:`ragstream.publisher.Publisher`).
CLAIM_CHECK = "claim_check"
#: Resolves a claim check's BlobRef (as a dict) to the payload bytes.
Claims = Callable[[dict[str, Any]], bytes]


def claim_envelope(ref: dict[str, Any]) -> bytes:
    return json.dumps({CLAIM_CHECK: ref}, separators=(",", ":")).encode("utf-8")


def decode(model: type[T], data: bytes | str | None, *, claims: Claims | None = None) -> T:
    """Decode ``data`` into ``model``; a claim check is resolved through ``claims``."""
    name = model.__name__
    schema_hint = f"Publish JSON matching schemas/json/{name}.schema.json."
    if data is None or len(data) == 0:
        raise SerdeError(
            name,
            "the message has no value (a tombstone or an empty message)",
            "Tombstones are only meaningful on compacted topics; check the producer.",
        )
    try:
        # Decode explicitly: json.loads(bytes) would guess UTF-16/32 from a BOM.
        obj = json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
    except UnicodeDecodeError as exc:
        raise SerdeError(name, f"the value is not UTF-8 ({exc.reason} at byte {exc.start})", schema_hint) from None
    except json.JSONDecodeError as exc:
        raise SerdeError(name, f"the value is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})", schema_hint) from None
    except RecursionError:
        raise SerdeError(name, "the value is JSON nested too deeply to read", schema_hint) from None
    if not isinstance(obj, dict):
        raise SerdeError(name, f"the value is a JSON {type(obj).__name__}, not an object", schema_hint)
    if CLAIM_CHECK in obj:
        if claims is None:
            raise SerdeError(name, "the message is a claim check (its payload is in the blob store)",
                             "Read it with a blob store: pass claims= (ragstream's consumers do).")
        ref = obj[CLAIM_CHECK]
        if not isinstance(ref, dict):
            raise SerdeError(name, "field 'claim_check' is not an object", schema_hint)
        payload = claims(ref)
        if CLAIM_CHECK.encode() in payload[:64]:
            raise SerdeError(name, "a claim check points at another claim check", schema_hint)
        return decode(model, payload)
    version = obj.get("schema_version")
    if version is None:
        raise SerdeError(name, "field 'schema_version' is missing", schema_hint)
    if version not in model.SCHEMA_VERSIONS:
        raise SerdeError(
            name,
            f"schema_version {version!r} is not supported (this ragstream reads {list(model.SCHEMA_VERSIONS)})",
            "Upgrade ragstream, or publish a supported version.",
        )
    try:
        return model.model_validate(obj)
    except RecursionError:
        raise SerdeError(name, "the value is nested too deeply to validate", schema_hint) from None
    except ValidationError as exc:
        problems = "; ".join(
            f"field '{'.'.join(str(p) for p in e['loc']) or '<root>'}': {e['msg']}"
            for e in exc.errors()[:5]
        )
        more = f" (and {exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
        raise SerdeError(name, f"{exc.error_count()} invalid field(s): {problems}{more}", schema_hint) from None


DLQ_HEADER_PREFIX = "ragstream.dlq."


def dead_letter_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    """The dead-letter envelope as Kafka headers (the value stays the original payload)."""
    fields = letter.model_dump(mode="json")
    return [(DLQ_HEADER_PREFIX + k, str(v).encode("utf-8")) for k, v in fields.items()]


def dead_letter_from_headers(headers: list[tuple[str, bytes]] | None) -> DeadLetter:
    fields = {
        k[len(DLQ_HEADER_PREFIX):]: v.decode("utf-8", errors="replace")
        for k, v in (headers or [])
        if k.startswith(DLQ_HEADER_PREFIX) and v is not None
    }
    if fields.get("schema_version", "").isdigit():
        fields["schema_version"] = int(fields["schema_version"])  # type: ignore[assignment]
    return decode(DeadLetter, json.dumps(fields).encode())


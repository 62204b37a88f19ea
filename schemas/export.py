"""Export each contract's JSON Schema to ``schemas/json/<Contract>.schema.json``.

The files are committed so producers in other languages can validate what they publish;
``tests/schemas/test_export.py`` fails when they are stale (fix: ``ragstream schemas export``).
"""

from __future__ import annotations

import json
from pathlib import Path

from schemas.events import CONTRACTS

JSON_DIR = Path(__file__).resolve().parent / "json"


def rendered() -> dict[str, str]:
    out = {}
    for model in CONTRACTS:
        schema = model.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://ragstream.dev/schemas/{model.__name__}.schema.json"
        out[f"{model.__name__}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def stale(directory: Path = JSON_DIR) -> list[str]:
    """Names of schema files that are missing or differ from the code."""
    return [name for name, text in rendered().items()
            if not (directory / name).exists() or (directory / name).read_text() != text]


def export(directory: Path = JSON_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered().items():
        path = directory / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            written.append(path)
    return written

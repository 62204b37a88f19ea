"""A toy source: notes in one JSON file, ``{"<id>": {"text": "...", "readers": ["user:ann"]}}``.

It exists to show that a source plugs in through the connector contract alone
(:mod:`ragstream.connector`): loaded with ``RAGSTREAM_CONNECTOR_MODULES=tests.toy_source``,
it flows through the pipeline, DLQ replay and ``ragstream verify`` with no change outside
this package. A note whose text is not a string cannot be read: it is dead-lettered.
"""

from __future__ import annotations

import json
from pathlib import Path

from ragstream.connector import Capability, Connector, Excluded, ListedDocument, UpdateStats
from schemas.events import Acl


class Notes(Connector):
    kind = "toy_notes"
    capabilities = frozenset({Capability.full_listing, Capability.deletes, Capability.permission_sync})

    def __init__(self, settings, path: Path, source_id: str = "notes", publisher=None):
        self.path = Path(path)
        super().__init__(settings, source_id, {"path": str(self.path)}, publisher)

    @classmethod
    def open(cls, settings, source_id, identity, publisher=None):
        return cls(settings, Path(identity["path"]), source_id, publisher)

    def sync(self, native_ids=None, *, force=False, progress=None, on_publish=None) -> UpdateStats:
        stats, notes = UpdateStats(), json.loads(self.path.read_text())
        self._on_publish = on_publish
        for nid in sorted(set(notes) | set(self.cursor.items)) if native_ids is None else native_ids:
            note = notes.get(nid)
            if note is None:
                if nid in self.cursor.items:
                    self.publish_delete(nid, stats=stats)
            elif not isinstance(note.get("text"), str):
                self.dead_letter(nid, b"", ValueError("text is not a string"), stats=stats)
            else:
                self.publish_upsert(nid, note["text"], stats=stats, acl=Acl(principals=tuple(note["readers"])),
                                    title=nid, force=force)
        return self.finish(stats)

    def full_listing(self):
        for nid, note in sorted(json.loads(self.path.read_text()).items()):
            if nid in self.cursor.skipped and not isinstance(note.get("text"), str):
                yield Excluded(self.doc_id(nid), "dead_lettered", "text is not a string")
            else:
                prev = self.cursor.items.get(nid, {})
                yield ListedDocument(self.doc_id(nid), prev.get("version"), tuple(note["readers"]),
                                     changed_since_published=prev.get("acl") != note["readers"])


CONNECTOR = Notes

"""File-system source pieces that need no broker: selection and ACL mapping."""

import os
import pwd
import stat
from types import SimpleNamespace

from producers.filesystem import FilesystemSource
from ragstream.settings import load_settings


class NoPublisher:
    def publish(self, *a, **k):
        raise AssertionError("not expected")


def source(tmp_path, **kw):
    root = tmp_path / "docs"
    root.mkdir(exist_ok=True)
    return FilesystemSource(load_settings(home=tmp_path / "home"), root, publisher=NoPublisher(), **kw)


def test_include_and_exclude_globs(tmp_path):
    src = source(tmp_path, include=("**/*.md", "*.md"), exclude=("drafts/**",))
    assert src.selected("a.md") and src.selected("x/y/b.md")
    assert not src.selected("a.txt")
    assert not src.selected("drafts/c.md")
    default = source(tmp_path)
    assert not default.selected(".git/config") and not default.selected("notes/.~lock.md#")
    assert not default.selected("x/file.swp")


def test_acl_from_mode_bits_fails_closed(tmp_path):
    src = source(tmp_path)
    me = pwd.getpwuid(os.getuid()).pw_name

    def st(mode):
        return SimpleNamespace(st_mode=stat.S_IFREG | mode, st_uid=os.getuid(), st_gid=os.getgid())

    assert src.acl_for(st(0o600)).principals == (f"user:{me}",)
    assert any(p.startswith("group:") for p in src.acl_for(st(0o640)).principals)
    assert "public" not in src.acl_for(st(0o644)).principals  # world-readable is not "public" by default
    assert src.acl_for(st(0o000)).principals == ()  # nobody may read: nobody finds it
    assert not src.acl_for(st(0o000)).allows({f"user:{me}"})
    public = source(tmp_path, world_readable_is_public=True)
    assert "public" in public.acl_for(st(0o644)).principals


def test_source_id_is_stable_per_folder(tmp_path):
    assert source(tmp_path).source_id == source(tmp_path).source_id
    assert source(tmp_path).source_id.startswith("fs-docs-")


class RecordingPublisher:
    """Acknowledges every event at flush, like the broker would, and keeps them."""

    def __init__(self):
        self.events, self.letters, self._callbacks = [], [], []

    def publish(self, topic, event, on_delivery=None):
        self.events.append((topic, event))
        if on_delivery:
            self._callbacks.append(on_delivery)

    def dead_letter(self, stage, **kw):
        self.letters.append((stage, kw))

    def flush(self):
        for cb in self._callbacks:
            cb(None, None)
        self._callbacks.clear()


def recording_source(tmp_path, **settings):
    root = tmp_path / "docs"
    root.mkdir(exist_ok=True)
    pub = RecordingPublisher()
    s = load_settings(home=tmp_path / "home", **settings)
    return FilesystemSource(s, root, publisher=pub), pub


def test_files_above_the_size_limits_are_skipped_with_a_reason_and_counted(tmp_path):
    from ragstream.metrics import SOURCE_SKIPPED

    src, pub = recording_source(tmp_path, max_document_bytes=10_000, max_text_bytes=5_000)
    (src.root / "big.txt").write_bytes(b"word " * 3000)        # 15 kB file: not even read
    (src.root / "wide.html").write_text("<p>" + "word " * 1500 + "</p>")  # 7.5 kB text out of 7.5 kB
    (src.root / "ok.md").write_text("# Fine\n\nsmall")
    before = SOURCE_SKIPPED.labels(src.source_id, "too_large")._value.get()
    stats = src.sync()
    assert (stats.added, stats.skipped, stats.skipped_by_reason) == (1, 2, {"too_large": 1, "text_too_large": 1})
    assert "2 skipped (1 text_too_large, 1 too_large)" in str(stats)
    assert [e.doc_id for _, e in pub.events] == [src.doc_id("ok.md")]
    assert SOURCE_SKIPPED.labels(src.source_id, "too_large")._value.get() == before + 1
    assert "RAGSTREAM_MAX_DOCUMENT_BYTES" in src.skipped_files["big.txt"]["detail"]
    assert "RAGSTREAM_MAX_TEXT_BYTES" in src.skipped_files["wide.html"]["detail"]
    again = src.sync()  # same files: skipped again, not re-logged or re-counted
    assert again.skipped_by_reason == {"too_large": 1, "text_too_large": 1}
    assert SOURCE_SKIPPED.labels(src.source_id, "too_large")._value.get() == before + 1


def test_a_file_that_grows_past_the_limit_leaves_the_index(tmp_path):
    from schemas.events import Op

    src, pub = recording_source(tmp_path, max_document_bytes=10_000)
    (src.root / "grows.txt").write_text("small at first")
    src.sync()
    (src.root / "grows.txt").write_bytes(b"word " * 3000)
    stats = src.sync()
    assert (stats.skipped, stats.deleted) == (1, 1)
    assert pub.events[-1][1].op is Op.delete and pub.events[-1][1].doc_id == src.doc_id("grows.txt")
    assert "grows.txt" not in src.files


def test_awkward_files_are_published_not_crashed_on(tmp_path):
    src, pub = recording_source(tmp_path)
    (src.root / "empty.txt").write_bytes(b"")
    (src.root / "latin1.txt").write_bytes("Grüße aus Köln".encode("cp1252"))
    (src.root / "one-line.txt").write_text("x" * 1_000_000)
    (src.root / "line\nbreak and ünïcode ✓.md").write_text("# Odd name\n\nstill a document")
    stats = src.sync()
    assert (stats.added, stats.skipped, stats.failed) == (4, 0, 0)
    ids = {e.doc_id for _, e in pub.events}
    odd = src.doc_id("line\nbreak and ünïcode ✓.md")
    assert odd in ids and "\n" not in odd and odd.startswith(f"{src.source_id}:/")
    assert src.native_id(odd) == "line\nbreak and ünïcode ✓.md"
    assert src.native_id(src.doc_id("sub/plain name.md")) == "sub/plain name.md"
    assert src.doc_id("sub/plain name.md") == f"{src.source_id}:sub/plain name.md"  # ordinary ids unchanged

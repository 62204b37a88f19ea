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

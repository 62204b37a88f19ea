"""Imports point down only (docs/architecture.md, "Layers").

    shell       ragstream.<cli, api, auth, …>, infra      may import everything below
    sources     producers.*            stages  streams.*  never import each other
    sinks       consumers.*
    foundation  ragstream.<FOUNDATION>
    contracts   schemas.*

A module may import its own layer and the layers below it, never one above — including
imports inside functions (a lazy import is still a dependency). Only imports in the body of
``if TYPE_CHECKING:`` are exempt: they name a type, they load nothing.

One sanctioned exception is not an import statement: the connector registry
(``ragstream.connector.connector_classes``) finds source packages at run time by name — the
plugin mechanism that lets a source live in its own package (docs/architecture.md).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ragstream.settings import PROJECT_ROOT

#: The foundation inside the ``ragstream`` package; every other ragstream module is shell.
FOUNDATION = frozenset({
    "settings", "logging", "metrics", "kafka", "admin", "blobs", "failures", "consumer", "publisher",
    "configfile", "keyfile", "connector", "cdc_mapping",
})

RANK = {"contracts": 0, "foundation": 1, "sinks": 2, "sources": 3, "stages": 3, "shell": 4}
PACKAGES = ("schemas", "ragstream", "consumers", "producers", "streams", "infra")


def layer(module: str) -> str | None:
    top, _, rest = module.partition(".")
    if top == "schemas":
        return "contracts"
    if top == "ragstream":
        return "foundation" if rest.split(".")[0] in FOUNDATION else "shell"
    return {"consumers": "sinks", "producers": "sources", "streams": "stages", "infra": "shell"}.get(top)


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """In the body (not the else) of ``if TYPE_CHECKING:`` / ``if typing.TYPE_CHECKING:``."""
    child = node
    while child in parents:
        parent = parents[child]
        if isinstance(parent, ast.If) and child in parent.body and (
                (isinstance(parent.test, ast.Name) and parent.test.id == "TYPE_CHECKING")
                or (isinstance(parent.test, ast.Attribute) and parent.test.attr == "TYPE_CHECKING")):
            return True
        child = parent
    return False


def _is_module(name: str) -> bool:
    path = PROJECT_ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    module = ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                package = module.split(".")[:-1]  # a/b/c.py and a/b/__init__.py both sit in a.b
                base = package[: len(package) - (node.level - 1)]
                names = [".".join(base + ([node.module] if node.module else []))]
            else:
                names = [node.module or ""]
            # `from ragstream import settings` imports the module ragstream.settings
            names = [f"{names[0]}.{a.name}" if _is_module(f"{names[0]}.{a.name}") else names[0] for a in node.names]
        else:
            continue
        if _type_checking_only(node, parents):
            continue
        found += [(node.lineno, n) for n in names if n.split(".")[0] in PACKAGES]
    return found


def modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (PROJECT_ROOT / pkg).rglob("*.py"))


def violations() -> list[str]:
    out = []
    for path in modules():
        mod = ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
        here = layer(mod)
        for line, target in imports(path):
            there = layer(target)
            if here is None or there is None:
                continue
            if RANK[there] > RANK[here] or (RANK[there] == RANK[here] and there != here):
                out.append(f"{path.relative_to(PROJECT_ROOT)}:{line}: {here} imports {there} ({target})")
    return out


def test_imports_point_down_only():
    found = violations()
    assert not found, "imports that point up or sideways (see docs/architecture.md, Layers):\n" + "\n".join(found)


@pytest.mark.parametrize("module, expected", [
    ("schemas.events", "contracts"), ("ragstream.settings", "foundation"), ("ragstream.cli", "shell"),
    ("ragstream.cli.sources", "shell"), ("consumers.milvus", "sinks"), ("producers.filesystem", "sources"),
    ("streams.worker", "stages"), ("infra.stack", "shell"),
])
def test_every_module_has_a_layer(module, expected):
    assert layer(module) == expected


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The rule is not vacuous: a foundation module importing the shell is reported."""
    bad = PROJECT_ROOT / "ragstream" / "connector.py"
    source = "def f():\n    from ragstream.cli import cli\n"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: source if self == bad else _read(self))
    assert any("ragstream/connector.py:2: foundation imports shell" in v for v in violations())


_read = Path.read_text


def test_only_the_body_of_if_type_checking_is_exempt(monkeypatch):
    bad = PROJECT_ROOT / "ragstream" / "connector.py"
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ragstream.cli import cli\n"
              "else:\n    from ragstream.api import create_app\nif not TYPE_CHECKING:\n    import infra.stack\n")
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: source if self == bad else _read(self))
    found = [v for v in violations() if v.startswith("ragstream/connector.py")]
    assert [v.split(":")[1] for v in found] == ["5", "7"], found


def test_from_package_import_module_names_the_module(monkeypatch):
    bad = PROJECT_ROOT / "ragstream" / "connector.py"
    source = "from ragstream import settings\nfrom ragstream import cli\n"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: source if self == bad else _read(self))
    found = [v for v in violations() if v.startswith("ragstream/connector.py")]
    assert found == ["ragstream/connector.py:2: foundation imports shell (ragstream.cli)"], found

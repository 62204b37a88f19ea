"""Principals: who a document ACL names and who a caller is, as one value type (issue 14).

A principal is a *kind* (``user``, ``group``, ``service`` or ``public``), an optional
*namespace* (the issuer or directory whose name it is: an OIDC issuer's alias, ``saml``,
a connector's directory alias, ``sharepoint``, ``sharepoint-claim``) and a *name*. Its text,
the form on the wire, in sessions and in the index, is the one every component wrote before
this type existed::

    public
    <kind>:<name>               a local name (the host's, LDAP's, a ``names = "local"`` issuer's)
    <kind>:<namespace>/<name>   a provider's name: the namespace ends at the first ``/``

:class:`Principal` writes a name with :func:`encode_name`: whitespace, control characters,
``|`` and ``%`` become ``%XX`` (UTF-8 bytes, upper-case hex), and so does ``/`` in a name
without a namespace, which could otherwise pose as one (``user:corp%2Falice`` is a local
name, ``user:corp/alice`` issuer corp's). The text therefore never holds ``|`` or a blank,
the separators of the stored ACL encoding (``consumers/milvus/acl.py``), and two different
principals never share a text. :meth:`Principal.parse` reads a text back.

Two older spellings stay valid, byte for byte, because events in the topics are replayed and
callers' principals are matched against them:

* names the LDAP, OIDC, SAML, API-key and file-system code validates instead of encoding
  (``ragstream.auth.valid_name``): written as they are by :meth:`Principal.as_is`, where
  ``%`` stays ``%`` and a ``/`` qualifies (``corp/eng`` is issuer corp's group ``eng``);
* any text :data:`PRINCIPAL_RE` accepts (the grammar of :class:`schemas.events.Acl`):
  :meth:`Principal.parse` keeps the text as written, so a principal *is* its text —
  equality, hashing and order are the text's.
"""

from __future__ import annotations

import re
from typing import Literal

#: The grammar of a principal's text, unchanged since the first contracts: what ``Acl``
#: accepts. (``$`` also matches before a final newline; kept, since replayed events rely on
#: the exact acceptance.)
PRINCIPAL_RE = re.compile(r"^(public|(user|group|service):[^\s|]+)$")

Kind = Literal["user", "group", "service", "public"]
KINDS: tuple[str, ...] = ("user", "group", "service", "public")

_ESCAPED_RUN = re.compile(r"(?:%[0-9A-F]{2})+")
_EXPECTED = "use 'user:<id>', 'group:<id>', 'service:<id>' or 'public' (no blanks or '|' in the id)"


def _escaped(ch: str, slash: bool) -> bool:
    return ch.isspace() or ch in "|%" or ord(ch) < 0x20 or ord(ch) == 0x7F or (slash and ch == "/")


def encode_name(name: str, *, slash: bool = False) -> str:
    """``name`` with whitespace, control characters, ``|`` and ``%`` (and ``/`` when
    ``slash``) as ``%XX``: the UTF-8 bytes in upper-case hex."""
    return "".join("".join(f"%{b:02X}" for b in ch.encode("utf-8")) if _escaped(ch, slash) else ch for ch in name)


def decode_name(encoded: str) -> str:
    """The inverse of :func:`encode_name`. A run of ``%XX`` that is not UTF-8 is left as it
    is (an older text's literal ``%``), so decoding never fails."""
    def run(m: re.Match[str]) -> str:
        try:
            return bytes.fromhex(m.group(0).replace("%", "")).decode("utf-8")
        except UnicodeDecodeError:
            return m.group(0)

    return _ESCAPED_RUN.sub(run, encoded)


class Principal:
    """One principal: ``kind``, ``name`` (decoded), ``namespace`` (``None`` for a local
    name) and ``text``. Immutable; equal, hashed and ordered by ``text``.

    ``Principal(kind, name, namespace)`` encodes the name (:func:`encode_name`), so any
    non-empty name can be a principal; use it for names from a source that may hold blanks,
    ``|`` or ``%`` (SharePoint, Confluence). A namespace is written as it is: it may hold
    none of the characters a name escapes, nor ``/``.
    """

    __slots__ = ("kind", "name", "namespace", "text")
    kind: str
    name: str
    namespace: str | None
    text: str

    def __init__(self, kind: Kind, name: str = "", namespace: str | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"principal kind {kind!r}: one of {', '.join(KINDS)}")
        if kind == "public":
            if name or namespace is not None:
                raise ValueError("the principal 'public' has no name and no namespace")
            self._set(kind, "", None, "public")
            return
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {kind} principal needs a name")
        if namespace is not None:
            _check_namespace(namespace)
        ns = f"{namespace}/" if namespace is not None else ""
        self._set(kind, name, namespace, f"{kind}:{ns}{encode_name(name, slash=namespace is None)}")

    def _set(self, kind: str, name: str, namespace: str | None, text: str) -> None:
        for attr, value in (("kind", kind), ("name", name), ("namespace", namespace), ("text", text)):
            object.__setattr__(self, attr, value)

    def __setattr__(self, attr: str, value: object) -> None:
        raise AttributeError(f"a Principal is immutable (cannot set {attr!r})")

    def __delattr__(self, attr: str) -> None:
        raise AttributeError(f"a Principal is immutable (cannot delete {attr!r})")

    # -- constructors -----------------------------------------------------------------------------

    @classmethod
    def user(cls, name: str, namespace: str | None = None) -> "Principal":
        return cls("user", name, namespace)

    @classmethod
    def group(cls, name: str, namespace: str | None = None) -> "Principal":
        return cls("group", name, namespace)

    @classmethod
    def service(cls, name: str, namespace: str | None = None) -> "Principal":
        return cls("service", name, namespace)

    @classmethod
    def parse(cls, text: str) -> "Principal":
        """The principal a text names: any text :data:`PRINCIPAL_RE` accepts (exactly what
        ``Acl`` accepted before this type), refused with a ``ValueError`` otherwise. The
        namespace is the part before the first ``/``; the name is decoded
        (:func:`decode_name`); ``text`` is kept as written."""
        if not isinstance(text, str) or not PRINCIPAL_RE.match(text):
            raise ValueError(f"invalid principal {text!r}: {_EXPECTED}")
        p = object.__new__(cls)
        if text.startswith("public"):  # the grammar allows only a final newline after it
            p._set("public", "", None, text)
            return p
        kind, _, rest = text.partition(":")
        p._set(kind, *_read(rest), text)
        return p

    @classmethod
    def as_is(cls, kind: Kind, name: str, namespace: str | None = None) -> "Principal":
        """A name written as it is, not encoded: how LDAP, OIDC, SAML, API-key and
        file-system names have always been written (their code validates names instead:
        ``ragstream.auth.valid_name``, ``Acl``). ``%`` stays ``%``; a ``/`` in a name without
        a namespace qualifies it (``as_is("group", "corp/eng")`` is ``group:corp/eng``), as
        it did. Refused (``ValueError``): an empty name, a kind that is not user, group or
        service, a bad namespace, and ``|`` anywhere (the stored ACL's separator); other
        characters are the caller's to check, as they always were. ``name`` is the text's
        reading, as :meth:`parse` gives it (``a%41`` reads ``aA``)."""
        if kind not in ("user", "group", "service"):
            raise ValueError(f"principal kind {kind!r}: one of user, group, service")
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {kind} principal needs a name")
        if namespace is not None:
            _check_namespace(namespace)
        if "|" in name:
            raise ValueError(f"a principal's name cannot hold '|' ({name[:100]!r})")
        rest = f"{namespace}/{name}" if namespace is not None else name
        p = object.__new__(cls)
        p._set(kind, *_read(rest), f"{kind}:{rest}")
        return p

    # -- value behaviour --------------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        return self.text == other.text if isinstance(other, Principal) else NotImplemented

    def __lt__(self, other: "Principal") -> bool:
        return self.text < other.text if isinstance(other, Principal) else NotImplemented

    def __hash__(self) -> int:
        return hash(self.text)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Principal({self.text!r})"

    def __reduce__(self):  # pickling (multiprocessing): rebuilt from the text
        return (Principal.parse, (self.text,))


def _read(rest: str) -> tuple[str, str | None]:
    """(decoded name, namespace) of the text after ``kind:``: the namespace ends at the first ``/``."""
    namespace, slash, segment = rest.partition("/")
    return (decode_name(segment), namespace) if slash else (decode_name(rest), None)


def _check_namespace(namespace: str) -> None:
    if not isinstance(namespace, str) or not namespace or any(_escaped(ch, True) for ch in namespace):
        raise ValueError(f"invalid principal namespace {namespace!r}: not empty, no '/', '|', '%', blanks or "
                         "control characters")


def is_principal(text: str) -> bool:
    """Whether :meth:`Principal.parse` accepts ``text`` (what ``Acl`` accepts)."""
    try:
        Principal.parse(text)
    except ValueError:
        return False
    return True


PUBLIC = Principal("public")

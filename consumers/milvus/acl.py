"""ACL encoding, filters and the in-memory dictionary of ACL sets (see the package docstring)."""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from typing import Callable, Iterable
from schemas.events import Acl
from collections import OrderedDict
from consumers.milvus.schema import (CLOCK_SLACK_MS, FULL_RELOAD_EVERY, IndexInputError, MAX_ACL, SHARE_OBSERVED_KEPT,
                                     SHARE_OBSERVED_MIN, SHARE_OBSERVED_ROWS, SHARE_OBSERVED_TTL_S)


def escape_literal(value: str) -> str:
    """Escape a value for a double-quoted Milvus string literal."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def escape_like(value: str) -> str:
    r"""Escape a value for a LIKE pattern inside a string literal: the literal itself needs
    ``\\`` for the backslash that makes ``%``/``_`` match only themselves (milvus-lite rejects
    a bare ``\_`` as an unknown escape sequence)."""
    return escape_literal(value).replace("%", r"\\%").replace("_", r"\\_")


def encode_acl(principals: Iterable[str]) -> str:
    """The stored form of a set of principal texts: sorted, each between ``|``
    (``|group:eng|user:alice|``), so ``like "%|<principal>|%"`` finds exactly one principal.

    Unambiguous because a principal's text never holds ``|`` or a blank: the texts come from
    :class:`schemas.principals.Principal` (which encodes or refuses them) and pass
    ``Acl``'s validation (:meth:`Principal.parse <schemas.principals.Principal.parse>`,
    grammar :data:`schemas.principals.PRINCIPAL_RE`), so ``group:x|public`` cannot be stored
    as two principals."""
    ps = sorted(set(principals))
    return "|" + "|".join(ps) + "|" if ps else ""


def stored_acl(acl: Acl) -> str:
    """The ``acl`` value of a row: the encoded principals, ``""`` for an unknown ACL."""
    return encode_acl(acl.principals) if acl.known else ""


def acl_key(encoded: str) -> str:
    """The dictionary key of an encoded ACL (128 bits of SHA-256); ``""`` for unknown."""
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()[:32] if encoded else ""


def decode_acl(stored: str) -> Acl:
    """The inverse of :func:`encode_acl` (split at ``|``, which no principal holds); empty
    means nobody (unknown)."""
    ps = tuple(p for p in stored.split("|") if p)
    return Acl(principals=ps, known=True) if ps else Acl.unknown()


def subjects_filter(refs: Iterable[str]) -> str:
    """Rows of documents that reference any of these subjects (pseudonymous refs)."""
    rs = sorted(set(refs))
    if not rs:
        raise ValueError("no subject refs given")
    return "(" + " or ".join(f'subjects like "%|{escape_like(r)}|%"' for r in rs) + ")"


def acl_filter(principals: Iterable[str]) -> str:
    """Rows (or ACL sets) whose ``acl`` names any of these principals. A caller's principal
    never holds ``|`` either (:class:`schemas.principals.Principal` refuses it), so one
    pattern cannot span two stored principals."""
    ps = sorted(set(principals))
    if not ps:
        raise PermissionError("no principals: nothing is visible (fail closed)")
    return "(" + " or ".join(f'acl like "%|{escape_like(p)}|%"' for p in ps) + ")"


class AclSets:
    """The distinct ACL sets of a collection, in memory: which set keys name a principal.

    Loaded on first use; a daemon thread then fetches the sets registered since (by their
    ``added_ms``, with :data:`CLOCK_SLACK_MS` for writers' clocks) every ``refresh_s``. Sets
    this process registers are added at once. Sets never change or go away (see the module
    docstring), so merging is all a refresh does, and staleness can only hide."""

    def __init__(self, load: Callable[[int | None], list[tuple[str, str, int]]], refresh_s: float) -> None:
        self._load = load  # since_ms (None: all) -> [(acl_key, acl, added_ms)]
        self.refresh_s = refresh_s
        self._by_principal: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self._first = threading.Lock()
        self._newest_ms: int | None = None
        self._keys: set[str] = set()
        # frozenset(keys) -> [rows seen, of them visible, clock time of the first]
        self._observed: OrderedDict[frozenset[str], list[float]] = OrderedDict()
        self.clock: Callable[[], float] = time.monotonic

    def add(self, key: str, acl: str) -> None:
        self._merge([(key, acl, 0)])

    def keys_for(self, principals: Iterable[str]) -> set[str]:
        if self._newest_ms is None:
            with self._first:
                if self._newest_ms is None:
                    self._newest_ms = self._merge(self._load(None))
                    threading.Thread(target=self._refresher, name="acl-sets", daemon=True).start()
        with self._lock:
            return set().union(*(self._by_principal.get(p, ()) for p in principals))

    def known(self, key: str) -> bool:
        """Stored already (fetched from Milvus or registered by this process)."""
        with self._lock:
            return key in self._keys

    def share(self, keys: set[str]) -> float:
        """The estimate of the share of rows these keys select: the share of the nearest rows
        they were seen to select (:meth:`observe`) once enough were seen, else their share of
        all sets. It picks a search strategy and a beam width, never what a caller sees.

        Rows are seen only by unfiltered walks, which a share below POSTFILTER_MIN_SHARE does
        not get: an estimate learns downward (one set of two holding 5% of the rows) and is
        judged again when it expires (SHARE_OBSERVED_TTL_S after its first row), never upward
        from a small share of the sets (one set of fifty holding most rows keeps the filtered
        walk and a wide beam: exact, slower)."""
        with self._lock:
            seen = self._observed.get(frozenset(keys))
            if seen is not None and self.clock() - seen[2] > SHARE_OBSERVED_TTL_S:
                del self._observed[frozenset(keys)]
                seen = None
            if seen is not None and seen[0] >= SHARE_OBSERVED_MIN:
                return (seen[1] + 1) / (seen[0] + 1)  # never 0: one more visible row than seen
            return len(keys) / max(1, len(self._keys))

    def observe(self, keys: set[str], rows: int, visible: int) -> None:
        """Of ``rows`` rows an unfiltered search returned, ``visible`` were in ``keys``' sets."""
        if rows <= 0:
            return
        k = frozenset(keys)
        with self._lock:
            seen = self._observed.get(k)
            if seen is None:
                seen = self._observed[k] = [0, 0, self.clock()]
            if seen[0] and seen[0] + rows > SHARE_OBSERVED_ROWS:  # older rows fade to make room
                scale = max(0.0, SHARE_OBSERVED_ROWS - rows) / seen[0]
                seen[0], seen[1] = seen[0] * scale, seen[1] * scale
            seen[0] += rows
            seen[1] += visible
            self._observed.move_to_end(k)
            while len(self._observed) > SHARE_OBSERVED_KEPT:
                self._observed.popitem(last=False)

    def _merge(self, rows: list[tuple[str, str, int]]) -> int:
        """Add these sets; return the newest registration time seen."""
        newest = self._newest_ms or 0
        with self._lock:
            for key, acl, added_ms in rows:
                newest = max(newest, added_ms)
                self._keys.add(key)
                for p in decode_acl(acl).principals:
                    self._by_principal.setdefault(p, set()).add(key)
        return newest

    def _refresher(self) -> None:
        for n in itertools.count(1):
            time.sleep(self.refresh_s)
            # Now and then everything again: a writer whose clock lags more than the slack
            # would otherwise have its sets missed for good.
            since = None if n % FULL_RELOAD_EVERY == 0 else max(0, (self._newest_ms or 0) - CLOCK_SLACK_MS)
            try:
                self._newest_ms = self._merge(self._load(since))
            except Exception:  # noqa: BLE001 - Milvus away: keep the sets we have, try again later
                continue


def keys_filter(keys: Iterable[str]) -> str:
    """Rows whose ACL set is one of these (hex keys: nothing to escape)."""
    return "acl_key in [" + ", ".join(f'"{k}"' for k in sorted(keys)) + "]"



def check_acl(encoded: str) -> str:
    """An ACL is never clipped (that would change who may read): one too long for the
    field is this document's permanent failure, with what to do."""
    size = len(encoded.encode("utf-8"))
    if size > MAX_ACL:
        raise IndexInputError(
            f"the document's ACL is {size} bytes ({encoded.count('|') - 1} principals), over the index's "
            f"{MAX_ACL}-byte field: grant access through groups instead of listing so many users")
    return encoded

"""Who may read a Confluence page: space permissions and read restrictions (the page's own
and its ancestors') → ACL principals.

Confluence lets a person view a page when **all** of these hold:

1. the space grants them *read* (``VIEWSPACE``): as a user, through a group, or to anyone
   (anonymous access);
2. for the page and for **every ancestor** that has read restrictions: they are named in
   that restriction, or are in one of its groups (restrictions inherit down the tree).

An ACL here is a set of principals any one of which grants access (a union), so the
intersection is computed, not guessed, and nothing is widened (fail closed):

* no read restriction on the page or its ancestors: the space's readers as they are —
  ``user:<directory>/<id>``, ``group:<directory>/<name>``, ``public`` for anonymous access
  if ``anonymous_is_public`` (otherwise anonymous access grants no principal);
* otherwise: a group named in every restriction level and granted the space keeps its
  ``group:`` principal; every other person who could qualify (users named in a restriction,
  members of the restrictions' groups) is checked level by level against their own groups
  (``/rest/api/user/memberof``) and becomes a ``user:`` principal if they pass them all.

Names are made :class:`schemas.principals.Principal` values, which encode them
(:func:`~schemas.principals.encode_name`): whitespace, control characters, ``|`` and ``%`` as
``%XX``, since principals refuse blanks and ``|``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

from ragstream.logging import get_logger
from schemas.principals import PUBLIC, Principal

log = get_logger(__name__)


@dataclass
class Level:
    """One condition a reader must meet: named here, in one of these groups, or anyone."""

    users: set[str] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)
    anyone: bool = False
    #: Where it comes from (logs): "space" or "content <id>".
    origin: str = ""

    def admits(self, user: str, groups_of_user: set[str]) -> bool:
        return self.anyone or user in self.users or bool(self.groups & groups_of_user)

    @property
    def empty(self) -> bool:
        return not (self.users or self.groups or self.anyone)


class PrincipalMapper:
    def __init__(self, directory: str, anonymous_is_public: bool) -> None:
        self.directory, self.anonymous_is_public = directory, anonymous_is_public

    def user(self, uid: str) -> str:
        return Principal.user(uid, self.directory).text

    def group(self, name: str) -> str:
        return Principal.group(name, self.directory).text

    def effective(self, space: Level, restrictions: Iterable[Level], *,
                  groups_of: Callable[[str], Iterable[str]],
                  members_of: Callable[[str], Iterable[str]]) -> tuple[str, ...]:
        """The principals that may read, given the space level and the restriction levels
        (page and ancestors, those with read restrictions only). ``groups_of(user)`` and
        ``members_of(group)`` look people up (cached by the caller); a lookup that fails
        raises and the caller fails closed."""
        levels = [lv for lv in restrictions if not lv.empty]
        if not levels:
            out = {self.user(u) for u in space.users} | {self.group(g) for g in space.groups}
            if space.anyone:
                out.add(PUBLIC.text)
            return tuple(sorted(out))
        out: set[str] = set()
        whole = {g for g in set.intersection(*(lv.groups for lv in levels)) if space.anyone or g in space.groups}
        out |= {self.group(g) for g in whole}
        candidates: set[str] = set()
        for lv in levels:
            candidates |= lv.users
            for g in lv.groups - whole:
                candidates |= set(members_of(g))
        everyone = [space, *levels]
        for user in sorted(candidates):
            mine = set(groups_of(user))
            if any(g in whole for g in mine):
                continue  # already covered by a group principal
            if all(lv.admits(user, mine) for lv in everyone):
                out.add(self.user(user))
        return tuple(sorted(out))

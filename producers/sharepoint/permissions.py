"""SharePoint role assignments → ACL principals (see the package docstring for the table).

A role assignment names a member (``SP.User`` — a person or a directory group — or an
``SP.Group``, a SharePoint group) and the role definitions bound to it. A member may read
an item when one of its roles carries ``ViewListItems`` (bit 0x1 of
``BasePermissions.Low``): Read, Contribute, Edit, Full Control do; Limited Access does not.

Principals refuse blanks and ``|``, and SharePoint's claim login names are full of them
(``i:0#.f|membership|alice@x.com``, group titles such as ``Eng Members``), so every name
taken from SharePoint is made a :class:`schemas.principals.Principal`, which encodes it
(:func:`~schemas.principals.encode_name`, here also as :func:`encode`): whitespace, control
characters, ``|`` and ``%`` become ``%XX`` (UTF-8 bytes, upper-case hex). ``%`` is encoded
too, so the encoding is reversible (:func:`decode`) and two names never map to one principal.
"""

from __future__ import annotations

import re
from typing import Any, Iterable
from urllib.parse import urlsplit

from schemas.principals import PUBLIC, Principal, decode_name, encode_name

#: BasePermissions.Low bit that lets a member see list items.
VIEW_LIST_ITEMS = 0x1
#: RoleTypeKind values that include ViewListItems (Reader, Contributor, WebDesigner,
#: Administrator, Editor), for a role definition returned without BasePermissions.
READING_ROLE_KINDS = frozenset({2, 3, 4, 5, 6})

USER, DISTRIBUTION_LIST, SECURITY_GROUP, SHAREPOINT_GROUP = 1, 2, 4, 8

#: The namespaces this connector writes besides the directory's (a directory alias may not be one).
SHAREPOINT_NS, CLAIM_NS = "sharepoint", "sharepoint-claim"

_EVERYONE = re.compile(r"^(c:0\(\.s\|true|c:0-\.f\|rolemanager\|spo-grid-all-users/.*)$", re.IGNORECASE)
_ENTRA_USER = re.compile(r"^i:0#\.f\|membership\|(?P<upn>[^|]+)$", re.IGNORECASE)
_ENTRA_GROUP = re.compile(r"^c:0t\.c\|tenant\|(?P<oid>[0-9a-f-]+)$", re.IGNORECASE)
_M365_GROUP = re.compile(r"^c:0o\.c\|federateddirectoryclaimprovider\|(?P<oid>[0-9a-f-]+(?:_o)?)$", re.IGNORECASE)


#: The name encoding of every principal (:mod:`schemas.principals`), under this module's older names.
encode, decode = encode_name, decode_name


def _int(value: Any) -> int | None:
    value = getattr(value, "value", value)  # the client library's enums
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def grants_read(role: dict[str, Any]) -> bool:
    """Whether a role definition (its properties) lets its holders read items."""
    perms = role.get("BasePermissions")
    low = None
    if isinstance(perms, dict):
        low = _int(perms.get("Low"))
    elif perms is not None:
        low = _int(getattr(perms, "Low", None))
    if low is not None:
        return bool(low & VIEW_LIST_ITEMS)
    return _int(role.get("RoleTypeKind")) in READING_ROLE_KINDS


class PrincipalMapper:
    """Maps SharePoint members to principals for one site.

    ``directory`` is the alias the retrieval API's OIDC issuer for the tenant has in the
    auth file (``[oidc.<alias>]``): its users are ``user:<alias>/<name>`` and its groups
    ``group:<alias>/<group>``, so a person signed in through Entra ID matches the
    ``user:entra/alice@x.com`` and ``group:entra/<object id>`` written here.
    """

    def __init__(self, site_url: str, directory: str = "entra", everyone_is_public: bool = False) -> None:
        parts = urlsplit(site_url)
        self.site = f"{parts.hostname or ''}{parts.path.rstrip('/')}"
        self.directory, self.everyone_is_public = directory, everyone_is_public

    def principal(self, member: dict[str, Any]) -> str | None:
        """The principal of one member (its properties), or None for one nobody can be
        (the "Everyone" claims when they are not mapped to ``public``)."""
        login = str(member.get("LoginName") or "")
        kind = _int(member.get("PrincipalType"))
        if kind == SHAREPOINT_GROUP:  # the site, then the group: "/" is not encoded after a namespace
            return Principal.group(f"{self.site}/{login or str(member.get('Title') or '')}", SHAREPOINT_NS).text
        if _EVERYONE.match(login):
            return PUBLIC.text if self.everyone_is_public else Principal.group(login, CLAIM_NS).text
        if m := _ENTRA_USER.match(login):
            return Principal.user(m["upn"].lower(), self.directory).text
        if m := (_ENTRA_GROUP.match(login) or _M365_GROUP.match(login)):
            return Principal.group(m["oid"].lower(), self.directory).text
        if not login:
            return None
        return Principal("user" if kind == USER else "group", login, CLAIM_NS).text

    def principals(self, assignments: Iterable[tuple[dict[str, Any], list[dict[str, Any]]]]) -> tuple[str, ...]:
        """The principals that may read, from (member, role definitions) pairs."""
        out = set()
        for member, roles in assignments:
            if any(grants_read(r) for r in roles):
                p = self.principal(member)
                if p is not None:
                    out.add(p)
        return tuple(sorted(out))

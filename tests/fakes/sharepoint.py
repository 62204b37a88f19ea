"""A local SharePoint site with one document library, shaped by the SharePoint REST API.

It answers what office365-rest-python-client sends for a document library, in OData
verbose JSON (``Accept: application/json;odata=verbose``, every payload under ``"d"``):

* ``POST /_api/contextInfo`` → ``SP.ContextWebInformation`` (the form digest);
* ``GET /_api/Web`` and ``GET /_api/Web/lists/GetByTitle('<title>')`` (with
  ``CurrentChangeToken``); the list is also addressable as ``Lists(guid'<id>')``;
* ``GET …/items`` with ``$select``/``$expand=File``/``$top`` and server-driven paging
  (``__next`` carrying ``$skiptoken=Paged=TRUE&p_ID=<last id>``, as SharePoint does);
* ``GET …/getItemById(<n>)`` / ``…/Items(<n>)``, ``…/File``, ``…/File/$value``,
  ``/_api/Web/GetFileByServerRelativeUrl('<url>')/$value`` (and ``…Path(decodedurl=…)``);
* ``GET …/RoleAssignments?$expand=Member,RoleDefinitionBindings`` for an item (its own
  assignments when it has unique permissions, the library's otherwise) and for the list;
  members are ``SP.User`` (users, ``PrincipalType`` 1; directory groups, 4) and
  ``SP.Group`` (SharePoint groups, 8) with claim login names (``i:0#.f|membership|…``);
* ``POST …/getChanges`` with an ``SP.ChangeQuery`` (``Item``, ``List``, ``Add``,
  ``Update``, ``DeleteObject``, ``Rename``, ``RoleAssignmentAdd``/``Delete``,
  ``ChangeTokenStart``, ``FetchLimit``) → ``SP.ChangeItem`` / ``SP.ChangeList`` entries
  whose ``ChangeToken.StringValue`` is ``1;3;<list id>;<ticks>;<change number>``; a token
  older than the retained change log (see :meth:`FakeSharePoint.expire_change_log`) or of
  another list is refused with HTTP 500 and SharePoint's error
  ``-2130575172, Microsoft.SharePoint.SPInvalidChangeTokenException``.

Authentication is a bearer token (``Authorization: Bearer …``): an unknown one gets 401
with a ``WWW-Authenticate: Bearer realm=…`` challenge, as SharePoint Online answers.
:meth:`FakeSharePoint.throttle` makes the next requests answer 429 or 503 with
``Retry-After``. Every request is recorded in :attr:`FakeSharePoint.requests`.

Test code changes the site through methods (``add_file``, ``update_file``, ``rename``,
``delete``, ``set_permissions``, …); each change is written to the change log the way
SharePoint logs it.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

INVALID_CHANGE_TOKEN = "-2130575172, Microsoft.SharePoint.SPInvalidChangeTokenException"

# Change types (SP.ChangeType).
ADD, UPDATE, DELETE, RENAME, ASSIGNMENT_ADD, ASSIGNMENT_DELETE = 1, 2, 3, 4, 11, 12

# PrincipalType
USER, DISTRIBUTION_LIST, SECURITY_GROUP, SHAREPOINT_GROUP = 1, 2, 4, 8

#: The built-in role definitions: (Id, RoleTypeKind, BasePermissions High, Low). Only the
#: ones whose Low word has bit 0x1 (ViewListItems) let their holders read items.
ROLES = {
    "Full Control": (1073741829, 5, "2147483647", "4294705151"),
    "Edit": (1073741830, 6, "432", "1011030767"),
    "Contribute": (1073741827, 3, "432", "1011028719"),
    "Read": (1073741826, 2, "176", "138612833"),
    "Limited Access": (1073741825, 1, "48", "134418528"),
}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ticks(ts: float) -> int:
    return int((ts + 62135596800) * 10_000_000)


@dataclass
class Principal:
    id: int
    login: str
    title: str
    kind: int  # PrincipalType
    email: str = ""


@dataclass
class Doc:
    id: int
    path: str  # server-relative URL of the file
    content: bytes
    version: int = 1  # the file's major version (its ETag's number)
    item_version: int = 1  # the list item's etag
    unique_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created: float = field(default_factory=time.time)
    modified: float = field(default_factory=time.time)
    #: (principal id, role name) pairs; None: inherits the library's permissions.
    assignments: list[tuple[int, str]] | None = None

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass
class Change:
    number: int
    type: int
    item_id: int | None  # None: a change of the list itself
    at: float
    unique_id: str | None = None


class FakeSharePoint:
    """One site (``/sites/<site>``) with one document library; start() serves it on a free port."""

    def __init__(self, site: str = "eng", library: str = "Documents", folder: str = "Shared Documents",
                 tokens: tuple[str, ...] = ("good-token",)) -> None:
        self.site_path = f"/sites/{site}"
        self.library, self.folder = library, f"/sites/{site}/{folder}"
        self.tokens = set(tokens)
        self.site_id, self.web_id, self.list_id = (str(uuid.uuid4()) for _ in range(3))
        self.lock = threading.RLock()
        self.docs: dict[int, Doc] = {}
        self.principals: dict[int, Principal] = {}
        self.list_assignments: list[tuple[int, str]] = []
        self.changes: list[Change] = []
        self.next_change = 1
        self.log_start = 1  # the oldest change number still in the change log
        self.next_id = 1
        self.next_principal = 10
        #: Largest number of changes one getChanges answer carries (SharePoint: 1000).
        self.change_page = 1000
        self.requests: list[tuple[str, str]] = []
        self._throttle: list[tuple[int, int, str | None]] = []  # (status, retry_after, path part)
        self.throttled = 0
        self._server: ThreadingHTTPServer | None = None
        # The site's groups, as a new team site has them.
        self.owners = self.add_principal("Eng Owners", SHAREPOINT_GROUP)
        self.members = self.add_principal("Eng Members", SHAREPOINT_GROUP)
        self.visitors = self.add_principal("Eng Visitors", SHAREPOINT_GROUP)
        self.list_assignments = [(self.owners.id, "Full Control"), (self.members.id, "Edit"),
                                 (self.visitors.id, "Read")]

    # -- serving ---------------------------------------------------------------------------
    def start(self) -> FakeSharePoint:
        fake = self

        class Handler(_Handler):
            site = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True, name="fake-sharepoint").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeSharePoint:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def origin(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        """The site URL to give the client (``ClientContext(url)``)."""
        return self.origin + self.site_path

    # -- principals and permissions ---------------------------------------------------------
    def add_principal(self, title: str, kind: int, login: str | None = None, email: str = "") -> Principal:
        with self.lock:
            p = Principal(self.next_principal, login or title, title, kind, email)
            self.next_principal += 1
            self.principals[p.id] = p
            return p

    def user(self, upn: str, title: str | None = None) -> Principal:
        """An Entra ID user: claim ``i:0#.f|membership|<upn>``."""
        return self._find_or_add(f"i:0#.f|membership|{upn}", title or upn.split("@")[0].title(), USER, upn)

    def directory_group(self, object_id: str, title: str) -> Principal:
        """An Entra ID security group: claim ``c:0t.c|tenant|<object id>``."""
        return self._find_or_add(f"c:0t.c|tenant|{object_id}", title, SECURITY_GROUP)

    def claim(self, login: str, title: str, kind: int = SECURITY_GROUP) -> Principal:
        return self._find_or_add(login, title, kind)

    def _find_or_add(self, login: str, title: str, kind: int, email: str = "") -> Principal:
        with self.lock:
            for p in self.principals.values():
                if p.login == login:
                    return p
            return self.add_principal(title, kind, login, email)

    def set_permissions(self, item_id: int, assignments: list[tuple[Principal, str]] | None) -> None:
        """Give the item its own permissions (None: inherit the library's again)."""
        with self.lock:
            doc = self.docs[item_id]
            before = set(doc.assignments or [])
            doc.assignments = None if assignments is None else [(p.id, role) for p, role in assignments]
            after = set(doc.assignments or [])
            if after - before or assignments is None:
                self._log(ASSIGNMENT_ADD, doc)
            if before - after:
                self._log(ASSIGNMENT_DELETE, doc)

    def set_library_permissions(self, assignments: list[tuple[Principal, str]]) -> None:
        with self.lock:
            self.list_assignments = [(p.id, role) for p, role in assignments]
            self._log(ASSIGNMENT_ADD, None)

    # -- documents --------------------------------------------------------------------------
    def add_file(self, name: str, content: bytes | str, readers: list[tuple[Principal, str]] | None = None) -> int:
        with self.lock:
            doc = Doc(self.next_id, f"{self.folder}/{name}", _bytes(content))
            self.next_id += 1
            if readers is not None:
                doc.assignments = [(p.id, role) for p, role in readers]
            self.docs[doc.id] = doc
            self._log(ADD, doc)
            return doc.id

    def update_file(self, item_id: int, content: bytes | str) -> None:
        with self.lock:
            doc = self.docs[item_id]
            doc.content, doc.version, doc.item_version = _bytes(content), doc.version + 1, doc.item_version + 1
            doc.modified = time.time()
            self._log(UPDATE, doc)

    def rename(self, item_id: int, new_name: str) -> None:
        """A new file name; the content (and the file's ETag) stays."""
        with self.lock:
            doc = self.docs[item_id]
            doc.path = f"{doc.path.rsplit('/', 1)[0]}/{new_name}"
            doc.item_version += 1
            self._log(RENAME, doc)

    def delete(self, item_id: int) -> None:
        with self.lock:
            doc = self.docs.pop(item_id)
            self._log(DELETE, doc)

    # -- the change log -----------------------------------------------------------------------
    def _log(self, kind: int, doc: Doc | None) -> None:
        self.changes.append(Change(self.next_change, kind, doc.id if doc else None, time.time(),
                                   doc.unique_id if doc else None))
        self.next_change += 1

    def token(self, number: int, at: float | None = None) -> str:
        return f"1;3;{self.list_id};{_ticks(at or time.time())};{number}"

    def current_token(self) -> str:
        with self.lock:
            last = self.changes[-1] if self.changes else None
            return self.token(self.next_change - 1, last.at if last else None)

    def expire_change_log(self) -> None:
        """Trim the change log (SharePoint keeps ~60 days): every older token becomes invalid."""
        with self.lock:
            self.changes.clear()
            self.log_start = self.next_change

    def throttle(self, count: int = 1, status: int = 429, retry_after: int = 1, path: str | None = None) -> None:
        """The next ``count`` requests (whose path contains ``path``) answer ``status`` with
        ``Retry-After: <retry_after>``."""
        with self.lock:
            self._throttle += [(status, retry_after, path and path.lower())] * count

    def count(self, method: str, path_part: str) -> int:
        """How many requests of this method had ``path_part`` in their path (case-insensitive)."""
        return sum(1 for m, p in self.requests if m == method and path_part.lower() in p.lower())

    # -- JSON shapes ----------------------------------------------------------------------------
    def api(self, rel: str) -> str:
        return f"{self.url}/_api/{rel}"

    def list_json(self) -> dict:
        return {"__metadata": {"id": f"Web/Lists(guid'{self.list_id}')", "uri": self.api(f"Web/Lists(guid'{self.list_id}')"),
                               "etag": '"1"', "type": "SP.List"},
                "Id": self.list_id, "Title": self.library, "BaseTemplate": 101, "BaseType": 1,
                "ItemCount": len(self.docs), "Hidden": False,
                "CurrentChangeToken": {"__metadata": {"type": "SP.ChangeToken"}, "StringValue": self.current_token()},
                "RootFolder": {"__deferred": {"uri": self.api(f"Web/Lists(guid'{self.list_id}')/RootFolder")}},
                "Items": {"__deferred": {"uri": self.api(f"Web/Lists(guid'{self.list_id}')/Items")}},
                "RoleAssignments": {"__deferred": {"uri": self.api(f"Web/Lists(guid'{self.list_id}')/RoleAssignments")}}}

    def file_json(self, doc: Doc) -> dict:
        where = f"Web/GetFileByServerRelativePath(decodedurl='{_odata(doc.path)}')"
        return {"__metadata": {"id": where, "uri": self.api(quote(where)), "type": "SP.File"},
                "CheckInComment": "", "CheckOutType": 2, "ContentTag": f"{{{doc.unique_id.upper()}}},{doc.version},{doc.version}",
                "ETag": f'"{{{doc.unique_id.upper()}}},{doc.version}"', "Exists": True, "Length": str(len(doc.content)),
                "Level": 1, "MajorVersion": doc.version, "MinorVersion": 0, "Name": doc.name,
                "ServerRelativeUrl": doc.path, "TimeCreated": _iso(doc.created), "TimeLastModified": _iso(doc.modified),
                "Title": None, "UIVersion": 512 * doc.version, "UIVersionLabel": f"{doc.version}.0",
                "UniqueId": doc.unique_id}

    def item_json(self, doc: Doc, select: list[str] | None, expand: list[str]) -> dict:
        base = f"Web/Lists(guid'{self.list_id}')/Items({doc.id})"
        fields = {"FileSystemObjectType": 0, "Id": doc.id, "ID": doc.id, "ContentTypeId": "0x0101",
                  "Title": None, "Created": _iso(doc.created), "Modified": _iso(doc.modified),
                  "GUID": str(uuid.UUID(int=doc.id)), "AuthorId": 10, "EditorId": 10,
                  "FileRef": doc.path, "FileLeafRef": doc.name, "FileDirRef": doc.path.rsplit("/", 1)[0],
                  "HasUniqueRoleAssignments": doc.assignments is not None,
                  "OData__UIVersionString": f"{doc.version}.0"}
        if select:
            wanted = {s.split("/")[0].lower() for s in select}
            fields = {k: v for k, v in fields.items() if k.lower() in wanted}
        out: dict[str, Any] = {"__metadata": {"id": base, "uri": self.api(base), "etag": f'"{doc.item_version}"',
                                              "type": f"SP.Data.{self.folder.rsplit('/', 1)[-1].replace(' ', '_x0020_')}Item"}}
        for nav in ("File", "RoleAssignments"):
            if nav.lower() in expand:
                if nav == "File":
                    out["File"] = self.file_json(doc)
                else:
                    out["RoleAssignments"] = {"results": self.assignments_json(doc.assignments, ["member", "roledefinitionbindings"])}
            elif not select:
                out[nav] = {"__deferred": {"uri": self.api(f"{base}/{nav}")}}
        out.update(fields)
        return out

    def member_json(self, p: Principal) -> dict:
        if p.kind == SHAREPOINT_GROUP:
            return {"__metadata": {"id": f"Web/SiteGroups/GetById({p.id})", "uri": self.api(f"Web/SiteGroups/GetById({p.id})"),
                                   "type": "SP.Group"},
                    "Id": p.id, "IsHiddenInUI": False, "LoginName": p.login, "Title": p.title, "PrincipalType": p.kind,
                    "AllowMembersEditMembership": False, "Description": None, "OnlyAllowMembersViewMembership": False,
                    "OwnerTitle": self.owners.title}
        return {"__metadata": {"id": f"Web/GetUserById({p.id})", "uri": self.api(f"Web/GetUserById({p.id})"), "type": "SP.User"},
                "Id": p.id, "IsHiddenInUI": False, "LoginName": p.login, "Title": p.title, "PrincipalType": p.kind,
                "Email": p.email, "IsEmailAuthenticationGuestUser": False, "IsShareByEmailGuestUser": False,
                "IsSiteAdmin": False, "UserPrincipalName": p.email or None,
                "UserId": {"__metadata": {"type": "SP.UserIdInfo"}, "NameId": format(p.id, "016x"),
                           "NameIdIssuer": "urn:federation:microsoftonline"} if p.kind == USER else None}

    def assignments_json(self, assignments: list[tuple[int, str]] | None, expand: list[str]) -> list[dict]:
        out = []
        for pid, role in (self.list_assignments if assignments is None else assignments):
            base = f"Web/Lists(guid'{self.list_id}')/RoleAssignments/GetByPrincipalId({pid})"
            entry: dict[str, Any] = {"__metadata": {"id": base, "uri": self.api(base), "type": "SP.RoleAssignment"},
                                     "PrincipalId": pid}
            if "member" in expand:
                entry["Member"] = self.member_json(self.principals[pid])
            else:
                entry["Member"] = {"__deferred": {"uri": self.api(f"{base}/Member")}}
            if "roledefinitionbindings" in expand:
                rid, kind, high, low = ROLES[role]
                entry["RoleDefinitionBindings"] = {"results": [{
                    "__metadata": {"id": f"Web/RoleDefinitions({rid})", "uri": self.api(f"Web/RoleDefinitions({rid})"),
                                   "type": "SP.RoleDefinition"},
                    "BasePermissions": {"__metadata": {"type": "SP.BasePermissions"}, "High": high, "Low": low},
                    "Description": role, "Hidden": role == "Limited Access", "Id": rid, "Name": role, "Order": 1,
                    "RoleTypeKind": kind}]}
            else:
                entry["RoleDefinitionBindings"] = {"__deferred": {"uri": self.api(f"{base}/RoleDefinitionBindings")}}
            out.append(entry)
        return out

    def change_json(self, c: Change) -> dict:
        token = {"__metadata": {"type": "SP.ChangeToken"}, "StringValue": self.token(c.number, c.at)}
        common = {"ChangeToken": token, "ChangeType": c.type, "SiteId": self.site_id, "Time": _iso(c.at)}
        if c.item_id is None:
            return {"__metadata": {"id": f"SP.ChangeList{c.number}", "uri": self.api(f"SP.ChangeList{c.number}"),
                                   "type": "SP.ChangeList"},
                    **common, "BaseTemplate": 101, "Editor": "", "Hidden": False, "ListId": self.list_id,
                    "RootFolderUrl": self.folder, "Title": self.library, "WebId": self.web_id}
        return {"__metadata": {"id": f"SP.ChangeItem{c.number}", "uri": self.api(f"SP.ChangeItem{c.number}"),
                               "type": "SP.ChangeItem"},
                **common, "ActivityType": None, "ContentTypeId": {"StringValue": "0x0101"}, "Editor": "",
                "FileSystemObjectType": 0, "FileType": "", "Hidden": False, "ItemId": c.item_id,
                "ListId": self.list_id, "ListTemplate": 101, "UniqueId": c.unique_id, "WebId": self.web_id}

    # -- getChanges ---------------------------------------------------------------------------
    def get_changes(self, query: dict) -> tuple[int, dict]:
        start = query.get("ChangeTokenStart")
        if isinstance(start, dict):
            start = start.get("StringValue")
        number = 0
        if start:
            parts = str(start).split(";")
            if len(parts) != 5 or parts[0] != "1" or parts[2].lower() != self.list_id.lower() or not parts[4].isdigit():
                return 500, _error(INVALID_CHANGE_TOKEN, "The change token is invalid.")
            number = int(parts[4])
            if number < self.log_start - 1 or number >= self.next_change:
                return 500, _error(INVALID_CHANGE_TOKEN,
                                   "The change token refers to a time before the start of the current change log.")
        wanted_types = {t for flag, t in (("Add", ADD), ("Update", UPDATE), ("DeleteObject", DELETE),
                                          ("Rename", RENAME), ("RoleAssignmentAdd", ASSIGNMENT_ADD),
                                          ("RoleAssignmentDelete", ASSIGNMENT_DELETE)) if query.get(flag)}
        limit = min(int(query.get("FetchLimit") or self.change_page), self.change_page)
        out = []
        for c in self.changes:
            if c.number <= number or c.type not in wanted_types:
                continue
            if (c.item_id is not None and not query.get("Item")) or (c.item_id is None and not query.get("List")):
                continue
            out.append(self.change_json(c))
            if len(out) >= limit:
                break
        return 200, {"d": {"results": out}}


def _bytes(content: bytes | str) -> bytes:
    return content.encode() if isinstance(content, str) else content


def _odata(s: str) -> str:
    return s.replace("'", "''")


def _error(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": {"lang": "en-US", "value": message}}}


_LIST = r"web/lists/getbytitle\('(?P<title>(?:[^']|'')*)'\)|web/lists\(guid'(?P<guid>[0-9a-f-]+)'\)|web/lists\('(?P<guid2>[0-9a-f-]+)'\)"
_ITEM = r"/(?:getitembyid\((?P<id>\d+)\)|items\((?P<id2>\d+)\))"


class _Handler(BaseHTTPRequestHandler):
    site: FakeSharePoint
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body leave at once (no 40 ms delayed-ACK stall)

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    # -- plumbing ---------------------------------------------------------------------------
    def _send(self, status: int, body: dict | bytes, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        ctype = "application/octet-stream" if isinstance(body, bytes) else "application/json;odata=verbose;charset=utf-8"
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("SPRequestGuid", str(uuid.uuid4()))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        site = self.site
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = {k.lower(): v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        with site.lock:
            site.requests.append((method, unquote(self.path)))
            auth = self.headers.get("Authorization", "")
            if not (auth.startswith("Bearer ") and auth[7:] in site.tokens):
                self._send(401, {"error_description": "Invalid issuer or signature."},
                           {"WWW-Authenticate": f'Bearer realm="{site.site_id}",client_id="00000003-0000-0ff1-ce00-000000000000",'
                                                'trusted_issuers="00000001-0000-0000-c000-000000000000@*",'
                                                'authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize"'})
                return
            for i, (status, retry_after, part) in enumerate(site._throttle):
                if part is None or part in path.lower():
                    del site._throttle[i]
                    site.throttled += 1
                    self._send(status, _error("-2147024860, Microsoft.SharePoint.SPQueryThrottledException",
                                              "The request has been throttled: too many requests."),
                               {"Retry-After": str(retry_after)})
                    return
            prefix = site.site_path.lower() + "/_api/"
            if not path.lower().startswith(prefix):
                self._send(404, _error("-1, Microsoft.SharePoint.Client.InvalidClientQueryException",
                                       f"The expression \"{path}\" is not valid."))
                return
            rel = path[len(prefix):]
            try:
                status, answer = self._route(method, rel, query, body)
            except KeyError as exc:
                status, answer = 404, _error("-2147024809, System.ArgumentException", f"Item does not exist: {exc}")
            except Exception as exc:  # noqa: BLE001 - the fake answers like a server, never hangs up
                status, answer = 500, _error("-2146233088, Microsoft.SharePoint.SPException", f"{type(exc).__name__}: {exc}")
        self._send(status, answer)

    def _route(self, method: str, rel: str, query: dict[str, str], body: bytes) -> tuple[int, dict | bytes]:
        site = self.site
        low = rel.lower()
        select = [s.strip() for s in query["$select"].split(",")] if query.get("$select") else None
        expand = [s.strip().lower() for s in query.get("$expand", "").split(",") if s.strip()]
        if low == "contextinfo" and method == "POST":
            return 200, {"d": {"GetContextWebInformation": {
                "__metadata": {"type": "SP.ContextWebInformation"}, "FormDigestTimeoutSeconds": 1800,
                "FormDigestValue": f"0x{uuid.uuid4().hex.upper()},{datetime.now(timezone.utc):%d %b %Y %H:%M:%S} -0000",
                "LibraryVersion": "16.0.25000.12000", "SiteFullUrl": site.url,
                "SupportedSchemaVersions": {"__metadata": {"type": "Collection(Edm.String)"}, "results": ["14.0.0.0", "15.0.0.0"]},
                "WebFullUrl": site.url}}}
        if low == "web" and method == "GET":
            return 200, {"d": {"__metadata": {"id": "Web", "uri": site.api("Web"), "type": "SP.Web"},
                               "Id": site.web_id, "Title": "Engineering", "Url": site.url,
                               "ServerRelativeUrl": site.site_path}}
        m = re.fullmatch(r"web/getfilebyserverrelative(?:url\('(?P<u>(?:[^']|'')*)'\)|path\(decodedurl='(?P<p>(?:[^']|'')*)'\))"
                         r"(?P<value>/\$value)?", rel, re.IGNORECASE)
        if m and method == "GET":
            url = (m["u"] if m["u"] is not None else m["p"]).replace("''", "'")
            doc = next((d for d in site.docs.values() if d.path.lower() == url.lower()), None)
            if doc is None:
                return 404, _error("-2130575338, Microsoft.SharePoint.SPException", f"File Not Found: {url}")
            return 200, doc.content if m["value"] else {"d": site.file_json(doc)}
        m = re.match(_LIST, rel, re.IGNORECASE)
        if not m:
            return 404, _error("-1, Microsoft.SharePoint.Client.InvalidClientQueryException", f"Unknown resource {rel!r}")
        title, guid = m["title"], m["guid"] or m["guid2"]
        if (title is not None and title.replace("''", "'").lower() != site.library.lower()) or (
                guid is not None and guid.lower() != site.list_id.lower()):
            return 404, _error("-1, System.ArgumentException", f"List '{title or guid}' does not exist at site with URL '{site.url}'.")
        rest = rel[m.end():]
        low = rest.lower()
        if low == "" and method == "GET":
            return 200, {"d": site.list_json()}
        if low == "/getchanges" and method == "POST":
            payload = json.loads(body or b"{}")
            return site.get_changes(payload.get("query", {}))
        if low == "/roleassignments" and method == "GET":
            return 200, {"d": {"results": site.assignments_json(None, expand)}}
        if low == "/items" and method == "GET":
            return 200, self._items(select, expand, query)
        m = re.match(_ITEM, rest, re.IGNORECASE)
        if m and method == "GET":
            item_id = int(m["id"] or m["id2"])
            doc = site.docs.get(item_id)
            if doc is None:
                return 404, _error("-2147024809, System.ArgumentException",
                                   "Item does not exist. It may have been deleted by another user.")
            sub = rest[m.end():].lower()
            if sub == "":
                return 200, {"d": site.item_json(doc, select, expand)}
            if sub == "/file":
                return 200, {"d": site.file_json(doc)}
            if sub == "/file/$value":
                return 200, doc.content
            if sub == "/roleassignments":
                return 200, {"d": {"results": site.assignments_json(doc.assignments, expand)}}
        return 404, _error("-1, Microsoft.SharePoint.Client.InvalidClientQueryException", f"Unknown resource {rel!r}")

    def _items(self, select: list[str] | None, expand: list[str], query: dict[str, str]) -> dict:
        site = self.site
        top = int(query.get("$top") or 100)
        after = 0
        token = query.get("$skiptoken")
        if token:
            m = re.search(r"p_ID=(\d+)", token)
            after = int(m.group(1)) if m else 0
        docs = sorted((d for d in site.docs.values() if d.id > after), key=lambda d: d.id)
        page, more = docs[:top], len(docs) > top
        out: dict[str, Any] = {"results": [site.item_json(d, select, expand) for d in page]}
        if more:
            keep = "".join(f"&{k}={quote(v)}" for k, v in (("%24select", query.get("$select")),
                                                           ("%24expand", query.get("$expand"))) if v)
            out["__next"] = (site.api(f"Web/Lists(guid'{site.list_id}')/Items") +
                             f"?%24skiptoken=Paged%3dTRUE%26p_ID%3d{page[-1].id}&%24top={top}{keep}")
        return {"d": out}

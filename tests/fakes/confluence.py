"""A local Confluence Server / Data Center site with one or more spaces, shaped by
Confluence's documented REST API (``/rest/api``) and driven by atlassian-python-api.

What it answers (JSON; paged collections carry ``start``, ``limit``, ``size`` and a
``_links.next`` while more remain):

* ``GET /rest/api/search?cql=…&start=&limit=&expand=`` — the CQL this source sends:
  ``space = "K"``, ``type = t`` / ``type in (…)``, ``lastmodified >= "yyyy-MM-dd HH:mm"``
  (**minute precision, in the site's time zone**, as Confluence compares it), ``order by
  lastmodified|created [asc|desc]``; anything else is a 400. Results carry ``content``
  (expand ``content.version``, ``content.ancestors``, ``content.space``,
  ``content.container``, ``content.body.storage``) and ``lastModified``. Expanding a body
  caps ``limit`` at 50. Deleted content never appears.
* ``GET /rest/api/content/{id}?expand=body.storage,version,ancestors,space`` (404 when gone);
* ``GET /rest/api/content/{id}/restriction/byOperation`` — ``read`` and ``update``
  restrictions, users and groups expanded (at most ``restriction_limit`` of each, ``size``
  telling the total), and ``…/byOperation/read/user|group`` to page through them;
* ``GET /rest/api/content/{id}/child/attachment`` (``extensions.mediaType``/``fileSize``,
  ``_links.download``) and the download itself, ``/download/attachments/{page}/{name}``;
* ``GET /rest/api/space/{key}`` and ``GET /rest/api/space/{key}/permissions`` (Data Center
  9.1+: ``{"operation": {"targetType", "operationKey"}, "subject": {"type": "user",
  "userKey"} | {"type": "group", "name"} | {"type": "anonymous"}}``);
* ``GET /rest/api/user?key=|username=``, ``GET /rest/api/user/memberof?username=|key=``,
  ``GET /rest/api/group/{name}/member``.

Authentication: ``Authorization: Bearer <personal access token>`` or HTTP Basic; anything
else is 401. :meth:`FakeConfluence.throttle` makes the next requests answer 429 with
``Retry-After``. Every request is recorded in :attr:`FakeConfluence.requests`.

As in Confluence: editing or renaming a page makes a new version (``version.when`` now);
changing restrictions or space permissions changes no version and no ``lastmodified``.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit
from zoneinfo import ZoneInfo


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class User:
    username: str
    key: str
    display: str
    groups: set[str] = field(default_factory=set)


@dataclass
class Content:
    id: str
    type: str  # page, blogpost, attachment
    title: str
    space: str
    body: str = ""
    version: int = 1
    when: float = 0.0
    created: float = 0.0
    parent: str | None = None  # pages: the parent page; attachments: the container
    data: bytes = b""
    media_type: str = ""
    read_users: list[str] = field(default_factory=list)  # usernames
    read_groups: list[str] = field(default_factory=list)
    author: str = "admin"


class FakeConfluence:
    """start() serves it on a free loopback port; ``url`` is the client's base URL."""

    def __init__(self, *, tokens: tuple[str, ...] = ("good-token",), passwords: dict[str, str] | None = None,
                 timezone_name: str = "Europe/Berlin", clock: Callable[[], float] = time.time) -> None:
        self.tokens = set(tokens)
        self.passwords = dict(passwords or {"svc-rag": "s3cret"})
        self.tz = ZoneInfo(timezone_name)
        self.clock = clock
        self.lock = threading.RLock()
        self.users: dict[str, User] = {}
        self.spaces: dict[str, str] = {}
        self.space_permissions: dict[str, list[dict]] = {}
        self.contents: dict[str, Content] = {}
        self._next_id = 98300
        self.requests: list[tuple[str, str]] = []
        self._throttle: list[int] = []  # Retry-After of each throttled answer to come
        #: Content ids whose restrictions answer 403.
        self.forbidden_restrictions: set[str] = set()
        self.restriction_limit = 200
        self._server: ThreadingHTTPServer | None = None

    # -- server ----------------------------------------------------------------------------
    def start(self) -> FakeConfluence:
        fake = self

        class Handler(_Handler):
            site = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True, name="fake-confluence").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeConfluence:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- test-side changes -----------------------------------------------------------------
    def add_user(self, username: str, *groups: str, display: str | None = None) -> User:
        with self.lock:
            u = User(username, f"ff8080{len(self.users):010d}", display or username.title(), set(groups))
            self.users[username] = u
            return u

    def add_space(self, key: str, name: str | None = None, readers: tuple[str, ...] = ("group:confluence-users",)
                  ) -> None:
        """``readers``: ``group:<name>``, ``user:<username>`` or ``anonymous`` granted read."""
        with self.lock:
            self.spaces[key] = name or key
            self.set_space_readers(key, readers)

    def set_space_readers(self, key: str, readers: tuple[str, ...]) -> None:
        with self.lock:
            perms = []
            for r in readers:
                kind, _, name = r.partition(":")
                subject = ({"type": "group", "name": name} if kind == "group" else
                           {"type": "user", "userKey": self.users[name].key} if kind == "user" else
                           {"type": "anonymous"})
                perms.append({"operation": {"targetType": "space", "operationKey": "read"}, "subject": subject,
                              "spaceKey": key, "spaceId": 1})
                perms.append({"operation": {"targetType": "page", "operationKey": "create"}, "subject": subject,
                              "spaceKey": key, "spaceId": 1})
            self.space_permissions[key] = perms

    def _id(self) -> str:
        self._next_id += 1
        return str(self._next_id)

    def add_page(self, space: str, title: str, body: str, *, parent: str | None = None, type: str = "page",
                 read_users: tuple[str, ...] = (), read_groups: tuple[str, ...] = ()) -> str:
        with self.lock:
            now = self.clock()
            c = Content(self._id(), type, title, space, body, 1, now, now, parent,
                        read_users=list(read_users), read_groups=list(read_groups))
            self.contents[c.id] = c
            return c.id

    def edit(self, cid: str, body: str | None = None, title: str | None = None) -> None:
        """A new version: new body and/or title (a rename)."""
        with self.lock:
            c = self.contents[cid]
            c.body = c.body if body is None else body
            c.title = c.title if title is None else title
            c.version += 1
            c.when = self.clock()

    def restrict(self, cid: str, users: tuple[str, ...] = (), groups: tuple[str, ...] = ()) -> None:
        """Set the read restrictions (empty: none). No new version, as in Confluence."""
        with self.lock:
            c = self.contents[cid]
            c.read_users, c.read_groups = list(users), list(groups)

    def delete(self, cid: str) -> None:
        """Delete content (its attachments too; child pages move up to its parent)."""
        with self.lock:
            c = self.contents.pop(cid)
            for other in list(self.contents.values()):
                if other.parent == cid:
                    if other.type == "attachment":
                        del self.contents[other.id]
                    else:
                        other.parent = c.parent

    def add_attachment(self, page: str, name: str, data: bytes, media_type: str = "application/octet-stream") -> str:
        with self.lock:
            now = self.clock()
            c = Content(self._id(), "attachment", name, self.contents[page].space, "", 1, now, now, page,
                        data=data, media_type=media_type)
            self.contents[c.id] = c
            return c.id

    def update_attachment(self, aid: str, data: bytes) -> None:
        with self.lock:
            c = self.contents[aid]
            c.data, c.version, c.when = data, c.version + 1, self.clock()

    def throttle(self, count: int = 1, retry_after: int = 1) -> None:
        with self.lock:
            self._throttle += [retry_after] * count

    def count(self, path_part: str) -> int:
        with self.lock:
            return sum(1 for _, p in self.requests if path_part in p)

    # -- JSON ------------------------------------------------------------------------------
    def ancestors(self, c: Content) -> list[Content]:
        out, parent = [], c.parent if c.type != "attachment" else None
        while parent is not None and parent in self.contents:
            out.append(self.contents[parent])
            parent = self.contents[parent].parent
        return list(reversed(out))

    def user_json(self, username: str) -> dict:
        u = self.users.get(username) or User(username, f"unknown-{username}", username)
        return {"type": "known", "username": u.username, "userKey": u.key, "displayName": u.display,
                "_links": {"self": f"{self.url}/rest/api/user?key={u.key}"}}

    def content_json(self, c: Content, expand: set[str]) -> dict:
        if c.type == "attachment":
            page = self.contents.get(c.parent or "")
            webui = f"/pages/viewpageattachments.action?pageId={c.parent}&preview={quote('/' + c.title)}"
        else:
            page, webui = None, f"/spaces/{c.space}/pages/{c.id}/{quote(c.title.replace(' ', '+'))}"
        out: dict[str, Any] = {"id": c.id, "type": c.type, "status": "current", "title": c.title,
                               "_links": {"webui": webui, "self": f"{self.url}/rest/api/content/{c.id}"},
                               "_expandable": {}}
        if "version" in expand:
            out["version"] = {"number": c.version, "when": _iso(c.when), "by": self.user_json(c.author),
                              "minorEdit": False}
        if "ancestors" in expand:
            out["ancestors"] = [{"id": a.id, "type": a.type, "status": "current", "title": a.title}
                                for a in self.ancestors(c)]
        if "space" in expand:
            out["space"] = {"id": 1, "key": c.space, "name": self.spaces.get(c.space, c.space), "type": "global"}
        if "body.storage" in expand and c.type != "attachment":
            out["body"] = {"storage": {"value": c.body, "representation": "storage"}}
        if c.type == "attachment":
            out["extensions"] = {"mediaType": c.media_type, "fileSize": len(c.data), "comment": ""}
            out["_links"]["download"] = (f"/download/attachments/{c.parent}/{quote(c.title)}"
                                         f"?version={c.version}&modificationDate={int(c.when * 1000)}&api=v2")
            if "container" in expand and page is not None:
                out["container"] = {"id": page.id, "type": page.type, "status": "current", "title": page.title}
        return out

    # -- CQL -------------------------------------------------------------------------------
    _CLAUSE = re.compile(r'\s*(?:(space)\s*=\s*"?([^"\s]+)"?|(type)\s*=\s*(\w+)|(type)\s+in\s*\(([^)]*)\)'
                         r'|(lastmodified)\s*(>=|>|<=|<)\s*"(\d{4}-\d{2}-\d{2}(?: \d{2}:\d{2})?)")\s*', re.IGNORECASE)

    def search(self, cql: str) -> list[Content]:
        """Raises ValueError for CQL this fake does not understand (a 400)."""
        split = re.search(r"\s+order\s+by\s+", cql, re.IGNORECASE)
        text, order = (cql[:split.start()], cql[split.end():]) if split else (cql, "")
        preds: list[Callable[[Content], bool]] = []
        for clause in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE):
            m = self._CLAUSE.fullmatch(clause)
            if not m:
                raise ValueError(f"Could not parse cql : {cql}")
            if m.group(1):
                preds.append(lambda c, k=m.group(2): c.space == k)
            elif m.group(3):
                preds.append(lambda c, t=m.group(4): c.type == t)
            elif m.group(5):
                types = {t.strip().strip('"') for t in m.group(6).split(",")}
                preds.append(lambda c, ts=types: c.type in ts)
            else:
                op, value = m.group(8), m.group(9)
                fmt = "%Y-%m-%d %H:%M" if " " in value else "%Y-%m-%d"
                bound = datetime.strptime(value, fmt).replace(tzinfo=self.tz).timestamp()

                def minute(c: Content) -> float:  # lastmodified is compared to the minute
                    return datetime.fromtimestamp(c.when, self.tz).replace(second=0, microsecond=0).timestamp()

                cmp = {">=": lambda a, b: a >= b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b,
                       "<": lambda a, b: a < b}[op]
                preds.append(lambda c, cmp=cmp, b=bound, minute=minute: cmp(minute(c), b))
        found = [c for c in self.contents.values() if all(p(c) for p in preds)]
        if order:
            m = re.fullmatch(r"\s*(lastmodified|created)\s*(asc|desc)?\s*", order, re.IGNORECASE)
            if not m:
                raise ValueError(f"Could not parse cql : {cql}")
            key = (lambda c: (c.when, int(c.id))) if m.group(1).lower() == "lastmodified" else \
                (lambda c: (c.created, int(c.id)))
            found.sort(key=key, reverse=(m.group(2) or "asc").lower() == "desc")
        return found


def _paged(items: list, query: dict[str, str], path: str, default_limit: int = 25, cap: int = 200) -> tuple[list, dict]:
    start = int(query.get("start") or 0)
    limit = min(int(query.get("limit") or default_limit), cap)
    page = items[start:start + limit]
    links: dict[str, str] = {}
    if start + limit < len(items):
        links["next"] = f"{path}?{urlencode({**query, 'start': start + limit, 'limit': limit})}"
    return page, {"start": start, "limit": limit, "size": len(page), "_links": links}


class _Handler(BaseHTTPRequestHandler):
    site: FakeConfluence
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        with self.site.lock:
            self.site.requests.append(("GET", self.path))
            throttled = self.site._throttle.pop(0) if self.site._throttle else None
        if not self._authorised():
            return self._send(401, {"statusCode": 401, "message": "Authentication failed: the credentials are "
                                    "not valid", "reason": "Unauthorized"},
                              {"WWW-Authenticate": 'Basic realm="Protected"'})
        if throttled is not None:
            return self._send(429, {"statusCode": 429, "message": "Rate limit exceeded; try again later",
                                    "reason": "Too Many Requests"}, {"Retry-After": str(throttled)})
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        try:
            with self.site.lock:
                status, body = self._route(unquote(parts.path), query)
        except ValueError as exc:
            status, body = 400, {"statusCode": 400, "message": str(exc), "reason": "Bad Request"}
        self._send(status, body)

    def _authorised(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme == "Bearer":
            return value in self.site.tokens
        if scheme == "Basic":
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except ValueError:
                return False
            return self.site.passwords.get(user) == password
        return False

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if isinstance(body, bytes)
                         else "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _route(self, path: str, q: dict[str, str]) -> tuple[int, Any]:
        site = self.site
        not_found = (404, {"statusCode": 404, "message": "No content found", "reason": "Not Found"})
        expand = {e.strip() for e in q.get("expand", "").split(",") if e.strip()}
        if path == "/rest/api/search":
            sub = {e[len("content."):] for e in expand if e.startswith("content.")}
            found = site.search(q.get("cql", ""))
            cap = 50 if any(e.startswith("body") for e in sub) else 200
            page, meta = _paged(found, q, path, cap=cap)
            results = [{"content": site.content_json(c, sub), "title": c.title, "excerpt": "",
                        "url": site.content_json(c, set())["_links"]["webui"], "entityType": "content",
                        "lastModified": _iso(c.when)} for c in page]
            return 200, {"results": results, **meta, "totalSize": len(found), "cqlQuery": q.get("cql"),
                         "_links": {"base": site.url, "context": "", **meta["_links"]}}
        if m := re.fullmatch(r"/rest/api/content/(\d+)", path):
            c = site.contents.get(m.group(1))
            return (200, site.content_json(c, expand)) if c else not_found
        if m := re.fullmatch(r"/rest/api/content/(\d+)/restriction/byOperation(?:/read/(user|group))?", path):
            c = site.contents.get(m.group(1))
            if c is None:
                return not_found
            if c.id in site.forbidden_restrictions:
                return 403, {"statusCode": 403, "message": "Not permitted to view restrictions", "reason": "Forbidden"}
            users = [site.user_json(u) for u in c.read_users]
            groups = [{"type": "group", "name": g} for g in c.read_groups]
            if m.group(2):
                page, meta = _paged(users if m.group(2) == "user" else groups, q, path)
                return 200, {"results": page, **meta}
            lim = site.restriction_limit

            def block(items: list) -> dict:
                return {"results": items[:lim], "start": 0, "limit": lim, "size": len(items)}

            return 200, {"read": {"operation": "read", "restrictions": {"user": block(users), "group": block(groups)},
                                  "_expandable": {"content": f"/rest/api/content/{c.id}"}},
                         "update": {"operation": "update", "restrictions": {"user": block([]), "group": block([])},
                                    "_expandable": {"content": f"/rest/api/content/{c.id}"}},
                         "_links": {"base": site.url}}
        if m := re.fullmatch(r"/rest/api/content/(\d+)/child/attachment", path):
            if m.group(1) not in site.contents:
                return not_found
            atts = sorted((c for c in site.contents.values() if c.type == "attachment" and c.parent == m.group(1)),
                          key=lambda c: int(c.id))
            page, meta = _paged(atts, q, path, default_limit=50)
            return 200, {"results": [site.content_json(c, expand | {"container"}) for c in page], **meta}
        if m := re.fullmatch(r"/download/attachments/(\d+)/(.+)", path):
            for c in site.contents.values():
                if c.type == "attachment" and c.parent == m.group(1) and c.title == m.group(2):
                    return 200, c.data
            return not_found
        if m := re.fullmatch(r"/rest/api/space/([^/]+)", path):
            key = m.group(1)
            return (200, {"id": 1, "key": key, "name": site.spaces[key], "type": "global"}) \
                if key in site.spaces else not_found
        if m := re.fullmatch(r"/rest/api/space/([^/]+)/permissions", path):
            return (200, site.space_permissions[m.group(1)]) if m.group(1) in site.spaces else not_found
        if path in ("/rest/api/user", "/rest/api/user/memberof"):
            user = next((u for u in site.users.values()
                         if u.username == q.get("username") or u.key == q.get("key")), None)
            if user is None:
                return not_found
            if path == "/rest/api/user":
                return 200, site.user_json(user.username)
            page, meta = _paged([{"type": "group", "name": g} for g in sorted(user.groups)], q, path, 200)
            return 200, {"results": page, **meta}
        if m := re.fullmatch(r"/rest/api/group/([^/]+)/member", path):
            members = [site.user_json(u.username) for u in site.users.values() if m.group(1) in u.groups]
            page, meta = _paged(members, q, path, 200)
            return 200, {"results": page, **meta}
        return not_found

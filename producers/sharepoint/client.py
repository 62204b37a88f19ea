"""The SharePoint REST calls this source makes, through office365-rest-python-client.

Every call goes through :meth:`SharePointClient.call`, which turns the library's errors into
the ones the source acts on:

* 401/403 → :class:`ragstream.connector.ConnectorError` saying the credentials were refused;
* 429/503 (throttling) → wait for ``Retry-After`` (or back off when absent) and try again,
  within the retry budget (``RAGSTREAM_RETRY_BUDGET_S``, :class:`ragstream.failures.RetryBudget`);
  a spent budget → :class:`Throttled` (transient: the next sync tries again);
* a connection that fails → backoff within the same budget, then :class:`Unreachable`;
* ``SPInvalidChangeTokenException`` (-2130575172) → :class:`InvalidChangeToken` (the source
  falls back to a full resync).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator, TypeVar

from ragstream.connector import ConnectorError
from ragstream.failures import RetryBudget, Transient
from ragstream.logging import get_logger

log = get_logger(__name__)

T = TypeVar("T")

INVALID_CHANGE_TOKEN = "-2130575172"
THROTTLED = (429, 503)
#: Item fields read for a listing or a change (no content).
ITEM_FIELDS = ["Id", "FileRef", "FileLeafRef", "FileSystemObjectType", "Modified",
               "File/ETag", "File/Length", "File/TimeLastModified", "File/Name"]


class InvalidChangeToken(Exception):
    """The change token is older than the change log or not this library's: resync in full."""


class Throttled(Transient):
    """SharePoint kept throttling (429/503) beyond the retry budget."""


class Unreachable(Transient):
    """SharePoint did not answer within the retry budget."""


def _value(v: Any) -> Any:
    return getattr(v, "value", v)


class SharePointClient:
    """One document library of one site. ``token`` returns a bearer token (called per context)."""

    def __init__(self, site_url: str, library: str, token: Callable[[], str], *, retry_budget_s: float,
                 page_size: int = 200, timeout_s: float = 120.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, verify: str | None = None) -> None:
        self.site_url, self.library_title = site_url.rstrip("/"), library
        self._token, self.retry_budget_s, self.page_size = token, retry_budget_s, page_size
        self.timeout_s, self._sleep, self._clock, self._verify = timeout_s, sleep, clock, verify
        #: How many throttled answers were waited out (tests and logs).
        self.throttle_waits = 0
        self._ctx: Any = None

    # -- plumbing -------------------------------------------------------------------------------
    def _context(self) -> Any:
        if self._ctx is None:
            from office365.sharepoint.client_context import ClientContext

            token = self._token()  # may raise ConnectorError (missing secret, refused sign-in)
            ctx = ClientContext(self.site_url).with_access_token(lambda: {"tokenType": "Bearer", "accessToken": token})
            if self._verify:
                from producers.sharepoint.auth import tls_session

                self._ctx = ctx.with_transport(timeout=(10, self.timeout_s), session=tls_session(self._verify))
            else:
                self._ctx = ctx.with_transport(timeout=(10, self.timeout_s))
        return self._ctx

    def reset(self) -> None:
        """Sign in again at the next call (a sync starts with it: tokens expire)."""
        self._ctx = None

    def _lib(self, ctx: Any) -> Any:
        return ctx.web.lists.get_by_title(self.library_title)

    def call(self, what: str, fn: Callable[[Any], T]) -> T:
        """Run ``fn(context)`` (which queues and executes its queries), retrying throttling
        and lost connections within the retry budget; ``what`` names the call in errors."""
        from office365.runtime.client_request_exception import ClientRequestException
        from requests import exceptions as rx

        budget = RetryBudget(self.retry_budget_s, clock=self._clock)
        while True:
            try:
                return fn(self._context())
            except ClientRequestException as exc:
                self._ctx = None  # a fresh context next: no query of a failed attempt lingers
                self._wait_or_raise(exc, what, budget)
            except (rx.ConnectionError, rx.Timeout, rx.ChunkedEncodingError) as exc:
                self._ctx = None
                if isinstance(exc, rx.SSLError):
                    raise ConnectorError(f"TLS to {self.site_url} failed: {exc}") from None
                delay = budget.next_delay()
                if not budget.spend():
                    raise Unreachable(f"SharePoint at {self.site_url} did not answer {what} within the retry "
                                      f"budget ({budget.budget_s:.0f} s): {type(exc).__name__}") from None
                log.warning("sharepoint unreachable, retrying", call=what, error=type(exc).__name__, delay_s=delay)
                self._sleep(delay)
            except BaseException:
                self._ctx = None
                raise

    def _wait_or_raise(self, exc: Any, what: str, budget: RetryBudget) -> None:
        """Raise what a refused request means, or wait out throttling (within the budget)."""
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        code = str(getattr(exc, "code", "") or "")
        if code.split(",")[0].strip() == INVALID_CHANGE_TOKEN:
            raise InvalidChangeToken(_message(exc)) from None
        if status in (401, 403):
            reason = _message(exc)
            raise ConnectorError(
                f"SharePoint at {self.site_url} refused the credentials ({what}: HTTP {status}"
                f"{': ' + reason if reason else ''}); check the source's auth settings (tenant, client id, "
                "secret or certificate, or the access token) and the app's permission on the site") from None
        if status not in THROTTLED:
            raise exc
        retry_after = _retry_after(response)
        delay = retry_after if retry_after is not None else budget.next_delay()
        if not budget.spend() or budget.elapsed_s + delay > budget.budget_s:
            raise Throttled(f"SharePoint kept answering HTTP {status} to {what} for {budget.elapsed_s:.0f} s "
                            f"({budget.attempts} attempt(s)); retry budget {budget.budget_s:.0f} s spent "
                            "(RAGSTREAM_RETRY_BUDGET_S)") from None
        self.throttle_waits += 1
        log.warning("sharepoint throttled", call=what, status=status, retry_after_s=delay)
        self._sleep(delay)

    # -- calls ----------------------------------------------------------------------------------
    def library(self) -> dict[str, Any]:
        """The library's Id, Title, ItemCount and CurrentChangeToken (a string)."""
        def run(ctx: Any) -> dict[str, Any]:
            lib = self._lib(ctx).get().select(["Id", "Title", "ItemCount", "CurrentChangeToken"]).execute_query()
            return {"id": lib.properties.get("Id"), "title": lib.properties.get("Title"),
                    "item_count": lib.properties.get("ItemCount"),
                    "change_token": lib.current_change_token.StringValue}
        return self.call("the library", run)

    def items(self) -> list[dict[str, Any]]:
        """Every item of the library (files and folders, no content), following ``__next``."""
        def run(ctx: Any) -> list[dict[str, Any]]:
            col = self._lib(ctx).items.select(ITEM_FIELDS).expand(["File"])
            # Pages follow SharePoint's __next links only. SharePoint ignores $skip on list
            # items (documented), so the library's $skip fallback — taken when a first page
            # comes back full without __next — would read that page again and again.
            col._can_offset_next = lambda: False
            col.get_all(page_size=self.page_size).execute_query()
            return [_item(i) for i in col]
        return self.call("the item listing", run)

    def item(self, item_id: int) -> dict[str, Any] | None:
        """One item (no content); None if it does not exist (any more)."""
        def run(ctx: Any) -> dict[str, Any] | None:
            it = self._lib(ctx).get_item_by_id(item_id).select(ITEM_FIELDS).expand(["File"])
            return _item(it.get().execute_query())
        return self._or_none(lambda: self.call(f"item {item_id}", run))

    def content(self, item_id: int) -> bytes | None:
        def run(ctx: Any) -> bytes:
            return self._lib(ctx).get_item_by_id(item_id).file.get_content().execute_query().value
        return self._or_none(lambda: self.call(f"the content of item {item_id}", run))

    def role_assignments(self, item_id: int) -> list[tuple[dict[str, Any], list[dict[str, Any]]]] | None:
        """(member, role definitions) of the item's effective role assignments; None if gone."""
        def run(ctx: Any) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
            col = self._lib(ctx).get_item_by_id(item_id).role_assignments
            col.expand(["Member", "RoleDefinitionBindings"]).get().execute_query()
            return [(dict(ra.member.properties), [dict(rd.properties) for rd in ra.role_definition_bindings])
                    for ra in col]
        return self._or_none(lambda: self.call(f"the permissions of item {item_id}", run))

    def changes(self, token: str) -> Iterator[list[dict[str, Any]]]:
        """The library's changes after ``token``, a page at a time (each change: type, item_id
        or None for a change of the library itself, token); stops at an empty page."""
        from office365.sharepoint.changes.query import ChangeQuery

        while True:
            def run(ctx: Any, start: str = token) -> list[dict[str, Any]]:
                query = ChangeQuery(Item=True, List=True, Add=True, Update=True, SystemUpdate=True,
                                    DeleteObject=True, Rename=True, Restore=True, Move=True,
                                    RoleAssignmentAdd=True, RoleAssignmentDelete=True,
                                    ChangeTokenStart=start, FetchLimit=str(max(self.page_size, 100)))
                col = self._lib(ctx).get_changes(query).execute_query()
                return [{"type": _value(c.properties.get("ChangeType")), "item_id": c.properties.get("ItemId"),
                         "token": c.change_token.StringValue} for c in col]
            page = self.call("the change log", run)
            if not page:
                return
            yield page
            token = page[-1]["token"]

    def _or_none(self, fn: Callable[[], T]) -> T | None:
        from office365.runtime.client_request_exception import ClientRequestException

        try:
            return fn()
        except ClientRequestException as exc:
            if getattr(getattr(exc, "response", None), "status_code", None) == 404:
                return None
            raise


def _item(it: Any) -> dict[str, Any]:
    props = it.properties
    f = props.get("File")
    fprops = f.properties if f is not None and hasattr(f, "properties") else {}
    return {"id": int(props.get("Id")), "ref": props.get("FileRef"), "name": props.get("FileLeafRef"),
            "is_file": _value(props.get("FileSystemObjectType")) in (0, None),
            "etag": fprops.get("ETag"), "length": int(fprops.get("Length") or 0),
            "modified": fprops.get("TimeLastModified") or props.get("Modified")}


def _retry_after(response: Any) -> float | None:
    from office365.runtime.retry import response_retry_after

    value = response_retry_after(response)
    return None if value is None else float(value)


def _message(exc: Any) -> str:
    """The server's one-line reason, never the request (which carries the token)."""
    msg = str(getattr(exc, "message", "") or "")
    if not msg:
        response = getattr(exc, "response", None)
        try:
            body = response.json() if response is not None else {}
            msg = str(body.get("error_description") or "") if isinstance(body, dict) else ""
        except ValueError:
            msg = ""
    return msg.strip().splitlines()[0][:300] if msg.strip() else ""

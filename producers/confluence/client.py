"""The Confluence REST calls this source makes, through atlassian-python-api, with the
project's failure rules.

Every call goes through :meth:`ConfluenceClient.call`:

* **Throttled or unavailable** (429, 502, 503, 504, a connection error) — waited out as
  ``Retry-After`` says (the :class:`ragstream.failures.RetryBudget` backoff when absent) and
  tried again until ``RAGSTREAM_RETRY_BUDGET_S`` is spent; then :class:`ConfluenceUnavailable`
  (a :class:`ragstream.failures.Transient`): the sync stops, the cursor keeps what was
  acknowledged, the next sync resumes. The library's own Retry-After sleep is switched off,
  so one budget governs.
* **401** — a :class:`ragstream.connector.ConnectorError` saying the credentials were refused
  and where they come from (never their value); **403** on the space — one saying the
  account may not read it.
* **404** — ``None`` from the call (a page deleted while we looked is an answer).

The library logs request headers (the credentials) and bodies at DEBUG: its logger is kept
at WARNING whatever the root logger's level.
"""

from __future__ import annotations

import logging
import time
from email.utils import parsedate_to_datetime
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

from ragstream.connector import ConnectorError
from ragstream.failures import RetryBudget, Transient, reason
from ragstream.logging import get_logger

from producers.confluence.config import ConfluenceConfig, client_kwargs

log = get_logger(__name__)

TRANSIENT_STATUS = frozenset({429, 502, 503, 504})
#: What a page is read with: its storage-format body, version, ancestors (restrictions
#: inherit from them) and space.
PAGE_EXPAND = "body.storage,version,ancestors,space"
#: What a search or listing result carries: no body (expanding bodies caps pages at 50).
RESULT_EXPAND = "content.version,content.ancestors,content.space,content.container"

logging.getLogger("atlassian").setLevel(logging.WARNING)


class ConfluenceUnavailable(Transient):
    """Confluence kept throttling or failing beyond the retry budget."""


class Forbidden(ConnectorError):
    """The account may not read this (a page's restrictions, a user's groups): fail closed."""


def status_of(exc: BaseException) -> int | None:
    """The HTTP status behind a requests or atlassian error, if any."""
    for e in (exc, getattr(exc, "reason", None), exc.__cause__, exc.__context__):
        response = getattr(e, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            return status
    return None


def retry_after_s(exc: BaseException) -> float:
    for e in (exc, getattr(exc, "reason", None)):
        response = getattr(e, "response", None)
        value = getattr(response, "headers", {}).get("Retry-After") if response is not None else None
        if value:
            try:
                return max(float(value), 0.0)
            except ValueError:
                try:
                    return max((parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds(), 0.0)
                except (TypeError, ValueError):
                    return 0.0
    return 0.0


def is_transient(exc: BaseException) -> bool:
    import requests

    if isinstance(exc, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
        return True
    return status_of(exc) in TRANSIENT_STATUS


class ConfluenceClient:
    """One space of one site."""

    def __init__(self, config: ConfluenceConfig, source_id: str, budget_s: float, *,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 timeout_s: int = 60) -> None:
        self.config, self.source_id, self.budget_s = config, source_id, budget_s
        self.sleep, self.clock, self.timeout_s = sleep, clock, timeout_s
        self._api: Any = None
        #: What was retried (tests, logs): [(operation, HTTP status or error type, delay s)].
        self.retries: list[tuple[str, str, float]] = []

    @property
    def api(self) -> Any:
        if self._api is None:
            from atlassian import Confluence

            self._api = Confluence(url=self.config.url, cloud=False, timeout=self.timeout_s,
                                   backoff_and_retry=False, retry_with_header=False,
                                   **client_kwargs(self.config, self.source_id))
        return self._api

    # -- plumbing -----------------------------------------------------------------------------
    def call(self, operation: str, fn: Callable[[Any], Any], *, budget_s: float | None = None,
             forbidden: str | None = None) -> Any:
        """``fn(api)`` with retries; None on 404. ``forbidden``: what a 403 means (a
        :class:`Forbidden` with that text); otherwise a 403 is a ConnectorError."""
        budget = RetryBudget(self.budget_s if budget_s is None else budget_s, clock=self.clock)
        while True:
            try:
                return fn(self.api)
            except ConnectorError:
                raise
            except Exception as exc:  # noqa: BLE001 - sorted below
                status = status_of(exc)
                if status == 404:
                    return None
                if status == 401:
                    raise ConnectorError(
                        f"source {self.source_id!r}: Confluence at {self.config.url} refused the credentials "
                        f"(401 Unauthorized) — {self.config.credential_origin()}: check the "
                        f"{'token (expired or revoked?)' if self.config.auth == 'token' else 'username and password'}"
                    ) from None
                if status == 403:
                    if forbidden is not None:
                        raise Forbidden(f"{forbidden} (403 Forbidden)") from None
                    raise ConnectorError(
                        f"source {self.source_id!r}: the account ({self.config.credential_origin()}) may not "
                        f"{operation} on {self.config.url} (403 Forbidden): grant it read access to space "
                        f"{self.config.space!r} (space permissions need 'Admin' on Data Center)") from None
                if not is_transient(exc):
                    raise
                if not budget.spend():
                    raise ConfluenceUnavailable(
                        f"source {self.source_id!r}: {operation} at {self.config.url} kept failing for "
                        f"{budget.elapsed_s:.0f} s over {budget.attempts} attempt(s) ({reason(exc)}); the retry "
                        "budget (RAGSTREAM_RETRY_BUDGET_S) is spent: the next sync resumes from the cursor") from exc
                delay = max(budget.next_delay(), retry_after_s(exc))
                what = str(status) if status else type(exc).__name__
                self.retries.append((operation, what, delay))
                log.warning("Confluence call retried", source=self.source_id, operation=operation, error=what,
                            delay_s=round(delay, 2), attempt=budget.attempts)
                self.sleep(delay)

    def _paged(self, operation: str, fetch: Callable[[Any, int], Any], **kw: Any) -> Iterator[dict]:
        """Every result of a paged collection (``start``/``limit``, ``_links.next``), one request
        at a time, each retried on its own."""
        start = 0
        while True:
            page = self.call(operation, lambda api, s=start: fetch(api, s), **kw)
            if not page:
                return
            results = page.get("results", [])
            yield from results
            if not page.get("_links", {}).get("next") or not results:
                return
            start += len(results)

    # -- reads --------------------------------------------------------------------------------
    def search(self, cql: str, *, budget_s: float | None = None) -> Iterator[dict]:
        """``GET /rest/api/search`` for ``cql``: results with their content's version,
        ancestors, space and container (no body)."""
        n = self.config.page_size
        return self._paged("search", lambda api, s: api.cql(cql, start=s, limit=n, expand=RESULT_EXPAND,
                                                              excerpt="none"), budget_s=budget_s)

    def page(self, content_id: str) -> dict | None:
        """A page or blog post with its storage body, version, ancestors and space; None if gone."""
        return self.call("read a page", lambda api: api.get_page_by_id(content_id, expand=PAGE_EXPAND))

    def read_restrictions(self, content_id: str) -> dict:
        """``…/restriction/byOperation``; Forbidden (fail closed) if it cannot be read."""
        got = self.call("read restrictions",
                        lambda api: api.get_all_restrictions_for_content(content_id),
                        forbidden=f"the restrictions of content {content_id} cannot be read")
        if not isinstance(got, dict):
            raise Forbidden(f"the restrictions of content {content_id} cannot be read (not found)")
        return got

    def restriction_subjects(self, content_id: str, kind: str) -> Iterator[dict]:
        """The rest of a read restriction's users or groups when byOperation truncated them."""
        n = self.config.page_size
        return self._paged("read restrictions", lambda api, s: api.get(
            f"rest/api/content/{content_id}/restriction/byOperation/read/{kind}", params={"start": s, "limit": n}),
            forbidden=f"the restrictions of content {content_id} cannot be read")

    def attachments(self, page_id: str) -> Iterator[dict]:
        n = self.config.page_size
        return self._paged("list attachments", lambda api, s: api.get_attachments_from_content(
            page_id, start=s, limit=n, expand="version,container"))

    def download(self, link: str) -> bytes | None:
        return self.call("download an attachment", lambda api: api.get(link, not_json_response=True))

    def space(self, *, budget_s: float | None = None) -> dict | None:
        return self.call("read the space", lambda api: api.get_space(self.config.space, expand="description.plain"),
                         budget_s=budget_s)

    def space_permissions(self) -> list[dict]:
        """``GET /rest/api/space/{key}/permissions`` (Data Center 9.1+; needs space admin)."""
        got = self.call("read the space permissions", lambda api: api.get_all_space_permissions(self.config.space))
        if got is None:
            raise ConnectorError(f"source {self.source_id!r}: space {self.config.space!r} has no permissions "
                                 f"resource at {self.config.url} (Confluence Data Center 9.1+ is needed)")
        return got if isinstance(got, list) else got.get("results", [])

    def user_by_key(self, user_key: str) -> dict | None:
        return self.call("read a user", lambda api: api.get("rest/api/user", params={"key": user_key}),
                         forbidden=f"user {user_key} cannot be looked up")

    def groups_of(self, user: str) -> Iterator[dict]:
        """``GET /rest/api/user/memberof`` for a user named as ``user_id`` says."""
        n, param = self.config.page_size, {"username": "username", "userKey": "key", "accountId": "accountId"}
        return self._paged("read a user's groups", lambda api, s: api.get(
            "rest/api/user/memberof", params={param[self.config.user_id]: user, "start": s, "limit": n}),
            forbidden=f"the groups of user {user} cannot be read")

    def members(self, group: str) -> Iterator[dict]:
        n = self.config.page_size
        return self._paged("read a group's members", lambda api, s: api.get_group_members(group, start=s, limit=n),
                           forbidden=f"the members of group {group} cannot be read")

"""Confluence source: the pages, blog posts and attachments of one space of a Confluence
Server / Data Center site as change events on ``rag.changes`` and permission changes on
``rag.acl``, through atlassian-python-api (Confluence's REST API, ``/rest/api``).

**Documents.** A page or blog post is a document, ``doc_id`` ``<source_id>:<content id>``:
the id never changes, so a rename (a title change) is a new version of the same document.
Its storage-format XHTML becomes Markdown-ish text (:mod:`producers.confluence.storage`),
the title as its first heading. An attachment of an indexed page is a document of its own,
``<source_id>:<page id>/<attachment id>``, its text through :mod:`producers.extract`
(Markdown, text, HTML, PDF, DOCX); other types are skipped with the reason kept for
``ragstream verify``, and one that cannot be read is dead-lettered to ``rag.dlq.ingest``.

**Changes.** An incremental sync asks CQL for ``lastmodified >= <position − overlap_s>``.
``lastmodified`` has minute precision in the site's time zone (``timezone``), so the query
reaches back ``overlap_s`` and what comes back at an (id, version) already published is not
read again. The position (the newest ``version.when`` seen) moves only when every event
before it was acknowledged. A **reconciliation** — the full listing of the space — runs
first, when the position is missing or invalid, and every ``reconcile_interval_s``: it
finds deletions (a deleted page never appears in a search), and reads every page's
restrictions and the space permissions again, since changing them changes no page's
``lastmodified``; a changed ACL goes to ``rag.acl`` alone (nothing re-embedded). Only what
differs from the cursor is published: a resync publishes no duplicates.

**Permissions** (:mod:`producers.confluence.permissions`). A reader needs the space's read
permission and must pass every read restriction of the page and of its ancestors
(restrictions inherit). Users are ``user:<directory>/<username>`` (or userKey / accountId,
setting ``user_id``), groups ``group:<directory>/<name>``; anonymous access is ``public``
only if ``anonymous_is_public``. Restrictions that cannot be read make the page (and its
attachments) skipped and unsearchable — fail closed — and are tried again at each pass.

**Throttling and sign-in.** 429 (and 502/503/504) answers are waited out as ``Retry-After``
says within ``RAGSTREAM_RETRY_BUDGET_S``, then the sync stops with a transient error and the
next resumes from the cursor. A personal access token (``auth = "token"``) or a username
with a password (``auth = "basic"``), read from an environment variable or a file the
sources file names; refused credentials (401) are a ConnectorError that says so.
"""

from producers.confluence.config import ConfluenceConfig
from producers.confluence.source import ConfluenceSource

CONNECTOR = ConfluenceSource

__all__ = ["CONNECTOR", "ConfluenceConfig", "ConfluenceSource"]

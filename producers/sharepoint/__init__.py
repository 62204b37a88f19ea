"""SharePoint producer: one document library of one site as change events on ``rag.changes``
and permission changes on ``rag.acl``, through office365-rest-python-client (SharePoint's
REST API, ``/_api``).

**Documents.** Each file of the library is a document; folders are not. ``doc_id`` is
``<source_id>:<list item id>`` — the item id never changes, so a rename or a move is a new
version of the same document (new title and URI), not a delete and an add. Text comes
through :mod:`producers.extract` (Markdown, text, HTML, PDF, DOCX); other types are skipped
with the reason kept for ``ragstream verify``; a file that cannot be read is dead-lettered
to ``rag.dlq.ingest`` (``ragstream dlq replay ingest`` re-reads it from the library).

**Changes.** The first sync lists the library (``items``, paged by ``__next``) after
reading its ``CurrentChangeToken``; later syncs ask ``getChanges`` (an ``SP.ChangeQuery``)
for what happened after the token kept in the cursor's ``position`` and re-read only the
items named there. An item whose file ETag and path are unchanged is not downloaded again:
only its role assignments are read, and if they differ the new ACL goes to ``rag.acl``
(nothing is re-embedded). A change of the library's own permissions re-reads the
permissions of every item. The token moves only when every event before it was
acknowledged (``cursor.advance``). A token SharePoint refuses (older than the ~60-day
change log, or of another list: ``SPInvalidChangeTokenException``, -2130575172) makes the
sync list the library again and publish only what differs from the cursor: no duplicates,
and items gone meanwhile are deleted.

**Permissions.** An item's effective role assignments (``RoleAssignments`` with ``Member``
and ``RoleDefinitionBindings`` expanded); a member may read when one of its roles carries
``ViewListItems``. Members become principals (``|`` and blanks are not allowed in one, so
names from SharePoint are %-encoded: whitespace, control characters, ``|`` and ``%`` as
``%XX``)::

    i:0#.f|membership|Alice@X.com                 user:<directory>/alice@x.com
    c:0t.c|tenant|<object id>   (security group)  group:<directory>/<object id>
    c:0o.c|federateddirectoryclaimprovider|<id>   group:<directory>/<id>     (Microsoft 365 group)
    SharePoint group "Eng Members"                group:sharepoint/<host>/<site path>/Eng%20Members
    Everyone, Everyone except external users      public if everyone_is_public, else
                                                  group:sharepoint-claim/<encoded login name>
    any other login name                          user:|group:sharepoint-claim/<encoded login name>

``<directory>`` (setting ``directory``, default ``entra``) is the alias of the tenant's
OIDC issuer in the API's auth file, whose users and groups are ``user:<alias>/<name>`` and
``group:<alias>/<group>``: a caller signed in through Entra ID (``preferred_username`` =
UPN, ``groups`` = object ids) then holds exactly these principals. SharePoint groups are
not expanded: a caller holds ``group:sharepoint/…`` only if the auth side grants it.

**Throttling and sign-in.** 429/503 answers are waited out as ``Retry-After`` says (backoff
when absent) within ``RAGSTREAM_RETRY_BUDGET_S``; then the sync stops with a transient
error and the next one resumes from the cursor. App-only sign-in (client secret or
certificate, MSAL client credentials) or a delegated access token; secrets come from an
environment variable or a file named in the sources file, never from the file itself, and
refused credentials are a ConnectorError that says so.
"""

from producers.sharepoint.source import SharePointConfig, SharePointSource

CONNECTOR = SharePointSource

__all__ = ["CONNECTOR", "SharePointConfig", "SharePointSource"]

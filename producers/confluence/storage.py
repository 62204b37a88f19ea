"""Confluence storage format (XHTML with ``ac:`` / ``ri:`` elements) → text, through
:mod:`producers.extract`'s HTML path so the chunker sees the same Markdown-ish structure as
for every other source.

Before that, what HTML parsers get wrong or what is not the page's text is handled:
``<![CDATA[…]]>`` bodies (code and no-format macros) become escaped text in a ``<pre>``;
macro parameters (``ac:parameter``: colours, ids, layout) and placeholders are dropped;
links to pages and users keep their visible text, or the page title / user they name.
"""

from __future__ import annotations

import html
import re

from producers.extract import extract

_CDATA = re.compile(r"<!\[CDATA\[(.*?)\]\]>", re.DOTALL)
_DROP = re.compile(r"<(ac:parameter|ac:placeholder)\b[^>]*?(?:/>|>.*?</\1>)", re.DOTALL)
_PAGE_REF = re.compile(r'<ri:page\b[^>]*?ri:content-title="([^"]*)"[^>]*/?>')
_USER_REF = re.compile(r'<ri:user\b[^>]*?ri:(?:username|userkey|account-id)="([^"]*)"[^>]*/?>')


def storage_to_text(storage: str, title: str) -> str:
    """The page's text, its title as the first heading."""
    body = _CDATA.sub(lambda m: f"<pre>{html.escape(m.group(1))}</pre>", storage or "")
    body = _DROP.sub("", body)
    body = _PAGE_REF.sub(lambda m: f" {m.group(1)} ", body)
    body = _USER_REF.sub(lambda m: f" @{m.group(1)} ", body)
    text = extract(f"<h1>{html.escape(title)}</h1>\n{body}".encode("utf-8"), "text/html")
    return text.strip()

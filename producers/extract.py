"""Text extraction: bytes of a document → text, with structure kept as Markdown.

One place for every producer (file system, SharePoint, S3, ...). HTML, PDF and DOCX become
Markdown-ish text (headings as ``#``, list items as ``-``, tables as ``|`` rows) so the
chunker sees one structure format whatever the source.

Two kinds of failure, on purpose:

* :class:`UnsupportedContent` — not a document we index (an image, a binary blob named
  ``.txt``): the producer skips it with the reason logged and counted;
* :class:`ExtractionError` — a document we should index but cannot read (a corrupt PDF):
  the producer dead-letters it so it can be replayed once fixed.
"""

from __future__ import annotations

import io
from pathlib import PurePath

CONTENT_TYPES = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}


class UnsupportedContent(Exception):
    """Not something ragstream indexes; skip it (the message says why)."""


class ExtractionError(Exception):
    """A supported document that could not be read; dead-letter it (the message says why)."""


def content_type_for(name: str) -> str | None:
    return CONTENT_TYPES.get(PurePath(name).suffix.lower())


def extract(data: bytes, content_type: str) -> str:
    """Return the document's text; raise UnsupportedContent or ExtractionError."""
    if content_type in ("text/plain", "text/markdown"):
        return _text(data)
    if content_type == "text/html":
        return _html(_text(data))
    if content_type == "application/pdf":
        return _pdf(data)
    if content_type == CONTENT_TYPES[".docx"]:
        return _docx(data)
    raise UnsupportedContent(f"content type {content_type!r} is not supported "
                             f"(supported: {', '.join(sorted(set(CONTENT_TYPES.values())))})")


def _text(data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise UnsupportedContent("binary content (NUL bytes) in a file named as text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnsupportedContent(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _html(html: str) -> str:
    from bs4 import BeautifulSoup
    from markdownify import MarkdownConverter

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "head"]):
        tag.decompose()  # their text is not the document's
    return MarkdownConverter(heading_style="ATX").convert_soup(soup).strip()


def _pdf(data: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise ExtractionError("the PDF is encrypted; ragstream cannot read it without the password")
        pages = [page.extract_text() or "" for page in reader.pages]
    except ExtractionError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise ExtractionError(f"cannot read PDF: {type(exc).__name__}: {exc}") from None
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text and pages:
        raise ExtractionError("the PDF has no extractable text (scanned images need OCR, which ragstream does not do)")
    return text


def _docx(data: bytes) -> str:
    import zipfile

    from docx import Document
    from docx.table import Table

    try:
        doc = Document(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ExtractionError(f"cannot read DOCX: {type(exc).__name__}: {exc}") from None
    out: list[str] = []
    for item in doc.iter_inner_content():
        if isinstance(item, Table):
            rows = [[cell.text.strip().replace("|", "\\|") for cell in row.cells] for row in item.rows]
            if rows:
                out.append("\n".join(
                    ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
                    + ["| " + " | ".join(r) + " |" for r in rows[1:]]
                ))
            continue
        text = item.text.strip()
        if not text:
            continue
        style = (item.style.name if item.style is not None else "") or ""
        if style.startswith("Heading") and style[7:].strip().isdigit():
            out.append("#" * min(int(style[7:]), 6) + " " + text)
        elif style == "Title":
            out.append("# " + text)
        elif "List" in style:
            out.append("- " + text)
        else:
            out.append(text)
    return "\n\n".join(out)

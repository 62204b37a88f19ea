"""Text extraction: bytes of a document → text, with structure kept as Markdown.

One place for every producer (file system, SharePoint, S3, ...). HTML, PDF and DOCX become
Markdown-ish text (headings as ``#``, list items as ``-``, tables as ``|`` rows) so the
chunker sees one structure format whatever the source.

Two kinds of failure, on purpose:

* :class:`UnsupportedContent` — not a document we index (an image, a binary blob named
  ``.txt``): the producer skips it with the reason logged and counted;
* :class:`ExtractionError` — a document we should index but cannot read (a corrupt PDF):
  the producer dead-letters it so it can be replayed once fixed.

Real files are messy, and none of that is a reason to stop: text that is not UTF-8 is
decoded in the encoding charset-normalizer finds (or UTF-8 with U+FFFD replacements), and
HTML nested too deeply for BeautifulSoup/markdownify (a RecursionError) falls back to the
plain text of the page, collected by the standard library's streaming parser.
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


_BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
         (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))


_LEGACY = ["cp1252", "cp1250", "cp1251", "cp1253", "cp1254", "cp1255", "cp1256", "cp1257", "iso8859_15",
           "iso8859_2", "koi8_r", "shift_jis", "euc_jp", "gb18030", "big5", "euc_kr"]


def _text(data: bytes) -> str:
    for bom, encoding in _BOMS:  # a BOM says what the bytes are (UTF-16 text has NUL bytes)
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    if b"\x00" in data[:8192]:
        raise UnsupportedContent("binary content (NUL bytes) in a file named as text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    # Only the legacy encodings documents are really written in: on short samples the
    # detector otherwise prefers exotic code pages that decode anything.
    best = from_bytes(data[:1_000_000], cp_isolation=_LEGACY).best()  # a sample: cost grows with size
    if best is not None and best.encoding not in ("utf_8", "utf_8_sig"):
        try:
            return data.decode(best.encoding)
        except (UnicodeDecodeError, LookupError):
            pass
    return data.decode("utf-8", errors="replace")  # mostly UTF-8 with a few bad bytes


#: Tags whose text is not the document's.
_HIDDEN = ("script", "style", "noscript", "template", "head")


def _html(html: str) -> str:
    from bs4 import BeautifulSoup
    from markdownify import MarkdownConverter

    try:
        soup = BeautifulSoup(html, "html.parser")
        for tag in soup(list(_HIDDEN)):
            tag.decompose()
        return MarkdownConverter(heading_style="ATX").convert_soup(soup).strip()
    except RecursionError:
        # markdownify (and parts of bs4) recurse once per nesting level; a page nested
        # thousands deep loses its Markdown structure but not its text.
        return _html_plain_text(html)


def _html_plain_text(html: str) -> str:
    """The visible text of an HTML page, without recursion: one paragraph per block element."""
    from html.parser import HTMLParser

    blocks = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article",
              "table", "ul", "ol", "pre", "blockquote", "hr"}

    class Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.parts: list[str] = []
            self.hidden = 0

        def handle_starttag(self, tag: str, attrs: object) -> None:
            if tag in _HIDDEN:
                self.hidden += 1
            elif tag in blocks:
                self.parts.append("\n\n")

        def handle_endtag(self, tag: str) -> None:
            if tag in _HIDDEN:
                self.hidden = max(self.hidden - 1, 0)
            elif tag in blocks:
                self.parts.append("\n\n")

        def handle_data(self, data: str) -> None:
            if not self.hidden:
                self.parts.append(data)

    parser = Text()
    parser.feed(html)
    parser.close()
    paragraphs = (" ".join(p.split()) for p in "".join(parser.parts).split("\n\n"))
    return "\n\n".join(p for p in paragraphs if p)


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

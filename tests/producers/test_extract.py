import io

import pytest

from producers.extract import CONTENT_TYPES, ExtractionError, UnsupportedContent, content_type_for, extract


def test_content_types_by_extension():
    assert content_type_for("a/b/Report.PDF") == "application/pdf"
    assert content_type_for("notes.md") == "text/markdown"
    assert content_type_for("photo.png") is None


def test_text_and_binary_named_as_text():
    assert extract("héllo\n".encode(), "text/plain") == "héllo\n"
    with pytest.raises(UnsupportedContent, match="NUL bytes"):
        extract(b"\x00\x01binary", "text/plain")
    assert extract(b"", "text/plain") == ""


def test_text_that_is_not_utf8_is_decoded_not_skipped():
    german = "Grüße aus Köln: Übermäßige Größe, ça va?"
    assert extract(german.encode("cp1252"), "text/plain") == german
    assert extract("Привет мир, как дела у тебя сегодня".encode("cp1251"), "text/plain") == (
        "Привет мир, как дела у тебя сегодня")
    assert extract("Größe und Maß".encode("utf-16"), "text/plain") == "Größe und Maß"  # BOM, NUL bytes
    # Mostly UTF-8 with a stray byte: still text, nothing raised.
    assert "caf" in extract("a café ".encode() + b"\xff" + " end".encode(), "text/plain")


def test_html_nested_too_deeply_for_markdownify_falls_back_to_plain_text():
    import sys

    depth = sys.getrecursionlimit() * 2
    html = ("<html><head><style>p {}</style></head><body><h1>Deep</h1>" + "<div><span>" * depth
            + "the innermost sentence" + "</span></div>" * depth + "<p>after it</p></body></html>")
    text = extract(html.encode(), "text/html")
    assert text.split("\n\n") == ["Deep", "the innermost sentence", "after it"]
    assert "p {}" not in text


def test_html_keeps_structure_as_markdown():
    html = b"<h1>Title</h1><p>Para <b>one</b>.</p><ul><li>a</li><li>b</li></ul><script>x()</script>"
    text = extract(html, "text/html")
    assert text.startswith("# Title")
    assert "* a" in text or "- a" in text
    assert "x()" not in text


def test_pdf_text_and_corrupt_pdf():
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf)
    c.drawString(72, 750, "Revenue grew in every region.")
    c.save()
    assert "Revenue grew in every region." in extract(buf.getvalue(), "application/pdf")
    with pytest.raises(ExtractionError, match="cannot read PDF"):
        extract(b"%PDF-1.4\nnot really a pdf", "application/pdf")


def test_docx_headings_lists_and_tables():
    from docx import Document

    doc = Document()
    doc.add_heading("Policy", level=1)
    doc.add_paragraph("Intro text.")
    doc.add_paragraph("first item", style="List Bullet")
    table = doc.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "plan", "limit"
    table.cell(1, 0).text, table.cell(1, 1).text = "team", "100"
    buf = io.BytesIO()
    doc.save(buf)
    text = extract(buf.getvalue(), CONTENT_TYPES[".docx"])
    assert text.split("\n\n")[:3] == ["# Policy", "Intro text.", "- first item"]
    assert "| plan | limit |\n|---|---|\n| team | 100 |" in text
    with pytest.raises(ExtractionError, match="cannot read DOCX"):
        extract(b"PK not a zip", CONTENT_TYPES[".docx"])


def test_unknown_type():
    with pytest.raises(UnsupportedContent, match="not supported"):
        extract(b"x", "image/png")

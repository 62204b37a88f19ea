"""Structure-aware, token-bounded chunking with content-addressed chunk ids.

Input is Markdown-ish text (what :mod:`producers.extract` produces). The text is parsed into
blocks — headings, paragraphs, lists, tables, code fences — and each block becomes a
chunk's body, so headings, list and table boundaries are respected. Two rules keep an
edit local, which is what makes incremental re-embedding cheap:

* where one chunk ends depends only on the block itself (its kind and size), never on how
  much text came before, so inserting a sentence cannot shift every later boundary;
* a chunk's id is ``sha256(doc_id, text, n)`` where ``n`` counts identical earlier texts,
  so unchanged chunks keep their ids wherever they move.

Blocks too small to stand alone (under ``min_tokens``) are carried into the next block of
the same section; blocks too large are split at sentence (tables: row) boundaries, then at
words, and a "word" longer than :data:`WORD_MAX_CHARS` (a minified script, a base64 blob, a
megabyte line without spaces) gets a space every 100 characters first: the tokenizer would
read it as one unknown token, and chunks are bounded in characters too (``max_chars``), so
every part of the text lands in a chunk of bounded size. Splitting counts each distinct word
once, so it is linear in the text's length. Each
chunk after the first in a section starts with the last ``overlap_tokens`` tokens of its
predecessor, so an edit re-embeds at most its own chunk and the next one.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Callable

from schemas.events import Chunk

CHUNKER_ID = "structural-v1"
TokenCounter = Callable[[str], int]

_HEADING = re.compile(r"^(#{1,6})\s+(.*\S)\s*$")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


#: Longer "words" are cut into pieces of this many characters (WordPiece tokenizers give up on
#: words over 100 characters and emit a single unknown token for them).
WORD_MAX_CHARS = 100


_LONG_WORD = re.compile(r"\S{%d,}" % (WORD_MAX_CHARS + 1))


def break_long_words(text: str) -> str:
    """Put a space every WORD_MAX_CHARS characters into longer "words", so the tokenizer
    reads them (instead of one unknown token) and chunk bounds hold."""
    if not _LONG_WORD.search(text):
        return text
    return _LONG_WORD.sub(lambda m: " ".join(m.group()[i:i + WORD_MAX_CHARS]
                                             for i in range(0, len(m.group()), WORD_MAX_CHARS)), text)


def words(text: str) -> int:
    """A tokenizer-free counter (whitespace words) for tests and as a fallback."""
    return len(text.split())


@dataclass
class Block:
    kind: str  # heading | paragraph | list | table | code
    text: str
    heading: str | None


def parse_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    heading: str | None = None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    buf: list[str] = []
    kind = "paragraph"

    def flush() -> None:
        nonlocal buf
        body = "\n".join(buf).strip()
        if body:
            blocks.append(Block(kind, body, heading))
        buf = []

    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("```"):
            flush()
            fence = [line]
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                fence.append(lines[i])
                i += 1
            if i < len(lines):
                fence.append(lines[i])
            kind, buf = "code", fence
            flush()
            kind = "paragraph"
            i += 1
            continue
        match = _HEADING.match(line)
        if match:
            flush()
            heading = match.group(2)
            blocks.append(Block("heading", line.strip(), heading))
            kind = "paragraph"
        elif not line.strip():
            flush()
            kind = "paragraph"
        else:
            this = "table" if line.lstrip().startswith("|") else "list" if _LIST_ITEM.match(line) else "text"
            if this == "table" and kind != "table":
                flush()
                kind = "table"
            elif this != "table" and kind == "table":
                flush()
                kind = "list" if this == "list" else "paragraph"
            elif this == "list" and kind != "list":
                flush()
                kind = "list"
            # a plain line right after a list item continues that item (Markdown's lazy lines)
            buf.append(line)
        i += 1
    flush()
    return _merge_adjacent_lists(blocks)


def _merge_adjacent_lists(blocks: list[Block]) -> list[Block]:
    """List items separated by blank lines are still one list."""
    out: list[Block] = []
    for b in blocks:
        if out and b.kind == "list" and out[-1].kind == "list" and out[-1].heading == b.heading:
            out[-1] = Block("list", out[-1].text + "\n" + b.text, b.heading)
        else:
            out.append(b)
    return out


@dataclass
class Chunker:
    count: TokenCounter = words
    max_tokens: int = 200
    overlap_tokens: int = 24
    min_tokens: int = 24

    def __post_init__(self) -> None:
        if not 0 <= self.overlap_tokens < self.max_tokens // 2:
            raise ValueError("overlap_tokens must be >= 0 and under half of max_tokens")

    @property
    def body_budget(self) -> int:
        return self.max_tokens - self.overlap_tokens

    @property
    def max_chars(self) -> int:
        """A chunk's body in characters at most (ordinary text is ~4-6 characters a token)."""
        return self.body_budget * 10

    def _over(self, text: str) -> bool:
        return len(text) > self.max_chars or self.count(text) > self.body_budget

    def chunk(self, doc_id: str, text: str) -> tuple[Chunk, ...]:
        units = self._units(parse_blocks(break_long_words(text)))
        chunks: list[Chunk] = []
        seen: dict[str, int] = {}
        prev: tuple[str, str | None] | None = None
        for body, heading in units:
            full = body
            if prev is not None and prev[1] == heading and self.overlap_tokens:
                tail = self._tail(prev[0])
                if tail:
                    full = f"{tail}\n{body}"
            n = seen.get(full, 0)
            seen[full] = n + 1
            chunks.append(Chunk(chunk_id=chunk_id(doc_id, full, n), ordinal=len(chunks), text=full,
                                heading=heading, tokens=self.count(full)))
            prev = (body, heading)
        return tuple(chunks)

    # -- units: block bodies within the token budget -------------------------------------
    def _units(self, blocks: list[Block]) -> list[tuple[str, str | None]]:
        units: list[tuple[str, str | None]] = []
        carry: list[str] = []
        carry_heading: str | None = None
        carry_is_headings = False
        for block in blocks:
            # A section change ends the carry, unless all it holds is headings (a title
            # right above a subsection): those lead the subsection instead of standing alone.
            if carry and block.heading != carry_heading and not carry_is_headings:
                units.append(("\n\n".join(carry), carry_heading))
                carry = []
            pieces = self._split(block) if self._over(block.text) else [block.text]
            for piece in pieces:
                if carry:
                    joined = "\n\n".join([*carry, piece])
                    if not self._over(joined):
                        piece, carry = joined, []
                    else:
                        units.append(("\n\n".join(carry), carry_heading))
                        carry = []
                # A heading or a small block does not stand alone: it leads the next one.
                if block.kind == "heading" or self.count(piece) < self.min_tokens:
                    carry_is_headings = block.kind == "heading" and (not carry or carry_is_headings)
                    carry, carry_heading = [piece], block.heading
                else:
                    units.append((piece, block.heading))
        if carry:
            units.append(("\n\n".join(carry), carry_heading))
        return units

    def _split(self, block: Block) -> list[str]:
        if block.kind == "table":
            rows = block.text.split("\n")
            header = rows[:2] if len(rows) > 2 and set(rows[1].replace("|", "").strip()) <= set("-: ") else rows[:1]
            return self._pack(rows[len(header):], sep="\n", prefix="\n".join(header))
        if block.kind in ("list", "code"):
            return self._pack(block.text.split("\n"), sep="\n")
        return self._pack(_SENTENCE_END.split(block.text), sep=" ")

    def _pack(self, parts: list[str], sep: str, prefix: str = "") -> list[str]:
        out: list[str] = []
        cur: list[str] = [prefix] if prefix else []
        for part in parts:
            for piece in self._hard_split(part):
                candidate = sep.join([*cur, piece]) if cur else piece
                if cur and cur != [prefix] and self._over(candidate):
                    out.append(sep.join(cur))
                    cur = [prefix, piece] if prefix else [piece]
                else:
                    cur.append(piece)
        if cur and cur != [prefix]:
            out.append(sep.join(cur))
        return out

    def _hard_split(self, text: str) -> list[str]:
        """Last resort for a single sentence longer than the budget: cut at words. Each
        distinct word is counted once; with a tokenizer that splits at whitespace first
        (WordPiece, BPE with whitespace pre-tokenization, :func:`words`) the per-word counts
        add up to the count of the joined text, so this is linear in the text's length."""
        if not self._over(text):
            return [text]
        budget, max_chars = self.body_budget, self.max_chars
        counts: dict[str, int] = {}
        out: list[str] = []
        cur: list[str] = []
        cur_tokens = cur_chars = 0
        for word in text.split():
            n = counts.get(word)
            if n is None:
                n = counts[word] = self.count(word)
            if cur and (cur_tokens + n > budget or cur_chars + 1 + len(word) > max_chars):
                out.append(" ".join(cur))
                cur, cur_tokens, cur_chars = [], 0, -1
            cur.append(word)
            cur_tokens += n
            cur_chars += 1 + len(word)
        if cur:
            out.append(" ".join(cur))
        return out

    def _tail(self, text: str) -> str:
        ws = text.split()
        k = min(len(ws), self.overlap_tokens)
        while k > 0 and (len(" ".join(ws[-k:])) > self.overlap_tokens * 10
                         or self.count(" ".join(ws[-k:])) > self.overlap_tokens):
            k -= 1
        return " ".join(ws[-k:]) if k else ""


def chunk_id(doc_id: str, text: str, occurrence: int) -> str:
    h = hashlib.sha256()
    for part in (doc_id, text, str(occurrence)):
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:32]

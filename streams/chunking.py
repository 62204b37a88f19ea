"""Structure-aware, token-bounded chunking with content-addressed chunk ids.

Input is Markdown-ish text (what :mod:`producers.extract` produces). The text is parsed into
blocks — headings, paragraphs, lists, tables, code fences — and blocks are packed into chunks
up to the token budget: a block is never split while it fits, a heading leads its section's
content (it stands alone only when it and the first piece of an oversized block do not fit
together), and small sections share a chunk (a new section starts a new chunk once the
current one is at least half full). Two rules keep an edit local, which is what makes
incremental re-embedding cheap:

* a block (or piece of a split block) of at least ``min_tokens`` whose content hash hits a
  fixed residue (about one in :data:`CUT_EVERY`) always ends its chunk — a content-defined
  cut point, as in rsync or FastCDC — so a boundary shifted by an edit (a paragraph that
  grew no longer fits, or shrank and pulls the next one in) falls back into place at the
  next cut point instead of moving every later boundary;
* a chunk's id is ``sha256(doc_id, text, n)`` where ``n`` counts identical earlier texts,
  so unchanged chunks keep their ids wherever they move.

Blocks too large are split at sentence (tables: row) boundaries, then at
words, and a "word" longer than :data:`WORD_MAX_CHARS` (a minified script, a base64 blob, a
megabyte line without spaces) gets a space every 100 characters first: the tokenizer would
read it as one unknown token, and chunks are bounded in characters too (``max_chars``), so
every part of the text lands in a chunk of bounded size. Splitting counts each distinct word
once, so it is linear in the text's length. A chunk that continues its predecessor's
section starts with the last ``overlap_tokens`` tokens of that predecessor. An edit
re-embeds the chunk holding it, the chunk before it when the edit lets that one take more
(a shrink, a deletion), and the chunks up to the next cut point.

``structural-v1`` (until 2026-11-26) made every block of ``min_tokens`` or more a chunk of
its own: on real documentation a median of 91 tokens of a 200-token budget
(``bench/results/chunk_sizes_before.json``).
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass
from typing import Callable

from schemas.events import Chunk

CHUNKER_ID = "structural-v2"
TokenCounter = Callable[[str], int]

_HEADING = re.compile(r"^(#{1,6})\s+(.*\S)\s*$")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


#: About one piece in this many is a content-defined cut point (see :meth:`Chunker._units`):
#: fewer cut points fill chunks better, more keep an edit's effect shorter.
CUT_EVERY = 8

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
        for body, heading, last_heading in units:
            full = body
            # a chunk that continues its predecessor's last section starts with its tail
            if prev is not None and prev[1] == heading and self.overlap_tokens:
                tail = self._tail(prev[0])
                if tail:
                    full = f"{tail}\n{body}"
            n = seen.get(full, 0)
            seen[full] = n + 1
            chunks.append(Chunk(chunk_id=chunk_id(doc_id, full, n), ordinal=len(chunks), text=full,
                                heading=heading, tokens=self.count(full)))
            prev = (body, last_heading)
        return tuple(chunks)

    # -- units: block bodies packed up to the token budget ---------------------------------
    def _units(self, blocks: list[Block]) -> list[tuple[str, str | None, str | None]]:
        """Pack consecutive pieces (of one section, or of small sections) into units of at most
        ``body_budget`` tokens.

        Greedy packing alone would let one edit shift every later boundary (a paragraph that
        grows no longer fits and pushes the next one on; one that shrinks pulls the next one
        in, and may itself move into the chunk before). A non-heading piece of at least
        ``min_tokens`` whose content hash is 0 modulo :data:`CUT_EVERY` therefore always ends
        its unit (a content-defined cut point, as in rsync or FastCDC): a shift caused by an
        edit stops at the next such piece, wherever the edit was.

        Each unit is ``(body, heading, last_heading)``: the section its first content (not
        heading) piece belongs to, which the chunk records, and the section it ends in,
        which decides whether the next chunk continues it (and so repeats its tail).
        """
        units: list[tuple[str, str | None, str | None]] = []
        cur: list[tuple[str, str | None, bool]] = []  # (piece, its section, is it a heading)

        def joined(items: list[tuple[str, str | None, bool]]) -> str:
            return "\n\n".join(piece for piece, _, _ in items)

        def emit(items: list[tuple[str, str | None, bool]]) -> None:
            content = [section for _, section, is_heading in items if not is_heading]
            units.append((joined(items), content[0] if content else items[-1][1], items[-1][1]))

        for block in blocks:
            # A new section ends a unit that is at least half full; a smaller one takes the
            # next section in (small sections are packed together, each keeping its heading).
            # Headings alone (a title right above a subsection) always lead what follows.
            if (cur and block.heading != cur[-1][1] and not all(h for _, _, h in cur)
                    and self.count(joined(cur)) >= self.body_budget // 2):
                emit(cur)
                cur = []
            pieces = self._split(block) if self._over(block.text) else [block.text]
            for piece in pieces:
                if cur and self._over(joined([*cur, (piece, None, False)])):
                    # Full: headings at the end of the unit move on with the content they lead.
                    lead = 0
                    while lead < len(cur) and cur[-1 - lead][2]:
                        lead += 1
                    if 0 < lead < len(cur):
                        emit(cur[:-lead])
                        cur = cur[-lead:]
                    if self._over(joined([*cur, (piece, None, False)])):
                        emit(cur)
                        cur = []
                cur.append((piece, block.heading, block.kind == "heading"))
                # A cut point ends its unit. Whether a piece is one depends on the piece alone
                # (its hash, and a size of at least min_tokens, so it never stands as a scrap),
                # never on what came before it: otherwise a shift could run past it.
                if block.kind != "heading" and is_cut_point(piece) and self.count(piece) >= self.min_tokens:
                    emit(cur)
                    cur = []
        if cur:
            emit(cur)
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


def is_cut_point(piece: str) -> bool:
    """Whether a piece always ends its chunk: decided by its own content alone (about one
    piece in :data:`CUT_EVERY`), so the same piece cuts in every version of a document."""
    return zlib.crc32(piece.encode("utf-8")) % CUT_EVERY == 0


def chunk_id(doc_id: str, text: str, occurrence: int) -> str:
    h = hashlib.sha256()
    for part in (doc_id, text, str(occurrence)):
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:32]

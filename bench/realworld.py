"""A corpus of real documents nobody here wrote, in mixed real-world sizes.

Taken from this machine's package documentation (``/usr/share/doc``): the ``large`` biggest
files ragstream can read (multi-megabyte HTML and Markdown) among ``small`` ordinary ones
(READMEs, release notes, licences under 40 KB), chosen deterministically (sorted paths) and
copied into a folder. The manifest (path, size, sha256) is written beside the results, so a
rerun on another machine can tell whether it measured the same files.

    .venv/bin/python bench/realworld.py DEST [--small 200] [--large 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from producers.extract import content_type_for  # noqa: E402

DOC_ROOT = Path("/usr/share/doc")
SMALL_MAX_BYTES = 40_000


def candidates(root: Path = DOC_ROOT) -> list[Path]:
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink() and content_type_for(p.name) is not None and p.stat().st_size > 0:
            out.append(p)
    return out


def assemble(dest: Path, small: int = 200, large: int = 3, root: Path = DOC_ROOT) -> list[dict]:
    files = candidates(root)
    if not files:
        raise SystemExit(f"no readable documents under {root}: install some packages' documentation")
    biggest = sorted(files, key=lambda p: (-p.stat().st_size, str(p)))[:large]
    smalls = [p for p in files if p.stat().st_size <= SMALL_MAX_BYTES and p not in biggest][:small]
    dest.mkdir(parents=True, exist_ok=True)
    manifest = []
    for p in [*biggest, *smalls]:
        rel = p.relative_to(root)
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, target)
        manifest.append({"path": str(rel), "bytes": p.stat().st_size,
                         "sha256": hashlib.sha256(p.read_bytes()).hexdigest()})
    return manifest


def extracted(small: int = 200, large: int = 3) -> tuple[list[dict], list[tuple[str, str]]]:
    """The corpus, assembled in a temporary folder and extracted as the producer does:
    (manifest, [(path, text)]); a file the extractor refuses is left out of the texts."""
    from producers.extract import extract

    texts: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        manifest = assemble(Path(tmp), small=small, large=large)
        for m in manifest:
            path = Path(tmp) / m["path"]
            try:
                texts.append((m["path"], extract(path.read_bytes(), content_type_for(path.name) or "text/plain")))
            except Exception:  # noqa: BLE001 - a file the extractor refuses is not counted
                continue
    return manifest, texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dest", type=Path)
    ap.add_argument("--small", type=int, default=200)
    ap.add_argument("--large", type=int, default=3)
    args = ap.parse_args()
    manifest = assemble(args.dest, args.small, args.large)
    total = sum(m["bytes"] for m in manifest)
    print(json.dumps({"files": len(manifest), "bytes": total, "largest": manifest[:args.large]}, indent=2))


if __name__ == "__main__":
    main()

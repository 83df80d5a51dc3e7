"""Export a task or mixture split for the Grain input path: ArrayRecord + metadata.json.

    python -m gqa_t5.export --task=kjv_span_corruption --split=train --split=validation \
      --out_dir=/data/grain                # -> /data/grain/kjv_span_corruption/{train,...}/

What is written is the task's precache part: what its SeqIO task yields just before
`seqio.CacheDatasetPlaceholder` (tokenized, no EOS). The postcache preprocessors (EOS,
span corruption with fresh noise each epoch) run in the Grain loader. Tasks of a TF-free
provider (`tasks.realtext`, `tasks.kjv`) are exported without TensorFlow through its
`tokenized_examples`; other tasks through SeqIO (`task.preprocess_precache`). Each split is
written to a temporary directory and renamed into place.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.metadata
import json
import pathlib
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

from gqa_t5 import errors, utils
from gqa_t5 import grain_format as fmt

PROVIDERS = ("tasks.realtext", "tasks.kjv")  # TF-free task providers, first match wins
_POSTCACHE_NAMES = {"span_corruption", "append_eos_after_trim"}


def find_provider(name: str, providers: Sequence[str] = PROVIDERS):
    """The first importable provider module whose TEXT_TASKS or MIXTURES has `name`."""
    for module in providers:
        try:
            mod = importlib.import_module(module)
        except ImportError:  # tasks.realtext lives on another branch until it is merged
            continue
        if name in getattr(mod, "TEXT_TASKS", {}) or name in getattr(mod, "MIXTURES", {}):
            return mod
    return None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _base_meta(task: str, split: str, lengths: dict, source: str) -> dict[str, Any]:
    return {
        "format_version": fmt.FORMAT_VERSION,
        "task": task,
        "split": split,
        "feature_lengths": {k: int(v) for k, v in lengths.items()},
        "source": source,
        "versions": {d: _version(d) for d in ("gqa-t5", "seqio", "grain", "array-record")},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def provider_task(mod, task: str, split: str, data_dir: str | None, lengths: dict | None):
    """(metadata, examples, vocabulary path) of a TF-free provider's task split."""
    t = mod.TEXT_TASKS[task]
    if split not in t.splits:
        raise ValueError(f"task {task!r} has no split {split!r} (has {list(t.splits)})")
    meta = _base_meta(task, split, lengths or dict(t.feature_lengths), f"provider:{mod.__name__}")
    meta.update(
        postcache=list(t.postcache),
        metric_fns=[fmt.callable_name(f) for f in t.metric_fns],
        postprocess_fn=fmt.callable_name(t.postprocess_fn) if t.postprocess_fn else None,
        headline_metric=t.headline_metric,
    )
    return meta, mod.tokenized_examples(task, split, data_dir), mod.vocabulary_path(data_dir)


def _postcache_names(task) -> list[str]:
    import seqio

    idx = [
        i for i, p in enumerate(task.preprocessors) if isinstance(p, seqio.CacheDatasetPlaceholder)
    ]
    if not idx:
        raise ValueError(
            f"SeqIO task {task.name!r} has no CacheDatasetPlaceholder: add one after "
            "seqio.preprocessors.tokenize so its precache part can be exported"
        )
    names = [getattr(p, "__name__", type(p).__name__) for p in task.preprocessors[idx[0] + 1 :]]
    unknown = [n for n in names if n not in _POSTCACHE_NAMES]
    if unknown:
        raise ValueError(
            f"SeqIO task {task.name!r} has postcache preprocessors {unknown} the Grain loader "
            f"does not implement (it has {sorted(_POSTCACHE_NAMES)})"
        )
    return names


def seqio_task(task_name: str, split: str, lengths: dict | None, module: str | None, seed: int):
    """(metadata, examples, vocabulary path) of a registered SeqIO task's precache split."""
    import seqio

    importlib.import_module(module or "tasks")
    task = seqio.get_mixture_or_task(task_name)
    vocab = task.output_features["targets"].vocabulary
    if lengths is None:
        import tasks

        known = {**getattr(tasks, "FEATURE_LENGTHS", {}), **tasks.kjv.FEATURE_LENGTHS}
        if task_name not in known:
            raise ValueError(f"no feature lengths known for {task_name!r}: pass --feature_lengths")
        lengths = known[task_name]
    meta = _base_meta(task_name, split, lengths, "seqio")
    meta.update(
        postcache=_postcache_names(task),
        metric_fns=[fmt.callable_name(f) for f in task.metric_fns],
        postprocess_fn=fmt.callable_name(task.postprocess_fn) if task.postprocess_fn else None,
        headline_metric=None,
    )
    try:
        meta["expected_examples"] = task.source.num_input_examples(split)
    except Exception:  # noqa: BLE001  (not every source knows its size)
        pass
    ds = task.source.get_dataset(split=split, shuffle=False, seed=seed)
    ds = task.preprocess_precache(ds, seed=seed)
    return meta, ds.as_numpy_iterator(), vocab.sentencepiece_model_file


def write_split(
    out_dir: pathlib.Path,
    meta: dict,
    examples: Iterator[dict],
    vocab_path: str,
    overwrite: bool = False,
    print_fn=print,
) -> pathlib.Path:
    """Write one split atomically (temp dir + rename); returns its directory."""
    from array_record.python.array_record_module import ArrayRecordWriter

    final = fmt.export_dir(out_dir, meta["task"], meta["split"])
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} exists: pass --overwrite to replace it")
    if not pathlib.Path(vocab_path).is_file():
        raise FileNotFoundError(f"vocabulary {vocab_path} not found; check the task's vocab path")
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in sorted(final.parent.glob(f".{meta['split']}.*")):  # mkdtemp's, below
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
            print_fn(f"  removed {stale}, a temporary left by an earlier killed export")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{meta['split']}.", dir=final.parent))
    try:
        writer = ArrayRecordWriter(str(tmp / fmt.DATA_FILE), "group_size:1")
        n, t0, last = 0, time.perf_counter(), 0.0
        total = meta.pop("expected_examples", None)
        for ex in examples:
            writer.write(fmt.encode_record(ex))
            n += 1
            now = time.perf_counter() - t0
            if now - last > 5:
                last = now
                eta = f", ETA {utils.format_eta((total - n) * now / n)}" if total else ""
                print_fn(f"  {meta['task']}/{meta['split']}: {n} examples, {n / now:.0f}/s{eta}")
        writer.close()
        if n == 0:
            raise ValueError(f"{meta['task']}/{meta['split']} is empty: nothing to export")
        shutil.copyfile(vocab_path, tmp / fmt.VOCAB_FILE)
        v = fmt.Vocabulary(tmp / fmt.VOCAB_FILE)
        meta.update(
            num_examples=n,
            data_bytes=(tmp / fmt.DATA_FILE).stat().st_size,
            vocabulary={
                "path": str(vocab_path),
                "sha256": fmt.sha256(tmp / fmt.VOCAB_FILE),
                "vocab_size": v.vocab_size,  # pieces + extra ids (sentinels count down from it)
                "extra_ids": v.extra_ids,
                "eos_id": v.eos_id,
            },
        )
        utils.write_json_atomic(tmp / fmt.META_FILE, meta)
        tmp.chmod(0o755)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    print_fn(f"  wrote {n} examples to {final} in {time.perf_counter() - t0:.1f}s")
    return final


def export(
    name: str,
    splits: Sequence[str],
    out_dir: str | pathlib.Path,
    *,
    feature_lengths: dict | None = None,
    source: str = "auto",
    module: str | None = None,
    data_dir: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
    print_fn=print,
) -> dict[str, list[str]]:
    """Export a task's or mixture's splits under `out_dir`; returns {task: [split dirs]}."""
    out = pathlib.Path(out_dir).expanduser().absolute()
    provider = find_provider(name) if source in ("auto", "provider") else None
    if source == "provider" and provider is None:
        raise ValueError(f"{name!r} is in no TF-free provider ({', '.join(PROVIDERS)})")
    if provider is not None and name in getattr(provider, "MIXTURES", {}):
        rates = {t: 1.0 for t in provider.MIXTURES[name]}
    elif provider is None and _is_seqio_mixture(name, module):
        import seqio

        mix = seqio.get_mixture_or_task(name)
        rates = {t.name: float(mix.get_rate(t)) for t in mix.tasks}
    else:
        rates = None
    written: dict[str, list[str]] = {}
    made: dict[str, int] = {}  # a mixture's lengths: the longest of its tasks'
    for task in rates or [name]:
        for split in splits:
            via = f"TF-free {provider.__name__}" if provider else "seqio"
            print_fn(f"exporting {task}/{split} ({via})")
            if provider is not None:
                meta, ex, vocab = provider_task(provider, task, split, data_dir, feature_lengths)
            else:
                meta, ex, vocab = seqio_task(task, split, feature_lengths, module, seed)
            for k, v in meta["feature_lengths"].items():
                made[k] = max(made.get(k, 0), v)
            path = write_split(out, meta, ex, vocab, overwrite, print_fn)
            written.setdefault(task, []).append(str(path))
    if rates:
        for split in splits:
            meta = _base_meta(name, split, feature_lengths or made, "mixture")
            meta.update(kind="mixture", tasks=rates)
            utils.write_json_atomic(fmt.export_dir(out, name, split) / fmt.META_FILE, meta)
    return written


def _is_seqio_mixture(name: str, module: str | None) -> bool:
    import seqio

    importlib.import_module(module or "tasks")
    return name in seqio.MixtureRegistry.names()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", required=True, help="task or mixture name")
    p.add_argument("--split", action="append", required=True)
    p.add_argument("--out_dir", required=True, help="GRAIN_DATA_DIR: <out_dir>/<task>/<split>/")
    p.add_argument(
        "--feature_lengths", default=None, help='JSON, e.g. \'{"inputs": 512, "targets": 114}\''
    )
    p.add_argument("--source", choices=("auto", "provider", "seqio"), default="auto")
    p.add_argument("--module", default=None, help="module registering the SeqIO task")
    p.add_argument("--data_dir", default=None, help="the TF-free provider's data directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument(
        "--verbose", action="store_true", help="also show known-harmless library warnings"
    )
    args = p.parse_args(argv)
    utils.setup_logging(args.verbose)

    def body() -> int:
        try:
            lengths = json.loads(args.feature_lengths) if args.feature_lengths else None
        except json.JSONDecodeError as e:
            raise errors.BadInput(
                f"--feature_lengths={args.feature_lengths!r} is not JSON ({e}); e.g. "
                '--feature_lengths=\'{"inputs": 512, "targets": 114}\''
            ) from None
        errors.check_writable_parent(
            pathlib.Path(args.out_dir).expanduser().absolute(), "--out_dir"
        )
        written = export(
            args.task,
            args.split,
            args.out_dir,
            feature_lengths=lengths,
            source=args.source,
            module=args.module,
            data_dir=args.data_dir,
            seed=args.seed,
            overwrite=args.overwrite,
        )
        n = sum(len(v) for v in written.values())
        print(f"summary: exported {n} split(s) of {args.task} to {args.out_dir}")
        return 0

    return errors.run_cli(
        "gqa-t5-export", body, list(sys.argv[1:] if argv is None else argv), args.verbose
    )


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console_main()

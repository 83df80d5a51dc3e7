"""Resumable pipeline stages: a directory each, a DONE.json when finished, a log always.

A stage whose `DONE.json` exists is skipped (its recorded result is returned). A stage that
fails keeps its partial outputs (a runner MODEL_DIR resumes from its last checkpoint),
writes the traceback to its log and raises `StageError` naming the stage and the log;
nothing of earlier stages is touched. Stages are locked (`flock` on `<stage>/.lock`), so
pipeline workers in several processes that share a stage (one conversion for every alpha of a
G) run it once: the second waits, then finds DONE.json and skips it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import pathlib
import time
import traceback
from collections.abc import Callable
from typing import Any

from gqa_t5 import utils

DONE, LOG, LOCK = "DONE.json", "log.txt", ".lock"


class StageError(RuntimeError):
    """A pipeline stage failed; the message names the stage and its log file."""


class StageMissing(StageError):
    """A stage has not run and the runner only collects (`collect_only`)."""


class StageRunner:
    """Runs stages in order with progress lines: [i] name ... done in Xs / skipped."""

    def __init__(
        self,
        root: pathlib.Path,
        print_fn: Callable[[str], None] = print,
        collect_only: bool = False,
    ):
        self.root = root
        self.collect_only = collect_only  # never run a stage: StageMissing instead
        self.print = print_fn
        self.count = 0
        self.ran: list[str] = []  # stages executed (not skipped) by this runner
        self.t0 = time.perf_counter()

    def run(self, name: str, fn: Callable[[pathlib.Path], dict[str, Any]]) -> dict[str, Any]:
        """Run `fn(stage_dir)` unless `<root>/<name>/DONE.json` exists; return its result."""
        self.count += 1
        directory = self.root / name
        done = directory / DONE
        if done.exists():  # the common case of a re-run: no lock, no directory created
            return self._skipped(name, done)
        if self.collect_only:
            raise StageMissing(f"stage {name!r} has not run (no {done})")
        directory.mkdir(parents=True, exist_ok=True)
        with _locked(directory / LOCK):
            if done.exists():  # another worker finished it while this one waited
                return self._skipped(name, done)
            return self._run(name, directory, fn)

    def _skipped(self, name: str, done: pathlib.Path) -> dict[str, Any]:
        self.print(f"[{self.count:>3}] {name}: done earlier, skipped")
        record = json.loads(done.read_text())
        old = record.get("root") or _recorded_root(record["result"], name)
        if old and old != str(self.root):  # the run was moved or brought back from elsewhere
            return _rebase(record["result"], old, str(self.root))
        return record["result"]

    def _run(self, name: str, directory: pathlib.Path, fn) -> dict[str, Any]:
        log_path = directory / LOG
        handler = logging.FileHandler(log_path, mode="a")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logging.getLogger().addHandler(handler)
        elapsed = self.elapsed()
        self.print(f"[{self.count:>3}] {name}: running (pipeline at {elapsed}) ...")
        t0 = time.perf_counter()
        try:
            result = fn(directory)
        except Exception as e:
            logging.error("stage %s failed:\n%s", name, traceback.format_exc())
            raise StageError(
                f"stage {name!r} failed ({type(e).__name__}: {e}); log: {log_path}"
            ) from e
        finally:
            logging.getLogger().removeHandler(handler)
            handler.close()
        seconds = time.perf_counter() - t0
        utils.write_json_atomic(
            directory / DONE,
            {"stage": name, "seconds": seconds, "root": str(self.root), "result": result},
        )
        self.ran.append(name)
        self.print(f"[{self.count:>3}] {name}: done in {seconds:.1f}s")
        return result

    def elapsed(self) -> str:
        return utils.format_eta(time.perf_counter() - self.t0)


def _recorded_root(result: Any, name: str) -> str | None:
    """The runner root a DONE.json without "root" was written under, from a path in it."""
    marker = f"/{name}/"
    for value in _strings(result):
        if marker in value + "/":
            return (value + "/")[: (value + "/").index(marker)]
    return None


def _strings(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _rebase(value: Any, old: str, new: str) -> Any:
    """Every path under `old` (a recorded runner root) moved to `new`."""
    if isinstance(value, str):
        return new + value[len(old) :] if value == old or value.startswith(old + "/") else value
    if isinstance(value, dict):
        return {k: _rebase(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_rebase(v, old, new) for v in value]
    return value


@contextlib.contextmanager
def _locked(path: pathlib.Path):
    """An exclusive advisory lock on `path`, held for the block (released if the process dies)."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)

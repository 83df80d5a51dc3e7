"""Resumable pipeline stages: a directory each, a DONE.json when finished, a log always.

A stage whose `DONE.json` exists is skipped (its recorded result is returned). A stage that
fails keeps its partial outputs (a runner MODEL_DIR resumes from its last checkpoint),
writes the traceback to its log and raises `StageError` naming the stage and the log;
nothing of earlier stages is touched.
"""

from __future__ import annotations

import json
import logging
import pathlib
import time
import traceback
from collections.abc import Callable
from typing import Any

from gqa_t5 import utils

DONE, LOG = "DONE.json", "log.txt"


class StageError(RuntimeError):
    """A pipeline stage failed; the message names the stage and its log file."""


class StageRunner:
    """Runs stages in order with progress lines: [i] name ... done in Xs / skipped."""

    def __init__(self, root: pathlib.Path, print_fn: Callable[[str], None] = print):
        self.root = root
        self.print = print_fn
        self.count = 0
        self.ran: list[str] = []  # stages executed (not skipped) by this runner
        self.t0 = time.perf_counter()

    def run(self, name: str, fn: Callable[[pathlib.Path], dict[str, Any]]) -> dict[str, Any]:
        """Run `fn(stage_dir)` unless `<root>/<name>/DONE.json` exists; return its result."""
        self.count += 1
        directory = self.root / name
        done = directory / DONE
        if done.exists():
            self.print(f"[{self.count:>3}] {name}: done earlier, skipped")
            return json.loads(done.read_text())["result"]
        directory.mkdir(parents=True, exist_ok=True)
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
        utils.write_json_atomic(done, {"stage": name, "seconds": seconds, "result": result})
        self.ran.append(name)
        self.print(f"[{self.count:>3}] {name}: done in {seconds:.1f}s")
        return result

    def elapsed(self) -> str:
        return utils.format_eta(time.perf_counter() - self.t0)

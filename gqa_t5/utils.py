"""Runner utilities: atomic JSON, progress lines, TensorBoard summaries, stop signals."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import signal
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import numpy as np


def write_json_atomic(path: str | os.PathLike, obj: Any) -> pathlib.Path:
    """Write JSON to a temp file beside `path`, then rename: readers never see half a file."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=2, sort_keys=True, default=_to_builtin) + "\n"
    return write_text_atomic(path, text)


def write_text_atomic(path: str | os.PathLike, text: str) -> pathlib.Path:
    """Write text to a temp file beside `path`, then rename; the mode follows the umask.

    (`mkstemp` creates files 0600, which other users could not read.)
    """
    from gqa_t5.errors import umask_mode

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, umask_mode())
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def append_jsonl(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Append one JSON line (flushed, so a killed run keeps every finished line)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True, default=_to_builtin) + "\n")
        f.flush()


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _to_builtin(x: Any) -> Any:
    if isinstance(x, np.generic | np.ndarray):
        return x.tolist()
    if hasattr(x, "__array__"):
        return np.asarray(x).tolist()
    return str(x)


class Progress:
    """Rates and ETA between log lines: steps/s, tokens/s (non-padding targets + inputs)."""

    def __init__(self, start_step: int, total_steps: int):
        self.total = total_steps
        self._t0, self._s0 = time.perf_counter(), start_step
        self._last_t, self._last_s, self._tokens = self._t0, start_step, 0

    def add_tokens(self, n: int) -> None:
        self._tokens += int(n)

    def rates(self, step: int) -> dict[str, float]:
        now = time.perf_counter()
        dt = max(now - self._last_t, 1e-9)
        steps_per_s = (step - self._last_s) / dt
        tokens_per_s = self._tokens / dt
        overall = (step - self._s0) / max(now - self._t0, 1e-9)
        eta = (self.total - step) / overall if overall > 0 else float("inf")
        self._last_t, self._last_s, self._tokens = now, step, 0
        return {"steps_per_sec": steps_per_s, "tokens_per_sec": tokens_per_s, "eta_sec": eta}


def format_eta(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


class SummaryWriter:
    """TensorBoard scalar event files, written by process 0 only.

    Uses the low-level `tf.summary.write` with the scalars plugin's metadata, which needs
    TensorFlow only (`tf.summary.scalar` needs the tensorboard package installed).
    """

    def __init__(self, logdir: str | os.PathLike, enabled: bool = True):
        self._writer = None
        if enabled:
            try:
                import tensorflow as tf
                from tensorflow.core.framework import summary_pb2
            except ImportError:  # a TF-free machine (Grain backend): JSON metrics only
                logging.info("no TensorFlow: TensorBoard summaries off (JSON metrics written)")
                return

            self._tf = tf
            self._meta = summary_pb2.SummaryMetadata(
                plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
            )
            self._writer = tf.summary.create_file_writer(str(logdir))

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        if self._writer is None:
            return
        tf = self._tf
        with self._writer.as_default():
            for k, v in values.items():
                if isinstance(v, int | float | np.floating | np.integer) and np.isfinite(v):
                    tf.summary.write(
                        k, tf.constant(float(v), tf.float32), step=step, metadata=self._meta
                    )
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


class StopSignals:
    """Turns SIGTERM / SIGINT into a flag the training loop polls (save, then exit cleanly)."""

    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
        self.received: int | None = None
        self._signals = signals
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.received = signum
        logging.warning(
            "received %s: saving a checkpoint, then exiting", signal.Signals(signum).name
        )

    def __enter__(self) -> StopSignals:
        for s in self._signals:
            try:
                self._previous[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread: leave the signal alone
                pass
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)


def setup_logging(verbose: bool = False) -> None:
    """Progress lines on stderr; known-harmless warnings only with `verbose`."""
    from gqa_t5.errors import setup_logging as _setup

    _setup(verbose)

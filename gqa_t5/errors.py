"""One error path for every entry point: exit codes, one-line messages, crash reports.

Exit codes (the README's table):
    0    done, or stopped by SIGTERM / Ctrl-C after saving a checkpoint
    1    runtime failure: disk full, NaN/Inf during training, corrupt data, a crash (bug)
    2    bad input or flags: unknown gin macro, wrong type, missing path, mismatched
         checkpoint, unwritable output directory, vocabulary too small
    130  Ctrl-C, 143 SIGTERM before training started (nothing is left behind)

Known failures print one line, `<prog>: error: <what, where, the fix>`. Anything else is a
bug: its traceback is saved to a file whose path is printed (and shown with --verbose).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import linecache
import logging
import os
import pathlib
import re
import shutil
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143


class GqaError(Exception):
    """A known failure with its exit code; the message says what, where and the fix."""

    exit_code = EXIT_FAILURE


class BadInput(GqaError, ValueError):
    """Bad flags, gin values, paths or checkpoints (exit 2)."""

    exit_code = EXIT_BAD_INPUT


class RunFailure(GqaError, RuntimeError):
    """A failure while running that is not the input's fault (exit 1)."""

    exit_code = EXIT_FAILURE


class Terminated(BaseException):
    """SIGTERM arrived before the run could stop cleanly (raised so cleanup code runs)."""


# Messages known to be harmless; hidden unless --verbose.
HARMLESS = re.compile(
    "|".join(
        (
            r"uncached FunctionDataset",
            r"Features not in `features_length` will be removed",
            r"Metadata file does not exist",
            r"No jax\.Array in TypeHandlerRegistry",
            r"cuInit",
            r"Unable to initialize backend",
            r"An NVIDIA GPU may be present on this machine",
            # Orbax logs each failed write from its threads, then raises the same error,
            # which is reported once; asyncio repeats it at exit.
            r"_SignalingThread\.run\(\) raised an exception",
            r"Future exception was never retrieved",
        )
    )
)
_PACKAGES = ("gqa_t5", "tasks", "gin")
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NOT_WRITABLE = (errno.EACCES, errno.EROFS, errno.EPERM)


class _HarmlessFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            if record.name == "asyncio" and "never retrieved" in record.getMessage():
                # Orbax's background writes that failed with the error the run already
                # reported (e.g. a full disk), logged later when their tasks are collected.
                return False
            return not HARMLESS.search(record.getMessage())
        except Exception:  # noqa: BLE001 - a bad log record must not hide the rest
            return True


def quiet_environment(argv: list[str]) -> bool:
    """Silence TensorFlow's C++ start-up lines (cuInit, oneDNN) unless --verbose; returns it."""
    verbose = "--verbose" in argv
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return verbose


def setup_logging(verbose: bool = False) -> None:
    """INFO progress lines on stderr; library chatter and known-harmless warnings hidden."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True
    )
    for noisy in ("absl", "jax._src", "orbax", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.WARNING)
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_HarmlessFilter())


def one_line(message: str) -> str:
    """The message on one line (gin and Orbax append indented context lines)."""
    parts = [
        p.strip()
        for p in str(message).splitlines()
        if p.strip() and set(p.strip()) != {"^"} and not p.strip().startswith("In call to")
    ]
    return " | ".join(parts)


def _raised_by_us(e: BaseException) -> bool:
    """Whether the innermost frame is a `raise` statement in gqa_t5, tasks or gin."""
    tb = e.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    parts = pathlib.Path(code.co_filename).resolve().parts
    line = linecache.getline(code.co_filename, tb.tb_lineno).strip()
    return any(p in parts for p in _PACKAGES) and line.startswith("raise")


def _os_failure(e: BaseException) -> tuple[int, str] | None:
    """(exit code, message) for a disk-full or unwritable-path error anywhere in the chain."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = str(e)
        if (isinstance(e, OSError) and e.errno in _NO_SPACE) or "No space left" in text:
            where = getattr(e, "filename", None) or "the output directory"
            return EXIT_FAILURE, (
                f"no space left on the device holding {where}; free some space or choose "
                "another output directory, then run the same command again"
            )
        if isinstance(e, OSError) and e.errno in _NOT_WRITABLE:
            where = getattr(e, "filename", None) or "the output path"
            return EXIT_BAD_INPUT, (
                f"cannot write {where} ({os.strerror(e.errno)}); choose a directory you can "
                "write to, or fix its permissions"
            )
        e = e.__cause__ or e.__context__
    return None


def classify(e: BaseException) -> tuple[int, str] | None:
    """(exit code, one-line message) for a known failure; None for a bug."""
    from gqa_t5.checkpoints import CheckpointError

    if isinstance(e, GqaError):
        return e.exit_code, one_line(str(e))
    if isinstance(e, CheckpointError):
        return EXIT_BAD_INPUT, one_line(str(e))
    failure = _os_failure(e)
    if failure is not None:
        return failure
    if isinstance(e, FloatingPointError | RuntimeError) and _raised_by_us(e):
        return EXIT_FAILURE, one_line(str(e))
    if isinstance(e, ValueError | TypeError | KeyError | OSError | ImportError | SyntaxError):
        if _raised_by_us(e):
            return EXIT_BAD_INPUT, one_line(str(e))
    return None


def save_crash_report(prog: str, e: BaseException, argv: list[str]) -> pathlib.Path:
    """Write the traceback and the command line to a file in the temp dir; return its path."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = pathlib.Path(tempfile.gettempdir()) / f"{prog}-crash-{stamp}-{os.getpid()}.txt"
    text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    path.write_text(f"command: {prog} {' '.join(argv)}\n\n{text}")
    return path


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_handled(handler: object) -> Iterator[None]:
    """SIGTERM goes to `handler` (a function, or signal.SIG_IGN) until the block ends; off
    the main thread, where handlers cannot be set, the block runs unchanged."""
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def sigterm_raises() -> contextlib.AbstractContextManager:
    """SIGTERM raises `Terminated` (so `finally` blocks clean up) until the block ends."""
    return sigterm_handled(_raise_terminated)


def run_cli(prog: str, body: Callable[[], int | None], argv: list[str], verbose: bool) -> int:
    """Run an entry point's body; map every failure to one line and an exit code."""
    try:
        with sigterm_raises():
            code = body()
        return EXIT_OK if code is None else int(code)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted (Ctrl-C); nothing half-written was kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print(f"{prog}: stopped by SIGTERM before training; nothing was kept", file=sys.stderr)
        return EXIT_TERMINATED
    except Exception as e:  # noqa: BLE001 - the one place every failure is reported
        known = classify(e)
        if known is not None:
            print(f"{prog}: error: {known[1]}", file=sys.stderr)
            return known[0]
        path = save_crash_report(prog, e, argv)
        if verbose:
            traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
        print(
            f"{prog}: error: unexpected {type(e).__name__}: {one_line(str(e))[:300]} "
            f"(a bug, not a bad flag: traceback saved to {path}; please report it)",
            file=sys.stderr,
        )
        return EXIT_FAILURE


@contextlib.contextmanager
def removed_unless_kept(
    directory: pathlib.Path, keep: Callable[[], bool] = lambda: False
) -> Iterator[None]:
    """Remove `directory` if this block created it and fails, unless `keep()` says otherwise.

    Entry points create their output directory only after the inputs are validated; a
    failure or signal before any result exists then leaves nothing behind.
    """
    existed = directory.exists()
    try:
        yield
    except BaseException:
        if not existed and directory.exists() and not keep():
            shutil.rmtree(directory, ignore_errors=True)
        raise


def remove_stale_temporaries(output: pathlib.Path, log: Callable[[str], None]) -> list[str]:
    """Remove `.<name>.tmp-*` / `.<name>.old-*` left beside `output` by a killed run."""
    removed = []
    if not output.parent.is_dir():
        return removed
    for pattern in (f".{output.name}.tmp-*", f".{output.name}.old-*"):
        for stale in sorted(output.parent.glob(pattern)):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
            removed.append(str(stale))
            log(f"removed {stale}, a temporary left by an earlier killed run of this output")
    return removed


def check_writable_parent(path: pathlib.Path, what: str) -> None:
    """BadInput unless `path` can be created: its nearest existing ancestor is writable."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise BadInput(f"{what} {path}: {probe} is a file, not a directory; choose another path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise BadInput(
            f"{what} {path} cannot be written ({probe} is read-only for this user); choose a "
            "directory you can write to"
        )


def umask_mode() -> int:
    """The mode a new file gets from the user's umask (0644 for the usual 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def check_vocab_size(model_vocab: int, task_vocab: int, task_name: str) -> None:
    """BadInput if VOCAB_SIZE cannot hold the task's ids; a warning if it is much larger."""
    if model_vocab < task_vocab:
        raise BadInput(
            f"VOCAB_SIZE={model_vocab} is smaller than the vocabulary of {task_name!r} "
            f"({task_vocab} ids); pass --gin.VOCAB_SIZE={_padded(task_vocab)}"
        )
    if model_vocab > 2 * task_vocab:
        logging.warning(
            "VOCAB_SIZE=%d is much larger than the vocabulary of %r (%d ids): most embedding "
            "rows are never used; pass --gin.VOCAB_SIZE=%d unless a checkpoint needs %d",
            model_vocab,
            task_name,
            task_vocab,
            _padded(task_vocab),
            model_vocab,
        )


def _padded(n: int, multiple: int = 128) -> int:
    return -(-n // multiple) * multiple


# Lines TensorFlow / XLA print from C++ at start-up on a machine without a GPU.
_NATIVE_NOISE = re.compile(
    r"absl::InitializeLog|oneDNN custom operations|cuda drivers|cuInit|cudart_stub|"
    r"Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered|"
    r"TF-TRT Warning|This TensorFlow binary is optimized|rebuild TensorFlow"
)


def _noise(line: bytes) -> bool:
    return bool(_NATIVE_NOISE.search(line.decode("utf-8", "replace")))


def filter_native_stderr() -> None:
    """Drop known-harmless C++ start-up lines from file descriptor 2 (TensorFlow, XLA).

    Python's logging cannot see them. fd 2 becomes a pipe read by a thread that forwards
    every other line; the pipe is drained at exit.
    """
    import atexit
    import threading

    original = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)

    def pump() -> None:
        with os.fdopen(read_fd, "rb", buffering=0) as src:
            pending = b""
            while chunk := src.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                out = [
                    ln + b"\n"
                    for ln in lines
                    if not _NATIVE_NOISE.search(ln.decode("utf-8", "replace"))
                ]
                if out:
                    os.write(original, b"".join(out))
            if pending and not _noise(pending):
                os.write(original, pending)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()

    def drain() -> None:
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's last write end: the pump sees EOF
        thread.join(timeout=5)

    atexit.register(drain)


def quiet_cli_start() -> None:
    """Called on import of gqa_t5: when run as a command without --verbose, hide start-up noise."""
    argv0 = os.path.basename(sys.argv[0]) if sys.argv else ""
    is_cli = argv0 == "-m" or argv0.startswith("gqa-t5-")
    if not is_cli or "--verbose" in sys.argv or os.environ.get("GQA_T5_VERBOSE"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        filter_native_stderr()
    except OSError:  # no fd 2 (a daemon): nothing to filter
        pass

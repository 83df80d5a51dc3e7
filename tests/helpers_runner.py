"""Shared pieces of the runner's end-to-end tests: tiny-task gin flags and subprocess runs."""

import os
import pathlib
import subprocess
import sys
import time

from gqa_t5 import testing

TESTS = pathlib.Path(__file__).parent
REPO = TESTS.parent
TASK_FLAGS = [
    "--gin_file=models/t5_1_1/tiny.gin",
    "--gin.MIXTURE_OR_TASK_NAME='tiny_reverse'",
    "--gin.MIXTURE_OR_TASK_MODULE='helpers_tiny_tasks'",
    "--gin.VOCAB_SIZE=64",
    "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 16}",
    "--gin.BATCH_SIZE=8",
]
PRETRAIN_FLAGS = TASK_FLAGS + [
    "--gin_file=runs/pretrain.gin",
    "--gin.LEARNING_RATE_FACTORS='constant'",
    "--gin.BASE_LEARNING_RATE=0.01",
]


def setup_tiny_tasks(directory: pathlib.Path) -> pathlib.Path:
    """Write the tiny task files and point helpers_tiny_tasks (in and out of process) at them."""
    d = testing.write_tiny_task_files(directory)
    os.environ["GQA_T5_TINY_TASK_DIR"] = str(d)
    testing.register_tiny_tasks(d)
    return d


def env() -> dict:
    return dict(
        os.environ,
        PYTHONPATH=f"{TESTS}{os.pathsep}{REPO}",
        JAX_PLATFORMS="cpu",
        TF_CPP_MIN_LOG_LEVEL="2",
    )


def popen(module: str, args: list[str], log: pathlib.Path) -> subprocess.Popen:
    """Start `python -m module args` with output to `log`."""
    f = open(log, "w")  # noqa: SIM115 (closed with the process by the caller's wait)
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env(),
        stdout=f,
        stderr=subprocess.STDOUT,
    )


def losses(model_dir: pathlib.Path) -> dict[int, float]:
    """Step -> loss from train_metrics.jsonl (the last record of a step wins)."""
    from gqa_t5 import utils

    path = model_dir / "train_metrics.jsonl"
    return {r["step"]: r["loss"] for r in utils.read_jsonl(path)} if path.exists() else {}


def wait_for(pred, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    """Poll `pred` until true; fail if the training subprocess exits first or time runs out."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        assert proc.poll() is None, "training exited early"
        time.sleep(0.05)
    raise AssertionError("timed out waiting for the training subprocess")


def sigkill_once_trained(proc: subprocess.Popen, model_dir: pathlib.Path, step: int = 7) -> None:
    """SIGKILL the training subprocess once it has logged `step` (a crash, no clean stop)."""
    import signal

    try:
        wait_for(lambda: max(losses(model_dir), default=0) >= step, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()

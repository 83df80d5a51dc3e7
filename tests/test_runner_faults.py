"""Faults: SIGKILL then restart reproduces an uninterrupted run's losses; SIGTERM saves and
exits 0; a NaN/Inf loss stops naming the step and keeps the last good checkpoint."""

import signal

import pytest
from helpers_runner import (
    PRETRAIN_FLAGS,
    losses,
    popen,
    setup_tiny_tasks,
    sigkill_once_trained,
    wait_for,
)

from gqa_t5 import checkpointing
from gqa_t5 import train as train_lib

# Dropout on, so the test also covers the per-step dropout keys across a restart.
FLAGS = PRETRAIN_FLAGS + ["--gin.LOG_EVERY=1", "--gin.DROPOUT_RATE=0.1"]


@pytest.fixture(scope="module", autouse=True)
def tasks(tmp_path_factory):
    setup_tiny_tasks(tmp_path_factory.mktemp("task"))


def _steps(model_dir):
    return checkpointing.CheckpointManager(model_dir / "checkpoints").all_steps()


def test_sigkill_then_restart_matches_uninterrupted(tmp_path):
    run = tmp_path / "killed"
    args = FLAGS + [f"--gin.MODEL_DIR='{run}'", "--gin.CHECKPOINT_PERIOD=3"]
    proc = popen("gqa_t5.train", args + ["--gin.TRAIN_STEPS=100000"], tmp_path / "a.log")
    sigkill_once_trained(proc, run)
    resume = max(_steps(run))
    before = losses(run)
    assert resume >= 6 and resume % 3 == 0
    end = resume + 4
    proc = popen("gqa_t5.train", args + [f"--gin.TRAIN_STEPS={end}"], tmp_path / "b.log")
    assert proc.wait(timeout=300) == 0, (tmp_path / "b.log").read_text()[-3000:]
    assert "resumed from" in (tmp_path / "b.log").read_text()
    ref = tmp_path / "reference"
    assert (
        train_lib.run_main(
            train_lib.train,
            FLAGS
            + [f"--gin.MODEL_DIR='{ref}'", "--gin.CHECKPOINT_PERIOD=3", f"--gin.TRAIN_STEPS={end}"],
            "ref",
        )
        == 0
    )
    want, got = losses(ref), losses(run)
    for step in range(1, end + 1):
        assert got[step] == pytest.approx(want[step], rel=1e-6, abs=1e-6), step
    for step in range(1, resume + 1):  # the killed run's own log agrees too
        assert before[step] == pytest.approx(want[step], rel=1e-6, abs=1e-6), step


def test_sigterm_saves_and_exits_cleanly(tmp_path):
    run = tmp_path / "term"
    proc = popen(
        "gqa_t5.train",
        FLAGS
        + [f"--gin.MODEL_DIR='{run}'", "--gin.TRAIN_STEPS=100000", "--gin.CHECKPOINT_PERIOD=1000"],
        tmp_path / "t.log",
    )
    try:
        wait_for(lambda: max(losses(run), default=0) >= 3, proc)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=120)
    finally:
        proc.kill()
    log = (tmp_path / "t.log").read_text()
    assert rc == 0, log[-3000:]
    assert "stopped by signal" in log
    (step,) = _steps(run)
    assert step >= 3 and step == max(losses(run))


def test_nan_loss_stops_naming_step_and_keeps_last_good_checkpoint(tmp_path, capsys):
    run = tmp_path / "nan"
    base = FLAGS + [f"--gin.MODEL_DIR='{run}'", "--gin.CHECKPOINT_PERIOD=2"]
    assert train_lib.run_main(train_lib.train, base + ["--gin.TRAIN_STEPS=4"], "t") == 0
    capsys.readouterr()
    # An infinite learning rate makes the parameters non-finite at the first resumed step.
    # No log step before the save at step 6: the check before saving must catch it.
    rc = train_lib.run_main(
        train_lib.train,
        base + ["--gin.TRAIN_STEPS=10", "--gin.BASE_LEARNING_RATE=1e999", "--gin.LOG_EVERY=100"],
        "t",
    )
    assert rc == 1
    assert "non-finite loss, gradient or parameters at step 5" in capsys.readouterr().err
    assert _steps(run) == [2, 4]
    assert max(losses(run)) == 4  # nothing logged from the bad steps either

"""End to end on a tiny learnable task: pre-train, checkpoint, resume, fine-tune from
INITIAL_CHECKPOINT_PATH, eval (metrics JSON) and infer (JSONL); bad paths and gin values."""

import json
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers_runner import PRETRAIN_FLAGS, REPO, TASK_FLAGS, env, losses, setup_tiny_tasks

from gqa_t5 import checkpointing, utils
from gqa_t5 import eval as eval_lib
from gqa_t5 import infer as infer_lib
from gqa_t5 import train as train_lib


def run(fn, args):
    return train_lib.run_main(fn, args, "test")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    setup_tiny_tasks(root / "task")
    pre = root / "pre"
    flags = PRETRAIN_FLAGS + [
        f"--gin.MODEL_DIR='{pre}'",
        "--gin.CHECKPOINT_PERIOD=20",
        "--gin.LOG_EVERY=5",
    ]
    assert run(train_lib.train, flags + ["--gin.TRAIN_STEPS=40"]) == 0
    first = losses(pre)
    assert run(train_lib.train, flags + ["--gin.TRAIN_STEPS=50"]) == 0
    ft = root / "ft"
    assert (
        run(
            train_lib.train,
            TASK_FLAGS
            + [
                "--gin_file=runs/finetune.gin",
                f"--gin.MODEL_DIR='{ft}'",
                f"--gin.INITIAL_CHECKPOINT_PATH='{pre}'",
                "--gin.TRAIN_STEPS=10",
                "--gin.LOG_EVERY=5",
                "--gin.CHECKPOINT_PERIOD=10",
                "--gin.DROPOUT_RATE=0.0",
            ],
        )
        == 0
    )
    return {"root": root, "pre": pre, "ft": ft, "first_losses": first}


def test_pretrain_loss_falls_and_writes_checkpoints_and_summaries(runs):
    first = runs["first_losses"]
    assert sorted(first) == [5, 10, 15, 20, 25, 30, 35, 40]
    assert first[40] < 0.6 * first[5], first
    ck = checkpointing.CheckpointManager(runs["pre"] / "checkpoints")
    assert ck.all_steps() == [20, 40, 50]
    assert (runs["pre"] / "config.gin").read_text().count("NUM_KV_HEADS") >= 1
    assert list(runs["pre"].glob("events.out.tfevents.*"))


def test_resume_continues_from_latest(runs):
    recs = utils.read_jsonl(runs["pre"] / "train_metrics.jsonl")
    assert [r["step"] for r in recs] == [5, 10, 15, 20, 25, 30, 35, 40, 45, 50]
    assert all(
        k in recs[-1]
        for k in ("learning_rate", "steps_per_sec", "tokens_per_sec", "eta_sec", "accuracy")
    )


def test_resume_with_another_seed_fails_naming_it(runs, tmp_path, capsys):
    md = tmp_path / "pre"
    shutil.copytree(runs["pre"] / "checkpoints", md / "checkpoints")
    args = PRETRAIN_FLAGS + [f"--gin.MODEL_DIR='{md}'", "--gin.TRAIN_STEPS=60"]
    assert run(train_lib.train, args + ["--gin.RANDOM_SEED=1"]) == 2
    assert "RANDOM_SEED=0, now 1" in capsys.readouterr().err
    assert checkpointing.CheckpointManager(md / "checkpoints").all_steps() == [20, 40, 50]


def test_finetune_starts_from_initial_checkpoint(runs):
    ft = losses(runs["ft"])
    pre = losses(runs["pre"])
    # Starting from the pre-trained parameters, not a fresh init (first logged ~3.5).
    assert ft[5] < 0.75 * runs["first_losses"][5]
    assert abs(ft[5] - pre[50]) < 0.5 * pre[50]
    lr = utils.read_jsonl(runs["ft"] / "train_metrics.jsonl")[0]["learning_rate"]
    assert lr == pytest.approx(1e-3)


def test_eval_metrics_json_agrees_with_infer_and_direct_decoding(runs):
    ckpt = runs["ft"] / "checkpoints" / "10"
    out_e, out_i = runs["root"] / "eval", runs["root"] / "infer"
    assert (
        run(
            eval_lib.evaluate,
            TASK_FLAGS
            + [
                "--gin_file=runs/eval.gin",
                f"--gin.CHECKPOINT_PATH='{ckpt}'",
                f"--gin.EVAL_OUTPUT_DIR='{out_e}'",
            ],
        )
        == 0
    )
    assert (
        run(
            infer_lib.infer,
            TASK_FLAGS
            + [
                "--gin_file=runs/infer.gin",
                f"--gin.CHECKPOINT_PATH='{ckpt}'",
                f"--gin.INFER_OUTPUT_DIR='{out_i}'",
            ],
        )
        == 0
    )
    metrics = json.loads((out_e / "metrics.json").read_text())
    assert metrics["step"] == 10 and (out_e / "metrics-10.json").exists()
    rows = utils.read_jsonl(out_i / "tiny_reverse-10.jsonl")
    assert len(rows) == 12
    em = 100.0 * np.mean([r["prediction"] == r["targets"] for r in rows])
    assert metrics["metrics"]["tiny_reverse"]["exact_match"] == pytest.approx(em)
    # Independent path: the model's own predict_batch on the first example.
    import seqio

    from gqa_t5.gin_utils import model_from_gin
    from gqa_t5.testing import register_tiny_tasks  # noqa: F401  (tasks already registered)

    model = model_from_gin(["models/t5_1_1/tiny.gin"], ["VOCAB_SIZE = 64"])
    tr, params, _ = eval_lib.load_for_inference(model, str(ckpt), 16, 16)
    task = seqio.get_mixture_or_task("tiny_reverse")
    vocab = task.output_features["targets"].vocabulary
    enc = np.zeros((1, 16), np.int32)
    ids = vocab.encode(rows[0]["inputs"]) + [1]
    enc[0, : len(ids)] = ids
    tokens, _ = model.predict_batch(
        jax.device_get(params),
        {"encoder_input_tokens": enc, "decoder_input_tokens": np.zeros((1, 16), np.int32)},
    )
    assert vocab.decode(np.asarray(tokens[0]).tolist()) == rows[0]["prediction"]


def test_bad_paths_and_gin_values_fail_with_what_to_do(runs, tmp_path, capsys):
    md = f"--gin.MODEL_DIR='{tmp_path / 'm'}'"
    cases = [
        (["--gin.MIXTURE_OR_TASK_NAME='tiny_revers'"], "did you mean"),
        (["--gin.MIXTURE_OR_TASK_MODULE='no_such_tasks_module'"], "cannot import"),
        (["--gin.NUM_KV_HEADS=3"], "not divisible by num_kv_heads=3"),
        ([f"--gin.INITIAL_CHECKPOINT_PATH='{tmp_path / 'none'}'"], "does not exist"),
        (["--gin.TASK_FEATURE_LENGTHS={'inputs': 16}"], "TASK_FEATURE_LENGTHS needs"),
        (["--gin.BATCH_SIZE=7", "--gin.NUM_PARTITIONS=3"], "num_partitions=3 must divide"),
        (["--gin.optim.adafactor.no_such=1"], "'optim.adafactor' doesn't have a parameter"),
    ]
    for extra, message in cases:
        assert run(train_lib.train, PRETRAIN_FLAGS + [md, "--gin.TRAIN_STEPS=1", *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (extra, err)
    assert run(train_lib.train, ["--gin_file=runs/nope.gin"]) == 2
    assert "gin file(s) not found" in capsys.readouterr().err
    assert (
        run(
            eval_lib.evaluate,
            TASK_FLAGS
            + [
                "--gin_file=runs/eval.gin",
                f"--gin.CHECKPOINT_PATH='{tmp_path / 'none'}'",
                f"--gin.EVAL_OUTPUT_DIR='{tmp_path / 'e'}'",
            ],
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err


def test_a_value_of_the_wrong_type_names_the_macro(runs, tmp_path, capsys):
    # A string where an int belongs: caught by the gin type check (tests/test_errors.py
    # covers genuine bugs and their saved tracebacks).
    md = f"--gin.MODEL_DIR='{tmp_path / 'm'}'"
    assert run(train_lib.train, PRETRAIN_FLAGS + [md, "--gin.TRAIN_STEPS='ten'"]) == 2
    err = capsys.readouterr().err
    assert "--gin.TRAIN_STEPS='ten'" in err and "expects int" in err and "Traceback" not in err


def test_console_entry_point_exits_nonzero_with_message(runs):
    proc = subprocess.run(
        [sys.executable, "-m", "gqa_t5.train", *PRETRAIN_FLAGS, "--gin.TRAIN_STEPS=1"],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "MODEL_DIR" in proc.stderr


def _tiny_model_and_data():
    from gqa_t5 import data
    from gqa_t5.gin_utils import model_from_gin

    model = model_from_gin(["models/t5_1_1/tiny.gin"], ["VOCAB_SIZE = 64"])
    cfg = data.DatasetConfig(
        "tiny_reverse", {"inputs": 16, "targets": 16}, batch_size=8, module="helpers_tiny_tasks"
    )
    return model, cfg


def test_train_from_python_with_default_learning_rate(runs, tmp_path):
    model, cfg = _tiny_model_and_data()
    summary = train_lib.train(
        model=model,
        model_dir=str(tmp_path / "py"),
        train_dataset_cfg=cfg,
        total_steps=2,
        log_every=1,
    )
    assert summary["step"] == 2 and summary["status"] == "done"
    assert summary["last_metrics"]["learning_rate"] == pytest.approx(1e-3)


def test_metrics_leave_the_device_only_at_log_and_save_steps(runs, tmp_path, monkeypatch):
    fetches = []
    device_get = jax.device_get

    def counting(x):
        if sys._getframe(1).f_globals.get("__name__") == "gqa_t5.train":
            fetches.append(x)
        return device_get(x)

    monkeypatch.setattr(jax, "device_get", counting)
    model, cfg = _tiny_model_and_data()
    summary = train_lib.train(
        model=model,
        model_dir=str(tmp_path / "sync"),
        train_dataset_cfg=cfg,
        total_steps=12,
        log_every=6,
        checkpoint_period=4,
    )
    assert summary["step"] == 12
    # Steps 4 and 8 (saves), 6 and 12 (logs): four fetches for twelve steps, each of
    # every step since the previous one, so a NaN anywhere is still seen before a save.
    assert [[s for s, _ in f] for f in fetches] == [[1, 2, 3, 4], [5, 6], [7, 8], [9, 10, 11, 12]]


def test_tokens_per_second_counts_every_host(monkeypatch):
    batch = {
        "encoder_input_tokens": np.array([[5, 6, 7, 0], [8, 0, 0, 0]]),
        "decoder_target_tokens": np.array([[9, 1, 0, 0], [4, 3, 1, 0]]),
    }
    assert train_lib._global_tokens(batch) == 4 + 5
    monkeypatch.setattr(jax, "process_count", lambda: 4)
    assert train_lib._global_tokens(batch) == 4 * (4 + 5)

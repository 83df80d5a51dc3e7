"""The Grain backend end to end: a TF-free train -> eval -> infer, and SIGKILL + restart."""

import json
import subprocess
import sys

import pytest
from helpers_runner import REPO, env, losses, popen, sigkill_once_trained

from gqa_t5 import checkpointing, export
from gqa_t5 import train as train_lib
from tasks import metrics

TASK = "kjv_summarize"
FLAGS = [
    "--gin_file=models/t5_1_1/tiny.gin",
    "--gin.VOCAB_SIZE=1152",
    f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'",
    "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 32}",
    "--gin.DATA_BACKEND='grain'",
]
TRAIN = FLAGS + [
    "--gin_file=runs/pretrain.gin",
    "--gin.BATCH_SIZE=4",
    "--gin.LEARNING_RATE_FACTORS='constant'",
    "--gin.BASE_LEARNING_RATE=0.01",
    "--gin.LOG_EVERY=1",
]
BLOCKED = """
import sys
for m in ("tensorflow", "seqio", "tensorflow_datasets", "tensorflow_text"):
    sys.modules[m] = None
from gqa_t5 import eval as ev, infer, train
args = sys.argv[2:]
fn = {"train": train.train, "eval": ev.evaluate, "infer": infer.infer}[sys.argv[1]]
rc = train.run_main(fn, args, "blocked")
loaded = [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "seqio") and sys.modules[m]]
assert not loaded, loaded
sys.exit(rc)
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    export.export(TASK, ["train", "validation"], root, print_fn=lambda s: None)
    return root


def _blocked(cmd, args, tmp_path):
    p = subprocess.run(
        [sys.executable, "-c", BLOCKED, cmd, *args],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert p.returncode == 0, p.stderr[-3000:]


def test_train_eval_infer_without_tensorflow_or_seqio(data_dir, tmp_path):
    grain = [f"--gin.GRAIN_DATA_DIR='{data_dir}'"]
    model = tmp_path / "model"
    _blocked(
        "train", TRAIN + grain + [f"--gin.MODEL_DIR='{model}'", "--gin.TRAIN_STEPS=3"], tmp_path
    )
    assert sorted(losses(model)) == [1, 2, 3]
    ckpt = f"--gin.CHECKPOINT_PATH='{model}/checkpoints/3'"
    ev = tmp_path / "eval"
    _blocked(
        "eval",
        FLAGS + grain + ["--gin_file=runs/eval.gin", ckpt, f"--gin.EVAL_OUTPUT_DIR='{ev}'"],
        tmp_path,
    )
    inf = tmp_path / "infer"
    _blocked(
        "infer",
        FLAGS + grain + ["--gin_file=runs/infer.gin", ckpt, f"--gin.INFER_OUTPUT_DIR='{inf}'"],
        tmp_path,
    )
    result = json.loads((ev / "metrics.json").read_text())
    assert result["step"] == 3 and set(result["metrics"][TASK]) == {"rouge1", "rouge2", "rougeLsum"}
    lines = [json.loads(x) for x in (inf / f"{TASK}-3.jsonl").read_text().splitlines()]
    assert len(lines) == 64
    # The eval's ROUGE is the metric of the inferred predictions against the exported targets.
    ref = metrics.rouge([x["targets"] for x in lines], [x["prediction"] for x in lines])
    assert result["metrics"][TASK] == pytest.approx(ref)


def test_sigkill_then_restart_matches_uninterrupted(data_dir, tmp_path):
    run = tmp_path / "killed"
    args = TRAIN + [
        f"--gin.GRAIN_DATA_DIR='{data_dir}'",
        f"--gin.MODEL_DIR='{run}'",
        "--gin.CHECKPOINT_PERIOD=3",
    ]
    proc = popen("gqa_t5.train", args + ["--gin.TRAIN_STEPS=100000"], tmp_path / "a.log")
    sigkill_once_trained(proc, run)
    resume = max(checkpointing.CheckpointManager(run / "checkpoints").all_steps())
    assert resume >= 6 and resume % 3 == 0
    end = resume + 4
    proc = popen("gqa_t5.train", args + [f"--gin.TRAIN_STEPS={end}"], tmp_path / "b.log")
    assert proc.wait(timeout=300) == 0, (tmp_path / "b.log").read_text()[-3000:]
    assert "resumed from" in (tmp_path / "b.log").read_text()
    ref = tmp_path / "reference"
    ref_args = [a for a in args if "MODEL_DIR" not in a] + [f"--gin.MODEL_DIR='{ref}'"]
    assert train_lib.run_main(train_lib.train, ref_args + [f"--gin.TRAIN_STEPS={end}"], "ref") == 0
    got, want = losses(run), losses(ref)
    for step in range(resume + 1, end + 1):
        assert got[step] == pytest.approx(want[step], rel=1e-6), step

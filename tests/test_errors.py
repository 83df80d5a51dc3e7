"""Failures a user can read (issue 13): each case's exit code, one line naming the fix, and
the directory tree unchanged. Runs in process (one JAX start-up) on the bundled tasks and
the tiny model; two subprocesses check the whole command line's stderr."""

import gc
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import zlib

import numpy as np
import pytest
from helpers_runner import REPO, env
from test_checkpoints import WRITERS, tiny_params, write_hf

from gqa_t5 import checkpointing, convert, errors, utils
from gqa_t5 import eval as eval_lib
from gqa_t5 import infer as infer_lib
from gqa_t5 import train as train_lib
from gqa_t5.checkpoints import CheckpointError, orbax_params

FLAGS = [
    "--gin_file=models/t5_1_1/tiny.gin",
    "--gin.MIXTURE_OR_TASK_NAME='kjv_modernize'",
    "--gin.MIXTURE_OR_TASK_MODULE='tasks'",
    "--gin.VOCAB_SIZE=1152",
    "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 32}",
    "--gin.BATCH_SIZE=8",
]
TRAIN = FLAGS + ["--gin_file=runs/pretrain.gin", "--gin.TRAIN_STEPS=2", "--gin.LOG_EVERY=1"]
MODULES = {"gqa_t5.train": train_lib.train, "gqa_t5.eval": eval_lib.evaluate}
MODULES["gqa_t5.infer"] = infer_lib.infer


def run(fn, args):
    return train_lib.run_main(fn, args, "test")


def tree(root):
    """Every path under `root` (files and directories), relative, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def one_error_line(err, *needles):
    """The single `error:` line of stderr, with no traceback or ERROR log around it."""
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    assert "Traceback" not in err and " ERROR " not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-step MODEL_DIR of the tiny model on the bundled kjv_modernize task."""
    md = tmp_path_factory.mktemp("trained") / "run"
    assert run(train_lib.train, TRAIN + [f"--gin.MODEL_DIR='{md}'"]) == 0
    return md


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory this process cannot write to: a read-only tmpfs (root) or mode 0555."""
    d = tmp_path / "ro"
    d.mkdir()
    if os.geteuid() == 0:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(d)])
        if mounted.returncode:
            pytest.skip("root, but cannot mount a read-only tmpfs (no CAP_SYS_ADMIN)")
        yield d
        subprocess.run(["umount", "-l", str(d)])
    else:
        d.chmod(0o555)
        yield d
        d.chmod(0o755)


# -- gin flags ----------------------------------------------------------------------------


def test_gin_typo_and_wrong_type_are_bad_input(tmp_path, capsys):
    md = tmp_path / "m"
    cases = [
        (["--gin.NUM_KV_HEDS=2"], ["did you mean --gin.NUM_KV_HEADS?"]),
        (["--gin.NUM_KV_HEADS='two'"], ["--gin.NUM_KV_HEADS='two'", "expects int"]),
        (["--gin.TRAIN_STEPS='ten'"], ["--gin.TRAIN_STEPS", "expects int"]),
        (["--gin.NUM_KV_HEADS=two"], ["strings need quotes"]),
        (["--gin.MIXTURE_OR_TASK_NAME='kjv_modernise'"], ["did you mean", "kjv_modernize"]),
        (["--gin.VOCAB_SIZE=1000"], ["VOCAB_SIZE=1000 is smaller", "--gin.VOCAB_SIZE=1152"]),
        (["--gin.network.T5Config.num_kv_head=2"], ["did you mean network.T5Config.num_kv_heads?"]),
        (["--gin.network.T5Confg.emb_dim=2"], ["did you mean network.T5Config?"]),
    ]
    for extra, needles in cases:
        rc = run(train_lib.train, TRAIN + [f"--gin.MODEL_DIR='{md}'", *extra])
        assert rc == errors.EXIT_BAD_INPUT, extra
        one_error_line(capsys.readouterr().err, "gqa-t5-train: error:", *needles)
        assert tree(tmp_path) == [], extra  # no MODEL_DIR, not even config.gin


def test_much_larger_vocab_warns_naming_both_numbers(tmp_path, capsys):
    # TRAIN_STEPS=0: the checks run, then there is nothing to train.
    args = TRAIN + [f"--gin.MODEL_DIR='{tmp_path / 'm'}'", "--gin.TRAIN_STEPS=0"]
    assert run(train_lib.train, [a for a in args if "VOCAB_SIZE" not in a]) == 0
    warned = [x for x in capsys.readouterr().err.splitlines() if "much larger" in x]
    assert len(warned) == 1 and "VOCAB_SIZE=32128" in warned[0] and "(1100 ids)" in warned[0]


# -- restores that do not match the gin -----------------------------------------------------


def test_mismatched_restore_names_the_macro_in_train_eval_infer(trained, tmp_path, capsys):
    before = tree(trained)
    out = tmp_path / "out"
    tail = [f"--gin.CHECKPOINT_PATH='{trained}'"]
    cases = [
        (train_lib.train, TRAIN + [f"--gin.MODEL_DIR='{trained}'", "--gin.TRAIN_STEPS=4"]),
        (
            eval_lib.evaluate,
            FLAGS + ["--gin_file=runs/eval.gin", *tail, f"--gin.EVAL_OUTPUT_DIR='{out}'"],
        ),
        (
            infer_lib.infer,
            FLAGS + ["--gin_file=runs/infer.gin", *tail, f"--gin.INFER_OUTPUT_DIR='{out}'"],
        ),
    ]
    for fn, args in cases:
        assert run(fn, args + ["--gin.NUM_KV_HEADS=2"]) == errors.EXIT_BAD_INPUT
        one_error_line(capsys.readouterr().err, "NUM_KV_HEADS=4 (the model has 2)")
        assert run(fn, args + ["--gin.NUM_HEADS=2", "--gin.network.T5Config.head_dim=32"]) == 2
        one_error_line(capsys.readouterr().err, "--gin.NUM_HEADS=4", "head_dim=16")
    assert tree(trained) == before and not out.exists()


def test_eval_of_a_model_dir_reports_its_step(trained, tmp_path, capsys):
    out = tmp_path / "eval"
    args = FLAGS + ["--gin_file=runs/eval.gin", f"--gin.CHECKPOINT_PATH='{trained}'"]
    assert run(eval_lib.evaluate, args + [f"--gin.EVAL_OUTPUT_DIR='{out}'"]) == 0
    metrics = json.loads((out / "metrics-2.json").read_text())
    assert metrics["step"] == 2 and json.loads((out / "metrics.json").read_text()) == metrics
    assert checkpointing.step_of(trained) == 2
    assert not list(out.glob("*-000000.jsonl")) and list(out.glob("*-000002.jsonl"))
    # Results follow the umask (022 here): readable by others, not 0600.
    assert (out / "metrics.json").stat().st_mode & 0o777 == errors.umask_mode()


def test_eval_with_missing_checkpoint_names_it_and_leaves_nothing(tmp_path, capsys):
    out = tmp_path / "eval"
    missing = tmp_path / "nope"
    args = FLAGS + ["--gin_file=runs/eval.gin", f"--gin.CHECKPOINT_PATH='{missing}'"]
    assert run(eval_lib.evaluate, args + [f"--gin.EVAL_OUTPUT_DIR='{out}'"]) == 2
    line = one_error_line(capsys.readouterr().err, "CHECKPOINT_PATH", "does not exist")
    assert "INITIAL_CHECKPOINT_PATH" not in line
    assert tree(tmp_path) == []


# -- nothing half-made ----------------------------------------------------------------------


def test_read_only_model_dir_is_bad_input(read_only_dir, capsys):
    md = read_only_dir / "run"
    assert run(train_lib.train, TRAIN + [f"--gin.MODEL_DIR='{md}'"]) == 2
    one_error_line(capsys.readouterr().err, "MODEL_DIR", "cannot be written", "choose")
    assert tree(read_only_dir) == []


def test_full_disk_fails_in_one_line_and_removes_the_run(tmp_path, capsys):
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs for the full-disk case")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)]).returncode:
        pytest.skip("cannot mount a tmpfs here (no CAP_SYS_ADMIN)")
    try:
        rc = run(train_lib.train, TRAIN + [f"--gin.MODEL_DIR='{disk / 'run'}'"])
        for _ in range(5):  # failed background writes log when collected: here, not later
            gc.collect()
        err = capsys.readouterr().err
        assert rc == errors.EXIT_FAILURE, err
        one_error_line(err, "no space left", "free some space")
        assert len(err.splitlines()) < 20, err
        assert tree(disk) == []
    finally:
        subprocess.run(["umount", "-l", str(disk)])


def test_sigterm_during_start_up_leaves_no_model_dir(tmp_path, capsys, monkeypatch):
    def killed(*args, **kwargs):  # arrives after MODEL_DIR exists, before the first step
        assert (tmp_path / "m" / "config.gin").exists()
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(train_lib, "_train_loop", killed)
    assert run(train_lib.train, TRAIN + [f"--gin.MODEL_DIR='{tmp_path / 'm'}'"]) == 143
    assert "stopped by SIGTERM" in capsys.readouterr().err
    assert tree(tmp_path) == []


def test_a_bug_saves_its_traceback_to_a_file(tmp_path, capsys, monkeypatch):
    def broken(*args, **kwargs):
        return {}["no such key"]  # a KeyError from no `raise` of ours: a bug

    monkeypatch.setattr(train_lib, "_train_loop", broken)
    assert run(train_lib.train, TRAIN + [f"--gin.MODEL_DIR='{tmp_path / 'm'}'"]) == 1
    line = one_error_line(capsys.readouterr().err, "unexpected KeyError", "traceback saved to")
    crash = re.search(r"saved to (\S+);", line).group(1)
    text = open(crash).read()
    os.unlink(crash)
    assert "Traceback" in text and "broken" in text and "--gin.MODEL_DIR" in text
    assert tree(tmp_path) == []


def test_json_results_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        p = utils.write_json_atomic(tmp_path / "a.json", {"x": 1})
        assert p.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
    assert utils.write_json_atomic(tmp_path / "b.json", {}).stat().st_mode & 0o777 == (0o666 & ~old)


def test_harmless_warnings_hidden_unless_verbose(capsys):
    import logging

    for verbose in (False, True):
        errors.setup_logging(verbose)
        logging.getLogger("absl").warning("Metadata file does not exist: /x/_CHECKPOINT_METADATA")
        logging.warning("Using an uncached FunctionDataset for training is not recommended")
        logging.warning("a real warning")
        # Orbax background writes that failed with the error the run reported, collected late
        logging.getLogger("asyncio").error("Task exception was never retrieved\nfuture: <Task>")
        err = capsys.readouterr().err
        assert "a real warning" in err
        assert ("Metadata file" in err) == verbose and ("uncached" in err) == verbose
        assert ("never retrieved" in err) == verbose


# -- the converter ------------------------------------------------------------------------


def _convert(tmp_path, src, out, *extra):
    return convert.main(["--input", str(src), "--output", str(out), "--num_kv_heads", "2", *extra])


def test_convert_bad_sources_exit_2_in_one_line(tmp_path, capsys):
    flat = tiny_params()
    flat["decoder/layers_1/mlp/wi_1/kernel"][0, 0] = np.nan
    nan_src = write_hf(tmp_path / "nan", flat)
    zarr_src = WRITERS["t5x"](tmp_path / "zarr", tiny_params())
    chunk = zarr_src / "target.decoder.layers_1.mlp.wo.kernel" / "0.0"
    chunk.write_bytes(chunk.read_bytes()[:10])
    for src, needle in ((nan_src, "NaN/Inf"), (zarr_src, "truncated or corrupt")):
        before = tree(tmp_path)
        assert _convert(tmp_path, src, tmp_path / "out") == 2
        err = capsys.readouterr().err
        one_error_line(err, "gqa-t5-convert: error:", needle)
        assert len(err.splitlines()) == 1, err
        assert tree(tmp_path) == before


def test_convert_into_read_only_dir_is_bad_input(tmp_path, read_only_dir, capsys):
    src = write_hf(tmp_path / "src", tiny_params())
    assert _convert(tmp_path, src, read_only_dir / "out") == 2
    one_error_line(capsys.readouterr().err, "--output", "cannot be written")
    assert tree(read_only_dir) == []


def test_convert_removes_temporaries_of_a_killed_run(tmp_path, capsys):
    src = write_hf(tmp_path / "src", tiny_params())
    stale = tmp_path / ".out.tmp-1a2b3c4d"  # what kill -9 during a save leaves
    (stale / "ckpt").mkdir(parents=True)
    (stale / "ckpt" / "big").write_bytes(b"x" * 1000)
    assert _convert(tmp_path, src, tmp_path / "out") == 0
    assert f"removed {stale}" in capsys.readouterr().out
    assert tree(tmp_path).count(".out.tmp-1a2b3c4d") == 0 and (tmp_path / "out").is_dir()


def test_convert_writes_model_gin_and_verified_checksums(tmp_path):
    from gqa_t5.gin_utils import model_from_gin

    flat = tiny_params(seed=3)
    out = tmp_path / "out"
    assert _convert(tmp_path, write_hf(tmp_path / "src", flat), out) == 0
    record = json.loads((out / "conversion.json").read_text())
    model = model_from_gin([str(out / "model.gin")])
    cfg = model.config
    for key, value in record["config_after"].items():
        assert getattr(cfg, key) == (tuple(value) if isinstance(value, list) else value), key
    # Independent checksums: zlib over the restored float32 bytes.
    got = orbax_params.flatten(orbax_params.restore_params(out))
    assert set(record["checksums"]) == set(got)
    for name, array in got.items():
        crc = zlib.crc32(np.asarray(array, np.float32).tobytes())
        assert record["checksums"][name] == f"crc32:{crc:08x}", name
    # The model.gin model restores the checkpoint with its shapes checked.
    import jax

    abstract = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0)))["params"]
    abstract = jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape, np.float32, sharding=_cpu()), abstract
    )
    checkpointing.load_initial_params(out, abstract, cfg, "CHECKPOINT_PATH")
    # A tensor that does not match its checksum is named.
    name = sorted(record["checksums"])[0]
    record["checksums"][name] = "crc32:00000000"
    (out / "conversion.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match=re.escape(f"tensor {name} does not match")):
        orbax_params.restore_params(out)


def _cpu():
    import jax

    return jax.sharding.SingleDeviceSharding(jax.devices()[0])


# -- the README's example, verbatim ----------------------------------------------------------


def readme_example():
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- example: train-eval-infer")[1].split("```bash\n")[1]
    block = block.split("```")[0].replace("\\\n", " ")
    return [shlex.split(line) for line in block.splitlines() if line.strip()]


def test_readme_example_runs_verbatim(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    commands = readme_example()
    assert [c[:3] for c in commands] == [["python", "-m", m] for m in MODULES]
    for cmd in commands:
        assert run(MODULES[cmd[2]], cmd[3:]) == 0, capsys.readouterr().err[-3000:]
    metrics = json.loads((tmp_path / "runs/example/eval/metrics-20.json").read_text())
    assert "bleu" in metrics["metrics"]["kjv_modernize"]
    rows = utils.read_jsonl(tmp_path / "runs/example/infer/kjv_modernize-20.jsonl")
    assert len(rows) == 64 and all("prediction" in r for r in rows)


# -- whole command lines: stderr is exactly one line ---------------------------------------


def test_commands_print_one_line_and_nothing_else(tmp_path):
    flat = tiny_params()
    flat["decoder/layers_0/mlp/wo/kernel"][1, 1] = np.inf
    src = write_hf(tmp_path / "src", flat)
    procs = {
        "train": [
            "gqa_t5.train",
            *TRAIN,
            "--gin.MIXTURE_OR_TASK_NAME='kjv_modernise'",
            f"--gin.MODEL_DIR='{tmp_path / 'm'}'",
        ],
        "convert": ["gqa_t5.convert", "--input", str(src), "--output", str(tmp_path / "o")],
    }
    procs["convert"] += ["--num_kv_heads", "2"]
    before = tree(tmp_path)
    started = {
        k: subprocess.Popen(
            [sys.executable, "-m", *a], cwd=REPO, env=env(), stderr=subprocess.PIPE, text=True
        )
        for k, a in procs.items()
    }
    for name, proc in started.items():
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 2, (name, err)
        assert len(err.strip().splitlines()) == 1, (name, err)
        assert "error:" in err and ("did you mean" in err or "NaN/Inf" in err), err
    assert tree(tmp_path) == before

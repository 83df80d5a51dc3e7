"""The reproduction pipeline end to end on a minimal grid: rows match the grid, numbers match
the stages' own outputs, a re-run skips every stage, a failing stage names itself and its
log and leaves earlier outputs intact. Plus the table / point parsing pieces."""

import dataclasses
import json

import numpy as np
import pytest

from gqa_t5 import reproduce, stages, tables
from gqa_t5.checkpoints import orbax_params

GRID = ("mha", "mqa-mean-0.05")
TASK = "kjv_modernize"
SMALL = ["BATCH_SIZE = 8", "LOG_EVERY = 10", "CHECKPOINT_PERIOD = 1000", "KEEP_CHECKPOINTS = 1"]
PRETRAIN = [
    "MIXTURE_OR_TASK_NAME = 'kjv_span_corruption'",
    "TASK_FEATURE_LENGTHS = {'inputs': 128, 'targets': 32}",
    "WARMUP_STEPS = 10",
    *SMALL,
]


def _recipe(**kw) -> reproduce.Recipe:
    base = dict(
        size="Tiny",
        model_gin="models/t5_1_1/tiny.gin",
        num_heads=4,
        model_bindings=["VOCAB_SIZE = 1152", "MIXTURE_OR_TASK_MODULE = 'tasks'"],
        points=GRID,
        pretrain_steps=20,
        pretrain_bindings=PRETRAIN,
        uptrain_bindings=PRETRAIN,
        finetune_tasks=[TASK],
        finetune_steps=4,
        finetune_bindings=[*SMALL, "BASE_LEARNING_RATE = 0.01"],
        eval_bindings=["BATCH_SIZE = 64"],
        time_batch_size=2,
        time_lengths=(16, 4),
        time_repeats=1,
        finetune_seeds=2,
        seed_points=("mha",),
        heldout_task="kjv_span_corruption",
        heldout_lengths={"inputs": 128, "targets": 32},
        heldout_examples=12,
        heldout_batch_size=8,
        bootstrap_samples=200,
    )
    return reproduce.Recipe(**{**base, **kw})


def _done_mtimes(root):
    return {str(p): p.stat().st_mtime_ns for p in root.rglob(stages.DONE)}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro")
    lines = []
    table = reproduce.run_recipe(_recipe(), out, print_fn=lines.append)
    return out, table, lines


def test_rows_match_grid_and_stage_outputs(first_run):
    out, table, _ = first_run
    assert [r["point"] for r in table["rows"]] == list(GRID)
    assert [r["model"] for r in table["rows"]] == ["MHA-Tiny", "MQA-Tiny (mean, α=0.05)"]
    saved = json.loads((out / "table1.json").read_text())
    assert [r["point"] for r in saved["rows"]] == list(GRID)
    md = (out / "table1.md").read_text().splitlines()
    assert md[0] == (
        "| model | T_infer (IQR) | loss α=0 | loss | Avg [95% CI] | seeds (sd) | Modernize (BLEU) |"
    )
    assert len(md) == 2 + len(GRID)
    for row in table["rows"]:
        # The table's numbers are the eval stages' metrics.json (mean over fine-tuning seeds)
        # and the time stage's result.
        seeds = ["", "-seed1"] if row["point"] == "mha" else [""]
        bleus = [
            json.loads(
                (out / "tiny/eval" / row["point"] / f"{TASK}{s}" / "metrics.json").read_text()
            )["metrics"][TASK]["bleu"]
            for s in seeds
        ]
        assert row["finetune_seeds"] == len(seeds)
        assert row["scores_by_seed"][TASK] == pytest.approx(bleus, abs=1e-9)
        assert (
            row["scores"][TASK] == pytest.approx(np.mean(bleus))
            and row["avg"] == row["scores"][TASK]
        )
        lo, hi = row["avg_ci"]
        assert lo <= row["avg"] <= hi
        # Held-out loss: summed NLL over summed tokens of the stage's per-example file.
        stage = "mha-mean" if row["point"] == "mha" else row["point"]
        pe = json.loads((out / "tiny/heldout" / stage / "per_example.json").read_text())
        assert len(pe["nll"]) == 12
        assert row["heldout_loss"]["loss"] == pytest.approx(sum(pe["nll"]) / sum(pe["targets"]))
        kv = "mha" if row["point"] == "mha" else "mqa"
        timing = json.loads((out / "tiny/time" / kv / stages.DONE).read_text())["result"]
        assert row["t_infer"] == pytest.approx(timing["seconds_per_batch"][0] / 2)
    for name in ("conversion_method", "uptraining_proportion", "groups_vs_time"):
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert json.loads((out / f"{name}.json").read_text())["title"]
    g = json.loads((out / "groups_vs_time.json").read_text())["seconds_per_sample_by_g"]
    assert sorted(g) == ["1", "4"]
    found = json.loads((out / "findings.json").read_text())
    assert [f["finding"] for f in found["findings"]] == [1, 2, 3, 4]
    assert found["findings"][0]["verdict"] == "not measured"  # no first/random in this grid
    assert found["text"] in "\n".join(first_run[2])


def test_uptrain_steps_and_mean_conversion_of_the_pretrained_checkpoint(first_run):
    out, _, _ = first_run
    up = json.loads((out / "tiny/uptrain/mqa-mean-0.05" / stages.DONE).read_text())["result"]
    assert up["step"] == round(0.05 * 20) == 1
    # Uptraining continues the pre-training schedule: rsqrt at step 20 + 0, not a restart.
    logged = (out / "tiny/uptrain/mqa-mean-0.05/model/train_metrics.jsonl").read_text()
    lr = json.loads(logged.splitlines()[-1])["learning_rate"]
    assert lr == pytest.approx(1 / np.sqrt(20), rel=1e-5)
    pre = orbax_params.restore_params(
        next((out / "tiny/pretrain/model/checkpoints").glob("[0-9]*")) / "state"
    )
    mqa = orbax_params.restore_params(out / "tiny/convert/mqa-mean/checkpoint")
    mha = orbax_params.restore_params(out / "tiny/convert/mha-mean/checkpoint")
    name = ("decoder", "layers_0", "self_attention", "key", "kernel")
    k_pre = np.asarray(_get(pre, name), np.float64)  # [D, 4 heads x 16]
    want = k_pre.reshape(64, 4, 16).mean(axis=1)
    np.testing.assert_allclose(_get(mqa, name), want, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(_get(mha, name), _get(pre, name))


def _get(tree, keys):
    for k in keys:
        tree = tree[k]
    return np.asarray(tree)


def test_rerun_skips_every_stage(first_run):
    out, table, _ = first_run
    before = _done_mtimes(out)
    lines = []
    again = reproduce.run_recipe(_recipe(), out, print_fn=lines.append)
    assert _done_mtimes(out) == before
    assert sum(line.endswith("done earlier, skipped") for line in lines) == len(before)
    assert "0 stages run" in lines[-1]
    assert [r["avg"] for r in again["rows"]] == [r["avg"] for r in table["rows"]]


def test_failed_stage_names_itself_and_keeps_earlier_outputs(first_run):
    out, _, _ = first_run
    before = _done_mtimes(out)
    bad = _recipe(points=(*GRID, "mqa-first-0.05"), finetune_steps=-1)
    with pytest.raises(stages.StageError) as e:
        reproduce.run_recipe(bad, out, print_fn=lambda s: None)
    log = out / "tiny/finetune/mqa-first-0.05" / TASK / stages.LOG
    assert f"'finetune/mqa-first-0.05/{TASK}'" in str(e.value) and str(log) in str(e.value)
    assert "TRAIN_STEPS=-1" in log.read_text()
    assert not (log.parent / stages.DONE).exists()
    after = _done_mtimes(out)
    assert all(after[p] == t for p, t in before.items())  # earlier stages untouched
    assert str(out / "tiny/convert/mqa-first" / stages.DONE) in after
    assert str(out / "tiny/uptrain/mqa-first-0.05" / stages.DONE) in after


def test_parse_point():
    assert reproduce.parse_point("gqa8-mean-0.05", 64) == reproduce.Point(
        8, "mean", 0.05, "gqa8-mean-0.05"
    )
    assert reproduce.parse_point("mqa-random-0", 16).num_kv_heads == 1
    assert reproduce.parse_point("mha", 16) == reproduce.Point(16, "mean", 0.0, "mha")
    with pytest.raises(ValueError, match="must divide"):
        reproduce.parse_point("gqa3-mean-0.05", 16)
    with pytest.raises(ValueError, match="grid point 'mqa'"):
        reproduce.parse_point("mqa", 16)


def test_markdown_and_figure_data_from_rows():
    p = reproduce.parse_point
    metrics = {
        "kjv_summarize": {"rouge1": 30.0, "rouge2": 1.0},
        "kjv_cloze_qa": {"f1": 50.0, "em": 40.0},
    }
    timing = {"seconds_per_sample": 0.25}
    rows = [
        tables.make_row("XXL", p(s, 64), 64, metrics, timing)
        for s in ("mha", "mqa-mean-0.05", "mqa-first-0.05", "gqa8-mean-0")
    ]
    assert rows[0]["avg"] == 40.0 and rows[0]["method"] is None
    rows[1].update(avg_ci=[38.25, 41.5], finetune_seeds=3, avg_seed_sd=0.125)
    rows[1]["t_infer_spread"] = {"median": 0.25, "iqr": 0.05}
    md = tables.to_markdown(rows).splitlines()
    assert (
        md[0]
        == "| model | T_infer (IQR) | Avg [95% CI] | seeds (sd) | Summarize (R1) | ClozeQA (F1) |"
    )
    assert md[2] == "| MHA-XXL | 0.25 | 40.0 | 1 | 30.0 | 50.0 |"
    assert (
        md[3]
        == "| MQA-XXL (mean, α=0.05) | 0.25 (20%) | 40.0 [38.2, 41.5] | 3 (0.12) | 30.0 | 50.0 |"
    )
    assert md[5].startswith("| GQA-8-XXL (mean, α=0) |")
    data = tables.figure_data(rows, 0.05)
    avg = {m: p["avg"] for m, p in data["conversion_method"]["avg_by_method"].items()}
    assert avg == {"mean": 40.0, "first": 40.0}
    assert data["conversion_method"]["avg_by_method"]["mean"]["avg_ci"] == [38.25, 41.5]
    by_alpha = data["uptraining_proportion"]["avg_by_alpha"]
    assert {k: {a: p["avg"] for a, p in v.items()} for k, v in by_alpha.items()} == {
        "MQA-XXL": {0.05: 40.0},
        "GQA-8-XXL": {0.0: 40.0},
    }
    with pytest.raises(ValueError, match="headline metric"):
        tables.make_row("XXL", p("mha", 64), 64, {"kjv_summarize": {"bleu": 1}}, timing)
    paper = tables.paper_markdown().splitlines()
    assert paper[3] == "| MHA-XXL | 1.51 | 47.2 | 43.8 | 45.6 | 47.5 | 36.4 | 46.9 | 28.4 | 81.9 |"


def test_bad_seed_settings_fail_before_any_stage(tmp_path):
    with pytest.raises(ValueError, match=r"not in points: \['gqa2-mean-0.05'\]"):
        reproduce.Pipeline(_recipe(seed_points=("gqa2-mean-0.05",)), tmp_path)
    with pytest.raises(ValueError, match="finetune_seeds=0 must be >= 1"):
        reproduce.Pipeline(_recipe(finetune_seeds=0), tmp_path)
    assert not any(tmp_path.iterdir())


def test_recipe_is_a_frozen_dataclass():
    with pytest.raises(dataclasses.FrozenInstanceError):
        _recipe().size = "x"


def test_gin_include_works_with_a_runs_directory_in_the_working_directory(tmp_path, monkeypatch):
    # `runs/` in the working directory (the default --output_dir=runs/reproduce) is a
    # namespace package; gin's package reader used to crash on it for includes of 'runs/...'.
    import importlib

    from gqa_t5 import gin_utils

    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    assert importlib.util.find_spec("runs").origin is None
    bindings = ["MODEL_DIR = '/x'", "MIXTURE_OR_TASK_NAME = 'x'", "TASK_FEATURE_LENGTHS = {}",
                "INITIAL_CHECKPOINT_PATH = 'x'"]  # fmt: skip
    # Without the guard this raises TypeError (os.path.dirname(None)) inside gin.
    gin_utils.parse_gin(["models/t5_1_1/tiny.gin", "runs/uptrain.gin"], bindings, finalize=False)
    import gin

    assert gin.query_parameter("%BATCH_SIZE") == 2048  # from runs/uptrain.gin's include chain
    gin.clear_config()


def test_parallel_workers_reproduce_the_serial_run(first_run, tmp_path):
    """--workers 2: the same stages, the same numbers (each stage is seeded), the timing
    stages after every first-pass stage and before the extra seeds."""
    out, table, _ = first_run
    grid = ("mqa-mean-0", *GRID)  # the first two items share convert/mqa-mean
    lines = []
    par = reproduce.run_recipe(_recipe(points=grid), tmp_path, lines.append, workers=2)
    assert [r["point"] for r in par["rows"]] == list(grid)
    serial = {r["point"]: r for r in table["rows"]}
    for row in par["rows"][1:]:
        want = serial[row["point"]]
        assert row["scores_by_seed"] == want["scores_by_seed"]
        assert row["heldout_loss"]["loss"] == pytest.approx(want["heldout_loss"]["loss"], 1e-6)
    stage_dirs = {p.parent.relative_to(tmp_path) for p in tmp_path.rglob(stages.DONE)}
    serial_dirs = {p.parent.relative_to(out) for p in out.rglob(stages.DONE)}
    assert stage_dirs >= {d for d in serial_dirs if "mqa-first" not in str(d)}
    assert (tmp_path / "tiny/convert/mqa-mean" / stages.LOG).read_text().count("converting ") == 1
    mtime = {d: (tmp_path / d / stages.DONE).stat().st_mtime_ns for d in stage_dirs}
    timing = [t for d, t in mtime.items() if d.parts[1] == "time"]
    seeds = [t for d, t in mtime.items() if d.name.endswith("-seed1")]
    first = [t for d, t in mtime.items() if d.parts[1] != "time" and t not in seeds]
    assert max(first) < min(timing) and max(timing) < min(seeds)
    assert f"{len(stage_dirs)} stages run ({len(stage_dirs)} by 2 workers)" in lines[-1]


def test_stage_lock_runs_a_shared_stage_once(tmp_path):
    """Three processes reach one stage together: one runs it, the others wait and skip it."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_shared_stage, args=(tmp_path,)) for _ in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    assert [proc.exitcode for proc in procs] == [0, 0, 0]
    assert (tmp_path / "ran.txt").read_text() == "x"  # without the lock: "xxx"
    assert len(list((tmp_path / "shared").glob("result-*.json"))) == 3


def _shared_stage(root):
    import os
    import time

    def fn(d):
        time.sleep(1.5)  # long enough that the others arrive while it runs
        with open(root / "ran.txt", "a") as f:
            f.write("x")
        return {"value": 7}

    result = stages.StageRunner(root, print_fn=lambda s: None).run("shared", fn)
    (root / "shared" / f"result-{os.getpid()}.json").write_text(json.dumps(result))


def test_collect_only_from_a_moved_copy_without_checkpoints(first_run, tmp_path):
    """What gpu_realtext.sh brings back (no checkpoints), unpacked at another path: the
    recorded paths follow the copy, and the tables are the run's."""
    import shutil

    out, table, _ = first_run
    copy = tmp_path / "elsewhere"
    shutil.copytree(
        out, copy, ignore=lambda d, names: [n for n in names if n in ("model", "checkpoint")]
    )
    assert not list(copy.rglob("checkpoints"))
    eval_done = copy / "tiny/eval/mha" / TASK / stages.DONE
    record = json.loads(eval_done.read_text())
    del record["root"]  # as written before DONE.json recorded its root: inferred from a path
    eval_done.write_text(json.dumps(record))
    runner = stages.StageRunner(copy / "tiny", print_fn=lambda s: None, collect_only=True)
    for name in (f"eval/mha/{TASK}", "pretrain", "heldout/mqa-mean-0.05"):
        result = runner.run(name, None)
        paths = [v for v in result.values() if isinstance(v, str) and v.startswith("/")]
        assert paths and all(v.startswith(str(copy / "tiny")) for v in paths), (name, result)
    lines = []
    again = reproduce.run_recipe(_recipe(), copy, print_fn=lines.append, collect_only=True)
    assert [r["avg"] for r in again["rows"]] == [r["avg"] for r in table["rows"]]
    assert "0 stages run" in lines[-1]


def test_collect_only_runs_nothing_and_leaves_out_unfinished_seeds(first_run):
    out, table, _ = first_run
    before = _done_mtimes(out)
    done = out / "tiny/eval/mha" / f"{TASK}-seed1" / stages.DONE
    hidden = done.with_name("DONE.hidden")
    done.rename(hidden)  # as if the run had been cut short before this eval finished
    try:
        lines = []
        cut = reproduce.run_recipe(_recipe(), out, print_fn=lines.append, collect_only=True)
        assert any("mha fine-tuning seed 1 left out" in line for line in lines)
        mha = next(r for r in cut["rows"] if r["point"] == "mha")
        assert mha["finetune_seeds"] == 1
        assert mha["scores_by_seed"][TASK] == table["rows"][0]["scores_by_seed"][TASK][:1]
        assert "0 stages run" in lines[-1]
        first = out / "tiny/time/mqa" / stages.DONE  # a first-pass stage: an error, named
        first.rename(first.with_name("DONE.hidden"))
        try:
            with pytest.raises(stages.StageMissing, match="time/mqa"):
                reproduce.run_recipe(_recipe(), out, print_fn=lambda s: None, collect_only=True)
        finally:
            first.with_name("DONE.hidden").rename(first)
    finally:
        hidden.rename(done)
    reproduce.run_recipe(_recipe(), out, print_fn=lambda s: None)  # the full tables again
    assert _done_mtimes(out) == before

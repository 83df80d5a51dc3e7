"""Reproduce the paper's Table 1 and figures: pretrain -> convert -> uptrain -> fine-tune ->
evaluate -> time, over a grid of (G, conversion method, alpha) points and tasks, from gin.

    python -m gqa_t5.reproduce                       # built-in default: tiny T5, CPU, ~10 min
    python -m gqa_t5.reproduce --gin_file=reproduce/paper_xxl.gin --output_dir=/runs/repro

Every stage runs the runner's Python functions with gin bindings in its own directory
`<output_dir>/<size>/<stage>/...` and writes DONE.json there; a re-run skips finished
stages. Writes `table1.md`, `table1.json` and three figures (PNG + JSON) in output_dir.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import pathlib
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

import gin
from gqa_t5 import errors, gin_checks, gin_utils, results, stages, tables, utils

DEFAULT_GIN = "reproduce/default.gin"
_POINT = re.compile(r"^(mha|mqa|gqa(\d+))(?:-(mean|first|random)-([0-9.]+))?$")


@dataclasses.dataclass(frozen=True)
class Point:
    """One grid point: G key/value heads, conversion method, uptraining proportion alpha."""

    num_kv_heads: int
    method: str
    alpha: float
    spec: str


def parse_point(spec: str, num_heads: int) -> Point:
    """'mha' | 'mqa-<method>-<alpha>' | 'gqa<G>-<method>-<alpha>' -> Point."""
    m = _POINT.match(spec)
    if not m or (m.group(1) != "mha" and m.group(3) is None):
        raise ValueError(
            f"grid point {spec!r}: use 'mha', 'mqa-<method>-<alpha>' or "
            "'gqa<G>-<method>-<alpha>' with method mean|first|random, e.g. 'gqa8-mean-0.05'"
        )
    if m.group(1) == "mha":
        return Point(num_heads, "mean", 0.0, "mha")
    g = 1 if m.group(1) == "mqa" else int(m.group(2))
    if g < 1 or num_heads % g:
        raise ValueError(f"grid point {spec!r}: G={g} must divide NUM_HEADS={num_heads}")
    return Point(g, m.group(3), float(m.group(4)), spec)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What to run: the model, the grid, each stage's steps and gin bindings."""

    size: str = "Tiny"
    model_gin: str = "models/t5_1_1/tiny.gin"
    num_heads: int = 4
    model_bindings: Sequence[str] = ()
    points: Sequence[str] = ("mha", "mqa-mean-0.05")
    # Pre-training: a runner run from scratch, or (full recipe) an existing checkpoint in any
    # format gqa-t5-convert reads (t5x, Mesh-TF, HuggingFace) trained for original_steps.
    initial_checkpoint: str | None = None
    pretrain_steps: int = 100
    original_steps: int | None = None  # alpha's reference; default pretrain_steps
    pretrain_bindings: Sequence[str] = ()
    uptrain_bindings: Sequence[str] = ()
    finetune_tasks: Sequence[str] = ("kjv_mixture",)
    finetune_steps: int = 100
    finetune_bindings: Sequence[str] = ()
    eval_bindings: Sequence[str] = ()
    task_lengths: dict[str, dict[str, int]] | None = None  # default: tasks' FEATURE_LENGTHS
    convert_seed: int = 0
    # Input backend of every train/eval stage: 'seqio', or 'grain' (TF-free) reading
    # `gqa-t5-export` output from grain_data_dir (<dir>/<task>/<split>/).
    data_backend: str = "seqio"
    grain_data_dir: str | None = None
    # Decode-time stage: fixed-length greedy predict_batch on this host, per G.
    time_batch_size: int = 8
    time_lengths: tuple[int, int] = (128, 48)
    time_repeats: int = 30  # T_infer: the median over this many timed batches, IQR in JSON
    figure_alpha: float = 0.05
    # Fine-tuning repeated with RANDOM_SEED 0..finetune_seeds-1 (shuffle, dropout) for
    # seed_points (None: every point); the others use seed 0. Scores: mean over seeds.
    finetune_seeds: int = 1
    seed_points: Sequence[str] | None = None
    # Held-out loss of each converted and each uptrained checkpoint (None: not measured):
    # the first heldout_examples examples of the task's validation split, unpacked.
    heldout_task: str | None = None
    heldout_lengths: dict[str, int] | None = None
    heldout_examples: int = 256
    heldout_batch_size: int = 32
    # Percentile bootstrap over eval examples (paired across points) and timing repeats.
    bootstrap_samples: int = 1000
    bootstrap_seed: int = 0
    findings_groups: int | None = None  # GQA's G in the findings; None: smallest G > 1


def _q(value: Any) -> str:
    """A Python literal gin parses (strings quoted)."""
    return repr(str(value)) if isinstance(value, str | pathlib.Path) else repr(value)


class Pipeline:
    """The stages of one recipe, in order, under `<output_dir>/<size>/`."""

    def __init__(
        self, recipe: Recipe, output_dir: pathlib.Path, print_fn=print, collect_only=False
    ):
        self.r = recipe
        self.out = output_dir
        self.points = [parse_point(p, recipe.num_heads) for p in recipe.points]
        unknown = sorted(set(recipe.seed_points or ()) - set(recipe.points))
        if recipe.finetune_seeds < 1 or unknown:
            raise ValueError(
                f"finetune_seeds={recipe.finetune_seeds} must be >= 1 and seed_points must be "
                f"grid points (not in points: {unknown})"
            )
        self.runner = stages.StageRunner(output_dir / recipe.size.lower(), print_fn, collect_only)
        self.print = print_fn

    # -- helpers -------------------------------------------------------------------
    def _lengths(self, task: str) -> dict[str, int]:
        import tasks
        import tasks.kjv

        known = {**getattr(tasks, "FEATURE_LENGTHS", {}), **tasks.kjv.FEATURE_LENGTHS}
        lengths = (self.r.task_lengths or {}).get(task) or known.get(task)
        if lengths is None:
            raise ValueError(f"no feature lengths for task {task!r}: set Recipe.task_lengths")
        return lengths

    def _data(self) -> list[str]:
        return [
            f"DATA_BACKEND = {_q(self.r.data_backend)}",
            f"GRAIN_DATA_DIR = {_q(self.r.grain_data_dir) if self.r.grain_data_dir else None}",
        ]

    def _step_dir(self, train_result: dict) -> pathlib.Path:
        """A training stage's last checkpoint; as recorded when only collecting (the
        checkpoints of a run brought back from another machine are not copied)."""
        if self.runner.collect_only:
            return (
                pathlib.Path(train_result["model_dir"]) / "checkpoints" / str(train_result["step"])
            )
        return _step_dir(train_result["model_dir"])

    def _train(self, run_gin: str, model_dir: pathlib.Path, bindings: Sequence[str]) -> dict:
        from gqa_t5 import train

        gin_utils.parse_gin(
            [self.r.model_gin, run_gin],
            [*self.r.model_bindings, *self._data(), f"MODEL_DIR = {_q(model_dir)}", *bindings],
        )
        summary = gin.get_configurable(train.train)()
        if summary["status"] != "done":
            raise RuntimeError(f"training stopped early: {summary['status']}")
        return {"model_dir": str(model_dir), "step": summary["step"], **_last(summary)}

    # -- stages --------------------------------------------------------------------
    def pretrain(self) -> str:
        """The MHA source checkpoint: a runner pre-training run, or the given checkpoint."""
        if self.r.initial_checkpoint:
            return self.r.initial_checkpoint

        def fn(d: pathlib.Path) -> dict:
            binds = [f"TRAIN_STEPS = {self.r.pretrain_steps}", *self.r.pretrain_bindings]
            return self._train("runs/pretrain.gin", d / "model", binds)

        return str(self._step_dir(self.runner.run("pretrain", fn)) / "state")

    def convert(self, source: str, p: Point) -> str:
        from gqa_t5 import convert

        name = f"convert/{_kv_name(p.num_kv_heads, self.r.num_heads)}-{p.method}"

        def fn(d: pathlib.Path) -> dict:
            record = convert.convert_checkpoint(
                source,
                d / "checkpoint",
                num_kv_heads=p.num_kv_heads,
                method=p.method,
                seed=self.r.convert_seed,
                overwrite=True,  # a half-written output of a failed try
                log=logging.info,
            )
            return {"checkpoint": str(d / "checkpoint"), "record": record}

        return self.runner.run(name, fn)["checkpoint"]

    def uptrain(self, converted: str, p: Point) -> str:
        steps = round(p.alpha * (self.r.original_steps or self.r.pretrain_steps))
        if p.spec == "mha" or steps == 0:
            return converted  # alpha = 0: fine-tune the converted checkpoint directly

        def fn(d: pathlib.Path) -> dict:
            return {"alpha": p.alpha, **self.uptrain_run(converted, p.num_kv_heads, steps, d)}

        return self.runner.run(f"uptrain/{p.spec}", fn)["model_dir"]

    def uptrain_run(self, converted: str, num_kv_heads: Any, steps: int, d: pathlib.Path) -> dict:
        """Continue the pre-training recipe (its schedule from `original_steps`) on a
        converted checkpoint for `steps` steps, in `d/model`."""
        binds = [
            f"NUM_KV_HEADS = {num_kv_heads!r}",
            f"INITIAL_CHECKPOINT_PATH = {_q(converted)}",
            f"TRAIN_STEPS = {steps}",
            f"LR_INITIAL_STEP = {self.r.original_steps or self.r.pretrain_steps}",
            *self.r.uptrain_bindings,
        ]
        return self._train("runs/uptrain.gin", d / "model", binds)

    def heldout(self, checkpoint: str, num_kv_heads: int, name: str) -> dict | None:
        """Held-out loss of a checkpoint (stage `heldout/<name>`); None if not configured."""
        if not self.r.heldout_task:
            return None
        from gqa_t5 import data, heldout

        def fn(d: pathlib.Path) -> dict:
            model = gin_utils.model_from_gin(
                [self.r.model_gin], [*self.r.model_bindings, f"NUM_KV_HEADS = {num_kv_heads}"]
            )
            cfg = data.DatasetConfig(
                mixture_or_task_name=self.r.heldout_task,
                task_feature_lengths=self.r.heldout_lengths or self._lengths(self.r.heldout_task),
                split="validation",
                batch_size=self.r.heldout_batch_size,
                seed=0,
                module=_task_module(self.r.model_bindings),
                backend=self.r.data_backend,
                data_dir=self.r.grain_data_dir,
            )
            r = heldout.heldout_loss(model, checkpoint, cfg, self.r.heldout_examples)
            per_example = {"nll": r.pop("nll"), "targets": r.pop("targets")}
            utils.write_json_atomic(d / "per_example.json", per_example)
            return {"checkpoint": checkpoint, **r, "per_example": str(d / "per_example.json")}

        return self.runner.run(f"heldout/{name}", fn)

    def seeds(self, p: Point) -> range:
        chosen = self.r.seed_points is None or p.spec in self.r.seed_points
        return range(self.r.finetune_seeds if chosen else 1)

    def finetune(self, start: str, p: Point, task: str, seed: int = 0) -> str:
        def fn(d: pathlib.Path) -> dict:
            binds = [
                f"NUM_KV_HEADS = {p.num_kv_heads}",
                f"INITIAL_CHECKPOINT_PATH = {_q(start)}",
                f"MIXTURE_OR_TASK_NAME = {_q(task)}",
                f"TASK_FEATURE_LENGTHS = {self._lengths(task)!r}",
                f"TRAIN_STEPS = {self.r.finetune_steps}",
                *self.r.finetune_bindings,
                *([f"RANDOM_SEED = {seed}"] if seed else []),
            ]
            return self._train("runs/finetune.gin", d / "model", binds)

        result = self.runner.run(f"finetune/{p.spec}/{task}{_seed_suffix(seed)}", fn)
        return str(self._step_dir(result))

    def evaluate(self, checkpoint: str, p: Point, task: str, seed: int = 0) -> dict:
        """{'metrics': {task: {metric: value}}, 'per_example': path} of one eval stage."""
        from gqa_t5 import eval as eval_lib

        def fn(d: pathlib.Path) -> dict:
            gin_utils.parse_gin(
                [self.r.model_gin, "runs/eval.gin"],
                [
                    *self.r.model_bindings,
                    f"NUM_KV_HEADS = {p.num_kv_heads}",
                    f"CHECKPOINT_PATH = {_q(checkpoint)}",
                    f"EVAL_OUTPUT_DIR = {_q(d)}",
                    *self._data(),
                    f"MIXTURE_OR_TASK_NAME = {_q(task)}",
                    f"TASK_FEATURE_LENGTHS = {self._lengths(task)!r}",
                    *self.r.eval_bindings,
                ],
            )
            result = gin.get_configurable(eval_lib.evaluate)()
            per_example = _per_example_scores(d, result["metrics"], result["step"])
            utils.write_json_atomic(d / "per_example.json", per_example)
            return {**result, "per_example": str(d / "per_example.json")}

        return self.runner.run(f"eval/{p.spec}/{task}{_seed_suffix(seed)}", fn)

    def time_decode(self, num_kv_heads: int) -> dict:
        from gqa_t5 import timing

        def fn(d: pathlib.Path) -> dict:
            del d
            model = gin_utils.model_from_gin(
                [self.r.model_gin], [*self.r.model_bindings, f"NUM_KV_HEADS = {num_kv_heads}"]
            )
            return timing.time_predict(
                model, self.r.time_batch_size, *self.r.time_lengths, self.r.time_repeats
            )

        kv = _kv_name(num_kv_heads, self.r.num_heads)
        return self.runner.run(f"time/{kv}", fn)

    def start(self, source: str, p: Point) -> tuple[str, dict | None, dict | None]:
        """Convert and uptrain one point: (its fine-tuning start, loss converted, loss start)."""
        converted = self.convert(source, p)
        kv = _kv_name(p.num_kv_heads, self.r.num_heads)
        loss_converted = self.heldout(converted, p.num_kv_heads, f"{kv}-{p.method}")
        start = self.uptrain(converted, p)
        if start == converted:
            return start, loss_converted, loss_converted
        return start, loss_converted, self.heldout(start, p.num_kv_heads, p.spec)

    def run(self, on_first_pass=None, seeds: bool = True) -> list[dict]:
        """All stages for every grid point; returns each point's raw results (`results`).

        Two passes: every point with fine-tuning seed 0 (and its timing), then the extra
        seeds (unless `seeds` is False), so that a run cut short still has the whole grid
        once; `on_first_pass` gets the first pass's results (run_recipe writes the tables).
        """
        source = self.pretrain()
        points, starts = [], []
        for i, p in enumerate(self.points, 1):
            self.print(f"== grid point {i}/{len(self.points)}: {self.r.size} {p.spec}")
            start, loss_converted, loss_start = self.start(source, p)
            starts.append(start)
            points.append(
                {
                    "point": p,
                    "evals": [self._evals(start, p, 0)],
                    "loss_converted": loss_converted,
                    "loss_start": loss_start,
                    "timing": self.time_decode(p.num_kv_heads),
                }
            )
        if on_first_pass is not None and any(len(self.seeds(p)) > 1 for p in self.points):
            on_first_pass(points)
        if not seeds:
            return points
        for i, (p, start, point) in enumerate(zip(self.points, starts, points, strict=True), 1):
            if len(self.seeds(p)) > 1:
                self.print(f"== seeds of grid point {i}/{len(self.points)}: {p.spec}")
            for s in self.seeds(p)[1:]:
                try:
                    point["evals"].append(self._evals(start, p, s))
                except stages.StageMissing as e:  # collect_only: a run cut short
                    self.print(f"== {p.spec} fine-tuning seed {s} left out: {e}")
        return points

    def work(self, spec: str, seed: int) -> None:
        """One parallel work item: a point's first pass without timing (seed 0), or one
        extra fine-tuning seed of it."""
        p = next(q for q in self.points if q.spec == spec)
        start, _, _ = self.start(self.pretrain(), p)
        self._evals(start, p, seed)

    def run_parallel(self, workers: int, cache_dir: pathlib.Path) -> int:
        """The stages in worker processes, in phases (`--workers`): pre-training alone; every
        point's first pass on `workers` processes; timing (alone on the accelerator, so
        T_infer is not disturbed) with the first tables; the extra seeds on `workers`
        processes. Each point's stages and results are those of the serial run; stages that
        points share are locked (stages.py). The caller's serial `run` then collects.
        Returns the number of stages the workers ran.
        """
        first = [(p.spec, 0) for p in self.points]
        extra = [(p.spec, s) for s in range(1, self.r.finetune_seeds) for p in self.points]
        extra = [
            (spec, s) for spec, s in extra if s in self.seeds(parse_point(spec, self.r.num_heads))
        ]
        self.print(
            f"== parallel: pre-training, then {len(first)} points and {len(extra)} "
            f"extra seeds on {workers} workers"
        )
        ran = self._phase(1, [("pretrain", None)], cache_dir, raise_failure=True)
        # A point whose worker failed is tried once more, serially, by the next phase (its
        # error then stops the run, as in a serial run); the other points go on meanwhile.
        ran += self._phase(workers, first, cache_dir)
        ran += self._phase(1, [("first_pass", None)], cache_dir, raise_failure=True)
        return ran + self._phase(workers, extra, cache_dir)

    def _phase(
        self, workers: int, items: list, cache_dir: pathlib.Path, raise_failure: bool = False
    ) -> int:
        """Run items on a fresh pool of spawned processes (each with 0.9 / its size of the
        accelerator's memory); every item runs even if another fails (with `raise_failure`
        the first failure is raised after); returns the number of stages run.

        A signal or Ctrl-C here cancels the queued items and sends SIGTERM to the workers
        (a training stage saves its checkpoint), waits for them, and re-raises.
        """
        import concurrent.futures
        import multiprocessing
        import signal

        if not items:
            return 0
        size = min(workers, len(items))
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=size,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
            initargs=(dataclasses.asdict(self.r), str(self.out), str(cache_dir), size),
        )
        failures, ran = [], 0
        try:
            futures = {pool.submit(_worker_item, *item): item for item in items}
            for f in concurrent.futures.as_completed(futures):
                if f.exception() is None:
                    ran += f.result()
                else:
                    failures.append(f.exception())
                    self.print(f"== worker item {futures[f]} failed: {f.exception()}")
        except BaseException:
            processes = list((getattr(pool, "_processes", None) or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            with errors.sigterm_handled(
                signal.SIG_IGN
            ):  # a second SIGTERM must not cut the workers' saves short
                for proc in processes:
                    proc.terminate()
                for proc in processes:
                    proc.join(timeout=300)
            raise
        pool.shutdown(wait=True)
        if failures and raise_failure:
            raise failures[0]
        return ran

    def _evals(self, start: str, p: Point, seed: int) -> list:
        return [
            self.evaluate(self.finetune(start, p, t, seed), p, t, seed)
            for t in self.r.finetune_tasks
        ]


_WORKER: dict[str, Any] = {}


def _worker_init(recipe: dict, output_dir: str, cache_dir: str, workers: int) -> None:
    """A spawned pipeline worker: its share of accelerator memory, logging, the XLA cache."""
    share = 0.9 / workers
    current = float(os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.75"))
    os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{min(current, share):.3f}"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    utils.setup_logging(False)
    import jax

    if jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    name = _worker_name()
    _WORKER["recipe"] = Recipe(**recipe)
    _WORKER["pipeline"] = Pipeline(
        _WORKER["recipe"], pathlib.Path(output_dir), lambda s: print(f"{s}  ({name})", flush=True)
    )


def _worker_name() -> str:
    import multiprocessing

    return multiprocessing.current_process().name.replace("SpawnProcess-", "worker ")


def _worker_item(spec: str, seed: int | None) -> int:
    """One item of a phase; returns the number of stages it ran."""
    pipeline: Pipeline = _WORKER["pipeline"]
    before = len(pipeline.runner.ran)
    if spec == "pretrain":
        pipeline.pretrain()
    elif spec == "first_pass":  # timing alone, and the first tables
        recipe = _WORKER["recipe"]
        pipeline.run(on_first_pass=lambda pts: _write(pts, recipe, pipeline.out), seeds=False)
    else:
        pipeline.work(spec, seed)
    return len(pipeline.runner.ran) - before


def _write(points: list[dict], recipe: Recipe, out: pathlib.Path) -> dict:
    rows, found = results.summarise(points, recipe)
    return tables.write_outputs(out, rows, recipe, found)


def _kv_name(num_kv_heads: int, num_heads: int) -> str:
    if num_kv_heads == num_heads:
        return "mha"
    return "mqa" if num_kv_heads == 1 else f"gqa{num_kv_heads}"


def _seed_suffix(seed: int) -> str:
    return f"-seed{seed}" if seed else ""


def _task_module(model_bindings: Sequence[str]) -> str | None:
    """MIXTURE_OR_TASK_MODULE from the recipe's model bindings (where the recipes set it)."""
    for b in model_bindings:
        m = re.match(r"\s*MIXTURE_OR_TASK_MODULE\s*=\s*['\"](.+)['\"]\s*$", b)
        if m:
            return m.group(1)
    return None


def _per_example_scores(d: pathlib.Path, metrics: dict, step: int | None) -> dict:
    """Per-example headline scores of each evaluated task, from seqio's inference log."""
    from tasks import metrics as metrics_lib

    heads = tables.headline_metrics()
    out = {}
    for task in metrics:
        path = d / f"{task}-{step or 0:06}.jsonl"
        if task not in heads or not path.exists():
            continue
        rows = utils.read_jsonl(path)
        targets = [r["target"] for r in rows]
        predictions = [r.get("prediction", r.get("output")) for r in rows]
        kind, values = metrics_lib.per_example(heads[task], targets, predictions)
        out[task] = {"metric": heads[task], "kind": kind, "data": values.tolist()}
    return out


def _last(summary: dict) -> dict:
    m = summary.get("last_metrics") or {}
    return {k: m[k] for k in ("loss", "accuracy") if k in m}


def _step_dir(model_dir: str) -> pathlib.Path:
    """The latest `<model_dir>/checkpoints/<step>` directory."""
    from gqa_t5 import checkpointing

    step_dir = checkpointing.runner_step_dir(pathlib.Path(model_dir))
    if step_dir is None:
        raise FileNotFoundError(f"no checkpoint under {pathlib.Path(model_dir) / 'checkpoints'}")
    return step_dir


def run_recipe(
    recipe: Recipe,
    output_dir: str | pathlib.Path,
    print_fn=print,
    workers: int = 1,
    collect_only: bool = False,
) -> dict:
    """Run the pipeline and write table1.{md,json} and the figures; returns the table.

    `workers` > 1 runs the grid points on that many processes sharing the accelerator
    (`Pipeline.run_parallel`); this process then only collects (every stage is done).
    `collect_only` runs no stage: the tables of a run cut short (or brought back from
    another machine), with the extra fine-tuning seeds that did not finish left out; a
    missing first-pass stage is an error naming it.
    """
    if workers < 1:
        raise errors.BadInput(f"--workers {workers}: use 1 (serial) or more")
    out = pathlib.Path(output_dir).expanduser().absolute()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pipeline = Pipeline(recipe, out, print_fn, collect_only)

    def write(points: list[dict]) -> dict:
        return _write(points, recipe, out)

    by_workers = 0
    if workers > 1 and not collect_only:
        by_workers = pipeline.run_parallel(workers, out / ".jax_cache")
    with _compilation_cache(out / ".jax_cache"):
        points = pipeline.run(on_first_pass=write)
    table = write(points)
    print_fn(table["markdown"])
    print_fn(table["findings_text"])
    print_fn(
        f"summary: {len(points)} rows, {len(pipeline.runner.ran) + by_workers} stages run"
        f"{f' ({by_workers} by {workers} workers)' if workers > 1 else ''}, "
        f"{max(0, pipeline.runner.count - len(pipeline.runner.ran) - by_workers)} skipped, "
        f"{time.perf_counter() - t0:.0f}s; outputs in {out}"
    )
    return table


@contextlib.contextmanager
def _compilation_cache(path: pathlib.Path):
    """Persist XLA compilations (grid points of one G compile the same steps); restore after."""
    import jax

    keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    before = {k: getattr(jax.config, k) for k in keys}
    if before["jax_compilation_cache_dir"] is None:  # keep a cache the user configured
        jax.config.update("jax_compilation_cache_dir", str(path))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    try:
        yield
    finally:
        for k, v in before.items():
            jax.config.update(k, v)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gin_file", action="append", default=[])
    parser.add_argument("--gin_bindings", action="append", default=[])
    parser.add_argument("--gin_search_paths", action="append", default=[])
    parser.add_argument("--output_dir", default="runs/reproduce")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="grid points on this many processes sharing the accelerator (after pre-training)",
    )
    parser.add_argument(
        "--collect_only",
        action="store_true",
        help="run no stage: write the tables from the stages that finished",
    )
    parser.add_argument("--verbose", action="store_true", help="show known-harmless warnings")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(gin_utils.rewrite_gin_args(argv))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    utils.setup_logging(args.verbose)
    paths = [p for arg in args.gin_search_paths for p in arg.split(",") if p]

    def body() -> int | None:
        try:
            gin_utils.parse_gin(args.gin_file or [DEFAULT_GIN], args.gin_bindings, paths)
        except (ValueError, SyntaxError, NameError, TypeError, ImportError, OSError) as e:
            msg = errors.one_line(str(e)) + gin_checks.did_you_mean(str(e))
            raise errors.BadInput(f"gin: {msg}") from e
        gin_checks.check_config(args.gin_bindings)
        recipe = gin.get_configurable(Recipe)()
        gin.clear_config()
        try:
            run_recipe(
                recipe, args.output_dir, workers=args.workers, collect_only=args.collect_only
            )
        except errors.Terminated:
            print(
                "gqa-t5-reproduce: stopped by SIGTERM; finished stages are kept (a training "
                "stage saved its checkpoint): the same command resumes",
                file=sys.stderr,
            )
            return errors.EXIT_TERMINATED
        except stages.StageError as e:
            raise errors.RunFailure(str(e)) from e

    return errors.run_cli("gqa-t5-reproduce", body, argv, args.verbose)


def console_main() -> None:
    from gqa_t5 import reproduce as this  # the gin-registered module, also under `python -m`

    sys.exit(this.main())


if __name__ == "__main__":
    console_main()

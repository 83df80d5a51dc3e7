"""MHA -> GQA checkpoint conversion: pure functions on params, and the command line.

Key and value projections of the chosen attention blocks are reduced from K_in to G
key/value heads by one of the paper's methods; query, output and relative position
bias parameters pass through untouched. Groups are contiguous: new head g replaces old
heads g*(K_in/G) .. (g+1)*(K_in/G)-1, matching query head n -> key/value head n // (N/G).

    python -m gqa_t5.convert --input DIR --output OUT --num_kv_heads 8
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import logging
import re
import sys
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gqa_t5 import conversion, errors, gin_utils
from gqa_t5.checkpoints import CheckpointError, open_checkpoint, orbax_params, t5x_writer
from gqa_t5.models import kv_cache_bytes_per_token
from gqa_t5.network import T5Config

METHODS = ("mean", "first", "random")
# Methods that see a whole attention block (query and output kernels too): `conversion`.
LAYER_METHODS = ("weighted", "aligned", "aligned_weighted")
CALIBRATED = ("weighted", "aligned_weighted")  # keys weighted by the query covariance
GROUPINGS = conversion.GROUPINGS
OUTPUT_FORMATS = ("orbax", "t5x")  # gqa-t5's params checkpoint, or t5x's train-state layout
# Block name -> (stack, attention module) in the params tree.
BLOCKS = {
    "decoder_self": ("decoder", "self_attention"),
    "cross": ("decoder", "encoder_decoder_attention"),
    "encoder": ("encoder", "attention"),
}
DEFAULT_BLOCKS = ("decoder_self", "cross")
_KV = re.compile(r"(encoder|decoder)/layers_\d+/(\w+)/(key|value)/kernel")


def blocks_for(group_encoder: bool) -> tuple[str, ...]:
    return DEFAULT_BLOCKS + (("encoder",) if group_encoder else ())


def is_grouped_kv(name: str, blocks: Sequence[str]) -> bool:
    """Whether `name` is a key/value kernel of one of `blocks`."""
    m = _KV.fullmatch(name)
    return bool(m) and (m.group(1), m.group(2)) in {BLOCKS[b] for b in blocks}


def _random_kernel(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Fresh kernel as `layers.default_kernel_init`: truncated normal, variance 1/fan_in."""
    # 0.8796... is the std of a unit normal truncated to [-2, 2] (as in jax's initialiser).
    std = np.sqrt(1.0 / shape[0]) / 0.87962566103423978
    x = rng.standard_normal(shape)
    while np.any(bad := np.abs(x) > 2):
        x[bad] = rng.standard_normal(int(bad.sum()))
    return (x * std).astype(np.float32)


def group_kv_kernel(
    kernel_DX: np.ndarray,
    head_dim: int,
    num_kv_heads: int,
    method: str = "mean",
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Reduce a key/value kernel [D, K_in*H] to [D, G*H] by mean, first or random."""
    D, X = kernel_DX.shape
    if X % head_dim:
        raise ValueError(f"kernel width {X} is not a multiple of head_dim {head_dim}")
    k_in = X // head_dim
    if num_kv_heads < 1 or k_in % num_kv_heads:
        raise ValueError(
            f"{k_in} key/value heads cannot be split into num_kv_heads={num_kv_heads} equal "
            f"contiguous groups; choose a divisor of {k_in}"
        )
    per = k_in // num_kv_heads
    kernel_DGPH = kernel_DX.reshape(D, num_kv_heads, per, head_dim)
    if method == "mean":
        # float64 accumulation: the result is the exact group mean rounded once.
        out = kernel_DGPH.astype(np.float64).mean(axis=2)
    elif method == "first":
        out = kernel_DGPH[:, :, 0, :]
    elif method == "random":
        out = _random_kernel((D, num_kv_heads * head_dim), rng or np.random.default_rng(0))
    else:
        raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
    return np.ascontiguousarray(out.reshape(D, num_kv_heads * head_dim), dtype=np.float32)


def tensor_rng(seed: int, name: str) -> np.random.Generator:
    """Per-tensor generator, so 'random' does not depend on conversion order."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def convert_tensor(
    name: str,
    array: np.ndarray,
    *,
    head_dim: int,
    num_kv_heads: int,
    method: str = "mean",
    blocks: Sequence[str] = DEFAULT_BLOCKS,
    seed: int = 0,
) -> np.ndarray:
    """One parameter after conversion (unchanged unless it is a grouped key/value kernel)."""
    if not is_grouped_kv(name, blocks):
        return array
    g = _block_kv_heads(num_kv_heads, name)
    return group_kv_kernel(array, head_dim, g, method, tensor_rng(seed, name))


def _block_kv_heads(num_kv_heads: Any, name: str) -> int:
    """G of the block a kernel belongs to (`num_kv_heads` may be per decoder layer)."""
    m = _KV.fullmatch(name)
    block = {v: k for k, v in BLOCKS.items()}[(m.group(1), m.group(2))]
    return conversion.layer_kv_heads(num_kv_heads, int(name.split("/")[1][7:]), block)


def convert_params(
    params: Mapping[str, Any],
    *,
    head_dim: int,
    num_kv_heads: int,
    method: str = "mean",
    group_encoder: bool = False,
    seed: int = 0,
) -> dict:
    """Pure conversion of a nested flax params dict (params in, params out)."""
    blocks = blocks_for(group_encoder)
    flat = orbax_params.flatten(params)
    out = {
        n: convert_tensor(
            n,
            np.asarray(a),
            head_dim=head_dim,
            num_kv_heads=num_kv_heads,
            method=method,
            blocks=blocks,
            seed=seed,
        )
        for n, a in flat.items()
    }
    return orbax_params.unflatten(out)


# ----------------------------------------------------------------------------------------
# Configs and shapes.


def _need(shapes: Mapping[str, tuple], name: str, src: str) -> tuple[int, ...]:
    if name not in shapes:
        raise CheckpointError(f"{src}: missing tensor {name}; is this a T5 encoder-decoder?")
    return shapes[name]


def _source_kv_heads(shapes: Mapping[str, tuple], H: int, src: str) -> Any:
    """One int, or ((self, cross), ...) per decoder layer when the layers differ."""
    pairs = []
    for i in range(len({n.split("/")[1] for n in shapes if n.startswith("decoder/layers_")})):
        p = f"decoder/layers_{i}"
        self_k = _need(shapes, f"{p}/self_attention/key/kernel", src)[1] // H
        cross_k = _need(shapes, f"{p}/encoder_decoder_attention/key/kernel", src)[1] // H
        pairs.append((self_k, cross_k))
    flat = {k for pair in pairs for k in pair}
    return flat.pop() if len(flat) == 1 else tuple(pairs)


def infer_config(shapes: Mapping[str, tuple], hints: Mapping[str, Any], src: str) -> T5Config:
    """The T5Config (float32) whose params have these shapes."""
    V, D = _need(shapes, "token_embedder/embedding", src)
    N, buckets = _need(shapes, "encoder/relpos_bias/rel_embedding", src)
    q = _need(shapes, "encoder/layers_0/attention/query/kernel", src)
    H = q[1] // N
    K = _source_kv_heads(shapes, H, src)
    K_enc = _need(shapes, "encoder/layers_0/attention/key/kernel", src)[1] // H
    gated = "encoder/layers_0/mlp/wi_0/kernel" in shapes
    F = _need(shapes, f"encoder/layers_0/mlp/{'wi_0' if gated else 'wi'}/kernel", src)[1]
    layers = {
        s: len({n.split("/")[1] for n in shapes if n.startswith(f"{s}/layers_")})
        for s in ("encoder", "decoder")
    }
    acts = hints.get("mlp_activations", ("gelu", "linear") if gated else ("relu",))
    if len(acts) != (2 if gated else 1):
        raise CheckpointError(f"{src}: MLP activations {acts} do not match the MLP tensors")
    try:
        return T5Config(
            vocab_size=V,
            emb_dim=D,
            num_heads=N,
            num_kv_heads=K,
            head_dim=H,
            mlp_dim=F,
            num_encoder_layers=layers["encoder"],
            num_decoder_layers=layers["decoder"],
            mlp_activations=tuple(acts),
            group_encoder=K_enc != N,
            dtype="float32",
            logits_via_embedding=bool(hints.get("logits_via_embedding", False)),
            relative_attention_num_buckets=buckets,
            relative_attention_max_distance=hints.get("relative_attention_max_distance", 128),
        )
    except ValueError as e:
        raise CheckpointError(f"{src}: tensor shapes give an invalid T5 config: {e}") from e


def expected_shapes(cfg: T5Config) -> dict[str, tuple[int, ...]]:
    """Flat name -> shape of the params of `cfg`, computed abstractly (no memory)."""
    import jax

    from gqa_t5.models import EncoderDecoderModel

    tree = jax.eval_shape(lambda: EncoderDecoderModel(cfg).init(jax.random.PRNGKey(0)))
    params = jax.tree_util.tree_map(lambda s: tuple(s.shape), tree["params"])
    return orbax_params.flatten(params)


def check_shapes(found: Mapping[str, tuple], expected: Mapping[str, tuple], src: str) -> None:
    """CheckpointError listing missing, extra and mis-shaped tensors, if any."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    wrong = [
        f"{n}: {found[n]} (expected {expected[n]})"
        for n in sorted(set(found) & set(expected))
        if tuple(found[n]) != tuple(expected[n])
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong)):
        if items:
            more = f" ... and {len(items) - 8} more" if len(items) > 8 else ""
            problems.append(f"{label} tensors: {', '.join(items[:8])}{more}")
    if problems:
        raise CheckpointError(
            f"{src} does not match a T5 encoder-decoder: "
            + "; ".join(problems)
            + ". Check that the checkpoint is complete and is a T5 (1.0 or 1.1) model"
        )


def config_record(cfg: T5Config) -> dict:
    return {
        "vocab_size": cfg.vocab_size,
        "emb_dim": cfg.emb_dim,
        "num_heads": cfg.num_heads,
        "num_kv_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "mlp_dim": cfg.mlp_dim,
        "num_encoder_layers": cfg.num_encoder_layers,
        "num_decoder_layers": cfg.num_decoder_layers,
        "mlp_activations": list(cfg.mlp_activations),
        "group_encoder": cfg.group_encoder,
        "logits_via_embedding": cfg.logits_via_embedding,
        "relative_attention_num_buckets": cfg.relative_attention_num_buckets,
        "relative_attention_max_distance": cfg.relative_attention_max_distance,
    }


def _count(shapes: Mapping[str, tuple]) -> int:
    return int(sum(np.prod(s) for s in shapes.values()))


# ----------------------------------------------------------------------------------------
# Checkpoint -> checkpoint.


def convert_checkpoint(
    input_path: str | Path,
    output_path: str | Path,
    *,
    num_kv_heads: Any,
    method: str = "mean",
    group_encoder: bool = False,
    seed: int = 0,
    overwrite: bool = False,
    fmt: str = "auto",
    output_format: str = "orbax",
    log: Callable[[str], None] = print,
    grouping: str = "contiguous",
    calibration: str | None = None,
    calibration_examples: int = 256,
    calibration_module: str | None = "tasks",
) -> dict:
    """Read, convert tensor by tensor, write Orbax (or t5x) + conversion.json; return the record.

    Methods in LAYER_METHODS and `grouping="similarity"` hold the source in memory: they
    transform query, key, value and output kernels of a block together (`conversion`).
    Every output gets model.gin (per-layer G is a tuple in NUM_KV_HEADS) and checksums.
    """
    if method not in METHODS + LAYER_METHODS:
        raise errors.BadInput(f"--method {method!r}; use one of {METHODS + LAYER_METHODS}")
    if grouping not in GROUPINGS:
        raise errors.BadInput(f"--grouping {grouping!r}; use one of {GROUPINGS}")
    if grouping != "contiguous" and method == "random":
        raise errors.BadInput("--method random ignores the heads; use --grouping contiguous")
    if calibration and method not in CALIBRATED:
        raise errors.BadInput(f"--calibration is used by --method {'|'.join(CALIBRATED)} only")
    if output_format not in OUTPUT_FORMATS:
        raise CheckpointError(f"--output_format {output_format!r}; use one of {OUTPUT_FORMATS}")
    output_path = Path(output_path).absolute()
    if output_path.exists() and not overwrite:
        raise CheckpointError(f"output {output_path} already exists; pass --overwrite")
    errors.check_writable_parent(output_path, "--output")
    reader = open_checkpoint(input_path, fmt)
    src = f"{input_path} ({reader.format})"
    found = reader.shapes()
    before = infer_config(found, reader.hints, src)
    check_shapes(found, expected_shapes(before), src)
    after = _target_config(before, num_kv_heads, group_encoder, src)
    blocks = blocks_for(group_encoder)
    out_shapes = expected_shapes(after)
    progress = _Progress(len(out_shapes), _count(found) * 4, log)
    whole, report = None, None
    if method in LAYER_METHODS or grouping != "contiguous":
        log(f"reading {src} into memory for --method {method} --grouping {grouping}")
        try:
            flat = {n: reader.read(n) for n in found}
            sigmas = None
            if calibration:
                sigmas = _calibrate(
                    before, flat, calibration, calibration_examples, calibration_module, log
                )
            whole, report = conversion.convert_flat(
                flat,
                sigmas=sigmas,
                head_dim=before.head_dim,
                num_kv_heads=after.num_kv_heads,
                method=method,
                grouping=grouping,
                blocks=blocks,
            )
        except conversion.ConversionError as e:
            raise errors.BadInput(f"{src}: {e}") from e
    checksums: dict[str, str] = {}

    def leaf(name: str) -> orbax_params.LazyArray:
        def load():
            if whole is not None:
                out = whole[name]
                progress.read(out.nbytes)
            else:
                array = reader.read(name)
                progress.read(array.nbytes)
                out = convert_tensor(
                    name,
                    array,
                    head_dim=before.head_dim,
                    num_kv_heads=after.num_kv_heads,
                    method=method,
                    blocks=blocks,
                    seed=seed,
                )
            checksums[name] = orbax_params.checksum(out)
            return out

        return orbax_params.LazyArray(out_shapes[name], np.float32, load)

    record = {
        "source": str(Path(input_path).absolute()),
        "format": reader.format,
        "method": method,
        "num_kv_heads": after.num_kv_heads,
        "blocks": list(blocks),
        "seed": seed if method == "random" else None,
        "grouping": grouping,
        "calibration": calibration and {"task": calibration, "examples": calibration_examples},
        "config_before": config_record(before),
        "config_after": config_record(after),
        "gin_overrides": [
            f"NUM_KV_HEADS = {after.num_kv_heads!r}",
            f"GROUP_ENCODER = {group_encoder}",
        ],
        "model_gin": "model.gin",
        "param_count_before": _count(found),
        "param_count_after": _count(out_shapes),
        "kv_cache_bytes_per_token_before": kv_cache_bytes_per_token(before),
        "kv_cache_bytes_per_token_after": kv_cache_bytes_per_token(after),
        "kv_cache_dtype": "bfloat16",
        "block_errors": report,  # per block: groups, relative key/value pooling error
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    params = orbax_params.unflatten({n: leaf(n) for n in out_shapes})
    log(
        f"converting {src}: {len(out_shapes)} tensors, {_count(found) / 1e6:.1f}M params, "
        f"K={_g_text(before.num_kv_heads)} -> G={_g_text(after.num_kv_heads)} "
        f"({method}, blocks {','.join(blocks)})"
    )
    errors.remove_stale_temporaries(output_path, log)
    save = orbax_params.save_params
    if output_format == "t5x":  # checkpoint_<step>/state, t5x.train's INITIAL_CHECKPOINT_PATH
        step = int(reader.hints.get("step", 0))
        record["output_format"], record["t5x_step_dir"] = (
            "t5x",
            str(output_path / t5x_writer.step_dir_name(step)),
        )
        save = functools.partial(t5x_writer.save_t5x, step=step)

    def record_text() -> str:  # once every tensor is written, so the checksums are known
        record["checksums"] = dict(sorted(checksums.items()))
        return json.dumps(record, indent=2) + "\n"

    # Both formats get conversion.json (with checksums) and model.gin at the output's root:
    # beside the Orbax params, or beside t5x's checkpoint_<step>/ directory. restore_params
    # verifies the checksums of the Orbax output; t5x reads its own format and ignores both
    # files (they describe the model for gqa-t5 when the step directory is converted back).
    save(
        output_path,
        params,
        overwrite=overwrite,
        extra_files={
            orbax_params.RECORD_NAME: record_text,
            "model.gin": gin_utils.model_gin_text(record["config_after"], record["source"]),
        },
        on_written=progress.written,
    )
    log(progress.summary(output_path))
    if output_format == "t5x":
        log(f"t5x: --gin.INITIAL_CHECKPOINT_PATH=\"'{record['t5x_step_dir']}'\"")
    return record


def _calibrate(cfg, flat, task, examples, module, log) -> dict:
    from gqa_t5.conversion import calibration

    try:
        return calibration.calibrate(cfg, flat, task, examples, module, log)
    except (ValueError, ImportError, FileNotFoundError) as e:
        raise errors.BadInput(f"--calibration {task}: {str(e).splitlines()[0]}") from e


def _target_config(before: T5Config, g: int, group_encoder: bool, src: str) -> T5Config:
    if before.group_encoder and not group_encoder:
        raise CheckpointError(
            f"{src}: encoder self-attention is already grouped; pass --group_encoder"
        )
    k_in = before.num_kv_heads
    if isinstance(g, int) and isinstance(k_in, int):
        if g < 1 or g > k_in or k_in % g or (group_encoder and before.num_heads % g):
            raise errors.BadInput(
                f"--num_kv_heads={g} must divide the source's {k_in} key/value heads "
                f"(num_heads={before.num_heads}); try one of "
                f"{[d for d in range(1, k_in + 1) if k_in % d == 0]}"
            )
    try:
        after = T5Config(
            **{
                **config_record(before),
                "num_kv_heads": g,
                "group_encoder": group_encoder,
                "dtype": "float32",
            }
        )
    except ValueError as e:
        raise errors.BadInput(f"--num_kv_heads={_g_text(g)}: {e}") from e
    for i, (pair_in, pair_out) in enumerate(
        zip(before.per_layer_kv_heads, after.per_layer_kv_heads, strict=True)
    ):
        for k_in, k in zip(pair_in, pair_out, strict=True):
            if k > k_in or k_in % k or (group_encoder and before.num_heads % k):
                where = f" (decoder layer {i})" if not isinstance(g, int) else ""
                raise errors.BadInput(
                    f"--num_kv_heads={_g_text(g)} must divide the source's {k_in} key/value "
                    f"heads{where} (num_heads={before.num_heads}); try one of "
                    f"{[d for d in range(1, k_in + 1) if k_in % d == 0]}"
                )
    return after


def _g_text(g: Any) -> str:
    """--num_kv_heads as typed: 2, or 2,1 per layer, or 2/1,1/1 per layer (self/cross)."""
    if isinstance(g, int):
        return str(g)
    return ",".join(str(e) if isinstance(e, int) else "/".join(map(str, e)) for e in g)


def parse_kv_heads(text: str) -> Any:
    """'2' -> 2; '2,1' -> (2, 1) per decoder layer; '2/1,1/1' -> ((2, 1), (1, 1))."""
    try:
        entries = [tuple(int(k) for k in e.split("/")) for e in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give G (8), one G per decoder layer (2,1) or self/cross pairs (2/1,1/1)"
        ) from None
    if len(entries) == 1 and len(entries[0]) == 1:
        return entries[0][0]
    return tuple(e[0] if len(e) == 1 else e for e in entries)


class _Progress:
    """Prints tensors done, MB/s and ETA at most every few seconds."""

    def __init__(self, total: int, total_bytes: int, log: Callable[[str], None]):
        self.total, self.total_bytes, self.log = total, total_bytes, log
        self.done = self.bytes = 0
        self.start = self.last = time.perf_counter()

    def read(self, nbytes: int) -> None:
        self.bytes += nbytes

    def written(self, name: str, array: np.ndarray) -> None:
        self.done += 1
        now = time.perf_counter()
        if now - self.last > 5 or self.done == self.total:
            self.last = now
            rate = self.bytes / max(now - self.start, 1e-9)
            eta = (self.total_bytes - self.bytes) / max(rate, 1e-9)
            self.log(
                f"  [{self.done}/{self.total}] {self.bytes / 1e6:.0f} MB read, "
                f"{rate / 1e6:.1f} MB/s, ETA {eta:.0f}s ({name})"
            )

    def summary(self, out: Path) -> str:
        dt = time.perf_counter() - self.start
        return (
            f"wrote {out}: {self.done} tensors, {self.bytes / 1e6:.0f} MB in {dt:.1f}s "
            f"({self.bytes / 1e6 / max(dt, 1e-9):.1f} MB/s)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gqa-t5-convert", description=__doc__.split("\n")[0])
    p.add_argument("--input", required=True, help="checkpoint directory or file")
    p.add_argument("--output", required=True, help="new checkpoint directory")
    p.add_argument(
        "--output_format",
        choices=OUTPUT_FORMATS,
        default="orbax",
        help="orbax: gqa-t5's params checkpoint; t5x: OUTPUT/checkpoint_<step>/ as t5x.train "
        "restores it (INITIAL_CHECKPOINT_PATH), with a fresh Adafactor state",
    )
    p.add_argument(
        "--num_kv_heads",
        type=parse_kv_heads,
        required=True,
        help="G, key/value heads: 8, or per decoder layer 2,1 or self/cross pairs 2/1,1/1",
    )
    p.add_argument("--method", choices=METHODS + LAYER_METHODS, default="mean")
    p.add_argument(
        "--grouping",
        choices=GROUPINGS,
        default="contiguous",
        help="which heads share a K/V head: the paper's contiguous groups, or by similarity",
    )
    p.add_argument("--seed", type=int, default=0, help="for --method random")
    p.add_argument(
        "--group_encoder",
        action="store_true",
        help="also group encoder self-attention (the paper keeps it MHA)",
    )
    p.add_argument(
        "--calibration",
        default=None,
        help="SeqIO task whose train examples give the query covariance (weighted methods)",
    )
    p.add_argument("--calibration_examples", type=int, default=256)
    p.add_argument("--calibration_module", default="tasks", help="module that registers the task")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument(
        "--format",
        default="auto",
        choices=("auto", "t5x", "t5x_orbax", "mesh_tf", "huggingface", "gqa_t5"),
    )
    p.add_argument("--verbose", action="store_true", help="show library warnings and logs")
    args = p.parse_args(argv)
    errors.setup_logging(args.verbose)
    if not args.verbose:  # Orbax logs each failed write's traceback; the error says it all
        for name in ("absl", "orbax"):
            logging.getLogger(name).setLevel(logging.CRITICAL)

    def body() -> None:
        convert_checkpoint(
            args.input,
            args.output,
            num_kv_heads=args.num_kv_heads,
            method=args.method,
            group_encoder=args.group_encoder,
            seed=args.seed,
            overwrite=args.overwrite,
            fmt=args.format,
            grouping=args.grouping,
            calibration=args.calibration,
            calibration_examples=args.calibration_examples,
            calibration_module=args.calibration_module,
            output_format=args.output_format,
        )

    return errors.run_cli("gqa-t5-convert", body, list(argv or sys.argv[1:]), args.verbose)


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console_main()

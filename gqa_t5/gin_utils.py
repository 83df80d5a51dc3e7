"""Gin plumbing shared by the entry points, in t5x's flag conventions.

`--gin_file=F` (repeatable), `--gin.MACRO=value` / `--gin_bindings='X = Y'` and
`--gin_search_paths=a,b`. The package's own `gin/` directory is always searched, so
`include 'models/t5_1_1/large.gin'` works from a source tree and from an installed wheel.
"""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Sequence


def gin_dir() -> pathlib.Path:
    """The directory holding gqa-t5's gin files (installed copy first, then source tree)."""
    here = pathlib.Path(__file__).resolve().parent
    for candidate in (here / "gin", here.parent / "gin"):
        if (candidate / "models").is_dir():
            return candidate
    raise FileNotFoundError(
        f"gqa-t5's gin files are missing (looked in {here / 'gin'} and {here.parent / 'gin'}); "
        "reinstall with `pip install -e .` from the repository root"
    )


def rewrite_gin_args(argv: Sequence[str]) -> list[str]:
    """Turn t5x-style `--gin.NAME=VALUE` flags into `--gin_bindings=NAME = VALUE`."""
    out = []
    for arg in argv:
        if arg.startswith("--gin.") and "=" in arg:
            name, value = arg[len("--gin.") :].split("=", 1)
            out.append(f"--gin_bindings={name} = {value}")
        else:
            out.append(arg)
    return out


def parse_gin(
    gin_files: Sequence[str],
    bindings: Sequence[str] = (),
    search_paths: Sequence[str] = (),
    finalize: bool = True,
) -> None:
    """Parse gin files and bindings with the package's gin dir on the search path."""
    import gin

    _guard_system_path_reader()
    gin.clear_config()
    # The package's own files first: gin logs an error for every search path it misses.
    paths = list(dict.fromkeys([str(gin_dir())] + [str(p) for p in search_paths if p] + ["."]))
    for path in paths:
        gin.add_config_file_search_path(path)
    resolved = [_resolve(f, paths) for f in gin_files]
    missing = [f for f, r in zip(gin_files, resolved, strict=True) if r is None]
    if missing:
        raise FileNotFoundError(
            f"gin file(s) not found: {missing}; searched {paths}. Pass --gin_search_paths "
            f"or a path relative to one of them (e.g. models/t5_1_1/small.gin)"
        )
    # gin logs "Path not found" for each place it tries before the one that holds an
    # include; a real miss still raises, so mute those logs while parsing.
    logging.disable(logging.ERROR)
    try:
        gin.parse_config_files_and_bindings(resolved, list(bindings), finalize_config=finalize)
    finally:
        logging.disable(logging.NOTSET)


def _guard_system_path_reader() -> None:
    """Make gin's Python-package file reader skip namespace packages instead of crashing.

    NOTE: gin tries an include such as 'runs/pretrain.gin' first relative to the working
    directory and then as a file inside a Python package `runs`; a plain directory `runs/`
    in the working directory (the pipeline's default output) is a namespace package with no
    origin, and gin's check raises TypeError instead of answering "not here".
    """
    from gin import config, resource_reader

    def exists(path: str) -> bool:
        try:
            return resource_reader.system_path_file_exists(path)
        except TypeError:
            return False

    config._FILE_READERS[:] = [
        (reader, exists if check is resource_reader.system_path_file_exists else check)
        for reader, check in config._FILE_READERS
    ]


def _resolve(name: str, paths: Sequence[str]) -> str | None:
    if pathlib.Path(name).is_file():
        return str(pathlib.Path(name).resolve())
    for d in paths:
        if (pathlib.Path(d) / name).is_file():
            return str(pathlib.Path(d) / name)
    return None


def model_from_gin(
    gin_files: Sequence[str], bindings: Sequence[str] = (), search_paths: Sequence[str] = ()
):
    """Build the `MODEL` macro's EncoderDecoderModel from gin files and bindings."""
    import gin

    parse_gin(gin_files, bindings, search_paths)
    return gin.query_parameter("%MODEL").scoped_configurable_fn()


# Model macros and T5Config fields written by `model_gin_text`, in base.gin's layout.
_MODEL_MACROS = {
    "num_heads": "NUM_HEADS",
    "num_kv_heads": "NUM_KV_HEADS",
    "group_encoder": "GROUP_ENCODER",
    "vocab_size": "VOCAB_SIZE",
}


def model_gin_text(config: dict, source: str = "") -> str:
    """A self-contained model gin file for a `convert.config_record` dict.

    `--gin_file=<ckpt>/model.gin --gin_file=runs/eval.gin` then builds exactly the
    converted model; the macros (NUM_KV_HEADS, ...) stay overridable as in base.gin.
    """
    lines = [
        "# The model of a checkpoint written by gqa-t5-convert"
        + (f" from {source}" if source else "")
        + ".",
        "# Use it in place of a size file: --gin_file=<checkpoint>/model.gin "
        "--gin_file=runs/eval.gin",
        "from __gin__ import dynamic_registration",
        "",
        "from gqa_t5 import models",
        "from gqa_t5 import network",
        "",
    ]
    for field, macro in _MODEL_MACROS.items():
        lines.append(f"{macro} = {config[field]!r}")
    lines += [
        "DROPOUT_RATE = 0.0",
        "ACTIVATION_DTYPE = 'bfloat16'  # compute dtype; parameters are float32",
        "Z_LOSS = 1e-4",
        "",
        "MODEL = @models.EncoderDecoderModel()",
        "models.EncoderDecoderModel:",
        "  config = @network.T5Config()",
        "  z_loss = %Z_LOSS",
        "",
        "network.T5Config:",
        "  dtype = %ACTIVATION_DTYPE",
        "  dropout_rate = %DROPOUT_RATE",
        "  float32_attention_logits = True",
    ]
    for field, value in config.items():
        if field in _MODEL_MACROS:
            lines.append(f"  {field} = %{_MODEL_MACROS[field]}")
        elif isinstance(value, list):
            lines.append(f"  {field} = {tuple(value)!r}")
        else:
            lines.append(f"  {field} = {value!r}")
    return "\n".join(lines) + "\n"

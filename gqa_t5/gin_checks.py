"""Checks on a parsed gin config: command-line macros nobody reads, values of the wrong type.

gin itself rejects an unknown configurable or parameter, but a macro is just a name: a
typo (`--gin.NUM_KV_HEDS=2`) defines a new macro that no binding reads, and the run goes
on with the default. `check_config` turns both into `errors.BadInput` naming the fix.
"""

from __future__ import annotations

import collections.abc
import difflib
import re
import types
import typing
from collections.abc import Iterator, Sequence
from typing import Any

from gqa_t5.errors import BadInput

_MACRO_BINDING = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*=")


def _config() -> dict:
    import gin.config

    return gin.config._CONFIG  # noqa: SLF001 - gin has no public view of the bindings


def _is_macro_ref(value: Any) -> str | None:
    import gin.config

    if isinstance(value, gin.config.ConfigurableReference) and value.selector == "gin.macro":
        return value.scoped_selector.rsplit("/", 1)[0]
    return None


def _walk_values(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, list | tuple | set):
        for v in value:
            yield from _walk_values(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _walk_values(v)


def _macros() -> dict[str, Any]:
    return {scope: b.get("value") for (scope, sel), b in _config().items() if sel == "gin.macro"}


def _referenced_macros() -> set[str]:
    used = set()
    for (_, _), bindings in _config().items():
        for value in bindings.values():
            for v in _walk_values(value):
                name = _is_macro_ref(v)
                if name:
                    used.add(name)
    return used


def binding_names(bindings: Sequence[str]) -> list[str]:
    """The left-hand names of `NAME = value` bindings."""
    out = []
    for b in bindings:
        for line in b.splitlines():
            m = _MACRO_BINDING.match(line)
            if m:
                out.append(m.group(1))
    return out


def check_macros_read(cli_bindings: Sequence[str]) -> None:
    """BadInput for a command-line macro that no configurable reads, with a suggestion."""
    macros, used = _macros(), _referenced_macros()
    for name in binding_names(cli_bindings):
        if "." in name or "/" in name or name not in macros or name in used:
            continue
        known = sorted(used)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = f"did you mean --gin.{close[0]}?" if close else f"macros read here: {known}"
        raise BadInput(f"--gin.{name} is not read by any configurable of these gin files; {hint}")


def _resolve(value: Any, chain: tuple[str, ...] = ()) -> tuple[Any, tuple[str, ...]]:
    """Follow macro references to the literal; also return the macros passed through."""
    name = _is_macro_ref(value)
    macros = _macros()
    while name is not None and name in macros and name not in chain:
        chain = chain + (name,)
        value = macros[name]
        name = _is_macro_ref(value)
    return value, chain


def _matches(value: Any, hint: Any) -> bool:
    """Whether `value` fits the annotation `hint` (unknown annotations fit anything)."""
    import gin.config

    if hint is Any or isinstance(value, gin.config.ConfigurableReference):
        return True
    if value is None:
        return hint is type(None) or _allows_none(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (str, bool):
        return isinstance(value, hint)
    if origin in (collections.abc.Sequence, list, tuple):
        return isinstance(value, list | tuple)
    if origin in (collections.abc.Mapping, dict):
        return isinstance(value, dict)
    if origin is None and isinstance(hint, type) and hint.__module__ == "builtins":
        return isinstance(value, hint)
    return True


def _allows_none(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in (
        typing.get_args(hint)
    )


def _type_hints(selector: str) -> dict[str, Any]:
    import gin.config

    try:
        fn = gin.config._REGISTRY.get_match(selector).wrapped  # noqa: SLF001
    except Exception:  # noqa: BLE001
        return {}
    hints: dict[str, Any] = {}
    for target in (fn, getattr(fn, "__init__", None)) if isinstance(fn, type) else (fn,):
        try:  # an unresolvable annotation is not checked
            hints.update(typing.get_type_hints(target))
        except Exception:  # noqa: BLE001
            pass
    hints.pop("return", None)
    return hints


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def check_types() -> None:
    """BadInput for a binding whose value does not fit the configurable's type hint."""
    for (_scope, selector), bindings in _config().items():
        if selector == "gin.macro":
            continue
        hints = _type_hints(selector)
        for param, raw in bindings.items():
            if param not in hints:
                continue
            value, chain = _resolve(raw)
            if _matches(value, hints[param]):
                continue
            short = selector.rsplit(".", 2)
            where = ".".join(short[-2:]) + f".{param}"
            flag = f"--gin.{chain[-1]}" if chain else f"--gin.{where}"
            raise BadInput(
                f"{flag}={value!r}: {where} expects {_type_name(hints[param])}, got "
                f"{type(value).__name__}; pass a value of that type (strings need quotes: "
                f"--gin.NAME=\"'text'\")"
            )


def check_config(cli_bindings: Sequence[str]) -> None:
    """Both checks, after `gin.parse_config_files_and_bindings`."""
    check_macros_read(cli_bindings)
    check_types()


_NO_PARAM = re.compile(r"Configurable '([\w.]+)' doesn't have a parameter named '(\w+)'")
_NO_CONFIGURABLE = re.compile(r"No configurable matching '([\w.]+)'")


def did_you_mean(message: str) -> str:
    """A ' did you mean ...?' suffix for gin's unknown-parameter / unknown-name errors."""
    import inspect

    import gin.config

    registry = gin.config._REGISTRY  # noqa: SLF001
    m = _NO_PARAM.search(message)
    if m:
        try:
            fn = registry.get_match(m.group(1)).wrapped
            names = list(inspect.signature(fn).parameters)
        except Exception:  # noqa: BLE001 - no suggestion then
            return ""
        close = difflib.get_close_matches(m.group(2), names, n=1)
        return f"; did you mean {m.group(1)}.{close[0]}?" if close else f"; it takes {names}"
    m = _NO_CONFIGURABLE.search(message)
    if m:
        names = sorted(
            {
                s.rsplit(".", 2)[-2] + "." + s.rsplit(".", 1)[-1]
                for s, _ in registry.items()
                if "." in s
            }
        )
        close = difflib.get_close_matches(m.group(1), names, n=1)
        return f"; did you mean {close[0]}?" if close else ""
    return ""

"""The README's result tables, generated from committed JSON; `--check` fails on any drift.

    python scripts/readme_tables.py --write   # rewrite every generated block of README.md
    python scripts/readme_tables.py --check   # exit 1 if a block differs from its JSON
    python scripts/readme_tables.py           # print the blocks

Each block sits between `<!-- BEGIN GENERATED: <name> ... -->` and
`<!-- END GENERATED: <name> -->` in README.md; edit the JSON (or re-run what makes it),
never the block.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import sys
from collections.abc import Callable

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gqa_t5 import findings, tables  # noqa: E402

_BLOCK = re.compile(
    r"(<!-- BEGIN GENERATED: (?P<name>[\w-]+)[^\n]*-->\n)(?P<body>.*?)"
    r"(<!-- END GENERATED: (?P=name) -->)",
    re.S,
)


def _json(root: pathlib.Path, rel: str) -> dict:
    path = root / rel
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: it is the source of a README table")
    return json.loads(path.read_text())


def reproduce_default_table(root: pathlib.Path) -> str:
    return tables.to_markdown(_json(root, "benchmarks/reproduce_default/table1.json")["rows"])


def reproduce_default_findings(root: pathlib.Path) -> str:
    found = _json(root, "benchmarks/reproduce_default/findings.json")
    return "```text\n" + findings.to_text(found) + "```\n"


def realtext_table(root: pathlib.Path) -> str:
    return tables.to_markdown(_json(root, "benchmarks/realtext_h200/table1.json")["rows"])


def realtext_findings(root: pathlib.Path) -> str:
    found = _json(root, "benchmarks/realtext_h200/findings.json")
    return "```text\n" + findings.to_text(found) + "```\n"


def realtext_heldout(root: pathlib.Path) -> str:
    from scripts.summarize_heldout import to_markdown

    return to_markdown(_json(root, "benchmarks/realtext_h200/heldout.json"))


def paper_table1(root: pathlib.Path) -> str:
    del root
    return tables.paper_markdown()


def decode_h100(root: pathlib.Path) -> str:
    """The GPU decode-speed table from benchmarks/decode_h100.json."""
    d = _json(root, "benchmarks/decode_h100.json")
    heads = {"xxl": 64, "large": 16}
    lines = [
        "| model | G | s / sample | target (issue 6) | ms / decode step "
        "| of the bandwidth floor* |",
        "|---|---|---|---|---|---|",
    ]
    for r in d["decode"]:
        g, size = r["G"], r["model"].upper() if r["model"] == "xxl" else r["model"].title()
        kind = "MHA" if g == heads[r["model"]] else "MQA" if g == 1 else f"GQA-{g}"
        t = r["target_s_per_sample"]
        lines.append(
            f"| {kind}-{size} | {g} | {r['s_per_sample']:.3f} | {f'<= {t:.2f}' if t else ''} "
            f"| {r['ms_per_step']:.2f} | {r['floor_fraction_measured_copy']:.0%} |"
        )
    for p in sorted(d["peer"], key=lambda p: p["model"] != "xxl"):
        if "error" in p:
            continue
        size = "XXL" if p["model"] == "xxl" else "Large"
        lines.append(
            f"| HF transformers MHA-{size} (peer, batch {p['batch']}, {p['cache']} cache) "
            f"| {heads[p['model']]} | {p['s_per_sample']:.3f} | | {p['ms_per_step']:.2f} | |"
        )
    return "\n".join(line.replace("|  |", "| |") for line in lines) + "\n"


def decode_h200(root: pathlib.Path) -> str:
    """Issue 16's H200 decode tables from benchmarks/decode_h200.json."""
    from scripts.summarize_h200 import markdown

    return markdown(_json(root, "benchmarks/decode_h200.json"))


BLOCKS: dict[str, Callable[[pathlib.Path], str]] = {
    "reproduce-default-table": reproduce_default_table,
    "reproduce-default-findings": reproduce_default_findings,
    "paper-table1": paper_table1,
    "realtext-table": realtext_table,
    "realtext-heldout": realtext_heldout,
    "realtext-findings": realtext_findings,
    "decode-h100": decode_h100,
    "decode-h200": decode_h200,
}


def render(readme: str, root: pathlib.Path) -> tuple[str, list[str]]:
    """(README with every block regenerated, names of blocks whose text changed)."""
    changed: list[str] = []
    seen: set[str] = set()

    def sub(m: re.Match) -> str:
        name = m.group("name")
        if name not in BLOCKS:
            raise ValueError(f"README block {name!r} has no generator: use one of {list(BLOCKS)}")
        seen.add(name)
        body = BLOCKS[name](root)
        if body != m.group("body"):
            changed.append(name)
        return m.group(1) + body + m.group(4)

    out = _BLOCK.sub(sub, readme)
    missing = set(BLOCKS) - seen
    if missing:
        raise ValueError(f"README lacks the generated block(s) {sorted(missing)}")
    return out, changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite README.md's blocks")
    mode.add_argument("--check", action="store_true", help="exit 1 if a block is stale")
    parser.add_argument("--readme", default=str(ROOT / "README.md"))
    parser.add_argument("--root", default=str(ROOT), help="where benchmarks/ is")
    args = parser.parse_args(argv)
    readme, root = pathlib.Path(args.readme), pathlib.Path(args.root)
    try:
        new, changed = render(readme.read_text(), root)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.check:
        if changed:
            print(
                f"error: README block(s) {changed} differ from their JSON; run "
                "`python scripts/readme_tables.py --write` (never edit a block by hand)",
                file=sys.stderr,
            )
            return 1
        print(f"README tables match their JSON ({len(BLOCKS)} blocks)")
    elif args.write:
        tmp = readme.with_suffix(".md.tmp")
        tmp.write_text(new)
        os.replace(tmp, readme)
        print(f"rewrote {len(changed)} block(s) of {readme}: {changed}")
    else:
        for name, fn in BLOCKS.items():
            print(f"== {name}\n{fn(root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

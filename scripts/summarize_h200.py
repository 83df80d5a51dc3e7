"""Issue 16's H200 measurements -> benchmarks/decode_h200.{json,md} and the plot.

python scripts/summarize_h200.py   # reads benchmarks/raw/issue16_session{5,6}/, writes benchmarks/

Every figure is copied from the raw JSON the device calls brought back (one process per
configuration; `fraction_of_floor` is bytes a step must read over max(measured copy rate,
4.3 TB/s)); machine, jax version, date and commit are read from files beside them. Typed
in here: issue 16's targets, the workload's one-line description and the variant labels
(what each call ran, from its command line: the 1-split files ran the plan of commit
534a97c, which gave GQA-8-XXL one split; session 6's GQA-8-XXL pair files 1-4 ran the
launch parameters their runs record, in the order 1 2 (one call) and 3 4 (the next)).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
RAW = ROOT / "benchmarks" / "raw" / "issue16_session5"
RAW6 = ROOT / "benchmarks" / "raw" / "issue16_session6"
HEADS = {"xxl": 64, "large": 16}
FLOOR_TARGET = {"xxl": 0.85, "large": 0.60}  # issue 16: every XXL G / every Large G
S_PER_SAMPLE_TARGET = {("xxl", 8): 0.090}
PEER_TARGET = 11.0  # GQA-8-XXL >= 11x the HF static-cache peer, per sample
MFU_TARGET = {("large", 64): 0.50, ("small8", None): 0.40}  # None: any batch
# GQA-8-XXL and MQA-Large, one decode kernel setting per process (same session, same card).
VARIANTS = [
    ("decode_xxl_g8_xla.json", "XLA attention"),
    ("decode_xxl_g8_pallas_cross_1split.json", "Pallas cross-attention, 1 split"),
    ("decode_xxl_g8_pallas_cross.json", "Pallas cross-attention, 4 splits"),
    ("decode_xxl_g8_pallas.json", "Pallas cross- and self-attention, 4 splits"),
    ("decode_xxl_g8_pallas_cross_1split_cublas.json", "Pallas cross, 1 split, cuBLAS GEMMs"),
    ("decode_large_g1_xla.json", "XLA attention"),
    ("decode_large_g1_pallas_profile.json", "Pallas cross- and self-attention"),
]
# Session 6 (one lease, later calls): launch parameters side by side, and the Pallas combine.
VARIANTS6 = [
    ("decode_xxl_g8_pallas_2.json", "Pallas both, launch 64/4/2 (call A)"),
    ("decode_xxl_g8_pallas_1.json", "Pallas both, launch 32/2/3 (call A)"),
    ("decode_xxl_g8_pallas_3.json", "Pallas both, launch 64/4/2 (call B)"),
    ("decode_xxl_g8_pallas_4.json", "Pallas both, launch 32/2/3 (call B)"),
    ("kernel/decode_large_g1_pallas.json", "Pallas both, launch 32/2/3, XLA combine"),
    ("kernel/decode_large_g1_pallas_combine.json", "Pallas both, launch 32/2/3, Pallas combine"),
]


def _write(path: pathlib.Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _rel(path: pathlib.Path) -> str:
    """A raw file's path as the summary names it: relative to the repository."""
    return str(path.relative_to(ROOT))


def _kind(model: str, g: int) -> str:
    name = "MHA" if g == HEADS[model] else "MQA" if g == 1 else f"GQA-{g}"
    return f"{name}-{model.upper() if model == 'xxl' else model.title()}"


def _row(r: dict, source: str) -> dict:
    model, g = r["model"], r["num_kv_heads"]
    return {
        "case": _kind(model, g),
        "model": model,
        "G": g,
        "batch": r["batch"],
        "decode_kernel": r["decode_kernel"],
        "kernel_tuning": r.get("kernel_tuning"),
        "xla_flags": r.get("xla_flags", ""),
        "s_per_sample": round(r["s_per_sample"], 4),
        "ms_per_step": round(r["ms_per_step"], 3),
        "bytes_per_step_GB": round(r["floor_bytes_per_step"]["total"] / 1e9, 2),
        "achieved_GBps": round(r["achieved_GBps"]),
        "fraction_of_floor": round(r["fraction_of_floor"], 3),
        "floor_target": FLOOR_TARGET[model],
        "s_per_sample_target": S_PER_SAMPLE_TARGET.get((model, g)),
        "encoder_of_matmul": round(r["encoder_of_matmul"] or 0, 3),
        # None: a repeat timed without the float32 check (its pair ran with it)
        "decode_vs_f32_rel_err": _rounded(r.get("check_rel_err"), "decode_vs_f32_xla"),
        "bf16_xla_vs_f32_rel_err": _rounded(r.get("check_rel_err"), "bf16_xla_vs_f32_xla"),
        "peak_GiB": round(r["peak_bytes_in_use"] / 2**30, 1),
        "source": source,
    }


def _rounded(check: dict | None, key: str) -> float | None:
    return None if not check else round(check[key], 4)


def _runs(name: str, raw: pathlib.Path = RAW) -> list[dict]:
    return [r for r in json.loads((raw / name).read_text())["runs"] if "error" not in r]


def _profile(name: str, raw: pathlib.Path = RAW) -> dict:
    r = _runs(name, raw)[0]
    p = r["profile_fill_and_decode"]
    steps = r["output_len"]
    return {
        "case": _kind(r["model"], r["num_kv_heads"]),
        "decode_kernel": r["decode_kernel"],
        "kernel_tuning": r["kernel_tuning"],
        "kernels_per_step": round(p["kernels"] / steps),
        "busy_of_span": round(p["busy_us"] / p["span_us"], 4),
        "ms_per_step_by_category": {
            k: round(v["total_us"] / steps / 1e3, 3)
            for k, v in sorted(p["by_category"].items(), key=lambda kv: -kv[1]["total_us"])
        },
        "source": _rel(raw / name),
    }


def _peer(ours: dict[tuple[str, int], dict]) -> list[dict]:
    """HF transformers rows, each against our run of the same model (MHA: the same
    network) and, for XXL, GQA-8-XXL (the issue's target); per-sample times."""
    rows = []
    for r in json.loads((RAW6 / "large_all-peer" / "hf_peer.json").read_text()):
        if "error" in r:
            rows.append({k: r[k] for k in ("model", "batch", "cache", "error")})
            continue
        row = {
            "model": r["model"],
            "cache": r["cache"],
            "batch": r["batch"],
            "s_per_sample": round(r["s_per_sample"], 4),
            "ms_per_step": round(r["ms_per_step"], 2),
            "warmup_s": round(r["warmup_s"], 1),
            "peak_GiB": round(r["peak_bytes"] / 2**30, 1),
            "versions": f"torch {r['torch']}, transformers {r['transformers']}",
            "vs": [],
        }
        for g in (HEADS[r["model"]], 8) if r["model"] == "xxl" else (HEADS[r["model"]],):
            o = ours.get((r["model"], g))
            if o:
                row["vs"].append(
                    {
                        "case": o["case"],
                        "batch": o["batch"],
                        "s_per_sample": o["s_per_sample"],
                        "speedup": round(r["s_per_sample"] / o["s_per_sample"], 2),
                        "target": PEER_TARGET
                        if (r["model"], g, r["cache"]) == ("xxl", 8, "static")
                        else None,
                        "source": o["source"],
                    }
                )
        rows.append(row)
    return rows


def _training() -> list[dict]:
    rows = []
    for m in ("small", "small8", "base", "large"):
        path = RAW6 / "train" / f"train_{m}.json"
        for r in json.loads(path.read_text())["runs"]:
            if "error" in r:  # an OOM or a failed compile: kept as what it said
                rows.append({k: r.get(k) for k in ("model", "batch", "error")})
                continue
            target = MFU_TARGET.get((m, r["batch"]), MFU_TARGET.get((m, None)))
            rows.append(
                {
                    "model": m,
                    "batch": r["batch"],
                    "num_kv_heads": r["num_kv_heads"],
                    "attention": r["attention_impl"],
                    "step_s": round(r["step_s"], 4),
                    "tokens_per_s": round(r["tokens_per_s"]),
                    "model_TFLOPs": round(r["model_TFLOPs"], 1),
                    "mfu_vs_datasheet": round(r["mfu_vs_datasheet"], 3),
                    "mfu_target": target,
                    "peak_GiB": round(r["peak_bytes_in_use"] / 2**30, 1),
                    "source": _rel(path),
                }
            )
    return rows


def summary() -> dict:
    sweeps = ("decode_xxl_all_pallas.json", "decode_large_all_pallas.json")
    sweep = [_row(r, _rel(RAW / f)) for f in sweeps for r in _runs(f)]
    done = {(r["model"], r["G"]) for r in sweep}
    # Session 6: Large G = 8 and 16, the kernel's default plan (session 5's were cut).
    more = "large_all-peer/decode_large_all_pallas.json"
    for r in _runs(more, RAW6):
        if (r["model"], r["num_kv_heads"]) not in done:
            sweep.append(_row(r, _rel(RAW6 / more)))
    done = {(r["model"], r["G"]) for r in sweep}
    kernel = json.loads((RAW / "kernel_check.json").read_text())
    kernel6 = json.loads((RAW6 / "kernel" / "kernel.json").read_text())
    checks6 = json.loads((RAW6 / "kernel_checks.json").read_text())
    variants6 = [
        dict(_row(_runs(f, RAW6)[0], _rel(RAW6 / f)), variant=label) for f, label in VARIANTS6
    ]
    best = {}  # our fastest run per (model, G): the sweep rows and session 6's GQA-8 pairs
    for r in sweep + variants6:
        k = (r["model"], r["G"])
        if k not in best or r["s_per_sample"] < best[k]["s_per_sample"]:
            best[k] = r
    first = json.loads((RAW / sweeps[0]).read_text())
    jax_version = (RAW / "jax.txt").read_text().strip()
    return {
        "machine": f"one {first['runs'][0]['device']} (nvidia-h200), jax {jax_version}",
        "date": first["date"],
        "commit": (RAW / "commit.txt").read_text().strip(),
        "commit_session6": (RAW6 / "kernel" / "commit.txt").read_text().strip(),
        "workload": "random bf16 weights, greedy, batch 32, input 2048, output 512, fixed length",
        "floor": "bytes a step must read (decoder weights, cross K/V, self K/V on average) "
        "over max(measured copy, 4.3 TB/s) = 4.3 TB/s",
        "ceilings": kernel.get("ceilings"),
        "ceilings_session6": kernel6.get("ceilings"),
        "kernel_check": kernel.get("check"),
        "kernel_check_session6": checks6["check"],
        "kernel_speed": kernel.get("speed"),
        "kernel_speed_session6": kernel6.get("speed"),
        "kernel_sweep_session6": kernel6.get("sweep"),
        "decode": sweep,
        "not_measured": [
            _kind(m, g)
            for m, gs in (("xxl", (1, 2, 4, 8, 16, 32, 64)), ("large", (1, 2, 4, 8, 16)))
            for g in gs
            if (m, g) not in done
        ],
        "variants": [
            dict(_row(_runs(f)[0], _rel(RAW / f)), variant=label)
            for f, label in VARIANTS
            if (RAW / f).exists()
        ]
        + variants6,
        "peer": _peer(best),
        "training": _training(),
        "profiles": [
            _profile(f)
            for f in (
                "decode_xxl_g8_pallas_cross_1split.json",
                "decode_large_g1_pallas_profile.json",
            )
        ],
    }


def _session(r: dict) -> str:
    return "6" if "issue16_session6" in r["source"] else "5"


def _pct(x: float | None) -> str:
    return "" if x is None else f"{x:.2%}"


def markdown(s: dict) -> str:
    lines = [
        "| case | s / sample | ms / step | GB / step | of the floor | target | met | session |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in s["decode"]:
        t = [f">= {r['floor_target']:.0%} of floor"]
        ok = r["fraction_of_floor"] >= r["floor_target"]
        if r["s_per_sample_target"]:
            t.append(f"<= {r['s_per_sample_target']:.3f} s")
            ok = ok and r["s_per_sample"] <= r["s_per_sample_target"]
        lines.append(
            f"| {r['case']} | {r['s_per_sample']:.4f} | {r['ms_per_step']:.2f} "
            f"| {r['bytes_per_step_GB']:.2f} | {r['fraction_of_floor']:.1%} | {', '.join(t)} "
            f"| {'yes' if ok else 'no'} | {_session(r)} |"
        )
    for case in s["not_measured"]:
        lines.append(f"| {case} | not measured | | | | | | |")
    lines += [
        "",
        "| case | decode attention | ms / step | s / sample | of the floor | decode vs float32 "
        "| session |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in s["variants"]:
        lines.append(
            f"| {r['case']} | {r['variant']} | {r['ms_per_step']:.2f} | {r['s_per_sample']:.4f} "
            f"| {r['fraction_of_floor']:.1%} | {_pct(r['decode_vs_f32_rel_err']) or 'not checked'} "
            f"| {_session(r)} |"
        )
    lines += [
        "",
        "| peer (HF transformers) | cache | batch | s / sample | ms / step | ours (batch 32) "
        "| ours s / sample | ours faster by | target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in s["peer"]:
        if "error" in r:
            lines.append(
                f"| {r['model']} | {r['cache']} | {r['batch']} | {r['error'][:60]} | | | | | |"
            )
            continue
        for v in r["vs"]:
            t = (
                ""
                if v["target"] is None
                else f">= {v['target']:.0f}x: {'met' if v['speedup'] >= v['target'] else 'missed'}"
            )
            lines.append(
                f"| {r['model']} | {r['cache']} | {r['batch']} | {r['s_per_sample']:.3f} "
                f"| {r['ms_per_step']:.1f} | {v['case']} | {v['s_per_sample']:.4f} "
                f"| {v['speedup']:.1f}x | {t} |"
            )
    lines += [
        "",
        "| training (T5.1.1 shape) | batch | s / step | tokens / s | model TFLOP/s "
        "| MFU (989 peak) "
        "| target |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in s["training"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['batch']} | {r['error'][:60]} | | | | |")
            continue
        t = r["mfu_target"]
        t = "" if t is None else f">= {t:.0%}: {'met' if r['mfu_vs_datasheet'] >= t else 'missed'}"
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['step_s']:.4f} | {r['tokens_per_s']:,} "
            f"| {r['model_TFLOPs']:.0f} | {r['mfu_vs_datasheet']:.1%} | {t} |"
        )
    return "\n".join(lines) + "\n"


def plot(s: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    for model, marker in (("xxl", "o"), ("large", "s")):
        pts = sorted(
            (r["G"], r["s_per_sample"], r["fraction_of_floor"])
            for r in s["decode"]
            if r["model"] == model
        )
        if not pts:
            continue
        g, t, f = zip(*pts, strict=True)
        label = f"T5.1.1-{model.upper() if model == 'xxl' else 'Large'}"
        a.plot(g, t, marker=marker, label=label)
        b.plot(g, [100 * x for x in f], marker=marker, label=label)
        b.axhline(100 * FLOOR_TARGET[model], ls=":", color=a.lines[-1].get_color())
    a.set(xscale="log", xlabel="key/value heads G", ylabel="time per sample (s)")
    b.set(xscale="log", xlabel="key/value heads G", ylabel="% of the bandwidth floor")
    for ax in (a, b):
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 2, 4, 8, 16, 32, 64], labels=["1", "2", "4", "8", "16", "32", "64"])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(
        "Greedy decode, input 2048, output 512, batch 32, one H200, bf16 (dotted: targets)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no_plot", action="store_true")
    args = ap.parse_args(argv)
    s = summary()
    out = ROOT / "benchmarks"
    _write(out / "decode_h200.json", json.dumps(s, indent=1) + "\n")
    _write(out / "decode_h200.md", markdown(s))
    if not args.no_plot:
        plot(s, out / "groups_vs_time_h200.png")
    print(markdown(s))


if __name__ == "__main__":
    main()

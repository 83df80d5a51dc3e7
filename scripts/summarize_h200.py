"""Issue 16's H200 measurements -> benchmarks/decode_h200.{json,md} and the plot.

python scripts/summarize_h200.py   # reads benchmarks/raw/issue16_session{5,6,7,8}/,
#                                    writes benchmarks/

Every figure is copied from the raw JSON the device calls brought back (one process per
configuration; `fraction_of_floor` is bytes a step must read over max(measured copy rate,
4.3 TB/s)); machine, jax version, date and commit are read from files beside them. Typed
in here: issue 16's targets, the workload's one-line description and the variant labels
(what each call ran, from its command line: the 1-split files ran the plan of commit
534a97c, which gave GQA-8-XXL one split; session 6's GQA-8-XXL pair files 1-4 ran the
launch parameters their runs record, in the order 1 2 (one call) and 3 4 (the next)).
The decode table's XXL rows are session 8's (every G in one call, the launch by rows of
commit 7c29a86: 64/4/2 from 64 rows, 32/2/3 below) and its Large rows session 7's (every G
in one call, 32/2/3, the launch Large still gets); the newest earlier session's row stays
beside each as "earlier" (another call, and before session 7 another split plan: session 5
forced 4 splits). Also typed: the predictions the logits_dot A/B was measured against
(NOTES.md entry 17).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
RAW = ROOT / "benchmarks" / "raw" / "issue16_session5"
RAW6 = ROOT / "benchmarks" / "raw" / "issue16_session6"
RAW7 = ROOT / "benchmarks" / "raw" / "issue16_session7"
RAW8 = ROOT / "benchmarks" / "raw" / "issue16_session8"
HEADS = {"xxl": 64, "large": 16}
FLOOR_TARGET = {"xxl": 0.85, "large": 0.60}  # issue 16: every XXL G / every Large G
S_PER_SAMPLE_TARGET = {("xxl", 8): 0.090}
PEER_TARGET = 11.0  # GQA-8-XXL >= 11x the HF static-cache peer, per sample
MFU_TARGET = {("large", 64): 0.50, ("small8", None): 0.40}  # None: any batch
ENCODER_TARGET = 0.80  # the encoder at 2048 tokens >= 80% of the measured matmul rate
# logits_dot='bfloat16' against 'float32', change in time a step (NOTES.md entry 17).
AB_PREDICTION = {"small8": (-0.05, -0.04), "large": (-0.02, -0.01)}
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

# Session 7, one call, in this order: launch parameters at MQA-XXL (64 query rows a program)
# and GQA-4-Large (16 rows), each run with --kernel_params as labelled ('{}': the default
# then, 32/2/3 for every row count).
VARIANTS7 = [
    ("launch/launch_xxl_g1_default.json", "Pallas both, launch 32/2/3"),
    ("launch/launch_xxl_g1_64_4_2.json", "Pallas both, launch 64/4/2"),
    ("launch/launch_xxl_g1_32_4_3.json", "Pallas both, launch 32/4/3"),
    ("launch/launch_large_g4_64_4_2.json", "Pallas both, launch 64/4/2"),
    ("launch/launch_large_g4_default.json", "Pallas both, launch 32/2/3"),
]

# Session 8, two calls after the every-G XXL call, each run with --kernel_params as labelled
# ('{}': the default of commit 7c29a86, which these runs record), in file-name order within a
# call: GQA-2-XXL (32 rows a program) alternating 32/2/3 and 64/4/2 twice, then MQA-XXL (64
# rows) 64/4/2 and 32/2/3; the next call GQA-4-XXL (16 rows) alternating twice, then
# GQA-8-XXL (16 rows) once each.
# The label's {launch} is the launch the run records (keys a block / warps / stages).
VARIANTS8 = [
    (f"launch/g{g}_{tag}_{i}.json", f"Pallas both, launch {{launch}}, call {call}, run {i}")
    for call, runs in (
        ("A", ((2, "a", 1), (2, "b", 2), (2, "a2", 3), (2, "b2", 4), (1, "a", 5), (1, "d", 6))),
        ("B", ((4, "a", 1), (4, "b", 2), (4, "a2", 3), (4, "b2", 4), (8, "a", 5), (8, "b", 6))),
    )
    for g, tag, i in runs
]
# What every session's xxl_all section writes.
XXL_SWEEP = "xxl_all/decode_xxl_all_pallas.json"

# Session 7: GQA-8-XXL with the ceilings measured in the same process.
OWN_CEILINGS = "decode_xxl_g8_ownceil.json"


def _variants(pairs: list[tuple[str, str]], raw: pathlib.Path) -> list[dict]:
    """One labelled row per (raw file, label): the file's first run; a label's {launch}
    becomes the launch the run records."""
    rows = []
    for f, label in pairs:
        if not (raw / f).exists():
            continue
        r = _runs(f, raw)[0]
        launch = "/".join(str(v) for v in (r.get("kernel_launch") or {}).values())
        rows.append(dict(_row(r, _rel(raw / f)), variant=label.format(launch=launch)))
    return rows


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


def _launch_is_default(r: dict) -> bool | None:
    """Whether a Pallas run's launch (block_k, warps, stages) is what the kernel picks now
    for its shape; None for XLA attention."""
    from gqa_t5.kernels.decode_attention import launch_for

    if r["decode_kernel"] == "xla":
        return None
    now = launch_for(r["num_heads"], r["num_kv_heads"])
    return (r.get("kernel_launch") or {k: r["kernel_tuning"][k] for k in now}) == now


def _row(r: dict, source: str) -> dict:
    model, g = r["model"], r["num_kv_heads"]
    return {
        "case": _kind(model, g),
        "model": model,
        "G": g,
        "batch": r["batch"],
        "decode_kernel": r["decode_kernel"],
        "kernel_tuning": r.get("kernel_tuning"),
        "launch_is_default_now": _launch_is_default(r),
        "xla_flags": r.get("xla_flags", ""),
        "s_per_sample": round(r["s_per_sample"], 4),
        "ms_per_step": round(r["ms_per_step"], 6),  # printed to 2 places: no double rounding
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
    peers = [RAW6 / "large_all-peer" / "hf_peer.json", RAW7 / "ab" / "hf_peer_b32.json"]
    for r in (r for p in peers for r in json.loads(p.read_text())):
        if "error" in r:
            rows.append({k: r[k] for k in ("model", "batch", "cache", "error")})
            continue
        row = {
            "model": r["model"],
            "cache": r["cache"],
            "batch": r["batch"],
            "s_per_sample": round(r["s_per_sample"], 4),
            "ms_per_step": round(r["ms_per_step"], 6),
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
                        "speedup": round(r["s_per_sample"] / o["s_per_sample"], 3),
                        "target": PEER_TARGET  # at the batch 8 and the fair 32
                        if (r["model"], g, r["cache"]) == ("xxl", 8, "static")
                        else None,
                        "source": o["source"],
                    }
                )
        rows.append(row)
    return rows


# Session 8, one call after the launch calls: the output layer's products in bfloat16,
# small8 at batch 256 and 512 (one process), then Large at batch 128 (cut in session 6).
TRAIN8 = ("train/train_small8_b256_512_bf16.json", "train/train_large_b128_bf16.json")


def _training() -> list[dict]:
    """Session 6's every-size runs (float32 output products), then session 8's."""
    rows = []
    paths = [RAW6 / "train" / f"train_{m}.json" for m in ("small", "small8", "base", "large")]
    for path in paths + [RAW8 / f for f in TRAIN8]:
        for r in json.loads(path.read_text())["runs"]:
            if "error" in r:  # an OOM or a failed compile: kept as what it said
                rows.append({k: r.get(k) for k in ("model", "batch", "error")})
                continue
            m = r["model"]
            target = MFU_TARGET.get((m, r["batch"]), MFU_TARGET.get((m, None)))
            rows.append(
                {
                    "model": m,
                    "logits_dot": r.get("logits_dot", "float32"),
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


def _ab() -> list[dict]:
    """Session 7: the output layer's products in float32 (t5x's) against bfloat16
    (T5Config.logits_dot), the two settings in one process each, one after the other in one
    call; step_s is the median of three 8-step loops, all three kept."""
    rows = []
    for m in ("small8", "large"):
        path = RAW7 / "ab" / f"train_ab_{m}.json"
        runs = {r["logits_dot"]: r for r in json.loads(path.read_text())["runs"]}
        f32, b16 = runs["float32"], runs["bfloat16"]
        lo, hi = AB_PREDICTION[m]
        change = b16["step_s"] / f32["step_s"] - 1
        rows.append(
            {
                "model": m,
                "batch": f32["batch"],
                "step_s_float32": round(f32["step_s"], 4),
                "step_s_bfloat16": round(b16["step_s"], 4),
                "loops_float32": [round(x, 4) for x in f32["step_s_loops"]],
                "loops_bfloat16": [round(x, 4) for x in b16["step_s_loops"]],
                # every bfloat16 loop faster than every float32 loop
                "loops_separate": max(b16["step_s_loops"]) < min(f32["step_s_loops"]),
                "change": round(change, 4),
                "predicted": [lo, hi],
                "within_prediction": lo <= round(change, 4) <= hi,
                "mfu_float32": round(f32["mfu_vs_datasheet"], 3),
                "mfu_bfloat16": round(b16["mfu_vs_datasheet"], 3),
                "loss_float32": round(f32["loss"], 5),
                "loss_bfloat16": round(b16["loss"], 5),
                "source": _rel(path),
            }
        )
    return rows


def _encoder(own: dict, ceilings: dict[str, float]) -> dict:
    """The XXL encoder (batch 32 x 2048 tokens) against the bf16 matmul ceiling: measured in
    the same call (`own`, session 7's own-ceilings run), and the spread of every session-7
    and -8 XXL run's encoder rate (all of their XXL calls) over the three measured
    ceilings."""
    r = own["runs"][0]
    files = [
        (RAW7, f) for f in (XXL_SWEEP, OWN_CEILINGS, *(f for f, _ in VARIANTS7 if "_xxl_" in f))
    ] + [(RAW8, f) for f in (XXL_SWEEP, *(f for f, _ in VARIANTS8))]
    rates = [x["encoder_TFLOPs"] for raw, f in files for x in _runs(f, raw)]
    lo = min(rates) / max(ceilings.values())
    hi = max(rates) / min(ceilings.values())
    return {
        "same_call": {
            "case": _kind(r["model"], r["num_kv_heads"]),
            "encoder_TFLOPs": round(r["encoder_TFLOPs"], 1),
            "matmul_ceiling_TFLOPs": round(own["ceilings"]["bf16_matmul_TFLOPs"], 1),
            "of_ceiling": round(r["encoder_TFLOPs"] / own["ceilings"]["bf16_matmul_TFLOPs"], 3),
            "source": _rel(RAW7 / OWN_CEILINGS),
        },
        "xxl_runs": len(rates),
        "xxl_runs_sessions": sorted(
            {int(raw.name.removeprefix("issue16_session")) for raw, _ in files}
        ),
        "encoder_TFLOPs_range": [round(min(rates), 1), round(max(rates), 1)],
        "ceilings_by_session": {k: round(v, 1) for k, v in ceilings.items()},
        "of_ceiling_range": [round(lo, 3), round(hi, 3)],
        "target": ENCODER_TARGET,
    }


def _needs(peer: list[dict], ceiling_TFLOPs: float) -> list[dict]:
    """What GQA-8-XXL's time targets ask of its decode step, from the decode table's run
    (session 8's): the step time that reaches each target with the encoder (and cross K/V
    fill) as measured, and with the encoder at `ceiling_TFLOPs` (session 7's measured matmul
    rate, the latest measured), as a fraction of the bandwidth floor (above 1: not reachable
    on this card by any kernel)."""
    path = RAW8 / XXL_SWEEP
    r = next(x for x in _runs(XXL_SWEEP, RAW8) if x["num_kv_heads"] == 8)
    B, L, nbytes = r["batch"], r["output_len"], r["floor_bytes_per_step"]["total"]
    static32 = next(
        x
        for x in peer
        if x.get("model") == "xxl" and x.get("cache") == "static" and x["batch"] == 32
    )
    rows = []
    for what, target in (
        ("<= 0.090 s / sample", S_PER_SAMPLE_TARGET[("xxl", 8)]),
        (
            f">= {PEER_TARGET:.0f}x the HF static peer at batch 32",
            static32["s_per_sample"] / PEER_TARGET,
        ),
    ):
        row = {"target": what, "s_per_sample": round(target, 6)}
        for name, enc in (
            ("encoder_as_measured", r["encode_s"]),
            ("encoder_at_matmul_ceiling", r["encode_s"] * r["encoder_TFLOPs"] / ceiling_TFLOPs),
        ):
            step = (target * B - enc - r["cross_kv_fill_s"]) / L
            row[name] = {
                "ms_per_step": round(step * 1e3, 2),
                "of_floor": round(nbytes / step / (r["floor_GBps"] * 1e9), 3) if step > 0 else None,
            }
        rows.append(row)
    return [
        dict(x, source=_rel(path), measured_ms_per_step=round(r["ms_per_step"], 2)) for x in rows
    ]


def summary() -> dict:
    # Every G of each model in one call: XXL in session 8 (launch by rows, commit 7c29a86),
    # Large in session 7 (commit 1ac79c8, 32/2/3: what every Large shape still gets).
    large7 = "large_all/decode_large_all_pallas.json"
    sweep = [_row(r, _rel(RAW8 / XXL_SWEEP)) for r in _runs(XXL_SWEEP, RAW8)]
    sweep += [_row(r, _rel(RAW7 / large7)) for r in _runs(large7, RAW7)]
    done = {(r["model"], r["G"]) for r in sweep}
    # Earlier sweeps, newest first; each (model, G) keeps its newest: session 7's XXL (all
    # 32/2/3), then sessions 5 and 6 (64/4/2; Large G = 8, 16 from session 6: session 5's cut).
    older = [
        (RAW7, XXL_SWEEP),
        (RAW, "decode_xxl_all_pallas.json"),
        (RAW, "decode_large_all_pallas.json"),
        (RAW6, "large_all-peer/decode_large_all_pallas.json"),
    ]
    earlier: list[dict] = []
    for raw, f in older:
        have = {(r["model"], r["G"]) for r in earlier}
        earlier += [
            _row(r, _rel(raw / f))
            for r in _runs(f, raw)
            if (r["model"], r["num_kv_heads"]) not in have
        ]
    kernel = json.loads((RAW / "kernel_check.json").read_text())
    kernel6 = json.loads((RAW6 / "kernel" / "kernel.json").read_text())
    checks6 = json.loads((RAW6 / "kernel_checks.json").read_text())
    own = json.loads((RAW7 / OWN_CEILINGS).read_text())
    ours = {(r["model"], r["G"]): r for r in sweep}  # the peer's comparison: the decode table
    first = json.loads((RAW8 / XXL_SWEEP).read_text())
    jax_version = (RAW8 / "xxl_all" / "jax.txt").read_text().strip()
    ceilings = {
        "session5": kernel["ceilings"]["bf16_matmul_TFLOPs"],
        "session6": kernel6["ceilings"]["bf16_matmul_TFLOPs"],
        "session7": own["ceilings"]["bf16_matmul_TFLOPs"],
    }
    return {
        "machine": f"one {first['runs'][0]['device']} (nvidia-h200), jax {jax_version}",
        "date": first["date"],
        "date_large": json.loads((RAW7 / large7).read_text())["date"],
        "commit": (RAW / "commit.txt").read_text().strip(),
        "commit_session6": (RAW6 / "kernel" / "commit.txt").read_text().strip(),
        "commit_session7": (RAW7 / "xxl_all" / "commit.txt").read_text().strip(),
        "commit_session8": (RAW8 / "xxl_all" / "commit.txt").read_text().strip(),
        "workload": "random bf16 weights, greedy, batch 32, input 2048, output 512, fixed length",
        "floor": "bytes a step must read (decoder weights, cross K/V, self K/V on average) "
        "over max(measured copy, 4.3 TB/s) = 4.3 TB/s",
        "ceilings": kernel.get("ceilings"),
        "ceilings_session6": kernel6.get("ceilings"),
        "ceilings_session7": own["ceilings"],
        "kernel_check": kernel.get("check"),
        "kernel_check_session6": checks6["check"],
        "kernel_speed": kernel.get("speed"),
        "kernel_speed_session6": kernel6.get("speed"),
        "kernel_sweep_session6": kernel6.get("sweep"),
        "decode": sweep,
        "decode_earlier": earlier,
        "not_measured": [
            _kind(m, g)
            for m, gs in (("xxl", (1, 2, 4, 8, 16, 32, 64)), ("large", (1, 2, 4, 8, 16)))
            for g in gs
            if (m, g) not in done
        ],
        "variants": _variants(VARIANTS, RAW)
        + _variants(VARIANTS6, RAW6)
        + _variants(VARIANTS7, RAW7)
        + _variants(VARIANTS8, RAW8),
        "encoder": _encoder(own, ceilings),
        "peer": (peer := _peer(ours)),
        "gqa8_xxl_targets_need": _needs(peer, ceilings["session7"]),
        "training": _training(),
        "logits_dot_ab": _ab(),
        "profiles": [
            _profile(f)
            for f in (
                "decode_xxl_g8_pallas_cross_1split.json",
                "decode_large_g1_pallas_profile.json",
            )
        ],
    }


def _session(r: dict) -> str:
    return re.search(r"issue16_session(\d+)", r["source"]).group(1)


def _pct(x: float | None) -> str:
    return "" if x is None else f"{x:.2%}"


def _head(columns: str) -> list[str]:
    """A blank line, then a markdown table's header ("a | b | c") and rule."""
    return ["", f"| {columns} |", "|" + "---|" * len(columns.split(" | "))]


def _decode_md(s: dict) -> list[str]:
    lines = _head(
        "case | s / sample | ms / step | GB / step | of the floor | target | met | "
        "session | earlier ms / step (session)"
    )
    before = {(r["model"], r["G"]): r for r in s.get("decode_earlier", [])}
    for r in s["decode"]:
        e = before.get((r["model"], r["G"]))
        e = "" if e is None else f"{e['ms_per_step']:.2f} ({_session(e)})"
        t = [f">= {r['floor_target']:.0%} of floor"]
        ok = r["fraction_of_floor"] >= r["floor_target"]
        if r["s_per_sample_target"]:
            t.append(f"<= {r['s_per_sample_target']:.3f} s")
            ok = ok and r["s_per_sample"] <= r["s_per_sample_target"]
        star = "*" if r["launch_is_default_now"] is False else ""
        lines.append(
            f"| {r['case']}{star} | {r['s_per_sample']:.4f} | {r['ms_per_step']:.2f} "
            f"| {r['bytes_per_step_GB']:.2f} | {r['fraction_of_floor']:.1%} | {', '.join(t)} "
            f"| {'yes' if ok else 'no'} | {_session(r)} | {e} |"
        )
    for case in s["not_measured"]:
        lines.append(f"| {case} | not measured | | | | | | | |")
    if any(r["launch_is_default_now"] is False for r in s["decode"]):
        lines += [
            "",
            "\\* ran with a launch (keys a block, warps, stages) the kernel no longer picks for "
            "its shape; the launch rows below time both.",
        ]
    return lines


def _encoder_md(s: dict) -> list[str]:
    enc = s["encoder"]
    c, (lo, hi) = enc["same_call"], enc["of_ceiling_range"]
    r_lo, r_hi = enc["encoder_TFLOPs_range"]
    ceil = ", ".join(f"{v:.0f}" for v in enc["ceilings_by_session"].values())
    return _head(
        "encoder (batch 32 x 2048 tokens) | TFLOP/s | bf16 matmul ceiling, TFLOP/s | "
        "of the ceiling | target"
    ) + [
        f"| {c['case']}, ceiling measured in the same call | {c['encoder_TFLOPs']:.0f} "
        f"| {c['matmul_ceiling_TFLOPs']:.0f} | {c['of_ceiling']:.1%} "
        f"| >= {enc['target']:.0%}: {'met' if c['of_ceiling'] >= enc['target'] else 'missed'} |",
        f"| every session-{'/'.join(map(str, enc['xxl_runs_sessions']))} XXL run "
        f"({enc['xxl_runs']}) against each measured ceiling "
        f"| {r_lo:.0f}-{r_hi:.0f} | {ceil} | {lo:.1%}-{hi:.1%} "
        f"| {'the target is inside this spread' if lo < enc['target'] <= hi else ''} |",
    ]


def _needs_md(s: dict) -> list[str]:
    def step(x: dict) -> str:
        return f"{x['ms_per_step']:.2f} ms, {x['of_floor']:.0%} of the floor"

    return _head(
        "GQA-8-XXL target | s / sample | decode step it needs, encoder as measured | "
        "the same, encoder at its matmul ceiling | measured step"
    ) + [
        f"| {r['target']} | {r['s_per_sample']:.4f} | {step(r['encoder_as_measured'])} "
        f"| {step(r['encoder_at_matmul_ceiling'])} | {r['measured_ms_per_step']:.2f} ms |"
        for r in s["gqa8_xxl_targets_need"]
    ]


def _variants_md(s: dict) -> list[str]:
    return _head(
        "case | decode attention | ms / step | s / sample | of the floor | "
        "decode vs float32 | session"
    ) + [
        f"| {r['case']} | {r['variant']} | {r['ms_per_step']:.2f} | {r['s_per_sample']:.4f} "
        f"| {r['fraction_of_floor']:.1%} | {_pct(r['decode_vs_f32_rel_err']) or 'not checked'} "
        f"| {_session(r)} |"
        for r in s["variants"]
    ]


def _peer_md(s: dict) -> list[str]:
    lines = _head(
        "peer (HF transformers) | cache | batch | s / sample | ms / step | "
        "ours (batch 32) | ours s / sample | ours faster by | target"
    )
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
    return lines


def _training_md(s: dict) -> list[str]:
    lines = _head(
        "training (T5.1.1 shape) | batch | output-layer products | s / step | tokens / s | "
        "model TFLOP/s | MFU (989 peak) | target | session"
    )
    for r in s["training"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['batch']} | {r['error'][:60]} | | | | | | |")
            continue
        t = r["mfu_target"]
        t = "" if t is None else f">= {t:.0%}: {'met' if r['mfu_vs_datasheet'] >= t else 'missed'}"
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['logits_dot']} | {r['step_s']:.4f} "
            f"| {r['tokens_per_s']:,} | {r['model_TFLOPs']:.0f} | {r['mfu_vs_datasheet']:.1%} "
            f"| {t} | {_session(r)} |"
        )
    return lines


def _ab_md(s: dict) -> list[str]:
    lines = _head(
        "logits_dot A/B | batch | float32 s / step (3 loops) | "
        "bfloat16 s / step (3 loops) | change | predicted | MFU float32 / bfloat16"
    )
    for r in s.get("logits_dot_ab", []):
        lo, hi = r["predicted"]
        loops = [
            ", ".join(f"{x * 1e3:.1f}" for x in r[k]) for k in ("loops_float32", "loops_bfloat16")
        ]
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['step_s_float32'] * 1e3:.1f} ms ({loops[0]}) "
            f"| {r['step_s_bfloat16'] * 1e3:.1f} ms ({loops[1]}) | {r['change']:+.1%} "
            f"| {lo:+.0%} to {hi:+.0%}: {'within' if r['within_prediction'] else 'outside'} "
            f"| {r['mfu_float32']:.1%} / {r['mfu_bfloat16']:.1%} |"
        )
    return lines


def markdown(s: dict) -> str:
    parts = (_decode_md, _encoder_md, _needs_md, _variants_md, _peer_md, _training_md, _ab_md)
    return "\n".join(line for part in parts for line in part(s)).lstrip("\n") + "\n"


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
        color = a.lines[-1].get_color()
        b.plot(g, [100 * x for x in f], marker=marker, label=label, color=color)
        b.axhline(100 * FLOOR_TARGET[model], ls=":", color=color)
        for r in s["decode"]:  # a launch the kernel no longer picks: a hollow marker
            if r["model"] == model and r["launch_is_default_now"] is False:
                for ax, y in ((a, r["s_per_sample"]), (b, 100 * r["fraction_of_floor"])):
                    ax.plot(r["G"], y, marker=marker, color=color, mfc="white", zorder=3)
    a.set(xscale="log", xlabel="key/value heads G", ylabel="time per sample (s)")
    b.set(xscale="log", xlabel="key/value heads G", ylabel="% of the bandwidth floor")
    for ax in (a, b):
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 2, 4, 8, 16, 32, 64], labels=["1", "2", "4", "8", "16", "32", "64"])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(
        "Greedy decode, input 2048, output 512, batch 32, one H200, bf16 (dotted: targets; "
        "hollow: a launch no longer the default)",
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
    md = markdown(s)
    _write(out / "decode_h200.md", md)
    if not args.no_plot:
        plot(s, out / "groups_vs_time_h200.png")
    print(md)


if __name__ == "__main__":
    main()

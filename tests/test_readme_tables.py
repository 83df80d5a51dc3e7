"""The README's result tables are what `scripts/readme_tables.py` prints from committed JSON:
the check passes on the README as committed, fails when a number is edited by hand, and
`--write` restores the block."""

import re
import shutil

import pytest

from scripts import readme_tables

ROOT = readme_tables.ROOT


def test_committed_readme_matches_its_json(capsys):
    assert readme_tables.main(["--check"]) == 0, capsys.readouterr().err
    assert "README tables match their JSON" in capsys.readouterr().out


def _edit_number_in_block(text: str, name: str) -> str:
    start = text.index(f"<!-- BEGIN GENERATED: {name}")
    end = text.index(f"<!-- END GENERATED: {name} -->")
    block = text[start:end]
    m = re.search(r"\| (\d+\.\d+)", block.split("-->", 1)[1])
    assert m, f"no number in block {name}"
    value = m.group(1)
    edited = value[:-1] + ("1" if value[-1] != "1" else "2")
    offset = start + len(block.split("-->", 1)[0]) + 3 + m.start(1)
    return text[:offset] + edited + text[offset + len(value) :]


@pytest.mark.parametrize("name", ["reproduce-default-table", "decode-h100", "paper-table1"])
def test_hand_edited_number_fails_the_check_and_write_restores_it(tmp_path, capsys, name):
    readme = tmp_path / "README.md"
    original = (ROOT / "README.md").read_text()
    readme.write_text(_edit_number_in_block(original, name))
    assert readme.read_text() != original
    args = ["--readme", str(readme), "--root", str(ROOT)]
    assert readme_tables.main(["--check", *args]) == 1
    err = capsys.readouterr().err
    assert f"['{name}']" in err and "readme_tables.py --write" in err
    assert readme_tables.main(["--write", *args]) == 0
    assert readme.read_text() == original


def test_missing_source_json_and_missing_block_are_one_line_errors(tmp_path, capsys):
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    args = ["--check", "--readme", str(tmp_path / "README.md"), "--root", str(tmp_path)]
    assert readme_tables.main(args) == 1
    assert "is missing: it is the source of a README table" in capsys.readouterr().err
    (tmp_path / "README.md").write_text("# no blocks\n")
    args[-1] = str(ROOT)
    assert readme_tables.main(args) == 1
    assert "README lacks the generated block(s)" in capsys.readouterr().err


def test_h200_decode_summary_is_the_raw_json_and_its_accounting_holds():
    """Every H200 row is the raw run it names; "of the floor" recomputed from its bytes and
    time (bytes / step time / 4.3 TB/s) agrees and stays below 100%; "met" follows the
    targets; peer ratios and training MFU recomputed from their raw records; the committed
    summary is what the script makes now."""
    import json

    from gqa_t5.network import T5Config
    from scripts import summarize_h200
    from scripts.benchmark_decode import SIZES
    from scripts.benchmark_train import train_flops_per_step

    s = summarize_h200.summary()
    assert s == json.loads((ROOT / "benchmarks" / "decode_h200.json").read_text())
    for r in s["decode"] + s["variants"]:
        raw = [
            x
            for x in json.loads((ROOT / r["source"]).read_text())["runs"]
            if x["num_kv_heads"] == r["G"] and x["model"] == r["model"]
        ][0]
        step_s = raw["decode_s"] / raw["output_len"]
        floor = raw["floor_bytes_per_step"]["total"] / step_s / 4.3e12
        assert abs(floor - r["fraction_of_floor"]) < 2e-3 and floor < 1.0
        assert abs(raw["ms_per_step"] - r["ms_per_step"]) < 1e-3
    assert {v["case"] for r in s["peer"] for v in r["vs"]} == {"MHA-XXL", "GQA-8-XXL", "MHA-Large"}
    for r in s["peer"]:
        for v in r["vs"]:
            ours = json.loads((ROOT / v["source"]).read_text())["runs"]
            ours = [x for x in ours if x["model"] == r["model"]]
            assert any(abs(x["s_per_sample"] - v["s_per_sample"]) < 1e-4 for x in ours)
            assert abs(r["s_per_sample"] / v["s_per_sample"] - v["speedup"]) < 0.01
    for r in s["training"]:
        if "error" in r:  # a failed run has no figures to check
            continue
        raw = [
            x
            for x in json.loads((ROOT / r["source"]).read_text())["runs"]
            if x["batch"] == r["batch"]
        ][0]
        cfg = T5Config(**SIZES[r["model"]], num_kv_heads=raw["num_kv_heads"])
        flops = train_flops_per_step(cfg, raw["batch"], raw["input_len"], raw["target_len"])
        assert abs(flops / raw["step_s"] / 989e12 - r["mfu_vs_datasheet"]) < 1e-3
    for r in s["logits_dot_ab"]:  # the A/B's change and separation from its raw loops
        raw = {x["logits_dot"]: x for x in json.loads((ROOT / r["source"]).read_text())["runs"]}
        f32, b16 = raw["float32"], raw["bfloat16"]
        assert abs(b16["step_s"] / f32["step_s"] - 1 - r["change"]) < 1e-4
        assert f32["step_s"] == sorted(f32["step_s_loops"])[1]  # the median of three
        assert r["loops_separate"] == (max(b16["step_s_loops"]) < min(f32["step_s_loops"]))
    ceiling7 = s["ceilings_session7"]["bf16_matmul_TFLOPs"]
    for r in s["gqa8_xxl_targets_need"]:  # the step each time target leaves the decoder
        raw = json.loads((ROOT / r["source"]).read_text())["runs"]
        raw = next(x for x in raw if x["num_kv_heads"] == 8)
        B, L = raw["batch"], raw["output_len"]
        # the run's own time splits the same way: encoder + fill + steps = s/sample x batch
        steps = raw["ms_per_step"] / 1e3 * L
        total = raw["encode_s"] + raw["cross_kv_fill_s"] + steps
        assert abs(total / B - raw["s_per_sample"]) < 1e-4
        enc_at_ceiling = raw["encode_s"] * raw["encoder_TFLOPs"] / ceiling7
        for key, enc in (
            ("encoder_as_measured", raw["encode_s"]),
            ("encoder_at_matmul_ceiling", enc_at_ceiling),
        ):
            step = (r["s_per_sample"] * B - enc - raw["cross_kv_fill_s"]) / L
            assert abs(r[key]["ms_per_step"] - step * 1e3) < 0.006  # the fill is 0.041 ms
            floor = raw["floor_bytes_per_step"]["total"] / step / 4.3e12
            assert abs(r[key]["of_floor"] - floor) < 2e-3
    enc = s["encoder"]["same_call"]
    raw = json.loads((ROOT / enc["source"]).read_text())
    frac = raw["runs"][0]["encoder_TFLOPs"] / raw["ceilings"]["bf16_matmul_TFLOPs"]
    assert abs(frac - enc["of_ceiling"]) < 1e-3 and frac < 1.0
    md = summarize_h200.markdown(s)
    stars = [line for line in md.splitlines() if line.startswith("| ") and "* |" in line]
    assert stars and all(line.startswith("| GQA-2-XXL* |") for line in stars)  # 32/2/3, 32 rows
    gqa8 = next(r for r in s["decode"] if r["case"] == "GQA-8-XXL")
    assert "| no | 8 |" in md.splitlines()[2 + s["decode"].index(gqa8)]

    def verdict(**change):  # the decode table's first row for a GQA-8-XXL row changed so
        return summarize_h200.markdown(dict(s, decode=[dict(gqa8, **change)])).splitlines()[2]

    assert "| no | 8 |" in verdict(fraction_of_floor=0.9)  # 0.112 s/sample against <= 0.090
    assert "| yes | 8 |" in verdict(fraction_of_floor=0.9, s_per_sample=0.08)
    assert "| no | 8 |" in verdict(fraction_of_floor=0.8, s_per_sample=0.08)

"""Benchmark helpers: model sizes read from gin, ceilings and the floor they give."""

import pathlib

from scripts import benchmark_decode as bd

GIN = pathlib.Path(__file__).resolve().parents[1] / "gin" / "models" / "t5_1_1"


def test_every_t5_1_1_size_file_is_a_benchmark_size():
    assert {p.stem for p in GIN.glob("*.gin")} <= set(bd.SIZES)
    # Hand-read from gin/models/t5_1_1/small.gin (which includes base.gin).
    assert bd.SIZES["small"] == dict(
        emb_dim=512,
        num_heads=6,
        num_encoder_layers=8,
        num_decoder_layers=8,
        head_dim=64,
        mlp_dim=1024,
        vocab_size=32128,
    )
    assert bd.SIZES["base"]["num_heads"] == 12 and bd.SIZES["xxl"]["mlp_dim"] == 10240
    assert bd.SIZES["small8"] == dict(bd.SIZES["small"], num_heads=8)


def test_floor_never_uses_less_than_the_measured_copy_or_4_3_tb_per_s():
    assert bd.floor_bandwidth({}) == 4300.0
    assert bd.floor_bandwidth({"copy_GBps": 2900.0}) == 4300.0
    assert bd.floor_bandwidth({"copy_GBps": 4500.0}) == 4500.0


def test_ceilings_count_bytes_read_and_written():
    c = bd.measure_ceilings(copy_gib=1 / 1024, n=64, iters=2)
    assert c["copy_bytes"] == 2 * (1 << 20)  # 1 MiB read + 1 MiB written
    assert c["copy_GBps"] > 0 and c["read_GBps"] > 0 and c["bf16_matmul_TFLOPs"] > 0
    assert c["floor_GBps"] == max(c["copy_GBps"], 4300.0)


def test_train_benchmark_records_each_logits_dot_and_the_median_of_its_loops(tmp_path):
    """The harness on CPU at the smoke size (timings here mean nothing; the records do)."""
    import json

    import numpy as np
    import pytest

    from scripts import benchmark_train as bt

    out = tmp_path / "train.json"
    args = ["--model", "smoke", "--batch", "2", "--input_len", "16", "--target_len", "8"]
    args += ["--steps", "1", "--repeats", "3", "--attention_impl", "xla", "--out", str(out)]
    bt.main([*args, "--logits_dot", "float32,bfloat16"])
    runs = json.loads(out.read_text())["runs"]
    assert [r["logits_dot"] for r in runs] == ["float32", "bfloat16"]
    for r in runs:
        assert "error" not in r, r
        assert len(r["step_s_loops"]) == 3 and r["step_s"] == np.median(r["step_s_loops"])
        assert np.isfinite(r["loss"])
    # Same weights and batch: the bfloat16 products move the loss by rounding only, and do
    # move it (the option reached the model).
    assert 0 < abs(runs[0]["loss"] - runs[1]["loss"]) < 1e-2 * abs(runs[0]["loss"])
    for flag, value in (("--logits_dot", "float16"), ("--remat", "some"), ("--batch", "2,x")):
        with pytest.raises(SystemExit):
            bt.main([*args, flag, value])
    assert len(json.loads(out.read_text())["runs"]) == 2  # bad input wrote nothing

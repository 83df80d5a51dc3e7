"""MHA -> GQA conversion: math against float64 NumPy, logits, CLI and every bad input."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from test_checkpoints import WRITERS, D, H, N, tiny_params, write_hf

from gqa_t5 import convert
from gqa_t5.checkpoints import orbax_params
from gqa_t5.models import EncoderDecoderModel
from gqa_t5.network import T5Config


def test_g_equals_h_is_identity():
    flat = tiny_params()
    out = convert.convert_params(
        orbax_params.unflatten(flat), head_dim=H, num_kv_heads=N, group_encoder=True
    )
    for n, a in orbax_params.flatten(out).items():
        np.testing.assert_array_equal(a, flat[n])


@pytest.mark.parametrize("g", [1, 2])
def test_mean_matches_float64_reference(g):
    flat = tiny_params(seed=5)
    out = orbax_params.flatten(
        convert.convert_params(orbax_params.unflatten(flat), head_dim=H, num_kv_heads=g)
    )
    for n, a in flat.items():
        grouped = n.startswith("decoder/") and n.endswith(("key/kernel", "value/kernel"))
        if not grouped:  # query, out, encoder, relpos: untouched
            np.testing.assert_array_equal(out[n], a, err_msg=n)
            continue
        a64 = a.astype(np.float64)
        per = N // g
        ref = np.concatenate(
            [
                sum(a64[:, (j * per + i) * H : (j * per + i + 1) * H] for i in range(per)) / per
                for j in range(g)
            ],
            axis=1,
        )
        assert out[n].shape == (D, g * H)
        np.testing.assert_allclose(out[n], ref, rtol=1e-6, atol=1e-7, err_msg=n)


def test_first_and_random():
    k = np.arange(D * N * H, dtype=np.float32).reshape(D, N * H)
    first = convert.group_kv_kernel(k, H, 2, "first")
    np.testing.assert_array_equal(first, np.concatenate([k[:, 0:H], k[:, 2 * H : 3 * H]], 1))
    r1 = convert.group_kv_kernel(k, H, 2, "random", np.random.default_rng(3))
    r2 = convert.group_kv_kernel(k, H, 2, "random", np.random.default_rng(3))
    np.testing.assert_array_equal(r1, r2)
    big = convert.group_kv_kernel(
        np.zeros((400, 400), np.float32), 4, 50, "random", np.random.default_rng(0)
    )
    assert abs(big.std() - 1 / np.sqrt(400)) < 0.003 and np.abs(big).max() <= 2.0 / 0.8796 / 20
    with pytest.raises(ValueError, match="num_kv_heads=3"):
        convert.group_kv_kernel(k, H, 3, "mean")


def _tiny_cfg(**kw):
    return T5Config(
        vocab_size=20,
        emb_dim=D,
        num_heads=N,
        head_dim=H,
        mlp_dim=12,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dtype="float32",
        **kw,
    )


def test_first_is_exact_when_group_heads_are_equal():
    """Converted model's logits equal the MHA model's when each group's K/V heads agree."""
    flat = tiny_params(seed=6)
    g = 2
    for n in list(flat):
        if n.startswith("decoder/") and n.endswith(("key/kernel", "value/kernel")):
            heads = flat[n].reshape(D, g, 1, N // g, H)[:, :, :, :1]  # first head of group
            flat[n] = np.broadcast_to(heads, (D, g, 1, N // g, H)).reshape(D, N * H).copy()
    params = orbax_params.unflatten(flat)
    batch = {
        "encoder_input_tokens": jnp.array([[3, 4, 5, 6, 1, 0]]),
        "decoder_input_tokens": jnp.array([[0, 7, 8, 9]]),
        "decoder_target_tokens": jnp.array([[7, 8, 9, 1]]),
    }
    mha = np.asarray(EncoderDecoderModel(_tiny_cfg()).logits(params, batch))
    for method in ("first", "mean"):
        conv = convert.convert_params(params, head_dim=H, num_kv_heads=g, method=method)
        gqa = np.asarray(EncoderDecoderModel(_tiny_cfg(num_kv_heads=g)).logits(conv, batch))
        np.testing.assert_allclose(gqa, mha, rtol=1e-5, atol=1e-5)
    assert np.abs(mha).max() > 1.0


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_cli_from_each_format(tmp_path, fmt):
    flat = tiny_params(seed=7)
    src = WRITERS[fmt](tmp_path / "src", flat)
    out = tmp_path / "out"
    assert convert.main(["--input", str(src), "--output", str(out), "--num_kv_heads", "2"]) == 0
    got = orbax_params.flatten(orbax_params.restore_params(out))
    ref = orbax_params.flatten(
        convert.convert_params(orbax_params.unflatten(flat), head_dim=H, num_kv_heads=2)
    )
    assert set(got) == set(ref)
    for n in ref:
        np.testing.assert_array_equal(got[n], ref[n], err_msg=n)
    record = json.loads((out / "conversion.json").read_text())
    assert record["format"] == fmt and record["method"] == "mean"
    assert (
        record["config_before"]["num_kv_heads"] == 4 and record["config_after"]["num_kv_heads"] == 2
    )
    assert record["blocks"] == ["decoder_self", "cross"]
    removed = 2 * 2 * 2 * D * 2 * H  # 2 layers x (self, cross) x (k, v) x D x 2 heads x H
    assert record["param_count_before"] - record["param_count_after"] == removed
    assert record["param_count_before"] == sum(a.size for a in flat.values())
    # 2 (K and V) x heads x H x 2 layers x 2 bytes
    assert (
        record["kv_cache_bytes_per_token_before"]["decoder_self_attention_per_target_token"]
        == 2 * 4 * H * 2 * 2
    )
    assert (
        record["kv_cache_bytes_per_token_after"]["cross_attention_per_input_token"]
        == 2 * 2 * H * 2 * 2
    )


def test_converted_checkpoint_converts_again_and_group_encoder(tmp_path):
    flat = tiny_params(seed=8)
    write_hf(tmp_path / "hf", flat)
    args = ["--input", str(tmp_path / "hf"), "--num_kv_heads", "2", "--group_encoder"]
    assert convert.main([*args, "--output", str(tmp_path / "g2")]) == 0
    assert (
        convert.main(
            [
                "--input",
                str(tmp_path / "g2"),
                "--output",
                str(tmp_path / "g1"),
                "--num_kv_heads",
                "1",
                "--group_encoder",
            ]
        )
        == 0
    )
    once = orbax_params.flatten(orbax_params.restore_params(tmp_path / "g1"))
    direct = orbax_params.flatten(
        convert.convert_params(
            orbax_params.unflatten(flat), head_dim=H, num_kv_heads=1, group_encoder=True
        )
    )
    for n in direct:  # mean of means over equal-size groups is the overall mean
        np.testing.assert_allclose(once[n], direct[n], rtol=1e-6, atol=1e-6, err_msg=n)
    assert once["encoder/layers_0/attention/key/kernel"].shape == (D, H)


# -- bad input: clear message, exit code 2, nothing left behind ----------------------------


def _run_bad(tmp_path, src, match, capsys, extra=()):
    out = tmp_path / "out"
    rc = convert.main(["--input", str(src), "--output", str(out), "--num_kv_heads", "2", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and match in err, err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_bad_missing_tensor(tmp_path, capsys):
    flat = tiny_params()
    del flat["decoder/layers_1/mlp/wo/kernel"]
    _run_bad(
        tmp_path,
        write_hf(tmp_path / "src", flat),
        "missing tensors: decoder/layers_1/mlp/wo/kernel",
        capsys,
    )


def test_bad_extra_tensor(tmp_path, capsys):
    flat = tiny_params()
    flat["decoder/layers_2/mlp/wo/kernel"] = flat["decoder/layers_1/mlp/wo/kernel"]
    _run_bad(tmp_path, write_hf(tmp_path / "src", flat), "layers_2", capsys)


def test_bad_wrong_shape(tmp_path, capsys):
    flat = tiny_params()
    flat["decoder/layers_1/self_attention/out/kernel"] = np.zeros((N * H, D + 1), np.float32)
    _run_bad(
        tmp_path,
        write_hf(tmp_path / "src", flat),
        "wrong shape tensors: decoder/layers_1/self_attention/out/kernel",
        capsys,
    )


def test_bad_heads_not_divisible(tmp_path, capsys):
    src = write_hf(tmp_path / "src", tiny_params())
    out = tmp_path / "out"
    assert convert.main(["--input", str(src), "--output", str(out), "--num_kv_heads", "3"]) == 2
    assert "--num_kv_heads=3 must divide" in capsys.readouterr().err and not out.exists()


def test_bad_nan(tmp_path, capsys):
    flat = tiny_params()
    flat["decoder/layers_1/mlp/wi_1/kernel"][0, 0] = np.nan  # late in write order
    _run_bad(tmp_path, write_hf(tmp_path / "src", flat), "1 NaN/Inf values", capsys)


def test_bad_truncated_file(tmp_path, capsys):
    src = write_hf(tmp_path / "src", tiny_params())
    data = (src / "model.safetensors").read_bytes()
    (src / "model.safetensors").write_bytes(data[: len(data) - 100])
    _run_bad(tmp_path, src, "truncated safetensors", capsys)


def test_bad_truncated_zarr_chunk(tmp_path, capsys):
    src = WRITERS["t5x"](tmp_path / "src", tiny_params())
    chunk = src / "target.decoder.layers_1.mlp.wo.kernel" / "0.0"
    chunk.write_bytes(chunk.read_bytes()[:10])
    _run_bad(tmp_path, src, "truncated or corrupt", capsys)


def test_bad_unknown_format(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "weights.bin").write_bytes(b"x")
    _run_bad(tmp_path, tmp_path / "src", "not a recognised checkpoint", capsys)


def test_existing_output_refused_unless_overwrite(tmp_path, capsys):
    src = write_hf(tmp_path / "src", tiny_params())
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["--input", str(src), "--output", str(out), "--num_kv_heads", "2"]
    assert convert.main(args) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
    assert convert.main([*args, "--overwrite"]) == 0
    assert not (out / "keep.txt").exists() and (out / "conversion.json").exists()

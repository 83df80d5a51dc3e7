"""Calibration: streamed query-input covariances against NumPy, and their use by weighted."""

import numpy as np
import pytest
from test_checkpoints import H, tiny_params, write_hf
from test_conversion import BATCH, _cfg

from gqa_t5 import convert
from gqa_t5.checkpoints import orbax_params
from gqa_t5.conversion import calibration, convert_flat, pooling
from gqa_t5.conversion.heads import AttnHeads
from gqa_t5.models import EncoderDecoderModel

SELF0 = "decoder/layers_0/self_attention"


def _batches(sizes):
    b = {k: np.asarray(v) for k, v in BATCH.items()}
    rows = np.concatenate([np.arange(2)] * 3)  # 6 rows cycling the 2 examples
    out, i = [], 0
    for n in sizes:
        out.append({k: v[rows[i : i + n]] for k, v in b.items()})
        i += n
    return out


def test_covariance_matches_numpy_and_streams():
    flat = tiny_params(seed=11)
    model, params = EncoderDecoderModel(_cfg()), orbax_params.unflatten(flat)
    log = lambda s: None
    sig, seen = calibration.query_covariances(model, params, _batches([2, 2, 2]), 5, log)
    assert seen == 5
    # Layer 0's self-attention queries read RMSNorm(embedding(decoder inputs)) * scale.
    rows = [0, 1, 0, 1, 0]
    tok = np.asarray(BATCH["decoder_input_tokens"])[rows]
    x = flat["token_embedder/embedding"][tok].astype(np.float64)
    x = x / np.sqrt(np.mean(x**2, -1, keepdims=True) + 1e-6)
    x = x * flat["decoder/layers_0/pre_self_attention_layer_norm/scale"]
    keep = np.asarray(BATCH["decoder_target_tokens"])[rows] > 0
    ref = np.einsum("nd,ne->de", x[keep], x[keep]) / keep.sum()
    np.testing.assert_allclose(sig[SELF0], ref, rtol=1e-5, atol=1e-6)
    again, _ = calibration.query_covariances(model, params, _batches([1, 3, 1, 1]), 5, log)
    for n in sig:
        np.testing.assert_allclose(again[n], sig[n], rtol=1e-5, atol=1e-7, err_msg=n)
    assert set(sig) == {
        f"{s}/layers_{i}/{m}"
        for i in range(2)
        for s, m in [
            ("decoder", "self_attention"),
            ("decoder", "encoder_decoder_attention"),
            ("encoder", "attention"),
        ]
    }


def test_calibrated_weighted_minimises_the_calibrated_key_error():
    flat = tiny_params(seed=12)
    rng = np.random.default_rng(0)
    A = rng.standard_normal((8, 8)) * np.linspace(0.1, 3, 8)
    sigma = A @ A.T  # anisotropic, as real activations are
    sigmas = {SELF0: sigma}
    cal, rep = convert_flat(flat, head_dim=H, num_kv_heads=1, method="weighted", sigmas=sigmas)
    free, _ = convert_flat(flat, head_dim=H, num_kv_heads=1, method="weighted")
    mean, _ = convert_flat(flat, head_dim=H, num_kv_heads=1, method="mean")
    heads = AttnHeads.from_kernels(
        *(flat[f"{SELF0}/{n}/kernel"] for n in ("query", "key", "value", "out")), H
    )
    C = heads.key_weights(sigma)
    X = np.moveaxis(heads.k, 1, 0)
    err = lambda out: pooling.pooling_error(X, out[f"{SELF0}/key/kernel"].astype(np.float64), C)
    assert err(cal) < err(free) and err(cal) < err(mean)
    np.testing.assert_allclose(
        err(cal) / pooling.pooling_error(X, 0 * X[0], C), rep[SELF0]["key_error"], rtol=1e-4
    )
    # values need no data: the calibrated and data-free value kernels agree
    np.testing.assert_array_equal(cal[f"{SELF0}/value/kernel"], free[f"{SELF0}/value/kernel"])


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--method", "weighted", "--calibration", "no_such_task"], "no_such_task"),
        (["--method", "mean", "--calibration", "kjv_span_corruption"], "--calibration is used by"),
    ],
)
def test_cli_bad_calibration(tmp_path, capsys, extra, match):
    src = write_hf(tmp_path / "src", tiny_params())
    out = tmp_path / "out"
    argv = ["--input", str(src), "--output", str(out), "--num_kv_heads", "2", *extra]
    assert convert.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1, err
    assert not out.exists()

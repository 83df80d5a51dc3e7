"""Conversion methods: algebra against brute-force float64 NumPy, output-preserving head
transforms on an MHA model (incl. the shared relative position bias), pooled logits."""

import jax.numpy as jnp
import numpy as np
import pytest
from test_checkpoints import D, H, N, tiny_params

from gqa_t5 import conversion
from gqa_t5.checkpoints import orbax_params
from gqa_t5.conversion import grouping, heads, pooling
from gqa_t5.models import EncoderDecoderModel
from gqa_t5.network import T5Config

BATCH = {
    "encoder_input_tokens": jnp.array([[3, 4, 5, 6, 7, 8, 9, 1, 0], [5, 2, 9, 1, 0, 0, 0, 0, 0]]),
    "decoder_input_tokens": jnp.array([[0, 7, 8, 9, 10, 11], [0, 3, 4, 0, 0, 0]]),
    "decoder_target_tokens": jnp.array([[7, 8, 9, 10, 11, 1], [3, 4, 1, 0, 0, 0]]),
}
SELF = [f"decoder/layers_{i}/self_attention" for i in range(2)]
CROSS = [f"decoder/layers_{i}/encoder_decoder_attention" for i in range(2)]


def _cfg(g=N):
    return T5Config(
        vocab_size=20,
        emb_dim=D,
        num_heads=N,
        num_kv_heads=g,
        head_dim=H,
        mlp_dim=12,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dtype="float32",
    )


def _close(got, ref):
    """Equal up to float32 rounding: 2e-5 of the largest logit (random unit-normal weights
    give logits ~10, and a re-rounded kernel moves them by a few ulps of that)."""
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-5 * np.abs(ref).max())


def _logits(flat, g=N):
    params = orbax_params.unflatten(flat)
    return np.asarray(EncoderDecoderModel(_cfg(g)).logits(params, BATCH))


def _problem(seed, P=3, Dd=6, Hh=4, structured=False):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((P, Dd, Hh))
    Wo = rng.standard_normal((P, Hh, 5))
    if structured:  # heads sharing a component, anisotropic outputs (as trained heads are)
        X = X * 0.3 + rng.standard_normal((1, Dd, Hh))
        Wo = Wo * np.array([3.0, 1.0, 0.3, 0.1])[None, :, None]
    return X, Wo, np.einsum("phd,pjd->phj", Wo, Wo)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_pool_is_the_least_squares_minimiser(seed):
    X, Wo, M = _problem(seed)
    W = pooling.weighted_pool(X, M)
    # Brute force: sum_i ||X_i Wo_i - W Wo_i||^2 as one stacked least-squares problem.
    A = np.concatenate(list(Wo), axis=1)  # [H, P*5]
    B = np.concatenate([X[i] @ Wo[i] for i in range(len(X))], axis=1)  # [D, P*5]
    ref = np.linalg.lstsq(A.T, B.T, rcond=None)[0].T
    np.testing.assert_allclose(W, ref, rtol=1e-9, atol=1e-10)
    e = pooling.pooling_error(X, W, M)
    np.testing.assert_allclose(e, np.sum((B - ref @ A) ** 2), rtol=1e-9)
    rng = np.random.default_rng(seed + 10)
    for _ in range(20):  # no nearby point is better
        assert pooling.pooling_error(X, W + 1e-3 * rng.standard_normal(W.shape), M) > e


@pytest.mark.parametrize("structured", [False, True])
def test_weighted_beats_mean_and_equals_it_for_identical_heads(structured):
    for seed in range(5):
        X, _, M = _problem(seed, structured=structured)
        W = pooling.weighted_pool(X, M)
        assert pooling.pooling_error(X, W, M) < pooling.pooling_error(X, X.mean(0), M)
        same = np.broadcast_to(X[:1], X.shape)
        np.testing.assert_allclose(pooling.weighted_pool(same, M), X[0], rtol=1e-9, atol=1e-12)


def test_generalised_procrustes_recovers_rotations():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((8, 4))
    Q = np.stack([np.linalg.qr(rng.standard_normal((4, 4)))[0] for _ in range(3)])
    X = np.einsum("dh,phk->pdk", base, Q)
    R = pooling.generalised_procrustes(X)
    Y = np.einsum("pdh,phk->pdk", X, R)
    np.testing.assert_allclose(Y - Y.mean(0), 0, atol=1e-9)
    np.testing.assert_allclose(
        np.einsum("phk,pjk->phj", R, R), np.broadcast_to(np.eye(4), R.shape), atol=1e-12
    )
    assert pooling.pooling_error(Y, Y.mean(0), None) < 1e-3 * pooling.pooling_error(
        X, X.mean(0), None
    )


def _rotated_all(flat):
    """Every attention block of the MHA model rotated by its aligned rotations, no pooling."""
    out = dict(flat)
    for p in SELF + CROSS + [f"encoder/layers_{i}/attention" for i in range(2)]:
        h = heads.AttnHeads.from_kernels(*(flat[f"{p}/{n}/kernel"] for n in conversion._QKVO), H)
        R = pooling.generalised_procrustes(np.moveaxis(h.k, 1, 0))
        S = pooling.generalised_procrustes(np.moveaxis(h.v, 1, 0))
        assert np.abs(R - np.eye(H)).max() > 0.1  # a real rotation, not the identity
        for n, a in heads.rotate(h, R, S).kernels().items():
            out[f"{p}/{n}/kernel"] = a
    return out


def test_aligned_rotations_preserve_mha_logits():
    flat = tiny_params(seed=1)
    mha = _logits(flat)
    _close(_logits(_rotated_all(flat)), mha)
    assert np.abs(mha).max() > 1.0


def _permuted(flat, perm, bias=True):
    out = dict(flat)
    for p in SELF + CROSS:
        h = heads.AttnHeads.from_kernels(*(flat[f"{p}/{n}/kernel"] for n in conversion._QKVO), H)
        for n, a in heads.permute(h, perm).kernels().items():
            out[f"{p}/{n}/kernel"] = a
    if bias:
        rel = "decoder/relpos_bias/rel_embedding"
        out[rel] = heads.permute_bias_rows(flat[rel], perm, N)
    return out


def test_permutation_preserves_mha_logits_only_with_the_bias_rows():
    flat = tiny_params(seed=2)
    mha = _logits(flat)
    perm = np.array([2, 0, 3, 1])
    _close(_logits(_permuted(flat, perm)), mha)
    wrong = _logits(_permuted(flat, perm, bias=False))  # what a per-layer-only permutation does
    assert np.abs(wrong - mha).max() > 1e-2


def _paired_heads(seed, pairs=((0, 2), (1, 3))):
    """MHA params whose decoder K/V heads agree within each pair (queries, outs differ)."""
    flat = tiny_params(seed=seed)
    for p in SELF + CROSS:
        for n in ("key", "value"):
            a = flat[f"{p}/{n}/kernel"].reshape(D, N, H)
            for i, j in pairs:
                a[:, j] = a[:, i]
            flat[f"{p}/{n}/kernel"] = a.reshape(D, N * H)
    return flat


@pytest.mark.parametrize("method", ["mean", "weighted", "aligned"])
def test_similarity_grouping_finds_equal_heads_and_is_exact(method):
    """Heads 0=2 and 1=3: grouping pairs them and the G=2 model equals the MHA model. This
    needs the decoder's bias rows permuted with its self-attention heads in every layer."""
    flat = _paired_heads(seed=3)
    mha = _logits(flat)
    out, report = conversion.convert_flat(
        flat, head_dim=H, num_kv_heads=2, method=method, grouping="similarity"
    )
    for p in SELF + CROSS:
        assert report[p]["groups"] == [[0, 2], [1, 3]], p
        assert report[p]["key_error"] < 1e-12 and report[p]["value_error"] < 1e-12
    assert report["decoder/relpos_bias"]["permutation"] == [0, 2, 1, 3]
    _close(_logits(out, g=2), mha)
    contiguous, _ = conversion.convert_flat(flat, head_dim=H, num_kv_heads=2, method=method)
    assert np.abs(_logits(contiguous, g=2) - mha).max() > 1e-2
    for n in flat:  # the encoder (MHA) and its bias are untouched
        if n.startswith("encoder/"):
            np.testing.assert_array_equal(out[n], flat[n])
    broken = dict(
        out, **{"decoder/relpos_bias/rel_embedding": flat["decoder/relpos_bias/rel_embedding"]}
    )
    assert np.abs(_logits(broken, g=2) - mha).max() > 1e-2


def test_aligned_is_exact_for_rotated_copies():
    """K/V heads that are rotations of one another pool without loss after alignment."""
    flat = tiny_params(seed=4)
    rng = np.random.default_rng(4)
    for p in SELF + CROSS:
        for n in ("key", "value"):
            a = flat[f"{p}/{n}/kernel"].reshape(D, N, H)
            for i in range(N):
                Q = np.linalg.qr(rng.standard_normal((H, H)))[0]
                a[:, i] = a[:, 0] @ Q
            flat[f"{p}/{n}/kernel"] = a.reshape(D, N * H)
    mha = _logits(flat)
    out, report = conversion.convert_flat(flat, head_dim=H, num_kv_heads=1, method="aligned")
    assert max(report[p]["key_error"] for p in SELF + CROSS) < 1e-10
    _close(_logits(out, g=1), mha)
    mean, _ = conversion.convert_flat(flat, head_dim=H, num_kv_heads=1, method="mean")
    assert np.abs(_logits(mean, g=1) - mha).max() > 1e-2


@pytest.mark.parametrize("g", [1, 2])
def test_weighted_lowers_its_objective_on_every_block(g):
    flat = tiny_params(seed=5)
    _, mean = conversion.convert_flat(flat, head_dim=H, num_kv_heads=g, method="mean")
    for method in ("weighted", "aligned_weighted"):
        _, rep = conversion.convert_flat(flat, head_dim=H, num_kv_heads=g, method=method)
        for p in SELF + CROSS:
            assert rep[p]["key_error"] < mean[p]["key_error"]
            assert rep[p]["value_error"] < mean[p]["value_error"]
    _, al = conversion.convert_flat(flat, head_dim=H, num_kv_heads=g, method="aligned")
    assert all(al[p]["value_error"] != mean[p]["value_error"] for p in SELF + CROSS)


def test_mean_contiguous_matches_the_paper_path():
    from gqa_t5 import convert

    flat = tiny_params(seed=6)
    out, _ = conversion.convert_flat(flat, head_dim=H, num_kv_heads=2, method="mean")
    ref = orbax_params.flatten(
        convert.convert_params(orbax_params.unflatten(flat), head_dim=H, num_kv_heads=2)
    )
    for n in ref:
        np.testing.assert_allclose(out[n], ref[n], rtol=1e-6, atol=1e-7, err_msg=n)


def test_best_partition_exact_and_greedy():
    w = np.array([0.0, 5.0, 0.1, 5.2, 9.0, 0.2])
    cost = lambda g: float(np.var(w[list(g)]))
    exact = grouping.best_partition(6, 3, cost)
    brute = min(grouping._partitions(tuple(range(6)), 2), key=lambda p: sum(map(cost, p)))
    assert sorted(exact) == sorted(brute)
    assert grouping.num_partitions(6, 3) == 15 and grouping.num_partitions(8, 2) == 35


def test_bad_input():
    flat = tiny_params(seed=0)
    with pytest.raises(conversion.ConversionError, match="num_kv_heads=3"):
        conversion.convert_flat(flat, head_dim=H, num_kv_heads=3)
    with pytest.raises(conversion.ConversionError, match="unknown method"):
        conversion.convert_flat(flat, head_dim=H, num_kv_heads=2, method="svd")


def test_cli_weighted_similarity(tmp_path):
    import json

    from test_checkpoints import write_hf

    from gqa_t5 import convert

    flat = _paired_heads(seed=7)
    src = write_hf(tmp_path / "src", flat)
    out = tmp_path / "out"
    argv = ["--input", str(src), "--output", str(out), "--num_kv_heads", "2"]
    assert convert.main([*argv, "--method", "weighted", "--grouping", "similarity"]) == 0
    got = orbax_params.flatten(orbax_params.restore_params(out))
    ref, rep = conversion.convert_flat(
        flat, head_dim=H, num_kv_heads=2, method="weighted", grouping="similarity"
    )
    for n in ref:
        np.testing.assert_allclose(got[n], ref[n], rtol=1e-6, atol=1e-7, err_msg=n)
    record = json.loads((out / "conversion.json").read_text())
    assert record["method"] == "weighted" and record["grouping"] == "similarity"
    assert record["block_errors"][SELF[0]]["groups"] == [[0, 2], [1, 3]]
    _close(_logits(got, g=2), _logits(flat))


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--num_kv_heads", "3", "--method", "aligned"], "--num_kv_heads=3 must divide"),
        (["--num_kv_heads", "2", "--method", "random", "--grouping", "similarity"], "random"),
    ],
)
def test_cli_bad_input_writes_nothing(tmp_path, capsys, extra, match):
    from test_checkpoints import write_hf

    from gqa_t5 import convert

    src = write_hf(tmp_path / "src", tiny_params())
    out = tmp_path / "out"
    assert convert.main(["--input", str(src), "--output", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1, err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]

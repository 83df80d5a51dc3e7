"""Per-decoder-layer G: config, network, cache, decoding, conversion, sharding, budget."""

import itertools

import jax
import numpy as np
import pytest
from test_checkpoints import H, N, tiny_params, write_hf
from test_conversion import _logits
from test_network import random_batch, tiny_config

from gqa_t5 import convert, partitioning
from gqa_t5.checkpoints import orbax_params
from gqa_t5.conversion import budget, convert_flat
from gqa_t5.models import EncoderDecoderModel, kv_cache_bytes_per_token

PER_LAYER = ((2, 1), (4, 2))  # (self, cross) for decoder layers 0 and 1


def test_config_normalises_and_rejects_bad_lists():
    assert tiny_config(num_kv_heads=[2, 2]).num_kv_heads == 2
    assert tiny_config(num_kv_heads=[[2, 2], 2]).num_kv_heads == 2
    cfg = tiny_config(num_kv_heads=[[2, 1], [4, 2]])
    assert cfg.num_kv_heads == PER_LAYER and cfg.kv_heads(1, "cross") == 2
    assert tiny_config(num_kv_heads=[2, 1]).per_layer_kv_heads == ((2, 2), (1, 1))
    with pytest.raises(ValueError, match="has 3 entries for 2 decoder layers"):
        tiny_config(num_kv_heads=[2, 1, 1])
    with pytest.raises(ValueError, match="not divisible by num_kv_heads=3"):
        tiny_config(num_kv_heads=[2, 3])
    with pytest.raises(ValueError, match="group_encoder needs one int"):
        tiny_config(num_kv_heads=[2, 1], group_encoder=True)


def test_uniform_list_is_the_uniform_model():
    batch = random_batch(1)
    uni = EncoderDecoderModel(tiny_config(num_kv_heads=2))
    params = uni.init(jax.random.PRNGKey(0))["params"]
    per = EncoderDecoderModel(tiny_config(num_kv_heads=[(2, 2), 2]))
    np.testing.assert_array_equal(per.logits(params, batch), uni.logits(params, batch))


def test_per_layer_shapes_cache_bytes_and_cached_decoding():
    model = EncoderDecoderModel(tiny_config(num_kv_heads=PER_LAYER))
    params = model.init(jax.random.PRNGKey(1))["params"]
    D, Hd = 24, 6
    for i, (s, c) in enumerate(PER_LAYER):
        layer = params["decoder"][f"layers_{i}"]
        assert layer["self_attention"]["key"]["kernel"].shape == (D, s * Hd)
        assert layer["encoder_decoder_attention"]["value"]["kernel"].shape == (D, c * Hd)
    B, S, T = 3, 9, 7
    cache = model.init_cache(params, B, S, T)
    per_token = kv_cache_bytes_per_token(model.config, bytes_per_value=4)
    for i, (self_b, cross_b) in enumerate(per_token["per_layer"]):
        leaves = cache["decoder"][f"layers_{i}"]
        got_self = sum(
            x.nbytes for x in jax.tree_util.tree_leaves(leaves["self_attention"]) if x.ndim == 4
        )
        got_cross = sum(
            x.nbytes
            for x in jax.tree_util.tree_leaves(leaves["encoder_decoder_attention"])
            if x.ndim == 4
        )
        assert (got_self, got_cross) == (self_b * B * T, cross_b * B * S)
        assert self_b == 2 * PER_LAYER[i][0] * Hd * 4
    assert per_token["decoder_self_attention_per_target_token"] == 2 * (2 + 4) * Hd * 4
    # cached decoding equals teacher forcing
    batch = random_batch(5)
    full = np.asarray(model.logits(params, batch))
    cache = model.prefill(params, cache, model.encode(params, batch["encoder_input_tokens"]))
    step = jax.jit(model.tokens_to_logits_fn(params, batch["encoder_input_tokens"], T))
    got = []
    for t in range(T):
        logits, cache = step(batch["decoder_input_tokens"][:, t : t + 1], cache)
        got.append(np.asarray(logits))
    keep = np.asarray(batch["decoder_target_tokens"]) > 0
    np.testing.assert_allclose(np.stack(got, 1)[keep], full[keep], rtol=1e-5, atol=1e-5)


def test_sharding_rule_needs_every_layer_to_divide():
    rules = lambda k: dict(partitioning.standard_logical_axis_rules(k, 2))["joined_kv_heads"]
    assert rules(PER_LAYER[1:] + ((2, 2),)) == "model"
    assert rules(PER_LAYER) is None and rules(2) == "model" and rules(1) is None


def _grouped_heads(flat, per_layer):
    """MHA params whose K/V heads agree within each block's contiguous groups."""
    D = flat["decoder/layers_0/self_attention/key/kernel"].shape[0]
    for i, pair in enumerate(per_layer):
        for mod, g in zip(("self_attention", "encoder_decoder_attention"), pair, strict=True):
            for n in ("key", "value"):
                name = f"decoder/layers_{i}/{mod}/{n}/kernel"
                a = flat[name].reshape(D, g, N // g, H)
                flat[name] = np.broadcast_to(a[:, :, :1], a.shape).reshape(D, N * H).copy()
    return flat


@pytest.mark.parametrize("method", ["mean", "weighted"])
def test_per_layer_conversion_is_exact_for_grouped_heads(method, tmp_path):
    per_layer = ((2, 1), (4, 2))
    flat = _grouped_heads(tiny_params(seed=9), per_layer)
    out, rep = convert_flat(flat, head_dim=H, num_kv_heads=per_layer, method=method)
    got = _logits(out, g=per_layer)
    ref = _logits(flat)
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-5 * np.abs(ref).max())
    # the CLI writes the same per-layer checkpoint
    src = write_hf(tmp_path / "src", flat)
    argv = ["--input", str(src), "--output", str(tmp_path / "out"), "--num_kv_heads", "2/1,4/2"]
    assert convert.main([*argv, "--method", method]) == 0
    written = orbax_params.flatten(orbax_params.restore_params(tmp_path / "out"))
    for n in out:
        np.testing.assert_allclose(written[n], out[n], rtol=1e-6, atol=1e-7, err_msg=n)


def test_cli_per_layer_list_of_wrong_length(tmp_path, capsys):
    src = write_hf(tmp_path / "src", tiny_params())
    out = tmp_path / "out"
    assert convert.main(["--input", str(src), "--output", str(out), "--num_kv_heads", "2,1,1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "3 entries for 2 decoder layers" in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_budget_plan_is_the_exhaustive_optimum():
    rng = np.random.default_rng(0)
    blocks = [
        f"decoder/layers_{i}/{m}"
        for i in range(2)
        for m in ("self_attention", "encoder_decoder_attention")
    ]
    errors = {b: {1: rng.uniform(1, 2), 2: rng.uniform(0.3, 1), 4: 0.0} for b in blocks}
    chosen = budget.plan(errors, budget_heads=8)
    best = min(
        (c for c in itertools.product((1, 2, 4), repeat=4) if sum(c) <= 8),
        key=lambda c: sum(errors[b][g] for b, g in zip(blocks, c, strict=True)),
    )
    assert tuple(chosen[b] for b in blocks) == best
    assert budget.per_layer_kv_heads(chosen, 2) == ((best[0], best[1]), (best[2], best[3]))
    with pytest.raises(ValueError, match="below the smallest plan"):
        budget.plan(errors, budget_heads=3)


def test_block_errors_fall_with_g():
    errs = budget.block_errors(tiny_params(seed=3), head_dim=H, candidates=(1, 2, 4))
    for e in errs.values():
        assert e[1] > e[2] > e[4] == 0.0


def _checked_checksums(record: dict, flat: dict) -> None:
    """conversion.json's checksums against zlib over the written float32 bytes."""
    import zlib

    assert set(record["checksums"]) == set(flat)
    for name, array in flat.items():
        crc = zlib.crc32(np.ascontiguousarray(array, np.float32).tobytes())
        assert record["checksums"][name] == f"crc32:{crc:08x}", name


@pytest.mark.parametrize("output_format", ["orbax", "t5x"])
def test_new_methods_write_per_layer_model_gin_and_checksums(output_format, tmp_path):
    import json

    from gqa_t5 import checkpointing
    from gqa_t5.checkpoints import t5x_writer
    from gqa_t5.gin_utils import model_from_gin

    flat = tiny_params(seed=4)
    src, out = write_hf(tmp_path / "src", flat), tmp_path / "out"
    # similarity grouping needs one G for all self-attention layers (the shared bias table)
    per_layer = ((2, 1), (2, 4))
    argv = ["--input", str(src), "--output", str(out), "--num_kv_heads", "2/1,2/4"]
    argv += ["--method", "aligned_weighted", "--grouping", "similarity"]
    assert convert.main([*argv, "--output_format", output_format]) == 0
    ref, _ = convert_flat(
        flat,
        head_dim=H,
        num_kv_heads=per_layer,
        method="aligned_weighted",
        grouping="similarity",
    )
    if output_format == "t5x":
        state = orbax_params.flatten(t5x_writer.restore_train_state(out / "checkpoint_0"))
        written = {k[len("target/") :]: v for k, v in state.items() if k.startswith("target/")}
    else:
        written = orbax_params.flatten(orbax_params.restore_params(out))
    assert set(written) == set(ref)
    for n in ref:
        np.testing.assert_allclose(written[n], ref[n], rtol=1e-6, atol=1e-7, err_msg=n)
    record = json.loads((out / "conversion.json").read_text())
    _checked_checksums(record, written)
    # model.gin builds the per-layer model, whose shapes the written params match.
    assert "NUM_KV_HEADS = ((2, 1), (2, 4))" in (out / "model.gin").read_text()
    model = model_from_gin([str(out / "model.gin")])
    assert model.config.num_kv_heads == per_layer
    abstract = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0)))["params"]
    shapes = orbax_params.flatten(jax.tree_util.tree_map(lambda s: tuple(s.shape), abstract))
    assert shapes == {n: a.shape for n, a in written.items()}
    if output_format == "orbax":
        cpu = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        abstract = jax.tree_util.tree_map(
            lambda s: jax.ShapeDtypeStruct(s.shape, np.float32, sharding=cpu), abstract
        )
        checkpointing.load_initial_params(out, abstract, model.config, "CHECKPOINT_PATH")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_kv_heads": (2, 1, 1)}, "3 entries for 2 decoder layers"),
        ({"num_kv_heads": 2, "method": "random", "grouping": "similarity"}, "random"),
        ({"num_kv_heads": 2, "method": "mean", "calibration": "kjv_modernize"}, "--calibration"),
        ({"num_kv_heads": 2, "method": "weighted", "calibration": "no_such_task"}, "no_such"),
        ({"num_kv_heads": ((3, 1), (1, 1)), "method": "aligned"}, "divisible by num_kv_heads=3"),
    ],
)
def test_new_method_bad_input_is_bad_input_and_writes_nothing(kwargs, match, tmp_path):
    from gqa_t5 import errors

    src = write_hf(tmp_path / "src", tiny_params())
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(errors.BadInput, match=match) as info:
        convert.convert_checkpoint(src, tmp_path / "out", log=lambda s: None, **kwargs)
    assert errors.classify(info.value)[0] == errors.EXIT_BAD_INPUT
    assert sorted(tmp_path.rglob("*")) == before

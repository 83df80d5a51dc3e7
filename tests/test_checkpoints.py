"""Checkpoint readers: each format written in its real layout, read back exactly."""

import json

import msgpack  # noqa: F401  (the t5x layout is msgpack; flax serializes through it)
import numpy as np
import pytest
import tensorstore as ts
from flax import serialization

from gqa_t5.checkpoints import (
    CheckpointError,
    detect_format,
    huggingface,
    mesh_tf,
    open_checkpoint,
    orbax_params,
)

D, N, H, F, V, L = 8, 4, 2, 12, 20, 2


def tiny_params(seed=0, gated=True, tied=False, kv_heads=N):
    """Random float32 params in gqa-t5 names (T5.1.1 layout unless gated=False)."""
    rng = np.random.default_rng(seed)
    r = lambda *s: rng.standard_normal(s).astype(np.float32)
    mlp = (
        {"wi_0": r(D, F), "wi_1": r(D, F), "wo": r(F, D)}
        if gated
        else {"wi": r(D, F), "wo": r(F, D)}
    )
    attn = lambda k: {
        "query": r(D, N * H),
        "key": r(D, k * H),
        "value": r(D, k * H),
        "out": r(N * H, D),
    }
    flat = {"token_embedder/embedding": r(V, D)}
    for stack in ("encoder", "decoder"):
        flat[f"{stack}/relpos_bias/rel_embedding"] = r(N, 32)
        flat[f"{stack}/{stack}_norm/scale"] = 1 + r(D)
        for i in range(L):
            p = f"{stack}/layers_{i}/"
            mods = (
                {"attention": attn(N)}
                if stack == "encoder"
                else {"self_attention": attn(kv_heads), "encoder_decoder_attention": attn(kv_heads)}
            )
            mods["mlp"] = mlp
            for m, ws in mods.items():
                for w, a in ws.items():
                    flat[p + f"{m}/{w}/kernel"] = a + 0.01 * r(*a.shape)
            norms = (
                ["pre_attention_layer_norm"]
                if stack == "encoder"
                else ["pre_self_attention_layer_norm", "pre_cross_attention_layer_norm"]
            )
            for n in norms + ["pre_mlp_layer_norm"]:
                flat[p + f"{n}/scale"] = 1 + r(D)
    if not tied:
        flat["decoder/logits_dense/kernel"] = r(D, V)
    return flat


# -- writers in each format's real layout -------------------------------------------------

HF_SUB = {
    ("encoder", "attention"): ("0", "SelfAttention"),
    ("encoder", "mlp"): ("1", "DenseReluDense"),
    ("decoder", "self_attention"): ("0", "SelfAttention"),
    ("decoder", "encoder_decoder_attention"): ("1", "EncDecAttention"),
    ("decoder", "mlp"): ("2", "DenseReluDense"),
}
HF_NORM = {
    "pre_attention_layer_norm": "0",
    "pre_self_attention_layer_norm": "0",
    "pre_cross_attention_layer_norm": "1",
    "pre_mlp_layer_norm": None,
}
QKVO = {"query": "q", "key": "k", "value": "v", "out": "o"}


def gqa_to_hf(name):
    """(HF name, transpose) for a gqa-t5 name: the test's own inverse of the reader's map."""
    parts = name.split("/")
    if name == "token_embedder/embedding":
        return "shared.weight", False
    if name == "decoder/logits_dense/kernel":
        return "lm_head.weight", True
    if parts[1] == "relpos_bias":
        return f"{parts[0]}.block.0.layer.0.SelfAttention.relative_attention_bias.weight", True
    if parts[1].endswith("_norm"):
        return f"{parts[0]}.final_layer_norm.weight", False
    stack, i, mod = parts[0], parts[1][7:], parts[2]
    if mod.endswith("layer_norm"):
        sub = HF_NORM[mod] or ("1" if stack == "encoder" else "2")
        return f"{stack}.block.{i}.layer.{sub}.layer_norm.weight", False
    sub, kind = HF_SUB[(stack, mod)]
    w = QKVO.get(parts[3], parts[3])
    return f"{stack}.block.{i}.layer.{sub}.{kind}.{w}.weight", True


def write_hf(path, flat, config=None, dtype=np.float32):
    from safetensors.numpy import save_file

    path.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for n, a in flat.items():
        hf, t = gqa_to_hf(n)
        tensors[hf] = np.ascontiguousarray(a.T if t else a).astype(dtype)
    save_file(tensors, str(path / "model.safetensors"))
    tied = "decoder/logits_dense/kernel" not in flat
    cfg = {
        "model_type": "t5",
        "tie_word_embeddings": tied,
        "feed_forward_proj": "gated-gelu" if "encoder/layers_0/mlp/wi_0/kernel" in flat else "relu",
    }
    (path / "config.json").write_text(json.dumps(config or cfg))
    return path


def gqa_to_mesh_tf(name):
    parts = name.split("/")
    if name == "token_embedder/embedding":
        return "shared/embedding"
    if name == "decoder/logits_dense/kernel":
        return "decoder/logits/kernel"
    if parts[1] == "relpos_bias":
        return f"{parts[0]}/block_000/layer_000/SelfAttention/relative_attention_bias"
    if parts[1].endswith("_norm"):
        return f"{parts[0]}/final_layer_norm/scale"
    stack, i, mod = parts[0], int(parts[1][7:]), parts[2]
    if mod.endswith("layer_norm"):
        sub = HF_NORM[mod] or ("1" if stack == "encoder" else "2")
        return f"{stack}/block_{i:03d}/layer_{int(sub):03d}/layer_norm/scale"
    sub, kind = HF_SUB[(stack, mod)]
    w = QKVO.get(parts[3], parts[3])
    suffix = f"{w}/kernel" if kind == "DenseReluDense" else w
    return f"{stack}/block_{i:03d}/layer_{int(sub):03d}/{kind}/{suffix}"


def write_mesh_tf(path, flat):
    import tensorflow as tf

    path.mkdir(parents=True, exist_ok=True)
    graph = tf.Graph()
    with graph.as_default():
        for n, a in flat.items():
            tf.compat.v1.Variable(a, name=gqa_to_mesh_tf(n))
            if a.ndim == 2:  # an Adafactor slot, which the reader must skip
                tf.compat.v1.Variable(a[:, 0], name=gqa_to_mesh_tf(n) + "_slot_vr")
        tf.compat.v1.Variable(np.int64(1000), name="global_step")
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, str(path / "model.ckpt"), global_step=1000)
    return path


def write_t5x_legacy(path, flat, inline=("encoder/encoder_norm/scale",)):
    path.mkdir(parents=True, exist_ok=True)
    leaves = {}
    for n, a in flat.items():
        if n in inline:
            leaves[n] = a
            continue
        rel = "target." + n.replace("/", ".")
        spec = {
            "driver": "zarr",
            "kvstore": {"driver": "file", "path": rel},
            "metadata": {
                "shape": list(a.shape),
                "chunks": list(a.shape),
                "dtype": "<f4",
                "compressor": {"id": "gzip"},
            },
        }
        full = {**spec, "kvstore": {"driver": "file", "path": str(path / rel)}}
        ts.open(full, create=True).result().write(a).result()
        leaves[n] = spec
    state = {
        "version": 3,
        "optimizer": {"target": orbax_params.unflatten(leaves), "state": {"step": np.int32(1000)}},
    }
    (path / "checkpoint").write_bytes(serialization.msgpack_serialize(state))
    return path


def write_t5x_orbax(path, flat):
    import orbax.checkpoint as ocp

    tree = {"target": orbax_params.unflatten(flat), "state": {"step": np.int32(1000)}}
    with ocp.PyTreeCheckpointer() as c:
        c.save(path.absolute(), tree)
    return path


WRITERS = {
    "huggingface": write_hf,
    "mesh_tf": write_mesh_tf,
    "t5x": write_t5x_legacy,
    "t5x_orbax": write_t5x_orbax,
    "gqa_t5": lambda p, f: orbax_params.save_params(p, orbax_params.unflatten(f)),
}


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_round_trip_each_format(tmp_path, fmt):
    flat = tiny_params(seed=1)
    path = WRITERS[fmt](tmp_path / "ckpt", flat)
    assert detect_format(path) == fmt
    reader = open_checkpoint(path)
    assert reader.shapes() == {n: a.shape for n, a in flat.items()}
    for name, array in reader.iter_tensors():
        np.testing.assert_array_equal(array, flat[name], err_msg=name)
    assert reader.hints["logits_via_embedding"] is False


def test_hf_t5_1_0_tied_and_bfloat16(tmp_path):
    import ml_dtypes

    flat = tiny_params(seed=2, gated=False, tied=True)
    path = write_hf(tmp_path / "hf", flat, dtype=ml_dtypes.bfloat16)
    reader = open_checkpoint(path)
    assert reader.hints == {"logits_via_embedding": True, "mlp_activations": ("relu",)}
    for name, array in reader.iter_tensors():
        expected = flat[name].astype(ml_dtypes.bfloat16).astype(np.float32)
        np.testing.assert_array_equal(array, expected, err_msg=name)


def test_hf_sharded_index(tmp_path):
    from safetensors.numpy import save_file

    flat = tiny_params(seed=3)
    one = write_hf(tmp_path / "one", flat)
    from safetensors.numpy import load_file

    tensors = load_file(str(one / "model.safetensors"))
    names = sorted(tensors)
    shards = {"a.safetensors": names[::2], "b.safetensors": names[1::2]}
    out = tmp_path / "sharded"
    out.mkdir()
    for f, ns in shards.items():
        save_file({n: tensors[n] for n in ns}, str(out / f))
    index = {"weight_map": {n: f for f, ns in shards.items() for n in ns}}
    (out / "model.safetensors.index.json").write_text(json.dumps(index))
    (out / "config.json").write_text((one / "config.json").read_text())
    reader = open_checkpoint(out)
    for name, array in reader.iter_tensors():
        np.testing.assert_array_equal(array, flat[name])


def test_hf_name_mapping_examples():
    assert huggingface.hf_to_gqa_name("encoder.block.3.layer.0.SelfAttention.k.weight", False) == (
        "encoder/layers_3/attention/key/kernel",
        True,
    )
    assert huggingface.hf_to_gqa_name(
        "decoder.block.1.layer.1.EncDecAttention.o.weight", False
    ) == ("decoder/layers_1/encoder_decoder_attention/out/kernel", True)
    assert huggingface.hf_to_gqa_name("decoder.block.0.layer.2.layer_norm.weight", False) == (
        "decoder/layers_0/pre_mlp_layer_norm/scale",
        False,
    )
    assert huggingface.hf_to_gqa_name("lm_head.weight", True) == (None, False)


def test_mesh_tf_name_mapping_matches_t5x_importer():
    m = mesh_tf.mesh_tf_to_gqa_name
    assert (
        m("encoder/block_000/layer_000/SelfAttention/q")
        == "encoder/layers_0/attention/query/kernel"
    )
    assert m("decoder/block_011/layer_001/EncDecAttention/v") == (
        "decoder/layers_11/encoder_decoder_attention/value/kernel"
    )
    assert m("decoder/block_000/layer_000/SelfAttention/relative_attention_bias") == (
        "decoder/relpos_bias/rel_embedding"
    )
    assert m("encoder/block_002/layer_001/DenseReluDense/wi_1/kernel") == (
        "encoder/layers_2/mlp/wi_1/kernel"
    )
    assert (
        m("decoder/block_000/layer_002/layer_norm/scale")
        == "decoder/layers_0/pre_mlp_layer_norm/scale"
    )
    assert m("encoder/final_layer_norm/scale") == "encoder/encoder_norm/scale"
    assert m("decoder/logits/kernel") == "decoder/logits_dense/kernel"
    assert m("encoder/block_000/layer_000/SelfAttention/q_slot_vc") is None
    assert m("global_step") is None
    with pytest.raises(CheckpointError, match="unexpected Mesh-TF"):
        m("encoder/block_000/foo")


def test_unknown_directory_is_a_clear_error(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(CheckpointError, match="not a recognised checkpoint"):
        detect_format(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        open_checkpoint(tmp_path / "nope")


def test_orbax_params_restore_and_atomic_refusal(tmp_path):
    flat = tiny_params(seed=4)
    lazy = {n: orbax_params.LazyArray(a.shape, np.float32, lambda a=a: a) for n, a in flat.items()}
    orbax_params.save_params(tmp_path / "p", orbax_params.unflatten(lazy))
    back = orbax_params.flatten(orbax_params.restore_params(tmp_path / "p"))
    assert set(back) == set(flat)
    for n in flat:
        assert isinstance(back[n], np.ndarray) and back[n].dtype == np.float32
        np.testing.assert_array_equal(back[n], flat[n])
    with pytest.raises(FileExistsError, match="overwrite"):
        orbax_params.save_params(tmp_path / "p", {"x": np.zeros(2)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]  # no temp dirs left

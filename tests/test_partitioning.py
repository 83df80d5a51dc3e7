"""Logical-axis rules and parameter shardings (the 8-device mesh test is in test_trainer_mesh)."""

import types

import jax
import pytest
from jax.sharding import PartitionSpec as P

from gqa_t5 import partitioning
from gqa_t5.gin_utils import model_from_gin


def _fake_mesh(data, model):
    return types.SimpleNamespace(shape={"data": data, "model": model})


@pytest.mark.parametrize(
    "kv_heads,model_size,want",
    [(8, 4, "model"), (8, 8, "model"), (8, 16, None), (1, 2, None), (4, 1, "model")],
)
def test_kv_heads_on_model_axis_only_where_they_divide(kv_heads, model_size, want):
    rules = dict(partitioning.standard_logical_axis_rules(kv_heads, model_size))
    assert rules["joined_kv_heads"] == want
    assert rules["batch"] == "data" and rules["heads"] == "model" and rules["mlp"] == "model"
    assert rules["vocab"] == "model" and rules["embed"] is None


def test_spec_replicates_dimensions_the_axis_does_not_divide():
    rules = partitioning.standard_logical_axis_rules(2, 2)
    mesh = _fake_mesh(4, 2)
    assert partitioning._spec_for(("embed", "mlp"), (64, 128), rules, mesh) == P(None, "model")
    assert partitioning._spec_for(("vocab", "embed"), (33, 64), rules, mesh) == P(None, None)
    assert partitioning._spec_for(("embed", "joined_kv_heads"), (64, 32), rules, mesh) == P(
        None, "model"
    )


def test_tiny_model_param_specs():
    model = model_from_gin(["models/t5_1_1/tiny.gin"], ["VOCAB_SIZE = 64", "NUM_KV_HEADS = 2"])
    variables = jax.eval_shape(lambda r: model.init(r, 8, 8), jax.random.PRNGKey(0))
    p = partitioning.Partitioner(num_partitions=1, num_kv_heads=2)
    specs = p.param_specs(variables["params_axes"], variables["params"])
    attn = specs["decoder"]["layers_0"]["self_attention"]
    assert attn["query"]["kernel"] == P(None, "model")
    assert attn["key"]["kernel"] == P(None, "model")
    assert specs["token_embedder"]["embedding"] == P("model", None)
    assert jax.tree_util.tree_structure(specs) == jax.tree_util.tree_structure(variables["params"])


def test_bad_num_partitions():
    with pytest.raises(ValueError, match="must divide the device count"):
        partitioning.create_mesh(3, devices=jax.devices() * 2)

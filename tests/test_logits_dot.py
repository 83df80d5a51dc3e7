"""T5Config.logits_dot='bfloat16': the output layer's products in bfloat16 (float32 sums).

References are float64 NumPy products of the bfloat16-rounded operands (and, backward, of
the bfloat16-rounded gradient): what the option promises, computed independently.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_network import random_batch, tiny_config

from gqa_t5 import layers
from gqa_t5.models import EncoderDecoderModel


def _bf16_as_f64(x):
    return np.asarray(jnp.asarray(x, jnp.bfloat16).astype(jnp.float32), np.float64)


def _inputs(seed=0, B=3, T=5, D=24, V=40):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(D, V)) / D**0.5, jnp.float32)
    g = jnp.asarray(rng.normal(size=(B, T, V)), jnp.float32)
    return x, k, g


def test_forward_is_the_product_of_bfloat16_operands_summed_wide():
    x, k, _ = _inputs()
    got = layers.narrow_dot(x, k, jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32))
    assert got.dtype == jnp.float32
    want = _bf16_as_f64(x) @ _bf16_as_f64(k)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # ... and not the float32 product: the operands really were rounded.
    exact = np.asarray(x, np.float64) @ np.asarray(k, np.float64)
    assert np.max(np.abs(np.asarray(got) - exact)) > 1e-3


def test_gradients_use_the_bfloat16_gradient_and_operands():
    x, k, g = _inputs(1)

    def f(x, k):
        y = layers.narrow_dot(x, k, jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32))
        return jnp.sum(y * g)

    dx, dk = jax.grad(f, argnums=(0, 1))(x, k)
    assert dx.dtype == x.dtype and dk.dtype == k.dtype
    xb, kb, gb = _bf16_as_f64(x), _bf16_as_f64(k), _bf16_as_f64(g)
    np.testing.assert_allclose(dx, gb @ kb.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dk, np.einsum("btd,btv->dv", xb, gb), rtol=1e-5, atol=1e-5)
    # Close to the float32 gradients, as a bfloat16 rounding of them.
    dk32 = np.einsum("btd,btv->dv", np.asarray(x, np.float64), np.asarray(g, np.float64))
    assert np.linalg.norm(dk - dk32) / np.linalg.norm(dk32) < 1e-2


def _dots(jaxpr):
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            yield eqn
        for sub in jax.core.jaxprs_in_params(eqn.params):
            yield from _dots(sub)


def test_every_product_forward_and_backward_takes_bfloat16_operands():
    """The point of the option: no float32 product left for the matrix units."""
    x, k, g = _inputs(2)

    def f(x, k):
        y = layers.narrow_dot(x, k, jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32))
        return jnp.sum(y * g)

    dots = list(_dots(jax.make_jaxpr(jax.value_and_grad(f, argnums=(0, 1)))(x, k).jaxpr))
    assert len(dots) == 3  # forward, d/dx, d/dkernel
    for eqn in dots:
        assert [v.aval.dtype for v in eqn.invars] == [jnp.bfloat16, jnp.bfloat16], eqn
        assert eqn.outvars[0].aval.dtype == jnp.float32


def test_model_option_keeps_parameters_and_stays_close_to_float32():
    batch = random_batch()
    base = EncoderDecoderModel(tiny_config())
    narrow = EncoderDecoderModel(tiny_config(logits_dot="bfloat16"))
    params = base.init(jax.random.PRNGKey(0))["params"]
    p2 = narrow.init(jax.random.PRNGKey(0))["params"]
    # Same parameter tree: checkpoints load either way.
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(p2)
    want = np.asarray(base.logits(params, batch), np.float64)
    got = np.asarray(narrow.logits(params, batch), np.float64)
    err = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert 1e-6 < err < 2e-2, err  # rounded (not the float32 path), but only by bfloat16
    (l32, _), g32 = jax.value_and_grad(base.loss_fn, has_aux=True)(params, batch)
    (l16, _), g16 = jax.value_and_grad(narrow.loss_fn, has_aux=True)(params, batch)
    assert abs(float(l16) - float(l32)) < 1e-2 * abs(float(l32))
    a = g32["decoder"]["logits_dense"]["kernel"]
    b = g16["decoder"]["logits_dense"]["kernel"]
    assert float(jnp.linalg.norm(a - b) / jnp.linalg.norm(a)) < 2e-2


def test_bad_logits_dot_settings_fail_with_the_fix():
    with pytest.raises(ValueError, match="use float32 or bfloat16"):
        tiny_config(logits_dot="float16")
    with pytest.raises(ValueError, match="logits_via_embedding"):
        tiny_config(logits_dot="bfloat16", logits_via_embedding=True)

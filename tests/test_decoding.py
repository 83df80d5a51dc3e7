"""Cached decoding against the teacher-forced forward pass, and the decoding loops."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_network import random_batch, tiny_config

from gqa_t5 import decoding
from gqa_t5.models import EncoderDecoderModel, fuse_decode_projections, kv_cache_bytes_per_token


def _setup(num_kv_heads, seed=0, **overrides):
    model = EncoderDecoderModel(tiny_config(num_kv_heads=num_kv_heads, **overrides))
    params = model.init(jax.random.PRNGKey(seed))["params"]
    return model, params


def _prefilled(model, params, enc_tokens, L):
    cache = model.init_cache(params, enc_tokens.shape[0], enc_tokens.shape[1], L)
    return model.prefill(params, cache, model.encode(params, enc_tokens))


@pytest.mark.parametrize("num_kv_heads", [1, 2, 4])
def test_cached_steps_reproduce_teacher_forced_logits(num_kv_heads):
    model, params = _setup(num_kv_heads)
    batch = random_batch(5)
    B, T = batch["decoder_input_tokens"].shape
    full = np.asarray(model.logits(params, batch))
    cache = _prefilled(model, params, batch["encoder_input_tokens"], T)
    step = jax.jit(model.tokens_to_logits_fn(params, batch["encoder_input_tokens"], T))
    steps = []
    for t in range(T):
        logits, cache = step(batch["decoder_input_tokens"][:, t : t + 1], cache)
        steps.append(np.asarray(logits))
    got = np.stack(steps, axis=1)
    keep = np.asarray(batch["decoder_target_tokens"]) > 0
    np.testing.assert_allclose(got[keep], full[keep], rtol=1e-5, atol=1e-5)


def test_cache_holds_kv_heads_only_and_scales_with_groups():
    sizes = {}
    for K in (1, 2, 4):
        model, params = _setup(K)
        cache = model.init_cache(params, 3, 9, 7)
        layer = cache["decoder"]["layers_0"]
        assert layer["self_attention"]["cached_key"].shape == (3, K, 7, 6)
        assert layer["encoder_decoder_attention"]["cached_value"].shape == (3, K, 9, 6)
        sizes[K] = sum(x.nbytes for x in jax.tree_util.tree_leaves(cache) if x.ndim)
        per_token = kv_cache_bytes_per_token(model.config, bytes_per_value=4)
        self_bytes = per_token["decoder_self_attention_per_target_token"] * 3 * 7
        cross_bytes = per_token["cross_attention_per_input_token"] * 3 * 9
        assert self_bytes + cross_bytes == sizes[K]
    assert sizes[1] * 4 == sizes[4] and sizes[2] * 2 == sizes[4]


def _count_dots(fn, *args):
    jaxpr = jax.make_jaxpr(fn)(*args)

    def count(jp):
        n = 0
        for eqn in jp.eqns:
            n += eqn.primitive.name == "dot_general"
            for sub in jax.core.jaxprs_in_params(eqn.params):
                n += count(sub)
        return n

    return count(jaxpr.jaxpr)


def test_cross_attention_kv_is_projected_once_per_input():
    model, params = _setup(2)
    batch = random_batch(6)
    enc = batch["encoder_input_tokens"]
    cache = _prefilled(model, params, enc, 7)
    # Prefill wrote non-zero cross K/V; a decode step must leave them untouched.
    cross = cache["decoder"]["layers_1"]["encoder_decoder_attention"]["cached_key"]
    assert float(jnp.abs(cross).max()) > 0
    step = model.tokens_to_logits_fn(params, enc, 7)
    _, after = step(jnp.zeros((3, 1), jnp.int32), cache)
    np.testing.assert_array_equal(
        after["decoder"]["layers_1"]["encoder_decoder_attention"]["cached_key"], cross
    )
    # Per layer: self q/k/v/out, 2 attention einsums, cross q/out, 2 einsums, 3 MLP = 13;
    # plus the output projection. Re-projecting cross K/V would add 2 per layer. Fused
    # (the default), q/k/v are one matmul and the two MLP inputs one: 10.
    L = model.config.num_decoder_layers
    unfused = model.tokens_to_logits_fn(params, enc, 7, fuse=False)
    assert _count_dots(unfused, jnp.zeros((3, 1), jnp.int32), cache) == 13 * L + 1
    assert _count_dots(step, jnp.zeros((3, 1), jnp.int32), cache) == 10 * L + 1


@pytest.mark.parametrize("num_kv_heads", [1, 2, 4])
def test_fused_decode_projections_give_the_unfused_step(num_kv_heads):
    model, params = _setup(num_kv_heads)
    enc = random_batch(6)["encoder_input_tokens"]
    cache = _prefilled(model, params, enc, 7)
    ids = jnp.asarray([[3], [5], [0]], jnp.int32)
    layer = fuse_decode_projections(params)["decoder"]["layers_0"]
    cfg = model.config
    width = (cfg.num_heads + 2 * num_kv_heads) * cfg.head_dim
    assert layer["self_attention"]["fused_qkv_kernel"].shape == (cfg.emb_dim, width)
    assert "fused_wi_kernel" in layer["mlp"]
    for _ in range(3):  # several steps: the fused path writes the same cache
        want, cache_a = model.tokens_to_logits_fn(params, enc, 7, fuse=False)(ids, cache)
        got, cache_b = model.tokens_to_logits_fn(params, enc, 7, fuse=True)(ids, cache)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        jax.tree_util.tree_map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), cache_a, cache_b
        )
        cache = cache_a


def _greedy_by_recomputation(model, params, enc, L, eos_id):
    """Greedy decoding with no cache: re-run the full forward pass for every token."""
    B = enc.shape[0]
    seq = np.zeros((B, L), np.int32)
    done = np.zeros(B, bool)
    for t in range(L):
        dec_in = np.concatenate([np.zeros((B, 1), np.int32), seq[:, :-1]], axis=1)
        targets = np.ones((B, L), np.int32)  # all positions valid for the causal mask
        logits = model.logits(
            params,
            {
                "encoder_input_tokens": enc,
                "decoder_input_tokens": jnp.asarray(dec_in),
                "decoder_target_tokens": jnp.asarray(targets),
            },
        )
        nxt = np.where(done, 0, np.argmax(np.asarray(logits)[:, t], -1))
        seq[:, t] = nxt
        done |= nxt == eos_id
    return seq


def _pick_eos(model, params, batch, L):
    """An EOS id that greedy decoding actually emits mid-sequence for input 0."""
    seqs, _ = model.predict_batch(params, batch, max_decode_len=L)
    return int(np.asarray(seqs)[0, 2])


@pytest.mark.parametrize("num_kv_heads", [1, 4])
def test_greedy_matches_recomputation_and_stops_at_eos(num_kv_heads):
    model, params = _setup(num_kv_heads, seed=7)
    batch = random_batch(7)
    eos = _pick_eos(model, params, batch, 7)
    model = EncoderDecoderModel(model.config, eos_id=eos)
    got, _ = jax.jit(lambda p, b: model.predict_batch(p, b, max_decode_len=7))(params, batch)
    want = _greedy_by_recomputation(model, params, batch["encoder_input_tokens"], 7, eos)
    np.testing.assert_array_equal(np.asarray(got), want)
    first_eos = list(want[0]).index(eos)
    assert (want[0, first_eos + 1 :] == 0).all()


def test_beam_search_with_one_beam_equals_greedy():
    model, params = _setup(2, seed=8)
    batch = random_batch(8)
    eos = _pick_eos(model, params, batch, 7)
    model = EncoderDecoderModel(model.config, eos_id=eos)
    greedy, greedy_lp = model.predict_batch(params, batch, max_decode_len=7)
    enc = batch["encoder_input_tokens"]
    # Call beam search itself: predict_batch sends one beam to the greedy loop.
    beams, scores = jax.jit(
        lambda p: decoding.beam_search(
            model.tokens_to_logits_fn(p, enc, 7),
            _prefilled(model, p, enc, 7),
            enc.shape[0],
            1,
            7,
            eos_id=eos,
            alpha=0.0,
        )
    )(params)
    assert (np.asarray(greedy) == eos).any()  # the EOS path is exercised
    np.testing.assert_array_equal(np.asarray(beams)[:, 0], np.asarray(greedy))
    np.testing.assert_allclose(np.asarray(scores)[:, 0], np.asarray(greedy_lp), rtol=1e-5)


def test_beam_search_with_enough_beams_finds_the_exhaustive_best():
    V, L = 5, 3
    model, params = _setup(2, seed=9, vocab_size=V)
    model = EncoderDecoderModel(model.config, eos_id=-1)  # no EOS: all sequences length L
    enc = jnp.array([[2, 3, 4, 1]])
    best_lp, best = -np.inf, None
    for seq in itertools.product(range(V), repeat=L):
        tgt = jnp.array([seq])
        lp = (
            float(
                model.score_batch(
                    params,
                    {
                        "encoder_input_tokens": enc,
                        "decoder_target_tokens": tgt,
                        "decoder_input_tokens": jnp.pad(tgt, ((0, 0), (1, 0)))[:, :-1],
                    },
                )[0]
            )
            if all(seq)
            else -np.inf
        )  # score_batch treats token 0 as padding
        if lp > best_lp:
            best_lp, best = lp, seq
    seqs, scores = decoding.beam_search(
        model.tokens_to_logits_fn(params, decoding.flat_batch_beam_expand(enc, V**2), L),
        _prefilled(model, params, decoding.flat_batch_beam_expand(enc, V**2), L),
        1,
        V**2,
        L,
        eos_id=-1,
        alpha=0.0,
    )
    top = [s for s in np.asarray(seqs)[0] if all(s)][0]
    assert tuple(top) == best
    assert np.asarray(scores)[0, 0] >= best_lp - 1e-4


def test_sampling_top1_is_greedy_and_seeded():
    model, params = _setup(2, seed=10)
    batch = random_batch(10)
    greedy, _ = model.predict_batch(params, batch, max_decode_len=7)
    top1, _ = model.predict_batch(
        params, batch, max_decode_len=7, temperature=1.0, topk=1, rng=jax.random.PRNGKey(0)
    )
    np.testing.assert_array_equal(np.asarray(top1), np.asarray(greedy))
    s1, _ = model.predict_batch(
        params, batch, max_decode_len=7, temperature=2.0, rng=jax.random.PRNGKey(1)
    )
    s2, _ = model.predict_batch(
        params, batch, max_decode_len=7, temperature=2.0, rng=jax.random.PRNGKey(1)
    )
    s3, _ = model.predict_batch(
        params, batch, max_decode_len=7, temperature=2.0, rng=jax.random.PRNGKey(2)
    )
    np.testing.assert_array_equal(np.asarray(s1), np.asarray(s2))
    assert not np.array_equal(np.asarray(s1), np.asarray(s3))


def _count_steps(fixed_length):
    steps = []

    def always_eos(ids, cache):
        jax.debug.callback(lambda: steps.append(1), ordered=True)
        return jnp.zeros((ids.shape[0], 4)).at[:, 1].set(1.0), cache

    seqs, _ = decoding.temperature_sample(
        always_eos, jnp.int32(0), 2, 6, eos_id=1, fixed_length=fixed_length
    )
    jax.effects_barrier()
    return np.asarray(seqs), len(steps)


def test_loop_stops_at_eos_unless_fixed_length():
    seqs, n = _count_steps(False)
    assert n == 1 and seqs[:, 0].tolist() == [1, 1] and (seqs[:, 1:] == 0).all()
    seqs, n = _count_steps(True)
    assert n == 6 and seqs[:, 0].tolist() == [1, 1] and (seqs[:, 1:] == 0).all()


def test_invalid_decoding_arguments():
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        decoding.temperature_sample(lambda i, c: (None, c), None, 1, 2, temperature=-1.0)
    with pytest.raises(ValueError, match="needs an rng"):
        decoding.temperature_sample(lambda i, c: (None, c), None, 1, 2, temperature=1.0)
    with pytest.raises(ValueError, match="num_beams must be >= 1"):
        decoding.beam_search(lambda i, c: (None, c), None, 1, 0, 2)


def test_fused_kernels_are_ignored_outside_decode_steps():
    # Fused kernels are decode-only: the loss and its gradients with them present must be
    # the plain ones (the MLP once read them in every mode, cutting wi_0's gradient to 0).
    model, params = _setup(2)
    batch = random_batch(7)
    grad = jax.grad(lambda p: model.loss_fn(p, batch)[0])
    want = grad(params)
    got = grad(fuse_decode_projections(params))
    for name in ("wi_0", "wi_1"):
        g = got["decoder"]["layers_0"]["mlp"][name]["kernel"]
        assert float(jnp.abs(g).max()) > 0
        np.testing.assert_allclose(g, want["decoder"]["layers_0"]["mlp"][name]["kernel"])
    q = got["decoder"]["layers_0"]["self_attention"]["query"]["kernel"]
    np.testing.assert_allclose(q, want["decoder"]["layers_0"]["self_attention"]["query"]["kernel"])


def test_unfinished_beams_score_raw_log_probability_as_t5x():
    """No beam reaches EOS: scores are the beams' log-probabilities, not divided by the
    length penalty (t5x.decoding.beam_search returns live_logprobs), best first."""
    V, L, W = 3, 2, 9  # 9 beams hold every length-2 sequence: the search is exhaustive
    rng = np.random.default_rng(0)
    table_VV = rng.standard_normal((V, V))  # next-token logits given the current token
    logp_VV = table_VV - np.log(np.exp(table_VV).sum(axis=1, keepdims=True))  # float64

    def tokens_to_logits(tokens, cache):
        return jnp.asarray(table_VV, jnp.float32)[tokens[:, 0]], cache

    seqs, scores = decoding.beam_search(
        tokens_to_logits, jnp.zeros((W, 1)), 1, W, L, eos_id=-1, start_id=0, alpha=0.6
    )
    expected = sorted(
        ((logp_VV[0, a] + logp_VV[a, b], (a, b)) for a in range(V) for b in range(V)),
        reverse=True,
    )
    np.testing.assert_allclose(np.asarray(scores)[0], [e[0] for e in expected], rtol=1e-5)
    assert [tuple(s) for s in np.asarray(seqs)[0]] == [e[1] for e in expected]

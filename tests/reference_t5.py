"""An independent float64 NumPy T5 forward pass, written from the T5 paper's equations.

Multi-head only: a grouped model is checked by first repeating its K/V heads. Shares no
code with gqa_t5, so a bug there cannot hide here.
"""

from __future__ import annotations

import math

import numpy as np


def bucket(rel: int, bidirectional: bool, num_buckets: int = 32, max_distance: int = 128) -> int:
    """T5's relative position bucket for key position - query position, one scalar."""
    n = -rel
    offset = 0
    if bidirectional:
        num_buckets //= 2
        if n < 0:
            offset = num_buckets
        n = abs(n)
    else:
        n = max(n, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return offset + n
    large = max_exact + int(
        math.log(n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
        + 1e-9
    )
    return offset + min(large, num_buckets - 1)


def rms_norm(x, scale, eps=1e-6):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * scale


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def repeat_kv(kernel: np.ndarray, num_heads: int, head_dim: int) -> np.ndarray:
    """[D, K*H] -> [D, N*H]: copy each key/value head to the query heads of its group."""
    D = kernel.shape[0]
    K = kernel.shape[1] // head_dim
    heads = kernel.reshape(D, K, head_dim)
    return np.repeat(heads, num_heads // K, axis=1).reshape(D, num_heads * head_dim)


def attention(p, xq, xkv, num_heads, head_dim, bias_NTS, keep_BTS):
    """Multi-head attention, no 1/sqrt(d) scaling; masked logits set to -inf."""
    B, T, _ = xq.shape
    S = xkv.shape[1]
    k_kernel = repeat_kv(p["key"]["kernel"], num_heads, head_dim)
    v_kernel = repeat_kv(p["value"]["kernel"], num_heads, head_dim)
    q = (xq @ p["query"]["kernel"]).reshape(B, T, num_heads, head_dim)
    k = (xkv @ k_kernel).reshape(B, S, num_heads, head_dim)
    v = (xkv @ v_kernel).reshape(B, S, num_heads, head_dim)
    logits = np.einsum("btnh,bsnh->bnts", q, k)
    if bias_NTS is not None:
        logits = logits + bias_NTS[None]
    logits = np.where(keep_BTS[:, None], logits, -np.inf)
    # Rows with nothing to attend to (padded queries) output zeros; callers ignore them.
    all_masked = ~keep_BTS.any(-1)[:, None, :, None]
    w = softmax(np.where(all_masked, 0.0, logits))
    w = np.where(all_masked, 0.0, w)
    out = np.einsum("bnts,bsnh->btnh", w, v).reshape(B, T, num_heads * head_dim)
    return out @ p["out"]["kernel"]


def mlp(p, x, activations):
    acts = {"gelu": gelu_tanh, "linear": lambda z: z, "relu": lambda z: np.maximum(z, 0)}
    if len(activations) == 1:
        h = acts[activations[0]](x @ p["wi"]["kernel"])
    else:
        h = np.prod([acts[a](x @ p[f"wi_{i}"]["kernel"]) for i, a in enumerate(activations)], 0)
    return h @ p["wo"]["kernel"]


def relpos_bias(table_NB, q_len, k_len, bidirectional):
    b = np.array([[bucket(k - q, bidirectional) for k in range(k_len)] for q in range(q_len)])
    return table_NB[:, b]


def t5_logits(params, cfg, enc_tokens, dec_inputs, dec_targets):
    """Teacher-forced logits [B, T, V] in float64, t5x's masking conventions."""
    p = _to64(params)
    N, H = cfg.num_heads, cfg.head_dim
    emb = p["token_embedder"]["embedding"]
    enc_valid = enc_tokens > 0
    S = enc_tokens.shape[1]
    x = emb[enc_tokens]
    e_bias = relpos_bias(p["encoder"]["relpos_bias"]["rel_embedding"], S, S, True)
    e_keep = enc_valid[:, :, None] & enc_valid[:, None, :]
    for i in range(cfg.num_encoder_layers):
        lp = p["encoder"][f"layers_{i}"]
        h = rms_norm(x, lp["pre_attention_layer_norm"]["scale"])
        x = x + attention(lp["attention"], h, h, N, H, e_bias, e_keep)
        h = rms_norm(x, lp["pre_mlp_layer_norm"]["scale"])
        x = x + mlp(lp["mlp"], h, cfg.mlp_activations)
    encoded = rms_norm(x, p["encoder"]["encoder_norm"]["scale"])

    T = dec_inputs.shape[1]
    dec_valid = dec_targets > 0
    causal = np.tril(np.ones((T, T), bool))
    d_keep = causal[None] & dec_valid[:, :, None] & dec_valid[:, None, :]
    x_keep = dec_valid[:, :, None] & enc_valid[:, None, :]
    d_bias = relpos_bias(p["decoder"]["relpos_bias"]["rel_embedding"], T, T, False)
    y = emb[dec_inputs]
    for i in range(cfg.num_decoder_layers):
        lp = p["decoder"][f"layers_{i}"]
        h = rms_norm(y, lp["pre_self_attention_layer_norm"]["scale"])
        y = y + attention(lp["self_attention"], h, h, N, H, d_bias, d_keep)
        h = rms_norm(y, lp["pre_cross_attention_layer_norm"]["scale"])
        y = y + attention(lp["encoder_decoder_attention"], h, encoded, N, H, None, x_keep)
        h = rms_norm(y, lp["pre_mlp_layer_norm"]["scale"])
        y = y + mlp(lp["mlp"], h, cfg.mlp_activations)
    y = rms_norm(y, p["decoder"]["decoder_norm"]["scale"])
    if cfg.logits_via_embedding:
        return (y @ emb.T) / math.sqrt(y.shape[-1])
    return y @ p["decoder"]["logits_dense"]["kernel"]


def _to64(tree):
    if isinstance(tree, dict) or hasattr(tree, "items"):
        return {k: _to64(v) for k, v in tree.items()}
    return np.asarray(tree, np.float64)

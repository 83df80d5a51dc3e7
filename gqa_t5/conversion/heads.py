"""One attention block's kernels split by head, and the output-preserving head transforms.

An `AttnHeads` holds the four kernels of one attention block in float64 with the heads
split out: K key/value heads, each serving Q = N/K query heads (Q = 1 for MHA).
Rotating key head k and its queries by R_k (q.k invariant), rotating value head k by S_k
and its queries' rows of the output kernel by S_k^T, or permuting whole kv-head blocks
(Q, K, V, O together) leaves the block's output unchanged.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class AttnHeads:
    """q [D, K, Q, H], k [D, K, H], v [D, K, H], o [K, Q, H, D] (float64)."""

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    o: np.ndarray

    @property
    def num_kv_heads(self) -> int:
        return self.k.shape[1]

    @classmethod
    def from_kernels(
        cls, query: np.ndarray, key: np.ndarray, value: np.ndarray, out: np.ndarray, head_dim: int
    ) -> AttnHeads:
        """From the stored kernels: query [D, N*H], key/value [D, K*H], out [N*H, D]."""
        D, H = query.shape[0], head_dim
        N, K = query.shape[1] // H, key.shape[1] // H
        f = lambda a: np.asarray(a, np.float64)
        return cls(
            q=f(query).reshape(D, K, N // K, H),
            k=f(key).reshape(D, K, H),
            v=f(value).reshape(D, K, H),
            o=f(out).reshape(K, N // K, H, D),
        )

    def kernels(self) -> dict[str, np.ndarray]:
        """query, key, value, out kernels in the stored layout, float32."""
        D, K, Q, H = self.q.shape
        f = lambda a, s: np.ascontiguousarray(a.reshape(s), dtype=np.float32)
        return {
            "query": f(self.q, (D, K * Q * H)),
            "key": f(self.k, (D, -1)),
            "value": f(self.v, (D, -1)),
            "out": f(self.o, (K * Q * H, D)),
        }

    def value_weights(self) -> np.ndarray:
        """M_k = sum over k's query heads of W_o W_o^T, [K, H, H]: value error weights."""
        return np.einsum("kqhd,kqjd->khj", self.o, self.o)

    def key_weights(self, sigma_DD: np.ndarray | None = None) -> np.ndarray:
        """C_k = sum over k's query heads of W_q^T Sigma W_q, [K, H, H] (Sigma = I if None)."""
        if sigma_DD is None:
            return np.einsum("dkqh,dkqj->khj", self.q, self.q)
        return np.einsum("dkqh,de,ekqj->khj", self.q, sigma_DD, self.q)


def rotate(heads: AttnHeads, R_KHH: np.ndarray, S_KHH: np.ndarray) -> AttnHeads:
    """Key head k (and its queries) by R_k, value head k by S_k (its out rows by S_k^T)."""
    return AttnHeads(
        q=np.einsum("dkqh,khj->dkqj", heads.q, R_KHH),
        k=np.einsum("dkh,khj->dkj", heads.k, R_KHH),
        v=np.einsum("dkh,khj->dkj", heads.v, S_KHH),
        o=np.einsum("khj,kqhd->kqjd", S_KHH, heads.o),
    )


def permute(heads: AttnHeads, perm: np.ndarray) -> AttnHeads:
    """New kv head j is old kv head perm[j], with its query heads and output rows."""
    perm = np.asarray(perm)
    return AttnHeads(q=heads.q[:, perm], k=heads.k[:, perm], v=heads.v[:, perm], o=heads.o[perm])


def permute_bias_rows(rel_NB: np.ndarray, perm: np.ndarray, num_kv_heads: int) -> np.ndarray:
    """The relative position table [N, buckets] with query-head rows moved as `permute`."""
    N = rel_NB.shape[0]
    Q = N // num_kv_heads
    return rel_NB.reshape(num_kv_heads, Q, -1)[np.asarray(perm)].reshape(N, -1)

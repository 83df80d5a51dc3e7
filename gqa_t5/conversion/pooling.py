"""Pooling P key/value heads into one: least-squares (weighted) and Procrustes alignment.

Axis letters as in `layers.py`; P is the number of heads pooled into one (a group).
All functions take and return float64 NumPy arrays; callers round to float32 once.

Objective of the weighted pooling (both keys and values):

    E(W) = sum_i tr((X_i - W) M_i (X_i - W)^T),   X_i [D, H] head i's kernel, M_i [H, H] PSD

whose minimiser is W = (sum_i X_i M_i)(sum_i M_i)^-1. For values M_i = W_o^i W_o^i^T (the
squared output error of head i, inputs white); for keys M_i = C_i = W_q^i^T Sigma W_q^i
(the squared logit error, queries' inputs with covariance Sigma). A common input
covariance on the key/value side cancels from the minimiser, so values need no data.
"""

from __future__ import annotations

import numpy as np


def pooling_error(X_PDH: np.ndarray, W_DH: np.ndarray, M_PHH: np.ndarray | None) -> float:
    """E(W) above (M_i = identity when M is None: plain squared distance)."""
    R_PDH = X_PDH - W_DH[None]
    if M_PHH is None:
        return float(np.sum(R_PDH**2))
    return float(np.einsum("pdh,phk,pdk->", R_PDH, M_PHH, R_PDH))


def weighted_pool(X_PDH: np.ndarray, M_PHH: np.ndarray) -> np.ndarray:
    """argmin_W sum_i tr((X_i - W) M_i (X_i - W)^T) = (sum X_i M_i)(sum M_i)^-1, [D, H]."""
    X_PDH = np.asarray(X_PDH, np.float64)
    M_PHH = np.asarray(M_PHH, np.float64)
    S_HH = M_PHH.sum(0)
    B_DH = np.einsum("pdh,phk->dk", X_PDH, M_PHH)
    # W S = B with S symmetric  <=>  S W^T = B^T; lstsq gives the min-norm W if S is singular
    # (an output head of rank < H), where the error does not depend on the null directions.
    return np.linalg.lstsq(S_HH, B_DH.T, rcond=None)[0].T


def procrustes(X_DH: np.ndarray, T_DH: np.ndarray) -> np.ndarray:
    """Orthogonal R [H, H] minimising ||X R - T||_F (R = U V^T from X^T T = U S V^T)."""
    U, _, Vt = np.linalg.svd(X_DH.T @ T_DH)
    return U @ Vt


def generalised_procrustes(X_PDH: np.ndarray, iters: int = 50, tol: float = 1e-10) -> np.ndarray:
    """Rotations R_i [P, H, H] that bring the heads X_i into a common frame.

    Alternates R_i = procrustes(X_i, T) and T = mean_i X_i R_i from T = X_0; each step
    cannot increase sum_i ||X_i R_i - T||^2, so the pooled mean moves towards the heads.
    """
    X_PDH = np.asarray(X_PDH, np.float64)
    P, _, H = X_PDH.shape
    R_PHH = np.broadcast_to(np.eye(H), (P, H, H)).copy()
    T_DH = X_PDH[0]
    last = np.inf
    for _ in range(iters):
        R_PHH = np.stack([procrustes(X_PDH[i], T_DH) for i in range(P)])
        Y_PDH = np.einsum("pdh,phk->pdk", X_PDH, R_PHH)
        T_DH = Y_PDH.mean(0)
        err = float(np.sum((Y_PDH - T_DH) ** 2))
        if last - err <= tol * max(last, 1e-30):
            break
        last = err
    return R_PHH

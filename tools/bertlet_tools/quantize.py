"""int8 weight quantization and packing, byte-identical to include/bertlet/kernels/gemm_s8.hpp (docs/INT8.md).

* ``quantize_per_row(W) -> (q, scales)``: symmetric per output row, ``scale = max|W[n,:]| / 127`` (float32),
  ``q = round_half_even(W / scale)`` clamped to -127..127 (never -128; all-zero rows get scale 0, q 0).
* ``pack_s8(q) -> bytes``: the "S8P16K4" layout: N padded to a multiple of 16, K to a multiple of 4 (zeros);
  byte offset of q[n, k] = (n // 16) * 16 * Kp + (k // 4) * 64 + (n % 16) * 4 + k % 4.
* ``row_sums(q)``: int32 sums over k (the VNNI kernels' zero-point correction), ``padded_scales`` /
  ``padded_row_sums``: the arrays the C++ ``packed_s8`` view expects (n_padded entries, zeros in the padding).
* ``quantize_rows_dynamic(X)``: the run-time activation quantization (per row, symmetric, multiply by 127/max),
  ``linear_int8(X, q, scales, bias, act_scale)``: the kernels' math in numpy (used by the accuracy simulation).
* Smoothing (SmoothQuant-style, docs/INT8.md): ``smoothing_act_scale(x_absmax, w_absmax, alpha)`` -> the per-input-
  channel ``act_scale`` (= 1 / s, ``s_k = max|X_k|^alpha / max|W_k|^(1 - alpha)``); ``smooth_weight(W, act_scale)``
  -> ``W' = W / act_scale`` (float32, per column k), which is then quantized per row as usual. At run time
  ``xs = X * act_scale`` (float32 multiply) is quantized per token, so ``X W^T = xs W'^T``.

numpy only.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

PANEL = 16
KGROUP = 4


def pad_n(n: int) -> int:
    return (n + PANEL - 1) // PANEL * PANEL


def pad_k(k: int) -> int:
    return (k + KGROUP - 1) // KGROUP * KGROUP


def quantize_per_row(W: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """W [N, K] -> (q int8 [N, K], scales float32 [N]); same float32 operations as bertlet::quantize_weights_s8."""
    W = np.asarray(W, dtype=np.float32)
    if W.ndim != 2:
        raise ValueError(f"expected a 2-D weight, got shape {W.shape}")
    amax = np.abs(W).max(axis=1) if W.shape[1] else np.zeros(W.shape[0], np.float32)
    scales = (amax / np.float32(127.0)).astype(np.float32)
    safe = np.where(scales > 0, scales, np.float32(1.0)).astype(np.float32)
    q = np.rint(W / safe[:, None])  # float32 division, round half to even
    q = np.where(scales[:, None] > 0, q, np.float32(0.0))
    q = np.clip(q, -127, 127).astype(np.int8)
    return q, scales


def dequantize(q: np.ndarray, scales: np.ndarray) -> np.ndarray:
    return q.astype(np.float32) * np.asarray(scales, np.float32)[:, None]


def row_sums(q: np.ndarray) -> np.ndarray:
    return np.asarray(q, dtype=np.int8).astype(np.int32).sum(axis=1, dtype=np.int64).astype(np.int32)


def pack_s8(q: np.ndarray) -> bytes:
    """q int8 [N, K] -> the packed bytes (pad_n(N) * pad_k(K) bytes)."""
    q = np.asarray(q)
    if q.dtype != np.int8 or q.ndim != 2:
        raise ValueError(f"expected a 2-D int8 array, got {q.dtype} {q.shape}")
    n, k = q.shape
    np_, kp = pad_n(n), pad_k(k)
    full = np.zeros((np_, kp), dtype=np.int8)
    full[:n, :k] = q
    # [panel, row-in-panel, group, k-in-group] -> [panel, group, row-in-panel, k-in-group]
    packed = full.reshape(np_ // PANEL, PANEL, kp // KGROUP, KGROUP).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(packed).tobytes()


def unpack_s8(data: bytes, n: int, k: int) -> np.ndarray:
    np_, kp = pad_n(n), pad_k(k)
    a = np.frombuffer(data, dtype=np.int8)
    if a.size != np_ * kp:
        raise ValueError(f"packed size {a.size} != {np_ * kp}")
    full = a.reshape(np_ // PANEL, kp // KGROUP, PANEL, KGROUP).transpose(0, 2, 1, 3).reshape(np_, kp)
    return full[:n, :k].copy()


def padded_scales(scales: np.ndarray) -> np.ndarray:
    s = np.zeros(pad_n(len(scales)), dtype=np.float32)
    s[: len(scales)] = scales
    return s


def padded_row_sums(q: np.ndarray) -> np.ndarray:
    r = np.zeros(pad_n(q.shape[0]), dtype=np.int32)
    r[: q.shape[0]] = row_sums(q)
    return r


def quantize_rows_dynamic(X: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Run-time activation quantization of X [M, K]: (q int8 [M, K], scales float32 [M]), as the C++ kernels."""
    X = np.asarray(X, dtype=np.float32)
    amax = np.abs(X).max(axis=1)
    inv = np.where(amax > 0, np.float32(127.0) / np.where(amax > 0, amax, np.float32(1.0)), np.float32(0.0))
    inv = inv.astype(np.float32)
    q = np.clip(np.rint(X * inv[:, None]), -127, 127).astype(np.int8)
    return q, (amax / np.float32(127.0)).astype(np.float32)


def smoothing_act_scale(x_absmax: np.ndarray, w_absmax: np.ndarray, alpha: float) -> np.ndarray:
    """act_scale[k] = 1 / s_k with s_k = x_absmax[k]^alpha / w_absmax[k]^(1 - alpha) (float64 math, float32 result).

    x_absmax: per-input-channel max|X[:, k]| over the calibration data; w_absmax: per-input-channel max|W[:, k]|
    (over all the weights that share the input). A channel with no signal on either side (max 0 or non-finite)
    gets 1. The result is > 0 and finite."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha {alpha} outside 0..1")
    xm = np.asarray(x_absmax, np.float64)
    wm = np.asarray(w_absmax, np.float64)
    if xm.shape != wm.shape or xm.ndim != 1:
        raise ValueError(f"x_absmax {xm.shape} and w_absmax {wm.shape} must be the same 1-D shape")
    ok = (xm > 0) & (wm > 0) & np.isfinite(xm) & np.isfinite(wm)
    xs, ws = np.where(ok, xm, 1.0), np.where(ok, wm, 1.0)
    s = np.where(ok, xs ** alpha / ws ** (1.0 - alpha), 1.0)
    a = (1.0 / s).astype(np.float32)
    if not (np.all(np.isfinite(a)) and np.all(a > 0)):
        raise ValueError("smoothing produced a non-finite or non-positive act_scale")
    return a


def smooth_weight(W: np.ndarray, act_scale: np.ndarray) -> np.ndarray:
    """W'[n, k] = W[n, k] / act_scale[k] (float32 division), so that X W^T = (X * act_scale) W'^T."""
    W = np.asarray(W, dtype=np.float32)
    a = np.asarray(act_scale, dtype=np.float32)
    if W.ndim != 2 or a.shape != (W.shape[1],):
        raise ValueError(f"act_scale {a.shape} does not match the weight's input dimension {W.shape}")
    return (W / a[None, :]).astype(np.float32)


def linear_int8(X: np.ndarray, q: np.ndarray, scales: np.ndarray, bias: Optional[np.ndarray] = None,
                act_scale: Optional[np.ndarray] = None) -> np.ndarray:
    """Y = X W^T + b with int8 W (per-row) and per-token dynamic int8 X: exact integer sums, f32 dequantization.

    With ``act_scale`` (smoothing), X is first multiplied per input channel (float32) and (q, scales) must be the
    quantization of ``smooth_weight(W, act_scale)``."""
    X = np.asarray(X, dtype=np.float32)
    if act_scale is not None:
        X = X * np.asarray(act_scale, dtype=np.float32)
    shape = X.shape
    X2 = X.reshape(-1, shape[-1])
    qx, sx = quantize_rows_dynamic(X2)
    # integer sums through float64 BLAS: exact (|products| <= 127^2, |sums| < 2^53), much faster than int matmul
    acc = qx.astype(np.float64) @ q.astype(np.float64).T
    Y = acc.astype(np.float32) * (sx[:, None] * np.asarray(scales, np.float32)[None, :])
    if bias is not None:
        Y = Y + np.asarray(bias, np.float32)
    return Y.reshape(*shape[:-1], q.shape[0])

#!/usr/bin/env python3
"""Fits the polynomial coefficients of the AVX2 / AVX-512 GELU (erf) and exp kernels and prints them as C++ literals.

    source ~/.cache/bertlet/venv/bin/activate && python tools/fit_gelu_exp.py

GELU (kernels/avx2.hpp and kernels/avx512.hpp gelu_erf_ps):
    GELU(v) = 0.5 v (1 + erf(v / sqrt 2)) = 0.5 v + a g(a),  a = |v|,  g(a) = 0.5 erf(a / sqrt 2)
  (v erf(v / sqrt 2) is even), so no sign restore, no division. g is piecewise polynomial: a is clamped to AMAX,
  k = round(a S) in 0..PIECES-1 (an FMA with 1.5 * 2^23 leaves k in the low mantissa bits: it is the permute index),
  the local variable t = a S - k lies in [-0.5, 0.5] ([0, 0.5] for k = 0), and g = P_k(t); coefficient j of all the
  pieces is one register-wide table row (vpermps). AVX2: 8 pieces of degree 6 (8-lane vpermps); AVX-512: 16 pieces
  of degree 4 (one 16-lane vpermps per coefficient; fewer permutes and FMAs). AMAX S < PIECES - 0.5 and AMAX ~ 5.657
  = 4 sqrt 2: there g is exactly 0.5 (the last piece's constant term is nudged until it is), so beyond the clamp
  GELU(v) = v or exactly 0. P_0(0) = 0: GELU(0) = 0.
  Fit: minimax in float64 (Lawson's iteratively reweighted least squares on Chebyshev nodes), then the coefficients
  are rounded to float32 from the highest degree down, refitting the lower ones after each rounding.
GELU of the int8 epilogue (gemm_s8.hpp s8_gelu_q, tools/bertlet_tools/gelu_int8.py), scheme "int8":
    GELU(v) = max(0, v) - q(min(|v|, AMAX)),  q(a) = 0.5 a erfc(a / sqrt 2),  AMAX = 4.25
  q is 16 pieces of degree 2 in a itself (no local variable: two operations fewer), k = round(a S); q(0) = 0 is held,
  and the last piece's constant term is nudged down until q(AMAX) <= 0 (it comes out at -1.2e-10).
exp (kernels/avx512.hpp exp_ps): e^r on |r| <= ln2 / 2 (+ a margin for the rounding of x log2 e), degree 6,
  P(0) = 1 exactly (exp(0) = 1: a softmax row's maximum gives exactly 1), relative minimax, same rounding scheme.

The script also evaluates the float32 schemes (FMA emulated in float64) on a dense grid and prints the errors; the
exhaustive check over every float input is done in C++ (see the kernels' comments for the measured figures).
"""
import math

import numpy as np

f32 = np.float32
erf = np.vectorize(math.erf)
erfc = np.vectorize(math.erfc)

GELU_SCHEMES = {"avx2": (8, 6), "avx512": (16, 4)}  # pieces, degree
GELU_END = 5.657  # 4 sqrt 2 ~ 5.6569: erf(4) rounds to 1 in float
EXP_DEGREE, EXP_HALF_RANGE = 6, 0.3466  # ln2 / 2 = 0.34657


def fma32(a, b, c):
    """float32 fma, emulated: the product of two floats is exact in float64."""
    return f32(np.float64(a) * np.float64(b) + np.float64(c))


def minimax(f, lo, hi, powers, fixed, rel=False, iters=80, n=3000):
    """Minimax fit of f on [lo, hi] by sum c_p t^p over `powers`, with the monomials in `fixed` held (Lawson)."""
    t = (lo + hi) / 2 + (hi - lo) / 2 * np.cos(np.pi * (np.arange(n) + 0.5) / n)
    wt = 1 / np.abs(f(t)) if rel else np.ones(n)
    A = np.stack([t**p for p in powers], 1) * wt[:, None]
    b = (f(t) - sum(v * t**p for p, v in fixed.items())) * wt
    w = np.ones(n) / n
    for _ in range(iters):
        sw = np.sqrt(w)
        c, *_ = np.linalg.lstsq(A * sw[:, None], b * sw, rcond=None)
        w = w * (np.abs(A @ c - b) + 1e-300)
        w /= w.sum()
    return dict(zip(powers, c))


def fit_f32(f, lo, hi, deg, fixed=None, rel=False):
    """float32 coefficients c[0..deg]: fit, round the highest free one, refit the rest with it held, repeat."""
    fixed = dict(fixed or {})
    for p in range(deg, -1, -1):
        if p not in fixed:
            free = [q for q in range(deg + 1) if q not in fixed]
            fixed[p] = float(f32(minimax(f, lo, hi, free, fixed, rel)[p]))
    return [fixed[p] for p in range(deg + 1)]


def gelu_fit(npieces, degree):
    s = f32((npieces - 0.5) / GELU_END)
    amax = f32(GELU_END)
    while np.float64(amax) * np.float64(s) >= npieces - 0.5:  # k = round(AMAX S) must stay <= npieces - 1
        amax = np.nextafter(amax, f32(0))
    g = lambda a: 0.5 * erf(a / math.sqrt(2.0))
    pieces = [fit_f32(lambda t, k=k: g((k + t) / np.float64(s)), 0.0 if k == 0 else -0.5, 0.5, degree,
                      {0: 0.0} if k == 0 else None) for k in range(npieces)]
    # At the clamp g must come out as exactly 0.5 (g(AMAX) = 0.5 - 8e-9 rounds to it): otherwise GELU(v) for
    # v << 0 is |v| (0.5 - g) = 3e-8 |v| instead of 0. Raise the last piece's constant term an ulp at a time until
    # the kernel's evaluation at the clamp gives 0.5.
    last = pieces[-1]
    while gelu_eval(s, amax, np.array(pieces, dtype=np.float32), np.array([amax, amax], dtype=np.float32))[1][0] != 0.5:
        last[0] = float(np.nextafter(f32(last[0]), f32(1)))
    return s, amax, np.array(pieces, dtype=np.float32)  # [piece, coefficient]


def gelu_eval(s, amax, C, v):
    """The kernels' operations, in order."""
    v = f32(v)
    a = np.abs(v)
    ac = np.minimum(amax, a)
    magic = f32(12582912.0)
    w = fma32(ac, s, magic)
    kf = f32(w - magic)
    t = fma32(ac, s, -kf)
    k = kf.astype(np.int64)
    p = C[k, -1]
    for j in range(C.shape[1] - 2, -1, -1):
        p = fma32(p, t, C[k, j])
    return fma32(a, p, f32(f32(0.5) * v)), p, ac


def gelu_q_fit(npieces=16, end=4.25, degree=2):
    s = f32((npieces - 0.5) / end)
    amax = f32(end)
    while np.float64(amax) * np.float64(s) >= npieces - 0.5:
        amax = np.nextafter(amax, f32(0))
    q = lambda a: 0.5 * a * erfc(a / math.sqrt(2.0))
    pieces = []
    for k in range(npieces):
        lo, hi = max(0.0, (k - 0.5) / np.float64(s)), min(float(amax), (k + 0.5) / np.float64(s))
        pieces.append(fit_f32(q, lo, hi, degree, {0: 0.0} if k == 0 else None))
    C = np.array(pieces, dtype=np.float32)
    while gelu_q_eval(s, amax, C, np.array([amax, amax], dtype=np.float32))[1][0] > 0:
        C[-1, 0] = np.nextafter(C[-1, 0], f32(-1))
    return s, amax, C


def gelu_q_eval(s, amax, C, v):
    """The int8 kernels' operations, in order."""
    v = f32(v)
    ac = np.minimum(np.abs(v), amax)
    w = fma32(ac, s, f32(12582912.0))
    k = (w.view(np.uint32) & 15).astype(np.int64)
    p = C[k, -1].copy()
    for j in range(C.shape[1] - 2, -1, -1):
        p = fma32(p, ac, C[k, j])
    return f32(np.maximum(f32(0), v) - p), p


def exp_fit():
    return fit_f32(np.exp, -EXP_HALF_RANGE, EXP_HALF_RANGE, EXP_DEGREE, {0: 1.0}, rel=True)


def exp_eval(c, x):
    x = f32(x)
    n = np.round(f32(x * f32(1.44269504088896341)))  # half to even, like vroundscaleps
    r = fma32(-n, f32(0.693359375), x)
    r = fma32(-n, f32(-2.12194440e-4), r)
    p = np.full_like(r, f32(c[-1]))
    for cj in reversed(c[:-1]):
        p = fma32(p, r, f32(cj))
    return np.ldexp(p.astype(np.float64), n.astype(np.int64)).astype(np.float32)


def lit(x):
    return str(f32(x)) + "f"  # shortest decimal that round-trips the float32


def main():
    v = np.linspace(-12, 12, 2_000_001).astype(np.float32)
    vd = v.astype(np.float64)
    for path, (npieces, degree) in GELU_SCHEMES.items():
        s, amax, C = gelu_fit(npieces, degree)
        print(f"// GELU, {path}: {npieces} pieces, degree {degree}; S = {lit(s)}, AMAX = {lit(amax)}")
        print(f"// table [coefficient j][piece k]")
        for j in range(C.shape[1]):
            print("    {" + ", ".join(lit(C[k, j]) for k in range(npieces)) + "},")
        y, p, ac = gelu_eval(s, amax, C, v)
        err = np.abs(y - 0.5 * vd * erfc(-vd / math.sqrt(2.0)))
        perr = np.abs(2 * p.astype(np.float64) - erf(ac.astype(np.float64) / math.sqrt(2.0)))
        print(f"// grid check: GELU max abs err {err.max():.3e}, max err / (1 + |v|) "
              f"{(err / (1 + np.abs(vd))).max():.3e}, 2 g(a) - erf(a / sqrt 2) max {perr.max():.3e}, "
              f"g in [{p.min()}, {p.max()}]")

    s, amax, C = gelu_q_fit()
    print(f"// GELU, int8: 16 pieces of q(a) = 0.5 a erfc(a / sqrt 2), degree 2 in a; S = {lit(s)}, AMAX = {lit(amax)}")
    for j in range(C.shape[1]):
        print("    {" + ", ".join(lit(C[k, j]) for k in range(C.shape[0])) + "},")
    y, _ = gelu_q_eval(s, amax, C, v)
    err = np.abs(y - 0.5 * vd * erfc(-vd / math.sqrt(2.0)))
    print(f"// grid check: GELU max abs err {err.max():.3e}, max err / (1 + |v|) {(err / (1 + np.abs(vd))).max():.3e}")

    c = exp_fit()
    print(f"// exp: degree {EXP_DEGREE}: " + ", ".join(lit(x) for x in c))
    x = np.linspace(-87, 88, 4_000_001).astype(np.float32)
    rel = np.abs(exp_eval(c, x).astype(np.float64) / np.exp(x.astype(np.float64)) - 1)
    print(f"// grid check: exp max rel err {rel.max():.3e} on [-87, 88]")


if __name__ == "__main__":
    main()

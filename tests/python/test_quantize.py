"""tools/bertlet_tools/quantize.py: round-trip bounds, layout, and byte-exact agreement with the C++ packer."""
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

from bertlet_tools import quantize as qz  # noqa: E402


def test_round_trip_bounds():
    rng = np.random.default_rng(0)
    W = rng.normal(0, 0.05, (50, 37)).astype(np.float32)
    W[3] = 0.0  # an all-zero row
    W[4, 5] = 3.0  # an outlier
    q, s = qz.quantize_per_row(W)
    assert q.dtype == np.int8 and s.dtype == np.float32
    assert q.min() >= -127 and q.max() <= 127
    assert s[3] == 0 and not q[3].any()
    np.testing.assert_array_equal(s, np.abs(W).max(axis=1) / np.float32(127))
    err = np.abs(qz.dequantize(q, s) - W)
    assert np.all(err <= 0.5 * s[:, None] * 1.0001 + 1e-12)
    # every non-zero row reaches +-127 at its max
    nz = s > 0
    assert np.all(np.abs(q[nz]).max(axis=1) == 127)


def test_ties_round_half_even():
    W = np.array([[127.0, 0.5, 1.5, 2.5, -0.5, -1.5]], dtype=np.float32)  # scale 1 -> q = W rounded
    q, s = qz.quantize_per_row(W)
    assert s[0] == 1.0
    assert q.tolist() == [[127, 0, 2, 2, 0, -2]]


def test_layout_spot_checks():
    n, k = 37, 7
    q = (np.arange(n * k).reshape(n, k) % 251 - 125).astype(np.int8)
    b = qz.pack_s8(q)
    kp, np_ = qz.pad_k(k), qz.pad_n(n)
    assert (kp, np_) == (8, 48) and len(b) == np_ * kp
    a = np.frombuffer(b, np.int8)
    for nn, kk in [(0, 0), (0, 3), (0, 4), (1, 0), (15, 6), (16, 0), (17, 5), (36, 6)]:
        off = (nn // 16) * 16 * kp + (kk // 4) * 64 + (nn % 16) * 4 + kk % 4
        assert a[off] == q[nn, kk]
    # padding is zero: k = 7 of every row, rows 37..47
    assert a[(0 // 16) * 16 * kp + 64 + 0 * 4 + 3] == 0
    np.testing.assert_array_equal(qz.unpack_s8(b, n, k), q)
    assert not qz.unpack_s8(b, np_, kp)[n:].any()
    rs = qz.padded_row_sums(q)
    assert rs.dtype == np.int32 and len(rs) == np_
    np.testing.assert_array_equal(rs[:n], q.astype(np.int64).sum(axis=1))
    assert not rs[n:].any()


def test_linear_int8_error_bound():
    rng = np.random.default_rng(1)
    X = rng.normal(0, 1, (64, 384)).astype(np.float32)
    W = rng.normal(0, 0.05, (384, 384)).astype(np.float32)
    b = rng.normal(0, 0.1, 384).astype(np.float32)
    q, s = qz.quantize_per_row(W)
    Y = qz.linear_int8(X, q, s, b)
    ref = X.astype(np.float64) @ W.T.astype(np.float64) + b
    rel = np.abs(Y - ref).max(axis=1) / np.abs(ref).max(axis=1)
    assert rel.max() <= 0.02


CXX_SRC = r"""
#include <cstdio>
#include <vector>
#include "bertlet/kernels/gemm_s8.hpp"
int main(int argc, char** argv) {
    if (argc != 7) return 2;
    std::size_t n = std::stoul(argv[2]), k = std::stoul(argv[3]), m = std::stoul(argv[5]);
    std::vector<float> W(n * k), X(m * k);
    FILE* f = std::fopen(argv[1], "rb");
    if (!f || std::fread(W.data(), 4, W.size(), f) != W.size()) return 3;
    std::fclose(f);
    f = std::fopen(argv[4], "rb");
    if (!f || std::fread(X.data(), 4, X.size(), f) != X.size()) return 3;
    std::fclose(f);
    auto pk = bertlet::pack_s8(W.data(), n, k);
    std::vector<std::int32_t> C(m * n);
    std::vector<float> sx(m);
    std::vector<std::uint8_t> scratch(bertlet::gemm_s8_scratch_bytes(m, k));
    bertlet::gemm_s8_s32(bertlet::active_s8_path(), X.data(), m, k, k, pk.view(), C.data(), n, sx.data(), scratch.data());
    f = std::fopen(argv[6], "wb");
    std::fwrite(pk.data.data(), 1, pk.data.size(), f);
    std::fwrite(pk.scales.data(), 4, pk.scales.size(), f);
    std::fwrite(pk.row_sums.data(), 4, pk.row_sums.size(), f);
    std::fwrite(sx.data(), 4, sx.size(), f);
    std::fwrite(C.data(), 4, C.size(), f);
    std::fclose(f);
    return 0;
}
"""


@pytest.fixture(scope="module")
def cxx_packer(tmp_path_factory):
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if not cxx:
        pytest.skip("no C++ compiler")
    d = tmp_path_factory.mktemp("s8pack")
    src = d / "pack.cpp"
    src.write_text(CXX_SRC)
    exe = d / "pack"
    subprocess.run([cxx, "-std=c++17", "-O1", f"-I{ROOT / 'include'}", str(src), "-o", str(exe)], check=True)
    return exe


@pytest.mark.parametrize("n,k,m", [(1, 1, 1), (37, 7, 3), (384, 384, 17), (50, 1536, 5)])
def test_cxx_packer_byte_exact(cxx_packer, tmp_path, n, k, m):
    rng = np.random.default_rng(n * 1000 + k)
    W = rng.normal(0, 0.05, (n, k)).astype(np.float32)
    if n > 2:
        W[1] = 0.0
        W[2, 0] = 1.0
    X = rng.normal(0, 2, (m, k)).astype(np.float32)
    (tmp_path / "w.f32").write_bytes(W.tobytes())
    (tmp_path / "x.f32").write_bytes(X.tobytes())
    out = tmp_path / "out.bin"
    subprocess.run([str(cxx_packer), str(tmp_path / "w.f32"), str(n), str(k), str(tmp_path / "x.f32"), str(m),
                    str(out)], check=True)
    got = out.read_bytes()
    q, s = qz.quantize_per_row(W)
    expect = qz.pack_s8(q) + qz.padded_scales(s).tobytes() + qz.padded_row_sums(q).tobytes()
    assert got[: len(expect)] == expect
    # and the run-time activation quantization + integer sums agree too
    qx, sx = qz.quantize_rows_dynamic(X)
    rest = np.frombuffer(got[len(expect):], dtype=np.uint8)
    np.testing.assert_array_equal(rest[: 4 * m].view(np.float32), sx)
    np.testing.assert_array_equal(rest[4 * m:].view(np.int32).reshape(m, n),
                                  qx.astype(np.int64) @ q.astype(np.int64).T)


def test_smoothing_act_scale_formula():
    x = np.array([4.0, 1.0, 0.0, 9.0], np.float32)
    w = np.array([0.25, 1.0, 0.5, 0.0], np.float32)
    a = qz.smoothing_act_scale(x, w, 0.5)
    assert a.dtype == np.float32 and a.shape == (4,)
    # s = x^0.5 / w^0.5; act_scale = 1 / s; channels without signal on either side get 1
    np.testing.assert_allclose(a, [1 / 4.0, 1.0, 1.0, 1.0], rtol=1e-7)
    np.testing.assert_allclose(qz.smoothing_act_scale(x, w, 1.0)[:2], [1 / 4.0, 1.0], rtol=1e-7)
    np.testing.assert_allclose(qz.smoothing_act_scale(x, w, 0.0)[:2], [0.25, 1.0], rtol=1e-7)
    with pytest.raises(ValueError):
        qz.smoothing_act_scale(x, w, 1.5)
    with pytest.raises(ValueError):
        qz.smoothing_act_scale(x, w[:3], 0.5)


def test_smoothed_linear_is_exact_algebra_and_helps_outlier_channels():
    rng = np.random.default_rng(2)
    X = rng.normal(0, 1, (64, 384)).astype(np.float32)
    X[:, 7] *= 60.0  # an outlier channel, as in BERT's hidden states
    X[:, 100] *= 25.0
    W = rng.normal(0, 0.05, (256, 384)).astype(np.float32)
    b = rng.normal(0, 0.1, 256).astype(np.float32)
    a = qz.smoothing_act_scale(np.abs(X).max(0), np.abs(W).max(0), 0.6)
    Ws = qz.smooth_weight(W, a)
    np.testing.assert_array_equal(Ws, W / a[None, :])
    # (X * a) Ws^T == X W^T in exact arithmetic
    np.testing.assert_allclose((X * a).astype(np.float64) @ Ws.T.astype(np.float64),
                               X.astype(np.float64) @ W.T.astype(np.float64), rtol=1e-4, atol=1e-3)
    q, s = qz.quantize_per_row(Ws)
    # W' = W / act_scale, so dequantized W' * act_scale is W within half a step of W' (times act_scale)
    err = np.abs(qz.dequantize(q, s) * a[None, :] - W)
    assert np.all(err <= (0.5 * s[:, None] * 1.0001 + 1e-7) * a[None, :])
    ref = X.astype(np.float64) @ W.T.astype(np.float64) + b
    Y = qz.linear_int8(X, q, s, b, a)
    # linear_int8 with act_scale is exactly: multiply, then the plain int8 linear
    np.testing.assert_array_equal(Y, qz.linear_int8(X * a, q, s, b))
    q0, s0 = qz.quantize_per_row(W)
    Y0 = qz.linear_int8(X, q0, s0, b)
    assert np.abs(Y - ref).mean() < 0.7 * np.abs(Y0 - ref).mean()

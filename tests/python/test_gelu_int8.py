"""The int8 GELU table of the numpy model (tools/bertlet_tools/gelu_int8.py) is the C++ one (gemm_s8.hpp), and the
formula is as accurate as documented."""
import math
import re
from pathlib import Path

import numpy as np

from bertlet_tools import gelu_int8

ROOT = Path(__file__).resolve().parents[2]


def _cpp_table():
    src = (ROOT / "include/bertlet/kernels/gemm_s8.hpp").read_text()
    body = re.search(r"s8_gelu_q\[s8_gelu_degree \+ 1\]\[16\] = \{(.*?)\n\};", src, re.S).group(1)
    vals = [float(x) for x in re.findall(r"(-?[0-9.]+(?:e-?[0-9]+)?)f", body)]
    s = float(re.search(r"s8_gelu_s = ([0-9.e-]+)f", src).group(1))
    amax = float(re.search(r"s8_gelu_amax = ([0-9.e-]+)f", src).group(1))
    return np.array(vals, dtype=np.float32).reshape(-1, 16), np.float32(s), np.float32(amax)


def test_table_matches_the_kernels():
    q, s, amax = _cpp_table()
    assert np.array_equal(q, gelu_int8.Q)
    assert s == gelu_int8.S and amax == gelu_int8.AMAX


def test_error_against_erf_form():
    v = np.linspace(-12, 12, 400_001)
    exact = 0.5 * v * (1 + np.vectorize(math.erf)(v / math.sqrt(2)))
    err = np.abs(gelu_int8.gelu(v) - exact)
    assert err.max() <= 8.5e-5
    assert gelu_int8.gelu(np.array([0.0]))[0] == 0.0
    assert abs(gelu_int8.gelu(np.array([-100.0]))[0]) < 1e-9 and abs(gelu_int8.gelu(np.array([100.0]))[0] - 100.0) < 1e-9

"""bertlet-quantize: fp32 blob -> int8 blob (layout 2 + .scale/.row_sum companions, int8 reference vectors)."""
import numpy as np
import pytest

from bertlet_tools import blob as B
from bertlet_tools import quantize as qz
from bertlet_tools.quantize_blob import QuantizeError, quantize_blob


@pytest.fixture(scope="module")
def int8_blob(tmp_path_factory, blob_path, root):
    out = tmp_path_factory.mktemp("q") / "m.int8.bertlet"
    figures = quantize_blob(blob_path, root / "models" / "src" / "all-MiniLM-L6-v2", out)
    return out, figures


def test_quantized_tensors_and_companions(int8_blob, blob_path):
    out, figures = int8_blob
    assert figures["quantized_tensors"] == 24  # 6 layers x (query, key, attention output, intermediate)
    q = B.decode(out.read_bytes())
    f = B.decode(blob_path.read_bytes())
    assert "value" in q.meta["general.quantization"] and "fp32" in q.meta["general.quantization"]
    by = {t.name: t for t in q.tensors}
    name = "encoder.layer.2.intermediate.dense.weight"
    t = by[name]
    assert (t.dtype, t.layout, t.quant, t.shape) == (B.DT_I8, 2, B.QUANT_PER_ROW_SYMMETRIC, (1536, 384))
    assert t.nbytes == 1536 * 384
    sc, rs = by[name + ".scale"], by[name + ".row_sum"]
    assert (sc.dtype, sc.shape, rs.dtype, rs.shape) == (B.DT_F32, (1536,), B.DT_I32, (1536,))
    # dequantized weights are within half a quantization step of the fp32 weights
    raw = q.raw[q.data_offset + t.offset: q.data_offset + t.offset + t.nbytes]
    w8 = qz.unpack_s8(raw, 1536, 384)
    scales = q.array(name + ".scale")
    ft = {x.name: x for x in f.tensors}[name]
    from bertlet_tools.quantize_blob import _weight
    w = _weight(f, ft)
    err = np.abs(w8.astype(np.float32) * scales[:, None] - w)
    assert np.all(err <= scales[:, None] * 0.5 + 1e-7)
    assert np.array_equal(q.array(name + ".row_sum"), w8.astype(np.int32).sum(1))
    # value and FFN output stay fp32 (packed), as do embeddings
    assert by["encoder.layer.0.attention.self.value.weight"].dtype == B.DT_F32
    assert by["encoder.layer.0.output.dense.weight"].dtype == B.DT_F32
    assert by["embeddings.word_embeddings.weight"].dtype == B.DT_F32


def test_reference_vectors_are_int8_and_close_to_fp32(int8_blob, blob_path):
    out, figures = int8_blob
    q = B.decode(out.read_bytes())
    f = B.decode(blob_path.read_bytes())
    assert q.meta["verify.texts"] == f.meta["verify.texts"]
    a = np.asarray(q.meta["verify.embeddings"]).reshape(len(q.meta["verify.texts"]), -1)
    b = np.asarray(f.meta["verify.embeddings"]).reshape(a.shape)
    cos = (a * b).sum(1)
    assert cos.min() >= 0.99 and not np.array_equal(a, b)
    assert q.meta["verify.tolerance"] == pytest.approx(1e-2)
    assert q.meta["verify.min_cosine"] == pytest.approx(0.999)


def test_refuses_a_quantized_blob(int8_blob, tmp_path):
    out, _ = int8_blob
    with pytest.raises(QuantizeError, match="already quantized"):
        quantize_blob(out, None, tmp_path / "x.bertlet")
    assert not (tmp_path / "x.bertlet").exists()

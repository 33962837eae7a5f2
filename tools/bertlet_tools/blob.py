"""Reference writer and reader of the .bertlet blob format (docs/FORMAT.md)."""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import xxhash

MAGIC = b"BERTLET\x00"
VERSION_MAJOR = 1
VERSION_MINOR = 0
HEADER_SIZE = 80
DEFAULT_ALIGNMENT = 64

T_U64, T_I64, T_F64, T_BOOL, T_STR, T_ARR_STR, T_ARR_I64, T_ARR_F32 = range(1, 9)

DT_F32, DT_F16, DT_BF16, DT_I8, DT_I32 = range(5)
DTYPE_SIZE = {DT_F32: 4, DT_F16: 2, DT_BF16: 2, DT_I8: 1, DT_I32: 4}
DTYPE_NAMES = {DT_F32: "f32", DT_F16: "f16", DT_BF16: "bf16", DT_I8: "i8", DT_I32: "i32"}
LAYOUT_ROW_MAJOR = 0
QUANT_NONE, QUANT_PER_ROW_SYMMETRIC = 0, 1


class BlobFormatError(ValueError):
    pass


class U64(int):
    """Marks an int to be stored as U64 (plain ints are stored as U64 when >= 0, else I64)."""


@dataclass
class Tensor:
    name: str
    data: np.ndarray
    dtype: int = DT_F32
    layout: int = LAYOUT_ROW_MAJOR
    quant: int = QUANT_NONE

    def raw(self) -> bytes:
        if self.dtype == DT_F32:
            return np.ascontiguousarray(self.data, dtype="<f4").tobytes()
        if self.dtype == DT_F16:
            return np.ascontiguousarray(self.data, dtype="<f2").tobytes()
        if self.dtype == DT_I8:
            return np.ascontiguousarray(self.data, dtype="i1").tobytes()
        if self.dtype == DT_I32:
            return np.ascontiguousarray(self.data, dtype="<i4").tobytes()
        if self.dtype == DT_BF16:
            f = np.ascontiguousarray(self.data, dtype="<f4").view("<u4")
            # round to nearest even
            r = ((f + 0x7FFF + ((f >> 16) & 1)) >> 16).astype("<u2")
            return r.tobytes()
        raise BlobFormatError(f"tensor '{self.name}': unknown dtype {self.dtype}")


def _align_up(x: int, a: int) -> int:
    return (x + a - 1) // a * a


def _str(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<I", len(b)) + b


def _encode_value(key: str, v: Any) -> bytes:
    if isinstance(v, bool):
        return struct.pack("<IB", T_BOOL, 1 if v else 0)
    if isinstance(v, (int, np.integer)):
        v = int(v)
        if v >= 0:
            return struct.pack("<IQ", T_U64, v)
        return struct.pack("<Iq", T_I64, v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise BlobFormatError(f"metadata '{key}': non-finite float")
        return struct.pack("<Id", T_F64, v)
    if isinstance(v, str):
        return struct.pack("<I", T_STR) + _str(v)
    if isinstance(v, np.ndarray) and v.dtype.kind == "f":
        a = np.ascontiguousarray(v.reshape(-1), dtype="<f4")
        if not np.all(np.isfinite(a)):
            raise BlobFormatError(f"metadata '{key}': non-finite float")
        return struct.pack("<IQ", T_ARR_F32, a.size) + a.tobytes()
    if isinstance(v, (list, tuple)):
        if all(isinstance(x, str) for x in v):
            return struct.pack("<IQ", T_ARR_STR, len(v)) + b"".join(_str(x) for x in v)
        if all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in v):
            return struct.pack("<IQ", T_ARR_I64, len(v)) + np.asarray(v, dtype="<i8").tobytes()
    raise BlobFormatError(f"metadata '{key}': cannot encode value of type {type(v).__name__}")


def encode(meta: Dict[str, Any], tensors: Sequence[Tensor], alignment: int = DEFAULT_ALIGNMENT) -> bytes:
    """Serialize metadata and tensors into a complete blob (bytes)."""
    if alignment < 16 or alignment > 4096 or alignment & (alignment - 1):
        raise BlobFormatError(f"alignment {alignment} is not a power of two in 16..4096")
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise BlobFormatError("duplicate tensor names")
    if not tensors:
        raise BlobFormatError("a blob needs at least one tensor")
    meta_bytes = bytearray(struct.pack("<Q", len(meta)))
    for k, v in meta.items():
        meta_bytes += _str(k) + _encode_value(k, v)
    raws = [t.raw() for t in tensors]
    table = bytearray()
    off = 0
    for t, raw in zip(tensors, raws):
        dims = list(getattr(t, "dims", None) or t.data.shape)
        if not 1 <= len(dims) <= 4 or any(d < 1 for d in dims):
            raise BlobFormatError(f"tensor '{t.name}': bad shape {tuple(dims)}")
        off = _align_up(off, alignment)
        table += _str(t.name) + struct.pack("<IIII", t.dtype, t.layout, t.quant, len(dims))
        table += struct.pack(f"<{len(dims)}Q", *dims) + struct.pack("<QQ", off, len(raw))
        off += len(raw)
    data_size = off
    meta_offset = HEADER_SIZE
    table_offset = meta_offset + len(meta_bytes)
    data_offset = _align_up(table_offset + len(table), alignment)
    file_size = data_offset + data_size + 8
    header = MAGIC + struct.pack(
        "<IIQQQQQQQII", VERSION_MAJOR, VERSION_MINOR, file_size, meta_offset, len(meta_bytes), table_offset,
        len(table), data_offset, data_size, len(tensors), alignment)
    assert len(header) == HEADER_SIZE
    out = bytearray(header) + meta_bytes + table
    out += b"\x00" * (data_offset - len(out))
    for raw in raws:
        out += b"\x00" * (_align_up(len(out) - data_offset, alignment) - (len(out) - data_offset))
        out += raw
    assert len(out) == file_size - 8
    out += struct.pack("<Q", xxhash.xxh64(bytes(out), seed=0).intdigest())
    return bytes(out)


@dataclass
class TensorInfo:
    name: str
    dtype: int
    layout: int
    quant: int
    shape: Tuple[int, ...]
    offset: int
    nbytes: int


@dataclass
class Blob:
    meta: Dict[str, Any] = field(default_factory=dict)
    tensors: List[TensorInfo] = field(default_factory=list)
    raw: bytes = b""
    data_offset: int = 0

    def array(self, name: str) -> np.ndarray:
        for t in self.tensors:
            if t.name == name:
                buf = self.raw[self.data_offset + t.offset: self.data_offset + t.offset + t.nbytes]
                np_dt = {DT_F32: "<f4", DT_F16: "<f2", DT_I8: "i1", DT_I32: "<i4", DT_BF16: "<u2"}[t.dtype]
                a = np.frombuffer(buf, dtype=np_dt).reshape(t.shape)
                if t.dtype == DT_BF16:
                    a = (a.astype("<u4") << 16).view("<f4")
                return a
        raise KeyError(name)


def decode(raw: bytes) -> Blob:
    """Parse a blob (used by tests and `bertlet-inspect`; the C++ reader is the strict one)."""
    if len(raw) < HEADER_SIZE + 8 or raw[:8] != MAGIC:
        raise BlobFormatError("not a bertlet blob (bad magic or too short)")
    (major, minor, file_size, meta_offset, meta_size, table_offset, table_size, data_offset, data_size, count,
     alignment) = struct.unpack_from("<IIQQQQQQQII", raw, 8)
    if major != VERSION_MAJOR:
        raise BlobFormatError(f"unsupported version {major}.{minor}")
    if file_size != len(raw):
        raise BlobFormatError(f"file_size {file_size} != actual {len(raw)}")
    (stored,) = struct.unpack_from("<Q", raw, len(raw) - 8)
    if xxhash.xxh64(raw[:-8], seed=0).intdigest() != stored:
        raise BlobFormatError("checksum mismatch")
    pos = meta_offset

    def rd(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, raw, pos)
        pos += struct.calcsize(fmt)
        return v if len(v) > 1 else v[0]

    def rstr():
        nonlocal pos
        n = rd("<I")
        s = raw[pos:pos + n].decode("utf-8")
        pos += n
        return s

    blob = Blob(raw=raw, data_offset=data_offset)
    for _ in range(rd("<Q")):
        k = rstr()
        t = rd("<I")
        if t == T_U64:
            v = rd("<Q")
        elif t == T_I64:
            v = rd("<q")
        elif t == T_F64:
            v = rd("<d")
        elif t == T_BOOL:
            v = bool(rd("<B"))
        elif t == T_STR:
            v = rstr()
        elif t == T_ARR_STR:
            v = [rstr() for _ in range(rd("<Q"))]
        elif t == T_ARR_I64:
            n = rd("<Q")
            v = list(np.frombuffer(raw, "<i8", n, pos))
            pos += 8 * n
        elif t == T_ARR_F32:
            n = rd("<Q")
            v = np.frombuffer(raw, "<f4", n, pos).copy()
            pos += 4 * n
        else:
            raise BlobFormatError(f"metadata '{k}': unknown type {t}")
        blob.meta[k] = v
    pos = table_offset
    for _ in range(count):
        name = rstr()
        dtype, layout, quant, ndim = rd("<IIII")
        dims = struct.unpack_from(f"<{ndim}Q", raw, pos)
        pos += 8 * ndim
        off, nbytes = rd("<QQ")
        blob.tensors.append(TensorInfo(name, dtype, layout, quant, tuple(dims), off, nbytes))
    return blob

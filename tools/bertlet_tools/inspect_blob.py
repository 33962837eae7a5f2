"""bertlet-inspect FILE: print a .bertlet blob's header, metadata (arrays summarized) and tensor table.

The file is parsed with the reference reader `blob.decode` (magic, version, file size and XXH64 checksum checked).
"""
from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path
from typing import Any, List, Optional, Sequence

import numpy as np

from . import blob


def _summarize(v: Any, width: int = 100) -> str:
    if isinstance(v, np.ndarray):
        if v.size == 0:
            return "f32[0]"
        head = ", ".join(f"{x:.6g}" for x in v[:4])
        return f"f32[{v.size}] min {v.min():.6g} max {v.max():.6g} [{head}{', ...' if v.size > 4 else ''}]"
    if isinstance(v, list):
        if v and all(isinstance(x, str) for x in v):
            shown = ", ".join(repr(x if len(x) <= 24 else x[:21] + "...") for x in v[:5])
            return f"str[{len(v)}] [{shown}{', ...' if len(v) > 5 else ''}]"
        return f"i64[{len(v)}] {v[:8]}{' ...' if len(v) > 8 else ''}"
    if isinstance(v, str):
        r = repr(v)
        return r if len(r) <= width else r[: width - 3] + "..."
    return repr(v)


def format_blob(b: blob.Blob, path: Optional[Path] = None) -> List[str]:
    raw = b.raw
    (major, minor, file_size, meta_offset, meta_size, table_offset, table_size, data_offset, data_size, count,
     alignment) = struct.unpack_from("<IIQQQQQQQII", raw, 8)
    (checksum,) = struct.unpack_from("<Q", raw, len(raw) - 8)
    lines = [
        f"file: {path}" if path else "blob",
        f"  version {major}.{minor}, {file_size:,} bytes ({file_size / 1e6:.1f} MB), alignment {alignment}, "
        f"checksum {checksum:016x} (ok)",
        f"  metadata @{meta_offset} {meta_size:,} B; table @{table_offset} {table_size:,} B; "
        f"data @{data_offset} {data_size:,} B; {count} tensors",
        "",
        f"metadata ({len(b.meta)} keys):",
    ]
    kw = max((len(k) for k in b.meta), default=0)
    for k, v in b.meta.items():
        lines.append(f"  {k:<{kw}}  {_summarize(v)}")
    lines += ["", f"tensors ({len(b.tensors)}):"]
    nw = max((len(t.name) for t in b.tensors), default=0)
    lines.append(f"  {'name':<{nw}}  {'dtype':<5} {'shape':<14} {'offset':>12} {'nbytes':>12}  layout quant")
    n_params = 0
    for t in b.tensors:
        shape = "[" + ",".join(str(d) for d in t.shape) + "]"
        n = int(np.prod(t.shape))
        n_params += n
        lines.append(f"  {t.name:<{nw}}  {blob.DTYPE_NAMES.get(t.dtype, str(t.dtype)):<5} {shape:<14} "
                     f"{t.offset:>12,} {t.nbytes:>12,}  {t.layout:>6} {t.quant:>5}")
    lines.append(f"  total parameters: {n_params:,}")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="bertlet-inspect", description="Print a .bertlet blob's metadata and tensor table.")
    p.add_argument("file", type=Path)
    args = p.parse_args(argv)
    try:
        raw = args.file.read_bytes()
    except OSError as e:
        print(f"bertlet-inspect: error: {args.file}: {e.strerror}", file=sys.stderr)
        return 1
    try:
        b = blob.decode(raw)
    except (blob.BlobFormatError, struct.error, UnicodeDecodeError) as e:
        print(f"bertlet-inspect: error: {args.file}: {e}", file=sys.stderr)
        return 1
    print("\n".join(format_blob(b, args.file)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

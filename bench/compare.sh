#!/usr/bin/env bash
# bertlet vs ONNX Runtime vs PyTorch on this CPU (issue #3): set-up, build the bench drivers, run bench/compare.py.
#   bash bench/compare.sh [--quick] [--only bertlet,ort,torch] [--int8-blob FILE] [...]   (see compare.py --help)
#   BERTLET_BUILD_DIR   build directory (default build/)
# Writes bench/RESULTS.md (unless --results -) and prints the tables. Run it on an otherwise idle machine.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD="${BERTLET_BUILD_DIR:-$ROOT/build}"
bash scripts/setup.sh
if [ -z "${BERTLET_DATA:-}" ]; then  # same lookup as setup.sh
  for d in "$ROOT/../shared/data" /work/shared/data; do
    if [ -d "$d/stsb" ]; then export BERTLET_DATA="$(cd "$d" && pwd)"; break; fi
  done
fi
VENV="${BERTLET_CACHE:-$HOME/.cache/bertlet}/venv"
GEN=(); command -v ninja >/dev/null && GEN=(-G Ninja)
[ -f "$BUILD/CMakeCache.txt" ] || cmake -S "$ROOT" -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release >/dev/null
# only what the comparison runs (so an unrelated target that does not build cannot block it)
cmake --build "$BUILD" -j "$(nproc)" --target bertlet-latency bertlet-coldstart bertlet_bench
HF_HUB_OFFLINE=1 exec "$VENV/bin/python" "$ROOT/bench/compare.py" --build-dir "$BUILD" "$@"

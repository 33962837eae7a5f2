#!/usr/bin/env bash
# arm64 / NEON job (issue #3): cross-compile the unit-test binary with Debian's aarch64 cross compiler and run it under
# qemu-user: the NEON kernel tests, the tiny-model encoder tests (naive double reference) and the real
# all-MiniLM-L6-v2 fp32 blob against the Hugging Face goldens (tests/data/golden_stsb_small.jsonl) on the NEON path,
# and the int8 GEMMs: the DotProd (sdot) path bit-identical to the scalar reference (qemu-user emulates DotProd).
# Needs scripts/setup.sh to have run (models/). Installs g++-aarch64-linux-gnu and qemu-user when missing.
#   BERTLET_ARM64_FILTER  doctest -tc filter (default below)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if ! command -v aarch64-linux-gnu-g++ >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends g++-aarch64-linux-gnu \
    qemu-user >/dev/null
fi
OUT="$ROOT/build-arm64"
mkdir -p "$OUT"
echo "== cross-compiling the unit tests for aarch64 (NEON)"
# header-only: the same sources CMake globs, with the same definitions; Eigen and doctest headers are arch-independent
aarch64-linux-gnu-g++ -std=c++17 -O2 -Wall -Wextra -I include -I /usr/include/eigen3 -I /usr/include \
  -DBERTLET_TEST_DATA="\"$ROOT/tests/data\"" -DBERTLET_MODELS_DIR="\"$ROOT/models\"" \
  tests/doctest_main.cpp tests/unit/*.cpp -o "$OUT/bertlet_tests" -lpthread
FILTER="${BERTLET_ARM64_FILTER:-kernels*,encoder*,gemm_s8*,int8*,all-MiniLM-L6-v2: loads*,all-MiniLM-L6-v2 int8*,f16*,bf16 (layout 3)*,tokenizer*}"
echo "== running under qemu-aarch64 (-tc='$FILTER')"
qemu-aarch64 -L /usr/aarch64-linux-gnu "$OUT/bertlet_tests" -tc="$FILTER"
echo "== arm64 tests passed"

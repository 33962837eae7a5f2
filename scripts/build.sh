#!/usr/bin/env bash
# Configure and build (Release) into build/ — or into $1 with extra CMake args after it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:-$ROOT/build}"; shift || true
GEN=(); command -v ninja >/dev/null && GEN=(-G Ninja)
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  cmake -S "$ROOT" -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
fi
cmake --build "$BUILD" -j "$(nproc)" ${BERTLET_BUILD_TARGET:+--target "$BERTLET_BUILD_TARGET"}

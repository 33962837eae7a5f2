#!/usr/bin/env bash
# Builds the consumer twice — via add_subdirectory and via install + find_package — and runs it on MODEL.
set -euo pipefail
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MODEL="$1"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cmake -S "$SRC/tests/packaging" -B "$WORK/sub" -DBERTLET_SOURCE_DIR="$SRC" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$WORK/sub" -j2 >/dev/null
"$WORK/sub/consumer" "$MODEL"
# the subproject must not have built bertlet's own tests/examples
test ! -e "$WORK/sub/bertlet/tests" || { echo "tests were built in a subproject"; exit 1; }
cmake -S "$SRC" -B "$WORK/lib" -DCMAKE_INSTALL_PREFIX="$WORK/prefix" -DCMAKE_BUILD_TYPE=Release -DBERTLET_BUILD_TESTS=OFF -DBERTLET_BUILD_EXAMPLES=OFF -DBERTLET_BUILD_BENCH=OFF >/dev/null
cmake --install "$WORK/lib" >/dev/null
cmake -S "$SRC/tests/packaging" -B "$WORK/pkg" -DCMAKE_PREFIX_PATH="$WORK/prefix" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$WORK/pkg" -j2 >/dev/null
"$WORK/pkg/consumer" "$MODEL"
echo "packaging: add_subdirectory and find_package consumers both work"

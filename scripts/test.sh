#!/usr/bin/env bash
# The test command: set-up, build, every test (ctest: C++ units incl. the real model; pytest: converter,
# tokenizer parity on all of ../shared/data, embedding parity with Hugging Face on all of STS-B test),
# then the unit tests again under ASan+UBSan, the threading tests under TSan, and the NEON path under qemu-user.
#   BERTLET_SKIP_SANITIZE=1  skip the sanitizer build (local iteration only; CI runs it)
#   BERTLET_SKIP_ARM64=1     skip the aarch64 cross build + qemu-user run (scripts/test_arm64.sh; CI runs it)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
if [ -z "${BERTLET_DATA:-}" ]; then  # same lookup as setup.sh; pytest reads BERTLET_DATA
  for d in "$ROOT/../shared/data" /work/shared/data; do
    if [ -d "$d/stsb" ]; then export BERTLET_DATA="$(cd "$d" && pwd)"; break; fi
  done
fi
VENV="${BERTLET_CACHE:-$HOME/.cache/bertlet}/venv"

echo "== build (Release)"
bash scripts/build.sh build
echo "== ctest"
ctest --test-dir build --output-on-failure

echo "== pytest"
BERTLET_BUILD_DIR="$ROOT/build" HF_HUB_OFFLINE=1 "$VENV/bin/python" -m pytest -q tests/python

if [ "${BERTLET_SKIP_SANITIZE:-0}" != 1 ]; then
  echo "== unit tests under ASan+UBSan"
  BERTLET_BUILD_TARGET=bertlet_tests bash scripts/build.sh build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBERTLET_SANITIZE=address,undefined
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --test-dir build-asan -R '^unit$' --output-on-failure
  echo "== thread tests under TSan"
  BERTLET_BUILD_TARGET=bertlet_tests bash scripts/build.sh build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBERTLET_SANITIZE=thread
  TSAN_OPTIONS=halt_on_error=1 build-tsan/tests/bertlet_tests -tc='*thread*,*pool*'
fi
if [ "${BERTLET_SKIP_ARM64:-0}" != 1 ]; then
  echo "== arm64 (NEON) cross build under qemu-user"
  bash scripts/test_arm64.sh
fi
echo "== all tests passed"

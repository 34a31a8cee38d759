#!/usr/bin/env bash
# Builds edgetune (Release) and runs the whole test suite with ctest.
#   scripts/test.sh              Release build in build/release, then ctest
#   scripts/test.sh --sanitize   the same tests in an ASan+UBSan build (build/sanitize)
# Installs missing Debian packages first. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=release
for arg in "$@"; do
  case "$arg" in
    --sanitize) mode=sanitize ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "scripts/test.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

source scripts/deps.sh

jobs=$(nproc)
if [ "$mode" = sanitize ]; then
  dir=build/sanitize
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEDGETUNE_SANITIZE=ON >/dev/null
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
else
  dir=build/release
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$dir" -j "$jobs"
ctest --test-dir "$dir" --output-on-failure -j "$jobs"

#!/usr/bin/env bash
# Builds edgetune (Release) and runs the whole test suite with ctest.
#   scripts/test.sh              Release build in build/release, then ctest
#   scripts/test.sh --sanitize   the same tests in an ASan+UBSan build (build/sanitize)
#   scripts/test.sh --arm64      the same tests cross-built for ARM64 (scripts/cross.sh arm64, in
#                                build/arm64) and run under qemu-aarch64, plus the check that the
#                                ARM64 CLI predicts as the host's (build/release) does
# Installs missing Debian packages first. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=release
for arg in "$@"; do
  case "$arg" in
    --sanitize) mode=sanitize ;;
    --arm64) mode=arm64 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "scripts/test.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

source scripts/deps.sh

jobs=$(nproc)
if [ "$mode" = arm64 ]; then
  scripts/cross.sh arm64
  # The host's CLI, whose predictions the ARM64 one must reproduce.
  cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build/release -j "$jobs" --target edgetune
  # Under qemu, the whole suite but for four kinds of test, each minutes or more under emulation:
  # the tests that run the CLI as a process (cli:...; the predict check, "cli: ...", does run), the
  # tests that compare thread counts or run sessions at 2 and more threads (their thread count is
  # the session's, not OMP_NUM_THREADS), the integer kernels at 2 threads against the scalar reference
  # (their 1-thread run does run), and the planner's estimate against measured peaks (training
  # steps of every method and base). One OpenMP thread: under qemu, spin-waiting threads turn a
  # one-sentence predict from one second into more than a minute.
  export OMP_NUM_THREADS=1
  ctest --test-dir build/arm64 --output-on-failure -j "$jobs" \
    -E '^cli:[^ ]|number of threads|every thread count|sessions: two trainers|planner: the estimate is within|the scalar one at 2 threads'
  # The integer kernels again on two emulated CPUs (qemu's QEMU_CPU), each forcing one
  # implementation, which the kernel tests then require to be available and the int8 linear op
  # tests run through: a Cortex-A53 (ARMv8-A, NEON only) and qemu's "max" (dotprod and i8mm;
  # the first run above chose i8mm there). On the Cortex-A53, asking for dotprod must fail.
  kernel_tests='^autograd:(qgemm|int8)'
  kernel_slow='2 threads'
  QEMU_CPU=cortex-a53 EDGETUNE_KERNELS=neon ctest --test-dir build/arm64 --output-on-failure \
    --no-tests=error -j "$jobs" -R "$kernel_tests" -E "$kernel_slow"
  QEMU_CPU=max EDGETUNE_KERNELS=dotprod ctest --test-dir build/arm64 --output-on-failure \
    --no-tests=error -j "$jobs" -R "$kernel_tests" -E "$kernel_slow"
  refused=$(QEMU_CPU=cortex-a53 EDGETUNE_KERNELS=dotprod qemu-aarch64 -L /usr/aarch64-linux-gnu \
    build/arm64/tests/test_autograd "qgemm: EDGETUNE_KERNELS names and availability" 2>&1 || true)
  # Catch2 wraps the message at 80 columns: compare it with the line breaks made spaces.
  expected="EDGETUNE_KERNELS=dotprod: this CPU does not support it (available: scalar, neon)"
  if ! tr -s '\n ' '  ' <<<"$refused" | grep -qF "$expected"; then
    echo "scripts/test.sh: on a Cortex-A53, EDGETUNE_KERNELS=dotprod was not refused:" >&2
    echo "$refused" >&2
    exit 1
  fi
  exit 0
fi
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

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
  # Under qemu, the whole suite but for the two tests that hold a whole process to a budget close
  # to its measured baseline: under emulation the process is qemu, whose resident memory (30 MiB
  # before the program's own) includes the code it has translated so far and grows as new code
  # runs, so the baseline is neither the program's nor stable. Those tests run natively above.
  ctest --test-dir build/arm64 --output-on-failure -j "$jobs" \
    -E 'keeps VmHWM within it|planner: training under a budget stays under it'
  # The integer kernels again on two emulated CPUs (qemu's QEMU_CPU), each forcing one
  # implementation, which the kernel tests then require to be available and the int8 linear op
  # tests run through: a Cortex-A53 (ARMv8-A, NEON only) and qemu's "max" (dotprod and i8mm;
  # the first run above chose i8mm there). On the Cortex-A53, asking for dotprod must fail.
  kernel_tests='^autograd:(qgemm|int8)'
  QEMU_CPU=cortex-a53 EDGETUNE_KERNELS=neon ctest --test-dir build/arm64 --output-on-failure \
    --no-tests=error -j "$jobs" -R "$kernel_tests"
  QEMU_CPU=max EDGETUNE_KERNELS=dotprod ctest --test-dir build/arm64 --output-on-failure \
    --no-tests=error -j "$jobs" -R "$kernel_tests"
  # (Through ctest, so under the toolchain file's emulator command; the test fails, and
  # --output-on-failure prints the message.)
  refused=$(QEMU_CPU=cortex-a53 EDGETUNE_KERNELS=dotprod ctest --test-dir build/arm64 --output-on-failure \
    --no-tests=error -R 'qgemm: EDGETUNE_KERNELS names and availability' 2>&1 || true)
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

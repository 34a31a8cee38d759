#!/usr/bin/env bash
# Cross-compiles edgetune (Release) for another CPU on a Debian x86-64 host.
#   scripts/cross.sh arm64 [TARGET...]   Linux ARM64 (ARMv8-A + NEON) into build/arm64, with
#                                        cmake/aarch64-linux-gnu.cmake; all targets unless named
# Installs what is missing first: the host's build dependencies (deps.sh), the arm64 architecture
# in dpkg, g++-aarch64-linux-gnu, qemu-user (to run the result) and the arm64 packages of the
# libraries that are not header-only. Idempotent: a second run only checks and rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,7p' "$0"; }
if [ $# -lt 1 ]; then
  usage >&2
  exit 2
fi
case "$1" in
  arm64) ;;
  -h|--help) usage; exit 0 ;;
  *) echo "scripts/cross.sh: unknown target CPU '$1' (known: arm64)" >&2; exit 2 ;;
esac
shift

source scripts/deps.sh

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  echo "edgetune: adding the arm64 architecture to dpkg"
  if [ "$(id -u)" -ne 0 ]; then sudo dpkg --add-architecture arm64; else dpkg --add-architecture arm64; fi
fi
# Header-only libraries (Eigen, xtensor, xtl, xsimd, nlohmann_json, CLI11, Catch2) are the host's;
# OpenMP (libgomp) comes with the cross compiler.
edgetune_install_missing g++-aarch64-linux-gnu qemu-user libutf8proc-dev:arm64 libsodium-dev:arm64

dir=build/arm64
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/aarch64-linux-gnu.cmake" >/dev/null
targets=()
for t in "$@"; do targets+=(--target "$t"); done
cmake --build "$dir" -j "$(nproc)" "${targets[@]}"

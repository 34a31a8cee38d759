#!/usr/bin/env bash
# edgetune beside PyTorch: installs what is missing (edgetune's build dependencies, Debian's
# python3-torch and the threaded OpenBLAS it should run on: with the reference BLAS torch runs at a
# few GFLOP/s and the comparison would flatter edgetune), builds edgetune (Release) and runs
# `edgetune bench` with the arguments given, e.g.
#   scripts/bench.sh                                  # all four shapes, table + edgetune-bench.json
#   scripts/bench.sh --shapes tiny,mini --profile     # a per-op profile of one planned q4 step
# Both sides run with the same threads and the same OPENBLAS_* / OMP_* environment; neither is
# changed here.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/deps.sh
edgetune_install_missing python3-torch libopenblas0-pthread

cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release -j"$(nproc)" --target edgetune >/dev/null
exec build/release/examples/edgetune bench --python /usr/bin/python3 "$@"

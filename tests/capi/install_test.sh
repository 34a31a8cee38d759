#!/bin/sh
# Installs the build into a fresh prefix and builds examples/embed against it, out of the source
# tree: with CMake's find_package (shared, then static library) and with pkg-config; runs each
# build (--help, and one short training of the model given).
#   install_test.sh BUILD_DIR EMBED_SOURCE_DIR WORK_DIR MODEL_DIR [C_FLAGS]
set -eu
build=$1 embed=$2 work=$3 model=$4 flags=${5:-} budget=${6:-32M}
rm -rf "$work"
prefix=$work/prefix
cmake --install "$build" --prefix "$prefix" >/dev/null
for f in include/edgetune/c_api.h lib/libedgetune.a lib/libedgetune.so lib/cmake/edgetune/edgetuneConfig.cmake \
         lib/pkgconfig/edgetune.pc; do
  [ -e "$prefix/$f" ] || { echo "install_test: $prefix/$f was not installed" >&2; exit 1; }
done
# Nothing of the source tree's headers is visible to the builds below: only the prefix.
cp "$embed/embed.c" "$embed/CMakeLists.txt" "$work/"

for kind in shared static; do
  static=OFF
  [ "$kind" = static ] && static=ON
  cmake -S "$work" -B "$work/build-$kind" -DCMAKE_PREFIX_PATH="$prefix" -DEDGETUNE_EMBED_STATIC=$static \
        -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" >/dev/null
  cmake --build "$work/build-$kind" >/dev/null
  "$work/build-$kind/edgetune_embed" --help | grep -q "C ABI"
done
"$work/build-static/edgetune_embed" --model "$model" --out "$work/run-static" --epochs 2 --budget "$budget" >/dev/null

export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
# shellcheck disable=SC2046,SC2086
cc $flags -std=c99 -o "$work/embed-pc" "$work/embed.c" $(pkg-config --cflags --libs edgetune) -lpthread \
   -Wl,-rpath,"$prefix/lib"
"$work/embed-pc" --help | grep -q "C ABI"
"$work/embed-pc" --model "$model" --out "$work/run-pc" --epochs 2 --budget "$budget" | tee "$work/embed-pc.log" | tail -n 8
grep -q "cancelled at step" "$work/embed-pc.log"
grep -q "^accuracy on the 60 messages" "$work/embed-pc.log"
echo "install_test: find_package (shared, static) and pkg-config builds ran"

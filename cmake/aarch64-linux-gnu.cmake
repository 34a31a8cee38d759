# CMake toolchain file: Linux on ARM64 (AArch64), cross-compiled on a Debian host with
# g++-aarch64-linux-gnu and the host's multiarch arm64 packages (dpkg --add-architecture arm64).
# scripts/cross.sh installs all of it and uses this file:
#   cmake -S . -B build/arm64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake
#
# Code generation: ARMv8-A with Advanced SIMD (NEON), the baseline of every ARM64 phone. Nothing
# newer (dotprod, i8mm) is assumed at build time; such paths must be chosen at run time. Being a
# cross build, EDGETUNE_NATIVE (-march=native) defaults to OFF.
#
# Tests run under Debian's qemu-user: CMAKE_CROSSCOMPILING_EMULATOR prefixes every ctest command
# and Catch2's test discovery, with the arm64 C library that Debian installs for the cross
# compiler (/usr/aarch64-linux-gnu) as qemu's root for the dynamic loader. The C library must be
# that same package's: the multiarch libc6:arm64 (pulled in by libutf8proc-dev:arm64) is another
# build of glibc, and ld.so and libc.so of two builds share private structures, so a program
# loaded with one and the other hangs in its first pthread_create. LD_LIBRARY_PATH puts the
# cross compiler's libraries first; the multiarch folders still serve the rest (libutf8proc).

set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_C_FLAGS_INIT "-march=armv8-a+simd")
set(CMAKE_CXX_FLAGS_INIT "-march=armv8-a+simd")

set(EDGETUNE_ARM64_SYSROOT /usr/aarch64-linux-gnu)
# By its full path, so a test that runs the CLI with another PATH still finds the emulator.
find_program(EDGETUNE_QEMU_AARCH64 qemu-aarch64 NO_CMAKE_FIND_ROOT_PATH)
if(NOT EDGETUNE_QEMU_AARCH64)
  set(EDGETUNE_QEMU_AARCH64 qemu-aarch64)
endif()
set(CMAKE_CROSSCOMPILING_EMULATOR ${EDGETUNE_QEMU_AARCH64} -L ${EDGETUNE_ARM64_SYSROOT}
    -E LD_LIBRARY_PATH=${EDGETUNE_ARM64_SYSROOT}/lib)

# Libraries and their pkg-config files: the arm64 ones only (multiarch folders under /usr), never
# the host's. Header-only packages (Eigen, xtensor, xtl, xsimd, nlohmann_json, CLI11, Catch2) are
# the host's own: their CMake package files carry no machine code, and some of them (xtensor,
# xsimd) are only installable for the host, so their config folders are searched as well.
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")
set(CMAKE_FIND_ROOT_PATH ${EDGETUNE_ARM64_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
cmake_host_system_information(RESULT _edgetune_host_arch QUERY OS_PLATFORM)
list(APPEND CMAKE_PREFIX_PATH /usr/lib/${_edgetune_host_arch}-linux-gnu/cmake)

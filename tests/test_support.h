// Helpers shared by the test suites: where goldens and the optional shared data sets live.
#pragma once

#include <unistd.h>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

namespace edgetune::test {

// Folder of committed goldens and fixtures (tests/golden).
inline std::filesystem::path golden_dir() { return std::filesystem::path(EDGETUNE_TEST_DIR) / "golden"; }

// Folder of the optional real data sets (../shared/data). Empty when it is not on this machine;
// a test that needs it then WARNs "skipped: ..." and returns.
inline std::filesystem::path shared_data_dir() {
  std::filesystem::path p(EDGETUNE_SHARED_DATA_DIR);
  if (const char* env = std::getenv("EDGETUNE_SHARED_DATA")) p = env;
  std::error_code ec;
  return std::filesystem::is_directory(p, ec) ? p : std::filesystem::path();
}

// |a[i] - b[i]| <= atol + rtol |b[i]| for every i; on failure, reports the worst element.
inline void require_close(const std::string& what, const std::vector<double>& a,
                          const std::vector<double>& b, double rtol, double atol) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  size_t at = 0;
  bool ok = true;
  for (size_t i = 0; i < a.size(); ++i) {
    const double err = std::fabs(a[i] - b[i]);
    if (err > atol + rtol * std::fabs(b[i])) ok = false;
    if (err > worst) {
      worst = err;
      at = i;
    }
  }
  INFO(what << ": worst |diff| " << worst << " at " << at << " (" << (a.empty() ? 0.0 : a[at])
            << " vs " << (b.empty() ? 0.0 : b[at]) << ")");
  REQUIRE(ok);
}

// A fresh folder under the system's temporary directory ("edgetune_<name>_<pid>_<n>"), removed
// with its contents at the end of the scope.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& name = "test") {
    static int counter = 0;
    path =
        std::filesystem::temp_directory_path() /
        ("edgetune_" + name + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

// The message of the `Error` that `f` throws; fails the test when it throws nothing (another
// exception type fails it too, by escaping).
template <class Error = std::exception, class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  FAIL("no error was thrown");
  return "";
}

// Path of the edgetune command-line binary built beside the tests.
inline std::string cli_path() { return EDGETUNE_CLI; }

// The start of a shell command that runs that binary: its path in single quotes, after the
// emulator that runs it when the tests are cross-compiled (EDGETUNE_CLI_EMULATOR, e.g.
// `qemu-aarch64 -L /usr/aarch64-linux-gnu`; empty in a native build).
inline std::string cli_command() {
  std::string c = EDGETUNE_CLI_EMULATOR;
  if (!c.empty()) c += ' ';
  c += '\'';
  c += cli_path();
  c += '\'';
  return c;
}

}  // namespace edgetune::test

// Helpers shared by the test suites: where goldens and the optional shared data sets live.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

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

// Path of the edgetune command-line binary built beside the tests.
inline std::string cli_path() { return EDGETUNE_CLI; }

}  // namespace edgetune::test

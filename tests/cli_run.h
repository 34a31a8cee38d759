// Runs the `edgetune` binary (or any shell command) as a process for the command-line tests:
// captures stdout, stderr and the exit code, and makes scratch folders.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>

#include "test_support.h"

namespace edgetune::test {

inline std::string q(const std::filesystem::path& p);

// The --memory-budget of a test run that trains under a budget. A budget bounds the process
// (VmHWM), and a run whose VmHWM passes it stops with an error. In a sanitizer build ASan's shadow
// memory and quarantine are the process's, and under emulation (EDGETUNE_CLI_EMULATOR, the ARM64
// suite) the process is qemu, whose resident set grows with the code it translates: either takes it
// past a phone-sized budget, so the same run gets 256M there. The planner, the accountant's share
// and the VmHWM checks still run, against what that process needs.
inline std::string process_budget(const std::string& budget) {
  const bool emulated = std::string_view(EDGETUNE_CLI_EMULATOR).size() > 0;
  return EDGETUNE_INSTRUMENTED || emulated ? "256M" : budget;
}

struct RunResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A fresh, empty scratch folder under the system temp folder, removed by the destructor.
struct ScratchDir {
  std::filesystem::path path;
  explicit ScratchDir(const std::string& tag) {
    path = std::filesystem::temp_directory_path() /
           ("edgetune-test-" + tag + "-" + std::to_string(::getpid()));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::filesystem::path operator/(const std::string& s) const { return path / s; }
};

// Runs `sh -c command`, with stdin from `input` when given.
inline RunResult run_shell(const std::string& command, const std::string& input = "") {
  ScratchDir io("io");
  const auto in = io / "stdin", out = io / "stdout", err = io / "stderr";
  std::ofstream(in, std::ios::binary) << input;
  std::string full = "(";
  for (const std::string& part : {command, std::string(") <"), q(in), std::string(" >"), q(out),
                                  std::string(" 2>"), q(err)}) {
    full += part;
  }
  const int status = std::system(full.c_str());
  RunResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

// Runs the edgetune binary with `args` (already shell-quoted where needed).
inline RunResult run_cli(const std::string& args, const std::string& input = "") {
  std::string command = cli_command();
  command += ' ';
  command += args;
  return run_shell(command, input);
}

// The path in single quotes, for a shell command. (Built by appending: GCC 12 warns falsely about
// "'" + std::string&&, its bug 105651.)
inline std::string q(const std::filesystem::path& p) {
  std::string s(1, '\'');
  s += p.string();
  s += '\'';
  return s;
}

inline bool cli_built() { return std::filesystem::exists(cli_path()); }

}  // namespace edgetune::test

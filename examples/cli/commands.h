// The `edgetune` command line: each subcommand lives in its own cmd_<name>.cpp and registers
// itself here. Errors reach the user as one line, `edgetune: error: ...`, and exit code 1;
// usage errors exit 2 (CLI11's convention is mapped to that in main.cpp).
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace edgetune::cli {

// Thrown by a subcommand for a bad command-line combination (exit code 2).
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A subcommand adds its options to `app` and returns the function that runs it (exit code).
using Registrar = std::function<std::function<int()>(CLI::App& app)>;

struct Command {
  std::string name;
  std::string help;
  Registrar registrar;
};

// Registration happens from static initializers in each cmd_*.cpp.
std::vector<Command>& command_registry();

struct RegisterCommand {
  RegisterCommand(std::string name, std::string help, Registrar r) {
    command_registry().push_back({std::move(name), std::move(help), std::move(r)});
  }
};

}  // namespace edgetune::cli

// `edgetune`: the command line. Dispatches to the subcommands registered in cmd_*.cpp.
#include <algorithm>
#include <cstdio>
#include <exception>
#include <iostream>
#include <map>

#include "commands.h"
#include "edgetune/engine/api.h"
#include "options.h"

namespace edgetune::cli {
std::vector<Command>& command_registry() {
  static std::vector<Command> registry;
  return registry;
}
}  // namespace edgetune::cli

int main(int argc, char** argv) {
  using namespace edgetune::cli;
  CLI::App app{"edgetune: fine-tune a compressed BERT text classifier on the device that holds the data"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("edgetune ") + edgetune::version());
  auto& registry = command_registry();
  std::sort(registry.begin(), registry.end(),
            [](const Command& a, const Command& b) { return a.name < b.name; });
  std::map<CLI::App*, std::function<int()>> runners;
  for (auto& cmd : registry) {
    CLI::App* sub = app.add_subcommand(cmd.name, cmd.help);
    runners[sub] = cmd.registrar(*sub);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "edgetune: usage error: %s (try --help)\n", e.what());
    return 2;
  }
  try {
    for (auto& [sub, run] : runners) {
      if (!sub->parsed()) continue;
      use_model_file_storage(*sub);
      return run();
    }
    return 2;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "edgetune: usage error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "edgetune: error: %s\n", e.what());
    return 1;
  }
}

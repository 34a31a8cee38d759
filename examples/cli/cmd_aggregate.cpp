// `edgetune aggregate`: federated averaging (FedAvg) of adapter folders, offline. A server written
// in any language collects the clients' adapter folders and their example counts, and this writes
// their weighted average as an adapter folder that `predict --adapter` reads like any other
// (engine/adapter_folder.h: aggregate_adapters).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "commands.h"
#include "edgetune/engine/adapter_folder.h"
#include "options.h"

namespace edgetune::cli {
namespace {

struct AggregateArgs {
  std::filesystem::path out;
  std::string weights_csv;
  std::vector<double> weights;
  std::vector<std::filesystem::path> dirs;
  std::string key_file;
};

// "N1,N2,..." as numbers; anything else is a usage error naming the value.
std::vector<double> parse_weights(const std::string& csv) {
  std::vector<double> out;
  std::size_t start = 0;
  while (start <= csv.size()) {
    const std::size_t end = std::min(csv.find(',', start), csv.size());
    const std::string item = csv.substr(start, end - start);
    std::size_t used = 0;
    double w = 0;
    try {
      w = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (item.empty() || used != item.size()) {
      throw UsageError("aggregate: --weights expects numbers separated by commas (example counts), got '" +
                       item + "' in '" + csv + "'");
    }
    out.push_back(w);
    start = end + 1;
  }
  return out;
}

int run(AggregateArgs a) {
  if (!a.weights_csv.empty()) a.weights = parse_weights(a.weights_csv);
  Context context = command_context(0, load_key(a.key_file));
  const ContextScope scope(context);
  try {
    aggregate_adapters(a.dirs, a.weights, a.out);
  } catch (const std::invalid_argument& e) {  // the weights: a usage error
    throw UsageError(e.what());
  }
  std::printf("averaged %zu adapter folders into %s\n", a.dirs.size(), a.out.string().c_str());
  return 0;
}

const RegisterCommand kRegister{
    "aggregate",
    "federated averaging: the weighted mean of adapter folders trained from the same base",
    [](CLI::App& app) -> std::function<int()> {
      auto a = std::make_shared<AggregateArgs>();
      app.add_option("--out", a->out, "the averaged adapter folder to write")->required();
      app.add_option("--weights", a->weights_csv,
                     "N1,N2,...: one weight per folder, e.g. each client's example count (default: equal)");
      app.add_option("adapters", a->dirs, "adapter folders (adapter_config.json, adapter_model.safetensors)")
          ->required()
          ->check(CLI::ExistingDirectory);
      add_key_option(app, a->key_file);
      return [a] { return run(*a); };
    }};

}  // namespace
}  // namespace edgetune::cli

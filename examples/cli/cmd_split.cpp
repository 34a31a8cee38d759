// `edgetune split`: a labelled data file divided into one file per federated client, non-IID by a
// seeded Dirichlet label split (data/shuffle.h: dirichlet_split). Each client's rows go to
// OUT/client-<k>.jsonl as {"text", ["text_pair",] "label"} objects, which `train --train` reads
// without column options, and a table of labels per client goes to standard output.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "edgetune/core/file_io.h"
#include "edgetune/data/shuffle.h"
#include "edgetune/engine/settings.h"
#include "options.h"

namespace edgetune::cli {
namespace {

struct SplitArgs {
  DataOptions data;
  std::filesystem::path data_file, out;
  int clients = 0;
  double alpha = 0.5;
  std::uint64_t seed = 42;
};

int run(const SplitArgs& a) {
  settings::check_ranges(a.data);
  const data::Dataset ds = read_data(a.data_file, a.data, true);
  if (ds.bad_rows) std::fprintf(stderr, "skipped %zu bad rows (first: %s)\n", ds.bad_rows, ds.bad_row_messages.front().c_str());
  std::vector<std::string> labels;
  labels.reserve(ds.examples.size());
  for (const auto& e : ds.examples) labels.push_back(e.label);
  std::vector<std::vector<size_t>> shards;
  try {
    shards = data::dirichlet_split(labels, a.clients, a.alpha, a.seed);
  } catch (const std::invalid_argument& e) {  // --clients or --dirichlet out of range
    throw UsageError("split: " + std::string(e.what()) + " in " + ds.source);
  }
  // Every file is made before any is written, each written atomically.
  std::vector<std::string> bodies;
  std::map<std::string, std::vector<size_t>> counts;  // label -> rows per client
  for (size_t c = 0; c < shards.size(); ++c) {
    std::string body;
    for (size_t i : shards[c]) {
      const data::Example& e = ds.examples[i];
      nlohmann::ordered_json j;
      j["text"] = e.text;
      if (e.text_pair) j["text_pair"] = *e.text_pair;
      j["label"] = e.label;
      body += j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
      auto& row = counts[e.label];
      row.resize(shards.size());
      ++row[c];
    }
    bodies.push_back(std::move(body));
  }
  std::filesystem::create_directories(a.out);
  for (size_t c = 0; c < bodies.size(); ++c) {
    write_file_atomic(a.out / ("client-" + std::to_string(c + 1) + ".jsonl"), bodies[c]);
  }
  std::printf("%zu rows of %s over %d clients (Dirichlet %g, seed %llu) into %s\n", ds.examples.size(),
              ds.source.c_str(), a.clients, a.alpha, static_cast<unsigned long long>(a.seed), a.out.string().c_str());
  std::printf("%-16s", "label");
  for (size_t c = 0; c < shards.size(); ++c) std::printf(" %8s", ("client-" + std::to_string(c + 1)).c_str());
  std::printf("\n");
  for (const auto& [label, row] : counts) {
    std::printf("%-16s", label.c_str());
    for (size_t n : row) std::printf(" %8zu", n);
    std::printf("\n");
  }
  return 0;
}

const RegisterCommand kRegister{
    "split",
    "divide a labelled file into non-IID client files by a seeded Dirichlet label split",
    [](CLI::App& app) -> std::function<int()> {
      auto a = std::make_shared<SplitArgs>();
      app.add_option("--data", a->data_file, "the labelled file (TSV, CSV or JSONL)")->required();
      add_data_options(app, a->data, true);
      app.add_option("--clients", a->clients, "number of clients (files)")->required();
      app.add_option("--dirichlet", a->alpha, "concentration alpha: smaller is more skewed")->capture_default_str();
      app.add_option("--seed", a->seed, "seed of the split")->capture_default_str();
      app.add_option("--out", a->out, "folder for client-1.jsonl ... client-K.jsonl")->required();
      return [a] { return run(*a); };
    }};

}  // namespace
}  // namespace edgetune::cli

// `edgetune split` as a process: K client files that together hold every row of the input once,
// readable by train without column options, and bad input as one usage line.
#include <catch2/catch.hpp>

#include <fstream>
#include <map>
#include <string>

#include "cli_run.h"
#include "edgetune/engine/session.h"

using namespace edgetune;
using namespace edgetune::test;
namespace fs = std::filesystem;

TEST_CASE("split writes one file per client that together hold every row once", "[cli][split]") {
  REQUIRE(cli_built());
  ScratchDir tmp("split");
  std::map<std::string, std::string> want;  // text -> label
  {
    std::ofstream f(tmp.path / "data.tsv");
    f << "sentence\tlabel\n";
    for (int i = 0; i < 90; ++i) {
      const std::string text = "sentence number " + std::to_string(i);
      want[text] = std::to_string(i % 3);
      f << text << "\t" << i % 3 << "\n";
    }
  }
  const RunResult r = run_cli("split --data " + q(tmp.path / "data.tsv") + " --clients 3 --dirichlet 0.5 --seed 5 --out " +
                              q(tmp.path / "shards"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("90 rows of") != std::string::npos);
  std::map<std::string, std::string> got;
  for (int c = 1; c <= 3; ++c) {
    const fs::path shard = tmp.path / "shards" / ("client-" + std::to_string(c) + ".jsonl");
    REQUIRE(fs::exists(shard));
    // Read as train reads it: JSONL, columns "text" and "label" by default.
    const data::Dataset ds = read_data(shard, DataOptions{}, true);
    REQUIRE_FALSE(ds.examples.empty());
    for (const auto& e : ds.examples) {
      CHECK(got.count(e.text) == 0);
      got[e.text] = e.label;
    }
  }
  CHECK(got == want);
  CHECK_FALSE(fs::exists(tmp.path / "shards" / "client-4.jsonl"));
}

TEST_CASE("split with more clients than rows is one usage line, and writes nothing", "[cli][split]") {
  REQUIRE(cli_built());
  ScratchDir tmp("split-usage");
  {
    std::ofstream f(tmp.path / "data.tsv");
    f << "sentence\tlabel\na\t0\nb\t1\n";
  }
  const RunResult r =
      run_cli("split --data " + q(tmp.path / "data.tsv") + " --clients 3 --out " + q(tmp.path / "shards"));
  CHECK(r.exit_code == 2);
  CHECK(r.err == "edgetune: usage error: split: 3 clients for 2 rows (at least 1 client, at most one per row) in " +
                     (tmp.path / "data.tsv").string() + "\n");
  CHECK_FALSE(fs::exists(tmp.path / "shards"));
}

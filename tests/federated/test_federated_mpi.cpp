// `edgetune federated` end to end under mpirun: 3 ranks (rank 0 and 2 clients) on a tiny model
// made by create-model and shards made by split; metrics.jsonl's rounds, the bytes per round, a
// client whose training fails dropped from its round, secure aggregation's adapter against the
// plain run's within the fixed-point budget, the client-level epsilon, and a killed client
// dropped under --client-timeout.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/types.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_run.h"
#include "edgetune/engine/federated.h"
#include "edgetune/optim/privacy.h"

using namespace edgetune;
using namespace edgetune::test;
namespace fs = std::filesystem;

namespace {

std::vector<nlohmann::json> metrics(const fs::path& run) {
  std::vector<nlohmann::json> lines;
  std::istringstream in(slurp(run / "metrics.jsonl"));
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

// A tiny model and two client shards of a labelled file, in d.
void prepare(const ScratchDir& d) {
  const test::RunResult create =
      run_cli("create-model --vocab " + q(golden_dir() / "tokenizer" / "mini-uncased-vocab.txt") +
              " --out " + q(d / "model") +
              " --layers 1 --hidden 32 --heads 2 --intermediate 64 --max-positions 32");
  INFO(create.err);
  REQUIRE(create.exit_code == 0);
  std::ofstream rows(d / "rows.tsv");
  rows << "sentence\tlabel\n";
  for (int i = 0; i < 48; ++i)
    rows << (i % 2 ? "a good day number " : "a bad day number ") << i << "\t" << i % 2 << "\n";
  rows.close();
  const test::RunResult split =
      run_cli("split --data " + q(d / "rows.tsv") + " --clients 2 --dirichlet 0.5 --seed 3 --out " +
              q(d / "shards"));
  INFO(split.err);
  REQUIRE(split.exit_code == 0);
}

// mpirun [mpirun_options] -n 3 edgetune federated ... on d's model and shards, into out.
test::RunResult federated_run(const ScratchDir& d, const fs::path& out, const std::string& extra,
                              const std::string& mpirun_options = "") {
  return run_shell(
      std::string(EDGETUNE_MPIEXEC) + " " + mpirun_options + " -n 3 " + cli_command() +
      " federated --model " + q(d / "model") + " --shards " + q(d / "shards") + " --eval " +
      q(d / "rows.tsv") + " --out " + q(out) +
      " --local-steps 2 --batch-size 4 --lr 1e-2 --threads 1 --quant q4 --max-length 16 " + extra);
}

}  // namespace

TEST_CASE(
    "federated: mpirun -n 3 runs the rounds, plain and under secure aggregation, to the same "
    "adapter",
    "[federated][mpi]") {
  REQUIRE(cli_built());
  ScratchDir d("federated-mpi");
  prepare(d);

  const test::RunResult plain = federated_run(d, d / "plain", "--rounds 2");
  INFO(plain.err);
  REQUIRE(plain.exit_code == 0);
  const std::vector<nlohmann::json> m = metrics(d / "plain");
  REQUIRE(m.size() == 3);
  const federated::Adapter global = federated::read_adapter(d / "plain");
  const std::size_t p = federated::value_count(global);
  for (int r = 0; r <= 2; ++r) {
    CHECK(m[static_cast<std::size_t>(r)]["round"] == r);
    const double acc = m[static_cast<std::size_t>(r)]["accuracy"];
    CHECK((acc >= 0 && acc <= 1));
  }
  for (int r = 1; r <= 2; ++r) {
    const nlohmann::json& line = m[static_cast<std::size_t>(r)];
    CHECK(line["clients"] == 2);
    CHECK(line["dropped"].empty());
    // Two downloads (header + P float32) and two uploads (header + P float32).
    CHECK(line["bytes"] == 2 * (8 + 4 * p) + 2 * (16 + 4 * p));
  }

  // One round each, plain and secure: the same clients' deltas from the same global adapter, so
  // the averages differ only by the fixed-point rounding of the masked sum.
  const test::RunResult one = federated_run(d, d / "plain-1", "--rounds 1");
  INFO(one.err);
  REQUIRE(one.exit_code == 0);
  const test::RunResult secure =
      federated_run(d, d / "secure-1", "--rounds 1 --secure-aggregation");
  INFO(secure.err);
  REQUIRE(secure.exit_code == 0);
  const std::vector<nlohmann::json> ms = metrics(d / "secure-1");
  REQUIRE(ms.size() == 2);
  CHECK(ms[1]["bytes"] == 2 * (8 + 4 * p) + 2 * (16 + 8 * p));
  const std::vector<float> a = federated::values(federated::read_adapter(d / "plain-1"));
  const std::vector<float> b = federated::values(federated::read_adapter(d / "secure-1"));
  REQUIRE(a.size() == b.size());
  // The round's total weight is the 48 rows; the float32 results add one rounding each.
  const double budget = federated::fixed_point_sum_error(2) / 48;
  double moved = 0;
  const std::vector<float> g0 =
      federated::values(federated::read_adapter(d / "plain-1" / "clients" / "client-1" / "global"));
  for (std::size_t k = 0; k < a.size(); ++k) {
    REQUIRE(std::fabs(a[k] - b[k]) <= budget + std::ldexp(std::fabs(a[k]), -23));
    moved += std::fabs(a[k] - g0[k]);
  }
  CHECK(moved > 0);
}

TEST_CASE(
    "federated: a client whose training fails is dropped from the round, which completes with the "
    "other",
    "[federated][mpi]") {
  REQUIRE(cli_built());
  ScratchDir d("federated-drop");
  prepare(d);
  // Client 2's shard holds a label the global adapter does not have.
  std::ofstream(d / "shards" / "client-2.jsonl", std::ios::app)
      << R"({"text": "odd", "label": "7"})"
      << "\n";
  for (const std::string mode : {"", "--secure-aggregation"}) {
    const fs::path out = d / ("run" + mode);
    const test::RunResult r = federated_run(d, out, "--rounds 1 " + mode);
    INFO(mode << ": " << r.err);
    REQUIRE(r.exit_code == 0);
    CHECK_THAT(r.err,
               Catch::Contains("client 2, round 1: training failed, dropped from the round"));
    const std::vector<nlohmann::json> m = metrics(out);
    REQUIRE(m.size() == 2);
    CHECK(m[1]["clients"] == 1);
    CHECK(m[1]["dropped"] == nlohmann::json::array({2}));
  }
}

TEST_CASE("federated: client-level DP reports a growing epsilon per round", "[federated][mpi]") {
  REQUIRE(cli_built());
  ScratchDir d("federated-dp");
  prepare(d);
  const test::RunResult r = federated_run(
      d, d / "dp", "--rounds 2 --client-dp-clip 0.5 --client-dp-noise-multiplier 1.1 --secure-aggregation");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const std::vector<nlohmann::json> m = metrics(d / "dp");
  REQUIRE(m.size() == 3);
  const double e1 = m[1]["epsilon"], e2 = m[2]["epsilon"];
  // Every client in every round: the Gaussian mechanism (q = 1) composed over the rounds.
  CHECK(e1 == Approx(optim::sampled_gaussian_privacy(1.0, 1.1, 1, 1e-5).epsilon));
  CHECK(e2 == Approx(optim::sampled_gaussian_privacy(1.0, 1.1, 2, 1e-5).epsilon));
  CHECK(e2 > e1);
  CHECK_THAT(r.err, Catch::Contains("client-level (epsilon"));
}

namespace {

// The process of MPI rank `rank` whose command line names `marker`, or 0.
pid_t rank_process(int rank, const std::string& marker) {
  const std::string want = "OMPI_COMM_WORLD_RANK=" + std::to_string(rank);
  for (const fs::directory_entry& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmdline = slurp(e.path() / "cmdline"), environ = slurp(e.path() / "environ");
    std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
    std::replace(environ.begin(), environ.end(), '\0', '\n');
    if (cmdline.find(" federated ") == std::string::npos ||
        cmdline.find(marker) == std::string::npos)
      continue;
    if (("\n" + environ + "\n").find("\n" + want + "\n") != std::string::npos)
      return std::stoi(name);
  }
  return 0;
}

}  // namespace

TEST_CASE(
    "federated: with --client-timeout and mpirun --enable-recovery a killed client is dropped and "
    "the rounds go on",
    "[federated][mpi]") {
  REQUIRE(cli_built());
  ScratchDir d("federated-kill");
  prepare(d);
  const fs::path out = d / "run";
  test::RunResult r;
  std::thread job(
      [&] { r = federated_run(d, out, "--rounds 4 --client-timeout 30", "--enable-recovery"); });
  // Once round 1 is written, client 2 (rank 2) is killed.
  pid_t victim = 0;
  for (int i = 0; i < 6000 && victim == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (fs::exists(out / "metrics.jsonl") && metrics(out).size() >= 2)
      victim = rank_process(2, out.string());
  }
  if (victim != 0) ::kill(victim, SIGKILL);
  job.join();
  INFO(r.err);
  REQUIRE(victim != 0);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.err, Catch::Contains("client 2 sent nothing within 30 s"));
  const std::vector<nlohmann::json> m = metrics(out);
  REQUIRE(m.size() == 5);
  int dropped_rounds = 0;
  for (std::size_t i = 1; i < m.size(); ++i)
    dropped_rounds += m[i]["dropped"] == nlohmann::json::array({2});
  CHECK(dropped_rounds == 1);
  CHECK(m[4]["clients"] == 1);
}

// Settings on the command line (examples/cli/settings_cli.h): an unknown enum value is a usage
// error naming its option (exit 2), a value out of range one error line naming the setting (exit
// 1) before anything is written, and a setting given with --resume a usage error naming it, for
// `edgetune train` and `edgetune pretrain`.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "cli_run.h"

using namespace edgetune::test;
namespace fs = std::filesystem;

namespace {

// Exactly one line on stderr, starting `edgetune: <kind>: `, holding every one of `needles`.
void require_one_line(const RunResult& r, int code, const std::string& kind,
                      std::initializer_list<const char*> needles) {
  INFO("stderr: " << r.err);
  REQUIRE(r.exit_code == code);
  REQUIRE(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  REQUIRE(r.err.rfind("edgetune: " + kind + ": ", 0) == 0);
  for (const char* n : needles) REQUIRE(r.err.find(n) != std::string::npos);
}

// `train` on the tiny model with a two-class file, into d/run, with `extra` options.
std::string train_args(const ScratchDir& d, const std::string& extra) {
  std::ofstream(d / "train.tsv") << "sentence\tlabel\ngood film\tpos\nbad film\tneg\n";
  return "train --model " + q(golden_dir() / "bert" / "tiny") + " --train " + q(d / "train.tsv") +
         " --out " + q(d / "run") + " --epochs 1 --threads 1 " + extra;
}

}  // namespace

TEST_CASE("train --quant q5 is a usage error naming --quant and its values", "[cli][settings]") {
  REQUIRE(cli_built());
  ScratchDir d("cli-quant");
  const RunResult r = run_cli(train_args(d, "--quant q5"));
  require_one_line(r, 2, "usage error", {"--quant", "q5", "f32", "q8", "q4"});
  CHECK_FALSE(fs::exists(d / "run"));
  require_one_line(run_cli(train_args(d, "--optimizer lamb")), 2, "usage error", {"--optimizer", "lamb"});
  require_one_line(run_cli(train_args(d, "--checkpointing maybe")), 2, "usage error",
                   {"--checkpointing", "maybe"});
}

TEST_CASE("train --lr -1 is one error line naming lr, before the run folder exists",
          "[cli][settings]") {
  REQUIRE(cli_built());
  ScratchDir d("cli-lr");
  require_one_line(run_cli(train_args(d, "--lr -1")), 1, "error", {"lr must be at least 0"});
  CHECK_FALSE(fs::exists(d / "run"));
  require_one_line(run_cli(train_args(d, "--dropout 1")), 1, "error", {"dropout must be below 1"});
  require_one_line(run_cli(train_args(d, "--batch-size 0")), 1, "error", {"batch_size must be at least 1"});
  require_one_line(run_cli(train_args(d, "--max-length 100")), 1, "error",
                   {"max_length 100", "max_position_embeddings (64)"});
  CHECK_FALSE(fs::exists(d / "run"));
}

TEST_CASE("a resumed run given a setting other than --threads or --memory-budget is a usage error naming it",
          "[cli][settings]") {
  REQUIRE(cli_built());
  ScratchDir d("cli-resume");
  require_one_line(run_cli("train --resume " + q(d / "run") + " --lr 1"), 2, "usage error",
                   {"--resume", "--lr"});
  require_one_line(run_cli("train --resume " + q(d / "run") + " --quant q4"), 2, "usage error",
                   {"--quant"});
  require_one_line(run_cli("pretrain --resume " + q(d / "run") + " --batch-size 2"), 2, "usage error",
                   {"--resume", "--batch-size"});
  CHECK_FALSE(fs::exists(d / "run"));
}

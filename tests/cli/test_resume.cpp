// Killing training (kill -9, or Ctrl-C) and resuming ends with the same adapter bytes as an
// uninterrupted run with the same settings and thread count; the run folder never holds a torn
// file.
#include <catch2/catch.hpp>

#include <signal.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli_run.h"
#include "edgetune/autograd/safetensors.h"

using namespace edgetune;
using namespace edgetune::test;
namespace fs = std::filesystem;

namespace {

// 480 short labelled rows: enough optimizer steps that a kill lands in the middle of the run.
void write_data(const fs::path& p) {
  std::ofstream out(p);
  out << "sentence\tlabel\n";
  const char* good[] = {"a good film", "really great acting", "i loved it", "wonderful story"};
  const char* bad[] = {"a bad film", "really poor acting", "i hated it", "boring story"};
  for (int i = 0; i < 240; ++i) {
    out << good[i % 4] << " number " << i << "\t1\n";
    out << bad[i % 4] << " number " << i << "\t0\n";
  }
}

std::string train_args(const fs::path& data, const fs::path& out) {
  // Dropout on, so the resumed run must also restore the dropout generator.
  return "train --model " + q(golden_dir() / "bert" / "tiny") + " --train " + q(data) + " --out " + q(out) +
         " --method lora --epochs 2 --batch-size 4 --save-every 1 --threads 1 --dropout 0.1 --log-every 1000";
}

// Starts the command in the background; returns its pid.
pid_t start(const std::string& command, const fs::path& log) {
  const fs::path pidfile = log.string() + ".pid";
  std::string sh = "(" + command + ") >" + q(log) + " 2>&1 & echo $! >" + q(pidfile);
  REQUIRE(std::system(sh.c_str()) == 0);
  return static_cast<pid_t>(std::stol(slurp(pidfile)));
}

bool alive(pid_t pid) { return ::kill(pid, 0) == 0; }

void wait_exit(pid_t pid) {
  while (alive(pid)) std::this_thread::sleep_for(std::chrono::milliseconds(20));
}

// Every file of the run folder is whole: safetensors files parse, JSON files parse.
void require_whole(const fs::path& run) {
  for (const auto& e : fs::directory_iterator(run)) {
    const std::string name = e.path().filename().string();
    INFO(name);
    if (name.ends_with(".safetensors")) {
      REQUIRE_NOTHROW(safetensors::Reader(e.path()));
    } else if (name.ends_with(".json")) {
      REQUIRE_NOTHROW(nlohmann::json::parse(slurp(e.path())));
    } else if (name.ends_with(".jsonl")) {
      std::ifstream in(e.path());
      std::string line;
      while (std::getline(in, line)) REQUIRE_NOTHROW(nlohmann::json::parse(line));
    }
  }
}

void interrupted_run_matches(int sig) {
  ScratchDir d(sig == SIGKILL ? "kill" : "sigint");
  write_data(d / "train.tsv");
  const RunResult straight = run_cli(train_args(d / "train.tsv", d / "straight"));
  INFO(straight.err);
  REQUIRE(straight.exit_code == 0);

  const pid_t pid = start(cli_command() + " " + train_args(d / "train.tsv", d / "cut"), d / "cut.log");
  // Wait for a few checkpoints, then interrupt.
  const fs::path state = d / "cut" / "train_state.safetensors";
  for (int i = 0; i < 3000 && !fs::exists(state) && alive(pid); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  REQUIRE(alive(pid));
  ::kill(pid, sig);
  wait_exit(pid);
  INFO(slurp(d / "cut.log"));
  // The run stopped in the middle: no final adapter yet.
  REQUIRE_FALSE(fs::exists(d / "cut" / "adapter_model.safetensors"));
  if (sig == SIGINT) REQUIRE(slurp(d / "cut.log").find("--resume") != std::string::npos);

  const RunResult resumed = run_cli("train --resume " + q(d / "cut") + " --threads 1");
  INFO(resumed.err);
  REQUIRE(resumed.exit_code == 0);
  REQUIRE(resumed.err.find("resumed at step") != std::string::npos);
  REQUIRE(slurp(d / "cut" / "adapter_model.safetensors") == slurp(d / "straight" / "adapter_model.safetensors"));
  REQUIRE(slurp(d / "cut" / "labels.json") == slurp(d / "straight" / "labels.json"));
  require_whole(d / "cut");
  for (const auto& e : fs::directory_iterator(d / "cut")) {
    REQUIRE(e.path().filename().string().find(".tmp-") == std::string::npos);
  }
}

}  // namespace

TEST_CASE("kill -9 during training, then --resume, gives the same adapter bytes",
          "[cli][resume]") {
  if (!cli_built()) return;
  interrupted_run_matches(SIGKILL);
}

TEST_CASE("Ctrl-C saves a checkpoint and exits, and --resume gives the same adapter bytes",
          "[cli][resume]") {
  if (!cli_built()) return;
  interrupted_run_matches(SIGINT);
}

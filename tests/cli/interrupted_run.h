// Interrupting a command-line training run (kill -9, or Ctrl-C) and resuming it: the shared check
// behind the resume tests of `edgetune train` and `edgetune pretrain`. The resumed run must end
// with the same bytes as an uninterrupted run with the same settings and thread count, the run
// folder must never hold a torn file, and --resume clears the temporary files killed writes left.
// With a key file, every command gets --key-file and the files are compared decrypted.
#pragma once

#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cli_run.h"
#include "edgetune/autograd/safetensors.h"
#include "edgetune/core/context.h"
#include "edgetune/core/encryption.h"
#include "edgetune/core/file_io.h"

namespace edgetune::test {

// Starts the shell command in the background with its output in `log`; returns its pid.
inline pid_t start_background(const std::string& command, const std::filesystem::path& log) {
  const std::filesystem::path pidfile = log.string() + ".pid";
  std::string sh = "(" + command + ") >" + q(log) + " 2>&1 & echo $! >" + q(pidfile);
  REQUIRE(std::system(sh.c_str()) == 0);
  return static_cast<pid_t>(std::stol(slurp(pidfile)));
}

inline bool alive(pid_t pid) { return ::kill(pid, 0) == 0; }

inline void wait_exit(pid_t pid) {
  while (alive(pid)) std::this_thread::sleep_for(std::chrono::milliseconds(20));
}

// Every file of the run folder is whole: safetensors files parse, JSON files parse (decrypted
// with the current context's key).
inline void require_whole(const std::filesystem::path& run) {
  for (const auto& e : std::filesystem::directory_iterator(run)) {
    const std::string name = e.path().filename().string();
    INFO(name);
    if (name.ends_with(".safetensors")) {
      REQUIRE_NOTHROW(safetensors::Reader(e.path()));
    } else if (name.ends_with(".json")) {
      REQUIRE_NOTHROW(nlohmann::json::parse(read_file(e.path())));
    } else if (name.ends_with(".jsonl")) {
      std::istringstream in(read_file(e.path()));
      std::string line;
      while (std::getline(in, line)) REQUIRE_NOTHROW(nlohmann::json::parse(line));
    }
  }
}

// A training command to interrupt. It must checkpoint every step (--save-every 1) and run long
// enough that an interruption 150 ms after its first checkpoint lands mid-run.
struct InterruptibleCommand {
  std::string command;  // "train" or "pretrain"
  // Its arguments after the command name, for a run into `out` (inputs are the caller's).
  std::function<std::string(const std::filesystem::path& out)> args;
  std::vector<std::string> same_files;  // compared byte for byte with the uninterrupted run
  std::string final_file;               // written only at the end ("" when none)
  // Temporary files a write killed earlier could have left (the writer's and older schemes).
  std::vector<std::string> planted_temporaries;
  // Empty: plain files. Else every command gets --key-file with it.
  std::filesystem::path key_file;
};

// Runs `c` straight into dir/straight, then into dir/cut interrupted by `sig` mid-run, then
// `<command> --resume dir/cut --threads 1`, and compares.
inline void interrupted_run_matches(const InterruptibleCommand& c, const std::filesystem::path& dir,
                                    int sig) {
  namespace fs = std::filesystem;
  REQUIRE(cli_built());
  const std::string key = c.key_file.empty() ? "" : " --key-file " + q(c.key_file);
  Context keyed;
  if (!c.key_file.empty()) keyed.key = EncryptionKey::from_file(c.key_file);
  const ContextScope scope(keyed);
  const RunResult straight = run_cli(c.command + " " + c.args(dir / "straight") + key);
  INFO(straight.err);
  REQUIRE(straight.exit_code == 0);

  const fs::path cut = dir / "cut";
  const pid_t pid = start_background(cli_command() + " " + c.command + " " + c.args(cut) + key, dir / "cut.log");
  // Wait for a few checkpoints, then interrupt.
  const fs::path state = cut / "train_state.safetensors";
  for (int i = 0; i < 3000 && !fs::exists(state) && alive(pid); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  REQUIRE(alive(pid));
  ::kill(pid, sig);
  wait_exit(pid);
  const std::string log = slurp(dir / "cut.log");
  INFO(log);
  // The run stopped in the middle: killed before its end, or stopped with a checkpoint and the
  // command that continues it.
  if (sig == SIGKILL) REQUIRE(log.find("done:") == std::string::npos);
  if (sig == SIGINT) {
    REQUIRE(log.find("interrupted at step") != std::string::npos);
    REQUIRE(log.find(c.command + " --resume") != std::string::npos);
  }
  if (!c.final_file.empty()) REQUIRE_FALSE(fs::exists(cut / c.final_file));
  for (const std::string& name : c.planted_temporaries) std::ofstream(cut / name) << "{\"torn";

  const RunResult resumed = run_cli(c.command + " --resume " + q(cut) + " --threads 1" + key);
  INFO(resumed.err);
  REQUIRE(resumed.exit_code == 0);
  REQUIRE(resumed.err.find("resumed at step") != std::string::npos);
  for (const std::string& name : c.same_files) {
    INFO(name);
    REQUIRE(fs::exists(dir / "straight" / name));
    REQUIRE(read_file(cut / name) == read_file(dir / "straight" / name));
  }
  require_whole(cut);
  for (const auto& e : fs::directory_iterator(cut)) {
    INFO(e.path().filename().string());
    REQUIRE_FALSE(is_temporary_name(e.path().filename().string()));
  }
}

}  // namespace edgetune::test
